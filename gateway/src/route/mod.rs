//! The routing function: which replica of a model serves one request, and why.
//!
//! [`route`] owns one decision. Under [`Policy::Energy`] it predicts, for every candidate
//! replica, the joules per output token of the request if it joins there: the marginal cost
//! `ΔP / Δtokens_per_s` on the replica's calibration curve from its current batch `b` to `b + 1`,
//! where joining an idle replica (`b = 0`) pays its whole power at batch 1 (idle watts
//! included: the cost of waking a node). It keeps the replicas whose predicted inter-token
//! latency (`1000 · (b + 1) / tokens_per_s(b + 1)` ms) and time to first token (the queue ahead
//! at that step time, plus prefill) meet the deployment's p95 targets, and picks the cheapest.
//! A prefix-affinity hint (the replica that served the same system prompt) wins while it costs
//! at most [`AFFINITY_SLACK`] more. When no replica meets the target, the one with the lowest
//! predicted latency is chosen, so load spreads instead of piling on one node (dynamo#737).
//! [`Policy::LeastLoaded`] and [`Policy::RoundRobin`] are the baselines.
//!
//! It must never do I/O, read a clock, draw a random number or touch proto types: it is a pure
//! function of its arguments (the rotation for ties is the caller's `tick`), so it is
//! table-tested, and the routing simulator runs the same code as the gateway.

#[cfg(test)]
mod tests;

use std::fmt;

/// How a replica is picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Energy,
    LeastLoaded,
    RoundRobin,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Energy => "energy",
            Policy::LeastLoaded => "least-loaded",
            Policy::RoundRobin => "round-robin",
        }
    }
}

/// An affinity hint may cost this much more than the cheapest replica (a share: 0.25 is 25%).
pub const AFFINITY_SLACK: f64 = 0.25;
/// Prefill is taken to run this many times faster per token than batch-1 decode (compute
/// bound, not bandwidth bound) for the TTFT prediction.
pub const PREFILL_SPEEDUP: f64 = 8.0;

/// One point of a calibration curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub batch: u32,
    /// Aggregate output tokens/s over the batch.
    pub tokens_per_s: f64,
    /// Whole-node watts at that batch.
    pub watts: f64,
}

/// A replica that could take the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub node: String,
    /// Its calibration curve (any order; unusable points are ignored).
    pub curve: Vec<Point>,
    /// Watts with nothing running.
    pub idle_watts: f64,
    /// Requests decoding there now (the larger of what it reported and what this gateway has
    /// in flight there).
    pub running: u32,
    /// Requests queued there.
    pub waiting: u32,
    /// Retiring, or on a draining node: used only when nothing else can take the request.
    pub fallback: bool,
}

/// What the request asks of its replica.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ask {
    /// p95 targets, ms.
    pub itl_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    /// Prompt tokens (an estimate is fine), for the TTFT prediction.
    pub prompt_tokens: u32,
    /// The replica that last served this request's prefix, if any.
    pub affinity: Option<String>,
    /// Replicas already tried for this request (never picked again).
    pub exclude: Vec<String>,
    /// A counter the caller advances per request: rotates ties and round-robin.
    pub tick: u64,
}

/// One candidate's predicted figures if the request joins it.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub node: String,
    /// Its batch with the request.
    pub batch: u32,
    pub joules_per_token: f64,
    pub itl_ms: f64,
    pub ttft_ms: f64,
    pub meets_target: bool,
}

/// Why the chosen replica won.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The fewest joules per token among those meeting the target.
    Cheapest,
    /// The prefix-affinity replica, within the slack of the cheapest.
    Affinity,
    /// None meets the target: the lowest predicted latency.
    NoneMeetsTarget,
    LeastLoaded,
    RoundRobin,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Cheapest => "cheapest",
            Why::Affinity => "affinity",
            Why::NoneMeetsTarget => "none-meets-target",
            Why::LeastLoaded => "least-loaded",
            Why::RoundRobin => "round-robin",
        }
    }
}

/// The decision: the chosen candidate's index (`None`: no candidate is left) and the scores
/// behind it, for the debug log.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub chosen: Option<usize>,
    pub why: Option<Why>,
    /// One per candidate considered (excluded ones and, when others exist, fallbacks are not).
    pub scores: Vec<Score>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.scores.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{} b={} {:.3} J/tok itl {:.1} ms ttft {:.0} ms{}",
                s.node,
                s.batch,
                s.joules_per_token,
                s.itl_ms,
                s.ttft_ms,
                if s.meets_target {
                    ""
                } else {
                    " (misses target)"
                }
            )?;
        }
        Ok(())
    }
}

/// Aggregate tokens/s and watts at `batch` on a curve: linear between points; below the first
/// point tokens/s scale with the batch; past the last, flat (the node is saturated).
pub fn at(curve: &[Point], idle_watts: f64, batch: u32) -> Option<(f64, f64)> {
    let mut pts: Vec<Point> = curve
        .iter()
        .copied()
        .filter(|p| {
            p.batch >= 1
                && p.tokens_per_s.is_finite()
                && p.tokens_per_s > 0.0
                && p.watts.is_finite()
                && p.watts > 0.0
        })
        .collect();
    if pts.is_empty() {
        return None;
    }
    pts.sort_by_key(|p| p.batch);
    if batch == 0 {
        return Some((0.0, idle_watts.max(0.0)));
    }
    let b = f64::from(batch);
    let first = pts[0];
    if batch <= first.batch {
        return Some((first.tokens_per_s * b / f64::from(first.batch), first.watts));
    }
    for w in pts.windows(2) {
        let (lo, hi) = (w[0], w[1]);
        if batch <= hi.batch {
            let t = (b - f64::from(lo.batch)) / f64::from(hi.batch - lo.batch).max(1.0);
            return Some((
                lo.tokens_per_s + t * (hi.tokens_per_s - lo.tokens_per_s),
                lo.watts + t * (hi.watts - lo.watts),
            ));
        }
    }
    let last = pts[pts.len() - 1];
    Some((last.tokens_per_s, last.watts))
}

/// The predicted figures of `c` with one more request.
pub fn score(c: &Candidate, ask: &Ask) -> Score {
    let b = c.running;
    let unknown = Score {
        node: c.node.clone(),
        batch: b.saturating_add(1),
        joules_per_token: f64::INFINITY,
        itl_ms: f64::INFINITY,
        ttft_ms: f64::INFINITY,
        meets_target: false,
    };
    let (Some((tps0, w0)), Some((tps1, w1))) = (
        at(&c.curve, c.idle_watts, b),
        at(&c.curve, c.idle_watts, b.saturating_add(1)),
    ) else {
        return unknown;
    };
    // Waking an idle node pays all of its power; otherwise only what one more stream adds.
    let (dp, dtps) = if b == 0 {
        (w1, tps1)
    } else {
        ((w1 - w0).max(0.0), tps1 - tps0)
    };
    // A saturated node adds no throughput: joining it only slows everyone there.
    let joules_per_token = if dtps > 1e-9 {
        dp / dtps
    } else {
        f64::INFINITY
    };
    let itl_ms = 1000.0 * f64::from(b + 1) / tps1;
    let peak = c
        .curve
        .iter()
        .map(|p| p.tokens_per_s / f64::from(p.batch.max(1)))
        .fold(0.0, f64::max);
    let prefill_ms = if peak > 0.0 {
        1000.0 * f64::from(ask.prompt_tokens) / (peak * PREFILL_SPEEDUP)
    } else {
        f64::INFINITY
    };
    // The queue ahead admits at about one request per step per running stream.
    let queue_steps = f64::from(c.waiting) / f64::from(b + 1) + 1.0;
    let ttft_ms = queue_steps * itl_ms + prefill_ms;
    let meets_target =
        ask.itl_ms.is_none_or(|t| itl_ms <= t) && ask.ttft_ms.is_none_or(|t| ttft_ms <= t);
    Score {
        node: c.node.clone(),
        batch: b + 1,
        joules_per_token,
        itl_ms,
        ttft_ms,
        meets_target,
    }
}

/// Picks the replica for one request: see the module docs.
pub fn route(cands: &[Candidate], ask: &Ask, policy: Policy) -> Decision {
    let open: Vec<usize> = (0..cands.len())
        .filter(|&i| !ask.exclude.contains(&cands[i].node))
        .collect();
    let primary: Vec<usize> = open
        .iter()
        .copied()
        .filter(|&i| !cands[i].fallback)
        .collect();
    let pool = if primary.is_empty() { open } else { primary };
    if pool.is_empty() {
        return Decision {
            chosen: None,
            why: None,
            scores: Vec::new(),
        };
    }
    // A stable order (by node name), rotated by the tick for ties and round-robin.
    let mut pool = pool;
    pool.sort_by(|&a, &b| cands[a].node.cmp(&cands[b].node));
    let n = pool.len();
    let rot = (ask.tick % n as u64) as usize;
    pool.rotate_left(rot);
    let scores: Vec<Score> = pool.iter().map(|&i| score(&cands[i], ask)).collect();
    let pick = |k: usize, why: Why| Decision {
        chosen: Some(pool[k]),
        why: Some(why),
        scores: scores.clone(),
    };
    match policy {
        Policy::RoundRobin => pick(0, Why::RoundRobin),
        Policy::LeastLoaded => {
            let k = (0..n)
                .min_by_key(|&k| {
                    let c = &cands[pool[k]];
                    c.running.saturating_add(c.waiting)
                })
                .unwrap_or(0);
            pick(k, Why::LeastLoaded)
        }
        Policy::Energy => {
            let cheapest = (0..n).filter(|&k| scores[k].meets_target).min_by(|&a, &b| {
                scores[a]
                    .joules_per_token
                    .total_cmp(&scores[b].joules_per_token)
                    .then(scores[a].batch.cmp(&scores[b].batch))
            });
            let Some(best) = cheapest else {
                let k = (0..n)
                    .min_by(|&a, &b| {
                        scores[a]
                            .itl_ms
                            .total_cmp(&scores[b].itl_ms)
                            .then(scores[a].ttft_ms.total_cmp(&scores[b].ttft_ms))
                    })
                    .unwrap_or(0);
                return pick(k, Why::NoneMeetsTarget);
            };
            if let Some(aff) = &ask.affinity
                && let Some(k) = (0..n).find(|&k| &cands[pool[k]].node == aff)
                && scores[k].meets_target
                && scores[k].joules_per_token
                    <= scores[best].joules_per_token * (1.0 + AFFINITY_SLACK)
            {
                return pick(k, Why::Affinity);
            }
            pick(best, Why::Cheapest)
        }
    }
}
