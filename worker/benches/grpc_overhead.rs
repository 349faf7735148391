//! What the gRPC layer costs: the same concurrent workload run directly on an engine and
//! through a `joule-worker` (in this process, over loopback TCP, with full protobuf encoding),
//! alternating, on identical engines. Reports output tokens/s of each, their ratio, and the
//! latency the gRPC path adds per token (mean inter-token gap seen by the consumer) and to the
//! first token; medians over `--repeats`. The added latency per token is the difference of the
//! two paths' delivery delay: how long after the engine produced a token (by its own clock,
//! reported in the usage) the consumer had it.
//!
//! `cargo bench -p joule-worker --bench grpc_overhead -- [--model PATH] [--streams 32]
//!  [--prompt-tokens 64] [--max-tokens 128] [--repeats 3] [--threads 0] [--json]`

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use joule_engine::Model;
use joule_engine::batch::{EngineConfig, EngineHandle, Request};
use joule_engine::gguf::GgufFile;
use joule_engine::kv::KvBudget;
use joule_engine::model::LoadOptions;
use joule_engine::sample::SamplingParams;
use joule_engine::tokenizer::Tokenizer;
use joule_proto::internal::v1::worker_client::WorkerClient;
use joule_proto::v1;

#[derive(Parser, Debug)]
struct Opts {
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    streams: usize,
    #[arg(long, default_value_t = 64)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 128)]
    max_tokens: u32,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Stream i generates `--max-tokens - i` tokens instead of all ending on the same step.
    #[arg(long)]
    staggered: bool,
    /// gRPC connections the client spreads its streams over (round robin).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    #[arg(long)]
    json: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One run's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    tokens_per_s: f64,
    /// Mean over streams of the mean gap between token arrivals.
    itl_ms: f64,
    ttft_p50_ms: f64,
    /// CPU time this process spent per output token (engine, server and client together).
    cpu_ms_per_token: f64,
    /// Median over streams of how long after the engine produced the last token the consumer
    /// had it, plus the request's own transit: (last arrival - send) - (engine TTFT +
    /// (n - 1) x engine time per token). Independent of how fast the machine ran.
    delivery_ms: f64,
}

/// What one stream saw: (arrival, tokens) per event, and the engine's own timing of it
/// (TTFT ms, time per output token ms, tokens).
struct Seen {
    sent: Instant,
    arrivals: Vec<(Instant, usize)>,
    engine: (f64, f64, usize),
}

/// User plus system CPU seconds of this process so far (`/proc/self/stat`, 100 ticks/s).
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (tick(11) + tick(12)) / 100.0
}

/// Per stream: (arrival of each token event, tokens in it).
fn summarize(started: Instant, cpu0: f64, seen: Vec<Seen>) -> Run {
    let mut delivery: Vec<f64> = seen
        .iter()
        .filter_map(|s| {
            let last = s.arrivals.last()?.0;
            let (ttft, tpot, n) = s.engine;
            let engine = ttft + n.saturating_sub(1) as f64 * tpot;
            Some((last - s.sent).as_secs_f64() * 1e3 - engine)
        })
        .collect();
    delivery.sort_by(f64::total_cmp);
    let streams: Vec<Vec<(Instant, usize)>> = seen.into_iter().map(|s| s.arrivals).collect();
    let end = streams
        .iter()
        .filter_map(|s| s.last().map(|x| x.0))
        .max()
        .unwrap_or(started);
    let tokens: usize = streams.iter().flatten().map(|x| x.1).sum();
    let mut itl = Vec::new();
    let mut ttft = Vec::new();
    for s in &streams {
        let n: usize = s.iter().map(|x| x.1).sum();
        if let (Some(a), Some(b)) = (s.first(), s.last()) {
            ttft.push((a.0 - started).as_secs_f64() * 1e3);
            if n > 1 {
                itl.push((b.0 - a.0).as_secs_f64() * 1e3 / (n - 1) as f64);
            }
        }
    }
    ttft.sort_by(f64::total_cmp);
    let cpu = cpu_seconds() - cpu0;
    Run {
        delivery_ms: delivery.get(delivery.len() / 2).copied().unwrap_or(0.0),
        cpu_ms_per_token: cpu * 1e3 / tokens.max(1) as f64,
        tokens_per_s: tokens as f64 / (end - started).as_secs_f64(),
        itl_ms: itl.iter().sum::<f64>() / itl.len().max(1) as f64,
        ttft_p50_ms: ttft.get(ttft.len() / 2).copied().unwrap_or(0.0),
    }
}

fn prompts(o: &Opts, vocab: usize, round: usize) -> Vec<Vec<u32>> {
    (0..o.streams)
        .map(|i| {
            (0..o.prompt_tokens)
                .map(|j| (100 + (round * 7919 + i * 131 + j * 17) % (vocab - 200)) as u32)
                .collect()
        })
        .collect()
}

/// Output tokens of stream `i`: `--max-tokens`, or with `--staggered`, `--max-tokens - i` (so
/// the streams do not all end on the same step, as they would not in real traffic).
fn max_tokens(o: &Opts, i: usize) -> u32 {
    if o.staggered {
        o.max_tokens.saturating_sub(i as u32).max(1)
    } else {
        o.max_tokens
    }
}

fn params(o: &Opts, i: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens: max_tokens(o, i),
        ignore_eos: true,
        ..Default::default()
    }
}

async fn direct(engine: &EngineHandle, o: &Opts, round: usize) -> Run {
    let vocab = engine.model().config.vocab;
    let (started, cpu0) = (Instant::now(), cpu_seconds());
    let mut tasks = Vec::new();
    for (i, p) in prompts(o, vocab, round).into_iter().enumerate() {
        let sent = Instant::now();
        let mut s = engine
            .submit(Request::new(p, params(o, i)))
            .expect("submit");
        tasks.push(tokio::spawn(async move {
            let mut arrivals = Vec::new();
            let mut timing = (0.0, 0.0, 0);
            while let Some(ev) = s.next().await {
                if !ev.token_ids.is_empty() {
                    arrivals.push((Instant::now(), ev.token_ids.len()));
                }
                if let Some(f) = ev.finish {
                    let u = f.usage;
                    timing = (
                        u.time_to_first_token.as_secs_f64() * 1e3,
                        u.time_per_output_token.as_secs_f64() * 1e3,
                        u.completion_tokens,
                    );
                    break;
                }
            }
            Seen {
                sent,
                arrivals,
                engine: timing,
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.expect("stream task"));
    }
    summarize(started, cpu0, all)
}

async fn grpc(addr: &str, vocab: usize, o: &Opts, round: usize) -> Run {
    let mut clients = Vec::new();
    for _ in 0..o.connections.max(1) {
        clients.push(
            WorkerClient::connect(addr.to_string())
                .await
                .expect("connect"),
        );
    }
    let (started, cpu0) = (Instant::now(), cpu_seconds());
    let mut tasks = Vec::new();
    for (i, ids) in prompts(o, vocab, round).into_iter().enumerate() {
        let mut c = clients[i % clients.len()].clone();
        let r = v1::GenerateRequest {
            model: "bench".into(),
            prompt: Some(v1::generate_request::Prompt::TokenIds(v1::TokenIds { ids })),
            sampling: Some(v1::SamplingParams {
                temperature: Some(0.0),
                max_tokens: Some(max_tokens(o, i)),
                ignore_eos: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let mut s = c.generate(r).await.expect("generate").into_inner();
            let mut arrivals = Vec::new();
            let mut timing = (0.0, 0.0, 0);
            while let Some(ev) = s.message().await.expect("stream") {
                if !ev.token_ids.is_empty() {
                    arrivals.push((Instant::now(), ev.token_ids.len()));
                }
                if let Some(f) = ev.finish {
                    let u = f.usage.unwrap_or_default();
                    timing = (
                        u.time_to_first_token_ms,
                        u.time_per_output_token_ms,
                        u.completion_tokens as usize,
                    );
                    break;
                }
            }
            Seen {
                sent,
                arrivals,
                engine: timing,
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.expect("stream task"));
    }
    summarize(started, cpu0, all)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let o = Opts::parse();
    let model = o
        .model
        .clone()
        .unwrap_or_else(joule_engine::testkit::default_model_path);
    let kv = "512MiB";
    let cfg = EngineConfig {
        kv_budget: KvBudget::Bytes(512 << 20),
        ..Default::default()
    };
    let f = GgufFile::open(&model)?;
    let opts = LoadOptions { threads: o.threads };
    let engine = EngineHandle::start(Model::from_gguf(&f, &opts)?, Tokenizer::from_gguf(&f)?, cfg)?;
    let vocab = engine.model().config.vocab;
    let threads = o.threads.to_string();
    let args = joule_worker::Args::load_from([
        "joule-worker",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--model",
        &format!("bench={}", model.display()),
        "--kv-budget",
        kv,
        "--threads",
        &threads,
        "--calibrate",
        "false",
        "--power-sensor",
        "estimate",
    ])
    .map_err(anyhow::Error::msg)?;
    let worker = joule_worker::Worker::start(&args).await?;
    let addr = format!("http://{}", worker.grpc_addr);
    while worker.state.models.get("bench").is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // One full, discarded run of each path first: it touches every KV page and warms caches,
    // connections and allocators.
    direct(&engine, &o, 0).await;
    grpc(&addr, vocab, &o, 0).await;

    let (mut d, mut g) = (Vec::new(), Vec::new());
    for r in 0..o.repeats {
        // ABBA order: a slow drift of the machine's speed hits both paths alike.
        let (a, b) = if r % 2 == 0 {
            let a = direct(&engine, &o, r + 1).await;
            (a, grpc(&addr, vocab, &o, r + 1).await)
        } else {
            let b = grpc(&addr, vocab, &o, r + 1).await;
            (direct(&engine, &o, r + 1).await, b)
        };
        eprintln!(
            "repeat {}: direct {:.1} tok/s, ITL {:.2} ms, delivery {:.3} ms | gRPC {:.1} tok/s, ITL {:.2} ms, delivery {:.3} ms",
            r + 1,
            a.tokens_per_s,
            a.itl_ms,
            a.delivery_ms,
            b.tokens_per_s,
            b.itl_ms,
            b.delivery_ms
        );
        d.push(a);
        g.push(b);
    }
    let m = |v: &[Run], f: fn(&Run) -> f64| median(v.iter().map(f).collect());
    let (dt, gt) = (m(&d, |r| r.tokens_per_s), m(&g, |r| r.tokens_per_s));
    let (di, gi) = (m(&d, |r| r.itl_ms), m(&g, |r| r.itl_ms));
    let (df, gf) = (m(&d, |r| r.ttft_p50_ms), m(&g, |r| r.ttft_p50_ms));
    let ratios = median(
        d.iter()
            .zip(&g)
            .map(|(a, b)| b.tokens_per_s / a.tokens_per_s)
            .collect(),
    );
    let added_itl = median(d.iter().zip(&g).map(|(a, b)| b.itl_ms - a.itl_ms).collect());
    let (dd, gd) = (m(&d, |r| r.delivery_ms), m(&g, |r| r.delivery_ms));
    let added = median(
        d.iter()
            .zip(&g)
            .map(|(a, b)| b.delivery_ms - a.delivery_ms)
            .collect(),
    );
    let (dc, gc) = (m(&d, |r| r.cpu_ms_per_token), m(&g, |r| r.cpu_ms_per_token));
    let cpu_ratio = median(
        d.iter()
            .zip(&g)
            .map(|(a, b)| b.cpu_ms_per_token / a.cpu_ms_per_token)
            .collect(),
    );
    if o.json {
        println!(
            "{}",
            serde_json::json!({
                "streams": o.streams, "connections": o.connections, "prompt_tokens": o.prompt_tokens, "max_tokens": o.max_tokens,
                "repeats": o.repeats, "direct_tokens_per_s": dt, "grpc_tokens_per_s": gt,
                "throughput_ratio": ratios, "direct_itl_ms": di, "grpc_itl_ms": gi,
                "added_itl_ms": added_itl, "direct_delivery_ms": dd, "grpc_delivery_ms": gd,
                "added_latency_ms": added, "direct_ttft_p50_ms": df, "grpc_ttft_p50_ms": gf,
                "direct_cpu_ms_per_token": dc, "grpc_cpu_ms_per_token": gc, "cpu_ratio": cpu_ratio,
            })
        );
    } else {
        println!(
            "{} streams over {} connection(s), {} prompt + {} output tokens, median of {} \
             repeats in ABBA order",
            o.streams, o.connections, o.prompt_tokens, o.max_tokens, o.repeats
        );
        println!(
            "{:<8} {:>10} {:>10} {:>14} {:>14} {:>13}",
            "path", "tok/s", "ITL ms", "TTFT p50 ms", "CPU ms/token", "delivery ms"
        );
        for (p, t, i, f, c, dl) in [("direct", dt, di, df, dc, dd), ("gRPC", gt, gi, gf, gc, gd)] {
            println!("{p:<8} {t:>10.1} {i:>10.2} {f:>14.1} {c:>14.3} {dl:>13.3}");
        }
        println!(
            "gRPC/direct throughput {:.4} ({:+.2}%), CPU per token {:.4} ({:+.2}%), \
             added latency per token {:+.3} ms (ITL difference {:+.2} ms)",
            ratios,
            (ratios - 1.0) * 100.0,
            cpu_ratio,
            (cpu_ratio - 1.0) * 100.0,
            added,
            added_itl
        );
    }
    engine.shutdown();
    worker.shutdown().await;
    Ok(())
}
