//! Property tests: random small fleets (from the classes in `fleet.json`), deployments and
//! placements in force.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::placement::fleet::{self, Fleet, ModelShape};
use crate::placement::{
    Current, Deployment, Health, Input, Node, Options, Plan, Point, Profile, Replicas, Schedule,
    Source, place,
};

#[derive(Debug, Clone)]
struct NodeSpec {
    class: usize,
    ready: bool,
    schedule: u8,
    rack: u8,
    memory: u8,
    /// Bit `i`: a measured profile of model `i`.
    profiles: u8,
}

#[derive(Debug, Clone)]
struct DepSpec {
    model: usize,
    auto: bool,
    a: u32,
    b: u32,
    selector: u8,
    target: u8,
    priority: i32,
    demand: u8,
    /// Bit `i`: node `n{i}` is excluded.
    excluded: u8,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        0usize..10,
        prop::bool::weighted(0.85),
        0u8..4,
        0u8..3,
        0u8..3,
        any::<u8>(),
    )
        .prop_map(
            |(class, ready, schedule, rack, memory, profiles)| NodeSpec {
                class,
                ready,
                schedule,
                rack,
                memory,
                profiles,
            },
        )
}

fn dep_spec() -> impl Strategy<Value = DepSpec> {
    (
        0usize..5,
        any::<bool>(),
        0u32..4,
        0u32..5,
        0u8..4,
        0u8..4,
        -1i32..2,
        0u8..4,
        prop_oneof![3 => Just(0u8), 1 => any::<u8>()],
    )
        .prop_map(
            |(model, auto, a, b, selector, target, priority, demand, excluded)| DepSpec {
                model,
                auto,
                a,
                b,
                selector,
                target,
                priority,
                demand,
                excluded,
            },
        )
}

fn build(f: &Fleet, nodes: &[NodeSpec], deps: &[DepSpec], current: &[(usize, usize)]) -> Input {
    let nodes = nodes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let class = &f.classes[s.class % f.classes.len()];
            let measured: Vec<&ModelShape> = f
                .models
                .iter()
                .enumerate()
                .filter(|(m, _)| s.profiles & (1 << m) != 0)
                .map(|(_, m)| m)
                .collect();
            let mut n = fleet::node(class, &format!("n{i}"), &measured);
            n.labels.insert("rack".to_owned(), format!("r{}", s.rack));
            n.health = if s.ready {
                Health::Ready
            } else {
                Health::Unreachable
            };
            n.schedule = match s.schedule {
                2 => Schedule::Cordoned,
                3 => Schedule::Draining,
                _ => Schedule::Active,
            };
            let share = [1.0, 0.25, 0.05][usize::from(s.memory % 3)];
            n.memory_bytes = (n.memory_bytes as f64 * share) as u64;
            n
        })
        .collect();
    let deployments = deps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let replicas = if s.auto {
                Replicas::Auto { min: s.a, max: s.b }
            } else {
                Replicas::Fixed(s.a)
            };
            let mut d = f.models[s.model % f.models.len()].deployment(&format!("d{i}"), replicas);
            d.selector = match s.selector {
                2 => BTreeMap::from([("rack".to_owned(), "r0".to_owned())]),
                3 => BTreeMap::from([("gpu".to_owned(), "p40".to_owned())]),
                _ => BTreeMap::new(),
            };
            d.max_itl_ms = [None, Some(15.0), Some(50.0), Some(200.0)][usize::from(s.target % 4)];
            d.priority = s.priority;
            d.demand_tokens_per_s = [0.0, 10.0, 300.0, 5000.0][usize::from(s.demand % 4)];
            for n in (0..8).filter(|&n| s.excluded & (1u8 << n) != 0) {
                d.excluded
                    .insert(format!("n{n}"), "load failed; backing off".to_owned());
            }
            d
        })
        .collect();
    let current = current
        .iter()
        .map(|(d, n)| Current {
            deployment: format!("d{d}"),
            node: format!("n{n}"),
        })
        .collect();
    Input {
        nodes,
        deployments,
        current,
    }
}

/// Memory, compute, health, schedule, exclusions, selector and one-replica-per-node hold for
/// every placement.
fn check(input: &Input, plan: &Plan, opts: &Options) -> Result<(), TestCaseError> {
    let nodes: BTreeMap<&str, &Node> = input.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let deps: BTreeMap<&str, &Deployment> = input
        .deployments
        .iter()
        .map(|d| (d.name.as_str(), d))
        .collect();
    let running: BTreeSet<(&str, &str)> = input
        .current
        .iter()
        .map(|c| (c.deployment.as_str(), c.node.as_str()))
        .collect();
    let mut used: BTreeMap<&str, u128> = BTreeMap::new();
    let mut busy: BTreeMap<&str, f64> = BTreeMap::new();
    let mut over: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for o in &plan.outcomes {
        let d = deps[o.deployment.as_str()];
        // Each replica's share of the demand, with the count the plan gives (top-ups
        // included), and the part of its node's compute that share takes.
        let count = o.placed.len() as f64 + f64::from(o.pending);
        let share = wanted(d, opts) / count.max(1.0);
        let mut seen = BTreeSet::new();
        for p in &o.placed {
            let node = nodes[p.node.as_str()];
            prop_assert!(
                seen.insert(p.node.as_str()),
                "{} twice on {}",
                d.name,
                p.node
            );
            prop_assert_eq!(node.health, Health::Ready);
            prop_assert!(
                node.schedule != Schedule::Draining,
                "{} on draining {}",
                d.name,
                p.node
            );
            let was_running = running.contains(&(d.name.as_str(), p.node.as_str()));
            prop_assert_eq!(p.kept, was_running);
            if node.schedule == Schedule::Cordoned {
                prop_assert!(was_running, "{} newly on cordoned {}", d.name, p.node);
            }
            prop_assert!(
                !d.excluded.contains_key(&p.node),
                "{} on excluded {}",
                d.name,
                p.node
            );
            for (key, value) in &d.selector {
                prop_assert_eq!(node.labels.get(key), Some(value));
            }
            // Sizes past u64 saturate, as in `place`; no model is 16 EiB.
            let need = u128::from(d.weights_bytes.saturating_add(d.kv_bytes));
            *used.entry(node.name.as_str()).or_default() += need;
            prop_assert!(
                p.tokens_per_s.is_finite() && p.tokens_per_s > 0.0,
                "{} on {}: capacity {}",
                d.name,
                p.node,
                p.tokens_per_s
            );
            *busy.entry(node.name.as_str()).or_default() += (share / p.tokens_per_s).min(1.0);
            if p.reason.contains("over capacity") {
                over.insert(node.name.as_str());
            }
        }
    }
    for (name, bytes) in used {
        prop_assert!(
            bytes <= u128::from(nodes[name].memory_bytes),
            "{name} over its memory"
        );
    }
    // Past its capacity only where a replica asked for found no node with compute to spare,
    // and its reason says so.
    for (name, util) in busy {
        prop_assert!(
            util <= 1.0 + 1e-6 || over.contains(name),
            "{name} at {util} of its capacity"
        );
    }
    Ok(())
}

/// The demand a deployment's replicas share, as documented for `place`: its demand where
/// finite and positive, and at least the nominal demand.
fn wanted(d: &Deployment, opts: &Options) -> f64 {
    let demand = d.demand_tokens_per_s;
    let demand = if demand.is_finite() && demand > 0.0 {
        demand
    } else {
        0.0
    };
    let nominal = opts.nominal_demand_tokens_per_s;
    let nominal = if nominal.is_finite() && nominal > 0.0 {
        nominal
    } else {
        Options::default().nominal_demand_tokens_per_s
    };
    demand.max(nominal)
}

/// A vector, and its indices in a random order.
fn with_order<T: Clone + std::fmt::Debug>(
    items: impl Strategy<Value = Vec<T>>,
) -> impl Strategy<Value = (Vec<T>, Vec<usize>)> {
    items.prop_flat_map(|v| {
        let order: Vec<usize> = (0..v.len()).collect();
        (Just(v), Just(order).prop_shuffle())
    })
}

fn reorder<T: Clone>(items: &[T], order: &[usize]) -> Vec<T> {
    order.iter().map(|&i| items[i].clone()).collect()
}

/// The first node and the first deployment of each name, in input order.
fn unique(input: &Input) -> Input {
    let mut names = BTreeSet::new();
    let nodes = input
        .nodes
        .iter()
        .filter(|n| names.insert(n.name.clone()))
        .cloned()
        .collect();
    let mut names = BTreeSet::new();
    let deployments = input
        .deployments
        .iter()
        .filter(|d| names.insert(d.name.clone()))
        .cloned()
        .collect();
    Input {
        nodes,
        deployments,
        current: input.current.clone(),
    }
}

fn odd() -> impl Strategy<Value = f64> {
    prop::sample::select(vec![
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1.0,
        0.0,
        1e-300,
        0.5,
        50.0,
        400.0,
        1e300,
    ])
}

fn odd_bytes() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1u64 << 30), Just(u64::MAX), any::<u64>()]
}

fn odd_node() -> impl Strategy<Value = Node> {
    let points = prop::collection::vec((0u32..40, odd(), odd()), 0..4);
    (
        0u8..3,
        0u8..3,
        (odd(), odd(), odd()),
        odd_bytes(),
        points,
        0u8..3,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(name, class, (bw, idle, busy), memory, points, schedule, ready, measured)| {
                let points = points
                    .into_iter()
                    .map(|(batch, tokens_per_s, watts)| Point {
                        batch,
                        tokens_per_s,
                        watts,
                    })
                    .collect();
                let source = if measured {
                    Source::Measured
                } else {
                    Source::Estimated
                };
                let profile = Profile {
                    points,
                    source,
                    note: String::new(),
                };
                Node {
                    name: format!("n{name}"),
                    class: format!("c{class}"),
                    labels: BTreeMap::from([("gpu".to_owned(), "p40".to_owned())]),
                    health: if ready {
                        Health::Ready
                    } else {
                        Health::Unreachable
                    },
                    schedule: [Schedule::Active, Schedule::Cordoned, Schedule::Draining]
                        [usize::from(schedule % 3)],
                    memory_bytes: memory,
                    mem_bandwidth_gbs: bw,
                    idle_watts: idle,
                    busy_watts: busy,
                    profiles: BTreeMap::from([(format!("m{}", name % 2), profile)]),
                }
            },
        )
}

fn odd_count() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![0u32, 1, 3, u32::MAX])
}

fn odd_deployment() -> impl Strategy<Value = Deployment> {
    let replicas = prop_oneof![
        odd_count().prop_map(Replicas::Fixed),
        (odd_count(), odd_count()).prop_map(|(min, max)| Replicas::Auto { min, max }),
    ];
    let target = prop_oneof![Just(None), odd().prop_map(Some)];
    (
        0u8..3,
        0u8..3,
        (odd_bytes(), odd_bytes()),
        replicas,
        target,
        odd(),
        any::<i32>(),
        any::<bool>(),
        prop::option::of(0u8..3),
    )
        .prop_map(
            |(
                name,
                model,
                (weights_bytes, kv_bytes),
                replicas,
                max_itl_ms,
                demand,
                priority,
                sel,
                excluded,
            )| {
                Deployment {
                    name: format!("d{name}"),
                    model: format!("m{model}"),
                    weights_bytes,
                    kv_bytes,
                    replicas,
                    selector: if sel {
                        BTreeMap::from([("gpu".to_owned(), "p40".to_owned())])
                    } else {
                        BTreeMap::new()
                    },
                    max_itl_ms,
                    priority,
                    demand_tokens_per_s: demand,
                    excluded: excluded
                        .map(|n| (format!("n{n}"), "backing off".to_owned()))
                        .into_iter()
                        .collect(),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn placements_keep_the_hard_rules_and_are_idempotent(
        (nodes, node_order) in with_order(prop::collection::vec(node_spec(), 0..8)),
        (deps, dep_order) in with_order(prop::collection::vec(dep_spec(), 0..5)),
        (current, current_order) in
            with_order(prop::collection::vec((0usize..6, 0usize..9), 0..12)),
        churn_threshold in prop::sample::select(vec![0.0, 0.25, 0.9]),
    ) {
        let f = fleet::load(fleet::FLEET_JSON).map_err(TestCaseError::fail)?;
        let input = build(&f, &nodes, &deps, &current);
        let opts = Options { churn_threshold, ..Options::default() };
        let plan = place(&input, &opts);
        prop_assert!(plan.converged, "no fixed point in {} rounds", plan.rounds);
        check(&input, &plan, &opts)?;
        let again_input = Input { current: plan.as_current(), ..input.clone() };
        let again = place(&again_input, &opts);
        prop_assert!(again.converged);
        check(&again_input, &again, &opts)?;
        for o in &plan.outcomes {
            prop_assert_eq!(again.nodes_of(&o.deployment), plan.nodes_of(&o.deployment));
        }
        let shuffled = Input {
            nodes: reorder(&input.nodes, &node_order),
            deployments: reorder(&input.deployments, &dep_order),
            current: reorder(&input.current, &current_order),
        };
        prop_assert_eq!(place(&shuffled, &opts), plan);
    }

    /// From a plan in force, some of the nodes hosting replicas are cordoned, drained or lost:
    /// a cordoned node keeps its replicas unless their deployment itself lets one go (fewer
    /// replicas wanted, or a cheaper node past the churn threshold), never for the cordon; a
    /// draining or unreachable node keeps nothing.
    #[test]
    fn cordoned_nodes_keep_their_replicas_and_drained_ones_none(
        nodes in prop::collection::vec(node_spec(), 1..8),
        deps in prop::collection::vec(dep_spec(), 1..5),
        actions in prop::collection::vec(0u8..4, 8),
        churn_threshold in prop::sample::select(vec![0.0, 0.25, 0.9]),
    ) {
        let f = fleet::load(fleet::FLEET_JSON).map_err(TestCaseError::fail)?;
        let first = build(&f, &nodes, &deps, &[]);
        let opts = Options { churn_threshold, ..Options::default() };
        let plan = place(&first, &opts);
        prop_assert!(plan.converged);
        let current = plan.as_current();
        let hosting: BTreeSet<String> = current.iter().map(|c| c.node.clone()).collect();
        let mut second = Input { current: current.clone(), ..first };
        for (n, action) in second.nodes.iter_mut().zip(&actions) {
            if !hosting.contains(&n.name) {
                continue;
            }
            match *action {
                1 => n.schedule = Schedule::Cordoned,
                2 => n.schedule = Schedule::Draining,
                3 => n.health = Health::Unreachable,
                _ => {}
            }
        }
        let after = place(&second, &opts);
        prop_assert!(after.converged);
        check(&second, &after, &opts)?;
        let by_name: BTreeMap<&str, &Node> =
            second.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        for c in &current {
            let node = by_name[c.node.as_str()];
            let o = after
                .outcome(&c.deployment)
                .ok_or_else(|| TestCaseError::fail("no outcome"))?;
            let there = o.placed.iter().find(|p| p.node == c.node);
            let gone = match (node.health, node.schedule) {
                (Health::Unreachable, _) => Some("unreachable"),
                (_, Schedule::Draining) => Some("draining"),
                _ => None,
            };
            if let Some(why) = gone {
                prop_assert!(there.is_none(), "{} kept on {} {why}", c.deployment, c.node);
                let skip = format!("{} skipped: {why}", c.node);
                prop_assert!(o.skipped.contains(&skip), "{:?}", o.skipped);
            } else if node.schedule == Schedule::Cordoned {
                match there {
                    Some(p) => prop_assert!(p.kept, "{}", p.reason),
                    None => {
                        let released = format!("{} released: ", c.node);
                        prop_assert!(
                            o.skipped.iter().any(|s| s.starts_with(&released)),
                            "{} dropped from cordoned {}: {:?}",
                            c.deployment,
                            c.node,
                            o.skipped
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn odd_figures_never_panic_and_stay_deterministic(
        nodes in prop::collection::vec(odd_node(), 0..6),
        deployments in prop::collection::vec(odd_deployment(), 0..4),
        current in prop::collection::vec((0u8..4, 0u8..4), 0..6),
        churn_threshold in odd(),
        nominal in odd(),
    ) {
        let current = current
            .iter()
            .map(|(d, n)| Current { deployment: format!("d{d}"), node: format!("n{n}") })
            .collect();
        let input = Input { nodes, deployments, current };
        let opts = Options { churn_threshold, nominal_demand_tokens_per_s: nominal, ..Options::default() };
        let plan = place(&input, &opts);
        let mut reversed = input.clone();
        reversed.nodes.reverse();
        reversed.deployments.reverse();
        prop_assert_eq!(format!("{:?}", place(&reversed, &opts)), format!("{plan:?}"));
        let again = Input { current: plan.as_current(), ..input.clone() };
        let _ = place(&again, &opts);
        // The hard rules, where names are unique (so that the check sees the node or the
        // deployment `place` kept of each name).
        let unique = unique(&input);
        let plan = place(&unique, &opts);
        check(&unique, &plan, &opts)?;
        let again = Input { current: plan.as_current(), ..unique };
        let placed = place(&again, &opts);
        check(&again, &placed, &opts)?;
    }
}
