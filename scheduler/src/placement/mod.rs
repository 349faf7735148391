//! The placement function: which nodes run which deployments' replicas, and why.
//!
//! [`place`] owns one decision: given the nodes (their health, schedule, memory and calibration
//! profiles), the deployments (model, replicas, selector, latency target, demand) and the
//! placements in force now, it returns a [`Plan`]: per deployment, the nodes chosen with a
//! human reason each, the replicas it could not place and why, and why every other node was
//! skipped. It serves each deployment's demand at the fewest joules per token within the
//! deployment's latency target and memory fit, and counts a node's idle watts when deciding
//! whether to use the node at all. Replicas on one node share its compute: a replica takes
//! `min(1, share of the demand / capacity)` of it, and no node is planned past all of it.
//!
//! It must never do I/O, read a clock, draw a random number, touch proto types or be async:
//! it is a pure function of its arguments, so the same input (in any `Vec` order) gives the
//! same plan on every replica and in every test. Adapting cluster state to [`Input`] and
//! writing the plan back belong to its caller.
//!
//! - [`profile`]: the operating point of a calibration curve for a latency target, and the
//!   estimated profiles used where a node has no measurement of a model.
//! - `round`: one greedy pass over the deployments; [`place`] repeats it until the plan it
//!   yields keeps every one of its own placements (a fixed point), so placing again with
//!   `current = plan.as_current()` gives the same nodes. A pass treats the placements of the
//!   pass before as running (for memory and utilisation), but the churn threshold protects
//!   only the placements in [`Input::current`]: one made earlier in the same call moves to
//!   any cheaper node. [`Plan::converged`] says whether the fixed point was reached.
//! - `reason`: the reasons, in words.
//! - [`fleet`]: the committed hardware data (`testdata/fleet.json`) and simulated nodes built
//!   from it, for the tests and the `placement-sim` bench.

pub mod fleet;
pub mod profile;
mod reason;
mod round;

#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// Whether a node takes new placements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Takes new placements and keeps what it runs.
    Active,
    /// Keeps what it runs; takes nothing new.
    Cordoned,
    /// Keeps nothing: its placements move away.
    Draining,
}

/// Whether a node answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ready,
    /// Keeps nothing and takes nothing.
    Unreachable,
}

/// Where a profile's figures come from. Every profile, and every decision, is labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Measured,
    Estimated,
}

/// One point of a calibration curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Concurrent streams.
    pub batch: u32,
    /// Aggregate output tokens per second over the batch.
    pub tokens_per_s: f64,
    /// Whole-node watts while decoding at that batch.
    pub watts: f64,
}

/// A node's calibration curve for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub points: Vec<Point>,
    pub source: Source,
    /// E.g. "measured" or "estimated from n2 (same class Tesla P40)".
    pub note: String,
}

/// A machine that can host replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    /// Hardware class, e.g. "Tesla P40" or "cpu-avx2-2s".
    pub class: String,
    pub labels: BTreeMap<String, String>,
    pub health: Health,
    pub schedule: Schedule,
    /// Memory usable for models: the VRAM of its device, or its host RAM budget.
    pub memory_bytes: u64,
    /// Memory bandwidth, for estimated profiles.
    pub mem_bandwidth_gbs: f64,
    /// Loaded-idle watts: paid once the node hosts anything.
    pub idle_watts: f64,
    /// Watts at full decode load, for estimated profiles.
    pub busy_watts: f64,
    /// Measured calibration by model name. Estimates are never stored here: a later
    /// measurement simply replaces the estimate because the caller passes it in.
    pub profiles: BTreeMap<String, Profile>,
}

/// How many replicas a deployment wants.
#[derive(Debug, Clone, PartialEq)]
pub enum Replicas {
    Fixed(u32),
    /// At least `ceil(demand / the largest capacity of an eligible node)`, then one more while
    /// the placed replicas' capacity at the target is below the demand; clamped to
    /// `[min, max]`; at least 1 while there is demand (unless `max` is 0). A `max` below `min`
    /// is read as `min`.
    Auto {
        min: u32,
        max: u32,
    },
}

/// A model to serve, with its constraints.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub name: String,
    pub model: String,
    /// One replica needs `weights_bytes + kv_bytes` of a node's memory.
    pub weights_bytes: u64,
    pub kv_bytes: u64,
    pub replicas: Replicas,
    /// Node labels that must all match.
    pub selector: BTreeMap<String, String>,
    /// Latency target: ms per output token per stream (ITL p95). `None`: no target.
    pub max_itl_ms: Option<f64>,
    /// Higher is placed first.
    pub priority: i32,
    /// Measured demand in output tokens/s; 0 is unknown or idle.
    pub demand_tokens_per_s: f64,
    /// Nodes kept off this deployment for now, with why (e.g. a failed load backing off);
    /// a placement running there is not kept either.
    pub excluded: BTreeMap<String, String>,
}

/// A placement in force now.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Current {
    pub deployment: String,
    pub node: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub nodes: Vec<Node>,
    pub deployments: Vec<Deployment>,
    pub current: Vec<Current>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// A running placement moves only if the alternative costs less than `(1 - t)` times its
    /// own joules per token. Read within `[0, 1]`; not finite reads as the default, 0.25.
    pub churn_threshold: f64,
    /// The demand assumed where a deployment's is 0, so that an idle deployment still weighs
    /// idle watts against tokens. Not finite or not positive reads as the default, 20.
    pub nominal_demand_tokens_per_s: f64,
    /// Plans each operating point for this fraction of the ITL target (0.85: 15% headroom for
    /// a node a little slower than its profile). Read within `(0, 1]`; else 1.
    pub latency_headroom: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            churn_threshold: DEFAULT_CHURN_THRESHOLD,
            nominal_demand_tokens_per_s: DEFAULT_NOMINAL_DEMAND,
            latency_headroom: 1.0,
        }
    }
}

const DEFAULT_CHURN_THRESHOLD: f64 = 0.25;
const DEFAULT_NOMINAL_DEMAND: f64 = 20.0;
/// Greedy rounds before [`place`] gives up looking for a fixed point and returns the last.
const MAX_ROUNDS: u32 = 32;

/// One replica's node.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub node: String,
    /// E.g. "n2: 1.49 tok/J at batch 8 (measured), 3.1 GiB free"; "kept: " first when the
    /// placement was in force already; the free memory is what the node has left after it.
    pub reason: String,
    /// Where the profile behind the decision comes from.
    pub source: Source,
    /// Tokens per joule of the profile at the operating point (`batch`).
    pub tokens_per_joule: f64,
    pub batch: u32,
    /// The replica's capacity: aggregate output tokens/s of the profile at `batch`.
    pub tokens_per_s: f64,
    /// The placement was in [`Input::current`].
    pub kept: bool,
}

/// One deployment's part of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub deployment: String,
    /// By node name.
    pub placed: Vec<Decision>,
    /// Replicas wanted but not placed.
    pub pending: u32,
    /// Why, where `pending > 0`.
    pub pending_reason: Option<String>,
    /// Per node, by name: why it does not host a replica, e.g. "n1 skipped: cordoned".
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// By deployment name.
    pub outcomes: Vec<Outcome>,
    /// The greedy pass reached a fixed point (its plan keeps all of its own placements);
    /// false only where [`place`] stopped after its most rounds, with the last pass's plan.
    pub converged: bool,
    /// Greedy passes run, at least 1.
    pub rounds: u32,
}

impl Plan {
    /// The outcome of a deployment.
    pub fn outcome(&self, deployment: &str) -> Option<&Outcome> {
        self.outcomes
            .binary_search_by(|o| o.deployment.as_str().cmp(deployment))
            .ok()
            .and_then(|i| self.outcomes.get(i))
    }

    /// The nodes a deployment is placed on, by name; empty for an unknown deployment.
    pub fn nodes_of(&self, deployment: &str) -> Vec<&str> {
        self.outcome(deployment)
            .map(|o| o.placed.iter().map(|d| d.node.as_str()).collect())
            .unwrap_or_default()
    }

    /// The plan as the placements in force, to pass back as [`Input::current`].
    pub fn as_current(&self) -> Vec<Current> {
        self.outcomes
            .iter()
            .flat_map(|o| {
                o.placed.iter().map(|d| Current {
                    deployment: o.deployment.clone(),
                    node: d.node.clone(),
                })
            })
            .collect()
    }
}

/// Places every deployment's replicas. See the module documentation.
pub fn place(input: &Input, opts: &Options) -> Plan {
    let ctx = Ctx::new(input, opts);
    let mut running = ctx.original.clone();
    let mut results = round::run(&ctx, &running);
    let mut rounds = 1;
    let converged = loop {
        let next = round::node_sets(&results);
        if next == running {
            break true;
        }
        if rounds >= MAX_ROUNDS {
            break false;
        }
        running = next;
        results = round::run(&ctx, &running);
        rounds += 1;
    };
    Plan {
        outcomes: reason::render(&ctx, &results),
        converged,
        rounds,
    }
}

/// The input, sorted and checked once: nodes by name, deployments in placing order.
#[derive(Debug)]
struct Ctx<'a> {
    /// By name; of two nodes with one name, one is kept (the same whatever the input order).
    nodes: Vec<&'a Node>,
    /// By priority (highest first), then name; duplicates dropped as for nodes.
    deps: Vec<&'a Deployment>,
    /// Per deployment (as in `deps`), the nodes (indices into `nodes`) it runs on now.
    /// Placements on unknown nodes or of unknown deployments are ignored. Only these are
    /// protected by the churn threshold.
    original: Vec<BTreeSet<usize>>,
    /// Per deployment (as in `deps`), per node: its operating point, or why it has none
    /// (see `round::candidates`). It does not change from one pass to the next.
    cands: Vec<Vec<Result<profile::Candidate, reason::Skip<'a>>>>,
    /// Per deployment (as in `deps`), the replicas it wants before any top-up
    /// (`round::replica_count`).
    counts: Vec<u32>,
    churn: f64,
    nominal: f64,
}

impl<'a> Ctx<'a> {
    fn new(input: &'a Input, opts: &Options) -> Self {
        let mut nodes: Vec<&Node> = input.nodes.iter().collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| by_debug(a, b)));
        nodes.dedup_by(|a, b| a.name == b.name);

        let mut deps: Vec<&Deployment> = input.deployments.iter().collect();
        deps.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(b.priority.cmp(&a.priority))
                .then_with(|| by_debug(a, b))
        });
        deps.dedup_by(|a, b| a.name == b.name);
        deps.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.name.cmp(&b.name))
        });

        let node_index: BTreeMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let dep_index: BTreeMap<&str, usize> = deps
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.as_str(), i))
            .collect();
        let mut original = vec![BTreeSet::new(); deps.len()];
        for c in &input.current {
            let dep = dep_index.get(c.deployment.as_str());
            let node = node_index.get(c.node.as_str());
            if let (Some(&di), Some(&ni)) = (dep, node) {
                original[di].insert(ni);
            }
        }

        let churn = if opts.churn_threshold.is_finite() {
            opts.churn_threshold.clamp(0.0, 1.0)
        } else {
            DEFAULT_CHURN_THRESHOLD
        };
        let nominal = opts.nominal_demand_tokens_per_s;
        let nominal = if nominal.is_finite() && nominal > 0.0 {
            nominal
        } else {
            DEFAULT_NOMINAL_DEMAND
        };
        let refs = profile::Refs::new(&nodes);
        let headroom = if opts.latency_headroom > 0.0 && opts.latency_headroom <= 1.0 {
            opts.latency_headroom
        } else {
            1.0
        };
        let cands = round::candidates(&nodes, &deps, &refs, headroom);
        let counts = deps
            .iter()
            .zip(&cands)
            .map(|(d, row)| round::replica_count(&nodes, d, row))
            .collect();
        Self {
            nodes,
            deps,
            original,
            cands,
            counts,
            churn,
            nominal,
        }
    }
}

/// A deployment's demand, with anything but a finite positive figure read as 0.
fn demand(d: &Deployment) -> f64 {
    let v = d.demand_tokens_per_s;
    if v.is_finite() && v > 0.0 { v } else { 0.0 }
}

/// The memory one replica needs.
fn need_bytes(d: &Deployment) -> u64 {
    d.weights_bytes.saturating_add(d.kv_bytes)
}

/// Orders two values that tie on their name by their whole content, so that which duplicate
/// wins does not depend on the input order.
fn by_debug<T: std::fmt::Debug>(a: &T, b: &T) -> Ordering {
    format!("{a:?}").cmp(&format!("{b:?}"))
}
