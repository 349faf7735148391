//! Calibration: how many output tokens per joule a model delivers on this machine at each
//! batch size. A short sweep runs batches of identical-length requests through the model's own
//! engine, times the decode phase, and reads the power sensor over the same interval. Profiles
//! are cached on disk by model sha256 and hardware fingerprint, so a restart does not redo it.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use joule_engine::batch::{EnergyMeter, Request};
use joule_engine::sample::SamplingParams;
use serde::{Deserialize, Serialize};

use crate::power::Source;
use crate::registry::Served;

/// Prompt tokens of every calibration request.
const PROMPT_TOKENS: usize = 32;

/// One batch size's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub batch_size: usize,
    pub output_tokens_per_s: f64,
    pub watts: f64,
    pub tokens_per_joule: f64,
}

/// A model's curve on one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub model_sha256: String,
    pub hardware: String,
    pub source: Source,
    /// Unix seconds.
    pub measured_at: i64,
    pub points: Vec<Point>,
}

/// The sweep's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub batches: Vec<usize>,
    pub tokens: u32,
    pub cache_dir: PathBuf,
    pub recalibrate: bool,
}

fn cache_path(dir: &Path, sha256: &str, hardware: &str) -> PathBuf {
    let sha = if sha256.is_empty() { "nosha" } else { sha256 };
    dir.join("calibration")
        .join(format!("{sha}-{hardware}.json"))
}

/// The cached profile, or a fresh sweep (saved for next time).
pub fn profile(
    served: &Served,
    meter: &dyn EnergyMeter,
    hardware: &str,
    s: &Settings,
) -> Result<Profile, String> {
    let path = cache_path(&s.cache_dir, &served.sha256, hardware);
    if !s.recalibrate && !served.sha256.is_empty() {
        match std::fs::read(&path) {
            Ok(b) => match serde_json::from_slice::<Profile>(&b) {
                Ok(p) => {
                    tracing::info!(model = %served.name, path = %path.display(), "calibration profile from cache");
                    return Ok(p);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable calibration cache file")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the calibration cache")
            }
        }
    }
    let points = sweep(served, meter, &s.batches, s.tokens)?;
    let p = Profile {
        model_sha256: served.sha256.clone(),
        hardware: hardware.to_string(),
        source: if meter.measured() {
            Source::Measured
        } else {
            Source::Estimated
        },
        measured_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        points,
    };
    if !served.sha256.is_empty()
        && let Err(e) = save(&path, &p)
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot cache the calibration profile");
    }
    Ok(p)
}

/// Writes atomically: a reader never sees half a file.
fn save(path: &Path, p: &Profile) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(p).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

/// Runs each batch size that fits and returns its point; logs one progress line per point.
pub fn sweep(
    served: &Served,
    meter: &dyn EnergyMeter,
    batches: &[usize],
    tokens: u32,
) -> Result<Vec<Point>, String> {
    let engine = &served.engine;
    let cfg = &engine.config();
    let bs = engine.stats().block_size.max(1);
    let per_seq_blocks = (PROMPT_TOKENS + tokens as usize).div_ceil(bs);
    let fits: Vec<usize> = batches
        .iter()
        .copied()
        .filter(|&b| {
            let ok = b * per_seq_blocks <= engine.kv_blocks()
                && PROMPT_TOKENS + (tokens as usize) < cfg.context_len;
            if !ok {
                tracing::info!(model = %served.name, batch = b, "calibration: batch does not fit in the KV pool; skipped");
            }
            ok
        })
        .collect();
    let source = if meter.measured() {
        "measured"
    } else {
        "estimated"
    };
    let mut points = Vec::new();
    let started = Instant::now();
    for (i, &b) in fits.iter().enumerate() {
        let p = point(served, meter, b, tokens, cfg.vocab)?;
        tracing::info!(
            model = %served.name,
            "calibrating [{}/{}] batch {:>3}: {:7.1} tok/s  {:6.1} W ({source})  {:6.2} tokens/J  ({:.1}s)",
            i + 1,
            fits.len(),
            b,
            p.output_tokens_per_s,
            p.watts,
            p.tokens_per_joule,
            started.elapsed().as_secs_f64()
        );
        points.push(p);
    }
    if points.is_empty() {
        return Err("calibration: no batch size fits in this model's KV pool".into());
    }
    Ok(points)
}

fn point(
    served: &Served,
    meter: &dyn EnergyMeter,
    b: usize,
    tokens: u32,
    vocab: usize,
) -> Result<Point, String> {
    let engine = &served.engine;
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: tokens,
        ignore_eos: true,
        ..Default::default()
    };
    let mut streams = Vec::with_capacity(b);
    // Distinct pseudo-random prompts, so the prefix cache does not shorten any prefill.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ b as u64;
    for _ in 0..b {
        let prompt: Vec<u32> = (0..PROMPT_TOKENS)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) % vocab as u64) as u32
            })
            .collect();
        let req = Request::new(prompt, params.clone()).tenant("calibration", 1.0);
        streams.push(
            engine
                .submit(req)
                .map_err(|e| format!("calibration: {e}"))?,
        );
    }
    let base = engine.stats().generated_tokens_total;
    // The decode phase starts once every sequence has its first token.
    let mut total = 0usize;
    for s in &mut streams {
        let ev = s.blocking_next().ok_or("calibration: the engine stopped")?;
        if let Some(f) = ev.finish {
            total += f.usage.completion_tokens;
        }
    }
    let (t0, e0) = (Instant::now(), meter.total_joules());
    let g0 = engine.stats().generated_tokens_total.saturating_sub(base) as usize;
    for mut s in streams {
        while let Some(ev) = s.blocking_next() {
            if let Some(f) = ev.finish {
                if f.usage.completion_tokens == 0 {
                    return Err(format!(
                        "calibration: a request ended early: {}",
                        f.message.unwrap_or_default()
                    ));
                }
                total += f.usage.completion_tokens;
                break;
            }
        }
    }
    let (dt, de) = (t0.elapsed().as_secs_f64(), meter.total_joules() - e0);
    let n = total.saturating_sub(g0) as f64;
    let tps = if dt > 0.0 { n / dt } else { 0.0 };
    let watts = if dt > 0.0 { de / dt } else { 0.0 };
    Ok(Point {
        batch_size: b,
        output_tokens_per_s: tps,
        watts,
        tokens_per_joule: if de > 0.0 { n / de } else { 0.0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_paths_separate_models_and_machines() {
        let d = Path::new("/c");
        assert_ne!(cache_path(d, "aa", "m1"), cache_path(d, "aa", "m2"));
        assert_ne!(cache_path(d, "aa", "m1"), cache_path(d, "bb", "m1"));
        assert!(cache_path(d, "aa", "m1").starts_with("/c/calibration"));
    }

    #[test]
    fn profiles_round_trip_through_the_cache_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = Profile {
            model_sha256: "ab".into(),
            hardware: "hw".into(),
            source: Source::Estimated,
            measured_at: 1,
            points: vec![Point {
                batch_size: 4,
                output_tokens_per_s: 100.0,
                watts: 50.0,
                tokens_per_joule: 2.0,
            }],
        };
        let path = cache_path(dir.path(), "ab", "hw");
        save(&path, &p).unwrap();
        let back: Profile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
