//! The tiled weight kernels alone, one thread, at every SIMD level this CPU runs: multiply-adds
//! per second and per clock cycle for each stored type and tokens per call, once with the tile
//! in L1 (the kernel's own ceiling) and once streaming a matrix far larger than the caches (what
//! decode sees). The clock is measured in the same run with a chain of dependent adds, so the
//! cycle figures hold on a machine whose frequency is not known.
//!
//! `cargo bench -p joule-engine --bench kernels` (env `KERNEL_TYPES=q4_k,q6_k,q4_1,q8_0`,
//! `KERNEL_TOKENS=1,2,4,8`, `KERNEL_LEVELS=avx2,...`, `KERNEL_ACTS=int16,int8`,
//! `KERNEL_COLS=2048`, medians of `KERNEL_REPEATS=5`).

use std::time::Instant;

use joule_engine::quant::pack::{TILE, tile_matrix, tiled_len, tiled_row_bytes};
use joule_engine::quant::quantize::quantize_row;
use joule_engine::quant::{ActBits, ActRow, Kernels, Level, QActs};
use joule_engine::rng::Rng;
use joule_engine::tensor::DType;

mod common;
use common::{clock_ghz, median};

fn env_list(key: &str, default: &str) -> Vec<String> {
    std::env::var(key)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn dtype(name: &str) -> DType {
    DType::ALL
        .into_iter()
        .find(|d| d.to_string().eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("KERNEL_TYPES: unknown type {name}"))
}

/// A tiled random matrix of `rows` x `cols`.
fn matrix(dt: DType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let mut stored = Vec::new();
    let mut row = vec![0f32; cols];
    for _ in 0..rows.min(64) {
        for v in &mut row {
            *v = rng.next_f32() * 2.0 - 1.0;
        }
        stored.extend(quantize_row(dt, &row));
    }
    let rb = stored.len() / rows.min(64);
    // Rows past the 64th repeat the first ones: the kernel's speed does not depend on values.
    while stored.len() < rows * rb {
        let n = (rows * rb - stored.len()).min(stored.len());
        stored.extend_from_within(..n);
    }
    let out = tile_matrix(dt, rows, rb, &stored);
    assert_eq!(out.len(), tiled_len(dt, rows, rb));
    out
}

fn main() {
    let cols: usize = env_list("KERNEL_COLS", "2048")[0]
        .parse()
        .expect("KERNEL_COLS");
    let reps: usize = env_list("KERNEL_REPEATS", "5")[0]
        .parse()
        .expect("KERNEL_REPEATS");
    let tokens: Vec<usize> = env_list("KERNEL_TOKENS", "1,2,4,8")
        .iter()
        .map(|s| s.parse().expect("KERNEL_TOKENS"))
        .collect();
    let levels: Vec<Level> = match std::env::var("KERNEL_LEVELS") {
        Ok(v) => v
            .split(',')
            .map(|s| Level::parse(s).unwrap_or_else(|| panic!("KERNEL_LEVELS: {s}")))
            .collect(),
        Err(_) => Level::supported()
            .into_iter()
            .filter(|l| *l != Level::Scalar)
            .collect(),
    };
    let ghz = clock_ghz();
    println!("clock {ghz:.2} GHz (dependent adds), {cols} columns, one thread, median of {reps}");
    println!(
        "| type | level | acts | tokens | L1 GMAC/s | L1 MAC/cycle | stream GMAC/s | stream GB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rng = Rng::new(7);
    let nt = *tokens.iter().max().unwrap_or(&1);
    let x: Vec<f32> = (0..nt * cols).map(|_| rng.next_f32() - 0.5).collect();
    let qs: Vec<QActs> = env_list("KERNEL_ACTS", "int16,int8")
        .iter()
        .map(|b| {
            let mut q = QActs::default();
            q.bits = ActBits::parse(b).expect("KERNEL_ACTS");
            q.quantize(&x, cols);
            q
        })
        .collect();
    for name in env_list("KERNEL_TYPES", "q4_k,q6_k,q4_1,q8_0") {
        let dt = dtype(&name);
        let tile = matrix(dt, TILE, cols, &mut rng);
        // Far past the last-level cache: 512 MiB of tiles.
        let rb = tiled_row_bytes(dt, cols);
        let big_rows = ((512usize << 20) / rb) / TILE * TILE;
        let big = matrix(dt, big_rows, cols, &mut rng);
        for &level in &levels {
            let k = match Kernels::at(level) {
                Ok(k) => k,
                Err(e) => {
                    println!("| {dt} | {} | - | - | {e} |", level.name());
                    continue;
                }
            };
            let Some(f) = k.tile(dt) else { continue };
            for (q, &n) in qs.iter().flat_map(|q| tokens.iter().map(move |n| (q, n))) {
                let acts: Vec<ActRow<'_>> = (0..n)
                    .map(|t| q.row(&x[t * cols..(t + 1) * cols], t, cols))
                    .collect();
                let mut out = vec![0f32; n * big_rows];
                // L1: the one tile, again and again.
                let calls = (200_000_000 / (TILE * cols * n)).max(10);
                let l1 = median(
                    (0..reps)
                        .map(|_| {
                            let t = Instant::now();
                            for _ in 0..calls {
                                // SAFETY: out holds n rows of TILE (stride TILE).
                                unsafe { f(&tile, TILE, &acts, out.as_mut_ptr(), TILE) };
                            }
                            (calls * TILE * cols * n) as f64 / t.elapsed().as_secs_f64()
                        })
                        .collect(),
                );
                let tb = big.len() / (big_rows / TILE);
                let stream = median(
                    (0..reps)
                        .map(|_| {
                            let t = Instant::now();
                            for (i, tile) in big.chunks_exact(tb).enumerate() {
                                // SAFETY: out holds n rows of big_rows; tile i's are i*16.. .
                                unsafe {
                                    f(tile, TILE, &acts, out.as_mut_ptr().add(i * TILE), big_rows)
                                };
                            }
                            t.elapsed().as_secs_f64()
                        })
                        .collect(),
                );
                std::hint::black_box(&out);
                println!(
                    "| {dt} | {} | {} | {n} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    level.name(),
                    q.bits,
                    l1 / 1e9,
                    l1 / 1e9 / ghz,
                    (big_rows * cols * n) as f64 / stream / 1e9,
                    big.len() as f64 / stream / 1e9,
                );
            }
        }
    }
}
