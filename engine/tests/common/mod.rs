//! Shared helpers of the engine's integration tests: where the default model and the reference
//! fixtures are, and how logits are compared.

#![allow(dead_code)]

pub mod tiny;

use std::path::PathBuf;

/// The default model, fetched by `deploy/fetch-default-model.sh`. Tests that need it fail with
/// that instruction rather than skip.
pub fn default_model() -> PathBuf {
    let p = joule_engine::testkit::default_model_path();
    assert!(
        p.exists(),
        "{} is missing: run deploy/fetch-default-model.sh first",
        p.display()
    );
    p
}

/// `tests/reference/fixtures/NAME` at the repository root.
pub fn fixture(name: &str) -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/reference/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array of floats")
        .iter()
        .map(|x| x.as_f64().expect("float") as f32)
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The largest absolute difference between `got[ids[i]]` and `want[i]`.
pub fn max_diff(got: &[f32], ids: &[u32], want: &[f32]) -> f32 {
    ids.iter()
        .zip(want)
        .map(|(&i, &w)| (got[i as usize] - w).abs())
        .fold(0.0, f32::max)
}

/// Waits until nothing runs or waits, then checks every block is back and the books agree.
pub fn assert_pool_full(h: &joule_engine::batch::EngineHandle) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while {
        let s = h.stats();
        s.running + s.waiting > 0
    } {
        assert!(
            std::time::Instant::now() < deadline,
            "the engine did not go idle: {:?}",
            h.stats()
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    h.check_kv().expect("consistent pool");
    let kv = h.stats().kv;
    assert_eq!(
        (kv.used, kv.free),
        (0, kv.total),
        "blocks still held: {kv:?}"
    );
}

/// Runs `tests` of this test binary again in a child process per SIMD level this CPU runs other
/// than the one this process picked, with `JOULE_SIMD` set to it: the numeric contract must hold
/// at every level the engine can be forced to, not only the best. Does nothing where
/// `JOULE_SIMD` is already set (a child, or a run forced by hand). `scalar`: include the portable
/// level (slow; its row-at-a-time kernels cannot depend on the batch by construction).
pub fn rerun_at_other_levels(tests: &[&str], scalar: bool) {
    use joule_engine::quant::Level;
    if std::env::var_os("JOULE_SIMD").is_some() {
        eprintln!("JOULE_SIMD is set: only this level runs");
        return;
    }
    let exe = std::env::current_exe().expect("this test binary");
    let best = Level::best();
    let levels = Level::supported()
        .into_iter()
        .filter(|l| *l != best && (scalar || *l != Level::Scalar));
    for level in levels {
        let started = std::time::Instant::now();
        let out = std::process::Command::new(&exe)
            .args(tests)
            .arg("--exact")
            .env("JOULE_SIMD", level.name())
            .output()
            .expect("run this test binary again");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        assert!(
            out.status.success(),
            "JOULE_SIMD={level}: {tests:?} failed:\n{}",
            tail.join("\n")
        );
        let ran = text.matches("... ok").count();
        assert_eq!(
            ran,
            tests.len(),
            "JOULE_SIMD={level}: expected {} tests to pass:\n{text}",
            tests.len()
        );
        eprintln!(
            "JOULE_SIMD={level}: {ran} tests passed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}
