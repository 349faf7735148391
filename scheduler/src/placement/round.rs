//! One greedy pass over the deployments.
//!
//! First the memory and the compute of every running placement that may stay (its node is
//! ready, not draining, still matches the selector and still has room) are set aside,
//! deployments by priority, so that new work never pushes running work out. Then,
//! deployment by deployment in priority order:
//! - every node gets its operating point for the deployment, or the reason it is skipped;
//! - the replica count is fixed (for `Auto`, from the largest capacity of any node);
//! - running placements are kept, the best ones up to the count; each moves only if the best
//!   free node costs under `(1 - churn_threshold)` times its own joules per token, with the
//!   threshold of `Options` for a placement in `Input::current` and 0 for one made by an
//!   earlier pass of the same call;
//! - the remaining replicas go to the cheapest free nodes (a placement of `Input::current`
//!   that an earlier pass moved away may come back, kept, even on a cordoned node);
//! - an `Auto` deployment whose replicas are all placed takes one more (a running one first,
//!   then the cheapest free node) while their capacity at the target is below its demand and
//!   it has fewer than `max`: the count is a floor, so that replicas landing on weaker nodes
//!   than the best one still cover the demand.
//!
//! A replica's cost on a node is its marginal joules per token: the dynamic watts it adds,
//! `(watts(b) - idle) · served / capacity`, plus the node's idle watts if no deployment placed
//! before it uses the node, over the tokens/s it serves. Its share of the demand is
//! `max(demand, nominal) / count`, with the count before any top-up. A node that can carry
//! the whole share comes before one that cannot; then the lower cost; then the name.
//!
//! Replicas on one node share its compute: a replica takes `min(1, share / capacity)` of the
//! node (its utilisation, with the share as above, so at least what it takes once topped up),
//! and a node whose utilisation would pass 1 is skipped as busy.
//!
//! Costs for a deployment only depend on the deployments placed before it, so the node it is
//! given stays the cheapest when the pass runs again on its own plan; memory and compute freed
//! by later deployments can still change that, which is why `place` repeats the pass to a
//! fixed point.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use super::profile::{self, Candidate};
use super::reason::Skip;
use super::{Ctx, Deployment, Health, Node, Replicas, Schedule, demand, need_bytes};

/// Per deployment (in placing order), the nodes it runs on.
pub(super) type Sets = Vec<BTreeSet<usize>>;

/// Slack for the sums of utilisation, so that float rounding does not make a node busy.
const UTILISATION_SLACK: f64 = 1e-9;

/// One replica placed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Placed {
    pub(super) node: usize,
    pub(super) cand: Candidate,
    /// The node's free memory once this replica is placed.
    pub(super) free_after: u64,
    /// The node's utilisation once this replica is placed, where that passes 1: no node had
    /// the compute to spare, and the replicas asked for are placed all the same.
    pub(super) over: Option<f64>,
}

/// One deployment's part of a pass.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DepResult<'a> {
    /// Replicas wanted, top-ups included.
    pub(super) count: u32,
    /// Memory per replica.
    pub(super) need: u64,
    /// By node.
    pub(super) placed: Vec<Placed>,
    /// By node.
    pub(super) skips: Vec<(usize, Skip<'a>)>,
}

/// What the replicas placed so far in a pass take of each node.
#[derive(Debug)]
struct Taken {
    /// Memory, in bytes.
    bytes: Vec<u64>,
    /// Compute: the sum of the replicas' utilisations.
    util: Vec<f64>,
    /// Deployments placed on the node (reservations not counted).
    hosts: Vec<u32>,
}

impl Taken {
    fn new(nodes: usize) -> Self {
        Self {
            bytes: vec![0; nodes],
            util: vec![0.0; nodes],
            hosts: vec![0; nodes],
        }
    }

    /// Callers check the room first (`need <= free`), so the sum does not overflow.
    fn take(&mut self, ni: usize, need: u64, util: f64) {
        self.bytes[ni] = self.bytes[ni].saturating_add(need);
        self.util[ni] += util;
    }

    fn release(&mut self, ni: usize, need: u64, util: f64) {
        self.bytes[ni] = self.bytes[ni].saturating_sub(need);
        self.util[ni] = (self.util[ni] - util).max(0.0);
    }

    /// Whether a replica taking `util` of node `ni` leaves it at most fully busy.
    fn fits(&self, ni: usize, util: f64) -> bool {
        self.util[ni] + util <= 1.0 + UTILISATION_SLACK
    }
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

/// One pass; `running` holds, per deployment, the placements treated as in force (those of
/// the input, or of the pass before); `ctx.original` says which of them the input gave.
pub(super) fn run<'a>(ctx: &Ctx<'a>, running: &[BTreeSet<usize>]) -> Vec<DepResult<'a>> {
    let mut taken = Taken::new(ctx.nodes.len());

    // Per deployment, the running placements set aside, with the utilisation each takes.
    let mut reserved: Vec<BTreeMap<usize, f64>> = Vec::with_capacity(ctx.deps.len());
    for (di, (&d, set)) in ctx.deps.iter().zip(running).enumerate() {
        let need = need_bytes(d);
        let share = replica_share(ctx, di);
        let mut kept = BTreeMap::new();
        for &ni in set {
            let Ok(cand) = evaluate(ctx, di, ni, true) else {
                continue;
            };
            let util = utilisation(share, &cand);
            if need <= free(ctx.nodes[ni], taken.bytes[ni]) && taken.fits(ni, util) {
                taken.take(ni, need, util);
                kept.insert(ni, util);
            }
        }
        reserved.push(kept);
    }

    reserved
        .iter()
        .enumerate()
        .map(|(di, reserved)| deployment(ctx, di, reserved, &mut taken))
        .collect()
}

/// A replica's share of its deployment's demand: `max(demand, nominal)` over the count before
/// any top-up (at least 1).
fn replica_share(ctx: &Ctx<'_>, di: usize) -> f64 {
    let wanted = demand(ctx.deps[di]).max(ctx.nominal);
    let count = ctx.counts.get(di).copied().unwrap_or(1).max(1);
    wanted / f64::from(count)
}

/// The part of a node's compute a replica serving `share` tokens/s takes: at most all of it.
fn utilisation(share: f64, cand: &Candidate) -> f64 {
    (share / cand.op.tokens_per_s).min(1.0)
}

/// Deployment `di` (an index into `ctx.deps`); `reserved`: its running placements set aside,
/// by node, with the utilisation each takes (already in `taken`).
fn deployment<'a>(
    ctx: &Ctx<'a>,
    di: usize,
    reserved: &BTreeMap<usize, f64>,
    taken: &mut Taken,
) -> DepResult<'a> {
    let d = ctx.deps[di];
    let need = need_bytes(d);
    let demand_tps = demand(d);
    let share = replica_share(ctx, di);
    let base = ctx.counts.get(di).copied().unwrap_or(0);
    let reserved_util = |ni: usize| reserved.get(&ni).copied().unwrap_or(0.0);

    let mut skips = Vec::new();
    let mut kept: Vec<Ranked> = Vec::new();
    let mut free_nodes: Vec<Ranked> = Vec::new();
    // Eligible, with the memory, but no compute to spare: used only for the replicas asked
    // for, when no node with spare compute is left (never for a top-up).
    let mut busy_nodes: Vec<Ranked> = Vec::new();
    for (ni, &node) in ctx.nodes.iter().enumerate() {
        let is_reserved = reserved.contains_key(&ni);
        // A placement in the input stays as lenient as a running one (a cordoned node keeps
        // it) where an earlier pass of this call moved it away: it may come back, kept.
        let keep = is_reserved || ctx.original[di].contains(&ni);
        match evaluate(ctx, di, ni, keep) {
            Err(skip) => {
                // Not reached for a reserved placement (it was evaluated alike to be set
                // aside); released all the same.
                if is_reserved {
                    taken.release(ni, need, reserved_util(ni));
                }
                skips.push((ni, skip));
            }
            Ok(cand) => {
                let rank = key(&cand, node.idle_watts, taken.hosts[ni] > 0, share);
                let room = free(node, taken.bytes[ni]);
                if is_reserved {
                    kept.push((ni, cand, rank));
                } else if need > room {
                    skips.push((ni, Skip::Memory { need, free: room }));
                } else if !taken.fits(ni, utilisation(share, &cand)) {
                    busy_nodes.push((ni, cand, rank));
                } else {
                    free_nodes.push((ni, cand, rank));
                }
            }
        }
    }
    kept.sort_by(by_key);
    free_nodes.sort_by(by_key);

    let base_n = usize::try_from(base).unwrap_or(usize::MAX);
    let max_n = match d.replicas {
        Replicas::Auto { min, max } => Some(usize::try_from(max.max(min)).unwrap_or(usize::MAX)),
        Replicas::Fixed(_) => None,
    };
    // The top-up: one more replica while all are placed, fewer than `max`, and their
    // capacity is below the demand.
    let short = |placed: usize, capacity: f64| {
        max_n.is_some_and(|max| placed >= base_n && placed < max && capacity < demand_tps)
    };

    let mut keep_n = base_n.min(kept.len());
    let mut capacity: f64 = kept.iter().take(keep_n).map(|r| r.1.op.tokens_per_s).sum();
    while keep_n < kept.len() && short(keep_n, capacity) {
        capacity += kept[keep_n].1.op.tokens_per_s;
        keep_n += 1;
    }
    for (ni, _, _) in kept.drain(keep_n..) {
        taken.release(ni, need, reserved_util(ni));
    }

    // Worst kept replica first, against the best free node left.
    let mut free_nodes = free_nodes.into_iter().peekable();
    let mut placed = Vec::with_capacity(base_n.max(keep_n).min(ctx.nodes.len()));
    for (ni, cand, own) in kept.into_iter().rev() {
        let churn = if ctx.original[di].contains(&ni) {
            ctx.churn
        } else {
            0.0
        };
        let better = free_nodes.next_if(|(_, _, alt)| alt.beats(&own, churn));
        let (at, cand) = match better {
            Some((ai, alt, _)) => {
                taken.release(ni, need, reserved_util(ni));
                taken.take(ai, need, utilisation(share, &alt));
                (ai, alt)
            }
            None => (ni, cand),
        };
        placed.push(Placed {
            node: at,
            cand,
            free_after: free(ctx.nodes[at], taken.bytes[at]),
            over: None,
        });
    }
    let mut capacity: f64 = placed.iter().map(|p| p.cand.op.tokens_per_s).sum();
    while placed.len() < base_n || short(placed.len(), capacity) {
        let Some((ai, cand, _)) = free_nodes.next() else {
            break;
        };
        taken.take(ai, need, utilisation(share, &cand));
        capacity += cand.op.tokens_per_s;
        placed.push(Placed {
            node: ai,
            cand,
            free_after: free(ctx.nodes[ai], taken.bytes[ai]),
            over: None,
        });
    }
    // The replicas asked for that found no node with spare compute go to the least busy of
    // the rest (their reason says so); the others stay skipped as busy.
    busy_nodes.sort_by(|a, b| {
        taken.util[a.0]
            .total_cmp(&taken.util[b.0])
            .then_with(|| by_key(a, b))
    });
    for (ni, cand, _) in busy_nodes {
        if placed.len() < base_n && need <= free(ctx.nodes[ni], taken.bytes[ni]) {
            taken.take(ni, need, utilisation(share, &cand));
            placed.push(Placed {
                node: ni,
                cand,
                free_after: free(ctx.nodes[ni], taken.bytes[ni]),
                over: Some(taken.util[ni]),
            });
        } else {
            skips.push((
                ni,
                Skip::Busy {
                    taken: taken.util[ni],
                },
            ));
        }
    }
    for p in &placed {
        taken.hosts[p.node] = taken.hosts[p.node].saturating_add(1);
    }
    placed.sort_by_key(|p| p.node);
    let count = if placed.len() > base_n {
        u32::try_from(placed.len()).unwrap_or(u32::MAX)
    } else {
        base
    };
    DepResult {
        count,
        need,
        placed,
        skips,
    }
}

/// Health, schedule, exclusion, selector and the node's idle figure; `keep`: for a placement
/// already running there (a cordoned node keeps it).
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

/// Per deployment, per node (both as sorted in the context): the node's operating point for
/// the deployment, or why it cannot host one. Resolved once per call, where the hard filter
/// lets a running placement stay (its most lenient case); elsewhere the filter's reason.
pub(super) fn candidates<'a>(
    nodes: &[&'a Node],
    deps: &[&'a Deployment],
    refs: &profile::Refs<'a>,
    headroom: f64,
) -> Vec<Vec<Result<Candidate, Skip<'a>>>> {
    deps.iter()
        .map(|&d| {
            (0..nodes.len())
                .map(|ni| {
                    hard_filter(nodes[ni], d, true)
                        .and_then(|()| profile::resolve(nodes, refs, ni, d, headroom))
                })
                .collect()
        })
        .collect()
}

/// A node's operating point for deployment `di`, or why it cannot host one. Depends on the
/// input only (and on `keep`), never on what else is placed.
fn evaluate<'a>(ctx: &Ctx<'a>, di: usize, ni: usize, keep: bool) -> Result<Candidate, Skip<'a>> {
    hard_filter(ctx.nodes[ni], ctx.deps[di], keep)?;
    ctx.cands[di][ni].clone()
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

/// The replicas a deployment wants before any top-up; `row`: its [`candidates`]. For `Auto`,
/// `ceil(demand / c)` with `c` the largest capacity at the target of any node that could run
/// it (ready, not draining, exclusions, selector, latency and total memory; a cordoned node
/// counts, so that a cordon does not change the count): fewer replicas cannot carry the
/// demand, and the top-up adds replicas where the nodes given are weaker. It does not depend
/// on what runs where, and removing nodes never lowers it.
pub(super) fn replica_count(
    nodes: &[&Node],
    d: &Deployment,
    row: &[Result<Candidate, Skip<'_>>],
) -> u32 {
    let (min, max) = match d.replicas {
        Replicas::Fixed(n) => return n,
        Replicas::Auto { min, max } => (min, max.max(min)),
    };
    let demand_tps = demand(d);
    if demand_tps <= 0.0 {
        return min;
    }
    let need = need_bytes(d);
    let floor = min.max(1).min(max);
    let largest = row
        .iter()
        .zip(nodes)
        .filter_map(|(eval, &node)| {
            let cand = eval.as_ref().ok()?;
            (node.memory_bytes >= need).then_some(cand.op.tokens_per_s)
        })
        .max_by(f64::total_cmp);
    let Some(capacity) = largest else {
        return floor;
    };
    let want = (demand_tps / capacity).ceil();
    let want = if want >= f64::from(max) {
        max
    } else {
        // Finite and in [1, max) here.
        want as u32
    };
    want.max(floor).min(max)
}
