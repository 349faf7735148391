//! Tests of models, deployments, placements, tenants and usage through `StateMachine::apply`:
//! each command either changes the state as documented or changes nothing and says why.

use joule_proto::internal::v1 as pb;
use pb::command::Kind;

use super::StateMachine;

fn cmd(k: Kind) -> pb::Command {
    pb::Command { kind: Some(k) }
}

/// Applies at the next index; the state must be unchanged when it fails.
fn run(sm: &mut StateMachine, k: Kind) -> Result<(), String> {
    let before = sm.state().clone();
    let r = sm.apply(sm.applied() + 1, &cmd(k));
    if r.is_err() {
        assert_eq!(sm.state(), &before, "a refused command changed the state");
    }
    r
}

fn node(sm: &mut StateMachine, name: &str) {
    run(
        sm,
        Kind::RegisterNode(pb::RegisterNode {
            node: Some(pb::Node {
                name: name.into(),
                address: "127.0.0.1:1".into(),
                ..Default::default()
            }),
        }),
    )
    .unwrap();
}

fn model(name: &str) -> Kind {
    Kind::PutModel(pb::PutModel {
        model: Some(pb::Model {
            name: name.into(),
            source: format!("/models/{name}.gguf"),
            sha256: "0a".repeat(32),
            size_bytes: 1 << 30,
            created_at_ms: 5,
            ..Default::default()
        }),
    })
}

fn deployment(name: &str, model: &str, replicas: u32, at: i64) -> Kind {
    Kind::PutDeployment(pb::PutDeployment {
        deployment: Some(pb::Deployment {
            name: name.into(),
            model: model.into(),
            replicas,
            updated_at_ms: at,
            ..Default::default()
        }),
    })
}

fn place(d: &str, generation: u64, nodes: &[&str], at: i64) -> Kind {
    Kind::SetPlacements(pb::SetPlacements {
        deployment: d.into(),
        generation,
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        at_ms: at,
        ..Default::default()
    })
}

fn placed(sm: &StateMachine, d: &str) -> Vec<(String, i32, u64)> {
    sm.state()
        .placements
        .values()
        .filter(|p| p.deployment == d)
        .map(|p| (p.node.clone(), p.state, p.generation))
        .collect()
}

const PENDING: i32 = pb::PlacementState::Pending as i32;
const SERVING: i32 = pb::PlacementState::Serving as i32;

#[test]
fn models_deployments_and_placements_follow_their_rules() {
    let mut sm = StateMachine::default();
    for n in ["w1", "w2", "w3"] {
        node(&mut sm, n);
    }
    let e = run(&mut sm, deployment("chat", "qwen", 2, 10)).unwrap_err();
    assert!(
        e.starts_with("no model named") && e.contains("add the model first"),
        "{e}"
    );
    run(&mut sm, model("qwen")).unwrap();
    run(&mut sm, deployment("chat", "qwen", 2, 10)).unwrap();
    assert_eq!(sm.state().deployments["chat"].generation, 1);
    assert_eq!(sm.state().deployments["chat"].created_at_ms, 10);

    run(&mut sm, place("chat", 1, &["w1", "w2"], 20)).unwrap();
    assert_eq!(
        placed(&sm, "chat"),
        vec![("w1".into(), PENDING, 1), ("w2".into(), PENDING, 1)]
    );
    run(
        &mut sm,
        Kind::SetPlacementState(pb::SetPlacementState {
            deployment: "chat".into(),
            node: "w1".into(),
            state: SERVING,
            message: String::new(),
            at_ms: 30,
            progress: 1.0,
            ..Default::default()
        }),
    )
    .unwrap();

    // Refused: a third replica, an unknown worker, a worker named twice, a bad state.
    assert!(
        run(&mut sm, place("chat", 1, &["w1", "w2", "w3"], 40))
            .unwrap_err()
            .contains("asks for at most 2 replicas")
    );
    assert!(
        run(&mut sm, place("chat", 1, &["w9"], 40))
            .unwrap_err()
            .contains("no node named \"w9\"")
    );
    assert!(
        run(&mut sm, place("chat", 1, &["w1", "w1"], 40))
            .unwrap_err()
            .contains("named twice")
    );
    let e = run(
        &mut sm,
        Kind::SetPlacementState(pb::SetPlacementState {
            deployment: "chat".into(),
            node: "w3".into(),
            state: SERVING,
            ..Default::default()
        }),
    )
    .unwrap_err();
    assert!(e.contains("not placed on worker \"w3\""), "{e}");

    // A spec change bumps the generation; a decision made on the old one is stale.
    run(&mut sm, deployment("chat", "qwen", 3, 50)).unwrap();
    let d = &sm.state().deployments["chat"];
    assert_eq!(
        (d.generation, d.created_at_ms, d.updated_at_ms),
        (2, 10, 50)
    );
    run(&mut sm, deployment("chat", "qwen", 3, 55)).unwrap();
    assert_eq!(
        sm.state().deployments["chat"].generation,
        2,
        "no change, same generation"
    );
    assert!(
        run(&mut sm, place("chat", 1, &["w1"], 60))
            .unwrap_err()
            .contains("stale placement")
    );

    // A cordoned worker keeps what it runs but takes nothing new.
    run(
        &mut sm,
        Kind::SetNodeSchedule(pb::SetNodeSchedule {
            name: "w3".into(),
            schedule: pb::NodeSchedule::Cordoned as i32,
            at_ms: 55,
        }),
    )
    .unwrap();
    assert!(
        run(&mut sm, place("chat", 2, &["w1", "w3"], 60))
            .unwrap_err()
            .contains("cordoned or draining")
    );
    // Moving from w2 to nothing and keeping w1: w1 keeps its progress, w2's placement goes.
    run(&mut sm, place("chat", 2, &["w1"], 60)).unwrap();
    assert_eq!(placed(&sm, "chat"), vec![("w1".into(), SERVING, 2)]);

    // A model in use cannot go; a removed worker takes its placements with it.
    assert!(
        run(
            &mut sm,
            Kind::DeleteModel(pb::DeleteModel {
                name: "qwen".into()
            })
        )
        .unwrap_err()
        .contains("used by deployment(s) chat")
    );
    run(
        &mut sm,
        Kind::RemoveNode(pb::RemoveNode {
            name: "w1".into(),
            at_ms: 65,
        }),
    )
    .unwrap();
    assert!(placed(&sm, "chat").is_empty());
    run(&mut sm, place("chat", 2, &["w2"], 70)).unwrap();
    run(
        &mut sm,
        Kind::DeleteDeployment(pb::DeleteDeployment {
            name: "chat".into(),
            at_ms: 75,
        }),
    )
    .unwrap();
    assert!(
        sm.state().placements.is_empty(),
        "placements go with their deployment"
    );
    run(
        &mut sm,
        Kind::DeleteModel(pb::DeleteModel {
            name: "qwen".into(),
        }),
    )
    .unwrap();

    // Bad names and hashes never enter the state.
    assert!(run(&mut sm, deployment("Chat_1", "qwen", 1, 0)).is_err());
    let mut bad = model("m");
    if let Kind::PutModel(c) = &mut bad {
        c.model.as_mut().unwrap().sha256 = "xyz".into();
    }
    assert!(run(&mut sm, bad).unwrap_err().contains("SHA-256"));
}

#[test]
fn a_model_change_sends_placements_back_to_pending() {
    let mut sm = StateMachine::default();
    node(&mut sm, "w1");
    run(&mut sm, model("a")).unwrap();
    run(&mut sm, model("b")).unwrap();
    run(&mut sm, deployment("d", "a", 1, 0)).unwrap();
    run(&mut sm, place("d", 1, &["w1"], 1)).unwrap();
    run(
        &mut sm,
        Kind::SetPlacementState(pb::SetPlacementState {
            deployment: "d".into(),
            node: "w1".into(),
            state: SERVING,
            message: String::new(),
            at_ms: 2,
            progress: 1.0,
            ..Default::default()
        }),
    )
    .unwrap();
    run(&mut sm, deployment("d", "b", 1, 3)).unwrap();
    run(&mut sm, place("d", 2, &["w1"], 4)).unwrap();
    let p = &sm.state().placements["d/w1"];
    assert_eq!((p.model.as_str(), p.state, p.since_ms), ("b", PENDING, 4));
}

fn key(tenant: &str, id: &str, hash_byte: &str) -> Kind {
    Kind::AddApiKey(pb::AddApiKey {
        tenant: tenant.into(),
        key: Some(pb::ApiKey {
            id: id.into(),
            sha256: hash_byte.repeat(32),
            created_at_ms: 1,
            ..Default::default()
        }),
    })
}

fn tenant(name: &str, rpm: u32, at: i64) -> Kind {
    Kind::PutTenant(pb::PutTenant {
        tenant: Some(pb::Tenant {
            name: name.into(),
            quota: Some(pb::Quota {
                requests_per_minute: rpm,
                ..Default::default()
            }),
            created_at_ms: at,
            ..Default::default()
        }),
    })
}

#[test]
fn tenants_keep_their_keys_by_hash_and_a_key_belongs_to_one_tenant() {
    let mut sm = StateMachine::default();
    run(&mut sm, tenant("acme", 60, 1)).unwrap();
    run(&mut sm, tenant("globex", 60, 1)).unwrap();
    assert!(
        run(&mut sm, key("acme", "k1", "zz"))
            .unwrap_err()
            .contains("SHA-256")
    );
    run(&mut sm, key("acme", "k1", "ab")).unwrap();
    assert!(
        run(&mut sm, key("globex", "g1", "ab"))
            .unwrap_err()
            .contains("already in use")
    );
    assert!(
        run(&mut sm, key("acme", "k1", "cd"))
            .unwrap_err()
            .contains("already has a key \"k1\"")
    );
    assert!(
        run(&mut sm, key("nobody", "k", "ef"))
            .unwrap_err()
            .contains("no tenant named")
    );
    let hash = "ab".repeat(32);
    assert_eq!(
        super::tenants::tenant_of_key(sm.state(), &hash).map(|t| t.name.as_str()),
        Some("acme")
    );

    // Changing the quota keeps the keys and the creation time.
    run(&mut sm, tenant("acme", 600, 99)).unwrap();
    let t = &sm.state().tenants["acme"];
    assert_eq!((t.api_keys.len(), t.created_at_ms), (1, 1));
    assert_eq!(t.quota.as_ref().unwrap().requests_per_minute, 600);
    let mut with_key = tenant("acme", 1, 1);
    if let Kind::PutTenant(c) = &mut with_key {
        c.tenant
            .as_mut()
            .unwrap()
            .api_keys
            .push(pb::ApiKey::default());
    }
    assert!(run(&mut sm, with_key).unwrap_err().contains("AddApiKey"));

    run(
        &mut sm,
        Kind::RevokeApiKey(pb::RevokeApiKey {
            tenant: "acme".into(),
            id: "k1".into(),
        }),
    )
    .unwrap();
    assert!(super::tenants::tenant_of_key(sm.state(), &hash).is_none());
    assert!(
        run(
            &mut sm,
            Kind::RevokeApiKey(pb::RevokeApiKey {
                tenant: "acme".into(),
                id: "k1".into(),
            }),
        )
        .unwrap_err()
        .contains("has no key \"k1\"")
    );
}

fn usage(reporter: &str, seq: u64, records: &[(&str, &str, u32, u64, u64)]) -> Kind {
    Kind::RecordUsage(pb::RecordUsage {
        reporter: reporter.into(),
        sequence: seq,
        records: records
            .iter()
            .map(|(t, m, day, out, mj)| pb::UsageRecord {
                tenant: t.to_string(),
                model: m.to_string(),
                day: *day,
                counters: Some(pb::UsageCounters {
                    requests: 1,
                    output_tokens: *out,
                    measured_mj: *mj,
                    ..Default::default()
                }),
            })
            .collect(),
        ..Default::default()
    })
}

#[test]
fn a_usage_report_marks_its_keys_used_and_weights_are_bounded() {
    let mut sm = StateMachine::default();
    run(&mut sm, tenant("acme", 60, 1)).unwrap();
    run(&mut sm, key("acme", "jk-aaaaaaaa", "ab")).unwrap();
    let mut report = usage("gw-1", 1, &[("acme", "m", 20_000, 5, 0)]);
    if let Kind::RecordUsage(r) = &mut report {
        r.key_uses = vec![
            pb::KeyUse {
                tenant: "acme".into(),
                id: "jk-aaaaaaaa".into(),
                at_ms: 500,
            },
            // A key revoked meanwhile, and a tenant gone: nothing to mark, nothing refused.
            pb::KeyUse {
                tenant: "gone".into(),
                id: "jk-bbbbbbbb".into(),
                at_ms: 500,
            },
        ];
    }
    run(&mut sm, report).unwrap();
    assert_eq!(sm.state().tenants["acme"].api_keys[0].last_used_ms, 500);
    let mut heavy = tenant("acme", 60, 1);
    if let Kind::PutTenant(c) = &mut heavy {
        c.tenant.as_mut().unwrap().weight = 1e6;
    }
    assert!(run(&mut sm, heavy).unwrap_err().contains("weight"));
}

#[test]
fn usage_adds_up_once_per_report_and_outlives_its_tenant() {
    let mut sm = StateMachine::default();
    run(&mut sm, tenant("acme", 0, 0)).unwrap();
    run(&mut sm, tenant("acme-2", 0, 0)).unwrap();
    let r1 = usage(
        "gw-1",
        1,
        &[
            ("acme", "qwen", 20000, 100, 5000),
            ("acme", "llama", 20000, 10, 1),
        ],
    );
    run(&mut sm, r1.clone()).unwrap();
    run(&mut sm, r1).unwrap(); // a retry whose first answer was lost
    run(
        &mut sm,
        usage("gw-2", 1, &[("acme", "qwen", 20001, 50, 2000)]),
    )
    .unwrap();
    run(
        &mut sm,
        usage("gw-1", 2, &[("acme-2", "qwen", 20000, 7, 7)]),
    )
    .unwrap();
    let day0 = super::tenants::usage_between(sm.state(), "acme", 20000, 20000);
    assert_eq!(
        (day0.requests, day0.output_tokens, day0.measured_mj),
        (2, 110, 5001)
    );
    let both = super::tenants::usage_between(sm.state(), "acme", 20000, 20001);
    assert_eq!(
        (both.requests, both.output_tokens),
        (3, 160),
        "not acme-2's"
    );
    assert_eq!(sm.state().usage_reporters["gw-1"], 2);

    assert!(run(&mut sm, usage("", 3, &[])).is_err());
    assert!(
        run(
            &mut sm,
            usage(
                "gw-1",
                3,
                &[("acme", "qwen", 1, 1, 1), ("Bad Name", "q", 1, 1, 1)]
            )
        )
        .unwrap_err()
        .contains("not a DNS label")
    );
    run(
        &mut sm,
        Kind::DeleteTenant(pb::DeleteTenant {
            name: "acme".into(),
        }),
    )
    .unwrap();
    assert_eq!(
        super::tenants::usage_between(sm.state(), "acme", 0, u32::MAX).output_tokens,
        160,
        "the bill stays"
    );
}

#[test]
fn a_snapshot_carries_every_kind_of_state() {
    let mut sm = StateMachine::default();
    node(&mut sm, "w1");
    run(&mut sm, model("qwen")).unwrap();
    run(&mut sm, deployment("chat", "qwen", 1, 1)).unwrap();
    run(&mut sm, place("chat", 1, &["w1"], 2)).unwrap();
    run(&mut sm, tenant("acme", 1, 1)).unwrap();
    run(&mut sm, key("acme", "k", "12")).unwrap();
    run(&mut sm, usage("gw", 9, &[("acme", "qwen", 3, 4, 5)])).unwrap();
    let bytes = sm.snapshot();
    let mut other = StateMachine::default();
    other.restore(&bytes, sm.applied()).unwrap();
    assert_eq!(other, sm);
    assert_eq!(other.snapshot(), bytes);
    let s = other.state();
    assert_eq!(
        (
            s.models.len(),
            s.deployments.len(),
            s.placements.len(),
            s.tenants.len(),
            s.usage.len()
        ),
        (1, 1, 1, 1, 1)
    );
}

fn report(d: &str, n: &str, state: pb::PlacementState, msg: &str) -> Kind {
    report_on(d, n, state, msg, 0)
}

fn report_on(d: &str, n: &str, state: pb::PlacementState, msg: &str, attempt: u32) -> Kind {
    Kind::SetPlacementState(pb::SetPlacementState {
        deployment: d.into(),
        node: n.into(),
        state: state as i32,
        message: msg.into(),
        at_ms: 9,
        attempt,
        ..Default::default()
    })
}

#[test]
fn a_drain_keeps_the_old_placement_retiring_and_failures_stay_on_record() {
    let mut sm = StateMachine::default();
    for n in ["w1", "w2", "w3"] {
        node(&mut sm, n);
    }
    run(&mut sm, model("a")).unwrap();
    run(&mut sm, deployment("d", "a", 1, 0)).unwrap();
    run(&mut sm, place("d", 1, &["w1"], 1)).unwrap();
    run(&mut sm, report("d", "w1", pb::PlacementState::Serving, "")).unwrap();
    // Make-before-break: w2 is the new replica, w1 stays (retiring) beside it, over the count.
    let retire = Kind::SetPlacements(pb::SetPlacements {
        deployment: "d".into(),
        generation: 1,
        nodes: vec!["w2".into()],
        retiring: vec!["w1".into()],
        reasons: [("w2".to_string(), "w2: best".to_string())].into(),
        at_ms: 2,
        ..Default::default()
    });
    run(&mut sm, retire).unwrap();
    let ps = &sm.state().placements;
    assert!(ps["d/w1"].retiring && ps["d/w1"].state == SERVING);
    assert_eq!(
        (ps["d/w2"].state, ps["d/w2"].reason.as_str()),
        (PENDING, "w2: best")
    );
    // Only a placement in force can be kept retiring.
    let bad = Kind::SetPlacements(pb::SetPlacements {
        deployment: "d".into(),
        generation: 1,
        nodes: vec!["w2".into()],
        retiring: vec!["w3".into()],
        ..Default::default()
    });
    assert!(
        run(&mut sm, bad)
            .unwrap_err()
            .contains("only a placement in force")
    );

    // w2 fails: counted once however often it is reported; kept on record while backing off.
    run(
        &mut sm,
        report("d", "w2", pb::PlacementState::Failed, "sha256 mismatch"),
    )
    .unwrap();
    let again = run(
        &mut sm,
        report("d", "w2", pb::PlacementState::Failed, "sha256 mismatch"),
    );
    assert!(again.unwrap_err().contains("stale report"));
    assert_eq!(sm.state().placements["d/w2"].failures, 1);
    let keep_failed = Kind::SetPlacements(pb::SetPlacements {
        deployment: "d".into(),
        generation: 1,
        nodes: vec!["w3".into()],
        failed: vec!["w2".into()],
        at_ms: 3,
        ..Default::default()
    });
    run(&mut sm, keep_failed).unwrap();
    let ps = &sm.state().placements;
    assert!(
        !ps.contains_key("d/w1"),
        "the retiring one is gone once not kept"
    );
    assert_eq!(ps["d/w2"].message, "sha256 mismatch");
    assert_eq!(ps["d/w3"].state, PENDING);
    // Placed on w2 again after the backoff: Pending, the failure count kept.
    run(&mut sm, place("d", 1, &["w2"], 4)).unwrap();
    let p = &sm.state().placements["d/w2"];
    assert_eq!((p.state, p.failures, p.message.as_str()), (PENDING, 1, ""));
    // A late report about the first attempt is stale; one about this attempt counts.
    let late = run(
        &mut sm,
        report("d", "w2", pb::PlacementState::Failed, "late"),
    );
    assert!(late.unwrap_err().contains("attempt 0"));
    let other_file = Kind::SetPlacementState(pb::SetPlacementState {
        deployment: "d".into(),
        node: "w2".into(),
        state: SERVING,
        attempt: 1,
        sha256: "ff".repeat(32),
        ..Default::default()
    });
    assert!(
        run(&mut sm, other_file)
            .unwrap_err()
            .contains("stale report")
    );
    run(
        &mut sm,
        report_on("d", "w2", pb::PlacementState::Serving, "", 1),
    )
    .unwrap();
    assert_eq!(
        sm.state().placements["d/w2"].failures,
        0,
        "a success resets it"
    );
    // A serving placement cannot be kept as failed.
    let bad = Kind::SetPlacements(pb::SetPlacements {
        deployment: "d".into(),
        generation: 1,
        nodes: vec![],
        failed: vec!["w2".into()],
        ..Default::default()
    });
    assert!(run(&mut sm, bad).unwrap_err().contains("has not failed"));
}
