//! The CUDA backend's device side: which NVIDIA GPUs this machine has ([`probe`]), the compute
//! type each architecture gets ([`arch`]), and the kernels in CUDA C ([`KERNEL_SOURCE`]),
//! compiled at first use by NVRTC for the card's own architecture and cached on disk
//! ([`nvrtc`], with the `cuda` feature), and a GPU opened with a typed launcher per kernel
//! (`runtime`, with the `cuda` feature), products of many rows through cuBLAS (`gemm`), and the
//! forward pass over them with the weights and KV cache in device memory
//! (`forward::CudaModel`, a [`crate::backend::Backend`] the batch engine and the worker run on
//! with `--device cuda:N`).
//!
//! The CUDA libraries are loaded at run time (cudarc's dynamic loading), so the binary builds
//! without a CUDA toolkit and runs on a machine without a driver: there [`probe`] answers
//! "no NVIDIA driver" instead of failing. Built without the `cuda` feature, [`probe`] answers
//! "built without CUDA", and nothing else in the crate needs a `cfg`.

pub mod arch;
#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
pub mod forward;
#[cfg(feature = "cuda")]
pub mod gemm;
#[cfg(all(test, feature = "cuda"))]
mod gpu_tests;
#[cfg(feature = "cuda")]
pub mod nvrtc;
#[cfg(feature = "cuda")]
pub mod runtime;

use std::fmt;

/// Steps of at least this many rows multiply through cuBLAS on dequantized tiles (`gemm`);
/// smaller ones in the matrix-vector kernels. At 64 rows those kernels read every weight 8
/// times (one read serves 8 rows); a dequantized tile is read once from memory and once more
/// from L2.
pub const DEFAULT_GEMM_ROWS: usize = 64;

/// Every kernel, in one compilation unit (NVRTC gets no include path: the wheel that carries
/// libnvrtc ships no CUDA headers, so the sources need none).
pub const KERNEL_SOURCE: &str = concat!(
    include_str!("kernels/common.cu"),
    "\n",
    include_str!("kernels/quant.cu"),
    "\n",
    include_str!("kernels/elementwise.cu"),
    "\n",
    include_str!("kernels/attention.cu"),
);

/// One NVIDIA GPU as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// CUDA's device ordinal (`--device cuda:N`).
    pub ordinal: usize,
    pub name: String,
    /// (major, minor), e.g. (6, 1) for a P40.
    pub compute_capability: (u32, u32),
    pub memory_total: u64,
    pub memory_free: u64,
    /// The driver's CUDA version, e.g. "12.8".
    pub driver: String,
    /// Where it sits on PCI: how NVML's device for it is found (NVML numbers GPUs in PCI
    /// order, CUDA fastest first, so the two indices can differ on a mixed machine).
    pub pci: PciAddress,
}

/// A GPU's PCI domain, bus and device numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PciAddress {
    pub domain: u32,
    pub bus: u32,
    pub device: u32,
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}",
            self.domain, self.bus, self.device
        )
    }
}

impl GpuInfo {
    /// One line for hardware descriptions and logs:
    /// "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB, driver 12.8".
    pub fn describe(&self) -> String {
        format!(
            "{}, sm_{}{}, {:.1} GiB, driver {}",
            self.name,
            self.compute_capability.0,
            self.compute_capability.1,
            self.memory_total as f64 / (1u64 << 30) as f64,
            self.driver
        )
    }
}

/// Why no GPU can be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaUnavailable {
    /// This binary was built without the `cuda` feature.
    BuiltWithout,
    /// libcuda could not be loaded.
    NoDriver,
    /// The driver loaded but reports no device, or failed; the driver's words.
    Driver(String),
}

impl fmt::Display for CudaUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BuiltWithout => write!(
                f,
                "built without CUDA (rebuild with `--features cuda` to serve on NVIDIA GPUs)"
            ),
            Self::NoDriver => write!(
                f,
                "no NVIDIA driver: libcuda.so could not be loaded (install the driver, or check \
                 that the container runtime exposes it)"
            ),
            Self::Driver(m) => write!(f, "the NVIDIA driver reports: {m}"),
        }
    }
}

impl std::error::Error for CudaUnavailable {}

/// The GPUs this process can use, or why there are none.
pub fn probe() -> Result<Vec<GpuInfo>, CudaUnavailable> {
    #[cfg(feature = "cuda")]
    {
        device::probe()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(CudaUnavailable::BuiltWithout)
    }
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// The GPU with this CUDA ordinal.
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("device must be `cpu`, `cuda` or `cuda:N` (N a GPU ordinal), got {s:?}");
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse::<Device>(), Ok(Device::Cuda(3)));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU"] {
            let e = bad.parse::<Device>().unwrap_err();
            assert!(e.contains("`cpu`, `cuda` or `cuda:N`"), "{bad}: {e}");
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn without_a_gpu_the_probe_says_why() {
        // This machine has no NVIDIA driver (CI, developer laptops); where one exists the GPU
        // tests cover the other answer.
        if std::path::Path::new("/dev/nvidiactl").exists() {
            return;
        }
        let e = probe().unwrap_err();
        let want = if cfg!(feature = "cuda") {
            CudaUnavailable::NoDriver
        } else {
            CudaUnavailable::BuiltWithout
        };
        assert_eq!(e, want, "{e}");
        assert!(!e.to_string().is_empty());
    }

    #[test]
    fn a_gpu_describes_itself_in_one_line() {
        let g = GpuInfo {
            ordinal: 0,
            name: "Tesla P40".into(),
            compute_capability: (6, 1),
            memory_total: 24 << 30,
            memory_free: 23 << 30,
            driver: "12.2".into(),
            pci: PciAddress {
                domain: 0,
                bus: 0x3b,
                device: 0,
            },
        };
        assert_eq!(g.pci.to_string(), "0000:3b:00");
        assert_eq!(g.describe(), "Tesla P40, sm_61, 24.0 GiB, driver 12.2");
    }
}
