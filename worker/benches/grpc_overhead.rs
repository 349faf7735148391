//! What the gRPC layer costs: the same concurrent workload run directly on an engine and
//! through a `joule-worker` (in this process, over loopback TCP, with full protobuf encoding),
//! alternating, on identical engines. Reports output tokens/s of each and their ratio, and the
//! latency the gRPC path adds: to every token (its delivery delay, from the moment the engine
//! sampled it, stamped on the event, to the consumer holding it; median and p99 over all
//! tokens), to the request on its way in (client send to engine admission), and to the first
//! token. Medians over `--repeats` of per-pair differences, pairs in ABBA order.
//!
//! `cargo bench -p joule-worker --bench grpc_overhead -- [--model PATH] [--streams 32]
//!  [--prompt-tokens 64] [--max-tokens 128] [--repeats 3] [--threads 0] [--staggered]
//!  [--connections 1] [--json]`

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// Median over streams of client send to first token in hand.
    ttft_p50_ms: f64,
    /// CPU time this process spent per output token (engine, server and client together).
    cpu_ms_per_token: f64,
    /// Over every token of the run: how long after the engine sampled it the consumer had it.
    delivery_p50_ms: f64,
    delivery_p99_ms: f64,
    delivery_mean_ms: f64,
    /// Median over streams of the way in: client send to engine admission (the first token's
    /// sampling time less the engine's own time to first token).
    request_ms: f64,
}

/// One event as the consumer saw it.
struct Arrival {
    at: Instant,
    wall: SystemTime,
    tokens: usize,
    /// The engine's stamp: when it sampled the event's token.
    produced: SystemTime,
}

/// What one stream saw, and the engine's own time to first token for it (ms).
struct Seen {
    sent: Instant,
    sent_wall: SystemTime,
    arrivals: Vec<Arrival>,
    engine_ttft_ms: f64,
}

impl Seen {
    fn new() -> Self {
        Self {
            sent: Instant::now(),
            sent_wall: SystemTime::now(),
            arrivals: Vec::new(),
            engine_ttft_ms: 0.0,
        }
    }
    fn arrived(&mut self, tokens: usize, produced: SystemTime) {
        if tokens > 0 {
            self.arrivals.push(Arrival {
                at: Instant::now(),
                wall: SystemTime::now(),
                tokens,
                produced,
            });
        }
    }
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

/// `b - a` in ms, negative when `b` is earlier.
fn wall_ms(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

/// The `q` quantile of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

fn summarize(started: Instant, cpu0: f64, seen: Vec<Seen>) -> Run {
    let mut delivery: Vec<f64> = seen
        .iter()
        .flat_map(|s| &s.arrivals)
        .map(|a| wall_ms(a.produced, a.wall))
        .collect();
    delivery.sort_by(f64::total_cmp);
    let mut request: Vec<f64> = seen
        .iter()
        .filter_map(|s| {
            let first = s.arrivals.first()?;
            Some(wall_ms(s.sent_wall, first.produced) - s.engine_ttft_ms)
        })
        .collect();
    request.sort_by(f64::total_cmp);
    let end = seen
        .iter()
        .filter_map(|s| s.arrivals.last().map(|x| x.at))
        .max()
        .unwrap_or(started);
    let tokens: usize = seen
        .iter()
        .flat_map(|s| &s.arrivals)
        .map(|a| a.tokens)
        .sum();
    let mut itl = Vec::new();
    let mut ttft = Vec::new();
    for s in &seen {
        let n: usize = s.arrivals.iter().map(|a| a.tokens).sum();
        if let (Some(a), Some(b)) = (s.arrivals.first(), s.arrivals.last()) {
            ttft.push((a.at - s.sent).as_secs_f64() * 1e3);
            if n > 1 {
                itl.push((b.at - a.at).as_secs_f64() * 1e3 / (n - 1) as f64);
            }
        }
    }
    ttft.sort_by(f64::total_cmp);
    let cpu = cpu_seconds() - cpu0;
    Run {
        delivery_p50_ms: quantile(&delivery, 0.5),
        delivery_p99_ms: quantile(&delivery, 0.99),
        delivery_mean_ms: delivery.iter().sum::<f64>() / delivery.len().max(1) as f64,
        request_ms: quantile(&request, 0.5),
        cpu_ms_per_token: cpu * 1e3 / tokens.max(1) as f64,
        tokens_per_s: tokens as f64 / (end - started).as_secs_f64(),
        itl_ms: itl.iter().sum::<f64>() / itl.len().max(1) as f64,
        ttft_p50_ms: quantile(&ttft, 0.5),
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
    let vocab = engine.config().vocab;
    let (started, cpu0) = (Instant::now(), cpu_seconds());
    let mut tasks = Vec::new();
    for (i, p) in prompts(o, vocab, round).into_iter().enumerate() {
        let mut seen = Seen::new();
        let mut s = engine
            .submit(Request::new(p, params(o, i)))
            .expect("submit");
        tasks.push(tokio::spawn(async move {
            while let Some(ev) = s.next().await {
                seen.arrived(ev.token_ids.len(), ev.produced.unwrap_or(UNIX_EPOCH));
                if let Some(f) = ev.finish {
                    seen.engine_ttft_ms = f.usage.time_to_first_token.as_secs_f64() * 1e3;
                    break;
                }
            }
            seen
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
            let mut seen = Seen::new();
            let mut s = c.generate(r).await.expect("generate").into_inner();
            while let Some(ev) = s.message().await.expect("stream") {
                let produced = UNIX_EPOCH + Duration::from_micros(ev.produced_unix_micros);
                seen.arrived(ev.token_ids.len(), produced);
                if let Some(f) = ev.finish {
                    seen.engine_ttft_ms = f.usage.unwrap_or_default().time_to_first_token_ms;
                    break;
                }
            }
            seen
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
    let opts = LoadOptions::with_threads(o.threads);
    let engine = EngineHandle::start(Model::from_gguf(&f, &opts)?, Tokenizer::from_gguf(&f)?, cfg)?;
    let vocab = engine.config().vocab;
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
            "repeat {}: direct {:.1} tok/s, delivery p50 {:.3} p99 {:.3} ms | gRPC {:.1} tok/s, \
             delivery p50 {:.3} p99 {:.3} ms, way in {:.3} ms",
            r + 1,
            a.tokens_per_s,
            a.delivery_p50_ms,
            a.delivery_p99_ms,
            b.tokens_per_s,
            b.delivery_p50_ms,
            b.delivery_p99_ms,
            b.request_ms
        );
        d.push(a);
        g.push(b);
    }
    // Per metric: the median over repeats of each path, and the median of per-pair differences
    // (or ratios), which a drift of the machine's speed does not move.
    let m = |v: &[Run], f: fn(&Run) -> f64| median(v.iter().map(f).collect());
    let diff = |f: fn(&Run) -> f64| median(d.iter().zip(&g).map(|(a, b)| f(b) - f(a)).collect());
    let ratio = |f: fn(&Run) -> f64| median(d.iter().zip(&g).map(|(a, b)| f(b) / f(a)).collect());
    type Metric = (&'static str, fn(&Run) -> f64);
    let metrics: [Metric; 8] = [
        ("tokens_per_s", |r| r.tokens_per_s),
        ("itl_ms", |r| r.itl_ms),
        ("ttft_p50_ms", |r| r.ttft_p50_ms),
        ("cpu_ms_per_token", |r| r.cpu_ms_per_token),
        ("delivery_p50_ms", |r| r.delivery_p50_ms),
        ("delivery_p99_ms", |r| r.delivery_p99_ms),
        ("delivery_mean_ms", |r| r.delivery_mean_ms),
        ("request_ms", |r| r.request_ms),
    ];
    let throughput = ratio(|r| r.tokens_per_s);
    let cpu = ratio(|r| r.cpu_ms_per_token);
    let added_p50 = diff(|r| r.delivery_p50_ms);
    let added_p99 = diff(|r| r.delivery_p99_ms);
    let added_mean = diff(|r| r.delivery_mean_ms);
    let added_ttft = diff(|r| r.ttft_p50_ms);
    let added_request = diff(|r| r.request_ms);
    if o.json {
        let mut j = serde_json::json!({
            "streams": o.streams, "connections": o.connections, "staggered": o.staggered,
            "prompt_tokens": o.prompt_tokens, "max_tokens": o.max_tokens, "repeats": o.repeats,
            "throughput_ratio": throughput, "cpu_ratio": cpu,
            "added_latency_per_token_p50_ms": added_p50, "added_latency_per_token_p99_ms": added_p99,
            "added_latency_per_token_mean_ms": added_mean,
            "added_ttft_ms": added_ttft, "added_request_ms": added_request,
        });
        for (name, f) in metrics {
            j[format!("direct_{name}")] = m(&d, f).into();
            j[format!("grpc_{name}")] = m(&g, f).into();
        }
        println!("{j}");
    } else {
        println!(
            "{} streams over {} connection(s), {} prompt + {} output tokens{}, median of {} \
             repeats in ABBA order",
            o.streams,
            o.connections,
            o.prompt_tokens,
            o.max_tokens,
            if o.staggered { " (staggered)" } else { "" },
            o.repeats
        );
        println!(
            "{:<8} {:>9} {:>9} {:>12} {:>13} {:>15} {:>15} {:>16} {:>10}",
            "path",
            "tok/s",
            "ITL ms",
            "TTFT p50 ms",
            "CPU ms/token",
            "delivery p50 ms",
            "delivery p99 ms",
            "delivery mean ms",
            "way in ms"
        );
        for (p, v) in [("direct", &d), ("gRPC", &g)] {
            let x: Vec<f64> = metrics.iter().map(|(_, f)| m(v, *f)).collect();
            println!(
                "{p:<8} {:>9.1} {:>9.2} {:>12.1} {:>13.3} {:>15.3} {:>15.3} {:>16.3} {:>10.3}",
                x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]
            );
        }
        println!(
            "gRPC/direct throughput {throughput:.4} ({:+.2}%), CPU per token {cpu:.4} ({:+.2}%)",
            (throughput - 1.0) * 100.0,
            (cpu - 1.0) * 100.0,
        );
        println!(
            "added latency per token: p50 {added_p50:+.3} ms, p99 {added_p99:+.3} ms, mean \
             {added_mean:+.3} ms; added once per request on the way in {added_request:+.3} ms"
        );
    }
    engine.shutdown();
    worker.shutdown().await;
    Ok(())
}
