//! The SIMD levels the CPU kernels come in, which of them this CPU runs, and the
//! `JOULE_SIMD` override that forces a lower one (for tests and benchmarks of the paths older
//! servers take). Asking for a level the CPU lacks is an error naming what is missing; it never
//! silently falls back.

/// A kernel level, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Portable Rust: the reference every other level is tested against.
    Scalar,
    /// AVX2 + FMA + F16C (Haswell, Zen 1 and later).
    Avx2,
    /// AVX-512 F and BW without VNNI (Skylake-SP, Cascade Lake without VNNI use).
    Avx512,
    /// AVX-512 with VNNI (Cascade Lake, Ice Lake, Sapphire Rapids, Zen 4 and later).
    Avx512Vnni,
}

/// The environment variable that picks a level.
pub const ENV: &str = "JOULE_SIMD";

impl Level {
    pub const ALL: [Level; 4] = [Level::Scalar, Level::Avx2, Level::Avx512, Level::Avx512Vnni];

    /// The name `JOULE_SIMD` takes and logs show.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Avx512Vnni => "avx512-vnni",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == s)
    }

    /// CPU features this level needs that this CPU lacks (empty: it runs here).
    pub fn missing(self) -> Vec<&'static str> {
        #[cfg(target_arch = "x86_64")]
        return super::x86::missing(self);
        #[cfg(not(target_arch = "x86_64"))]
        match self {
            Level::Scalar => Vec::new(),
            _ => vec!["x86-64"],
        }
    }

    /// The levels this CPU runs, lowest first.
    pub fn supported() -> Vec<Level> {
        Self::ALL
            .into_iter()
            .filter(|l| l.missing().is_empty())
            .collect()
    }

    /// The highest level this CPU runs.
    pub fn best() -> Level {
        Self::supported().pop().unwrap_or(Level::Scalar)
    }

    /// The level `value` (a `JOULE_SIMD` setting) asks for: empty or `auto` is the best; an
    /// unknown name, or a level this CPU lacks, is an error saying what to set instead.
    pub fn choose(value: &str) -> Result<Level, String> {
        let value = value.trim();
        if value.is_empty() || value == "auto" {
            return Ok(Self::best());
        }
        let runs = || {
            Self::supported()
                .iter()
                .map(|l| l.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(level) = Self::parse(value) else {
            let all: Vec<&str> = Self::ALL.iter().map(|l| l.name()).collect();
            return Err(format!(
                "{ENV}={value:?} is not a SIMD level: use one of auto, {} (this CPU runs {})",
                all.join(", "),
                runs()
            ));
        };
        let missing = level.missing();
        if !missing.is_empty() {
            return Err(format!(
                "{ENV}={value}: this CPU lacks {}; it runs {} (unset {ENV} for the best)",
                missing.join(", "),
                runs()
            ));
        }
        Ok(level)
    }

    /// The level the environment asks for (see [`Level::choose`]).
    pub fn from_env() -> Result<Level, String> {
        match std::env::var_os(ENV) {
            None => Ok(Self::best()),
            Some(v) => match v.to_str() {
                Some(v) => Self::choose(v),
                None => Err(format!(
                    "{ENV} is not valid UTF-8: unset it or name a level"
                )),
            },
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused_with_the_choices() {
        for l in Level::ALL {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::choose("").unwrap(), Level::best());
        assert_eq!(Level::choose("auto").unwrap(), Level::best());
        assert_eq!(Level::choose("scalar").unwrap(), Level::Scalar);
        let e = Level::choose("avx3").unwrap_err();
        assert!(e.contains("JOULE_SIMD=\"avx3\" is not a SIMD level"), "{e}");
        assert!(
            e.contains("avx512-vnni") && e.contains("this CPU runs scalar"),
            "{e}"
        );
        for l in Level::ALL {
            match Level::choose(l.name()) {
                Ok(got) => assert!(l.missing().is_empty() && got == l),
                Err(e) => {
                    assert!(!l.missing().is_empty());
                    assert!(e.contains("this CPU lacks"), "{e}");
                }
            }
        }
        assert!(Level::supported().contains(&Level::Scalar));
    }
}
