//! A model of the cluster: `get models`, `describe model`.

use joule_proto::v1;
use serde::Serialize;

use crate::render::{Render, age, bytes};

#[derive(Debug, Serialize)]
pub struct Model {
    pub name: String,
    pub source: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub format: String,
    pub created_at_ms: i64,
    pub used_by: Vec<String>,
}

impl From<v1::ModelInfo> for Model {
    fn from(m: v1::ModelInfo) -> Self {
        let s = m.spec.unwrap_or_default();
        Self {
            name: s.name,
            source: s.source,
            sha256: s.sha256,
            size_bytes: s.size_bytes,
            format: s.format,
            created_at_ms: m.created_at_ms,
            used_by: m.used_by,
        }
    }
}

impl Render for Model {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "SIZE", "USED BY", "AGE"];
        if wide {
            h.extend(["SHA256", "SOURCE"]);
        }
        h
    }

    fn row(&self, wide: bool) -> Vec<String> {
        let mut r = vec![
            self.name.clone(),
            bytes(self.size_bytes),
            if self.used_by.is_empty() {
                "-".into()
            } else {
                self.used_by.join(",")
            },
            age(self.created_at_ms, super::now_ms()),
        ];
        if wide {
            r.extend([self.sha256.chars().take(12).collect(), self.source.clone()]);
        }
        r
    }
}

pub fn describe(m: &Model) -> String {
    let mut s = String::new();
    let mut kv = |k: &str, v: String| s.push_str(&format!("{:<12}{v}\n", format!("{k}:")));
    kv("Name", m.name.clone());
    kv("Source", m.source.clone());
    kv("SHA256", m.sha256.clone());
    kv(
        "Size",
        format!("{} ({} bytes)", bytes(m.size_bytes), m.size_bytes),
    );
    kv("Format", m.format.clone());
    kv("Age", age(m.created_at_ms, super::now_ms()));
    kv(
        "Used by",
        if m.used_by.is_empty() {
            "no deployment".into()
        } else {
            m.used_by.join(", ")
        },
    );
    s
}
