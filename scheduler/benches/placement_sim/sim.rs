//! The simulated world of `placement-sim`: the seeded demand traces, the baselines, and the
//! power and service accounting.

use std::collections::{BTreeMap, BTreeSet};

use joule_scheduler::placement::profile::{OperatingPoint, operating_point};
use joule_scheduler::placement::{Current, Deployment, Health, Node, Replicas, Schedule};

/// What a node hosting nothing draws (assumed: parked, 0 W).
pub const PARKED_WATTS: f64 = 0.0;

/// xorshift64: small, seeded, deterministic.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    Steady,
    Diurnal,
    Bursty,
}

impl Trace {
    pub const ALL: [Trace; 3] = [Trace::Steady, Trace::Diurnal, Trace::Bursty];

    pub fn name(self) -> &'static str {
        match self {
            Trace::Steady => "steady",
            Trace::Diurnal => "diurnal",
            Trace::Bursty => "bursty",
        }
    }

    /// Per step, per deployment (as in `bases`), the demand in output tokens/s.
    pub fn demand(self, steps: usize, bases: &[f64], seed: u64) -> Vec<Vec<f64>> {
        let mut rng = XorShift::new(seed);
        let mut burst_left = vec![0u32; bases.len()];
        (0..steps)
            .map(|step| {
                let day = step as f64 / steps as f64;
                bases
                    .iter()
                    .zip(&mut burst_left)
                    .map(|(&base, left)| {
                        let noise = 0.9 + 0.2 * rng.unit();
                        match self {
                            Trace::Steady => base * noise,
                            Trace::Diurnal => {
                                let wave = 0.5 - 0.5 * (std::f64::consts::TAU * day).cos();
                                base * (0.1 + 0.9 * wave) * noise
                            }
                            Trace::Bursty => {
                                if *left == 0 && rng.unit() < 0.04 {
                                    *left = 1 + (rng.next_u64() % 6) as u32;
                                }
                                let factor = if *left > 0 { 3.0 } else { 0.3 };
                                *left = left.saturating_sub(1);
                                base * factor * noise
                            }
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

/// A node's operating point for a deployment at its target, from the node's own profile.
pub fn point(node: &Node, d: &Deployment) -> Option<OperatingPoint> {
    let profile = node.profiles.get(&d.model)?;
    operating_point(&profile.points, d.max_itl_ms).ok()
}

pub fn need(d: &Deployment) -> u64 {
    d.weights_bytes.saturating_add(d.kv_bytes)
}

pub fn eligible(node: &Node, d: &Deployment, keep: bool) -> bool {
    let schedule = match node.schedule {
        Schedule::Active => true,
        Schedule::Cordoned => keep,
        Schedule::Draining => false,
    };
    node.health == Health::Ready
        && schedule
        && d.selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
        && point(node, d).is_some()
}

/// VRAM bin-packing (`spread == false`) or spreading: memory and filters only, no energy.
pub fn baseline(
    nodes: &[Node],
    deps: &[Deployment],
    prev: &[Current],
    spread: bool,
) -> Vec<Current> {
    let mut order: Vec<&Deployment> = deps.iter().collect();
    order.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
    let running: BTreeSet<(&str, &str)> = prev
        .iter()
        .map(|c| (c.deployment.as_str(), c.node.as_str()))
        .collect();
    let mut used: BTreeMap<&str, u64> = BTreeMap::new();
    // Running placements are set aside first, as `place` does.
    let mut reserved: BTreeMap<&str, Vec<&Node>> = BTreeMap::new();
    for d in &order {
        for n in nodes {
            let fits = need(d) <= free(&used, n);
            if running.contains(&(d.name.as_str(), n.name.as_str())) && eligible(n, d, true) && fits
            {
                *used.entry(n.name.as_str()).or_default() += need(d);
                reserved.entry(d.name.as_str()).or_default().push(n);
            }
        }
    }
    let mut out = Vec::new();
    for d in &order {
        let (min, max) = match d.replicas {
            Replicas::Fixed(n) => (n, n),
            Replicas::Auto { min, max } => (min, max.max(min)),
        };
        let wants_more = |count: usize, capacity: f64| {
            count < max as usize && (count < min as usize || capacity < d.demand_tokens_per_s)
        };
        let mut chosen: Vec<&Node> = Vec::new();
        let mut capacity = 0.0;
        for &n in reserved.get(d.name.as_str()).into_iter().flatten() {
            if wants_more(chosen.len(), capacity) {
                capacity += point(n, d).map_or(0.0, |op| op.tokens_per_s);
                chosen.push(n);
            } else if let Some(u) = used.get_mut(n.name.as_str()) {
                *u = u.saturating_sub(need(d));
            }
        }
        while wants_more(chosen.len(), capacity) {
            let pick = nodes
                .iter()
                .filter(|n| !chosen.iter().any(|c| c.name == n.name))
                .filter(|n| eligible(n, d, false) && need(d) <= free(&used, n))
                .min_by(|a, b| {
                    let (fa, fb) = (free(&used, a), free(&used, b));
                    let by_free = if spread { fb.cmp(&fa) } else { fa.cmp(&fb) };
                    by_free.then_with(|| a.name.cmp(&b.name))
                });
            let Some(n) = pick else {
                break;
            };
            *used.entry(n.name.as_str()).or_default() += need(d);
            capacity += point(n, d).map_or(0.0, |op| op.tokens_per_s);
            chosen.push(n);
        }
        out.extend(chosen.iter().map(|n| Current {
            deployment: d.name.clone(),
            node: n.name.clone(),
        }));
    }
    out
}

pub fn free(used: &BTreeMap<&str, u64>, n: &Node) -> u64 {
    let taken = used.get(n.name.as_str()).copied().unwrap_or(0);
    n.memory_bytes.saturating_sub(taken)
}

/// One step of the simulated world: (watts, demand tokens/s, served tokens/s).
pub fn account(nodes: &[Node], deps: &[Deployment], placements: &[Current]) -> (f64, f64, f64) {
    let by_name: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut dynamic: BTreeMap<&str, f64> = BTreeMap::new();
    let (mut demand, mut served) = (0.0, 0.0);
    for d in deps {
        demand += d.demand_tokens_per_s;
        let replicas: Vec<(&Node, OperatingPoint)> = placements
            .iter()
            .filter(|c| c.deployment == d.name)
            .filter_map(|c| by_name.get(c.node.as_str()).copied())
            .filter_map(|n| point(n, d).map(|op| (n, op)))
            .collect();
        let capacity: f64 = replicas.iter().map(|(_, op)| op.tokens_per_s).sum();
        if capacity <= 0.0 {
            continue;
        }
        let carried = d.demand_tokens_per_s.min(capacity);
        served += carried;
        let utilisation = carried / capacity;
        for (n, op) in replicas {
            let extra = (op.watts - n.idle_watts).max(0.0) * utilisation;
            *dynamic.entry(n.name.as_str()).or_default() += extra;
        }
    }
    let hosting: BTreeSet<&str> = placements.iter().map(|c| c.node.as_str()).collect();
    let watts: f64 = nodes
        .iter()
        .map(|n| {
            if hosting.contains(n.name.as_str()) {
                n.idle_watts + dynamic.get(n.name.as_str()).copied().unwrap_or(0.0)
            } else {
                PARKED_WATTS
            }
        })
        .sum();
    (watts, demand, served)
}
