//! Table-driven tests of `place` over fleets built from `testdata/fleet.json`: the hard
//! filters, exclusions, priorities, node saturation, reasons, determinism and idempotence
//! here; costs, churn, estimates and replica counts in `tests/cost.rs`; property tests in
//! `tests/properties.rs`.

mod cost;
mod properties;

use std::collections::BTreeMap;

use super::fleet::{self, Fleet, ModelShape};
use super::*;

const SMOL: &str = "SmolLM2-135M-Instruct-Q4_1";
const L8B: &str = "Llama-3.1-8B-Instruct-Q4_K_M";
const L1B: &str = "Llama-3.2-1B-Instruct-Q8_0";
const Q14B: &str = "Qwen2.5-14B-Instruct-Q4_K_M";
const L70B: &str = "Llama-3.1-70B-Instruct-Q4_K_M";
const GIB: u64 = 1 << 30;

fn data() -> Fleet {
    fleet::load(fleet::FLEET_JSON).expect("fleet.json loads")
}

fn model<'a>(f: &'a Fleet, name: &str) -> &'a ModelShape {
    f.model(name).expect("model in fleet.json")
}

/// A fleet's nodes with stand-in measured profiles of every model.
fn nodes(f: &Fleet, fleet: &str) -> Vec<Node> {
    let models: Vec<&ModelShape> = f.models.iter().collect();
    f.nodes(fleet, &models).expect("fleet in fleet.json")
}

fn only(nodes: Vec<Node>, names: &[&str]) -> Vec<Node> {
    nodes
        .into_iter()
        .filter(|n| names.contains(&n.name.as_str()))
        .collect()
}

fn node_mut<'a>(nodes: &'a mut [Node], name: &str) -> &'a mut Node {
    nodes.iter_mut().find(|n| n.name == name).expect("node")
}

fn input(nodes: Vec<Node>, deployments: Vec<Deployment>, current: &[(&str, &str)]) -> Input {
    let current = current
        .iter()
        .map(|(d, n)| Current {
            deployment: (*d).to_owned(),
            node: (*n).to_owned(),
        })
        .collect();
    Input {
        nodes,
        deployments,
        current,
    }
}

fn run(input: &Input) -> Plan {
    place(input, &Options::default())
}

fn outcome<'a>(plan: &'a Plan, deployment: &str) -> &'a Outcome {
    plan.outcome(deployment).expect("outcome")
}

fn decision<'a>(plan: &'a Plan, deployment: &str, node: &str) -> &'a Decision {
    let o = outcome(plan, deployment);
    o.placed.iter().find(|d| d.node == node).expect("decision")
}

fn skipped(plan: &Plan, deployment: &str, text: &str) -> bool {
    outcome(plan, deployment).skipped.iter().any(|s| s == text)
}

fn selector(key: &str, value: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(key.to_owned(), value.to_owned())])
}

/// The aggregate tokens/s of a deployment's placed replicas at their operating points.
fn capacity(plan: &Plan, deployment: &str) -> f64 {
    outcome(plan, deployment)
        .placed
        .iter()
        .map(|d| d.tokens_per_s)
        .sum()
}

#[test]
fn fleet_data_names_a_source_for_every_figure() {
    let f = data();
    assert_eq!(f.classes.len(), 10);
    assert!(f.classes.iter().all(|c| c.sources.len() >= 6));
    let mixed = nodes(&f, "mixed");
    assert_eq!(mixed.len(), 16);
    assert!(
        mixed
            .iter()
            .any(|n| n.name == "p40-4" && n.labels["gpu"] == "p40")
    );
    assert!(
        mixed
            .iter()
            .any(|n| n.name == "cpu2s-3" && n.labels["rack"] == "r4")
    );
    assert_eq!(nodes(&f, "cpu-only").len(), 4);
    assert!(f.nodes("no-such-fleet", &[]).is_err());
    let unsourced = fleet::FLEET_JSON.replacen(
        "\"busy_watts\": \"assumed: 75% of TDP\"",
        "\"busy_watts\": \"\"",
        1,
    );
    assert!(fleet::load(&unsourced).is_err_and(|e| e.contains("no source for busy_watts")));
}

#[test]
fn memory_fit_and_pending_reasons() {
    let f = data();
    let big = model(&f, L70B);
    let mut too_big = big.deployment("huge", Replicas::Fixed(1));
    too_big.weights_bytes = 300 * GIB;
    too_big.kv_bytes = 0;
    let cases: [(Deployment, &[&str], u32, &str); 3] = [
        (
            big.deployment("big", Replicas::Fixed(6)),
            &[
                "a100-80-1",
                "cpu1s-1",
                "cpu2s-1",
                "cpu2s-2",
                "cpu2s-3",
                "h100-1",
            ],
            0,
            "",
        ),
        (
            big.deployment("big", Replicas::Fixed(8)),
            &[
                "a100-80-1",
                "cpu1s-1",
                "cpu2s-1",
                "cpu2s-2",
                "cpu2s-3",
                "h100-1",
            ],
            2,
            "6 of 8 replicas placed: only 6 eligible nodes (p100-1 skipped: needs 49.6 GiB, 15.0 GiB free, ",
        ),
        (
            too_big,
            &[],
            1,
            "needs 300.0 GiB, the largest free is 240.0 GiB",
        ),
    ];
    for (d, want, pending, reason) in cases {
        let name = d.name.clone();
        let plan = run(&input(nodes(&f, "mixed"), vec![d], &[]));
        assert_eq!(plan.nodes_of(&name), want, "{name}");
        let o = outcome(&plan, &name);
        assert_eq!(o.pending, pending, "{name}");
        let got = o.pending_reason.as_deref().unwrap_or("");
        assert!(got.starts_with(reason), "{name}: {got}");
    }
    let plan = run(&input(
        nodes(&f, "mixed"),
        vec![big.deployment("big", Replicas::Fixed(6))],
        &[],
    ));
    assert!(skipped(
        &plan,
        "big",
        "p40-1 skipped: needs 49.6 GiB, 23.0 GiB free"
    ));
}

#[test]
fn selectors_and_anti_affinity() {
    let f = data();
    let m = model(&f, L8B);
    let cases: [(&str, &str, u32, &[&str], &str); 3] = [
        ("gpu", "p40", 2, &["p40-1", "p40-2"], ""),
        (
            "rack",
            "r2",
            4,
            &["t4-1", "t4-2", "v100-16-1", "v100-16-2"],
            "",
        ),
        (
            "gpu",
            "t4",
            3,
            &["t4-1", "t4-2"],
            "2 of 3 replicas placed: only 2 eligible nodes (a100-80-1 skipped: selector gpu=t4 not matched, cpu1s-1 skipped: selector gpu=t4 not matched, cpu2s-1 skipped: selector gpu=t4 not matched, and 11 more)",
        ),
    ];
    for (key, value, replicas, want, reason) in cases {
        let mut d = m.deployment("d", Replicas::Fixed(replicas));
        d.selector = selector(key, value);
        let plan = run(&input(nodes(&f, "mixed"), vec![d], &[]));
        assert_eq!(plan.nodes_of("d"), want, "{key}={value}");
        let got = outcome(&plan, "d").pending_reason.as_deref().unwrap_or("");
        assert_eq!(got, reason, "{key}={value}");
    }
    let mut d = m.deployment("d", Replicas::Fixed(1));
    d.selector = selector("gpu", "p40");
    let plan = run(&input(nodes(&f, "mixed"), vec![d], &[]));
    assert!(skipped(
        &plan,
        "d",
        "t4-1 skipped: selector gpu=p40 not matched"
    ));

    // One replica per node: three replicas on two nodes.
    let t4s = only(nodes(&f, "mixed"), &["t4-1", "t4-2"]);
    let plan = run(&input(
        t4s,
        vec![m.deployment("d", Replicas::Fixed(3))],
        &[],
    ));
    assert_eq!(plan.nodes_of("d"), ["t4-1", "t4-2"]);
    let o = outcome(&plan, "d");
    assert_eq!(o.pending, 1);
    assert_eq!(
        o.pending_reason.as_deref(),
        Some("2 of 3 replicas placed: only 2 eligible nodes (every node already hosts one)")
    );
}

#[test]
fn cordon_drain_and_unreachable() {
    let f = data();
    let d = model(&f, L8B).deployment("d", Replicas::Fixed(1));
    // Fresh, the lowest idle watts win: a T4.
    let plan = run(&input(nodes(&f, "mixed"), vec![d.clone()], &[]));
    assert_eq!(plan.nodes_of("d"), ["t4-1"]);
    let r = &decision(&plan, "d", "t4-1").reason;
    assert!(
        r.starts_with("t4-1: ") && r.contains(" tok/J at batch 32 (measured), "),
        "{r}"
    );
    assert!(r.contains(" GiB free"), "{r}");

    let running = [("d", "t4-1")];
    // (t4-1's schedule and health, running on t4-1, expected node, kept, skip)
    let cases = [
        (
            Schedule::Cordoned,
            Health::Ready,
            false,
            "t4-2",
            false,
            "t4-1 skipped: cordoned",
        ),
        (Schedule::Cordoned, Health::Ready, true, "t4-1", true, ""),
        (
            Schedule::Draining,
            Health::Ready,
            true,
            "t4-2",
            false,
            "t4-1 skipped: draining",
        ),
        (
            Schedule::Active,
            Health::Unreachable,
            true,
            "t4-2",
            false,
            "t4-1 skipped: unreachable",
        ),
    ];
    for (schedule, health, is_running, want, kept, skip) in cases {
        let mut fleet = nodes(&f, "mixed");
        let t4 = node_mut(&mut fleet, "t4-1");
        t4.schedule = schedule;
        t4.health = health;
        let current: &[(&str, &str)] = if is_running { &running } else { &[] };
        let plan = run(&input(fleet, vec![d.clone()], current));
        assert_eq!(plan.nodes_of("d"), [want], "{skip}");
        let got = decision(&plan, "d", want);
        assert_eq!(got.kept, kept, "{skip}");
        assert_eq!(
            got.reason.starts_with("kept: t4-1: "),
            kept,
            "{}",
            got.reason
        );
        if !skip.is_empty() {
            assert!(
                skipped(&plan, "d", skip),
                "{:?}",
                outcome(&plan, "d").skipped
            );
        }
        if is_running && !kept {
            assert!(got.reason.ends_with("; replaces t4-1"), "{}", got.reason);
        }
    }
}

fn mixed_input(f: &Fleet) -> Input {
    let mut chat = model(f, L8B).deployment("chat", Replicas::Fixed(2));
    chat.max_itl_ms = Some(50.0);
    chat.priority = 5;
    let mut small = model(f, L1B).deployment("small", Replicas::Auto { min: 1, max: 4 });
    small.demand_tokens_per_s = 3000.0;
    let mut coder = model(f, Q14B).deployment("coder", Replicas::Fixed(1));
    coder.selector = selector("rack", "r1");
    let deployments = vec![
        chat,
        small,
        coder,
        model(f, SMOL).deployment("tiny", Replicas::Fixed(1)),
        model(f, L70B).deployment("big", Replicas::Fixed(1)),
    ];
    let current = [
        ("chat", "p40-1"),
        ("big", "cpu2s-1"),
        ("gone", "t4-1"),
        ("tiny", "nowhere"),
    ];
    input(nodes(f, "mixed"), deployments, &current)
}

#[test]
fn same_input_in_any_order_gives_the_same_plan() {
    let f = data();
    let a = mixed_input(&f);
    let mut b = a.clone();
    b.nodes.reverse();
    b.deployments.rotate_left(2);
    b.current.reverse();
    let plan = run(&a);
    assert_eq!(plan, run(&b));
    let names: Vec<&str> = plan
        .outcomes
        .iter()
        .map(|o| o.deployment.as_str())
        .collect();
    assert_eq!(names, ["big", "chat", "coder", "small", "tiny"]);
}

#[test]
fn placing_a_plan_again_keeps_it() {
    let f = data();
    let a = mixed_input(&f);
    let plan = run(&a);
    let again = run(&Input {
        current: plan.as_current(),
        ..a
    });
    for o in &plan.outcomes {
        assert_eq!(again.nodes_of(&o.deployment), plan.nodes_of(&o.deployment));
        let kept = again.outcome(&o.deployment).expect("outcome");
        assert!(
            kept.placed
                .iter()
                .all(|d| d.kept && d.reason.starts_with("kept: "))
        );
    }
}

#[test]
fn bad_figures_are_skipped_with_a_reason() {
    let f = data();
    let mut fleet = only(nodes(&f, "mixed"), &["t4-1", "t4-2", "p40-1"]);
    node_mut(&mut fleet, "t4-1").idle_watts = f64::NAN;
    for p in node_mut(&mut fleet, "t4-2").profiles.values_mut() {
        p.points.iter_mut().for_each(|pt| pt.watts = 0.0);
    }
    let mut dup = fleet[0].clone();
    dup.memory_bytes = u64::MAX;
    fleet.push(dup);
    let deployments = vec![
        model(&f, L8B).deployment("d", Replicas::Fixed(3)),
        model(&f, L8B).deployment("none", Replicas::Fixed(0)),
    ];
    let plan = run(&input(fleet, deployments, &[("none", "p40-1"), ("d", "x")]));
    assert_eq!(plan.nodes_of("d"), ["p40-1"]);
    assert!(skipped(
        &plan,
        "d",
        "t4-1 skipped: idle_watts is NaN, not a usable figure"
    ));
    let no_points = "t4-2 skipped: no usable profile points";
    assert!(
        outcome(&plan, "d")
            .skipped
            .iter()
            .any(|s| s.starts_with(no_points))
    );
    assert!(plan.nodes_of("none").is_empty());
    assert_eq!(outcome(&plan, "none").pending, 0);
}

#[test]
fn excluded_nodes_are_skipped_with_the_callers_reason() {
    let f = data();
    let why = "load failed 2x (sha256 mismatch); backing off 20 s";
    let mut d = model(&f, L8B).deployment("d", Replicas::Fixed(1));
    d.excluded.insert("t4-1".to_owned(), why.to_owned());
    let skip = format!("t4-1 skipped: {why}");
    // (running on t4-1 now): t4-1 would be the cheapest; excluded, its twin takes the replica,
    // and a replica running on t4-1 is released rather than kept.
    for running in [false, true] {
        let current: &[(&str, &str)] = if running { &[("d", "t4-1")] } else { &[] };
        let plan = run(&input(nodes(&f, "mixed"), vec![d.clone()], current));
        assert!(plan.converged);
        assert_eq!(plan.nodes_of("d"), ["t4-2"], "running: {running}");
        let o = outcome(&plan, "d");
        assert!(skipped(&plan, "d", &skip), "{:?}", o.skipped);
        assert_eq!(o.pending, 0);
        let got = decision(&plan, "d", "t4-2");
        assert!(!got.kept, "{}", got.reason);
        assert_eq!(
            got.reason.ends_with("; replaces t4-1"),
            running,
            "{}",
            got.reason
        );
    }
}

#[test]
fn new_work_never_displaces_running_higher_priority_work() {
    let f = data();
    let mut hi = model(&f, L8B).deployment("hi", Replicas::Fixed(1));
    hi.priority = 5;
    hi.demand_tokens_per_s = 400.0;
    let mut lo = model(&f, L8B).deployment("lo", Replicas::Fixed(1));
    lo.priority = 1;
    let running = [("hi", "t4-1")];

    // One T4 holds one 8B replica (8.6 GiB of its 15): the running one stays, the new one waits.
    let one = only(nodes(&f, "mixed"), &["t4-1"]);
    let plan = run(&input(one, vec![hi.clone(), lo], &running));
    assert_eq!(plan.nodes_of("hi"), ["t4-1"]);
    assert!(decision(&plan, "hi", "t4-1").kept);
    let o = outcome(&plan, "lo");
    assert!(o.placed.is_empty());
    assert_eq!(o.pending, 1);
    assert_eq!(
        o.pending_reason.as_deref(),
        Some("needs 8.6 GiB, the largest free is 6.4 GiB")
    );

    // Compute as well as memory: a small model fits beside it, but 400 of the T4's 425 tok/s
    // are taken, so the new deployment goes to the other T4 instead of sharing the powered one.
    let mut small = model(&f, L1B).deployment("lo", Replicas::Fixed(1));
    small.priority = 1;
    small.demand_tokens_per_s = 200.0;
    let two = only(nodes(&f, "mixed"), &["t4-1", "t4-2"]);
    let plan = run(&input(two, vec![hi, small], &running));
    assert_eq!(plan.nodes_of("hi"), ["t4-1"]);
    assert_eq!(plan.nodes_of("lo"), ["t4-2"]);
    assert!(
        skipped(
            &plan,
            "lo",
            "t4-1 skipped: busy (94% of its capacity taken)"
        ),
        "{:?}",
        outcome(&plan, "lo").skipped
    );
}

#[test]
fn draining_with_no_alternative_leaves_the_replica_pending() {
    let f = data();
    let mut fleet = only(nodes(&f, "mixed"), &["t4-1"]);
    node_mut(&mut fleet, "t4-1").schedule = Schedule::Draining;
    let d = model(&f, L8B).deployment("d", Replicas::Fixed(1));
    let plan = run(&input(fleet, vec![d], &[("d", "t4-1")]));
    let o = outcome(&plan, "d");
    assert!(o.placed.is_empty());
    assert_eq!(o.pending, 1);
    assert_eq!(
        o.pending_reason.as_deref(),
        Some("no eligible node (t4-1 skipped: draining)")
    );
    assert!(skipped(&plan, "d", "t4-1 skipped: draining"));
}

#[test]
fn replicas_sharing_a_node_share_its_capacity() {
    let f = data();
    let m = model(&f, L8B);
    // Four 8B deployments of 150 tok/s each on the CPU fleet: a two-socket node does 204 tok/s
    // of 8B, so each takes 74% of one and no two share it; the fourth fills the one-socket
    // node (102 tok/s, all of it) and a fifth finds every node busy: it is placed over
    // capacity, where the most compute is left.
    let names = ["a", "b", "c", "e", "g"];
    let deployments: Vec<Deployment> = names
        .iter()
        .zip([4, 3, 2, 1, 0])
        .map(|(name, priority)| {
            let mut d = m.deployment(name, Replicas::Fixed(1));
            d.priority = priority;
            d.demand_tokens_per_s = 150.0;
            d
        })
        .collect();
    let plan = run(&input(nodes(&f, "cpu-only"), deployments, &[]));
    assert!(plan.converged);
    let want = [
        ("a", "cpu2s-1"),
        ("b", "cpu2s-2"),
        ("c", "cpu2s-3"),
        ("e", "cpu1s-1"),
    ];
    for (d, node) in want {
        assert_eq!(plan.nodes_of(d), [node], "{d}");
    }
    assert!(
        skipped(
            &plan,
            "b",
            "cpu2s-1 skipped: busy (74% of its capacity taken)"
        ),
        "{:?}",
        outcome(&plan, "b").skipped
    );
    // The fifth is asked for all the same: it goes to the least busy node, saying so.
    let o = outcome(&plan, "g");
    assert_eq!(o.pending, 0);
    assert_eq!(o.placed.len(), 1);
    let r = &o.placed[0].reason;
    assert!(r.contains("over capacity"), "{r}");
}

#[test]
fn cpu_only_old_gpus_and_big_gpus_fleets() {
    let f = data();
    let big = model(&f, L70B);
    let coder = model(&f, Q14B);
    let mut slow_big = big.deployment("d", Replicas::Fixed(1));
    slow_big.max_itl_ms = Some(50.0);
    let mut on_v100_32 = coder.deployment("d", Replicas::Fixed(1));
    on_v100_32.selector = selector("gpu", "v100-32");
    // (fleet, deployment, expected nodes, pending reason (a prefix), a skip)
    let cases: [(&str, Deployment, &[&str], &str, &str); 6] = [
        // 70B at 23.6 tok/s on two sockets covers the nominal 20 tok/s; one socket does not.
        (
            "cpu-only",
            big.deployment("d", Replicas::Fixed(1)),
            &["cpu2s-1"],
            "",
            "",
        ),
        (
            "cpu-only",
            slow_big,
            &[],
            "no eligible node (cpu1s-1 skipped: 922.3 ms/token at batch 1, target 50 ms, \
             cpu2s-1 skipped: 461.2 ms/token at batch 1, target 50 ms, ",
            "",
        ),
        // No old GPU holds 70B: the V100 32GB is the largest.
        (
            "old-gpus",
            big.deployment("d", Replicas::Fixed(1)),
            &[],
            "needs 49.6 GiB, the largest free is 31.0 GiB",
            "v100-32-1 skipped: needs 49.6 GiB, 31.0 GiB free",
        ),
        (
            "old-gpus",
            on_v100_32,
            &["v100-32-1"],
            "",
            "v100-16-1 skipped: selector gpu=v100-32 not matched",
        ),
        // The A100 40GB idles lowest of the big GPUs and holds 14B; 70B needs an 80 GB card.
        (
            "big-gpus",
            coder.deployment("d", Replicas::Fixed(1)),
            &["a100-40-1"],
            "",
            "",
        ),
        (
            "big-gpus",
            big.deployment("d", Replicas::Fixed(1)),
            &["a100-80-1"],
            "",
            "a100-40-1 skipped: needs 49.6 GiB, 39.0 GiB free",
        ),
    ];
    for (fleet, d, want, reason, skip) in cases {
        let plan = run(&input(nodes(&f, fleet), vec![d], &[]));
        assert_eq!(plan.nodes_of("d"), want, "{fleet}");
        let o = outcome(&plan, "d");
        assert_eq!(o.pending, u32::from(want.is_empty()), "{fleet}");
        let got = o.pending_reason.as_deref().unwrap_or("");
        assert!(got.starts_with(reason), "{fleet}: {got}");
        if !skip.is_empty() {
            assert!(skipped(&plan, "d", skip), "{fleet}: {:?}", o.skipped);
        }
    }

    // The V100 32GB holds an 8B and a 14B replica together (8.6 + 14.4 GiB of 31).
    let mut a = model(&f, L8B).deployment("a", Replicas::Fixed(1));
    a.selector = selector("gpu", "v100-32");
    let mut b = coder.deployment("b", Replicas::Fixed(1));
    b.selector = selector("gpu", "v100-32");
    let plan = run(&input(nodes(&f, "old-gpus"), vec![a, b], &[]));
    assert_eq!(plan.nodes_of("a"), ["v100-32-1"]);
    assert_eq!(plan.nodes_of("b"), ["v100-32-1"]);
    let last = &decision(&plan, "b", "v100-32-1").reason;
    assert!(last.contains(", 8.0 GiB free"), "{last}");
}
