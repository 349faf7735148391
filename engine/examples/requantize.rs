//! Requantises a GGUF model to Q8_0, Q6_K or llama.cpp's Q4_K_M mix with
//! [`joule_engine::testkit::requantize`]: every matrix is expanded to f32 row by row and encoded
//! again ([`joule_engine::quant::quantize`]); norms and biases are copied; the metadata (the
//! vocabulary included) is kept, with `general.file_type` set. For models of the K-quant types
//! made from a model at hand where none can be downloaded. A model requantised from an already
//! quantised one (SmolLM2's Q4_1, say) carries both rounding errors. Deterministic: the same
//! input gives the same file.
//!
//! `cargo run --release -p joule-engine --example requantize -- IN.gguf q8_0|q6_k|q4_k_m OUT.gguf`
//!
//! Prints one line: the output, its size, and how many tensors of each type it holds. Exit
//! code 2 on bad arguments, 1 when the input cannot be read or the output cannot be written.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use joule_engine::gguf::GgufFile;
use joule_engine::testkit::{Requant, requantize};

const USAGE: &str = "usage: requantize IN.gguf q8_0|q6_k|q4_k_m OUT.gguf";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, scheme, output] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Some(scheme) = Requant::parse(scheme) else {
        eprintln!("requantize: the type must be q8_0, q6_k or q4_k_m, got {scheme:?}\n{USAGE}");
        return ExitCode::from(2);
    };
    let start = Instant::now();
    let file = match GgufFile::open(input) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("requantize: cannot read the model: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bytes = match requantize(&file, scheme) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("requantize: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Unmap the input before writing: OUT may be the same file.
    drop(file);
    let size = bytes.len();
    if let Err(e) = std::fs::write(output, bytes) {
        eprintln!("requantize: cannot write {output}: {e}");
        return ExitCode::FAILURE;
    }
    let written = match GgufFile::open(output) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("requantize: {output} does not read back: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in &written.header.tensors {
        *counts.entry(t.dtype.to_string()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(t, n)| format!("{n} {t}")).collect();
    println!(
        "requantize: wrote {output} ({}, {:.1} MiB, {:.1} s): {} tensors: {}",
        scheme.name(),
        size as f64 / f64::from(1u32 << 20),
        start.elapsed().as_secs_f64(),
        written.header.tensors.len(),
        counts.join(", ")
    );
    ExitCode::SUCCESS
}
