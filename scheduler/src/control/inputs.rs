//! The placement function's input from the replicated state and the leader's liveness records.
//! A worker's figures come from what it reported (hardware, memory for models, power, labels,
//! calibration profiles); what it did not report gets a documented default, labelled estimated
//! where it becomes a profile.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use joule_proto::internal::v1 as pb;
use joule_proto::v1::EnergySource;

use super::Settings;
use crate::placement::{self as pl, Health, Replicas, Schedule, Source};

/// What the leader knows now.
pub struct View<'a> {
    pub state: &'a pb::ClusterState,
    /// How long each worker has been silent (the leader's records, this term).
    pub silence: &'a HashMap<String, Duration>,
    pub loads: &'a HashMap<String, pb::WorkerLoad>,
    pub now_ms: i64,
    pub settings: &'a Settings,
}

/// Per node: whether it counts as gone (its placements move now, no make-before-break).
pub type Gone = BTreeMap<String, bool>;

/// Watts and bandwidth assumed where a worker reports none (the worker's own defaults for
/// --idle-watts/--busy-watts; bandwidth: a dual-channel DDR4 server, a mid-range GPU).
pub const DEFAULT_IDLE_W: f64 = 40.0;
pub const DEFAULT_BUSY_W: f64 = 120.0;
pub const CPU_BANDWIDTH_GBS: f64 = 20.0;
const GPU_BANDWIDTH_GBS: f64 = 300.0;
/// Share of a worker's RAM placement may fill when it reports no model budget.
const RAM_SHARE: f64 = 0.8;

/// Backoff before a failed placement is tried on the same node again.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(failures.min(9)).min(300))
}

pub fn build(v: &View) -> (pl::Input, Gone) {
    let st = v.state;
    let mut gone = Gone::new();
    let nodes = st
        .nodes
        .values()
        .map(|n| {
            let (node, is_gone) = node(v, n);
            gone.insert(n.name.clone(), is_gone);
            node
        })
        .collect();
    let deployments = st
        .deployments
        .values()
        .filter_map(|d| deployment(v, d))
        .collect();
    let current = st
        .placements
        .values()
        .filter(|p| p.state != pb::PlacementState::Failed as i32 && !p.retiring)
        .map(|p| pl::Current {
            deployment: p.deployment.clone(),
            node: p.node.clone(),
        })
        .collect();
    (
        pl::Input {
            nodes,
            deployments,
            current,
        },
        gone,
    )
}

fn node(v: &View, n: &pb::Node) -> (pl::Node, bool) {
    let hw = n.hardware.clone().unwrap_or_default();
    let after = v.settings.reschedule_after;
    // Silent since the last heartbeat this leader heard, but never longer than since the
    // worker last (re)registered or came back.
    let since_ready = (n.status == pb::NodeStatus::Ready as i32)
        .then(|| Duration::from_millis(v.now_ms.saturating_sub(n.status_since_ms).max(0) as u64));
    let silent = v.silence.get(&n.name).copied().unwrap_or_default();
    let silent = since_ready.map_or(silent, |r| silent.min(r));
    let unreachable_for = if n.status == pb::NodeStatus::Unreachable as i32 {
        Duration::from_millis(v.now_ms.saturating_sub(n.status_since_ms).max(0) as u64)
    } else {
        Duration::ZERO
    };
    let gone = silent >= after || unreachable_for >= after;
    let health = if gone {
        Health::Unreachable
    } else {
        Health::Ready
    };
    let schedule = match pb::NodeSchedule::try_from(n.schedule) {
        Ok(pb::NodeSchedule::Draining) => Schedule::Draining,
        Ok(pb::NodeSchedule::Cordoned) => Schedule::Cordoned,
        // Missed heartbeats but not yet past --reschedule-after: keep, take nothing new.
        _ if n.status == pb::NodeStatus::Unreachable as i32 => Schedule::Cordoned,
        _ => Schedule::Active,
    };
    let gpu = !hw.gpus.is_empty() && hw.device.starts_with("cuda");
    let memory = if hw.model_memory_bytes > 0 {
        hw.model_memory_bytes
    } else {
        (hw.memory_bytes as f64 * RAM_SHARE) as u64
    };
    // Retiring placements still hold their memory until they unload.
    let retiring: u64 = v
        .state
        .placements
        .values()
        .filter(|p| p.node == n.name && p.retiring)
        .filter_map(|p| v.state.models.get(&p.model))
        .map(|m| m.size_bytes.saturating_add(v.settings.kv_reserve_bytes))
        .sum();
    let memory = memory.saturating_sub(retiring);
    let class = if gpu {
        hw.gpus.first().cloned().unwrap_or_default()
    } else {
        format!("cpu {} {}", hw.cpu_model, hw.simd)
    };
    let positive = |x: f64, d: f64| if x.is_finite() && x > 0.0 { x } else { d };
    let profiles = n
        .profiles
        .iter()
        .filter_map(|p| {
            let cal = p.calibration.as_ref()?;
            let model = st_model_by_sha(v.state, &p.sha256)?;
            // The node's own calibration: its throughput is measured; its watts are
            // measured (NVML, RAPL) or estimated from its configured figures, and the note
            // says which.
            let watts_measured = cal.source == EnergySource::Measured as i32;
            Some((
                model,
                pl::Profile {
                    points: cal
                        .points
                        .iter()
                        .map(|x| pl::Point {
                            batch: x.batch_size,
                            tokens_per_s: x.output_tokens_per_s,
                            watts: x.watts,
                        })
                        .collect(),
                    source: Source::Measured,
                    note: if watts_measured {
                        "measured".into()
                    } else {
                        "calibrated here; watts estimated from --idle-watts/--busy-watts".into()
                    },
                },
            ))
        })
        .collect();
    let node = pl::Node {
        name: n.name.clone(),
        class,
        labels: n.labels.clone(),
        health,
        schedule,
        memory_bytes: memory,
        mem_bandwidth_gbs: positive(
            hw.mem_bandwidth_gbs,
            if gpu {
                GPU_BANDWIDTH_GBS
            } else {
                CPU_BANDWIDTH_GBS
            },
        ),
        idle_watts: positive(hw.idle_watts, DEFAULT_IDLE_W),
        busy_watts: positive(hw.busy_watts, DEFAULT_BUSY_W),
        profiles,
    };
    (node, gone)
}

/// The cluster's name for the model file with this sha256.
fn st_model_by_sha(st: &pb::ClusterState, sha: &str) -> Option<String> {
    st.models
        .values()
        .find(|m| !sha.is_empty() && m.sha256 == sha)
        .map(|m| m.name.clone())
}

fn deployment(v: &View, d: &pb::Deployment) -> Option<pl::Deployment> {
    let model = v.state.models.get(&d.model)?;
    let replicas = if d.autoscale {
        Replicas::Auto {
            min: d.min_replicas,
            max: d.max_replicas,
        }
    } else {
        Replicas::Fixed(d.replicas)
    };
    let itl = match (
        d.itl_p95_ms,
        d.constraints.as_ref().map_or(0, |c| c.max_ms_per_token),
    ) {
        (0, 0) => None,
        (0, c) => Some(f64::from(c)),
        (t, _) => Some(f64::from(t)),
    };
    // Demand: the tokens/s its replicas deliver, plus the streams waiting for a slot (each
    // as much as a running one).
    let mut demand = 0.0;
    for p in v
        .state
        .placements
        .values()
        .filter(|p| p.deployment == d.name)
    {
        if let Some(l) = v.loads.get(&p.node)
            && let Some(m) = l.models.iter().find(|m| m.model == d.name)
        {
            let per_stream = m.output_tokens_per_s / f64::from(m.running.max(1));
            demand += m.output_tokens_per_s + per_stream * f64::from(m.waiting);
        }
    }
    let mut excluded = BTreeMap::new();
    for p in v
        .state
        .placements
        .values()
        .filter(|p| p.deployment == d.name && p.state == pb::PlacementState::Failed as i32)
    {
        let until = p.since_ms + backoff(p.failures).as_millis() as i64;
        if until > v.now_ms {
            excluded.insert(
                p.node.clone(),
                format!(
                    "load failed {}x ({}); backing off {} s",
                    p.failures,
                    p.message,
                    backoff(p.failures).as_secs()
                ),
            );
        }
    }
    Some(pl::Deployment {
        name: d.name.clone(),
        model: d.model.clone(),
        weights_bytes: model.size_bytes,
        kv_bytes: v.settings.kv_reserve_bytes,
        replicas,
        selector: d.selector.clone(),
        max_itl_ms: itl,
        priority: d.priority,
        demand_tokens_per_s: demand,
        excluded,
    })
}
