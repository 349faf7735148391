//! The gateway on a loopback cluster of real processes (3 schedulers, workers on the default
//! model, gateways), three measurements:
//!
//! - `overhead`: the same 32-stream greedy workload straight to the worker (decoding on one
//!   thread, so that the gateway and the client have a core) and through the gateway,
//!   alternating, in one run: the added delivery latency per token (client receive
//!   time minus the worker's `produced_unix_micros`, same host clock) at p50/p99, and the added
//!   TTFT.
//! - `migration`: 20 times, kill -9 the worker serving a stream (2 replicas) and time from the
//!   kill to the next token the client gets.
//! - `energy`: 3 workers with distinct power figures (--idle-watts/--busy-watts), the same
//!   open-loop workload (one request every 400 ms) under `energy`, `least-loaded` and `round-robin` routing: joules
//!   (estimated, see below), p95 TTFT and ITL. All three workers share this machine's CPUs, so
//!   a worker's own power sensor would read the whole machine; the energy here is estimated per
//!   worker from its own sampled batch: `idle + (busy - idle) · min(1, batch / 8)` watts.
//!
//! Needs release binaries next to the bench: `cargo build --release --workspace` first, then
//! `cargo bench -p joule-gateway --bench loopback -- overhead|migration|energy|all [--quick]`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use joule_proto::internal::v1 as pb;
use joule_proto::v1;
use joule_testkit::cluster::Cluster;
use joule_testkit::gateway::{GatewayProc, default_model_spec, deployment_spec};
use joule_testkit::workers::WorkerProc;

const MODEL: &str = "smollm2";

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    pct(&mut v, 0.5)
}

fn request(i: usize, max_tokens: u32) -> v1::GenerateRequest {
    v1::GenerateRequest {
        model: MODEL.into(),
        prompt: Some(v1::generate_request::Prompt::Text(format!(
            "Request {i}: write a few sentences about lighthouses, ships and the sea."
        ))),
        sampling: Some(v1::SamplingParams {
            temperature: Some(0.0),
            max_tokens: Some(max_tokens),
            ignore_eos: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn cluster(
    workers: &[(&str, &str, &str)],
    replicas: u32,
    itl_ms: u32,
    threads: &str,
) -> (Cluster, Vec<WorkerProc>) {
    let c = Cluster::with_env(
        3,
        &[
            ("JOULE_PLACEMENT_INTERVAL_MS", "200"),
            ("JOULE_KV_RESERVE_BYTES", "67108864"),
        ],
    );
    c.leader(Duration::from_secs(15), 0).await;
    let ws: Vec<WorkerProc> = workers
        .iter()
        .map(|(n, idle, busy)| {
            WorkerProc::join(
                n,
                &c,
                &[
                    "--idle-watts",
                    idle,
                    "--busy-watts",
                    busy,
                    "--threads",
                    threads,
                ],
            )
        })
        .collect();
    c.wait_nodes(ws.len(), Duration::from_secs(60)).await;
    let mut d = deployment_spec(MODEL, MODEL, replicas);
    d.itl_p95_ms = itl_ms;
    c.apply(default_model_spec(MODEL), d).await;
    (c, ws)
}

/// Per-stream timings of one request.
#[derive(Default)]
struct Timing {
    ttft_ms: f64,
    /// Client receive time minus the worker's production time, per token, ms.
    delivery_ms: Vec<f64>,
    /// Between successive token events, ms.
    itl_ms: Vec<f64>,
    tokens: usize,
}

async fn stream(mut s: tonic::Streaming<v1::TokenEvent>, sent: Instant) -> Result<Timing, String> {
    let mut t = Timing::default();
    let mut last: Option<Instant> = None;
    loop {
        match s.message().await {
            Ok(Some(ev)) => {
                let at = Instant::now();
                let us = now_us();
                if !ev.token_ids.is_empty() {
                    if last.is_none() {
                        t.ttft_ms = (at - sent).as_secs_f64() * 1e3;
                    }
                    if let Some(l) = last {
                        t.itl_ms.push((at - l).as_secs_f64() * 1e3);
                    }
                    last = Some(at);
                    t.tokens += ev.token_ids.len();
                    if ev.produced_unix_micros > 0 {
                        t.delivery_ms
                            .push(us.saturating_sub(ev.produced_unix_micros) as f64 / 1e3);
                    }
                }
                if ev.finish.is_some() {
                    return Ok(t);
                }
            }
            Ok(None) => return Err("the stream ended without a finish".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

enum Target {
    Worker(joule_client::Worker),
    Gateway(joule_proto::v1::inference_client::InferenceClient<tonic::transport::Channel>),
}

async fn one(target: &Target, r: v1::GenerateRequest) -> Result<Timing, String> {
    let sent = Instant::now();
    let s = match target {
        Target::Worker(w) => w.clone().generate(r).await,
        Target::Gateway(g) => g.clone().generate(r).await,
    }
    .map_err(|e| e.to_string())?;
    stream(s.into_inner(), sent).await
}

async fn concurrent(target: Arc<Target>, n: usize, max_tokens: u32) -> Vec<Timing> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let t = target.clone();
            tokio::spawn(async move { one(&t, request(i, max_tokens)).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task").expect("request"));
    }
    out
}

async fn overhead(quick: bool) {
    // The worker decodes on one thread, so the gateway and the client have a core of their own
    // (as a gateway does on its own machine); both paths share that setup.
    let (c, ws) = cluster(&[("w1", "40", "120")], 1, 0, "1").await;
    let g = GatewayProc::start("gw", &c, &[]);
    g.wait_ready(MODEL, 1, Duration::from_secs(120)).await;
    let direct = Arc::new(Target::Worker(ws[0].client()));
    let via = Arc::new(Target::Gateway(g.client()));
    let (streams, tokens, repeats) = if quick { (8, 16, 2) } else { (32, 64, 5) };
    // Warm both paths.
    concurrent(direct.clone(), 4, 8).await;
    concurrent(via.clone(), 4, 8).await;
    let mut d_all: (Vec<f64>, Vec<f64>) = Default::default();
    let mut g_all: (Vec<f64>, Vec<f64>) = Default::default();
    let mut added_p50 = Vec::new();
    let mut added_p99 = Vec::new();
    let mut added_ttft = Vec::new();
    for r in 0..repeats {
        let d = concurrent(direct.clone(), streams, tokens).await;
        let v = concurrent(via.clone(), streams, tokens).await;
        let mut dd: Vec<f64> = d.iter().flat_map(|t| t.delivery_ms.clone()).collect();
        let mut vd: Vec<f64> = v.iter().flat_map(|t| t.delivery_ms.clone()).collect();
        let mut dt: Vec<f64> = d.iter().map(|t| t.ttft_ms).collect();
        let mut vt: Vec<f64> = v.iter().map(|t| t.ttft_ms).collect();
        let (d50, d99, v50, v99) = (
            pct(&mut dd, 0.5),
            pct(&mut dd, 0.99),
            pct(&mut vd, 0.5),
            pct(&mut vd, 0.99),
        );
        let (dt50, vt50) = (pct(&mut dt, 0.5), pct(&mut vt, 0.5));
        println!(
            "repeat {r}: delivery per token direct p50 {d50:.3} p99 {d99:.3} ms, via gateway p50 {v50:.3} p99 {v99:.3} ms; TTFT median direct {dt50:.1} via {vt50:.1} ms"
        );
        added_p50.push(v50 - d50);
        added_p99.push(v99 - d99);
        added_ttft.push(vt50 - dt50);
        d_all.0.extend(dd);
        g_all.0.extend(vd);
        d_all.1.extend(dt);
        g_all.1.extend(vt);
    }
    println!(
        "overhead ({streams} streams x {tokens} tokens, {repeats} repeats alternating): added latency per token p50 {:.3} ms, p99 {:.3} ms; added TTFT (median of medians) {:.2} ms",
        median(added_p50),
        median(added_p99),
        median(added_ttft)
    );
    // TTFT alone: one request at a time (1 output token), alternating, so the batch does not
    // blur the gateway's share.
    let n = if quick { 10 } else { 40 };
    let (mut d1, mut g1) = (Vec::new(), Vec::new());
    for i in 0..n {
        d1.push(one(&direct, request(i, 1)).await.expect("direct").ttft_ms);
        g1.push(one(&via, request(i, 1)).await.expect("via gateway").ttft_ms);
    }
    let (dm, gm) = (median(d1.clone()), median(g1.clone()));
    println!(
        "TTFT of a lone request ({n} each, alternating): direct median {dm:.2} ms p99 {:.2}, via gateway median {gm:.2} ms p99 {:.2}; added {:.2} ms",
        pct(&mut d1, 0.99),
        pct(&mut g1, 0.99),
        gm - dm
    );
    println!(
        "pooled: delivery p50/p99 direct {:.3}/{:.3} ms, via gateway {:.3}/{:.3} ms; TTFT p50/p99 direct {:.1}/{:.1} ms, via gateway {:.1}/{:.1} ms",
        pct(&mut d_all.0, 0.5),
        pct(&mut d_all.0, 0.99),
        pct(&mut g_all.0, 0.5),
        pct(&mut g_all.0, 0.99),
        pct(&mut d_all.1, 0.5),
        pct(&mut d_all.1, 0.99),
        pct(&mut g_all.1, 0.5),
        pct(&mut g_all.1, 0.99),
    );
}

async fn running(ws: &[WorkerProc]) -> Vec<u32> {
    let mut out = Vec::new();
    for w in ws {
        out.push(w.busy().await);
    }
    out
}

async fn migration(quick: bool) {
    let (c, mut ws) = cluster(&[("w1", "40", "120"), ("w2", "40", "120")], 2, 0, "1").await;
    let g = GatewayProc::start("gw", &c, &[]);
    g.wait_ready(MODEL, 2, Duration::from_secs(120)).await;
    let kills = if quick { 3 } else { 20 };
    let mut gaps = Vec::new();
    for k in 0..kills {
        let mut gw = g.client();
        let mut s = gw
            .generate(request(k, 300))
            .await
            .expect("stream")
            .into_inner();
        let mut n = 0;
        while n < 10 {
            n += s
                .message()
                .await
                .expect("event")
                .expect("event")
                .token_ids
                .len();
        }
        let victim = loop {
            if let Some(i) = running(&ws).await.iter().position(|&r| r > 0) {
                break i;
            }
        };
        let killed = Instant::now();
        ws[victim].kill9();
        let gap = loop {
            let ev = s
                .message()
                .await
                .expect("the stream survives")
                .expect("an event");
            if !ev.token_ids.is_empty() {
                break killed.elapsed();
            }
        };
        while s.message().await.expect("the stream completes").is_some() {}
        gaps.push(gap.as_secs_f64() * 1e3);
        println!(
            "kill {k}: {} died; next token after {:.1} ms",
            ws[victim].name,
            gap.as_secs_f64() * 1e3
        );
        ws[victim].restart();
        ws[victim]
            .wait_serving(MODEL, Duration::from_secs(60))
            .await;
        g.wait_ready(MODEL, 2, Duration::from_secs(60)).await;
    }
    let max = gaps.iter().copied().fold(0.0, f64::max);
    println!(
        "migration over {kills} kills: kill to next token median {:.1} ms, max {max:.1} ms",
        median(gaps.clone())
    );
}

async fn energy(quick: bool) {
    // Same hardware, distinct power figures (estimated).
    let fleet = [
        ("green", "10", "40"),
        ("amber", "20", "70"),
        ("red", "60", "240"),
    ];
    let itl_target = 400;
    let (c, ws) = cluster(&fleet, 3, itl_target, "1").await;
    let policies = ["energy", "least-loaded", "round-robin"];
    let gws: Vec<GatewayProc> = policies
        .iter()
        .map(|p| GatewayProc::start(&format!("gw-{p}"), &c, &["--routing", p]))
        .collect();
    for g in &gws {
        g.wait_ready(MODEL, 3, Duration::from_secs(180)).await;
    }
    let watts: Vec<(f64, f64)> = fleet
        .iter()
        .map(|(_, i, b)| (i.parse().unwrap(), b.parse().unwrap()))
        .collect();
    let (gap, requests, tokens, repeats) = if quick {
        (Duration::from_millis(500), 6, 12, 1)
    } else {
        (Duration::from_millis(400), 30, 32, 3)
    };
    let mut results: Vec<Vec<(f64, f64, f64, f64)>> = vec![Vec::new(); policies.len()];
    for r in 0..repeats {
        for (pi, g) in gws.iter().enumerate() {
            let target = Arc::new(Target::Gateway(g.client()));
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            // Sample each worker's batch every 50 ms for the energy estimate.
            let sampler = {
                let addrs: Vec<String> = ws.iter().map(|w| w.addr.clone()).collect();
                let (done, watts) = (done.clone(), watts.clone());
                tokio::spawn(async move {
                    let clients: Vec<joule_client::Worker> = addrs
                        .iter()
                        .map(|a| {
                            joule_client::Connect::default()
                                .worker(a, joule_testkit::cluster::JOIN)
                                .unwrap()
                        })
                        .collect();
                    let mut joules = 0.0;
                    let mut last = Instant::now();
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let dt = last.elapsed().as_secs_f64();
                        last = Instant::now();
                        for (c, (idle, busy)) in clients.iter().zip(&watts) {
                            let b: u32 = match c.clone().stats(pb::StatsRequest::default()).await {
                                Ok(s) => s.into_inner().models.iter().map(|m| m.running).sum(),
                                Err(_) => 0,
                            };
                            joules += dt * (idle + (busy - idle) * (f64::from(b) / 8.0).min(1.0));
                        }
                    }
                    joules
                })
            };
            // Open loop: the same arrivals for every policy (one every `gap`), so each
            // policy serves the same work in the same window.
            let started = Instant::now();
            let mut tasks = Vec::new();
            for i in 0..requests {
                let at = started + gap * i as u32;
                tokio::time::sleep_until(at.into()).await;
                let t = target.clone();
                tasks.push(tokio::spawn(async move {
                    vec![one(&t, request(i, tokens)).await.expect("request")]
                }));
            }
            let mut timings = Vec::new();
            for t in tasks {
                timings.extend(t.await.unwrap());
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let joules = sampler.await.unwrap();
            let secs = started.elapsed().as_secs_f64();
            let mut ttft: Vec<f64> = timings.iter().map(|t| t.ttft_ms).collect();
            let mut itl: Vec<f64> = timings.iter().flat_map(|t| t.itl_ms.clone()).collect();
            let toks: usize = timings.iter().map(|t| t.tokens).sum();
            let (t95, i95) = (pct(&mut ttft, 0.95), pct(&mut itl, 0.95));
            println!(
                "repeat {r} {:>12}: {joules:8.1} J estimated ({:.3} J/token, {toks} tokens in {secs:.1} s), p95 TTFT {t95:.0} ms, p95 ITL {i95:.0} ms",
                policies[pi],
                joules / toks as f64
            );
            results[pi].push((joules, t95, i95, secs));
        }
    }
    let idle_w: f64 = watts.iter().map(|w| w.0).sum();
    let base = median(results[1].iter().map(|r| r.0).collect());
    let base_dyn = median(results[1].iter().map(|r| r.0 - idle_w * r.3).collect());
    for (pi, p) in policies.iter().enumerate() {
        let j = median(results[pi].iter().map(|r| r.0).collect());
        let dynamic = median(results[pi].iter().map(|r| r.0 - idle_w * r.3).collect());
        println!(
            "above idle (the {idle_w} W the three draw doing nothing, paid whatever the routing): {p:>12}: {dynamic:7.1} J ({:+.1}% vs least-loaded)",
            (dynamic / base_dyn - 1.0) * 100.0
        );
        let t = median(results[pi].iter().map(|r| r.1).collect());
        let i = median(results[pi].iter().map(|r| r.2).collect());
        println!(
            "energy (estimated, loopback, medians of {repeats}): {p:>12}: {j:8.1} J ({:+.1}% vs least-loaded), p95 TTFT {t:.0} ms, p95 ITL {i:.0} ms (target {itl_target} ms)",
            (j / base - 1.0) * 100.0
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let what = args
        .iter()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "all".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "loopback cluster on {cpu} ({} logical CPUs); every process on 127.0.0.1",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if what == "overhead" || what == "all" {
        overhead(quick).await;
    }
    if what == "migration" || what == "all" {
        migration(quick).await;
    }
    if what == "energy" || what == "all" {
        energy(quick).await;
    }
}
