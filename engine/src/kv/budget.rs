//! How much memory the KV pool may take: a byte count (`4GiB`, `512MB`, `1000000`) or a
//! fraction of the memory available at start-up (`0.4`, `40%`).

use std::fmt;
use std::str::FromStr;

/// A memory budget for the KV pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvBudget {
    Bytes(u64),
    /// Of `MemAvailable` at start-up.
    FractionOfFree(f64),
}

impl Default for KvBudget {
    fn default() -> Self {
        KvBudget::FractionOfFree(0.3)
    }
}

impl fmt::Display for KvBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvBudget::Bytes(b) => write!(f, "{b} bytes"),
            KvBudget::FractionOfFree(x) => write!(f, "{:.0}% of available memory", x * 100.0),
        }
    }
}

impl FromStr for KvBudget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad = || {
            format!(
                "KV budget {s:?} is neither a size (e.g. 4GiB, 512MB, 1000000) nor a fraction of \
                 free memory in (0, 1] (e.g. 0.4 or 40%)"
            )
        };
        let fraction = |x: f64| {
            if x > 0.0 && x <= 1.0 {
                Ok(KvBudget::FractionOfFree(x))
            } else {
                Err(bad())
            }
        };
        if let Some(p) = t.strip_suffix('%') {
            return fraction(p.trim().parse::<f64>().map_err(|_| bad())? / 100.0);
        }
        if t.contains('.') && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return fraction(t.parse().map_err(|_| bad())?);
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        let bytes = num.checked_mul(mult).ok_or_else(bad)?;
        if bytes == 0 {
            return Err(bad());
        }
        Ok(KvBudget::Bytes(bytes))
    }
}

impl KvBudget {
    /// The budget in bytes, given the memory available now.
    pub fn bytes(&self, available: u64) -> u64 {
        match *self {
            KvBudget::Bytes(b) => b,
            KvBudget::FractionOfFree(x) => (available as f64 * x) as u64,
        }
    }
}

/// `MemAvailable` from `/proc/meminfo`, or 4 GiB where that cannot be read.
pub fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4 << 30, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_as_sizes_or_fractions_and_nonsense_is_refused() {
        assert_eq!("4GiB".parse(), Ok(KvBudget::Bytes(4 << 30)));
        assert_eq!("512 MB".parse(), Ok(KvBudget::Bytes(512_000_000)));
        assert_eq!("1000000".parse(), Ok(KvBudget::Bytes(1_000_000)));
        assert_eq!("0.4".parse(), Ok(KvBudget::FractionOfFree(0.4)));
        assert_eq!("25%".parse(), Ok(KvBudget::FractionOfFree(0.25)));
        for bad in [
            "",
            "0",
            "1.5",
            "0%",
            "-3",
            "12XB",
            "lots",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<KvBudget>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(KvBudget::FractionOfFree(0.5).bytes(1000), 500);
    }
}
