//! Prefill and batch-1 decode throughput on the default model (or `JOULE_BENCH_MODEL`), with 1
//! and 2 threads (or `JOULE_BENCH_THREADS=1,2,4`), next to llama.cpp's `llama-bench` on the same
//! file and threads when `LLAMA_BENCH` points at it (see `engine/benches/llamacpp.sh`), and decode
//! as a fraction of the memory-bandwidth roofline measured in the same run.
//!
//! `cargo bench -p joule-engine --bench inference` (medians over `JOULE_BENCH_REPEATS`, default 5,
//! the engine and llama-bench taking turns one repeat each; `JOULE_ACTIVATIONS=int8` for the
//! 8-bit activation mode).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use joule_engine::model::forward::Logits;
use joule_engine::model::{LoadOptions, Model};
use joule_engine::quant::ActBits;
use joule_engine::sample::argmax;

const PREFILL: usize = 512;
const DECODE: usize = 128;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Copy bandwidth in bytes/s with `threads` threads over a buffer far larger than the caches,
/// counting read + write (STREAM's convention for Copy). Median of `reps`.
fn copy_bandwidth(threads: usize, reps: usize) -> f64 {
    let n = 256 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    let chunk = n / threads;
    let copy = |dst: &mut [u8]| {
        std::thread::scope(|s| {
            for (d, src) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(std::hint::black_box(src)));
            }
        })
    };
    copy(&mut dst);
    let rates = (0..reps)
        .map(|_| {
            let t = Instant::now();
            copy(&mut dst);
            std::hint::black_box(&dst);
            2.0 * n as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    median(rates)
}

fn prompt(vocab: usize) -> Vec<u32> {
    // A deterministic spread of ordinary token ids (llama-bench also uses arbitrary tokens).
    (0..PREFILL)
        .map(|i| (1000 + (i * 7919) % 20_000) as u32 % vocab as u32)
        .collect()
}

/// One prefill of 512 tokens and 128 decode steps: (pp512, tg128) tokens/s.
fn bench_engine(model: &Model) -> (f64, f64) {
    let p = prompt(model.config.vocab);
    let mut cache = model.new_cache(PREFILL + DECODE);
    let t = Instant::now();
    let logits = model
        .forward(&p, &mut cache, Logits::Last)
        .expect("prefill");
    let pre = PREFILL as f64 / t.elapsed().as_secs_f64();
    // llama-bench's tg128 decodes from an empty context; do the same.
    let mut cache = model.new_cache(DECODE + 1);
    let mut tok = argmax(&logits);
    let t = Instant::now();
    for _ in 0..DECODE {
        let l = model
            .forward(&[tok], &mut cache, Logits::Last)
            .expect("decode");
        tok = argmax(&l);
    }
    (pre, DECODE as f64 / t.elapsed().as_secs_f64())
}

/// (pp512, tg128) tokens/s from llama-bench's JSON output.
fn bench_llama_cpp(bin: &str, model: &Path, threads: usize, reps: usize) -> Option<(f64, f64)> {
    let out = Command::new(bin)
        .args(["-m", &model.to_string_lossy(), "-t", &threads.to_string()])
        .args([
            "-p",
            &PREFILL.to_string(),
            "-n",
            &DECODE.to_string(),
            "-r",
            &reps.to_string(),
            "-o",
            "json",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "llama-bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut pp = None;
    let mut tg = None;
    for r in runs.as_array()? {
        let ts = r["avg_ts"].as_f64()?;
        if r["n_prompt"].as_u64()? > 0 {
            pp = Some(ts);
        } else {
            tg = Some(ts);
        }
    }
    Some((pp?, tg?))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes with --list; nothing to list.
    }
    let model_path = std::env::var_os("JOULE_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let out = Command::new("bash")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../deploy/fetch-default-model.sh"
                ))
                .output();
            let path = out
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            PathBuf::from(path)
        });
    let reps: usize = env_or("JOULE_BENCH_REPEATS", "5").parse().unwrap_or(5);
    let threads: Vec<usize> = env_or("JOULE_BENCH_THREADS", "1,2")
        .split(',')
        .filter_map(|t| t.parse().ok())
        .collect();
    let llama = std::env::var("LLAMA_BENCH").ok();
    let activations =
        ActBits::parse(&env_or("JOULE_ACTIVATIONS", "int16")).expect("JOULE_ACTIVATIONS");

    println!("model: {}", model_path.display());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!("cpu: {cpu}; {activations} activations; repeats: {reps} (medians)");
    println!();
    println!(
        "| threads | engine pp{PREFILL} tok/s | llama.cpp pp{PREFILL} | ratio | engine tg{DECODE} tok/s | llama.cpp tg{DECODE} | ratio | decode % of roofline |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &t in &threads {
        let model = Model::load(
            &model_path,
            &LoadOptions {
                threads: t,
                activations,
            },
        )
        .expect("load model");
        let bytes = model.weights.bytes_per_token() as f64;
        let bw = copy_bandwidth(t, reps.max(5));
        // Engine and llama.cpp take turns, one repeat each, so a neighbour that slows the
        // shared machine for a while slows both sides alike.
        let (mut e, mut l) = ((vec![], vec![]), (vec![], vec![]));
        for _ in 0..reps {
            let (pp, tg) = bench_engine(&model);
            e.0.push(pp);
            e.1.push(tg);
            let (lpp, ltg) = llama
                .as_deref()
                .and_then(|b| bench_llama_cpp(b, &model_path, t, 1))
                .unwrap_or((f64::NAN, f64::NAN));
            l.0.push(lpp);
            l.1.push(ltg);
        }
        let (pp, tg, lpp, ltg) = (median(e.0), median(e.1), median(l.0), median(l.1));
        let roof = bw / bytes;
        println!(
            "| {t} | {pp:.1} | {lpp:.1} | {:.2}x | {tg:.1} | {ltg:.1} | {:.2}x | {:.0}% ({:.1} MB/token, copy {:.1} GB/s, roofline {roof:.0} tok/s) |",
            pp / lpp,
            tg / ltg,
            100.0 * tg / roof,
            bytes / 1e6,
            bw / 1e9
        );
    }
    println!(
        "simd: {}",
        Model::load(&model_path, &LoadOptions::with_threads(1))
            .map(|m| m.simd_level())
            .unwrap_or("?")
    );
}
