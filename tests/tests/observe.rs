//! What operators watch, end to end with real processes on 127.0.0.1 (three scheduler
//! replicas logging JSON, one worker on the default model logging text to a file) and the real
//! `joulectl`:
//!
//! - `get events -o json` lists the worker joining and the deployment's placement;
//! - `top nodes` / `top deployments -o json` show non-zero tokens/s shortly after requests,
//!   with watts, tokens per joule, KV use and the energy source (any replica answers: a
//!   follower passes the call to the leader);
//! - `logs NODE --tail N` prints the worker's own lines, plain text; `-f` keeps the stream
//!   open; `logs nosuchnode` fails with one line naming the node;
//! - the worker's log file (its redirected stderr) has no colour codes, each scheduler line is
//!   a JSON object, and no token is in any log.

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use joule_proto::v1;
use joule_testkit::cluster::{Cluster, JOIN, PEER, TOKEN, ready_nodes};
use joule_testkit::gateway::{collect, default_model_spec, deployment_spec};
use joule_testkit::tenants::{joulectl, joulectl_ok};
use joule_testkit::workers::WorkerProc;

const MODEL: &str = "smollm2";

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn items(out: &str) -> Vec<serde_json::Value> {
    json(out)["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {out}"))
        .clone()
}

/// A greedy 48-token generation straight at the worker.
async fn generate(w: &WorkerProc) {
    let req = v1::GenerateRequest {
        model: MODEL.into(),
        prompt: Some(v1::generate_request::Prompt::Text(
            "Once upon a time, in a lighthouse by the sea,".into(),
        )),
        sampling: Some(v1::SamplingParams {
            temperature: Some(0.0),
            max_tokens: Some(48),
            ignore_eos: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = w
        .client()
        .generate(req)
        .await
        .expect("generate")
        .into_inner();
    let got = collect(s).await;
    assert!(got.error.is_none(), "generation failed: {:?}", got.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_top_and_logs_through_joulectl() {
    let c = Cluster::with_env(
        3,
        &[
            ("JOULE_PLACEMENT_INTERVAL_MS", "200"),
            ("JOULE_KV_RESERVE_BYTES", "67108864"),
            ("JOULE_LOG_FORMAT", "json"),
        ],
    );
    c.leader(Duration::from_secs(15), 0).await;
    let w = WorkerProc::join("w1", &c, &["--threads", "1"]);
    c.wait_nodes(1, Duration::from_secs(30)).await;
    c.apply(default_model_spec(MODEL), deployment_spec(MODEL, MODEL, 1))
        .await;
    c.placements_until(MODEL, Duration::from_secs(90), "ready on w1", |ps| {
        ready_nodes(ps) == ["w1"]
    })
    .await;
    w.wait_serving(MODEL, Duration::from_secs(30)).await;

    // Events: the worker joined, the deployment was placed on it (every replica has them).
    let events = items(&joulectl_ok(&c, &["get", "events", "-o", "json"]));
    let has = |reason: &str, object: &str| {
        events
            .iter()
            .any(|e| e["reason"] == reason && e["object"] == object)
    };
    assert!(has("Joined", "node/w1"), "{events:#?}");
    assert!(
        has("Scheduled", &format!("deployment/{MODEL}")),
        "{events:#?}"
    );
    let placed = events
        .iter()
        .find(|e| e["reason"] == "Scheduled")
        .expect("a placement event");
    assert_eq!(placed["type"], "Normal");
    assert!(
        placed["message"].as_str().unwrap_or("").contains("w1"),
        "{placed}"
    );
    assert!(placed["last_at_ms"].as_i64().unwrap_or(0) > 0, "{placed}");
    let of_node = items(&joulectl_ok(&c, &["get", "events", "w1", "-o", "json"]));
    assert!(
        !of_node.is_empty() && of_node.iter().all(|e| e["object"] == "node/w1"),
        "{of_node:#?}"
    );
    let table = joulectl_ok(&c, &["get", "ev"]);
    assert!(
        table.starts_with("LAST SEEN") && table.contains("Joined"),
        "{table}"
    );

    // Top: tokens/s shows up in the leader's heartbeats shortly after requests.
    let end = Instant::now() + Duration::from_secs(30);
    let (node, dep) = loop {
        generate(&w).await;
        let nodes = items(&joulectl_ok(&c, &["top", "nodes", "-o", "json"]));
        let deps = items(&joulectl_ok(&c, &["top", "deployments", "-o", "json"]));
        let node = nodes.iter().find(|n| n["name"] == "w1").cloned();
        let dep = deps.iter().find(|d| d["name"] == MODEL).cloned();
        if let (Some(n), Some(d)) = (&node, &dep)
            && n["output_tokens_per_s"].as_f64().unwrap_or(0.0) > 0.0
            && d["output_tokens_per_s"].as_f64().unwrap_or(0.0) > 0.0
        {
            break (n.clone(), d.clone());
        }
        assert!(
            Instant::now() < end,
            "no tokens/s in top after 30 s: {nodes:#?} {deps:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(node["energy_source"], "estimated", "{node}");
    assert!(node["watts"].as_f64().unwrap_or(0.0) > 0.0, "{node}");
    assert!(
        node["tokens_per_joule"].as_f64().unwrap_or(0.0) > 0.0,
        "{node}"
    );
    assert!(node["kv_blocks_total"].as_u64().unwrap_or(0) > 0, "{node}");
    assert_eq!(dep["ready_replicas"], 1, "{dep}");
    assert!(dep["watts"].as_f64().unwrap_or(0.0) > 0.0, "{dep}");
    let table = joulectl_ok(&c, &["top", "no"]);
    assert!(
        table.starts_with("NAME") && table.contains("TOK/J") && table.contains("w1"),
        "{table}"
    );

    // Logs: the worker's own lines, plain text, through the cluster.
    let all = joulectl_ok(&c, &["logs", "w1"]);
    assert!(all.contains("joule-worker listening"), "{all}");
    let tail = joulectl_ok(&c, &["logs", "w1", "--tail", "20"]);
    let lines: Vec<&str> = tail.lines().collect();
    assert!(
        !lines.is_empty() && lines.len() <= 20,
        "{} lines: {tail}",
        lines.len()
    );
    assert!(!tail.contains('\x1b'), "colour codes in the logs: {tail:?}");
    assert!(
        lines.iter().all(|l| !l.starts_with('{')) && lines.iter().any(|l| l.contains(" INFO ")),
        "not text log lines: {tail}"
    );
    let (code, out, err) = joulectl(&c, &["logs", "nosuchnode"]);
    assert_ne!(code, 0, "stdout: {out}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("nosuchnode") && err.contains("w1"), "{err}");

    // -f: the stream stays open after the kept lines.
    let mut follow = Command::new(joule_testkit::bin("joulectl"))
        .args(["--server", &c.live_addrs(), "--token", TOKEN])
        .args(["logs", "w1", "-f", "--tail", "5"])
        .env_remove("JOULE_SERVER")
        .env_remove("JOULE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run joulectl logs -f");
    let stdout = follow.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a line from logs -f")
        .expect("readable output");
    assert!(!first.is_empty());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        follow.try_wait().expect("poll joulectl").is_none(),
        "logs -f ended by itself"
    );
    let _ = follow.kill();
    let _ = follow.wait();

    // The files: the worker's stderr is plain text; every scheduler line is JSON; no token
    // anywhere.
    let worker_log = std::fs::read_to_string(&w.log).expect("the worker's log");
    assert!(
        !worker_log.contains('\x1b'),
        "ANSI codes in the worker's log file"
    );
    assert!(worker_log.contains("joule-worker listening"));
    for r in &c.replicas {
        let log = c.tmp.path().join(format!("r{}.log", r.id));
        let text = std::fs::read_to_string(&log).expect("a replica's log");
        assert!(!text.is_empty(), "{} is empty", log.display());
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {line}", log.display()));
            assert!(v["level"].is_string(), "{line}");
        }
        for secret in [TOKEN, JOIN, PEER] {
            assert!(!text.contains(secret), "a token in {}", log.display());
        }
    }
    for secret in [TOKEN, JOIN, PEER] {
        assert!(!worker_log.contains(secret), "a token in the worker's log");
        assert!(!all.contains(secret), "a token in `joulectl logs`");
    }
}
