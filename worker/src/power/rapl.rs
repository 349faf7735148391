//! CPU energy from RAPL counters exposed through Linux powercap: one [`RaplSensor`] per
//! package domain (`intel-rapl:N`, named "package-N") and per DRAM subzone
//! (`intel-rapl:N:M` named "dram"). "core"/"uncore" subzones are skipped (they are inside the
//! package figure), as are top-level zones such as "psys" that overlap the packages.
//!
//! Only the `intel-rapl:*` names are read; AMD Zen CPUs are exposed under the same names by
//! the kernel's RAPL driver.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{PowerSensor, Reading, Source};

/// Where the kernel exposes powercap zones.
pub const POWERCAP_ROOT: &str = "/sys/class/powercap";

const PREFIX: &str = "intel-rapl:";

/// One RAPL domain's energy counter.
#[derive(Debug)]
pub struct RaplSensor {
    label: String,
    energy_path: PathBuf,
    /// The value after which the counter wraps to zero (0 when unknown: a decrease is then
    /// taken as a restart from zero).
    max_range_uj: u64,
    last_uj: u64,
    last_at: Option<Instant>,
    total_uj: u64,
}

impl RaplSensor {
    /// Opens the domain in `dir` (a powercap zone directory), labelled `label`.
    fn open(dir: &Path, label: String) -> Result<RaplSensor, String> {
        let energy_path = dir.join("energy_uj");
        let last_uj = read_u64(&energy_path)?;
        let max_range_uj = read_u64(&dir.join("max_energy_range_uj")).unwrap_or_else(|e| {
            tracing::warn!("{label}: {e}; a counter wrap will be taken as a restart");
            0
        });
        Ok(RaplSensor {
            label,
            energy_path,
            max_range_uj,
            last_uj,
            last_at: None,
            total_uj: 0,
        })
    }

    /// Reads the counter as if at `now`.
    fn sample(&mut self, now: Instant) -> Result<Reading, String> {
        let uj = read_u64(&self.energy_path)?;
        let delta = if uj >= self.last_uj {
            uj - self.last_uj
        } else if self.max_range_uj >= self.last_uj {
            self.max_range_uj - self.last_uj + uj
        } else {
            uj
        };
        self.total_uj += delta;
        let watts = match self.last_at {
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                if dt > 0.0 {
                    delta as f64 / 1e6 / dt
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last_uj = uj;
        self.last_at = Some(now);
        Ok(Reading {
            sensor: self.label.clone(),
            watts,
            energy_j: Some(self.total_uj as f64 / 1e6),
            source: Source::Measured,
            gpu: None,
        })
    }
}

impl PowerSensor for RaplSensor {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn source(&self) -> Source {
        Source::Measured
    }

    fn read(&mut self) -> Result<Reading, String> {
        self.sample(Instant::now())
    }
}

/// Opens every package domain under `root` (normally [`POWERCAP_ROOT`]) and its DRAM subzone.
/// Err when there is none, or when one cannot be read (energy_uj is root-only on most kernels).
pub fn open_all(root: &Path) -> Result<Vec<RaplSensor>, String> {
    let packages = zones(root, None).map_err(|e| {
        format!(
            "RAPL is not available: {} cannot be listed ({e})",
            root.display()
        )
    })?;
    let mut sensors = Vec::new();
    for (_, dir) in packages {
        let name = read_name(&dir)?;
        if !name.starts_with("package") {
            tracing::debug!("RAPL: skipping {} ({name})", dir.display());
            continue;
        }
        let label = format!("rapl:{name}");
        sensors.push(RaplSensor::open(&dir, label.clone())?);
        let prefix = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        for (_, sub) in zones(&dir, prefix.as_deref()).unwrap_or_default() {
            if read_name(&sub)? == "dram" {
                sensors.push(RaplSensor::open(&sub, format!("{label}/dram"))?);
            }
        }
    }
    if sensors.is_empty() {
        return Err(format!(
            "RAPL is not available: no intel-rapl package domain under {} (no RAPL support, \
             or the intel_rapl_msr module is not loaded)",
            root.display()
        ));
    }
    let names: Vec<&str> = sensors.iter().map(|s| s.label.as_str()).collect();
    tracing::info!("RAPL domains: {}", names.join(", "));
    Ok(sensors)
}

/// Zone directories in `dir`, sorted by index: `intel-rapl:N` when `parent` is None, else
/// `<parent>:M`.
fn zones(dir: &Path, parent: Option<&str>) -> io::Result<Vec<(u32, PathBuf)>> {
    let prefix = match parent {
        Some(p) => format!("{p}:"),
        None => PREFIX.to_string(),
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix.as_str()))
        else {
            continue;
        };
        if let Ok(index) = rest.parse::<u32>() {
            found.push((index, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

fn read_name(dir: &Path) -> Result<String, String> {
    let path = dir.join("name");
    fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| read_error(&path, &e))
}

fn read_u64(path: &Path) -> Result<u64, String> {
    let text = fs::read_to_string(path).map_err(|e| read_error(path, &e))?;
    text.trim()
        .parse()
        .map_err(|_| format!("RAPL: {}: not a number: {:?}", path.display(), text.trim()))
}

/// A message a user can act on for a failed read of `path`.
fn read_error(path: &Path, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "RAPL is not readable: {}: permission denied (energy_uj is root-only on recent \
             kernels); run as root or `chmod o+r` it",
            path.display()
        ),
        io::ErrorKind::NotFound => {
            format!("RAPL is not readable: {} does not exist", path.display())
        }
        _ => format!("RAPL is not readable: {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A fake powercap tree: two packages, the first with "core" and "dram" subzones, and a
    /// "psys" zone that must be skipped.
    fn fake_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let zone = |rel: &str, name: &str, uj: u64| {
            let d = dir.path().join(rel);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("name"), format!("{name}\n")).unwrap();
            fs::write(d.join("energy_uj"), format!("{uj}\n")).unwrap();
            fs::write(d.join("max_energy_range_uj"), "1000000\n").unwrap();
        };
        zone("intel-rapl:0", "package-0", 1000);
        zone("intel-rapl:0/intel-rapl:0:0", "core", 10);
        zone("intel-rapl:0/intel-rapl:0:1", "dram", 20);
        zone("intel-rapl:1", "package-1", 5000);
        zone("intel-rapl:2", "psys", 7);
        fs::create_dir_all(dir.path().join("intel-rapl")).unwrap();
        dir
    }

    fn set(dir: &tempfile::TempDir, rel: &str, uj: u64) {
        fs::write(dir.path().join(rel).join("energy_uj"), format!("{uj}\n")).unwrap();
    }

    #[test]
    fn finds_packages_and_dram_in_a_fake_tree() {
        let dir = fake_tree();
        let sensors = open_all(dir.path()).unwrap();
        let names: Vec<String> = sensors.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            ["rapl:package-0", "rapl:package-0/dram", "rapl:package-1"]
        );
        assert!(sensors.iter().all(|s| s.source() == Source::Measured));
    }

    #[test]
    fn energy_advances_and_watts_follow() {
        let dir = fake_tree();
        let mut sensors = open_all(dir.path()).unwrap();
        let pkg = &mut sensors[0];
        let t0 = Instant::now();
        let first = pkg.sample(t0).unwrap();
        assert_eq!(first.watts, 0.0);
        assert_eq!(first.energy_j, Some(0.0));

        set(&dir, "intel-rapl:0", 1000 + 500_000);
        let second = pkg.sample(t0 + Duration::from_millis(100)).unwrap();
        assert_eq!(second.energy_j, Some(0.5));
        assert!((second.watts - 5.0).abs() < 1e-9, "{}", second.watts);
        assert_eq!(second.sensor, "rapl:package-0");
    }

    #[test]
    fn counter_wrap_is_handled() {
        let dir = fake_tree();
        set(&dir, "intel-rapl:1", 999_000);
        let mut sensors = open_all(dir.path()).unwrap();
        let pkg1 = &mut sensors[2];
        let t0 = Instant::now();
        pkg1.sample(t0).unwrap();
        set(&dir, "intel-rapl:1", 1000);
        let after = pkg1.sample(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(after.energy_j, Some(0.002));
        assert!((after.watts - 0.002).abs() < 1e-12, "{}", after.watts);
    }

    #[test]
    fn missing_tree_or_counter_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = open_all(&dir.path().join("nope")).unwrap_err();
        assert!(err.contains("RAPL is not available"), "{err}");

        let err = open_all(dir.path()).unwrap_err();
        assert!(err.contains("no intel-rapl package domain"), "{err}");

        let tree = fake_tree();
        fs::remove_file(tree.path().join("intel-rapl:1/energy_uj")).unwrap();
        let err = open_all(tree.path()).unwrap_err();
        assert!(
            err.contains("intel-rapl:1/energy_uj does not exist"),
            "{err}"
        );
    }

    #[test]
    fn permission_denied_says_what_to_do() {
        // Real permission errors can't be provoked reliably (tests may run as root).
        let path = Path::new("/sys/class/powercap/intel-rapl:0/energy_uj");
        let err = read_error(path, &io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(
            err.contains("intel-rapl:0/energy_uj: permission denied"),
            "{err}"
        );
        assert!(err.contains("run as root"), "{err}");
    }
}
