//! Placement end to end, with real processes on 127.0.0.1: three scheduler replicas and three
//! workers on the default model, with distinct power figures (--idle-watts/--busy-watts:
//! estimated, no calibration), so that the leader's placement has a clear best pair.
//! The deployment lands on the two nodes with the best tokens per joule and both serve; a
//! killed node's replica moves within --reschedule-after plus the load time; a drain is
//! make-before-break; a leader killed during a rollout leaves it to the next leader; a worker
//! restarted with its assignment unchanged shows no gap; a model whose sha256 is wrong fails
//! with the reason, backs off, and disturbs nothing else.

use std::time::{Duration, Instant};

use joule_proto::v1;
use joule_testkit::cluster::{Cluster, describe, ready_nodes};
use joule_testkit::workers::{DEFAULT_MODEL_SHA256, WorkerProc, default_model};

const RESCHEDULE_MS: u64 = 4000;

fn worker(c: &Cluster, name: &str, idle: &str, busy: &str) -> WorkerProc {
    WorkerProc::join(
        name,
        c,
        &["--idle-watts", idle, "--busy-watts", busy, "--threads", "1"],
    )
}

async fn generate(w: &WorkerProc, model: &str) -> Result<String, tonic::Status> {
    let mut c = w.client();
    let mut s = c
        .generate(v1::GenerateRequest {
            model: model.into(),
            prompt: Some(v1::generate_request::Prompt::Text(
                "The capital of France is".into(),
            )),
            sampling: Some(v1::SamplingParams {
                max_tokens: Some(4),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut text = String::new();
    while let Some(ev) = s.message().await? {
        text.push_str(&ev.text);
    }
    Ok(text)
}

async fn apply(c: &Cluster, model: v1::ModelSpec, d: v1::DeploymentSpec) {
    let m = model.clone();
    c.admin(Duration::from_secs(10), |mut a| {
        let m = m.clone();
        async move { a.apply_model(m).await }
    })
    .await
    .expect("apply model");
    c.admin(Duration::from_secs(10), |mut a| {
        let d = d.clone();
        async move { a.apply_deployment(d).await }
    })
    .await
    .expect("apply deployment");
}

fn model(name: &str, sha256: &str) -> v1::ModelSpec {
    let path = default_model();
    v1::ModelSpec {
        name: name.into(),
        source: format!("file://{}", path.display()),
        sha256: sha256.into(),
        size_bytes: std::fs::metadata(&path).unwrap().len(),
        format: String::new(),
    }
}

fn deployment(name: &str, model: &str, replicas: u32) -> v1::DeploymentSpec {
    v1::DeploymentSpec {
        name: name.into(),
        model: model.into(),
        replicas,
        ..Default::default()
    }
}

async fn schedule(c: &Cluster, node: &str, schedule: &str) {
    let (n, s) = (node.to_string(), schedule.to_string());
    c.admin(Duration::from_secs(10), |mut a| {
        let r = v1::SetNodeScheduleRequest {
            name: n.clone(),
            schedule: s.clone(),
        };
        async move { a.set_node_schedule(r).await }
    })
    .await
    .expect("set schedule");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_places_by_tokens_per_joule_and_the_workers_follow() {
    let reschedule = RESCHEDULE_MS.to_string();
    let mut c = Cluster::with_env(
        3,
        &[
            ("JOULE_RESCHEDULE_AFTER_MS", reschedule.as_str()),
            ("JOULE_PLACEMENT_INTERVAL_MS", "200"),
            ("JOULE_KV_RESERVE_BYTES", "67108864"),
        ],
    );
    c.leader(Duration::from_secs(15), 0).await;
    // Estimated power: "green" and "amber" cost the fewest joules per token, "red" the most.
    let mut ws = [
        worker(&c, "green", "10", "40"),
        worker(&c, "amber", "20", "70"),
        worker(&c, "red", "60", "240"),
    ];
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = c
            .admin(Duration::from_secs(5), |mut a| async move {
                a.list_nodes(v1::ListNodesRequest {}).await
            })
            .await
            .map(|r| r.nodes)
            .unwrap_or_default();
        if nodes.iter().filter(|n| n.status == "Ready").count() == 3 {
            break;
        }
        assert!(Instant::now() < end, "workers not Ready: {nodes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Two replicas: the two nodes with the best tokens per joule, both serving.
    apply(
        &c,
        model("smollm2", DEFAULT_MODEL_SHA256),
        deployment("smollm2", "smollm2", 2),
    )
    .await;
    let ps = c
        .placements_until("smollm2", Duration::from_secs(60), "2 Ready", |ps| {
            ready_nodes(ps).len() == 2
        })
        .await;
    assert_eq!(ready_nodes(&ps), ["amber", "green"], "{}", describe(&ps));
    for p in &ps {
        assert!(
            p.reason.contains("tok/J") && p.reason.contains("estimated"),
            "a reason a person can read, labelled estimated: {}",
            p.reason
        );
    }
    for w in &ws[..2] {
        let text = generate(w, "smollm2")
            .await
            .expect("the replica serves Generate");
        assert!(!text.is_empty());
    }
    assert!(
        generate(&ws[2], "smollm2").await.is_err(),
        "red serves nothing"
    );

    // kill -9 green: its replica is Ready on red within --reschedule-after plus the load.
    let killed = Instant::now();
    ws[0].kill9();
    let ps = c
        .placements_until("smollm2", Duration::from_secs(40), "moved to red", |ps| {
            ready_nodes(ps) == ["amber", "red"]
        })
        .await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(RESCHEDULE_MS) + Duration::from_secs(20),
        "moved after {took:?}: {}",
        describe(&ps)
    );
    generate(&ws[2], "smollm2")
        .await
        .expect("red serves it now");

    // green comes back (empty: its old assignment is gone) and amber drains: the replacement
    // (green, the cheapest free node) is Ready before amber lets go.
    ws[0].restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    schedule(&c, "amber", "Draining").await;
    let end = Instant::now() + Duration::from_secs(60);
    let mut saw_retiring = false;
    loop {
        let ps = c.placements("smollm2").await;
        let amber = ps.iter().find(|p| p.node == "amber");
        let green_ready = ps.iter().any(|p| p.node == "green" && p.state == "Ready");
        saw_retiring |= amber.is_some_and(|p| p.retiring);
        if amber.is_none() {
            assert!(
                green_ready,
                "amber let go before green served: {}",
                describe(&ps)
            );
            break;
        }
        if amber.is_some_and(|p| p.retiring) {
            // Retiring, amber still serves.
            assert!(generate(&ws[1], "smollm2").await.is_ok() || green_ready);
        }
        assert!(
            Instant::now() < end,
            "drain never finished: {}",
            describe(&ps)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        saw_retiring,
        "the drained placement was never kept while its replacement loaded"
    );
    let ps = c.placements("smollm2").await;
    assert_eq!(ready_nodes(&ps), ["green", "red"], "{}", describe(&ps));

    // A rollout the leader does not see through: amber is usable again and red drains; the
    // leader is killed right away. The next leader finishes the move (red off, amber on).
    schedule(&c, "amber", "Active").await;
    schedule(&c, "red", "Draining").await;
    let leader = c.leader(Duration::from_secs(10), 0).await;
    c.kill9(leader);
    let ps = c
        .placements_until("smollm2", Duration::from_secs(60), "moved off red", |ps| {
            ready_nodes(ps) == ["amber", "green"] && ps.iter().all(|p| p.node != "red")
        })
        .await;
    assert_eq!(ps.len(), 2, "{}", describe(&ps));
    c.start(leader);

    // amber restarts (kill -9, at once) with its assignment unchanged: it serves it again
    // before it heartbeats, so its placement never leaves Ready and never moves.
    let before = ps.iter().find(|p| p.node == "amber").unwrap().since_ms;
    ws[1].kill9();
    ws[1].restart();
    ws[1].wait_serving("smollm2", Duration::from_secs(30)).await;
    generate(&ws[1], "smollm2")
        .await
        .expect("amber serves again");
    tokio::time::sleep(Duration::from_millis(RESCHEDULE_MS)).await;
    let ps = c.placements("smollm2").await;
    let amber = ps
        .iter()
        .find(|p| p.node == "amber")
        .expect("still on amber");
    assert_eq!(
        (amber.state.as_str(), amber.since_ms),
        ("Ready", before),
        "the restart showed as a gap: {}",
        describe(&ps)
    );
    assert_eq!(ready_nodes(&ps), ["amber", "green"]);

    // A model whose sha256 is wrong: Failed with the reason, retried with backoff, never in a
    // hot loop, and nothing else disturbed.
    let wrong = "0".repeat(64);
    apply(
        &c,
        model("broken", &wrong),
        deployment("broken", "broken", 1),
    )
    .await;
    let ps = c
        .placements_until("broken", Duration::from_secs(30), "Failed", |ps| {
            ps.iter().any(|p| p.state == "Failed")
        })
        .await;
    let failed = ps.iter().find(|p| p.state == "Failed").unwrap();
    assert!(failed.message.contains("sha256"), "{}", describe(&ps));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let ps = c.placements("broken").await;
    let tries: u32 = ps.iter().map(|p| p.failures).sum();
    assert!(
        (1..=6).contains(&tries),
        "with backoff, a few tries in 8 s, not a hot loop: {tries} {}",
        describe(&ps)
    );
    let d = c
        .admin(Duration::from_secs(5), |mut a| async move {
            a.get_deployment(v1::GetDeploymentRequest {
                name: "broken".into(),
            })
            .await
        })
        .await
        .unwrap();
    assert_eq!(d.ready_replicas, 0);
    let ok = c.placements("smollm2").await;
    assert_eq!(ready_nodes(&ok), ["amber", "green"], "{}", describe(&ok));
    for w in &ws[..2] {
        generate(w, "smollm2").await.expect("still serving");
    }

    // A model that fits on no node is accepted and stays Pending with the reason; more
    // replicas than eligible nodes (red is still draining): as many as fit, the rest pending
    // with the reason.
    let mut huge = model("huge", DEFAULT_MODEL_SHA256);
    huge.size_bytes = 1 << 40;
    apply(&c, huge, deployment("huge", "huge", 1)).await;
    apply(
        &c,
        model("smollm2", DEFAULT_MODEL_SHA256),
        deployment("wide", "smollm2", 5),
    )
    .await;
    let pending = |name: &'static str| {
        let c = &c;
        async move {
            c.admin(Duration::from_secs(5), |mut a| async move {
                a.get_deployment(v1::GetDeploymentRequest { name: name.into() })
                    .await
            })
            .await
            .map(|d| d.pending_reason)
            .unwrap_or_default()
        }
    };
    let end = Instant::now() + Duration::from_secs(20);
    while !pending("huge").await.contains("the largest free is")
        || !pending("wide").await.contains("2 of 5 replicas placed")
    {
        assert!(
            Instant::now() < end,
            "huge: {:?}, wide: {:?}",
            pending("huge").await,
            pending("wide").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(c.placements("huge").await.is_empty());
    let wide = c
        .placements_until("wide", Duration::from_secs(60), "2 Ready", |ps| {
            ready_nodes(ps) == ["amber", "green"]
        })
        .await;
    assert_eq!(wide.len(), 2, "{}", describe(&wide));

    // Bad input: an unknown deployment or model is NOT_FOUND naming what exists; deleting a
    // model in use is FAILED_PRECONDITION naming the deployment.
    let e = c
        .admin(Duration::from_secs(5), |mut a| async move {
            a.get_deployment(v1::GetDeploymentRequest {
                name: "nope".into(),
            })
            .await
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("smollm2"), "{}", e.message());
    let e = c
        .admin(Duration::from_secs(5), |mut a| async move {
            a.delete_model(v1::DeleteModelRequest {
                name: "smollm2".into(),
            })
            .await
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("smollm2"), "{}", e.message());
}
