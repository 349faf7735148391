//! `joulectl bench` end to end, with real processes on 127.0.0.1: three scheduler replicas, a
//! worker on the default model and two gateways in front of it. The real `joulectl` binary
//! loads gateway A and compares it with gateway B (`--url A --compare B`), then loads A's gRPC
//! API; each `-o json` report is parsed back: every request served, output tokens counted,
//! percentiles in order, ratios finite, joules per token measured or estimated.

use std::process::Command;
use std::time::Duration;

use joule_testkit::cluster::Cluster;
use joule_testkit::gateway::{GatewayProc, default_model_spec, deployment_spec};
use joule_testkit::workers::WorkerProc;
use serde_json::Value;

const MODEL: &str = "smollm2";

/// `joulectl bench ARGS -o json`: its exit code, the report and stderr.
fn bench(args: &[&str]) -> (i32, Value, String) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(joule_testkit::bin("joulectl"))
        .arg("bench")
        .args(args)
        .args(["-o", "json"])
        .env("JOULE_HOME", home.path())
        .env_remove("JOULE_CONTEXT")
        .env_remove("JOULE_GATEWAY_URL")
        .env_remove("OPENAI_API_KEY")
        .env_remove("COMPARE_API_KEY")
        .output()
        .expect("run joulectl bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("bench {args:?} printed no JSON report ({e}):\n{stdout}\nstderr: {stderr}")
    });
    (out.status.code().unwrap_or(-1), v, stderr)
}

fn finite(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x.is_finite(), "{what} = {x}");
    x
}

/// p50 <= p90 <= p99, all finite.
fn ordered(p: &Value, what: &str) {
    let (a, b, c) = (
        finite(&p["p50"], what),
        finite(&p["p90"], what),
        finite(&p["p99"], what),
    );
    assert!(a <= b && b <= c, "{what} percentiles out of order: {p}");
}

/// A target's summary: all `n` requests served with `tokens` output tokens each (EOS is
/// ignored), latencies ordered, energy known.
fn served_all(s: &Value, n: u64, tokens: u64, label: &str) {
    assert_eq!(s["requests"]["ok"], n, "{label}: {s}");
    assert_eq!(s["requests"]["failed"], 0, "{label}: {s}");
    assert_eq!(s["errors"], Value::Array(vec![]), "{label}: {s}");
    assert_eq!(s["output_tokens"], n * tokens, "{label}: {s}");
    assert!(
        finite(&s["output_tokens_per_s"], label) > 0.0,
        "{label}: {s}"
    );
    for k in ["ttft_ms", "itl_ms", "e2e_ms"] {
        ordered(&s[k], &format!("{label} {k}"));
    }
    assert!(
        s["ttft_ms"]["p50"].as_f64() <= s["e2e_ms"]["p50"].as_f64(),
        "{label}: the first token after the end? {s}"
    );
    let source = s["energy"]["source"].as_str().unwrap_or_default();
    assert!(
        source == "estimated" || source == "measured",
        "{label}: energy source {source:?}: {s}"
    );
    assert!(
        finite(&s["energy"]["joules_per_output_token"], label) >= 0.0,
        "{label}: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_compares_two_gateways_with_ratios_and_loads_the_grpc_api() {
    let c = Cluster::with_env(
        3,
        &[
            ("JOULE_PLACEMENT_INTERVAL_MS", "200"),
            ("JOULE_KV_RESERVE_BYTES", "67108864"),
        ],
    );
    c.leader(Duration::from_secs(15), 0).await;
    let w = WorkerProc::join("w1", &c, &["--threads", "1"]);
    c.wait_nodes(1, Duration::from_secs(30)).await;
    c.apply(default_model_spec(MODEL), deployment_spec(MODEL, MODEL, 1))
        .await;
    let a = GatewayProc::start("gw-a", &c, &[]);
    let b = GatewayProc::start("gw-b", &c, &[]);
    a.wait_ready(MODEL, 1, Duration::from_secs(90)).await;
    b.wait_ready(MODEL, 1, Duration::from_secs(30)).await;

    // HTTP against HTTP: the same 8 requests to each (halves A, B, B, A), the model found
    // through GET /v1/models.
    let (url_a, url_b) = (
        format!("http://{}/v1", a.http),
        format!("http://{}/v1", b.http),
    );
    let args = [
        "--url",
        url_a.as_str(),
        "--compare",
        url_b.as_str(),
        "--requests",
        "8",
        "--concurrency",
        "4",
        "--input-tokens",
        "32",
        "--output-tokens",
        "16",
        "--ignore-eos",
    ];
    let (code, v, err) = bench(&args);
    assert_eq!(code, 0, "bench exited {code}: {err}\n{v}");
    served_all(&v["target"], 8, 16, "target");
    served_all(&v["compare"], 8, 16, "compare");
    assert_eq!(v["target"]["model"], MODEL, "{v}");
    assert_eq!(v["target"]["api"], "openai-http", "{v}");
    assert_eq!(v["load"]["concurrency"], 4, "{v}");
    for k in [
        "output_tokens_per_s",
        "ttft_p50",
        "ttft_p99",
        "itl_p50",
        "itl_p99",
        "e2e_p50",
    ] {
        let r = finite(&v["ratios"][k], &format!("ratio {k}"));
        assert!(r > 0.0, "ratio {k} = {r}: {v}");
    }

    // The gateway's gRPC API: Generate streams, usage and joules from the finish.
    let (code, v, err) = bench(&[
        "--grpc",
        a.grpc.as_str(),
        "--requests",
        "4",
        "--concurrency",
        "2",
        "--input-tokens",
        "16",
        "--output-tokens",
        "8",
        "--ignore-eos",
    ]);
    assert_eq!(code, 0, "bench --grpc exited {code}: {err}\n{v}");
    served_all(&v["target"], 4, 8, "grpc");
    assert_eq!(v["target"]["api"], "grpc-inference", "{v}");
    assert_eq!(v["target"]["output_tokens_counted_by"], "usage", "{v}");
    assert!(v["compare"].is_null(), "{v}");
    drop(w);
}
