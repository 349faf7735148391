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
    )
        .prop_map(
            |(model, auto, a, b, selector, target, priority, demand)| DepSpec {
                model,
                auto,
                a,
                b,
                selector,
                target,
                priority,
                demand,
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

/// Memory, health, schedule, selector and one-replica-per-node hold for every placement.
fn check(input: &Input, plan: &Plan) -> Result<(), TestCaseError> {
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
    for o in &plan.outcomes {
        let d = deps[o.deployment.as_str()];
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
            for (key, value) in &d.selector {
                prop_assert_eq!(node.labels.get(key), Some(value));
            }
            let need = u128::from(d.weights_bytes) + u128::from(d.kv_bytes);
            *used.entry(node.name.as_str()).or_default() += need;
        }
    }
    for (name, bytes) in used {
        prop_assert!(
            bytes <= u128::from(nodes[name].memory_bytes),
            "{name} over its memory"
        );
    }
    Ok(())
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
                    excluded: Default::default(),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn placements_keep_the_hard_rules_and_are_idempotent(
        nodes in prop::collection::vec(node_spec(), 0..8),
        deps in prop::collection::vec(dep_spec(), 0..5),
        current in prop::collection::vec((0usize..6, 0usize..9), 0..12),
        churn_threshold in prop::sample::select(vec![0.0, 0.25, 0.9]),
    ) {
        let f = fleet::load(fleet::FLEET_JSON).map_err(TestCaseError::fail)?;
        let input = build(&f, &nodes, &deps, &current);
        let opts = Options { churn_threshold, ..Options::default() };
        let plan = place(&input, &opts);
        check(&input, &plan)?;
        let again_input = Input { current: plan.as_current(), ..input.clone() };
        let again = place(&again_input, &opts);
        check(&again_input, &again)?;
        for o in &plan.outcomes {
            prop_assert_eq!(again.nodes_of(&o.deployment), plan.nodes_of(&o.deployment));
        }
        let mut shuffled = input.clone();
        shuffled.nodes.reverse();
        shuffled.deployments.reverse();
        shuffled.current.reverse();
        prop_assert_eq!(place(&shuffled, &opts), plan);
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
        let opts = Options { churn_threshold, nominal_demand_tokens_per_s: nominal };
        let plan = place(&input, &opts);
        let mut reversed = input.clone();
        reversed.nodes.reverse();
        reversed.deployments.reverse();
        prop_assert_eq!(format!("{:?}", place(&reversed, &opts)), format!("{plan:?}"));
        let again = Input { current: plan.as_current(), ..input };
        let _ = place(&again, &opts);
    }
}
