//! A placement (one replica of a deployment on one node): `get placements`, and the
//! placements of `describe deployment` and `describe node`.

use joule_proto::v1;
use serde::Serialize;

use crate::render::{Render, age};

#[derive(Debug, Serialize)]
pub struct Placement {
    pub deployment: String,
    pub node: String,
    pub model: String,
    pub state: String,
    pub message: String,
    pub since_ms: i64,
    pub reason: String,
    pub progress: f64,
    pub retiring: bool,
    pub failures: u32,
}

impl From<v1::PlacementInfo> for Placement {
    fn from(p: v1::PlacementInfo) -> Self {
        Self {
            deployment: p.deployment,
            node: p.node,
            model: p.model,
            state: p.state,
            message: p.message,
            since_ms: p.since_ms,
            reason: p.reason,
            progress: p.progress,
            retiring: p.retiring,
            failures: p.failures,
        }
    }
}

impl Placement {
    /// "Ready", "Fetching 42%", "Ready,Retiring", "Failed (2x)".
    pub fn state_column(&self) -> String {
        let mut s = self.state.clone();
        if self.state == "Fetching" {
            s = format!("Fetching {:.0}%", self.progress * 100.0);
        }
        if self.failures > 0 {
            s = format!("{s} ({}x failed)", self.failures);
        }
        if self.retiring {
            s.push_str(",Retiring");
        }
        s
    }
}

impl Render for Placement {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["DEPLOYMENT", "NODE", "STATE", "AGE"];
        if wide {
            h.extend(["MODEL", "REASON", "MESSAGE"]);
        }
        h
    }

    fn row(&self, wide: bool) -> Vec<String> {
        let mut r = vec![
            self.deployment.clone(),
            self.node.clone(),
            self.state_column(),
            age(self.since_ms, super::now_ms()),
        ];
        if wide {
            r.extend([
                self.model.clone(),
                self.reason.clone(),
                self.message.clone(),
            ]);
        }
        r
    }
}

/// The "Placements:" block of `describe`, each named by `name` (its node, or its deployment).
pub fn describe(ps: &[Placement], name: fn(&Placement) -> &str) -> String {
    let mut s = String::from("Placements:\n");
    if ps.is_empty() {
        s.push_str("  none\n");
    }
    for p in ps {
        s.push_str(&format!("  {:<20} {}\n", name(p), p.state_column()));
        if !p.reason.is_empty() {
            s.push_str(&format!("    reason:  {}\n", p.reason));
        }
        if !p.message.is_empty() {
            s.push_str(&format!("    message: {}\n", p.message));
        }
    }
    s
}
