//! Power sensing: the sensor trait and reading types, which sensors to open (`open`, `gpus`),
//! and the background [`PowerMonitor`] that turns readings into cumulative joules.
//!
//! Sensors: [`nvml`] (NVIDIA GPUs), [`rapl`] (CPU package and DRAM energy counters via
//! powercap) and [`estimate`] (a linear model of CPU utilisation when nothing is measurable).

pub mod estimate;
pub mod monitor;
pub mod nvml;
pub mod rapl;

pub use monitor::PowerMonitor;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Whether a figure comes from a hardware sensor or from a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Measured,
    Estimated,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Measured => "measured",
            Source::Estimated => "estimated",
        }
    }
}

/// GPU details reported alongside an NVML power reading.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GpuReading {
    pub index: u32,
    pub name: String,
    pub utilization_pct: u32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub sm_clock_mhz: u32,
    pub mem_clock_mhz: u32,
    pub temperature_c: u32,
    pub throttle_reasons: Vec<String>,
}

/// One sample from one sensor.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reading {
    /// "nvml:0", "rapl:package-0", "rapl:package-0/dram", "estimate".
    pub sensor: String,
    pub watts: f64,
    /// Cumulative joules since the sensor was opened, from a hardware counter (wraps handled);
    /// None when the sensor has no counter (the monitor integrates watts then).
    pub energy_j: Option<f64>,
    pub source: Source,
    pub gpu: Option<GpuReading>,
}

/// Something that reports power.
pub trait PowerSensor: Send {
    /// Stable label, e.g. "nvml:0".
    fn name(&self) -> String;
    fn source(&self) -> Source;
    /// A fresh reading. Err: this reading failed (the monitor logs it and keeps the last one).
    fn read(&mut self) -> Result<Reading, String>;
}

/// Which sensors to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorChoice {
    Auto,
    Nvml,
    Rapl,
    Estimate,
}

const CHOICES: &str = "auto, nvml, rapl, estimate";

impl SensorChoice {
    pub fn as_str(&self) -> &'static str {
        match self {
            SensorChoice::Auto => "auto",
            SensorChoice::Nvml => "nvml",
            SensorChoice::Rapl => "rapl",
            SensorChoice::Estimate => "estimate",
        }
    }
}

impl fmt::Display for SensorChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SensorChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(SensorChoice::Auto),
            "nvml" => Ok(SensorChoice::Nvml),
            "rapl" => Ok(SensorChoice::Rapl),
            "estimate" => Ok(SensorChoice::Estimate),
            _ => Err(format!(
                "unknown power sensor {s:?}: expected one of {CHOICES}"
            )),
        }
    }
}

/// The linear power model used when nothing can be measured.
#[derive(Debug, Clone)]
pub struct EstimateConfig {
    pub idle_watts: f64,
    pub busy_watts: f64,
}

/// Opens the sensors for `choice`. Auto, serving on the GPU at PCI address `gpu`: that GPU
/// through NVML, plus RAPL where readable (the host drives the GPU); serving on the CPU, or
/// when NVML cannot open that GPU: RAPL if readable, else the estimate. Nvml: every GPU NVML
/// sees, error if none/no driver. Rapl: error if /sys/class/powercap has no readable
/// intel-rapl domain. Estimate: always works.
///
/// Errors are a clear String a user can act on.
pub fn open(
    choice: SensorChoice,
    est: &EstimateConfig,
    gpu: Option<joule_engine::cuda::PciAddress>,
) -> Result<Vec<Box<dyn PowerSensor>>, String> {
    let fallback = || -> Vec<Box<dyn PowerSensor>> {
        vec![Box::new(estimate::EstimateSensor::new(est.clone()))]
    };
    if let (SensorChoice::Auto, Some(pci)) = (choice, gpu) {
        match std::panic::catch_unwind(|| nvml::open_at(pci)) {
            Ok(Ok(g)) => {
                let mut sensors: Vec<Box<dyn PowerSensor>> = vec![Box::new(g)];
                if let Ok(cpu) = rapl::open_all(Path::new(rapl::POWERCAP_ROOT)) {
                    sensors.extend(boxed(cpu));
                }
                return Ok(sensors);
            }
            Ok(Err(e)) => tracing::warn!("power: the serving GPU cannot be metered: {e}"),
            Err(_) => tracing::warn!("power: NVML panicked while opening the serving GPU"),
        }
    }
    match choice {
        SensorChoice::Auto => match rapl::open_all(Path::new(rapl::POWERCAP_ROOT)) {
            Ok(sensors) => Ok(boxed(sensors)),
            Err(e) => {
                tracing::info!(
                    "power: {e}; estimating CPU power from utilisation ({} W idle, {} W busy)",
                    est.idle_watts,
                    est.busy_watts
                );
                Ok(fallback())
            }
        },
        SensorChoice::Nvml => nvml::open_all().map(boxed),
        SensorChoice::Rapl => rapl::open_all(Path::new(rapl::POWERCAP_ROOT)).map(boxed),
        SensorChoice::Estimate => Ok(fallback()),
    }
}

/// NVML sensors for every GPU, for reporting (empty, with one info log, when there's no
/// driver). Never panics.
pub fn gpus() -> Vec<Box<dyn PowerSensor>> {
    match std::panic::catch_unwind(nvml::open_all) {
        Ok(Ok(sensors)) => boxed(sensors),
        Ok(Err(e)) => {
            tracing::info!("no GPU power reporting: {e}");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!("no GPU power reporting: NVML panicked while opening GPUs");
            Vec::new()
        }
    }
}

fn boxed<S: PowerSensor + 'static>(sensors: Vec<S>) -> Vec<Box<dyn PowerSensor>> {
    sensors
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn PowerSensor>)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_parses_and_rejects_unknown() {
        assert_eq!("auto".parse::<SensorChoice>(), Ok(SensorChoice::Auto));
        assert_eq!("NVML".parse::<SensorChoice>(), Ok(SensorChoice::Nvml));
        assert_eq!("rapl".parse::<SensorChoice>(), Ok(SensorChoice::Rapl));
        assert_eq!(
            "estimate".parse::<SensorChoice>(),
            Ok(SensorChoice::Estimate)
        );
        let err = SensorChoice::from_str("gpu").unwrap_err();
        assert!(err.contains("\"gpu\""), "{err}");
        for choice in ["auto", "nvml", "rapl", "estimate"] {
            assert!(err.contains(choice), "{err}");
        }
        assert_eq!(SensorChoice::Estimate.to_string(), "estimate");
    }

    #[test]
    fn estimate_choice_opens_one_estimated_sensor() {
        let est = EstimateConfig {
            idle_watts: 10.0,
            busy_watts: 60.0,
        };
        let sensors = open(SensorChoice::Estimate, &est, None).unwrap();
        assert_eq!(sensors.len(), 1);
        assert_eq!(sensors[0].source(), Source::Estimated);
        assert_eq!(sensors[0].name(), "estimate");
    }

    #[test]
    fn source_strings() {
        assert_eq!(Source::Measured.as_str(), "measured");
        assert_eq!(Source::Estimated.as_str(), "estimated");
        assert_eq!(
            serde_json::to_string(&Source::Estimated).unwrap(),
            "\"estimated\""
        );
    }

    #[test]
    fn gpus_never_panics() {
        // No driver: empty. With a GPU: one sensor per device, each named "nvml:N".
        for s in gpus() {
            assert!(s.name().starts_with("nvml:"), "{}", s.name());
            assert_eq!(s.source(), Source::Measured);
        }
    }

    #[test]
    fn auto_on_a_gpu_nvml_cannot_open_falls_back_to_the_cpus_sensors() {
        let est = EstimateConfig {
            idle_watts: 40.0,
            busy_watts: 120.0,
        };
        // No GPU sits at this address (and without a driver NVML cannot start at all): the
        // worker still starts, metering the CPU as it would without a GPU.
        let sensors = open(
            SensorChoice::Auto,
            &est,
            Some(joule_engine::cuda::PciAddress {
                domain: 0xffff,
                bus: 0xff,
                device: 31,
            }),
        )
        .unwrap();
        let cpu = open(SensorChoice::Auto, &est, None).unwrap();
        let names = |v: &[Box<dyn PowerSensor>]| v.iter().map(|s| s.name()).collect::<Vec<_>>();
        assert!(!sensors.is_empty());
        assert_eq!(names(&sensors), names(&cpu));
        assert!(sensors.iter().all(|s| !s.name().starts_with("nvml:")));
    }
}
