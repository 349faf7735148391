//! One greedy pass over the deployments.
//!
//! First the memory of every running placement that may stay (its node is ready, not
//! draining, and still matches the selector) is set aside, deployments by priority, so that
//! new work never pushes running work out. Then, deployment by deployment in priority order:
//! - every node gets its operating point for the deployment, or the reason it is skipped;
//! - the replica count is fixed (for `Auto`, from the best node's capacity);
//! - running placements are kept, the best ones up to the count; each moves only if the best
//!   free node costs under `(1 - churn_threshold)` times its own joules per token;
//! - the remaining replicas go to the cheapest free nodes.
//!
//! A replica's cost on a node is its marginal joules per token: the dynamic watts it adds,
//! `(watts(b) - idle) · served / capacity`, plus the node's idle watts if no deployment placed
//! before it uses the node, over the tokens/s it serves. Its share of the demand is
//! `max(demand, nominal) / replicas`. A node that can carry the whole share comes before one
//! that cannot; then the lower cost; then the name.
//!
//! Costs for a deployment only depend on the deployments placed before it, so the node it is
//! given stays the cheapest when the pass runs again on its own plan; memory freed by later
//! deployments can still change that, which is why `place` repeats the pass to a fixed point.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::profile::{self, Candidate};
use super::reason::Skip;
use super::{Ctx, Deployment, Health, Node, Replicas, Schedule, demand, need_bytes};

/// Per deployment (in placing order), the nodes it runs on.
pub(super) type Sets = Vec<BTreeSet<usize>>;

/// One replica placed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Placed {
    pub(super) node: usize,
    pub(super) cand: Candidate,
    /// The node's free memory once this replica is placed.
    pub(super) free_after: u64,
}

/// One deployment's part of a pass.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DepResult<'a> {
    /// Replicas wanted.
    pub(super) count: u32,
    /// Memory per replica.
    pub(super) need: u64,
    /// By node.
    pub(super) placed: Vec<Placed>,
    /// By node.
    pub(super) skips: Vec<(usize, Skip<'a>)>,
}

/// How good a replica on a node is: carrying the whole share first, then fewer joules/token.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Key {
    covers: bool,
    cost: f64,
}

impl Key {
    fn order(&self, other: &Self) -> Ordering {
        other
            .covers
            .cmp(&self.covers)
            .then(self.cost.total_cmp(&other.cost))
    }

    /// Whether `self`, an alternative, is worth moving a replica with key `own` for.
    fn beats(&self, own: &Self, churn: f64) -> bool {
        (self.covers && !own.covers)
            || (self.covers == own.covers && self.cost < (1.0 - churn) * own.cost)
    }
}

type Ranked = (usize, Candidate, Key);

fn by_key(a: &Ranked, b: &Ranked) -> Ordering {
    a.2.order(&b.2).then(a.0.cmp(&b.0))
}

/// The nodes each deployment is placed on.
pub(super) fn node_sets(results: &[DepResult<'_>]) -> Sets {
    results
        .iter()
        .map(|r| r.placed.iter().map(|p| p.node).collect())
        .collect()
}

/// One pass; `running` holds, per deployment, the placements treated as in force.
pub(super) fn run<'a>(ctx: &Ctx<'a>, running: &[BTreeSet<usize>]) -> Vec<DepResult<'a>> {
    let mut used = vec![0u64; ctx.nodes.len()];
    let mut hosts = vec![0u32; ctx.nodes.len()];

    let mut reserved: Sets = Vec::with_capacity(ctx.deps.len());
    for (&d, set) in ctx.deps.iter().zip(running) {
        let need = need_bytes(d);
        let mut kept = BTreeSet::new();
        for &ni in set {
            let node = ctx.nodes[ni];
            if hard_filter(node, d, true).is_ok() && need <= free(node, used[ni]) {
                used[ni] += need;
                kept.insert(ni);
            }
        }
        reserved.push(kept);
    }

    ctx.deps
        .iter()
        .zip(&reserved)
        .map(|(&d, reserved)| deployment(ctx, d, reserved, &mut used, &mut hosts))
        .collect()
}

fn deployment<'a>(
    ctx: &Ctx<'a>,
    d: &'a Deployment,
    reserved: &BTreeSet<usize>,
    used: &mut [u64],
    hosts: &mut [u32],
) -> DepResult<'a> {
    let need = need_bytes(d);
    let demand_tps = demand(d);
    let wanted = demand_tps.max(ctx.nominal);
    let evals: Vec<Result<Candidate, Skip<'a>>> = (0..ctx.nodes.len())
        .map(|ni| evaluate(ctx, ni, d, reserved.contains(&ni)))
        .collect();
    let count = replica_count(ctx, d, demand_tps, wanted, need, &evals);
    let share = wanted / f64::from(count.max(1));

    let mut skips = Vec::new();
    let mut kept: Vec<Ranked> = Vec::new();
    let mut free_nodes: Vec<Ranked> = Vec::new();
    for (ni, eval) in evals.into_iter().enumerate() {
        let node = ctx.nodes[ni];
        let is_reserved = reserved.contains(&ni);
        match eval {
            Err(skip) => {
                if is_reserved {
                    used[ni] = used[ni].saturating_sub(need);
                }
                skips.push((ni, skip));
            }
            Ok(cand) => {
                let rank = key(&cand, node.idle_watts, hosts[ni] > 0, share);
                let room = free(node, used[ni]);
                if is_reserved {
                    kept.push((ni, cand, rank));
                } else if need <= room {
                    free_nodes.push((ni, cand, rank));
                } else {
                    skips.push((ni, Skip::Memory { need, free: room }));
                }
            }
        }
    }
    kept.sort_by(by_key);
    free_nodes.sort_by(by_key);

    let count_usize = usize::try_from(count).unwrap_or(usize::MAX);
    let keep_n = count_usize.min(kept.len());
    for (ni, _, _) in kept.drain(keep_n..) {
        used[ni] = used[ni].saturating_sub(need);
    }

    // Worst kept replica first, against the best free node left.
    let mut free_nodes = free_nodes.into_iter().peekable();
    let mut placed = Vec::with_capacity(count_usize.min(ctx.nodes.len()));
    for (ni, cand, own) in kept.into_iter().rev() {
        let better = free_nodes.next_if(|(_, _, alt)| alt.beats(&own, ctx.churn));
        let (at, cand) = match better {
            Some((ai, alt, _)) => {
                used[ni] = used[ni].saturating_sub(need);
                used[ai] += need;
                (ai, alt)
            }
            None => (ni, cand),
        };
        placed.push(Placed {
            node: at,
            cand,
            free_after: free(ctx.nodes[at], used[at]),
        });
    }
    while placed.len() < count_usize {
        let Some((ai, cand, _)) = free_nodes.next() else {
            break;
        };
        used[ai] += need;
        placed.push(Placed {
            node: ai,
            cand,
            free_after: free(ctx.nodes[ai], used[ai]),
        });
    }
    for p in &placed {
        hosts[p.node] = hosts[p.node].saturating_add(1);
    }
    placed.sort_by_key(|p| p.node);
    DepResult {
        count,
        need,
        placed,
        skips,
    }
}

/// Health, schedule, selector and the node's idle figure; `keep`: for a placement already
/// running there (a cordoned node keeps it).
fn hard_filter<'a>(node: &Node, d: &'a Deployment, keep: bool) -> Result<(), Skip<'a>> {
    if node.health != Health::Ready {
        return Err(Skip::Unreachable);
    }
    match node.schedule {
        Schedule::Active => {}
        Schedule::Cordoned if keep => {}
        Schedule::Cordoned => return Err(Skip::Cordoned),
        Schedule::Draining => return Err(Skip::Draining),
    }
    if let Some(why) = d.excluded.get(&node.name) {
        return Err(Skip::Excluded(why.as_str()));
    }
    for (key, value) in &d.selector {
        if node.labels.get(key) != Some(value) {
            return Err(Skip::Selector {
                key: key.as_str(),
                value: value.as_str(),
            });
        }
    }
    if !(node.idle_watts.is_finite() && node.idle_watts >= 0.0) {
        return Err(Skip::BadFigure {
            name: "idle_watts",
            value: node.idle_watts,
        });
    }
    Ok(())
}

/// A node's operating point for a deployment, or why it cannot host one. Depends on the
/// input only (and on `keep`), never on what else is placed.
fn evaluate<'a>(
    ctx: &Ctx<'a>,
    ni: usize,
    d: &'a Deployment,
    keep: bool,
) -> Result<Candidate, Skip<'a>> {
    hard_filter(ctx.nodes[ni], d, keep)?;
    profile::resolve(&ctx.nodes, &ctx.refs, ni, d)
}

fn free(node: &Node, used: u64) -> u64 {
    node.memory_bytes.saturating_sub(used)
}

/// A replica's key on a node; `powered`: a deployment placed before uses the node already.
fn key(cand: &Candidate, idle_watts: f64, powered: bool, share: f64) -> Key {
    let capacity = cand.op.tokens_per_s;
    let served = share.min(capacity);
    let dynamic = (cand.op.watts - idle_watts).max(0.0) * (served / capacity);
    let watts = if powered {
        dynamic
    } else {
        dynamic + idle_watts
    };
    let cost = if served > 0.0 {
        watts / served
    } else {
        f64::INFINITY
    };
    Key {
        covers: capacity >= share,
        cost,
    }
}

/// The replicas a deployment wants. For `Auto`, the capacity of the node that would serve
/// the whole demand best on an empty fleet (ready, active, selector, latency and total
/// memory), so that the count does not depend on what runs where.
fn replica_count(
    ctx: &Ctx<'_>,
    d: &Deployment,
    demand: f64,
    wanted: f64,
    need: u64,
    evals: &[Result<Candidate, Skip<'_>>],
) -> u32 {
    let (min, max) = match d.replicas {
        Replicas::Fixed(n) => return n,
        Replicas::Auto { min, max } => (min, max.max(min)),
    };
    if demand <= 0.0 {
        return min;
    }
    let floor = min.max(1).min(max);
    let best = evals
        .iter()
        .enumerate()
        .filter_map(|(ni, eval)| {
            let node = ctx.nodes[ni];
            let cand = eval.as_ref().ok()?;
            let fits = node.schedule == Schedule::Active && node.memory_bytes >= need;
            fits.then(|| (ni, *cand, key(cand, node.idle_watts, false, wanted)))
        })
        .min_by(by_key);
    let Some((_, cand, _)) = best else {
        return floor;
    };
    let want = (demand / cand.op.tokens_per_s).ceil();
    let want = if want >= f64::from(max) {
        max
    } else {
        // Finite and in [1, max) here.
        want as u32
    };
    want.max(floor).min(max)
}
