//! Costs: churn threshold, estimated profiles, latency targets, idle watts, auto replicas
//! (counts judged by the capacity they place, not by a hard-coded number).

use super::{
    L8B, SMOL, capacity, data, decision, input, model, node_mut, nodes, only, outcome, run,
    selector, skipped,
};
use crate::placement::fleet;
use crate::placement::profile::operating_point;
use crate::placement::{Node, Options, Point, Profile, Replicas, Schedule, Source, place};

/// Two nodes with idle 0 and one point each, so that their joules per token are exactly
/// `watts / tokens_per_s`.
fn pair(watts_b: f64) -> Vec<Node> {
    let f = data();
    let t4 = f.class("Tesla T4").expect("class");
    ["a", "b"]
        .iter()
        .zip([100.0, watts_b])
        .map(|(name, watts)| {
            let mut n = fleet::node(t4, name, &[]);
            n.idle_watts = 0.0;
            let points = vec![Point {
                batch: 8,
                tokens_per_s: 400.0,
                watts,
            }];
            let p = Profile {
                points,
                source: Source::Measured,
                note: "measured".to_owned(),
            };
            n.profiles.insert(L8B.to_owned(), p);
            n
        })
        .collect()
}

#[test]
fn churn_threshold() {
    let f = data();
    let d = model(&f, L8B).deployment("d", Replicas::Fixed(1));
    // (b's watts against a's 100, threshold, running on, expected)
    let cases = [
        (90.0, 0.25, Some("a"), "a"),
        (80.0, 0.25, Some("a"), "a"),
        (70.0, 0.25, Some("a"), "b"),
        (50.0, 0.25, Some("a"), "b"),
        (90.0, 0.0, Some("a"), "b"),
        (50.0, 0.9, Some("a"), "a"),
        (90.0, 0.25, None, "b"),
    ];
    for (watts, churn_threshold, running, want) in cases {
        let current: Vec<(&str, &str)> = running.map(|n| ("d", n)).into_iter().collect();
        let opts = Options {
            churn_threshold,
            ..Options::default()
        };
        let plan = place(&input(pair(watts), vec![d.clone()], &current), &opts);
        assert_eq!(
            plan.nodes_of("d"),
            [want],
            "{watts} W, threshold {churn_threshold}"
        );
    }
}

#[test]
fn estimated_profiles_are_labelled_and_replaced_when_measured() {
    let f = data();
    let mut mixed = nodes(&f, "mixed");
    for n in &mut mixed {
        if n.name != "p40-1" {
            n.profiles.remove(L8B);
        }
    }
    let p40 = mixed.iter().find(|n| n.name == "p40-1").expect("p40-1");
    let reference = operating_point(&p40.profiles[L8B].points, None).expect("point");
    node_mut(&mut mixed, "p40-1").schedule = Schedule::Cordoned;
    let on = |ns: &[Node], gpu: &str| {
        let mut d = model(&f, L8B).deployment("d", Replicas::Fixed(1));
        d.selector = selector("gpu", gpu);
        run(&input(ns.to_vec(), vec![d], &[]))
    };

    let plan = on(&mixed, "p40");
    let got = decision(&plan, "d", "p40-2");
    assert_eq!(got.source, Source::Estimated);
    assert!(got.reason.contains("(estimated)"), "{}", got.reason);
    assert!(
        got.reason
            .ends_with("; estimated from p40-1 (same class Tesla P40)")
    );
    assert!((got.tokens_per_joule - reference.tokens_per_joule()).abs() < 1e-9);

    let plan = on(&mixed, "t4");
    let got = decision(&plan, "d", "t4-1");
    assert_eq!(got.source, Source::Estimated);
    let scaled = "estimated from p40-1 (Tesla P40), scaled by memory bandwidth 320/346 GB/s";
    assert!(got.reason.ends_with(scaled), "{}", got.reason);
    // At batch 32 the P40 is at its busy watts, so the T4 is at its own: 52.5 W.
    let want = reference.tokens_per_s * 320.0 / 346.0 / 52.5;
    assert!(
        (got.tokens_per_joule - want).abs() < 1e-9,
        "{}",
        got.tokens_per_joule
    );

    node_mut(&mut mixed, "p40-1").profiles.clear();
    let plan = on(&mixed, "t4");
    let got = decision(&plan, "d", "t4-1");
    assert!(
        got.reason
            .ends_with("estimated by roofline from 320 GB/s and 4.6 GiB of weights")
    );
    let tps = 0.6 * 320e9 / 4.92e9 * 32.0 / (1.0 + 31.0 / 16.0);
    assert!((got.tokens_per_joule - tps / 52.5).abs() < 1e-9);

    let t4 = f.class("Tesla T4").expect("class");
    let measured = fleet::synthetic_profile(t4, model(&f, L8B));
    node_mut(&mut mixed, "t4-1")
        .profiles
        .insert(L8B.to_owned(), measured);
    let plan = on(&mixed, "t4");
    let got = decision(&plan, "d", "t4-1");
    assert_eq!(got.source, Source::Measured);
    assert!(got.reason.contains("(measured)") && !got.reason.contains("estimated"));
}

#[test]
fn latency_target_sets_the_batch_and_skips_slow_nodes() {
    let f = data();
    let mut d = model(&f, L8B).deployment("d", Replicas::Fixed(16));
    d.max_itl_ms = Some(50.0);
    let plan = run(&input(nodes(&f, "mixed"), vec![d], &[]));
    let o = outcome(&plan, "d");
    assert_eq!(o.placed.len(), 12);
    assert!(skipped(
        &plan,
        "d",
        "cpu2s-1 skipped: 53.4 ms/token at batch 1, target 50 ms"
    ));
    assert!(skipped(
        &plan,
        "d",
        "cpu1s-1 skipped: 106.8 ms/token at batch 1, target 50 ms"
    ));
    // P40 at 8B: 45.9 ms at batch 16, 69.6 ms at 32; T4: 49.6 ms at 16.
    assert_eq!(decision(&plan, "d", "p40-1").batch, 16);
    assert_eq!(decision(&plan, "d", "t4-2").batch, 16);
    assert_eq!(decision(&plan, "d", "h100-1").batch, 32);
}

#[test]
fn idle_watts_decide_whether_to_power_a_node() {
    let f = data();
    let mut tiny = model(&f, SMOL).deployment("tiny", Replicas::Fixed(1));
    tiny.demand_tokens_per_s = 5.0;
    let mut heavy = model(&f, L8B).deployment("heavy", Replicas::Fixed(1));
    heavy.priority = 10;
    heavy.demand_tokens_per_s = 1000.0;
    let two = || only(nodes(&f, "mixed"), &["h100-1", "t4-1"]);
    // Alone, the tiny model takes the low-idle T4 rather than power up the H100.
    let plan = run(&input(two(), vec![tiny.clone()], &[]));
    assert_eq!(plan.nodes_of("tiny"), ["t4-1"]);
    let plan = run(&input(nodes(&f, "mixed"), vec![tiny.clone()], &[]));
    assert_eq!(plan.nodes_of("tiny"), ["t4-1"]);
    // Once the heavy deployment powers the H100 (the T4 cannot carry 1000 tok/s), the tiny
    // one joins it: its idle watts are paid already.
    let plan = run(&input(two(), vec![tiny, heavy], &[]));
    assert_eq!(plan.nodes_of("heavy"), ["h100-1"]);
    assert_eq!(plan.nodes_of("tiny"), ["h100-1"]);
}

#[test]
fn auto_replicas_cover_the_demand() {
    let f = data();
    let m = model(&f, L8B);
    // (fleet, latency target, demand, min, max). In `old-gpus` the best 8B node carries 1,196
    // tok/s at 50 ms, so 4,000 tok/s takes the three V100s and then T4s of 322 tok/s each.
    let cases = [
        ("mixed", 50.0, 6000.0, 1, 8),
        ("mixed", 50.0, 100.0, 1, 8),
        ("mixed", 50.0, 6000.0, 1, 2),
        ("old-gpus", 50.0, 4000.0, 1, 8),
        ("cpu-only", 200.0, 650.0, 1, 8),
    ];
    for (fleet, target, demand, min, max) in cases {
        let mut d = m.deployment("d", Replicas::Auto { min, max });
        d.max_itl_ms = Some(target);
        d.demand_tokens_per_s = demand;
        let plan = run(&input(nodes(&f, fleet), vec![d], &[]));
        let o = outcome(&plan, "d");
        let placed = u32::try_from(o.placed.len()).expect("count");
        let got = capacity(&plan, "d");
        assert_eq!(o.pending, 0, "{fleet} {demand} tok/s");
        assert!((min..=max).contains(&placed), "{fleet} {demand}: {placed}");
        // Enough replicas for the demand, unless `max` stops them.
        assert!(
            placed == max || got >= demand,
            "{fleet} {demand} tok/s: {placed} replicas carry {got:.0} tok/s"
        );
    }
    // One node carries 100 tok/s: one replica, not a replica per node.
    let mut d = m.deployment("d", Replicas::Auto { min: 1, max: 8 });
    d.demand_tokens_per_s = 100.0;
    let plan = run(&input(nodes(&f, "mixed"), vec![d], &[]));
    assert_eq!(plan.nodes_of("d").len(), 1);
    // No demand and `min: 0`: nothing placed.
    let mut d = m.deployment("d", Replicas::Auto { min: 0, max: 4 });
    d.demand_tokens_per_s = 0.0;
    let plan = run(&input(nodes(&f, "mixed"), vec![d], &[]));
    assert!(plan.nodes_of("d").is_empty());
}

#[test]
fn a_top_up_stays_put_when_placed_again() {
    let f = data();
    let mut d = model(&f, L8B).deployment("d", Replicas::Auto { min: 1, max: 8 });
    d.max_itl_ms = Some(50.0);
    d.demand_tokens_per_s = 4000.0;
    let fresh = input(nodes(&f, "old-gpus"), vec![d], &[]);
    let plan = run(&fresh);
    assert!(capacity(&plan, "d") >= 4000.0);
    let again = run(&crate::placement::Input {
        current: plan.as_current(),
        ..fresh
    });
    assert_eq!(again.nodes_of("d"), plan.nodes_of("d"));
    assert!(outcome(&again, "d").placed.iter().all(|p| p.kept));
    assert_eq!(again.rounds, 1);
}
