//! Golden tests: every resource's table (`-o table` and `-o wide`) and `describe` text, from
//! representative API messages, against the files in `golden/`; and its `-o json` parsed back,
//! its names and numbers intact. The clock is frozen ([`FROZEN_NOW`]) so ages are fixed.
//!
//! A golden file that is missing is written and the test fails, asking for a review;
//! `JOULE_UPDATE_GOLDEN=1 cargo test -p joulectl golden` rewrites them all after a deliberate
//! change (review the diff before committing it).

use std::cell::Cell;
use std::path::PathBuf;

use joule_proto::internal::v1 as pb;
use joule_proto::v1;
use serde_json::Value;

use super::apikey::ApiKey;
use super::deployment::{self, Deployment};
use super::model::{self, Model};
use super::node::{self, Node};
use super::placement::Placement;
use super::tenant::{self, Tenant};
use super::usage::Usage;
use super::worker;
use crate::render::{self, Format, Render};

thread_local! {
    /// The time [`super::now_ms`] reads in this test's thread, when set.
    pub static FROZEN_NOW: Cell<Option<i64>> = const { Cell::new(None) };
}

/// 2026-12-01T14:03:00Z.
const NOW: i64 = 1_796_133_780_000;
const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const GIB: u64 = 1 << 30;
const SHA_A: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const SHA_B: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn freeze() {
    FROZEN_NOW.with(|c| c.set(Some(NOW)));
}

/// Compares `got` with `golden/NAME`; see the module's doc for missing files and updates.
fn golden(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/views/golden")
        .join(name);
    let update = std::env::var_os("JOULE_UPDATE_GOLDEN").is_some();
    let want = std::fs::read_to_string(&path).ok();
    if want.as_deref() == Some(got) {
        return;
    }
    if update || want.is_none() {
        std::fs::create_dir_all(path.parent().expect("golden/ has a parent")).expect("mkdir");
        std::fs::write(&path, got).expect("write the golden file");
    }
    match want {
        _ if update => {}
        None => panic!(
            "{}: there was no golden file; wrote it: review it and run the test again",
            path.display()
        ),
        Some(want) => panic!(
            "{name} is not what {} says (rerun with JOULE_UPDATE_GOLDEN=1 if the change is \
             meant)\n--- golden\n{want}--- got\n{got}",
            path.display()
        ),
    }
}

/// `$ get KIND` then its table, and `-o wide` when the kind has more columns.
fn tables<T: Render>(kind: &str, items: &[T]) -> String {
    let mut s = format!(
        "$ joulectl get {kind}\n{}",
        render::list_text(items, Format::Table).unwrap()
    );
    if T::headers(true).len() > T::headers(false).len() {
        s.push_str(&format!(
            "\n$ joulectl get {kind} -o wide\n{}",
            render::list_text(items, Format::Wide).unwrap()
        ));
    }
    s
}

/// `-o json` of a list, parsed back: its items.
fn json_items<T: Render>(items: &[T]) -> Vec<Value> {
    let text = render::list_text(items, Format::Json).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    v["items"].as_array().expect("{\"items\": [...]}").clone()
}

fn labels(kv: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn placements() -> Vec<v1::PlacementInfo> {
    vec![
        v1::PlacementInfo {
            deployment: "smollm2".into(),
            node: "gpu-1".into(),
            model: "smollm2".into(),
            state: "Ready".into(),
            since_ms: NOW - 2 * HOUR,
            reason: "cheapest: 0.41 J/token".into(),
            progress: 1.0,
            ..Default::default()
        },
        v1::PlacementInfo {
            deployment: "smollm2".into(),
            node: "gpu-3".into(),
            model: "smollm2".into(),
            state: "Fetching".into(),
            message: "downloading".into(),
            since_ms: NOW - 90 * SECOND,
            reason: "next cheapest".into(),
            progress: 0.42,
            failures: 1,
            ..Default::default()
        },
        v1::PlacementInfo {
            deployment: "chat".into(),
            node: "cpu-2".into(),
            model: "qwen2.5-0.5b".into(),
            state: "Ready".into(),
            since_ms: NOW - 10 * MINUTE,
            reason: "moved: cheaper on gpu-1".into(),
            progress: 1.0,
            retiring: true,
            ..Default::default()
        },
    ]
}

fn nodes() -> Vec<Node> {
    vec![
        Node::from(v1::NodeInfo {
            name: "gpu-1".into(),
            address: "10.0.0.11:50061".into(),
            status: "Ready".into(),
            schedule: "Active".into(),
            registered_at_ms: NOW - 3 * DAY,
            cpu_model: "AMD EPYC 7763".into(),
            logical_cpus: 64,
            memory_bytes: 256 * GIB,
            gpus: vec!["NVIDIA H100 80GB HBM3".into()],
            models: vec!["smollm2".into()],
            running: 3,
            output_tokens_per_s: 1234.56,
            watts: 412.4,
            labels: labels(&[("gpu", "h100"), ("zone", "a")]),
            placements: placements()[..1].to_vec(),
            model_memory_bytes: 80 * GIB,
            placed_bytes: 2 * GIB,
            ..Default::default()
        }),
        Node::from(v1::NodeInfo {
            name: "cpu-2".into(),
            address: "10.0.0.12:50061".into(),
            status: "Unreachable".into(),
            schedule: "Cordoned".into(),
            registered_at_ms: NOW - 45 * MINUTE,
            status_since_ms: NOW - MINUTE,
            cpu_model: "Intel Xeon".into(),
            logical_cpus: 16,
            memory_bytes: 512 << 20,
            watts: 35.0,
            ..Default::default()
        }),
    ]
}

fn models() -> Vec<Model> {
    vec![
        Model::from(v1::ModelInfo {
            spec: Some(v1::ModelSpec {
                name: "smollm2".into(),
                source: "https://example.invalid/smollm2.gguf".into(),
                sha256: SHA_A.into(),
                size_bytes: 270_000_000,
                format: "gguf".into(),
            }),
            created_at_ms: NOW - 2 * DAY,
            used_by: vec!["smollm2".into(), "smollm2-fast".into()],
        }),
        Model::from(v1::ModelInfo {
            spec: Some(v1::ModelSpec {
                name: "qwen2.5-0.5b".into(),
                source: "file:///models/qwen.gguf".into(),
                sha256: SHA_B.into(),
                size_bytes: 1_100_000_000,
                format: "gguf".into(),
            }),
            created_at_ms: NOW - 30 * SECOND,
            ..Default::default()
        }),
    ]
}

fn deployments() -> Vec<Deployment> {
    vec![
        Deployment::from(v1::DeploymentInfo {
            spec: Some(v1::DeploymentSpec {
                name: "smollm2".into(),
                model: "smollm2".into(),
                replicas: 2,
                selector: labels(&[("gpu", "h100")]),
                ttft_p95_ms: 500,
                itl_p95_ms: 50,
                priority: 5,
                ..Default::default()
            }),
            generation: 3,
            created_at_ms: NOW - 2 * DAY,
            updated_at_ms: NOW - HOUR,
            desired_replicas: 2,
            ready_replicas: 1,
            placements: placements()[..2].to_vec(),
            ..Default::default()
        }),
        Deployment::from(v1::DeploymentInfo {
            spec: Some(v1::DeploymentSpec {
                name: "chat".into(),
                model: "qwen2.5-0.5b".into(),
                replicas: 0,
                autoscale: true,
                min_replicas: 1,
                max_replicas: 4,
                ..Default::default()
            }),
            generation: 1,
            created_at_ms: NOW - 5 * HOUR,
            updated_at_ms: NOW - 5 * HOUR,
            desired_replicas: 1,
            ready_replicas: 0,
            pending_reason: "no node has 1.0Gi free".into(),
            ..Default::default()
        }),
    ]
}

fn tenants() -> Vec<Tenant> {
    vec![
        Tenant::from(v1::TenantInfo {
            spec: Some(v1::TenantSpec {
                name: "acme".into(),
                weight: 3.0,
                deployments: vec!["smollm2".into(), "chat".into()],
                requests_per_minute: 600,
                tokens_per_minute: 100_000,
                max_concurrent: 16,
                tokens_per_month: 10_000_000,
                joules_per_month: 3.6e6,
            }),
            created_at_ms: NOW - 4 * DAY,
            api_keys: 2,
        }),
        Tenant::from(v1::TenantInfo {
            spec: Some(v1::TenantSpec {
                name: "globex".into(),
                weight: 0.5,
                ..Default::default()
            }),
            created_at_ms: NOW - HOUR,
            ..Default::default()
        }),
    ]
}

fn api_keys() -> Vec<ApiKey> {
    vec![
        ApiKey::from(v1::ApiKeyInfo {
            tenant: "acme".into(),
            id: "jk-AbCdEfGh".into(),
            name: "ci".into(),
            created_at_ms: NOW - DAY,
            expires_at_ms: NOW + 30 * DAY,
            last_used_ms: NOW - 5 * MINUTE,
        }),
        ApiKey::from(v1::ApiKeyInfo {
            tenant: "acme".into(),
            id: "jk-ZyXwVuTs".into(),
            created_at_ms: NOW,
            ..Default::default()
        }),
    ]
}

fn usage() -> Vec<Usage> {
    vec![
        Usage::from(v1::UsageRow {
            tenant: "acme".into(),
            day: 20_788,
            model: "smollm2".into(),
            requests: 120,
            prompt_tokens: 45_000,
            cached_prompt_tokens: 12_000,
            completion_tokens: 30_000,
            measured_joules: 5400.3,
            ..Default::default()
        }),
        Usage::from(v1::UsageRow {
            tenant: "globex".into(),
            day: 20_789,
            model: "qwen2.5-0.5b".into(),
            requests: 7,
            prompt_tokens: 800,
            completion_tokens: 1500,
            estimated_joules: 96.8,
            ..Default::default()
        }),
    ]
}

fn worker_models() -> Vec<pb::ModelInfo> {
    vec![
        pb::ModelInfo {
            name: "smollm2".into(),
            path: "/models/smollm2.gguf".into(),
            sha256: SHA_A.into(),
            architecture: "llama".into(),
            parameters: 135_000_000,
            context_length: 8192,
            memory_bytes: 300 << 20,
            kv_blocks: 512,
            kv_block_size: 16,
        },
        pb::ModelInfo {
            name: "qwen2.5-0.5b".into(),
            path: "/models/qwen.gguf".into(),
            sha256: SHA_B.into(),
            architecture: "qwen2".into(),
            parameters: 494_000_000,
            context_length: 32_768,
            memory_bytes: 1536 << 20,
            kv_blocks: 1024,
            kv_block_size: 16,
        },
    ]
}

fn worker_stats() -> pb::StatsResponse {
    let measured = v1::EnergySource::Measured as i32;
    pb::StatsResponse {
        models: vec![pb::ModelStats {
            model: "smollm2".into(),
            running: 2,
            waiting: 1,
            kv_blocks_used: 100,
            kv_blocks_free: 412,
            prefix_hit_rate: 0.25,
            output_tokens_per_s: 88.88,
            joules: 500.0,
            output_tokens: 10_000,
            energy_source: measured,
            calibration: Some(pb::Calibration {
                points: vec![
                    pb::CalibrationPoint {
                        batch_size: 1,
                        output_tokens_per_s: 20.0,
                        watts: 60.0,
                        tokens_per_joule: 0.333,
                    },
                    pb::CalibrationPoint {
                        batch_size: 8,
                        output_tokens_per_s: 120.0,
                        watts: 90.0,
                        tokens_per_joule: 1.3333,
                    },
                ],
                source: measured,
                ..Default::default()
            }),
            ..Default::default()
        }],
        power: Some(pb::PowerReading {
            watts: 95.5,
            joules: 12_345.6,
            source: measured,
            sensors: vec!["nvml:0".into(), "rapl:package-0".into()],
        }),
        ..Default::default()
    }
}

#[test]
fn nodes_golden() {
    freeze();
    let v = nodes();
    let mut s = tables("nodes", &v);
    s.push_str(&format!(
        "\n$ joulectl describe node gpu-1\n{}",
        node::describe(&v[0])
    ));
    golden("nodes.txt", &s);
    let j = json_items(&v);
    assert_eq!(j[0]["name"], "gpu-1");
    assert_eq!(j[0]["logical_cpus"], 64);
    assert_eq!(j[0]["memory_bytes"], 256 * GIB);
    assert_eq!(j[0]["watts"], 412.4);
    assert_eq!(j[0]["labels"]["gpu"], "h100");
    assert_eq!(j[0]["placements"][0]["node"], "gpu-1");
    assert_eq!(
        (j[1]["name"].as_str(), j[1]["schedule"].as_str()),
        (Some("cpu-2"), Some("Cordoned"))
    );
}

#[test]
fn models_golden() {
    freeze();
    let v = models();
    let mut s = tables("models", &v);
    s.push_str(&format!(
        "\n$ joulectl describe model smollm2\n{}",
        model::describe(&v[0])
    ));
    golden("models.txt", &s);
    let j = json_items(&v);
    assert_eq!(j[0]["name"], "smollm2");
    assert_eq!(j[0]["sha256"], SHA_A);
    assert_eq!(j[0]["size_bytes"], 270_000_000);
    assert_eq!(j[0]["used_by"][1], "smollm2-fast");
    assert_eq!(j[1]["source"], "file:///models/qwen.gguf");
}

#[test]
fn deployments_golden() {
    freeze();
    let v = deployments();
    let mut s = tables("deployments", &v);
    for d in &v {
        s.push_str(&format!(
            "\n$ joulectl describe deployment {}\n{}",
            d.name,
            deployment::describe(d)
        ));
    }
    golden("deployments.txt", &s);
    let j = json_items(&v);
    assert_eq!(
        (j[0]["name"].as_str(), j[0]["replicas"].as_str()),
        (Some("smollm2"), Some("2"))
    );
    assert_eq!(j[0]["node_selector"]["gpu"], "h100");
    assert_eq!(j[0]["ttft_p95_ms"], 500);
    assert_eq!(j[0]["priority"], 5);
    assert_eq!(j[0]["placements"][1]["progress"], 0.42);
    assert_eq!(
        (j[1]["replicas"].as_str(), j[1]["max_replicas"].as_u64()),
        (Some("auto"), Some(4))
    );
    assert_eq!(j[1]["pending_reason"], "no node has 1.0Gi free");
}

#[test]
fn placements_golden() {
    freeze();
    let v: Vec<Placement> = placements().into_iter().map(Placement::from).collect();
    golden("placements.txt", &tables("placements", &v));
    let j = json_items(&v);
    assert_eq!(
        (j[1]["node"].as_str(), j[1]["state"].as_str()),
        (Some("gpu-3"), Some("Fetching"))
    );
    assert_eq!(j[1]["failures"], 1);
    assert_eq!(j[2]["retiring"], true);
}

#[test]
fn tenants_golden() {
    freeze();
    let v = tenants();
    let mut s = tables("tenants", &v);
    s.push_str(&format!(
        "\n$ joulectl describe tenant acme\n{}",
        tenant::describe(&v[0])
    ));
    golden("tenants.txt", &s);
    let j = json_items(&v);
    assert_eq!(
        (j[0]["name"].as_str(), j[0]["weight"].as_f64()),
        (Some("acme"), Some(3.0))
    );
    assert_eq!(j[0]["tokens_per_minute"], 100_000);
    assert_eq!(j[0]["joules_per_month"], 3.6e6);
    assert_eq!(j[0]["deployments"][1], "chat");
    // Weight 0 means 1; an unset limit is 0 in JSON (a dash only in tables).
    assert_eq!(
        (
            j[1]["weight"].as_f64(),
            j[1]["requests_per_minute"].as_u64()
        ),
        (Some(0.5), Some(0))
    );
}

#[test]
fn api_keys_golden() {
    freeze();
    let v = api_keys();
    golden("apikeys.txt", &tables("apikeys --tenant acme", &v));
    let j = json_items(&v);
    assert_eq!(
        (j[0]["id"].as_str(), j[0]["name"].as_str()),
        (Some("jk-AbCdEfGh"), Some("ci"))
    );
    assert_eq!(j[0]["expires_at_ms"], NOW + 30 * DAY);
    assert_eq!(j[1]["last_used_ms"], 0);
    assert!(
        j.iter().all(|k| k.get("key").is_none()),
        "a key is never listed: {j:?}"
    );
}

#[test]
fn usage_golden() {
    freeze();
    let v = usage();
    golden("usage.txt", &tables("usage", &v));
    let j = json_items(&v);
    assert_eq!(
        (j[0]["tenant"].as_str(), j[0]["day"].as_str()),
        (Some("acme"), Some("2026-12-01"))
    );
    assert_eq!(j[0]["prompt_tokens"], 45_000);
    assert_eq!(j[0]["measured_joules"], 5400.3);
    assert_eq!(j[1]["estimated_joules"], 96.8);
}

#[test]
fn workers_golden() {
    freeze();
    let ms = worker_models();
    let st = worker_stats();
    let s = format!(
        "$ joulectl models\n{}\n$ joulectl stats\n{}",
        render::table_text(&worker::MODEL_HEADERS, worker::model_rows(&ms)),
        worker::stats_text(&worker::stats_view(&st))
    );
    golden("workers.txt", &s);
    let text = render::emit_text(&worker::model_views(&ms), Format::Json).unwrap();
    let j: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["items"][1]["name"], "qwen2.5-0.5b");
    assert_eq!(j["items"][1]["parameters"], 494_000_000);
    assert_eq!(j["items"][0]["kv_blocks"], 512);
    let text = render::emit_text(&worker::stats_view(&st), Format::Json).unwrap();
    let j: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (j["watts"].as_f64(), j["energy"].as_str()),
        (Some(95.5), Some("measured"))
    );
    assert_eq!(j["sensors"][1], "rapl:package-0");
    assert_eq!(j["models"][0]["output_tokens"], 10_000);
    assert_eq!(j["models"][0]["calibration"][1]["batch_size"], 8);
    assert_eq!(j["models"][0]["calibration"][1]["tokens_per_joule"], 1.3333);
}

#[test]
fn yaml_parses_back_too() {
    freeze();
    let text = render::list_text(&nodes(), Format::Yaml).unwrap();
    let v: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(v["items"][0]["name"], "gpu-1");
    assert_eq!(v["items"][1]["memory_bytes"], 512u64 << 20);
}
