//! `engine-bench`: a serving benchmark of the engine alone. N client streams (closed loop) send
//! requests whose lengths follow a fixed-seed ShareGPT-shaped distribution, most starting with
//! one of a few shared system prompts; it reports output tokens/s, TTFT and inter-token latency
//! percentiles, KV waste and the prefix-cache hit rate. With `--llama-batched-bench` it also runs
//! a fixed-length workload (every stream the mean lengths) on the engine and on llama.cpp's
//! `llama-batched-bench` with the same model, threads and concurrency, and reports the ratio.
//!
//! With `--device cuda:N` (build with `--features cuda`) the steps run on that GPU, and each
//! level also reports the device's copy bandwidth, measured in the same run, and the batch-1
//! decode rate as a fraction of the bandwidth roofline (weight bytes read per token).
//!
//! `cargo run --release -p joule-engine --bin engine-bench -- --model PATH --concurrency 1,8,32,64
//! --requests M --seed S [--threads T] [--device cuda:0] [--json]`. With `--json` each concurrency level prints one
//! JSON object per line, so the last line is one JSON object.

mod llamacpp;
mod nvml;
mod run;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use joule_engine::batch::{EngineConfig, EngineHandle};
use joule_engine::cuda::Device;
use joule_engine::gguf::GgufFile;
use joule_engine::kv::{KvBudget, KvDType};
use joule_engine::model::{Config, physical_cores};
use joule_engine::quant::ActBits;
use joule_engine::tokenizer::Tokenizer;
use joule_engine::{LoadOptions, Model};
use serde_json::json;

use run::{RunResult, percentile_ms};
use workload::Shape;

#[derive(Parser, Debug)]
#[command(
    name = "engine-bench",
    about = "Serving benchmark of the Joule engine alone"
)]
struct Args {
    /// A GGUF file or a Hugging Face model directory.
    #[arg(long, env = "JOULE_MODEL")]
    model: PathBuf,
    /// Concurrent streams; a comma-separated list runs each level in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64")]
    concurrency: Vec<usize>,
    /// Requests per level (default: 2 x concurrency, at least 8).
    #[arg(long)]
    requests: Option<usize>,
    /// Seed of the workload (lengths and prompt tokens).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compute threads (default: physical cores).
    #[arg(long, env = "JOULE_THREADS")]
    threads: Option<usize>,
    /// Activation precision of the CPU kernels: `int16` or `int8` (llama.cpp's).
    #[arg(long, env = "JOULE_ACTIVATIONS", default_value = "int16", value_parser = ActBits::parse)]
    activations: ActBits,
    /// Runs per level; figures are medians over them.
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// `sharegpt`: ShareGPT-shaped lengths with shared system prompts; `fixed`: every request
    /// `--fixed-prompt` tokens in and `--fixed-output` out, as llama-batched-bench runs.
    #[arg(long, value_enum, default_value_t = WorkloadKind::Sharegpt)]
    workload: WorkloadKind,
    /// Distinct shared system prompts (0: every prompt is its own).
    #[arg(long, default_value_t = 4)]
    system_prompts: usize,
    /// Tokens of each shared system prompt.
    #[arg(long, default_value_t = 64)]
    system_len: usize,
    /// KV pool size: bytes (4GiB, 512MB) or a fraction of available memory (0.3, 30%).
    #[arg(long, env = "JOULE_KV_BUDGET", default_value = "2GiB")]
    kv_budget: KvBudget,
    #[arg(long, default_value = "f16")]
    kv_dtype: KvDType,
    #[arg(long, default_value_t = 512)]
    max_batched_tokens: usize,
    /// Most sequences running at once (default: the concurrency, at least 64).
    #[arg(long)]
    max_seqs: Option<usize>,
    #[arg(long)]
    no_prefix_caching: bool,
    /// `llama-batched-bench` binary: also compare with llama.cpp at each level.
    #[arg(long, env = "LLAMA_BATCHED_BENCH")]
    llama_batched_bench: Option<PathBuf>,
    /// Prompt and output tokens per request of the `fixed` workload and the llama.cpp comparison.
    #[arg(long, default_value_t = 160)]
    fixed_prompt: usize,
    #[arg(long, default_value_t = 340)]
    fixed_output: usize,
    /// One JSON object per level on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Where the steps run: `cpu` or `cuda:N` (needs the `cuda` feature and libnvrtc).
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// With a GPU: the share of its free memory (after the weights) the KV cache takes.
    #[arg(long, default_value_t = 0.9)]
    gpu_memory_fraction: f64,
    /// With a GPU: steps of at least this many rows multiply through cuBLAS (0: never).
    #[arg(long, default_value_t = joule_engine::cuda::DEFAULT_GEMM_ROWS)]
    gemm_rows: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum WorkloadKind {
    Sharegpt,
    Fixed,
}

fn load(path: &Path, threads: usize, activations: ActBits) -> Result<(Model, Tokenizer), String> {
    let opts = LoadOptions {
        threads,
        activations,
    };
    let r = if path.is_dir() {
        Model::load(path, &opts).and_then(|m| Ok((m, Tokenizer::from_dir(path)?)))
    } else {
        GgufFile::open(path)
            .and_then(|f| Ok((Model::from_gguf(&f, &opts)?, Tokenizer::from_gguf(&f)?)))
    };
    r.map_err(|e| format!("cannot load {}: {e}", path.display()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Starts a fresh engine (cold prefix cache) and runs `jobs` through it.
fn measure(
    a: &Args,
    threads: usize,
    concurrency: usize,
    jobs: &[workload::Job],
) -> Result<RunResult, String> {
    let cfg = EngineConfig {
        max_batched_tokens: a.max_batched_tokens,
        max_seqs: a.max_seqs.unwrap_or(concurrency.max(64)),
        kv_dtype: a.kv_dtype,
        kv_budget: a.kv_budget,
        prefix_caching: !a.no_prefix_caching,
        ..Default::default()
    };
    // A GPU backend reads the weights itself: the CPU's copy is never loaded.
    let engine = match a.device {
        Device::Cpu => {
            let (model, tk) = load(&a.model, threads, a.activations)?;
            EngineHandle::start(model, tk, cfg)
        }
        Device::Cuda(n) => Tokenizer::load(&a.model)
            .and_then(|tk| Ok((tk, gpu_backend(a, n, &cfg)?)))
            .and_then(|(tk, b)| EngineHandle::start_on(tk, cfg, None, b)),
    }
    .map_err(|e| e.to_string())?;
    // On a GPU the run's energy comes from NVML's counter, read around it.
    let counter = match a.device {
        Device::Cuda(n) => nvml::Counter::open(n)
            .inspect_err(|e| eprintln!("energy not measured: {e}"))
            .ok(),
        Device::Cpu => None,
    };
    let before = counter.as_ref().and_then(|c| c.millijoules().ok());
    let mut r = run::run(&engine, jobs, concurrency);
    let after = counter.as_ref().and_then(|c| c.millijoules().ok());
    r.joules = before
        .zip(after)
        .map(|(b, e)| e.saturating_sub(b) as f64 / 1000.0);
    engine.shutdown();
    if let Some(f) = r.failures.first() {
        return Err(format!("{} requests failed; first: {f}", r.failures.len()));
    }
    Ok(r)
}

#[cfg(feature = "cuda")]
fn gpu_backend(
    a: &Args,
    ordinal: usize,
    cfg: &EngineConfig,
) -> joule_engine::Result<Box<dyn joule_engine::backend::Backend>> {
    use joule_engine::cuda::forward::{CudaModel, KvSize};
    let cache = std::env::temp_dir().join("joule-kernel-cache");
    let mut m = CudaModel::load(
        &a.model,
        ordinal,
        &cache,
        cfg.block_size,
        cfg.kv_dtype,
        KvSize::FreeFraction(a.gpu_memory_fraction),
    )?;
    m.set_gemm_rows((a.gemm_rows > 0).then_some(a.gemm_rows));
    Ok(Box::new(m))
}

#[cfg(not(feature = "cuda"))]
fn gpu_backend(
    _a: &Args,
    _ordinal: usize,
    _cfg: &EngineConfig,
) -> joule_engine::Result<Box<dyn joule_engine::backend::Backend>> {
    Err(joule_engine::EngineError::InvalidRequest(
        joule_engine::cuda::CudaUnavailable::BuiltWithout.to_string(),
    ))
}

/// The GPU's device-to-device copy bandwidth (bytes read plus written per second), measured
/// now, and the weight bytes one decode step reads.
#[cfg(feature = "cuda")]
fn roofline(a: &Args, ordinal: usize) -> Result<serde_json::Value, String> {
    let gpu = joule_engine::cuda::runtime::Gpu::open(
        ordinal,
        &std::env::temp_dir().join("joule-kernel-cache"),
    )?;
    let bw = gpu.copy_bandwidth(1 << 30, 20)?;
    let (_, weights) = joule_engine::model::load_parts(&a.model).map_err(|e| e.to_string())?;
    let bytes = weights.bytes_per_token() as f64;
    Ok(json!({
        "gpu": gpu.info.describe(),
        "copy_bandwidth_gb_s": bw / 1e9,
        "weight_bytes_per_token": bytes,
        "roofline_tokens_per_s": bw / bytes,
    }))
}

#[cfg(not(feature = "cuda"))]
fn roofline(_a: &Args, _ordinal: usize) -> Result<serde_json::Value, String> {
    Err(joule_engine::cuda::CudaUnavailable::BuiltWithout.to_string())
}

fn level(a: &Args, c: &Config, threads: usize, n: usize) -> Result<serde_json::Value, String> {
    let requests = a.requests.unwrap_or((2 * n).max(8));
    let fixed = Shape::Fixed {
        prompt: a.fixed_prompt,
        output: a.fixed_output,
    };
    let shape = match a.workload {
        WorkloadKind::Sharegpt => Shape::ShareGpt {
            system_prompts: a.system_prompts,
            system_len: a.system_len,
        },
        WorkloadKind::Fixed => fixed.clone(),
    };
    let jobs = workload::jobs(&shape, requests, a.seed, c.vocab, c.context_len);
    let runs = (0..a.repeats)
        .map(|_| measure(a, threads, n, &jobs))
        .collect::<Result<Vec<_>, _>>()?;
    let med = |f: &dyn Fn(&RunResult) -> f64| median(runs.iter().map(f).collect());
    let mean_in = jobs.iter().map(|j| j.prompt.len()).sum::<usize>() as f64 / jobs.len() as f64;
    let mean_out = jobs.iter().map(|j| j.output as f64).sum::<f64>() / jobs.len() as f64;
    let mut v = json!({
        "concurrency": n,
        "workload": format!("{:?}", a.workload).to_lowercase(),
        "requests": requests,
        "threads": threads,
        "seed": a.seed,
        "repeats": a.repeats,
        "mean_prompt_tokens": mean_in,
        "mean_output_tokens": mean_out,
        "output_tokens_per_s": med(&|r| r.output_tokens_per_s()),
        "prompt_tokens_per_s": med(&|r| r.prompt_tokens as f64 / r.wall.as_secs_f64()),
        "ttft_ms_p50": med(&|r| percentile_ms(&r.ttft, 50.0)),
        "ttft_ms_p99": med(&|r| percentile_ms(&r.ttft, 99.0)),
        "itl_ms_p50": med(&|r| percentile_ms(&r.itl, 50.0)),
        "itl_ms_p99": med(&|r| percentile_ms(&r.itl, 99.0)),
        "kv_waste": med(&|r| r.kv_waste),
        "prefix_hit_rate": med(&|r| r.prefix_hit_rate),
        "preemptions": med(&|r| r.preemptions as f64),
        "kv_blocks": runs[0].kv_blocks,
        "device": a.device.to_string(),
    });
    if runs.iter().all(|r| r.joules.is_some()) {
        v["energy"] = json!("measured: the GPU's NVML energy counter, whole board, over each run");
        v["joules_per_output_token"] = json!(med(
            &|r| r.joules.unwrap_or(0.0) / r.output_tokens.max(1) as f64
        ));
        v["watts"] = json!(med(&|r| r.joules.unwrap_or(0.0) / r.wall.as_secs_f64()));
    } else {
        v["energy"] = json!(
            "not measured (no GPU energy counter here; on the CPU the worker meters it with RAPL)"
        );
    }
    if let Device::Cuda(ordinal) = a.device
        && n == 1
    {
        let mut r = roofline(a, ordinal)?;
        let decode = 1000.0 / v["itl_ms_p50"].as_f64().unwrap_or(f64::INFINITY);
        r["decode_tokens_per_s"] = json!(decode);
        r["fraction_of_roofline"] =
            json!(decode / r["roofline_tokens_per_s"].as_f64().unwrap_or(f64::INFINITY));
        v["roofline"] = r;
    }
    if let Some(bin) = &a.llama_batched_bench {
        let jobs = workload::jobs(&fixed, n, a.seed, c.vocab, c.context_len);
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut theirs_decode = Vec::new();
        for _ in 0..a.repeats {
            ours.push(measure(a, threads, n, &jobs)?.output_tokens_per_s());
            let b =
                llamacpp::batched_bench(bin, &a.model, threads, n, a.fixed_prompt, a.fixed_output)?;
            theirs.push(b.output_tokens_per_s);
            theirs_decode.push(b.decode_tokens_per_s);
        }
        let (o, t) = (median(ours), median(theirs));
        v["fixed"] = json!({
            "prompt_tokens": a.fixed_prompt,
            "output_tokens": a.fixed_output,
            "engine_output_tokens_per_s": o,
            "llamacpp_output_tokens_per_s": t,
            "llamacpp_decode_tokens_per_s": median(theirs_decode),
            "ratio": o / t,
        });
    }
    Ok(v)
}

fn print_text(v: &serde_json::Value) {
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    println!(
        "concurrency {:>3} | {} requests (mean {:.0} in / {:.0} out) | {:.1} output tok/s | \
         TTFT p50 {:.1} ms p99 {:.1} ms | ITL p50 {:.1} ms p99 {:.1} ms | KV waste {:.2}% | \
         prefix hits {:.1}% | preemptions {:.0} | KV pool {} blocks",
        v["concurrency"],
        v["requests"],
        f("mean_prompt_tokens"),
        f("mean_output_tokens"),
        f("output_tokens_per_s"),
        f("ttft_ms_p50"),
        f("ttft_ms_p99"),
        f("itl_ms_p50"),
        f("itl_ms_p99"),
        f("kv_waste") * 100.0,
        f("prefix_hit_rate") * 100.0,
        f("preemptions"),
        v["kv_blocks"],
    );
    let r = &v["roofline"];
    if !r.is_null() {
        let g = |k: &str| r[k].as_f64().unwrap_or(0.0);
        println!(
            "    {}: copy bandwidth {:.0} GB/s, {:.0} MB of weights per token, roofline {:.0} tok/s; \
             batch-1 decode (1 / ITL p50) {:.1} tok/s = {:.0}% of it",
            r["gpu"].as_str().unwrap_or(""),
            g("copy_bandwidth_gb_s"),
            g("weight_bytes_per_token") / 1e6,
            g("roofline_tokens_per_s"),
            g("decode_tokens_per_s"),
            g("fraction_of_roofline") * 100.0,
        );
    }
    let x = &v["fixed"];
    if !x.is_null() {
        let g = |k: &str| x[k].as_f64().unwrap_or(0.0);
        println!(
            "    vs llama.cpp, {} streams of {} in / {} out: engine {:.1} tok/s, llama-batched-bench \
             {:.1} tok/s (decode only {:.1}): {:.2}x",
            v["concurrency"],
            x["prompt_tokens"],
            x["output_tokens"],
            g("engine_output_tokens_per_s"),
            g("llamacpp_output_tokens_per_s"),
            g("llamacpp_decode_tokens_per_s"),
            g("ratio"),
        );
    }
}

fn main() -> ExitCode {
    let a = Args::parse();
    let fail = |m: String| {
        eprintln!("engine-bench: {m}");
        ExitCode::FAILURE
    };
    if a.device != Device::Cpu && a.activations != ActBits::Int16 {
        return fail(format!(
            "--activations {} applies to the CPU kernels; --device {} quantises activations at \
             16 bits",
            a.activations, a.device
        ));
    }
    if a.concurrency.is_empty() || a.concurrency.contains(&0) {
        return fail("--concurrency must list numbers of at least 1".into());
    }
    if a.repeats == 0 || a.requests == Some(0) {
        return fail("--repeats and --requests must be at least 1".into());
    }
    if a.fixed_prompt == 0 || a.fixed_output == 0 {
        return fail("--fixed-prompt and --fixed-output must be at least 1".into());
    }
    if !(a.gpu_memory_fraction > 0.0 && a.gpu_memory_fraction <= 1.0) {
        return fail("--gpu-memory-fraction must be in (0, 1]".into());
    }
    let threads = a.threads.unwrap_or_else(physical_cores);
    let config = match load(&a.model, threads, a.activations) {
        Ok((m, _)) => m.config,
        Err(e) => return fail(e),
    };
    if config.context_len < 8 {
        return fail(format!(
            "the model's context ({}) is too short",
            config.context_len
        ));
    }
    if a.fixed_prompt + a.fixed_output > config.context_len {
        return fail(format!(
            "--fixed-prompt plus --fixed-output ({}) exceed the model's context of {}",
            a.fixed_prompt + a.fixed_output,
            config.context_len
        ));
    }
    if !a.json {
        println!(
            "engine-bench: {} | {} | {threads} threads | {} activations | KV {} {:?} | seed {} | {} repeat(s)",
            a.model.display(),
            a.device,
            a.activations,
            a.kv_budget,
            a.kv_dtype,
            a.seed,
            a.repeats
        );
    }
    for &n in &a.concurrency {
        match level(&a, &config, threads, n) {
            Ok(v) if a.json => println!("{v}"),
            Ok(v) => print_text(&v),
            Err(e) => return fail(format!("at concurrency {n}: {e}")),
        }
    }
    ExitCode::SUCCESS
}
