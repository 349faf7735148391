//! A node (worker) of the cluster: `get nodes`, `describe node`.

use joule_proto::v1;
use serde::Serialize;

use crate::render::{Render, age, bytes};

#[derive(Debug, Serialize)]
pub struct Node {
    pub name: String,
    pub address: String,
    pub status: String,
    pub schedule: String,
    pub registered_at_ms: i64,
    pub status_since_ms: i64,
    pub cpu_model: String,
    pub logical_cpus: u32,
    pub memory_bytes: u64,
    pub gpus: Vec<String>,
    /// Models with a calibration profile on it.
    pub models: Vec<String>,
    pub running: u32,
    pub output_tokens_per_s: f64,
    pub watts: f64,
    pub labels: std::collections::BTreeMap<String, String>,
    pub model_memory_bytes: u64,
    pub placed_bytes: u64,
    pub placements: Vec<super::placement::Placement>,
}

impl From<v1::NodeInfo> for Node {
    fn from(n: v1::NodeInfo) -> Self {
        Self {
            name: n.name,
            address: n.address,
            status: n.status,
            schedule: n.schedule,
            registered_at_ms: n.registered_at_ms,
            status_since_ms: n.status_since_ms,
            cpu_model: n.cpu_model,
            logical_cpus: n.logical_cpus,
            memory_bytes: n.memory_bytes,
            gpus: n.gpus,
            models: n.models,
            running: n.running,
            output_tokens_per_s: n.output_tokens_per_s,
            watts: n.watts,
            labels: n.labels,
            model_memory_bytes: n.model_memory_bytes,
            placed_bytes: n.placed_bytes,
            placements: n
                .placements
                .into_iter()
                .map(super::placement::Placement::from)
                .collect(),
        }
    }
}

impl Node {
    /// kubectl's STATUS column: "Ready", "Ready,SchedulingDisabled", "Unreachable,Draining".
    pub fn status_column(&self) -> String {
        match self.schedule.as_str() {
            "Cordoned" => format!("{},SchedulingDisabled", self.status),
            "Draining" => format!("{},Draining", self.status),
            _ => self.status.clone(),
        }
    }
}

impl Render for Node {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "STATUS", "RUNNING", "WATTS", "AGE"];
        if wide {
            h.extend(["ADDRESS", "CPUS", "MEMORY", "GPUS", "TOK/S", "MODELS"]);
        }
        h
    }

    fn row(&self, wide: bool) -> Vec<String> {
        let mut r = vec![
            self.name.clone(),
            self.status_column(),
            self.running.to_string(),
            format!("{:.0}", self.watts),
            age(self.registered_at_ms, super::now_ms()),
        ];
        if wide {
            r.extend([
                self.address.clone(),
                self.logical_cpus.to_string(),
                bytes(self.memory_bytes),
                if self.gpus.is_empty() {
                    "-".into()
                } else {
                    self.gpus.len().to_string()
                },
                format!("{:.1}", self.output_tokens_per_s),
                self.models.join(","),
            ]);
        }
        r
    }
}

/// `describe node`: the fields one per line, as kubectl describes.
pub fn describe(n: &Node) -> String {
    let mut s = String::new();
    let mut kv = |k: &str, v: String| s.push_str(&format!("{:<18}{v}\n", format!("{k}:")));
    kv("Name", n.name.clone());
    kv("Address", n.address.clone());
    kv("Status", n.status.clone());
    kv("Schedule", n.schedule.clone());
    kv("Age", age(n.registered_at_ms, super::now_ms()));
    kv(
        "CPU",
        format!("{} ({} logical)", n.cpu_model, n.logical_cpus),
    );
    kv("Memory", bytes(n.memory_bytes));
    kv(
        "GPUs",
        if n.gpus.is_empty() {
            "none".into()
        } else {
            n.gpus.join("; ")
        },
    );
    kv(
        "Load",
        format!(
            "{} running, {:.1} tok/s, {:.0} W",
            n.running, n.output_tokens_per_s, n.watts
        ),
    );
    kv(
        "Profiles",
        if n.models.is_empty() {
            "none".into()
        } else {
            n.models.join(", ")
        },
    );
    kv(
        "Labels",
        if n.labels.is_empty() {
            "none".into()
        } else {
            n.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        },
    );
    kv(
        "Model memory",
        format!(
            "{} placed of {}",
            bytes(n.placed_bytes),
            bytes(n.model_memory_bytes)
        ),
    );
    s.push_str(&super::placement::describe(&n.placements, |p| {
        &p.deployment
    }));
    s
}
