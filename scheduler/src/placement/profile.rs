//! Operating-point maths on a calibration curve, and the estimated profiles used where a node
//! has no measurement of a model.
//!
//! The per-stream inter-token latency at batch `b` is `1000 · b / tokens_per_s(b)` ms. For a
//! latency target the operating point is the largest batch that meets it; without one, the
//! batch with the most tokens per joule. Its capacity is the aggregate tokens/s there.
//!
//! A node without its own profile of a model gets an estimate, always labelled
//! [`Source::Estimated`], from the first that applies:
//! 1. a measured profile of the model on another node of the same class, copied;
//! 2. a measured profile of the model on the node with the highest memory bandwidth (ties by
//!    name), tokens/s scaled by the bandwidth ratio and watts mapped from the reference's
//!    idle-to-busy range onto this node's;
//! 3. a roofline from this node's bandwidth and the weights' size ([`roofline`]).

use super::reason::Skip;
use super::{Deployment, Node, Point, Profile, Source};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The batch sizes of a roofline estimate.
pub const ROOFLINE_BATCHES: [u32; 6] = [1, 2, 4, 8, 16, 32];
/// The share of the memory bandwidth a batch-1 decode step is taken to reach.
pub const ROOFLINE_EFFICIENCY: f64 = 0.6;
/// The batch at which a roofline estimate's power reaches `busy_watts`.
pub const ROOFLINE_BUSY_BATCH: f64 = 8.0;
/// How fast batching stops paying in a roofline estimate: batch `b` runs at
/// `b / (1 + (b - 1) / ROOFLINE_KNEE)` times batch 1.
pub const ROOFLINE_KNEE: f64 = 16.0;

/// Where a profile is operated for a deployment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OperatingPoint {
    pub batch: u32,
    /// The capacity: aggregate output tokens/s at `batch`.
    pub tokens_per_s: f64,
    /// Whole-node watts at `batch`, fully loaded.
    pub watts: f64,
}

impl OperatingPoint {
    /// Per-stream inter-token latency.
    pub fn itl_ms(&self) -> f64 {
        itl_ms(self.batch, self.tokens_per_s)
    }

    pub fn tokens_per_joule(&self) -> f64 {
        self.tokens_per_s / self.watts
    }
}

/// Why a profile has no operating point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PointError {
    /// No point has a batch of at least 1 and finite, positive tokens/s and watts.
    NoUsablePoints,
    /// Even the smallest batch misses the target.
    TooSlow {
        batch: u32,
        itl_ms: f64,
        target_ms: f64,
    },
}

/// Per-stream inter-token latency in ms at `batch` streams and `tokens_per_s` in all.
pub fn itl_ms(batch: u32, tokens_per_s: f64) -> f64 {
    if tokens_per_s > 0.0 {
        1000.0 * f64::from(batch) / tokens_per_s
    } else {
        f64::INFINITY
    }
}

/// Whether a point can be used: batch ≥ 1, finite positive tokens/s and watts.
pub fn usable(p: &Point) -> bool {
    p.batch >= 1
        && p.tokens_per_s.is_finite()
        && p.tokens_per_s > 0.0
        && p.watts.is_finite()
        && p.watts > 0.0
}

/// The operating point of a curve for a latency target (see the module documentation).
/// Unusable points are ignored; the result does not depend on the points' order.
pub fn operating_point(
    points: &[Point],
    max_itl_ms: Option<f64>,
) -> Result<OperatingPoint, PointError> {
    let mut smallest: Option<&Point> = None;
    let mut best: Option<&Point> = None;
    for p in points.iter().filter(|p| usable(p)) {
        // Smallest batch first; of equal batches, the fastest.
        let smaller = |s: &Point| {
            p.batch
                .cmp(&s.batch)
                .then(s.tokens_per_s.total_cmp(&p.tokens_per_s))
                == Ordering::Less
        };
        if smallest.is_none_or(smaller) {
            smallest = Some(p);
        }
        let better = match max_itl_ms {
            Some(target) => {
                itl_ms(p.batch, p.tokens_per_s) <= target
                    && best.is_none_or(|b| by_batch(p, b) == Ordering::Greater)
            }
            None => best.is_none_or(|b| by_efficiency(p, b) == Ordering::Greater),
        };
        if better {
            best = Some(p);
        }
    }
    let Some(smallest) = smallest else {
        return Err(PointError::NoUsablePoints);
    };
    match best {
        Some(p) => Ok(OperatingPoint {
            batch: p.batch,
            tokens_per_s: p.tokens_per_s,
            watts: p.watts,
        }),
        None => Err(PointError::TooSlow {
            batch: smallest.batch,
            itl_ms: itl_ms(smallest.batch, smallest.tokens_per_s),
            target_ms: max_itl_ms.unwrap_or(f64::NAN),
        }),
    }
}

/// Larger batch, then faster, then fewer watts.
fn by_batch(a: &Point, b: &Point) -> Ordering {
    a.batch
        .cmp(&b.batch)
        .then(a.tokens_per_s.total_cmp(&b.tokens_per_s))
        .then(b.watts.total_cmp(&a.watts))
}

/// More tokens per joule, then the larger batch, then faster.
fn by_efficiency(a: &Point, b: &Point) -> Ordering {
    (a.tokens_per_s / a.watts)
        .total_cmp(&(b.tokens_per_s / b.watts))
        .then_with(|| by_batch(a, b))
}

/// A roofline estimate: batch-1 tokens/s = `ROOFLINE_EFFICIENCY · bandwidth / weights`, batch
/// `b` at `b · tps1 / (1 + (b - 1) / 16)`, watts `idle + (busy - idle) · min(1, b / 8)`.
/// Empty where the bandwidth is not a finite positive figure or the weights are 0 bytes.
pub fn roofline(
    mem_bandwidth_gbs: f64,
    weights_bytes: u64,
    idle_watts: f64,
    busy_watts: f64,
) -> Vec<Point> {
    if !(mem_bandwidth_gbs.is_finite() && mem_bandwidth_gbs > 0.0) || weights_bytes == 0 {
        return Vec::new();
    }
    let tps1 = ROOFLINE_EFFICIENCY * mem_bandwidth_gbs * 1e9 / weights_bytes as f64;
    ROOFLINE_BATCHES
        .iter()
        .map(|&batch| {
            let b = f64::from(batch);
            Point {
                batch,
                tokens_per_s: b * tps1 / (1.0 + (b - 1.0) / ROOFLINE_KNEE),
                watts: idle_watts + (busy_watts - idle_watts) * (b / ROOFLINE_BUSY_BATCH).min(1.0),
            }
        })
        .collect()
}

/// A reference's curve carried over to another node: tokens/s scaled by the bandwidth ratio,
/// and each point's place between the reference's idle and busy watts mapped onto the node's.
pub fn scaled(points: &[Point], reference: &Node, node: &Node) -> Vec<Point> {
    let ratio = node.mem_bandwidth_gbs / reference.mem_bandwidth_gbs;
    let span = reference.busy_watts - reference.idle_watts;
    points
        .iter()
        .filter(|p| usable(p))
        .map(|p| {
            let share = (p.watts - reference.idle_watts) / span;
            let share = if share.is_finite() {
                share.clamp(0.0, 1.0)
            } else {
                1.0
            };
            Point {
                batch: p.batch,
                tokens_per_s: p.tokens_per_s * ratio,
                watts: node.idle_watts + (node.busy_watts - node.idle_watts) * share,
            }
        })
        .collect()
}

/// What a candidate's profile was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Basis {
    /// The node's own profile.
    Own,
    /// Copied from this node (an index), of the same class.
    SameClass(usize),
    /// Scaled from this node.
    Scaled(usize),
    Roofline,
}

/// A node's operating point for a deployment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Candidate {
    pub(super) op: OperatingPoint,
    pub(super) source: Source,
    pub(super) basis: Basis,
}

/// A measured profile that estimates can be made from.
#[derive(Debug, Clone, Copy)]
struct Reference<'a> {
    node: usize,
    profile: &'a Profile,
}

#[derive(Debug, Default)]
struct ModelRefs<'a> {
    /// The first node by name of each class with a measured profile.
    by_class: BTreeMap<&'a str, Reference<'a>>,
    /// The node with the highest bandwidth (ties by name) with a measured profile.
    fastest: Option<Reference<'a>>,
}

/// Per model, the measured profiles that estimates are made from.
#[derive(Debug)]
pub(super) struct Refs<'a> {
    models: BTreeMap<&'a str, ModelRefs<'a>>,
}

impl<'a> Refs<'a> {
    /// From nodes sorted by name.
    pub(super) fn new(nodes: &[&'a Node]) -> Self {
        let mut models: BTreeMap<&'a str, ModelRefs<'a>> = BTreeMap::new();
        for (i, &node) in nodes.iter().enumerate() {
            for (model, profile) in &node.profiles {
                if profile.source != Source::Measured || !profile.points.iter().any(usable) {
                    continue;
                }
                let entry = models.entry(model.as_str()).or_default();
                let reference = Reference { node: i, profile };
                entry
                    .by_class
                    .entry(node.class.as_str())
                    .or_insert(reference);
                let bw = node.mem_bandwidth_gbs;
                let faster = |f: Reference<'a>| bw > nodes[f.node].mem_bandwidth_gbs;
                if bw.is_finite() && bw > 0.0 && entry.fastest.is_none_or(faster) {
                    entry.fastest = Some(reference);
                }
            }
        }
        Self { models }
    }
}

/// The operating point of node `ni` (an index into `nodes`) for a deployment, from its own
/// profile or an estimate.
pub(super) fn resolve<'a>(
    nodes: &[&'a Node],
    refs: &Refs<'a>,
    ni: usize,
    d: &'a Deployment,
    headroom: f64,
) -> Result<Candidate, Skip<'a>> {
    let node = nodes[ni];
    let target = d.max_itl_ms.map(|t| t * headroom);
    if let Some(own) = node.profiles.get(&d.model) {
        return at(&own.points, target, own.source, Basis::Own);
    }
    let model = refs.models.get(d.model.as_str());
    if let Some(r) = model.and_then(|m| m.by_class.get(node.class.as_str())) {
        return at(
            &r.profile.points,
            target,
            Source::Estimated,
            Basis::SameClass(r.node),
        );
    }
    let bw = node.mem_bandwidth_gbs;
    if !(bw.is_finite() && bw > 0.0) {
        return Err(Skip::BadFigure {
            name: "mem_bandwidth_gbs",
            value: bw,
        });
    }
    if !(node.busy_watts.is_finite() && node.busy_watts >= node.idle_watts) {
        return Err(Skip::BadBusy {
            busy: node.busy_watts,
            idle: node.idle_watts,
        });
    }
    if let Some(r) = model.and_then(|m| m.fastest) {
        let points = scaled(&r.profile.points, nodes[r.node], node);
        return at(&points, target, Source::Estimated, Basis::Scaled(r.node));
    }
    if d.weights_bytes == 0 {
        return Err(Skip::NoWeights);
    }
    let points = roofline(bw, d.weights_bytes, node.idle_watts, node.busy_watts);
    at(&points, target, Source::Estimated, Basis::Roofline)
}

fn at<'a>(
    points: &[Point],
    target: Option<f64>,
    source: Source,
    basis: Basis,
) -> Result<Candidate, Skip<'a>> {
    operating_point(points, target)
        .map(|op| Candidate { op, source, basis })
        .map_err(Skip::from)
}
