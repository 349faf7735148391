//! NVIDIA GPU power through NVML: one [`NvmlSensor`] per GPU, reporting board power, the
//! hardware energy counter where the GPU has one (Volta and newer), and GPU details
//! (utilisation, memory, clocks, temperature, throttle reasons).
//!
//! nvml-wrapper loads `libnvidia-ml.so.1` at run time, so a machine without the driver gets an
//! error from [`open_all`], not a link failure or a panic.

use std::sync::Arc;

use joule_engine::cuda::PciAddress;
use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::error::NvmlError;

use super::{GpuReading, PowerSensor, Reading, Source};

/// Throttle reason flags and the names reported for them.
const THROTTLE_NAMES: [(ThrottleReasons, &str); 9] = [
    (ThrottleReasons::GPU_IDLE, "gpu_idle"),
    (
        ThrottleReasons::APPLICATIONS_CLOCKS_SETTING,
        "applications_clocks_setting",
    ),
    (ThrottleReasons::SW_POWER_CAP, "sw_power_cap"),
    (ThrottleReasons::HW_SLOWDOWN, "hw_slowdown"),
    (ThrottleReasons::SYNC_BOOST, "sync_boost"),
    (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
    (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
    (
        ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN,
        "hw_power_brake_slowdown",
    ),
    (
        ThrottleReasons::DISPLAY_CLOCK_SETTING,
        "display_clock_setting",
    ),
];

/// The names of the reasons set in `reasons`, in a fixed order.
fn throttle_names(reasons: ThrottleReasons) -> Vec<String> {
    THROTTLE_NAMES
        .iter()
        .filter(|(flag, _)| reasons.contains(*flag))
        .map(|(_, name)| (*name).to_string())
        .collect()
}

/// Accumulates the GPU's millijoule counter into energy since the sensor was opened. A counter
/// that goes down (driver reload, GPU reset) is taken to have restarted from zero.
#[derive(Debug, Default)]
struct EnergyCounter {
    last_mj: Option<u64>,
    total_mj: u64,
}

impl EnergyCounter {
    /// Feeds a raw counter value; returns joules since the first value fed.
    fn update(&mut self, raw_mj: u64) -> f64 {
        if let Some(last) = self.last_mj {
            self.total_mj += if raw_mj >= last {
                raw_mj - last
            } else {
                raw_mj
            };
        }
        self.last_mj = Some(raw_mj);
        self.total_mj as f64 / 1000.0
    }
}

/// One GPU seen through NVML.
#[derive(Debug)]
pub struct NvmlSensor {
    nvml: Arc<Nvml>,
    index: u32,
    gpu_name: String,
    /// `None` once the GPU said it has no energy counter (pre-Volta): stop asking.
    energy: Option<EnergyCounter>,
}

impl NvmlSensor {
    fn open(nvml: Arc<Nvml>, index: u32) -> Result<NvmlSensor, String> {
        let device = nvml
            .device_by_index(index)
            .map_err(|e| format!("NVML GPU {index}: {e}"))?;
        let gpu_name = device.name().unwrap_or_else(|_| format!("GPU {index}"));
        device
            .power_usage()
            .map_err(|e| format!("NVML GPU {index} ({gpu_name}): cannot read power: {e}"))?;
        let energy = match device.total_energy_consumption() {
            // Pre-Volta: no counter, the monitor integrates power instead.
            Err(NvmlError::NotSupported) => None,
            _ => Some(EnergyCounter::default()),
        };
        let compute = device
            .cuda_compute_capability()
            .map(|c| format!("{}.{}", c.major, c.minor))
            .unwrap_or_else(|_| "?".to_string());
        tracing::info!(
            "opened nvml:{index}: {gpu_name}, compute capability {compute}, energy counter: {}",
            if energy.is_some() { "yes" } else { "no" }
        );
        Ok(NvmlSensor {
            nvml,
            index,
            gpu_name,
            energy,
        })
    }

    /// The GPU index NVML uses.
    pub fn index(&self) -> u32 {
        self.index
    }
}

/// The GPU at PCI address `pci`: the one CUDA serves on.
pub fn open_at(pci: PciAddress) -> Result<NvmlSensor, String> {
    let nvml = Arc::new(Nvml::init().map_err(init_error)?);
    let count = nvml
        .device_count()
        .map_err(|e| format!("NVML could not count GPUs: {e}"))?;
    let index = (0..count)
        .find(|&i| {
            nvml.device_by_index(i)
                .and_then(|d| d.pci_info())
                .is_ok_and(|p| (p.domain, p.bus, p.device) == (pci.domain, pci.bus, pci.device))
        })
        .ok_or_else(|| format!("NVML sees no GPU at PCI {pci}"))?;
    NvmlSensor::open(nvml, index)
}

/// Opens every GPU NVML sees. Err when the driver is missing or there is no usable GPU.
pub fn open_all() -> Result<Vec<NvmlSensor>, String> {
    let nvml = Arc::new(Nvml::init().map_err(init_error)?);
    let count = nvml
        .device_count()
        .map_err(|e| format!("NVML could not count GPUs: {e}"))?;
    if count == 0 {
        return Err("NVML is loaded but sees no GPUs".to_string());
    }
    if let Ok(driver) = nvml.sys_driver_version() {
        tracing::info!("NVIDIA driver {driver}, {count} GPU(s)");
    }
    let mut sensors = Vec::new();
    let mut errors = Vec::new();
    for index in 0..count {
        match NvmlSensor::open(Arc::clone(&nvml), index) {
            Ok(sensor) => sensors.push(sensor),
            Err(e) => {
                tracing::warn!("skipping GPU: {e}");
                errors.push(e);
            }
        }
    }
    if sensors.is_empty() {
        return Err(format!("no usable GPU: {}", errors.join("; ")));
    }
    Ok(sensors)
}

/// A message a user can act on for a failed `Nvml::init`.
fn init_error(e: NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(inner) => {
            format!("no NVIDIA driver: libnvidia-ml.so.1 could not be loaded ({inner})")
        }
        NvmlError::DriverNotLoaded => {
            "no NVIDIA driver: libnvidia-ml is installed but the kernel driver is not loaded"
                .to_string()
        }
        NvmlError::NoPermission => {
            "NVML has no permission to talk to the NVIDIA driver (check /dev/nvidia* access)"
                .to_string()
        }
        other => format!("NVML could not be initialised: {other}"),
    }
}

impl PowerSensor for NvmlSensor {
    fn name(&self) -> String {
        format!("nvml:{}", self.index)
    }

    fn source(&self) -> Source {
        Source::Measured
    }

    fn read(&mut self) -> Result<Reading, String> {
        let index = self.index;
        let device = self
            .nvml
            .device_by_index(index)
            .map_err(|e| format!("nvml:{index}: {e}"))?;
        let milliwatts = device
            .power_usage()
            .map_err(|e| format!("nvml:{index}: power usage: {e}"))?;

        // Unsupported (pre-Volta) once: stop asking, the monitor integrates power instead.
        let energy_j = match self.energy.as_mut() {
            None => None,
            Some(counter) => match device.total_energy_consumption() {
                Ok(raw) => Some(counter.update(raw)),
                Err(NvmlError::NotSupported) => {
                    tracing::info!("nvml:{index}: no energy counter; integrating power");
                    self.energy = None;
                    None
                }
                Err(e) => {
                    tracing::debug!("nvml:{index}: energy counter: {e}");
                    None
                }
            },
        };

        let (memory_used_bytes, memory_total_bytes) = device
            .memory_info()
            .map(|m| (m.used, m.total))
            .unwrap_or((0, 0));
        let gpu = GpuReading {
            index,
            name: self.gpu_name.clone(),
            utilization_pct: device.utilization_rates().map(|u| u.gpu).unwrap_or(0),
            memory_used_bytes,
            memory_total_bytes,
            sm_clock_mhz: device.clock_info(Clock::SM).unwrap_or(0),
            mem_clock_mhz: device.clock_info(Clock::Memory).unwrap_or(0),
            temperature_c: device.temperature(TemperatureSensor::Gpu).unwrap_or(0),
            throttle_reasons: device
                .current_throttle_reasons()
                .map(throttle_names)
                .unwrap_or_default(),
        };

        Ok(Reading {
            sensor: self.name(),
            watts: f64::from(milliwatts) / 1000.0,
            energy_j,
            source: Source::Measured,
            gpu: Some(gpu),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_reason_names() {
        let reasons = ThrottleReasons::SW_POWER_CAP | ThrottleReasons::HW_SLOWDOWN;
        assert_eq!(throttle_names(reasons), ["sw_power_cap", "hw_slowdown"]);
        assert!(throttle_names(ThrottleReasons::NONE).is_empty());
        assert_eq!(
            throttle_names(ThrottleReasons::SW_THERMAL_SLOWDOWN),
            ["sw_thermal_slowdown"]
        );
    }

    #[test]
    fn energy_counter_counts_from_first_value_and_survives_reset() {
        let mut counter = EnergyCounter::default();
        assert_eq!(counter.update(5_000_000), 0.0);
        assert_eq!(counter.update(5_002_500), 2.5);
        // Counter restarted (driver reload): the new value is energy since the restart.
        assert_eq!(counter.update(1_000), 3.5);
        assert_eq!(counter.update(3_000), 5.5);
    }

    #[test]
    fn open_all_without_driver_is_an_error_not_a_panic() {
        match open_all() {
            Ok(sensors) => assert!(!sensors.is_empty()),
            Err(e) => assert!(!e.is_empty()),
        }
    }
}
