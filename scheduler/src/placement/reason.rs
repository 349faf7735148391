//! The plan in words: decisions, skips and pending reasons.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::profile::{Basis, PointError};
use super::round::{DepResult, Placed};
use super::{Ctx, Decision, Deployment, Outcome, Source};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// Skips listed in a pending reason before "and N more".
const LISTED_SKIPS: usize = 3;

/// Why a node does not host a replica of a deployment.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Skip<'a> {
    Unreachable,
    Cordoned,
    Draining,
    Selector {
        key: &'a str,
        value: &'a str,
    },
    /// A node figure that cannot be used (not finite, or negative).
    BadFigure {
        name: &'static str,
        value: f64,
    },
    /// `busy_watts` is not a finite figure at or above `idle_watts`: no estimate is made.
    BadBusy {
        busy: f64,
        idle: f64,
    },
    NoPoints,
    /// No profile to go by and no weights size for a roofline.
    NoWeights,
    TooSlow {
        batch: u32,
        itl_ms: f64,
        target_ms: f64,
    },
    Memory {
        need: u64,
        free: u64,
    },
    /// The caller keeps this deployment off the node for now (a failed load backing off).
    Excluded(&'a str),
    /// The replicas placed on the node take so much of its compute (utilisation, from 0 to
    /// 1) that this one would take it past 1.
    Busy {
        taken: f64,
    },
}

impl From<PointError> for Skip<'_> {
    fn from(e: PointError) -> Self {
        match e {
            PointError::NoUsablePoints => Skip::NoPoints,
            PointError::TooSlow {
                batch,
                itl_ms,
                target_ms,
            } => Skip::TooSlow {
                batch,
                itl_ms,
                target_ms,
            },
        }
    }
}

impl fmt::Display for Skip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::Unreachable => f.write_str("unreachable"),
            Skip::Excluded(why) => f.write_str(why),
            Skip::Cordoned => f.write_str("cordoned"),
            Skip::Draining => f.write_str("draining"),
            Skip::Selector { key, value } => write!(f, "selector {key}={value} not matched"),
            Skip::BadFigure { name, value } => write!(f, "{name} is {value}, not a usable figure"),
            Skip::BadBusy { busy, idle } => write!(
                f,
                "busy_watts {busy} is not a figure at or above idle_watts {idle}, no estimate"
            ),
            Skip::NoPoints => f.write_str(
                "no usable profile points (batch of at least 1, finite positive tokens/s and watts)",
            ),
            Skip::NoWeights => f.write_str("no profile to estimate from and weights_bytes is 0"),
            Skip::TooSlow {
                batch,
                itl_ms,
                target_ms,
            } => write!(
                f,
                "{} ms/token at batch {batch}, target {} ms",
                ms(*itl_ms),
                ms(*target_ms)
            ),
            Skip::Memory { need, free } => {
                write!(f, "needs {} GiB, {} GiB free", gib(*need), gib(*free))
            }
            Skip::Busy { taken } => {
                write!(f, "busy ({:.0}% of its capacity taken)", taken * 100.0)
            }
        }
    }
}

/// Bytes as GiB with one decimal.
pub(super) fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / GIB)
}

/// Milliseconds: whole where they round to a whole number, else with one decimal.
fn ms(v: f64) -> String {
    if (v - v.round()).abs() < 0.05 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The plan's outcomes, by deployment name.
pub(super) fn render(ctx: &Ctx<'_>, results: &[DepResult<'_>]) -> Vec<Outcome> {
    let mut outcomes: Vec<Outcome> = ctx
        .deps
        .iter()
        .zip(results)
        .zip(&ctx.original)
        .map(|((d, r), original)| outcome(ctx, d, r, original))
        .collect();
    outcomes.sort_by(|a, b| a.deployment.cmp(&b.deployment));
    outcomes
}

fn outcome(
    ctx: &Ctx<'_>,
    d: &Deployment,
    r: &DepResult<'_>,
    original: &BTreeSet<usize>,
) -> Outcome {
    let name = |ni: usize| ctx.nodes[ni].name.as_str();
    let placed_nodes: BTreeSet<usize> = r.placed.iter().map(|p| p.node).collect();
    // Placements in force before and not now; each new placement is said to replace one.
    let mut lost = original.difference(&placed_nodes).copied();
    let mut replaced_by: BTreeMap<usize, usize> = BTreeMap::new();
    let mut placed = Vec::with_capacity(r.placed.len());
    for p in &r.placed {
        let kept = original.contains(&p.node);
        let mut reason = decision_reason(ctx, d, p);
        if kept {
            reason = format!("kept: {reason}");
        } else if let Some(old) = lost.next() {
            reason = format!("{reason}; replaces {}", name(old));
            replaced_by.insert(old, p.node);
        }
        placed.push(Decision {
            node: name(p.node).to_owned(),
            reason,
            source: p.cand.source,
            tokens_per_joule: p.cand.op.tokens_per_joule(),
            batch: p.cand.op.batch,
            tokens_per_s: p.cand.op.tokens_per_s,
            kept,
        });
    }

    let mut skipped: Vec<(usize, String)> = r
        .skips
        .iter()
        .map(|(ni, s)| (*ni, format!("{} skipped: {s}", name(*ni))))
        .collect();
    for old in original.difference(&placed_nodes) {
        if r.skips.iter().any(|(ni, _)| ni == old) {
            continue;
        }
        let why = match replaced_by.get(old) {
            Some(&new) => format!("{} released: moved to {}", name(*old), name(new)),
            None => format!("{} released: {} replicas wanted", name(*old), r.count),
        };
        skipped.push((*old, why));
    }
    skipped.sort_by_key(|(ni, _)| *ni);

    let placed_count = u32::try_from(r.placed.len()).unwrap_or(u32::MAX);
    let pending = r.count.saturating_sub(placed_count);
    Outcome {
        deployment: d.name.clone(),
        placed,
        pending,
        pending_reason: (pending > 0).then(|| pending_reason(ctx, r, placed_count)),
        skipped: skipped.into_iter().map(|(_, s)| s).collect(),
    }
}

/// "n2: 1.49 tok/J at batch 8 (measured), 3.1 GiB free", and for an estimate what it was
/// made from.
fn decision_reason(ctx: &Ctx<'_>, d: &Deployment, p: &Placed) -> String {
    let node = ctx.nodes[p.node];
    let label = match p.cand.source {
        Source::Measured => "measured",
        Source::Estimated => "estimated",
    };
    let head = format!(
        "{}: {:.2} tok/J at batch {} ({label}), {} GiB free",
        node.name,
        p.cand.op.tokens_per_joule(),
        p.cand.op.batch,
        gib(p.free_after)
    );
    let note = match p.cand.basis {
        Basis::Own => node
            .profiles
            .get(&d.model)
            .filter(|own| !own.note.is_empty() && own.note != "measured")
            .map(|own| own.note.clone()),
        Basis::SameClass(ri) => Some(format!(
            "estimated from {} (same class {})",
            ctx.nodes[ri].name, node.class
        )),
        Basis::Scaled(ri) => {
            let r = ctx.nodes[ri];
            Some(format!(
                "estimated from {} ({}), scaled by memory bandwidth {:.0}/{:.0} GB/s",
                r.name, r.class, node.mem_bandwidth_gbs, r.mem_bandwidth_gbs
            ))
        }
        Basis::Roofline => Some(format!(
            "estimated by roofline from {:.0} GB/s and {} GiB of weights",
            node.mem_bandwidth_gbs,
            gib(d.weights_bytes)
        )),
    };
    let head = match p.over {
        Some(u) => format!(
            "{head}; over capacity ({:.0}% of its compute taken): no node with spare compute",
            u * 100.0
        ),
        None => head,
    };
    match note {
        Some(note) => format!("{head}; {note}"),
        None => head,
    }
}

fn pending_reason(ctx: &Ctx<'_>, r: &DepResult<'_>, placed: u32) -> String {
    let largest_free = r
        .skips
        .iter()
        .filter_map(|(_, s)| match s {
            Skip::Memory { free, .. } => Some(*free),
            _ => None,
        })
        .max();
    if placed == 0 {
        return match largest_free {
            Some(free) => format!(
                "needs {} GiB, the largest free is {} GiB",
                gib(r.need),
                gib(free)
            ),
            None => format!("no eligible node ({})", skip_list(ctx, r)),
        };
    }
    let nodes = if placed == 1 { "node" } else { "nodes" };
    format!(
        "{placed} of {} replicas placed: only {placed} eligible {nodes} ({})",
        r.count,
        skip_list(ctx, r)
    )
}

/// The first few skips, e.g. "n1 skipped: cordoned, n3 skipped: unreachable, and 4 more".
fn skip_list(ctx: &Ctx<'_>, r: &DepResult<'_>) -> String {
    if r.skips.is_empty() {
        return if ctx.nodes.is_empty() {
            "the fleet has no nodes".to_owned()
        } else {
            "every node already hosts one".to_owned()
        };
    }
    let mut list: Vec<String> = r
        .skips
        .iter()
        .take(LISTED_SKIPS)
        .map(|(ni, s)| format!("{} skipped: {s}", ctx.nodes[*ni].name))
        .collect();
    if r.skips.len() > LISTED_SKIPS {
        list.push(format!("and {} more", r.skips.len() - LISTED_SKIPS));
    }
    list.join(", ")
}
