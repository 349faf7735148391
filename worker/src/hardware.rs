//! What this machine is: CPU model and cores, memory, the engine's SIMD level, and the GPUs
//! NVML sees. Its fingerprint keys the calibration cache: a profile measured on one machine is
//! not reused on another.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The parts of a machine that change how fast and how efficiently it serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hardware {
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub physical_cores: usize,
    pub memory_bytes: u64,
    pub simd: String,
    /// "NVIDIA H100 80GB HBM3 (driver 550.54)" per GPU.
    pub gpus: Vec<String>,
}

impl Hardware {
    pub fn detect(simd: &str, gpus: Vec<String>) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        Self {
            cpu_model,
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            physical_cores: joule_engine::model::physical_cores(),
            memory_bytes,
            simd: simd.to_string(),
            gpus,
        }
    }

    /// A short stable hash of the machine plus `extra` (settings that change the result, such
    /// as the thread count).
    pub fn fingerprint(&self, extra: &str) -> String {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(self).unwrap_or_default());
        h.update(extra.as_bytes());
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_changes_with_the_machine_and_settings() {
        let a = Hardware::detect("avx2", vec![]);
        assert!(a.logical_cpus >= 1);
        assert_eq!(a.fingerprint("t=2"), a.fingerprint("t=2"));
        assert_ne!(a.fingerprint("t=2"), a.fingerprint("t=1"));
        let mut b = a.clone();
        b.gpus.push("NVIDIA H100".into());
        assert_ne!(a.fingerprint(""), b.fingerprint(""));
        assert_eq!(a.fingerprint("").len(), 16);
    }
}
