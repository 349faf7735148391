//! Estimated CPU power when nothing can be measured: a linear model between idle and busy
//! watts, driven by machine-wide CPU utilisation from `/proc/stat`.

use std::fs;
use std::path::PathBuf;

use super::{EstimateConfig, PowerSensor, Reading, Source};

const PROC_STAT: &str = "/proc/stat";

/// Jiffy counts from the aggregate "cpu" line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

/// Parses the first "cpu" line: user nice system idle iowait irq softirq steal, then guest
/// and guest_nice, which are already counted in user/nice and so left out of the total.
fn parse_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// `idle + (busy - idle) * utilisation` watts, utilisation measured between reads.
#[derive(Debug)]
pub struct EstimateSensor {
    cfg: EstimateConfig,
    stat_path: PathBuf,
    last: Option<CpuTimes>,
    utilisation: f64,
    warned: bool,
}

impl EstimateSensor {
    pub fn new(cfg: EstimateConfig) -> EstimateSensor {
        EstimateSensor::with_stat_path(cfg, PathBuf::from(PROC_STAT))
    }

    /// Reads CPU times from `stat_path` instead of `/proc/stat` (for tests).
    pub fn with_stat_path(cfg: EstimateConfig, stat_path: PathBuf) -> EstimateSensor {
        EstimateSensor {
            cfg,
            stat_path,
            last: None,
            utilisation: 0.0,
            warned: false,
        }
    }

    /// CPU utilisation (0..=1) over the interval before the last read.
    pub fn utilisation(&self) -> f64 {
        self.utilisation
    }

    fn update_utilisation(&mut self) {
        let now = match fs::read_to_string(&self.stat_path) {
            Ok(text) => parse_stat(&text),
            Err(e) => {
                if !self.warned {
                    tracing::warn!(
                        "power estimate: {}: {e}; assuming idle",
                        self.stat_path.display()
                    );
                    self.warned = true;
                }
                None
            }
        };
        match (self.last, now) {
            (Some(prev), Some(cur)) => {
                let total = cur.total.saturating_sub(prev.total);
                // No jiffies elapsed (reads too close together): keep the last figure.
                if total > 0 {
                    let busy = cur.busy.saturating_sub(prev.busy);
                    self.utilisation = (busy as f64 / total as f64).clamp(0.0, 1.0);
                }
            }
            _ => self.utilisation = 0.0,
        }
        self.last = now;
    }
}

impl PowerSensor for EstimateSensor {
    fn name(&self) -> String {
        "estimate".to_string()
    }

    fn source(&self) -> Source {
        Source::Estimated
    }

    fn read(&mut self) -> Result<Reading, String> {
        self.update_utilisation();
        let EstimateConfig {
            idle_watts,
            busy_watts,
        } = self.cfg;
        Ok(Reading {
            sensor: self.name(),
            watts: idle_watts + (busy_watts - idle_watts) * self.utilisation,
            energy_j: None,
            source: Source::Estimated,
            gpu: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EstimateConfig {
        EstimateConfig {
            idle_watts: 10.0,
            busy_watts: 30.0,
        }
    }

    #[test]
    fn parses_the_aggregate_cpu_line() {
        let text = "cpu  100 5 50 800 20 3 2 0 40 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1\n";
        assert_eq!(
            parse_stat(text),
            Some(CpuTimes {
                busy: 160,
                total: 980
            })
        );
        assert_eq!(parse_stat("intr 1\n"), None);
    }

    #[test]
    fn half_busy_gives_midway_watts_from_a_fake_stat_file() {
        let dir = tempfile::tempdir().unwrap();
        let stat = dir.path().join("stat");
        fs::write(&stat, "cpu  100 0 100 800 0 0 0 0 0 0\n").unwrap();
        let mut sensor = EstimateSensor::with_stat_path(cfg(), stat.clone());
        assert_eq!(sensor.name(), "estimate");
        assert_eq!(sensor.source(), Source::Estimated);

        let first = sensor.read().unwrap();
        assert_eq!(first.watts, 10.0);
        assert_eq!(first.energy_j, None);

        // +100 busy, +100 idle jiffies: 50% busy.
        fs::write(&stat, "cpu  150 0 150 900 0 0 0 0 0 0\n").unwrap();
        let second = sensor.read().unwrap();
        assert!((sensor.utilisation() - 0.5).abs() < 1e-12);
        assert!((second.watts - 20.0).abs() < 1e-9, "{}", second.watts);
        assert_eq!(second.source, Source::Estimated);
    }

    #[test]
    fn unreadable_stat_means_idle() {
        let dir = tempfile::tempdir().unwrap();
        let mut sensor = EstimateSensor::with_stat_path(cfg(), dir.path().join("missing"));
        assert_eq!(sensor.read().unwrap().watts, 10.0);
        assert_eq!(sensor.read().unwrap().watts, 10.0);
        assert_eq!(sensor.utilisation(), 0.0);
    }
}
