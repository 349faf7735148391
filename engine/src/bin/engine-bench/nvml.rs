//! The GPU's energy counter through NVML (`nvmlDeviceGetTotalEnergyConsumption`, millijoules
//! since the driver loaded; Volta and newer): read before and after each run, so the bench's
//! joules per token are measured, not estimated. NVML is loaded at run time, and its device is
//! found by the CUDA device's PCI address (the two number GPUs differently).

#[cfg(feature = "cuda")]
pub struct Counter {
    nvml: nvml_wrapper::Nvml,
    index: u32,
}

#[cfg(feature = "cuda")]
impl Counter {
    /// The counter of CUDA device `ordinal`, or why there is none.
    pub fn open(ordinal: usize) -> Result<Counter, String> {
        let gpus = joule_engine::cuda::probe().map_err(|e| e.to_string())?;
        let pci = gpus
            .iter()
            .find(|g| g.ordinal == ordinal)
            .ok_or_else(|| format!("there is no GPU cuda:{ordinal}"))?
            .pci;
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| format!("NVML: {e}"))?;
        let count = nvml.device_count().map_err(|e| format!("NVML: {e}"))?;
        let index = (0..count)
            .find(|&i| {
                nvml.device_by_index(i)
                    .and_then(|d| d.pci_info())
                    .is_ok_and(|p| (p.domain, p.bus, p.device) == (pci.domain, pci.bus, pci.device))
            })
            .ok_or_else(|| format!("NVML has no GPU at PCI {pci} (cuda:{ordinal})"))?;
        let c = Counter { nvml, index };
        c.millijoules()?;
        Ok(c)
    }

    pub fn millijoules(&self) -> Result<u64, String> {
        let d = self
            .nvml
            .device_by_index(self.index)
            .map_err(|e| format!("NVML GPU {}: {e}", self.index))?;
        d.total_energy_consumption()
            .map_err(|e| format!("NVML GPU {}: no energy counter: {e}", self.index))
    }
}

#[cfg(not(feature = "cuda"))]
pub struct Counter;

#[cfg(not(feature = "cuda"))]
impl Counter {
    pub fn open(_index: usize) -> Result<Counter, String> {
        Err(joule_engine::cuda::CudaUnavailable::BuiltWithout.to_string())
    }
    pub fn millijoules(&self) -> Result<u64, String> {
        Err(joule_engine::cuda::CudaUnavailable::BuiltWithout.to_string())
    }
}
