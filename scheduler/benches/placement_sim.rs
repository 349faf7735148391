//! The placement function against two baselines on simulated fleets, from
//! `scheduler/testdata/fleet.json`. Everything here is a simulation, and every figure it
//! prints says so.
//!
//! - Policies: `place` (the real placement function); `binpack`, GPUStack-like: among the
//!   nodes that fit, the one with the least free memory once placed (fill nodes first, no
//!   energy knowledge); `spread`: the most free memory first. The baselines get the same hard
//!   filters as `place` (health, schedule, selector, memory, one replica per node, latency
//!   target), keep what they ran in the step before while it is still needed, and add
//!   replicas (up to the deployment's max) until their capacity at the target covers the
//!   demand. They differ from `place` only in which nodes they pick.
//! - Traces, per deployment, deterministic (a seeded xorshift): `steady` (the base demand
//!   ±10%), `diurnal` (10% to 100% of it over one day), `bursty` (30% of it, with bursts of
//!   3x for 1 to 6 steps).
//! - The world: every node's profile is the roofline of its class figures, and `place` sees
//!   those same profiles as measured. In a step, a deployment's demand is split over its
//!   replicas by capacity; what exceeds their capacity at the latency target is not served
//!   within the target. A node that hosts anything draws its idle watts plus, per replica,
//!   `(watts(b) - idle) · utilisation`; a node that hosts nothing is parked and draws
//!   `PARKED_WATTS`, assumed 0 W (powered off or suspended; a real fleet may not allow it).
//! - Reported per policy: joules over the trace (idle of every powered node included),
//!   joules per served token, the share of demand served within the latency targets, and the
//!   placements started after the first step (model loads). Then the joules ratio
//!   place/binpack per trace, and the time of one `place` call for 1,000 nodes and 100
//!   deployments (median of 11).
//!
//! `cargo bench -p joule-scheduler --bench placement-sim [-- --quick]`

#[path = "placement_sim/sim.rs"]
mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use joule_scheduler::placement::fleet::{self, Fleet, ModelShape};
use joule_scheduler::placement::{Current, Deployment, Input, Node, Options, Replicas, place};
use sim::{PARKED_WATTS, Trace, XorShift, account, baseline};

/// Simulated time per step.
const STEP_SECONDS: f64 = 300.0;
/// One day of steps; `--quick` does fewer.
const STEPS: usize = 288;
const QUICK_STEPS: usize = 48;
const FLEETS: [&str; 3] = ["mixed", "old-gpus", "cpu-only"];
const SEED: u64 = 0x4a6f_756c_6530_0001;

/// The deployments of the simulation: name, model, latency target, priority, base demand in
/// output tokens/s.
const SPECS: [(&str, &str, Option<f64>, i32, f64); 6] = [
    ("chat-8b", L8B, Some(50.0), 10, 800.0),
    ("api-8b", L8B, Some(100.0), 5, 300.0),
    ("coder-14b", Q14B, Some(80.0), 5, 250.0),
    ("big-70b", L70B, Some(150.0), 8, 60.0),
    ("small-1b", L1B, Some(30.0), 3, 400.0),
    ("tiny", SMOL, Some(20.0), 1, 50.0),
];
const L8B: &str = "Llama-3.1-8B-Instruct-Q4_K_M";
const Q14B: &str = "Qwen2.5-14B-Instruct-Q4_K_M";
const L70B: &str = "Llama-3.1-70B-Instruct-Q4_K_M";
const L1B: &str = "Llama-3.2-1B-Instruct-Q8_0";
const SMOL: &str = "SmolLM2-135M-Instruct-Q4_1";
const MAX_REPLICAS: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Place,
    Binpack,
    Spread,
}

impl Policy {
    const ALL: [Policy; 3] = [Policy::Place, Policy::Binpack, Policy::Spread];

    fn name(self) -> &'static str {
        match self {
            Policy::Place => "place",
            Policy::Binpack => "binpack",
            Policy::Spread => "spread",
        }
    }

    fn step(self, nodes: &[Node], deps: &[Deployment], prev: &[Current]) -> Vec<Current> {
        match self {
            Policy::Place => {
                let input = Input {
                    nodes: nodes.to_vec(),
                    deployments: deps.to_vec(),
                    current: prev.to_vec(),
                };
                place(&input, &Options::default()).as_current()
            }
            Policy::Binpack => baseline(nodes, deps, prev, false),
            Policy::Spread => baseline(nodes, deps, prev, true),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    joules: f64,
    demand_tokens: f64,
    served_tokens: f64,
    started: usize,
}

fn simulate(policy: Policy, nodes: &[Node], deps: &[Deployment], trace: &[Vec<f64>]) -> Totals {
    let mut totals = Totals::default();
    let mut prev: Vec<Current> = Vec::new();
    let mut deps = deps.to_vec();
    for (step, demands) in trace.iter().enumerate() {
        for (d, &demand) in deps.iter_mut().zip(demands) {
            d.demand_tokens_per_s = demand;
        }
        let now = policy.step(nodes, &deps, &prev);
        if step > 0 {
            let before: BTreeSet<&Current> = prev.iter().collect();
            totals.started += now.iter().filter(|c| !before.contains(c)).count();
        }
        let (watts, demand, served) = account(nodes, &deps, &now);
        totals.joules += watts * STEP_SECONDS;
        totals.demand_tokens += demand * STEP_SECONDS;
        totals.served_tokens += served * STEP_SECONDS;
        prev = now;
    }
    totals
}

fn deployments(f: &Fleet) -> Result<Vec<Deployment>, String> {
    SPECS
        .iter()
        .map(|&(name, model, target, priority, _)| {
            let shape = f.model(model).ok_or_else(|| format!("no model {model}"))?;
            let mut d = shape.deployment(
                name,
                Replicas::Auto {
                    min: 1,
                    max: MAX_REPLICAS,
                },
            );
            d.max_itl_ms = target;
            d.priority = priority;
            Ok(d)
        })
        .collect()
}

/// 1,000 nodes cycling through the mixed fleet and 100 deployments: the median time of
/// `place` over `repeats` runs, in ms.
fn time_large(f: &Fleet, models: &[&ModelShape], repeats: usize) -> Result<f64, String> {
    let base = f.nodes("mixed", models)?;
    if base.is_empty() {
        return Err("the mixed fleet has no nodes".to_owned());
    }
    let nodes: Vec<Node> = (0..1000)
        .map(|i| {
            let mut n = base[i % base.len()].clone();
            n.name = format!("n{i:04}");
            n
        })
        .collect();
    let mut rng = XorShift::new(SEED ^ 0x1000);
    let targets = [None, Some(50.0), Some(100.0), Some(200.0)];
    let deployments: Vec<Deployment> = (0..100)
        .map(|i| {
            let shape = models[i % models.len()];
            let mut d = shape.deployment(
                &format!("d{i:03}"),
                Replicas::Auto {
                    min: 1,
                    max: MAX_REPLICAS,
                },
            );
            d.max_itl_ms = targets[i % targets.len()];
            d.priority = (i % 3) as i32;
            d.demand_tokens_per_s = 1000.0 * rng.unit();
            d
        })
        .collect();
    let input = Input {
        nodes,
        deployments,
        current: Vec::new(),
    };
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            let plan = place(&input, &Options::default());
            let elapsed = start.elapsed().as_secs_f64() * 1000.0;
            let _ = std::hint::black_box(plan);
            elapsed
        })
        .collect();
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> Result<(), String> {
    let quick = std::env::args().any(|a| a == "--quick");
    let steps = if quick { QUICK_STEPS } else { STEPS };
    let f = fleet::load(fleet::FLEET_JSON)?;
    let models: Vec<&ModelShape> = f.models.iter().collect();
    let deps = deployments(&f)?;
    let bases: Vec<f64> = SPECS.iter().map(|s| s.4).collect();
    println!(
        "simulated: {steps} steps of {STEP_SECONDS} s, {} deployments, parked nodes at \
         {PARKED_WATTS} W (assumed); profiles are the roofline of fleet.json's class figures",
        deps.len()
    );
    for fleet_name in FLEETS {
        let nodes = f.nodes(fleet_name, &models)?;
        for (t, trace) in Trace::ALL.into_iter().enumerate() {
            let demand = trace.demand(steps, &bases, SEED.wrapping_add(t as u64));
            println!();
            println!(
                "simulated fleet {fleet_name} ({} nodes), trace {}",
                nodes.len(),
                trace.name()
            );
            println!(
                "policy       simulated MJ  simulated J/tok   simulated served  simulated starts"
            );
            let mut joules = BTreeMap::new();
            for policy in Policy::ALL {
                let totals = simulate(policy, &nodes, &deps, &demand);
                let per_token = if totals.served_tokens > 0.0 {
                    totals.joules / totals.served_tokens
                } else {
                    f64::NAN
                };
                let served = if totals.demand_tokens > 0.0 {
                    100.0 * totals.served_tokens / totals.demand_tokens
                } else {
                    f64::NAN
                };
                println!(
                    "{:<8} {:>16.2} {per_token:>16.4} {served:>17.1}% {:>17}",
                    policy.name(),
                    totals.joules / 1e6,
                    totals.started
                );
                joules.insert(policy.name(), totals.joules);
            }
            let ratio = joules["place"] / joules["binpack"];
            println!(
                "simulated {fleet_name}/{}: joules place/binpack = {ratio:.3}",
                trace.name()
            );
        }
    }
    let repeats = if quick { 5 } else { 11 };
    let ms = time_large(&f, &models, repeats)?;
    println!();
    println!(
        "simulated fleet of 1000 nodes, 100 deployments: place() took {ms:.2} ms (median of \
         {repeats} runs, wall clock)"
    );
    Ok(())
}
