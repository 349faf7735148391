//! routing-sim (simulated): the placement function puts a deployment's replicas on a simulated
//! fleet (`scheduler/testdata/fleet.json`, rooflines of its class figures), then one seeded
//! Poisson stream of requests is routed by the gateway's own routing function
//! (`joule_gateway::route`) under `energy`, `least-loaded` and `round-robin`. Each node decodes
//! its streams on its curve: at batch `b` every stream advances `tokens_per_s(b) / b` tokens
//! per second, and the node draws `watts(b)` (idle watts at `b = 0`: a node holding a replica
//! stays on). Reported per policy: total joules, joules per token, p95 TTFT and ITL, and
//! whether the deployment's ITL target held. Every figure is simulated.
//!
//! `cargo bench -p joule-gateway --bench routing-sim [-- --quick]`

use joule_gateway::route::{self, Ask, Candidate, Point, Policy};
use joule_scheduler::placement::{self, Input, Options, Replicas, fleet};

const SEED: u64 = 0x5eed_0007;
const DT: f64 = 0.01;
const PROMPT_TOKENS: u32 = 256;
const OUTPUT_TOKENS: f64 = 128.0;

struct XorShift(u64);
impl XorShift {
    fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Sim {
    name: String,
    curve: Vec<Point>,
    idle: f64,
    /// Tokens left per stream, and when each stream's first token is due.
    streams: Vec<f64>,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

struct Outcome {
    joules: f64,
    tokens: f64,
    ttft95: f64,
    itl95: f64,
    per_node: Vec<(String, usize)>,
}

fn run(nodes: &[Sim], policy: Policy, rate: f64, seconds: f64, itl: Option<f64>) -> Outcome {
    let mut nodes: Vec<Sim> = nodes
        .iter()
        .map(|n| Sim {
            name: n.name.clone(),
            curve: n.curve.clone(),
            idle: n.idle,
            streams: Vec::new(),
        })
        .collect();
    let mut rng = XorShift(SEED);
    let mut next_arrival = -rng.next_f64().max(1e-12).ln() / rate;
    let (mut t, mut joules, mut tokens, mut tick) = (0.0, 0.0, 0.0, 0u64);
    let mut ttft = Vec::new();
    let mut itls = Vec::new();
    let mut counts = vec![0usize; nodes.len()];
    while t < seconds {
        while next_arrival <= t {
            let cands: Vec<Candidate> = nodes
                .iter()
                .map(|n| Candidate {
                    node: n.name.clone(),
                    curve: n.curve.clone(),
                    idle_watts: n.idle,
                    running: n.streams.len() as u32,
                    waiting: 0,
                    fallback: false,
                })
                .collect();
            let ask = Ask {
                itl_ms: itl,
                prompt_tokens: PROMPT_TOKENS,
                tick,
                ..Default::default()
            };
            tick += 1;
            let d = route::route(&cands, &ask, policy);
            if let Some(i) = d.chosen {
                let s = route::score(&cands[i], &ask);
                ttft.push(s.ttft_ms);
                nodes[i].streams.push(OUTPUT_TOKENS);
                counts[i] += 1;
            }
            next_arrival += -rng.next_f64().max(1e-12).ln() / rate;
        }
        for n in &mut nodes {
            let b = n.streams.len() as u32;
            let (tps, w) = route::at(&n.curve, n.idle, b).unwrap_or((0.0, n.idle));
            joules += w * DT;
            if b == 0 {
                continue;
            }
            let per = tps / f64::from(b) * DT;
            let itl_ms = 1000.0 * f64::from(b) / tps;
            for s in &mut n.streams {
                let step = per.min(*s);
                *s -= step;
                tokens += step;
            }
            // One ITL sample per token produced (weighted by the tokens of this tick).
            let produced = (per * f64::from(b)).round().max(1.0) as usize;
            itls.extend(std::iter::repeat_n(itl_ms, produced.min(64)));
            n.streams.retain(|s| *s > 1e-9);
        }
        t += DT;
    }
    Outcome {
        joules,
        tokens,
        ttft95: pct(&mut ttft, 0.95),
        itl95: pct(&mut itls, 0.95),
        per_node: nodes.iter().map(|n| n.name.clone()).zip(counts).collect(),
    }
}

fn main() -> Result<(), String> {
    let quick = std::env::args().any(|a| a == "--quick");
    let seconds = if quick { 60.0 } else { 600.0 };
    let f = fleet::load(fleet::FLEET_JSON)?;
    let models: Vec<&fleet::ModelShape> = f.models.iter().collect();
    println!(
        "simulated: routing on placement's replicas; curves are rooflines of fleet.json's class figures; a node holding a replica draws its idle watts when it runs nothing"
    );
    for (fleet_name, model, replicas, itl) in [
        ("mixed", "Llama-3.2-1B-Instruct-Q8_0", 6, 60.0),
        ("old-gpus", "Llama-3.2-1B-Instruct-Q8_0", 5, 60.0),
        ("cpu-only", "SmolLM2-135M-Instruct-Q4_1", 4, 100.0),
    ] {
        let nodes = f.nodes(fleet_name, &models)?;
        let shape = f.model(model).ok_or("no such model")?;
        let mut d = shape.deployment("d", Replicas::Fixed(replicas));
        d.max_itl_ms = Some(itl);
        let plan = placement::place(
            &Input {
                nodes: nodes.clone(),
                deployments: vec![d],
                current: Vec::new(),
            },
            &Options::default(),
        );
        let placed = &plan.outcome("d").ok_or("no outcome")?.placed;
        let sims: Vec<Sim> = placed
            .iter()
            .filter_map(|p| {
                let n = nodes.iter().find(|n| n.name == p.node)?;
                let prof = n.profiles.get(model)?;
                Some(Sim {
                    name: n.name.clone(),
                    curve: prof
                        .points
                        .iter()
                        .map(|x| Point {
                            batch: x.batch,
                            tokens_per_s: x.tokens_per_s,
                            watts: x.watts,
                        })
                        .collect(),
                    idle: n.idle_watts,
                    streams: Vec::new(),
                })
            })
            .collect();
        // Offered load: a share of what the replicas can serve at the target.
        let capacity: f64 = placed.iter().map(|p| p.tokens_per_s).sum();
        println!();
        println!(
            "simulated fleet {fleet_name}, {model}: {} replicas on {} (capacity at the {itl} ms ITL target {capacity:.0} tok/s)",
            sims.len(),
            sims.iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for load in [0.2, 0.5, 0.8] {
            let rate = load * capacity / OUTPUT_TOKENS;
            let base = run(&sims, Policy::LeastLoaded, rate, seconds, Some(itl));
            for policy in [Policy::Energy, Policy::LeastLoaded, Policy::RoundRobin] {
                let o = if policy == Policy::LeastLoaded {
                    Outcome {
                        per_node: base.per_node.clone(),
                        ..base
                    }
                } else {
                    run(&sims, policy, rate, seconds, Some(itl))
                };
                println!(
                    "  load {:>3.0}% {:>12}: {:9.0} J, {:.4} J/token ({:+.1}% vs least-loaded), p95 TTFT {:6.0} ms, p95 ITL {:5.1} ms{} | requests per node {}",
                    load * 100.0,
                    policy.as_str(),
                    o.joules,
                    o.joules / o.tokens,
                    (o.joules / o.tokens / (base.joules / base.tokens) - 1.0) * 100.0,
                    o.ttft95,
                    o.itl95,
                    if o.itl95 <= itl {
                        ""
                    } else {
                        " (misses the ITL target)"
                    },
                    o.per_node
                        .iter()
                        .map(|(n, c)| format!("{n}:{c}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
        }
    }
    Ok(())
}
