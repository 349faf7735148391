//! The simulated world of `placement-sim`: the seeded demand traces, the baselines, the
//! world's true profiles, and the power and service accounting.

use std::collections::{BTreeMap, BTreeSet};

use joule_scheduler::placement::profile::{OperatingPoint, operating_point};
use joule_scheduler::placement::{Current, Deployment, Health, Node, Replicas, Schedule};

/// How far a node's true profile is from the one the policies see: up to this share either
/// way, drawn once per node (seeded) for its tokens/s and once for its watts above idle.
pub const PERTURBATION: f64 = 0.15;

/// What a node hosting nothing draws: both are assumptions, and the bench reports both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parked {
    /// Powered off or suspended: 0 W (a real fleet may not allow it).
    Off,
    /// Left on without a model, drawing what it draws loaded-idle (the class's idle watts).
    Idle,
}

impl Parked {
    pub const ALL: [Parked; 2] = [Parked::Off, Parked::Idle];

    pub fn label(self) -> &'static str {
        match self {
            Parked::Off => "assumed: parked node draws 0 W (powered off or suspended)",
            Parked::Idle => "assumed: parked node draws its idle watts",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Parked::Off => "parked 0 W",
            Parked::Idle => "parked at idle W",
        }
    }

    fn watts(self, node: &Node) -> f64 {
        match self {
            Parked::Off => 0.0,
            Parked::Idle => node.idle_watts,
        }
    }
}

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

/// The simulated world's nodes: those the policies see, with every profile's tokens/s scaled
/// by a per-node factor in `1 ± PERTURBATION`, and its watts above idle (and `busy_watts`)
/// by another, both drawn from `seed` and the node's place in the list.
pub fn perturb(nodes: &[Node], seed: u64) -> Vec<Node> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut rng = XorShift::new(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let speed = 1.0 + PERTURBATION * (2.0 * rng.unit() - 1.0);
            let power = 1.0 + PERTURBATION * (2.0 * rng.unit() - 1.0);
            let mut world = n.clone();
            let idle = n.idle_watts;
            world.busy_watts = idle + (n.busy_watts - idle) * power;
            for profile in world.profiles.values_mut() {
                for p in &mut profile.points {
                    p.tokens_per_s *= speed;
                    p.watts = idle + (p.watts - idle) * power;
                }
            }
            world
        })
        .collect()
}

/// One step of the simulated world.
#[derive(Debug, Default, Clone, Copy)]
pub struct Step {
    /// Per parked-node assumption (as in [`Parked::ALL`]).
    pub watts: [f64; 2],
    /// Output tokens/s asked for.
    pub demand: f64,
    /// Output tokens/s served within the latency targets.
    pub served: f64,
}

/// One step: `world` are the true nodes. A deployment's demand is split over its replicas by
/// their capacity at the target; a replica then takes `carried / capacity` of its node's
/// compute. Where a node's replicas take more than all of it, each gets its share of the node
/// (served tokens scaled down alike; the rest is not served within the target). A node that
/// hosts anything draws its idle watts plus each replica's `(watts(b) - idle)` times the
/// compute it gets, at most its busy watts; one that hosts nothing draws its parked watts.
pub fn account(world: &[Node], deps: &[Deployment], placements: &[Current]) -> Step {
    let by_name: BTreeMap<&str, &Node> = world.iter().map(|n| (n.name.as_str(), n)).collect();
    // Per replica: (node, operating point, the compute it asks of its node).
    let mut replicas: Vec<(&Node, OperatingPoint, f64)> = Vec::new();
    let mut step = Step::default();
    for d in deps {
        step.demand += d.demand_tokens_per_s;
        let ours: Vec<(&Node, OperatingPoint)> = placements
            .iter()
            .filter(|c| c.deployment == d.name)
            .filter_map(|c| by_name.get(c.node.as_str()).copied())
            .filter_map(|n| point(n, d).map(|op| (n, op)))
            .collect();
        let capacity: f64 = ours.iter().map(|(_, op)| op.tokens_per_s).sum();
        if capacity <= 0.0 {
            continue;
        }
        let utilisation = d.demand_tokens_per_s.min(capacity) / capacity;
        replicas.extend(ours.into_iter().map(|(n, op)| (n, op, utilisation)));
    }
    let mut asked: BTreeMap<&str, f64> = BTreeMap::new();
    for (n, _, u) in &replicas {
        *asked.entry(n.name.as_str()).or_default() += u;
    }
    let mut dynamic: BTreeMap<&str, f64> = BTreeMap::new();
    for (n, op, u) in &replicas {
        let total = asked.get(n.name.as_str()).copied().unwrap_or(0.0);
        let got = if total > 1.0 { u / total } else { *u };
        step.served += op.tokens_per_s * got;
        *dynamic.entry(n.name.as_str()).or_default() += (op.watts - n.idle_watts).max(0.0) * got;
    }
    let hosting: BTreeSet<&str> = placements.iter().map(|c| c.node.as_str()).collect();
    for n in world {
        for (parked, watts) in Parked::ALL.iter().zip(&mut step.watts) {
            *watts += if hosting.contains(n.name.as_str()) {
                let busy = n.busy_watts.max(n.idle_watts);
                (n.idle_watts + dynamic.get(n.name.as_str()).copied().unwrap_or(0.0)).min(busy)
            } else {
                parked.watts(n)
            };
        }
    }
    step
}
