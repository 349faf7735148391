//! The gateway end to end, with real processes on 127.0.0.1: three scheduler replicas, workers
//! on the default model and `joule-gateway` in front.
//!
//! - kill -9 the worker serving a greedy 200-token stream (2 replicas): the stream completes and
//!   equals an undisturbed run; the same for a seeded chat stream; a worker that stalls
//!   (SIGSTOP) is treated as dead for the request and the stream moves; a worker's SIGTERM
//!   drain hands its stream over;
//! - kill -9 the scheduler leader under load: no request fails;
//! - two gateways serve one cluster; a restarted gateway serves within 1 s; a client that hangs
//!   up frees its sequence on the worker;
//! - the official `openai` Python client against a real gateway and worker
//!   (`tests/python/openai_conformance.py`).
//!
//! The tests run one at a time (each starts a cluster; the machine may have two cores).

use std::sync::Arc;
use std::time::{Duration, Instant};

use joule_proto::internal::v1 as pb;
use joule_proto::v1;
use joule_testkit::cluster::Cluster;
use joule_testkit::gateway::{GatewayProc, collect, default_model_spec, deployment_spec};
use joule_testkit::python::python_with_openai;
use joule_testkit::workers::WorkerProc;
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

const MODEL: &str = "smollm2";

/// A cluster with `workers` workers serving `replicas` replicas of the default model, and a
/// gateway in front that sees them all ready.
async fn setup(
    workers: &[&str],
    replicas: u32,
    gateway: &[&str],
) -> (Cluster, Vec<WorkerProc>, GatewayProc) {
    let c = Cluster::with_env(
        3,
        &[
            ("JOULE_PLACEMENT_INTERVAL_MS", "200"),
            ("JOULE_KV_RESERVE_BYTES", "67108864"),
        ],
    );
    c.leader(Duration::from_secs(15), 0).await;
    let ws: Vec<WorkerProc> = workers
        .iter()
        .map(|n| WorkerProc::join(n, &c, &["--threads", "1", "--drain-timeout-s", "1"]))
        .collect();
    c.wait_nodes(ws.len(), Duration::from_secs(30)).await;
    c.apply(
        default_model_spec(MODEL),
        deployment_spec(MODEL, MODEL, replicas),
    )
    .await;
    let g = GatewayProc::start("gw", &c, gateway);
    g.wait_ready(MODEL, replicas, Duration::from_secs(90)).await;
    (c, ws, g)
}

fn generate(max_tokens: u32) -> v1::GenerateRequest {
    v1::GenerateRequest {
        model: MODEL.into(),
        prompt: Some(v1::generate_request::Prompt::Text(
            "Once upon a time, in a lighthouse by the sea,".into(),
        )),
        sampling: Some(v1::SamplingParams {
            temperature: Some(0.0),
            max_tokens: Some(max_tokens),
            ignore_eos: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn chat(seed: u64, max_tokens: u32) -> v1::ChatRequest {
    v1::ChatRequest {
        model: MODEL.into(),
        messages: vec![
            v1::ChatMessage {
                role: "system".into(),
                content: "You are a storyteller.".into(),
            },
            v1::ChatMessage {
                role: "user".into(),
                content: "Tell me a long story about a cat and a dragon.".into(),
            },
        ],
        sampling: Some(v1::SamplingParams {
            temperature: Some(0.8),
            seed: Some(seed),
            presence_penalty: Some(0.3),
            max_tokens: Some(max_tokens),
            ignore_eos: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Requests running on each worker now (by index; 0 for one that does not answer).
async fn running(ws: &[WorkerProc]) -> Vec<u32> {
    let mut out = Vec::new();
    for w in ws {
        out.push(w.busy().await);
    }
    out
}

/// Reads `s` until `n` tokens arrived; returns what was read.
async fn read_tokens(s: &mut tonic::Streaming<v1::TokenEvent>, n: usize) -> (String, Vec<u32>) {
    let (mut text, mut ids) = (String::new(), Vec::new());
    while ids.len() < n {
        let ev = s.message().await.expect("stream").expect("an event");
        assert!(
            ev.finish.is_none(),
            "finished early after {} tokens",
            ids.len()
        );
        text.push_str(&ev.text);
        ids.extend(ev.token_ids);
    }
    (text, ids)
}

/// The index of the one worker running a request.
async fn serving(ws: &[WorkerProc]) -> usize {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let r = running(ws).await;
        if let Some(i) = r.iter().position(|&n| n > 0) {
            return i;
        }
        assert!(Instant::now() < end, "no worker runs the stream: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Finishes `s`, prepending what was already read.
async fn finish(
    s: tonic::Streaming<v1::TokenEvent>,
    text: String,
    ids: Vec<u32>,
) -> joule_testkit::gateway::Collected {
    let mut rest = collect(s).await;
    rest.text = text + &rest.text;
    let mut all = ids;
    all.extend(rest.ids);
    rest.ids = all;
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_survives_the_death_or_stall_of_its_worker() {
    let _one = SERIAL.lock().await;
    let (_c, mut ws, g) = setup(&["w1", "w2"], 2, &["--token-timeout-ms", "2000"]).await;
    let mut gw = g.client();

    // Greedy, 200 tokens: an undisturbed run, then one whose worker is killed after 20 tokens.
    let whole = collect(gw.generate(generate(200)).await.unwrap().into_inner()).await;
    assert!(whole.error.is_none(), "{:?}", whole.error);
    assert_eq!(whole.ids.len(), 200);
    let mut s = gw.generate(generate(200)).await.unwrap().into_inner();
    let (text, ids) = read_tokens(&mut s, 20).await;
    let victim = serving(&ws).await;
    ws[victim].kill9();
    let moved = finish(s, text, ids).await;
    assert!(
        moved.error.is_none(),
        "the stream failed: {:?}\n{}",
        moved.error,
        g.log_tail()
    );
    assert_eq!(
        moved.ids, whole.ids,
        "the moved stream differs from the undisturbed one"
    );
    assert_eq!(moved.text, whole.text);
    let f = moved.finish.expect("a finish");
    assert_eq!(f.reason, v1::FinishReason::Length as i32);
    let u = f.usage.expect("usage");
    assert_eq!(u.completion_tokens, 200, "every token is billed once");
    assert_eq!(
        u.energy_source,
        v1::EnergySource::Estimated as i32,
        "a moved stream's joules are estimated"
    );
    assert!(
        g.scrape()
            .contains("joule_gateway_migrations_total{model=\"smollm2\",outcome=\"moved\"}"),
        "{}",
        g.scrape()
    );

    // Back to two replicas; a seeded chat (penalties, seeded draws, the chat template) moves
    // just as exactly.
    ws[victim].restart();
    let end = Instant::now() + Duration::from_secs(60);
    while running(&ws).await.len() < 2 || ws[victim].models().await.is_empty() {
        assert!(
            Instant::now() < end,
            "{} did not come back:\n{}",
            ws[victim].name,
            ws[victim].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The gateway retries past a replica the view still shows but that is gone, so wait
    // until the view has it again rather than for a time.
    g.wait_ready(MODEL, 2, Duration::from_secs(30)).await;
    let whole = collect(gw.chat(chat(7, 120)).await.unwrap().into_inner()).await;
    assert!(whole.error.is_none(), "{:?}", whole.error);
    let mut s = gw.chat(chat(7, 120)).await.unwrap().into_inner();
    let (text, ids) = read_tokens(&mut s, 15).await;
    let victim = serving(&ws).await;
    ws[victim].kill9();
    let moved = finish(s, text, ids).await;
    assert!(moved.error.is_none(), "{:?}\n{}", moved.error, g.log_tail());
    assert_eq!(
        moved.ids, whole.ids,
        "the moved chat differs from the undisturbed one"
    );
    assert_eq!(moved.text, whole.text);

    // A worker that stops answering (SIGSTOP) is dead to the request after --token-timeout-ms.
    ws[victim].restart();
    g.wait_ready(MODEL, 2, Duration::from_secs(60)).await;
    let end = Instant::now() + Duration::from_secs(60);
    while ws[victim].models().await.is_empty() {
        assert!(Instant::now() < end);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut s = gw.generate(generate(200)).await.unwrap().into_inner();
    let (text, ids) = read_tokens(&mut s, 20).await;
    let stalled = serving(&ws).await;
    let pid = ws[stalled].child.as_ref().unwrap().id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let moved = finish(s, text, ids).await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    assert!(moved.error.is_none(), "{:?}\n{}", moved.error, g.log_tail());
    let whole = collect(gw.generate(generate(200)).await.unwrap().into_inner()).await;
    assert_eq!(
        moved.ids, whole.ids,
        "the stream moved off a stalled worker differs"
    );

    // A worker's SIGTERM drain hands its streams over at its deadline (--drain-timeout-s 1)
    // instead of cancelling them.
    let mut s = gw.generate(generate(200)).await.unwrap().into_inner();
    let (text, ids) = read_tokens(&mut s, 20).await;
    let draining = serving(&ws).await;
    let pid = ws[draining].child.as_ref().unwrap().id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let moved = finish(s, text, ids).await;
    assert!(moved.error.is_none(), "{:?}\n{}", moved.error, g.log_tail());
    assert_eq!(
        moved.ids, whole.ids,
        "the stream handed over by a drain differs"
    );
    assert_eq!(moved.text, whole.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_scheduler_leader_under_load_fails_no_request() {
    let _one = SERIAL.lock().await;
    let (mut c, ws, g) = setup(&["w1"], 1, &[]).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for i in 0..4 {
        let (mut gw, stop) = (g.client(), stop.clone());
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut r = generate(6 + i);
                r.request_id = format!("load-{i}-{ok}");
                match gw.generate(r).await {
                    Ok(s) => {
                        let got = collect(s.into_inner()).await;
                        match got.error {
                            None if got.finish.is_some() => ok += 1,
                            e => failed.push(format!("{e:?}")),
                        }
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = c.leader(Duration::from_secs(10), 0).await;
    c.kill9(leader);
    let next = c.leader(Duration::from_secs(15), leader).await;
    assert_ne!(next, leader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for t in load {
        let (ok, failed) = t.await.unwrap();
        assert!(
            failed.is_empty(),
            "requests failed across the failover: {failed:?}"
        );
        total += ok;
    }
    assert!(total >= 8, "only {total} requests ran");
    // And the view follows the new leader: a new request is routed and served.
    let got = collect(g.client().generate(generate(4)).await.unwrap().into_inner()).await;
    assert!(got.finish.is_some(), "{:?}", got.error);
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_are_stateless_and_a_client_that_hangs_up_frees_its_sequence() {
    let _one = SERIAL.lock().await;
    let (c, ws, mut g) = setup(&["w1"], 1, &[]).await;
    let g2 = GatewayProc::start("gw2", &c, &[]);
    g2.wait_ready(MODEL, 1, Duration::from_secs(30)).await;
    for gw in [&g, &g2] {
        let got = collect(
            gw.client()
                .generate(generate(8))
                .await
                .unwrap()
                .into_inner(),
        )
        .await;
        assert_eq!(got.ids.len(), 8, "{:?}", got.error);
    }

    // Health per model, and reflection of the public API.
    let ch = joule_client::Connect::default().lazy(&g.grpc).unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    for (service, want) in [("", 1), ("joule.v1.Inference", 1), (MODEL, 1)] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, want, "health of {service:?}");
    }
    let unknown = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    joule_testkit::reflection::assert_serves(
        &g.grpc,
        &["joule.v1.Inference", "grpc.health.v1.Health"],
        "joule.v1.Inference",
    )
    .await;
    // An unknown model through gRPC: NOT_FOUND naming the served ones.
    let e = g
        .client()
        .generate(v1::GenerateRequest {
            model: "nope".into(),
            ..generate(4)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains(MODEL), "{e}");

    // A worker in a cluster takes calls only with the join token (the gateways send it).
    let mut anon = joule_client::Connect::default()
        .worker(&ws[0].addr, "")
        .unwrap();
    let e = anon
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    let mut wrong = joule_client::Connect::default()
        .worker(&ws[0].addr, "nope")
        .unwrap();
    assert!(wrong.generate(generate(1)).await.is_err());

    // A client that hangs up mid-stream: the worker's sequence ends within a step or two.
    let mut s = g
        .client()
        .generate(generate(400))
        .await
        .unwrap()
        .into_inner();
    read_tokens(&mut s, 3).await;
    assert_eq!(running(&ws).await, [1]);
    drop(s);
    let end = Instant::now() + Duration::from_secs(2);
    while running(&ws).await != [0] {
        assert!(
            Instant::now() < end,
            "the sequence still runs after the client left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A gateway restarted serves new requests within a second of its start.
    g.kill9();
    let started = Instant::now();
    g.restart();
    let served = loop {
        let mut gw = g.client();
        if let Ok(s) = gw.generate(generate(1)).await
            && collect(s.into_inner()).await.finish.is_some()
        {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            g.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        served < Duration::from_secs(1),
        "the restarted gateway served after {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_gets_what_it_expects() {
    let _one = SERIAL.lock().await;
    let py = python_with_openai();
    let (c, _ws, g) = setup(&["w1"], 1, &[]).await;
    // A deployment that can never be placed (its model fits no node): no replica is ready.
    let mut huge = default_model_spec("huge");
    huge.size_bytes = 1 << 50;
    c.apply(huge, deployment_spec("pending", "huge", 1)).await;
    let end = Instant::now() + Duration::from_secs(10);
    while !joule_testkit::http::get(&g.http, "/v1/models")
        .is_ok_and(|r| r.1.contains("\"pending\""))
    {
        assert!(
            Instant::now() < end,
            "the gateway never listed the pending deployment"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/openai_conformance.py");
    let out = tokio::task::spawn_blocking({
        let (http, metrics) = (g.http.clone(), g.metrics.clone());
        move || {
            std::process::Command::new(py)
                .arg(script)
                .args(["--base-url", &format!("http://{http}/v1"), "--model", MODEL])
                .args(["--metrics-url", &format!("http://{metrics}/metrics")])
                .args(["--unready-model", "pending"])
                .output()
                .expect("run the conformance script")
        }
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "conformance failed:\n{text}\ngateway log:\n{}",
        g.log_tail()
    );
    assert!(text.contains("ok "), "{text}");
}
