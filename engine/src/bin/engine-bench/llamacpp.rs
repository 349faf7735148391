//! The baseline: llama.cpp's `llama-batched-bench` on the same model, threads and number of
//! parallel sequences (`engine/benches/llamacpp.sh` builds it into /tmp). It prefills every
//! sequence's random prompt, then decodes all of them in lock-step; its output rate here is
//! generated tokens over its whole time (prefill included), as the engine's is.

use std::path::Path;
use std::process::Command;

/// One `llama-batched-bench` measurement.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    /// Generated tokens over prefill + decode time.
    pub output_tokens_per_s: f64,
    /// Generated tokens over decode time only (its `S_TG`).
    pub decode_tokens_per_s: f64,
}

/// Runs `bin` for `parallel` sequences of `prompt` tokens in and `output` out.
pub fn batched_bench(
    bin: &Path,
    model: &Path,
    threads: usize,
    parallel: usize,
    prompt: usize,
    output: usize,
) -> Result<Baseline, String> {
    let ctx = parallel * (prompt + output) + 16;
    let args: Vec<String> = [
        "-m",
        &model.display().to_string(),
        "-t",
        &threads.to_string(),
        "-tb",
        &threads.to_string(),
        "-c",
        &ctx.to_string(),
        "-b",
        "2048",
        "-ub",
        "512",
        "-npp",
        &prompt.to_string(),
        "-ntg",
        &output.to_string(),
        "-npl",
        &parallel.to_string(),
        "--output-format",
        "jsonl",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = Command::new(bin)
        .args(&args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        let tail: String = text.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(format!("{} failed ({}): {tail}", bin.display(), out.status));
    }
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("{\"n_kv_max\""))
        .ok_or_else(|| format!("no result line in the output of {}", bin.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).map_err(|e| format!("bad result line: {e}"))?;
    let num = |k: &str| {
        v[k].as_f64()
            .ok_or_else(|| format!("result line lacks {k}: {line}"))
    };
    let (pl, tg, t, t_tg) = (num("pl")?, num("tg")?, num("t")?, num("t_tg")?);
    Ok(Baseline {
        output_tokens_per_s: pl * tg / t,
        decode_tokens_per_s: pl * tg / t_tg,
    })
}
