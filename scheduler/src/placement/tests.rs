//! Table-driven tests of `place` over fleets built from `testdata/fleet.json`: the hard
//! filters, reasons, determinism and idempotence here; costs, churn and estimates in
//! `tests/cost.rs`; property tests in `tests/properties.rs`.

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
            "6 of 8 replicas placed: only 6 eligible nodes (p100-1 skipped: needs 42.1 GiB, 15.0 GiB free, ",
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
        "p40-1 skipped: needs 42.1 GiB, 23.0 GiB free"
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
