//! Live figures: `top nodes` and `top deployments` (tokens/s, watts, tokens per joule, KV use,
//! requests running and waiting, and whether the watts are measured or estimated), from the
//! workers' latest heartbeats as the leader heard them.

use joule_proto::v1;
use serde::Serialize;

use crate::render::Render;

#[derive(Debug, Serialize)]
pub struct NodeTop {
    pub name: String,
    pub status: String,
    pub schedule: String,
    pub output_tokens_per_s: f64,
    pub watts: f64,
    pub tokens_per_joule: f64,
    pub kv_blocks_used: u64,
    pub kv_blocks_total: u64,
    /// KV blocks in use over all of them (none when the worker reported no cache).
    pub kv_used: Option<f64>,
    pub running: u32,
    pub waiting: u32,
    /// "measured", "estimated", or empty when not reported.
    pub energy_source: String,
    /// How long ago the leader heard from it (none: not since it leads).
    pub heard_ms_ago: Option<i64>,
}

impl From<v1::NodeTop> for NodeTop {
    fn from(n: v1::NodeTop) -> Self {
        Self {
            kv_used: (n.kv_blocks_total > 0)
                .then_some(n.kv_blocks_used as f64 / n.kv_blocks_total as f64),
            heard_ms_ago: (n.heard_ms_ago >= 0).then_some(n.heard_ms_ago),
            name: n.name,
            status: n.status,
            schedule: n.schedule,
            output_tokens_per_s: n.output_tokens_per_s,
            watts: n.watts,
            tokens_per_joule: n.tokens_per_joule,
            kv_blocks_used: n.kv_blocks_used,
            kv_blocks_total: n.kv_blocks_total,
            running: n.running,
            waiting: n.waiting,
            energy_source: n.energy_source,
        }
    }
}

/// "1.25", or "-" when there is no figure to divide by.
fn per_joule(tpj: f64, watts: f64) -> String {
    if watts > 0.0 {
        format!("{tpj:.2}")
    } else {
        "-".into()
    }
}

fn source(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

impl Render for NodeTop {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec![
            "NAME", "STATUS", "TOK/S", "WATTS", "TOK/J", "KV", "RUNNING", "WAITING", "ENERGY",
        ];
        if wide {
            h.extend(["KV BLOCKS", "HEARD"]);
        }
        h
    }

    fn row(&self, wide: bool) -> Vec<String> {
        let status = match self.schedule.as_str() {
            "Cordoned" => format!("{},SchedulingDisabled", self.status),
            "Draining" => format!("{},Draining", self.status),
            _ => self.status.clone(),
        };
        let mut r = vec![
            self.name.clone(),
            status,
            format!("{:.1}", self.output_tokens_per_s),
            format!("{:.1}", self.watts),
            per_joule(self.tokens_per_joule, self.watts),
            self.kv_used
                .map_or_else(|| "-".into(), |u| format!("{:.0}%", u * 100.0)),
            self.running.to_string(),
            self.waiting.to_string(),
            source(&self.energy_source),
        ];
        if wide {
            r.extend([
                format!("{}/{}", self.kv_blocks_used, self.kv_blocks_total),
                self.heard_ms_ago.map_or_else(
                    || "-".into(),
                    |ms| format!("{:.1}s ago", ms as f64 / 1000.0),
                ),
            ]);
        }
        r
    }
}

#[derive(Debug, Serialize)]
pub struct DeploymentTop {
    pub name: String,
    pub model: String,
    pub ready_replicas: u32,
    pub desired_replicas: u32,
    pub output_tokens_per_s: f64,
    /// Its share of its nodes' watts.
    pub watts: f64,
    pub tokens_per_joule: f64,
    pub running: u32,
    pub waiting: u32,
    pub energy_source: String,
}

impl From<v1::DeploymentTop> for DeploymentTop {
    fn from(d: v1::DeploymentTop) -> Self {
        Self {
            name: d.name,
            model: d.model,
            ready_replicas: d.ready_replicas,
            desired_replicas: d.desired_replicas,
            output_tokens_per_s: d.output_tokens_per_s,
            watts: d.watts,
            tokens_per_joule: d.tokens_per_joule,
            running: d.running,
            waiting: d.waiting,
            energy_source: d.energy_source,
        }
    }
}

impl Render for DeploymentTop {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec![
            "NAME", "READY", "TOK/S", "WATTS", "TOK/J", "RUNNING", "WAITING", "ENERGY",
        ];
        if wide {
            h.push("MODEL");
        }
        h
    }

    fn row(&self, wide: bool) -> Vec<String> {
        let mut r = vec![
            self.name.clone(),
            format!("{}/{}", self.ready_replicas, self.desired_replicas),
            format!("{:.1}", self.output_tokens_per_s),
            format!("{:.1}", self.watts),
            per_joule(self.tokens_per_joule, self.watts),
            self.running.to_string(),
            self.waiting.to_string(),
            source(&self.energy_source),
        ];
        if wide {
            r.push(self.model.clone());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_shows_its_rate_power_efficiency_and_cache() {
        let n = NodeTop::from(v1::NodeTop {
            name: "w1".into(),
            status: "Ready".into(),
            schedule: "Cordoned".into(),
            output_tokens_per_s: 42.0,
            watts: 84.0,
            tokens_per_joule: 0.5,
            kv_blocks_used: 16,
            kv_blocks_total: 64,
            running: 2,
            waiting: 1,
            energy_source: "estimated".into(),
            heard_ms_ago: 1500,
        });
        assert_eq!(
            n.row(true),
            [
                "w1",
                "Ready,SchedulingDisabled",
                "42.0",
                "84.0",
                "0.50",
                "25%",
                "2",
                "1",
                "estimated",
                "16/64",
                "1.5s ago"
            ]
        );
        let idle = NodeTop::from(v1::NodeTop {
            heard_ms_ago: -1,
            ..Default::default()
        });
        let row = idle.row(false);
        assert_eq!(
            (row[4].as_str(), row[5].as_str(), row[8].as_str()),
            ("-", "-", "-")
        );
        assert_eq!(idle.heard_ms_ago, None);
        assert_eq!(row.len(), NodeTop::headers(false).len());
    }

    #[test]
    fn a_deployment_shows_its_replicas_and_sums() {
        let d = DeploymentTop::from(v1::DeploymentTop {
            name: "chat".into(),
            model: "smollm2".into(),
            ready_replicas: 1,
            desired_replicas: 2,
            output_tokens_per_s: 10.0,
            watts: 40.0,
            tokens_per_joule: 0.25,
            running: 3,
            waiting: 0,
            energy_source: "measured".into(),
        });
        assert_eq!(
            d.row(true),
            [
                "chat", "1/2", "10.0", "40.0", "0.25", "3", "0", "measured", "smollm2"
            ]
        );
    }
}
