//! Drives one engine with a list of jobs from `concurrency` client threads (closed loop: each
//! client sends its next job when the previous one ends) and measures what clients see.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use joule_engine::batch::{EngineHandle, FinishReason, Request};
use joule_engine::sample::SamplingParams;

use super::workload::Job;

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    pub wall: Duration,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub ttft: Vec<Duration>,
    /// Gaps between consecutive token-carrying events of a stream, over all streams.
    pub itl: Vec<Duration>,
    pub kv_waste: f64,
    pub prefix_hit_rate: f64,
    pub preemptions: u64,
    /// Blocks in the engine's KV pool.
    pub kv_blocks: usize,
    pub failures: Vec<String>,
    /// The GPU's energy over the run, from its NVML counter (measured); `None` on the CPU or
    /// where NVML has no counter.
    pub joules: Option<f64>,
}

impl RunResult {
    pub fn output_tokens_per_s(&self) -> f64 {
        self.output_tokens as f64 / self.wall.as_secs_f64()
    }
}

/// The `p`-th percentile (0..=100) in milliseconds, nearest rank; 0 when empty.
pub fn percentile_ms(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s: Vec<Duration> = v.to_vec();
    s.sort_unstable();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1].as_secs_f64() * 1e3
}

#[derive(Default)]
struct Gathered {
    prompt_tokens: usize,
    output_tokens: usize,
    ttft: Vec<Duration>,
    itl: Vec<Duration>,
    failures: Vec<String>,
}

/// Runs every job on `engine` with `concurrency` streams open at a time.
pub fn run(engine: &EngineHandle, jobs: &[Job], concurrency: usize) -> RunResult {
    let before = engine.stats();
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Gathered::default());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency.min(jobs.len()) {
            s.spawn(|| {
                let mut g = Gathered::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    client(engine, job, &mut g);
                }
                let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
                o.prompt_tokens += g.prompt_tokens;
                o.output_tokens += g.output_tokens;
                o.ttft.extend(g.ttft);
                o.itl.extend(g.itl);
                o.failures.extend(g.failures);
            });
        }
    });
    let wall = start.elapsed();
    let after = engine.stats();
    let g = out.into_inner().unwrap_or_else(|e| e.into_inner());
    let alloc = after.kv_slots_allocated_sum - before.kv_slots_allocated_sum;
    let unused = after.kv_slots_unused_sum - before.kv_slots_unused_sum;
    let lookups = after.kv.lookups - before.kv.lookups;
    let hits = after.kv.hits - before.kv.hits;
    RunResult {
        wall,
        prompt_tokens: g.prompt_tokens,
        output_tokens: g.output_tokens,
        ttft: g.ttft,
        itl: g.itl,
        kv_waste: ratio(unused, alloc),
        prefix_hit_rate: ratio(hits, lookups),
        preemptions: after.preemptions_total - before.preemptions_total,
        kv_blocks: engine.kv_blocks(),
        failures: g.failures,
        joules: None,
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// One request, start to end, as a client sees it.
fn client(engine: &EngineHandle, job: &Job, g: &mut Gathered) {
    let params = SamplingParams {
        max_tokens: job.output,
        ignore_eos: true,
        ..Default::default()
    };
    let sent = Instant::now();
    let mut stream = match engine.submit(Request::new(job.prompt.clone(), params)) {
        Ok(s) => s,
        Err(e) => {
            g.failures.push(e.to_string());
            return;
        }
    };
    let mut last: Option<Instant> = None;
    while let Some(ev) = stream.blocking_next() {
        if !ev.token_ids.is_empty() {
            let now = Instant::now();
            match last {
                None => g.ttft.push(now - sent),
                Some(t) => g.itl.push(now - t),
            }
            last = Some(now);
        }
        if let Some(f) = ev.finish {
            g.prompt_tokens += f.usage.prompt_tokens;
            g.output_tokens += f.usage.completion_tokens;
            if f.reason != FinishReason::Length {
                g.failures.push(format!(
                    "request ended with {}: {}",
                    f.reason.as_str(),
                    f.message.unwrap_or_default()
                ));
            }
            break;
        }
    }
}
