//! Throughput of the few AVX2 instructions the tiled kernels are made of, on this CPU: cycles
//! per instruction for ten independent copies in a loop (no dependency chains), so the figure
//! is the issue rate the core sustains, not a latency. It says which pipe bounds a kernel: at
//! AVX2 each 16-bit activation costs two `vpmaddubsw` where an 8-bit one costs one, so where
//! the products are the bound (prefill, large batches) int16 activations run at about half the
//! int8 rate whatever the kernel's shape.
//!
//! `cargo bench -p joule-engine --bench ports` (x86-64 with AVX2 and FMA; elsewhere it says so
//! and exits). The clock is measured in the same run with a chain of dependent register adds.

use std::time::Instant;

mod common;
#[cfg(target_arch = "x86_64")]
use common::{clock_ghz, median};

/// Ten copies of `op dst, src` with destinations ymm0..ymm9 and the given sources.
macro_rules! ten {
    ($op:literal, $src:literal) => {
        concat!(
            $op, " ymm0, ", $src, "\n", $op, " ymm1, ", $src, "\n", $op, " ymm2, ", $src, "\n",
            $op, " ymm3, ", $src, "\n", $op, " ymm4, ", $src, "\n", $op, " ymm5, ", $src, "\n",
            $op, " ymm6, ", $src, "\n", $op, " ymm7, ", $src, "\n", $op, " ymm8, ", $src, "\n",
            $op, " ymm9, ", $src, "\n"
        )
    };
}

/// Nanoseconds per run of `$asm` (ten instructions), median of five timings of 2 million runs.
#[cfg(target_arch = "x86_64")]
macro_rules! time {
    ($asm:expr) => {{
        let buf = [1u8; 64];
        let p = buf.as_ptr();
        let v: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..2_000_000 {
                    // SAFETY: register arithmetic, and loads from the 64 bytes of `buf`.
                    unsafe {
                        std::arch::asm!(
                            "/* {p} */", $asm, p = in(reg) p,
                            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
                            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
                            out("ymm8") _, out("ymm9") _, out("ymm14") _, out("ymm15") _,
                            options(nostack, readonly)
                        )
                    };
                }
                t.elapsed().as_nanos() as f64 / 2e6
            })
            .collect();
        median(v)
    }};
}

#[cfg(target_arch = "x86_64")]
fn main() {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        println!("this CPU has no AVX2 and FMA: nothing to measure");
        return;
    }
    let ghz = clock_ghz();
    println!("clock {ghz:.2} GHz (dependent adds); cycles per instruction, ten independent copies");
    println!("| instruction | what the kernels use it for | cycles/instr |");
    println!("|---|---|---|");
    let rows: [(&str, &str, f64); 9] = [
        (
            "vpmaddubsw ymm",
            "4 weights x 8 rows, one int8 plane",
            time!(ten!("vpmaddubsw", "ymm14, ymm15")),
        ),
        (
            "vpmaddwd ymm",
            "16-bit sums widened to 32 bits",
            time!(ten!("vpmaddwd", "ymm14, ymm15")),
        ),
        (
            "vpbroadcastd ymm, m32",
            "4 activation bytes to every lane",
            time!(ten!("vpbroadcastd", "[{p}]")),
        ),
        (
            "vpsignb ymm",
            "a weight's sign onto the activations (Q8_0)",
            time!(ten!("vpsignb", "ymm14, ymm15")),
        ),
        (
            "vpaddw ymm",
            "16-bit partial sums",
            time!(ten!("vpaddw", "ymm14, ymm15")),
        ),
        (
            "vpand ymm",
            "nibble masks",
            time!(ten!("vpand", "ymm14, ymm15")),
        ),
        (
            "vpsrlw ymm, imm",
            "high nibbles",
            time!(ten!("vpsrlw", "ymm14, 4")),
        ),
        (
            "vcvtdq2ps ymm",
            "integer sums to f32",
            time!(ten!("vcvtdq2ps", "ymm14")),
        ),
        (
            "vfmadd231ps ymm",
            "scaled sums into the f32 accumulators",
            time!(ten!("vfmadd231ps", "ymm14, ymm15")),
        ),
    ];
    for (name, what, ns) in rows {
        println!("| `{name}` | {what} | {:.2} |", ns * ghz / 10.0);
    }
    // Five of each, interleaved: 0.5 cycles each if they issue on different pipes, 1.0 if they
    // share the same two.
    let mixed = time!(concat!(
        "vpmaddubsw ymm0, ymm14, ymm15\nvfmadd231ps ymm1, ymm14, ymm15\n",
        "vpmaddubsw ymm2, ymm14, ymm15\nvfmadd231ps ymm3, ymm14, ymm15\n",
        "vpmaddubsw ymm4, ymm14, ymm15\nvfmadd231ps ymm5, ymm14, ymm15\n",
        "vpmaddubsw ymm6, ymm14, ymm15\nvfmadd231ps ymm7, ymm14, ymm15\n",
        "vpmaddubsw ymm8, ymm14, ymm15\nvfmadd231ps ymm9, ymm14, ymm15\n"
    ));
    println!(
        "| `vpmaddubsw` + `vfmadd231ps` | a product and an accumulation, per pair | {:.2} |",
        mixed * ghz / 5.0
    );
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("not an x86-64 CPU: nothing to measure");
}
