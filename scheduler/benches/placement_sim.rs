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
//!   demand; `place` tops its `Auto` replicas up the same way. The baselines know nothing of
//!   a node's compute being shared; `place` does.
//! - Traces, per deployment, deterministic (a seeded xorshift): `steady` (the base demand
//!   ±10%), `diurnal` (10% to 100% of it over one day), `bursty` (30% of it, with bursts of
//!   3x for 1 to 6 steps).
//! - What the policies see: every node's profile is the roofline of its class figures
//!   (`profile::roofline`: batch-1 tokens/s at `ROOFLINE_EFFICIENCY` of the memory bandwidth,
//!   batching knee `ROOFLINE_KNEE`, busy watts from batch `ROOFLINE_BUSY_BATCH`), labelled
//!   measured. The simulated world's true profiles are those with each node's tokens/s and
//!   watts above idle off by a seeded ±15% (`sim::perturb`), so `place`'s model is not the
//!   world.
//! - The world, per step: a deployment's demand is split over its replicas by capacity at the
//!   latency target; replicas sharing a node share its compute (at most all of it: the excess
//!   is not served within the target), and a node draws its idle watts plus the dynamic watts
//!   of the compute used, at most its busy watts. A node that hosts nothing is parked, under
//!   two assumptions reported side by side: 0 W (powered off or suspended), and its idle
//!   watts. GPU watts are board power only (the host a GPU sits in is not counted); CPU watts
//!   are package power only (DIMMs, fans and power-supply losses are not counted).
//! - Model loads: every placement started (the first step's included) is charged
//!   `weights_bytes / LOAD_BYTES_PER_S` (2 GB/s, assumed) at the node's busy watts. A move
//!   (in one step a deployment stops on one node and starts on another) is counted apart
//!   from a scale-up start.
//! - Reported per policy: joules over the trace under each parked assumption (idle of every
//!   powered node and the loads included), joules per served token, the share of demand
//!   served within the latency targets, scale-up starts and moves after the first step, and
//!   the load joules. Then, per trace and parked assumption, the joules ratio place/binpack
//!   and a verdict: PASS only where `place` uses at least 30% fewer joules than `binpack` and
//!   serves within target no less than `binpack`'s share minus 0.5 points.
//!   Last, the time of one `place` call for 1,000 nodes and 100 deployments (median), fresh
//!   and again with `current` = the plan before and 10% of the nodes cordoned, against
//!   100 ms.
//!
//! `cargo bench -p joule-scheduler --bench placement-sim [-- --quick]`

#[path = "placement_sim/sim.rs"]
mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use joule_scheduler::placement::fleet::{self, Fleet, ModelShape};
use joule_scheduler::placement::profile::{
    ROOFLINE_BUSY_BATCH, ROOFLINE_EFFICIENCY, ROOFLINE_KNEE,
};
use joule_scheduler::placement::{
    Current, Deployment, Input, Node, Options, Plan, Replicas, Schedule, place,
};
use sim::{PERTURBATION, Parked, Trace, XorShift, account, baseline, perturb};

/// Simulated time per step.
const STEP_SECONDS: f64 = 300.0;
/// One day of steps; `--quick` does fewer.
const STEPS: usize = 288;
const QUICK_STEPS: usize = 48;
const FLEETS: [&str; 3] = ["mixed", "old-gpus", "cpu-only"];
const SEED: u64 = 0x4a6f_756c_6530_0001;
/// How fast a node loads a model's weights (assumed: 2 GB/s from local disk or cache).
const LOAD_BYTES_PER_S: f64 = 2e9;
/// The verdict: `place` must use at least this share fewer joules than `binpack`...
const MIN_SAVING: f64 = 0.30;
/// ...while serving within target at most this many points less.
const MAX_SERVED_LOSS_POINTS: f64 = 0.5;
/// The time one `place` call may take on 1,000 nodes and 100 deployments.
const MAX_PLACE_MS: f64 = 100.0;

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
                // As the leader runs it: 15% latency headroom.
                let opts = Options {
                    latency_headroom: joule_scheduler::control::LATENCY_HEADROOM,
                    ..Options::default()
                };
                place(&input, &opts).as_current()
            }
            Policy::Binpack => baseline(nodes, deps, prev, false),
            Policy::Spread => baseline(nodes, deps, prev, true),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    /// Per parked assumption (as in [`Parked::ALL`]), loads included.
    joules: [f64; 2],
    /// The part of `joules` spent loading models.
    load_joules: f64,
    demand_tokens: f64,
    served_tokens: f64,
    /// Placements started after the first step that are not moves.
    started: usize,
    /// Moves after the first step: a deployment stopping on one node and starting on another.
    moved: usize,
}

impl Totals {
    /// Served within target, in % of the demand.
    fn served_pct(&self) -> f64 {
        if self.demand_tokens > 0.0 {
            100.0 * self.served_tokens / self.demand_tokens
        } else {
            f64::NAN
        }
    }
}

fn simulate(
    policy: Policy,
    nodes: &[Node],
    world: &[Node],
    deps: &[Deployment],
    trace: &[Vec<f64>],
) -> Totals {
    let busy: BTreeMap<&str, f64> = world
        .iter()
        .map(|n| (n.name.as_str(), n.busy_watts))
        .collect();
    let mut totals = Totals::default();
    let mut prev: Vec<Current> = Vec::new();
    let mut deps = deps.to_vec();
    for (step, demands) in trace.iter().enumerate() {
        for (d, &demand) in deps.iter_mut().zip(demands) {
            d.demand_tokens_per_s = demand;
        }
        let now = policy.step(nodes, &deps, &prev);
        for d in &deps {
            let on = |placements: &[Current]| -> BTreeSet<String> {
                placements
                    .iter()
                    .filter(|c| c.deployment == d.name)
                    .map(|c| c.node.clone())
                    .collect()
            };
            let (before, after) = (on(prev.as_slice()), on(now.as_slice()));
            let started: Vec<&String> = after.difference(&before).collect();
            let stopped = before.difference(&after).count();
            let load_s = d.weights_bytes as f64 / LOAD_BYTES_PER_S;
            for node in &started {
                let watts = busy.get(node.as_str()).copied().unwrap_or(0.0);
                totals.load_joules += load_s * watts;
            }
            if step > 0 {
                let moved = started.len().min(stopped);
                totals.moved += moved;
                totals.started += started.len() - moved;
            }
        }
        let s = account(world, &deps, &now);
        for (total, watts) in totals.joules.iter_mut().zip(s.watts) {
            *total += watts * STEP_SECONDS;
        }
        totals.demand_tokens += s.demand * STEP_SECONDS;
        totals.served_tokens += s.served * STEP_SECONDS;
        prev = now;
    }
    for total in &mut totals.joules {
        *total += totals.load_joules;
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

/// The timing of `place` on a large fleet.
struct Timing {
    /// Median ms, fresh (`current` empty).
    fresh_ms: f64,
    fresh_rounds: u32,
    /// Median ms with `current` = the fresh plan and every tenth node cordoned.
    again_ms: f64,
    again_rounds: u32,
}

/// The median wall-clock ms of `place(input)` over `repeats` runs, and the plan.
fn time_place(input: &Input, repeats: usize) -> (f64, Plan) {
    let mut plan = place(input, &Options::default());
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            plan = std::hint::black_box(place(input, &Options::default()));
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (
        times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
        plan,
    )
}

/// 1,000 nodes cycling through the mixed fleet and 100 deployments: `place` fresh, then with
/// the plan in force and 10% of the nodes cordoned.
fn time_large(f: &Fleet, models: &[&ModelShape], repeats: usize) -> Result<Timing, String> {
    let base = f.nodes("mixed", models)?;
    if base.is_empty() || models.is_empty() {
        return Err("the mixed fleet has no nodes or fleet.json no models".to_owned());
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
    let mut input = Input {
        nodes,
        deployments,
        current: Vec::new(),
    };
    let (fresh_ms, fresh) = time_place(&input, repeats);
    input.current = fresh.as_current();
    for n in input.nodes.iter_mut().step_by(10) {
        n.schedule = Schedule::Cordoned;
    }
    let (again_ms, again) = time_place(&input, repeats);
    Ok(Timing {
        fresh_ms,
        fresh_rounds: fresh.rounds,
        again_ms,
        again_rounds: again.rounds,
    })
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

fn main() -> Result<(), String> {
    let quick = std::env::args().any(|a| a == "--quick");
    let steps = if quick { QUICK_STEPS } else { STEPS };
    let f = fleet::load(fleet::FLEET_JSON)?;
    let models: Vec<&ModelShape> = f.models.iter().collect();
    let deps = deployments(&f)?;
    let bases: Vec<f64> = SPECS.iter().map(|s| s.4).collect();
    println!(
        "simulated: {steps} steps of {STEP_SECONDS} s, {} deployments",
        deps.len()
    );
    println!(
        "simulated: the policies see each node's roofline of fleet.json's class figures \
         (efficiency {ROOFLINE_EFFICIENCY} of the memory bandwidth at batch 1, batching knee \
         {ROOFLINE_KNEE}, busy watts from batch {ROOFLINE_BUSY_BATCH}); the world's true \
         profiles are those off by a seeded ±{:.0}% per node in tokens/s and in watts above \
         idle",
        PERTURBATION * 100.0
    );
    println!(
        "simulated: GPU watts are board power only (the host a GPU sits in is not counted); \
         CPU watts are package power only (DIMMs, fans, power-supply losses not counted)"
    );
    println!(
        "simulated: model loads take weights / {:.0} GB/s (assumed) at the node's busy watts",
        LOAD_BYTES_PER_S / 1e9
    );
    for parked in Parked::ALL {
        println!("simulated: {}: {}", parked.short(), parked.label());
    }
    for fleet_name in FLEETS {
        let nodes = f.nodes(fleet_name, &models)?;
        let world = perturb(&nodes, SEED ^ 0x2000);
        for (t, trace) in Trace::ALL.into_iter().enumerate() {
            let demand = trace.demand(steps, &bases, SEED.wrapping_add(t as u64));
            println!();
            println!(
                "simulated fleet {fleet_name} ({} nodes), trace {}",
                nodes.len(),
                trace.name()
            );
            println!(
                "policy   MJ parked 0 W  MJ parked idle  J/tok parked 0 W   served in target  \
                 scale-up starts  moves  load MJ"
            );
            let mut results = BTreeMap::new();
            for policy in Policy::ALL {
                let totals = simulate(policy, &nodes, &world, &deps, &demand);
                let per_token = if totals.served_tokens > 0.0 {
                    totals.joules[0] / totals.served_tokens
                } else {
                    f64::NAN
                };
                println!(
                    "{:<8} {:>13.2} {:>15.2} {per_token:>17.4} {:>17.1}% {:>16} {:>6} {:>8.3}",
                    policy.name(),
                    totals.joules[0] / 1e6,
                    totals.joules[1] / 1e6,
                    totals.served_pct(),
                    totals.started,
                    totals.moved,
                    totals.load_joules / 1e6
                );
                results.insert(policy.name(), totals);
            }
            let (Some(placed), Some(packed)) = (results.get("place"), results.get("binpack"))
            else {
                return Err("a policy did not run".to_owned());
            };
            let ratios: Vec<f64> = placed
                .joules
                .iter()
                .zip(packed.joules)
                .map(|(p, b)| p / b)
                .collect();
            for (parked, ratio) in Parked::ALL.iter().zip(&ratios) {
                println!(
                    "simulated {fleet_name}/{}: joules place/binpack = {ratio:.3} ({}), served \
                     in target place {:.1}% binpack {:.1}%",
                    trace.name(),
                    parked.short(),
                    placed.served_pct(),
                    packed.served_pct()
                );
            }
            let serves = placed.served_pct() >= packed.served_pct() - MAX_SERVED_LOSS_POINTS;
            // One verdict per parked assumption: which one holds is a property of the fleet
            // (can an empty node be suspended?), not of the placement.
            for (parked, r) in Parked::ALL.iter().zip(&ratios) {
                println!(
                    "simulated verdict {fleet_name}/{} ({}): {} (place: {:.1}% fewer joules; \
                     served in target {:.1}% against binpack's {:.1}%; needs >= {:.0}% fewer \
                     and served >= binpack's - {MAX_SERVED_LOSS_POINTS} points)",
                    trace.name(),
                    parked.short(),
                    pass(*r <= 1.0 - MIN_SAVING && serves),
                    100.0 * (1.0 - r),
                    placed.served_pct(),
                    packed.served_pct(),
                    MIN_SAVING * 100.0
                );
            }
        }
    }
    let repeats = if quick { 5 } else { 11 };
    let timing = time_large(&f, &models, repeats)?;
    println!();
    println!(
        "simulated fleet of 1000 nodes, 100 deployments, fresh: place() took {:.2} ms (median of \
         {repeats} runs, wall clock), {} rounds: {} (limit {MAX_PLACE_MS} ms)",
        timing.fresh_ms,
        timing.fresh_rounds,
        pass(timing.fresh_ms <= MAX_PLACE_MS)
    );
    println!(
        "simulated fleet of 1000 nodes, 100 deployments, current = the plan before, 10% of nodes \
         cordoned: place() took {:.2} ms (median of {repeats} runs), {} rounds: {} (limit \
         {MAX_PLACE_MS} ms)",
        timing.again_ms,
        timing.again_rounds,
        pass(timing.again_ms <= MAX_PLACE_MS)
    );
    Ok(())
}
