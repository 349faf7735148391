//! A deployment: `get deployments`, `describe deployment` (with each placement's reason).

use std::collections::BTreeMap;

use joule_proto::v1;
use serde::Serialize;

use super::placement::Placement;
use crate::render::{Render, age};

#[derive(Debug, Serialize)]
pub struct Deployment {
    pub name: String,
    pub model: String,
    /// A number, or "auto".
    pub replicas: String,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub desired_replicas: u32,
    pub ready_replicas: u32,
    pub node_selector: BTreeMap<String, String>,
    pub ttft_p95_ms: u32,
    pub itl_p95_ms: u32,
    pub priority: i32,
    pub generation: u64,
    pub created_at_ms: i64,
    pub pending_reason: String,
    pub placements: Vec<Placement>,
}

impl From<v1::DeploymentInfo> for Deployment {
    fn from(d: v1::DeploymentInfo) -> Self {
        let s = d.spec.unwrap_or_default();
        Self {
            name: s.name,
            model: s.model,
            replicas: if s.autoscale {
                "auto".into()
            } else {
                s.replicas.to_string()
            },
            min_replicas: s.min_replicas,
            max_replicas: s.max_replicas,
            desired_replicas: d.desired_replicas,
            ready_replicas: d.ready_replicas,
            node_selector: s.selector,
            ttft_p95_ms: s.ttft_p95_ms,
            itl_p95_ms: s.itl_p95_ms,
            priority: s.priority,
            generation: d.generation,
            created_at_ms: d.created_at_ms,
            pending_reason: d.pending_reason,
            placements: d.placements.into_iter().map(Placement::from).collect(),
        }
    }
}

fn selector(s: &BTreeMap<String, String>) -> String {
    if s.is_empty() {
        return "-".into();
    }
    s.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Render for Deployment {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "MODEL", "READY", "AGE"];
        if wide {
            h.extend(["REPLICAS", "SELECTOR", "NODES", "PENDING"]);
        }
        h
    }

    fn row(&self, wide: bool) -> Vec<String> {
        let mut r = vec![
            self.name.clone(),
            self.model.clone(),
            format!("{}/{}", self.ready_replicas, self.desired_replicas),
            age(self.created_at_ms, super::now_ms()),
        ];
        if wide {
            r.extend([
                self.replicas.clone(),
                selector(&self.node_selector),
                self.placements
                    .iter()
                    .map(|p| p.node.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                if self.pending_reason.is_empty() {
                    "-".into()
                } else {
                    self.pending_reason.clone()
                },
            ]);
        }
        r
    }
}

pub fn describe(d: &Deployment) -> String {
    let mut s = String::new();
    // One column past the longest key ("Node selector:").
    let mut kv = |k: &str, v: String| s.push_str(&format!("{:<15}{v}\n", format!("{k}:")));
    kv("Name", d.name.clone());
    kv("Model", d.model.clone());
    kv(
        "Replicas",
        if d.replicas == "auto" {
            format!(
                "auto ({} to {}), now {}",
                d.min_replicas, d.max_replicas, d.desired_replicas
            )
        } else {
            d.replicas.clone()
        },
    );
    kv(
        "Ready",
        format!("{}/{}", d.ready_replicas, d.desired_replicas),
    );
    kv("Node selector", selector(&d.node_selector));
    let ms = |v: u32| {
        if v == 0 {
            "none".to_string()
        } else {
            format!("{v} ms")
        }
    };
    kv(
        "Latency",
        format!(
            "TTFT p95 {}, ITL p95 {}",
            ms(d.ttft_p95_ms),
            ms(d.itl_p95_ms)
        ),
    );
    kv("Priority", d.priority.to_string());
    kv("Generation", d.generation.to_string());
    kv("Age", age(d.created_at_ms, super::now_ms()));
    if !d.pending_reason.is_empty() {
        kv("Pending", d.pending_reason.clone());
    }
    s.push_str(&super::placement::describe(&d.placements, |p| &p.node));
    s
}
