//! Table tests of the routing function.

use super::*;

/// A node decoding at `tps1` tokens/s alone, scaling sub-linearly, between `idle` and `busy` W.
fn curve(tps1: f64, idle: f64, busy: f64) -> Vec<Point> {
    [1u32, 2, 4, 8, 16]
        .iter()
        .map(|&b| {
            let f = f64::from(b);
            Point {
                batch: b,
                tokens_per_s: f * tps1 / (1.0 + (f - 1.0) / 16.0),
                watts: idle + (busy - idle) * (f / 8.0).min(1.0),
            }
        })
        .collect()
}

fn cand(node: &str, tps1: f64, idle: f64, busy: f64, running: u32) -> Candidate {
    Candidate {
        node: node.into(),
        curve: curve(tps1, idle, busy),
        idle_watts: idle,
        running,
        waiting: 0,
        fallback: false,
    }
}

fn chosen<'a>(c: &'a [Candidate], d: &Decision) -> &'a str {
    &c[d.chosen.expect("a replica")].node
}

#[test]
fn interpolates_between_points_and_saturates_past_the_last() {
    let c = vec![
        Point {
            batch: 4,
            tokens_per_s: 40.0,
            watts: 100.0,
        },
        Point {
            batch: 1,
            tokens_per_s: 10.0,
            watts: 50.0,
        },
    ];
    assert_eq!(at(&c, 30.0, 0), Some((0.0, 30.0)));
    assert_eq!(at(&c, 30.0, 1), Some((10.0, 50.0)));
    let (t, w) = at(&c, 30.0, 2).unwrap();
    assert!((t - 20.0).abs() < 1e-9 && (w - 50.0 - 50.0 / 3.0).abs() < 1e-9);
    assert_eq!(at(&c, 30.0, 9), Some((40.0, 100.0)));
    // Unusable points are ignored; a curve without usable points has no figures.
    let bad = vec![
        Point {
            batch: 0,
            tokens_per_s: 5.0,
            watts: 1.0,
        },
        Point {
            batch: 2,
            tokens_per_s: f64::NAN,
            watts: 1.0,
        },
    ];
    assert_eq!(at(&bad, 30.0, 1), None);
    let s = score(
        &Candidate {
            curve: bad,
            ..cand("x", 1.0, 1.0, 2.0, 0)
        },
        &Ask::default(),
    );
    assert!(!s.meets_target && s.joules_per_token.is_infinite());
}

#[test]
fn energy_picks_the_cheapest_marginal_joules_and_explains_it() {
    // Same speed; b is a third of a's power.
    let c = vec![
        cand("a", 20.0, 60.0, 240.0, 0),
        cand("b", 20.0, 20.0, 80.0, 0),
    ];
    let d = route(&c, &Ask::default(), Policy::Energy);
    assert_eq!(chosen(&c, &d), "b");
    assert_eq!(d.why, Some(Why::Cheapest));
    assert_eq!(d.scores.len(), 2);
    let text = d.to_string();
    assert!(text.contains("a b=1") && text.contains("J/tok"), "{text}");
}

#[test]
fn a_busy_node_is_cheaper_to_join_than_waking_an_idle_one() {
    // Identical nodes: the one already decoding costs only its marginal watts.
    let c = vec![
        cand("idle", 20.0, 40.0, 120.0, 0),
        cand("busy", 20.0, 40.0, 120.0, 3),
    ];
    let d = route(&c, &Ask::default(), Policy::Energy);
    assert_eq!(chosen(&c, &d), "busy");
    let s = &d.scores;
    let idle = s.iter().find(|x| x.node == "idle").unwrap();
    let busy = s.iter().find(|x| x.node == "busy").unwrap();
    assert!(busy.joules_per_token < idle.joules_per_token / 2.0, "{d}");
}

#[test]
fn the_latency_target_caps_how_much_lands_on_the_cheap_node() {
    let cheap = |running| cand("cheap", 20.0, 20.0, 80.0, running);
    let dear = cand("dear", 20.0, 60.0, 240.0, 0);
    // The cheap node's ITL at batch b is 50 · (1 + (b - 1) / 16) ms: a 60 ms target holds up
    // to batch 4.
    let ask = Ask {
        itl_ms: Some(60.0),
        ..Default::default()
    };
    let mut landed = Vec::new();
    for running in 0..16 {
        let c = vec![cheap(running), dear.clone()];
        let d = route(&c, &ask, Policy::Energy);
        landed.push(chosen(&c, &d).to_string());
    }
    let on_cheap = landed.iter().take_while(|n| *n == "cheap").count();
    assert_eq!(on_cheap, 4, "{landed:?}");
    // Past the cheap node's capacity at the target, requests go to the other node.
    assert_eq!(landed[on_cheap], "dear");
    // Every decision on the cheap node met the target.
    for running in 0..on_cheap as u32 {
        let s = score(&cheap(running), &ask);
        assert!(s.itl_ms <= 60.0, "{s:?}");
    }
}

#[test]
fn when_no_replica_meets_the_target_load_spreads_instead_of_piling_up() {
    let ask = Ask {
        itl_ms: Some(1.0),
        ..Default::default()
    };
    let c = vec![
        cand("a", 20.0, 20.0, 80.0, 5),
        cand("b", 20.0, 60.0, 240.0, 1),
    ];
    let d = route(&c, &ask, Policy::Energy);
    assert_eq!(d.why, Some(Why::NoneMeetsTarget));
    assert_eq!(chosen(&c, &d), "b", "the less loaded one: {d}");
}

#[test]
fn prefix_affinity_wins_while_it_costs_little() {
    let near = cand("near", 20.0, 20.0, 82.0, 2);
    let best = cand("best", 20.0, 20.0, 80.0, 2);
    let far = cand("far", 20.0, 60.0, 400.0, 2);
    let ask = |aff: &str| Ask {
        affinity: Some(aff.into()),
        ..Default::default()
    };
    let c = vec![best.clone(), near.clone(), far.clone()];
    let d = route(&c, &ask("near"), Policy::Energy);
    assert_eq!((chosen(&c, &d), d.why), ("near", Some(Why::Affinity)));
    // Too expensive: the hint is ignored.
    let d = route(&c, &ask("far"), Policy::Energy);
    assert_eq!((chosen(&c, &d), d.why), ("best", Some(Why::Cheapest)));
    // A hint for a replica that misses the target is ignored too.
    let slow = Candidate {
        running: 15,
        ..near
    };
    let c = vec![best, slow];
    let d = route(
        &c,
        &Ask {
            itl_ms: Some(80.0),
            ..ask("near")
        },
        Policy::Energy,
    );
    assert_eq!(chosen(&c, &d), "best");
}

#[test]
fn excluded_replicas_are_never_chosen_and_fallbacks_only_when_alone() {
    let mut retiring = cand("old", 20.0, 1.0, 2.0, 0);
    retiring.fallback = true;
    let c = vec![retiring, cand("new", 20.0, 60.0, 240.0, 0)];
    for p in [Policy::Energy, Policy::LeastLoaded, Policy::RoundRobin] {
        for tick in 0..4 {
            let d = route(
                &c,
                &Ask {
                    tick,
                    ..Default::default()
                },
                p,
            );
            assert_eq!(chosen(&c, &d), "new", "{p:?}");
            let ex = Ask {
                tick,
                exclude: vec!["new".into()],
                ..Default::default()
            };
            assert_eq!(chosen(&c, &route(&c, &ex, p)), "old", "{p:?}");
            let none = Ask {
                exclude: vec!["new".into(), "old".into()],
                ..Default::default()
            };
            assert_eq!(route(&c, &none, p).chosen, None);
        }
    }
    assert_eq!(route(&[], &Ask::default(), Policy::Energy).chosen, None);
}

#[test]
fn baselines_rotate_and_balance() {
    let c = vec![
        cand("a", 20.0, 20.0, 80.0, 0),
        cand("b", 20.0, 20.0, 80.0, 0),
        cand("c", 20.0, 20.0, 80.0, 0),
    ];
    let rr: Vec<&str> = (0..6)
        .map(|tick| {
            chosen(
                &c,
                &route(
                    &c,
                    &Ask {
                        tick,
                        ..Default::default()
                    },
                    Policy::RoundRobin,
                ),
            )
        })
        .collect();
    assert_eq!(rr, ["a", "b", "c", "a", "b", "c"]);
    let mut loaded = c.clone();
    loaded[0].running = 4;
    loaded[1].running = 1;
    loaded[2].running = 2;
    for tick in 0..3 {
        let d = route(
            &loaded,
            &Ask {
                tick,
                ..Default::default()
            },
            Policy::LeastLoaded,
        );
        assert_eq!(chosen(&loaded, &d), "b");
    }
    // Ties rotate with the tick.
    let ties: Vec<&str> = (0..3)
        .map(|tick| {
            chosen(
                &c,
                &route(
                    &c,
                    &Ask {
                        tick,
                        ..Default::default()
                    },
                    Policy::LeastLoaded,
                ),
            )
        })
        .collect();
    assert_eq!(ties, ["a", "b", "c"]);
}

#[test]
fn the_same_input_in_any_order_gives_the_same_choice() {
    let c = vec![
        cand("a", 20.0, 30.0, 90.0, 1),
        cand("b", 25.0, 40.0, 100.0, 3),
        cand("c", 15.0, 10.0, 60.0, 0),
    ];
    let ask = Ask {
        itl_ms: Some(200.0),
        tick: 7,
        ..Default::default()
    };
    let want = chosen(&c, &route(&c, &ask, Policy::Energy)).to_string();
    let mut r = c.clone();
    r.reverse();
    assert_eq!(chosen(&r, &route(&r, &ask, Policy::Energy)), want);
}

#[test]
fn ttft_counts_the_queue_and_the_prompt() {
    let mut c = cand("a", 20.0, 20.0, 80.0, 1);
    let short = score(
        &c,
        &Ask {
            prompt_tokens: 10,
            ..Default::default()
        },
    );
    let long = score(
        &c,
        &Ask {
            prompt_tokens: 2000,
            ..Default::default()
        },
    );
    assert!(long.ttft_ms > short.ttft_ms + 1000.0, "{short:?} {long:?}");
    c.waiting = 8;
    let queued = score(
        &c,
        &Ask {
            prompt_tokens: 10,
            ..Default::default()
        },
    );
    assert!(queued.ttft_ms > 2.0 * short.ttft_ms, "{short:?} {queued:?}");
    let ask = Ask {
        ttft_ms: Some(short.ttft_ms * 2.0),
        prompt_tokens: 10,
        ..Default::default()
    };
    assert!(!score(&c, &ask).meets_target);
}
