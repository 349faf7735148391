//! Asks the NVIDIA driver (through cudarc, loaded at run time) which GPUs there are.

use cudarc::driver::{CudaContext, sys};

use super::{CudaUnavailable, GpuInfo, PciAddress};

fn driver_err(e: cudarc::driver::DriverError) -> CudaUnavailable {
    CudaUnavailable::Driver(e.to_string())
}

pub fn probe() -> Result<Vec<GpuInfo>, CudaUnavailable> {
    // SAFETY: only dlopen()s the driver library under cudarc's own candidate names; it calls
    // nothing in it. Every later call can then load it without panicking.
    if !unsafe { sys::is_culib_present() } {
        return Err(CudaUnavailable::NoDriver);
    }
    let n = CudaContext::device_count().map_err(driver_err)?;
    if n <= 0 {
        return Err(CudaUnavailable::Driver("no CUDA device is visible".into()));
    }
    let mut version: std::ffi::c_int = 0;
    // SAFETY: writes one int; needs no context.
    unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(driver_err)?;
    let driver = format!("{}.{}", version / 1000, (version % 1000) / 10);
    (0..n as usize)
        .map(|ordinal| {
            let ctx = CudaContext::new(ordinal).map_err(driver_err)?;
            let (major, minor) = ctx.compute_capability().map_err(driver_err)?;
            let (free, total) = ctx.mem_get_info().map_err(driver_err)?;
            let attr = |a| ctx.attribute(a).map(|v| v as u32).map_err(driver_err);
            use sys::CUdevice_attribute::*;
            let pci = PciAddress {
                domain: attr(CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?,
                bus: attr(CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?,
                device: attr(CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?,
            };
            Ok(GpuInfo {
                ordinal,
                name: ctx.name().map_err(driver_err)?,
                compute_capability: (major as u32, minor as u32),
                memory_total: total as u64,
                memory_free: free as u64,
                driver: driver.clone(),
                pci,
            })
        })
        .collect()
}
