//! What operators watch, for `joulectl get events`, `top` and `logs`: the events of the
//! replicated state ([`events`]), live figures per node and deployment from the leader's latest
//! heartbeats ([`top`]), and a worker's log lines fetched from the worker ([`node_logs`]).
//!
//! Pure views of the state and the loads, plus one proxy call to a worker; it never writes
//! anything and never logs a token.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use joule_proto::internal::v1 as pb;
use joule_proto::v1;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Code, Status};

use super::admin::{schedule_name, status_name};
use super::workloads;
use crate::error::{Error, Result};

/// A worker's log lines as the admin API streams them.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<v1::LogLine, Status>> + Send>>;

/// The wire form of an event.
pub fn event_info(e: &pb::Event) -> v1::Event {
    v1::Event {
        r#type: if e.warning { "Warning" } else { "Normal" }.into(),
        reason: e.reason.clone(),
        object: e.object.clone(),
        message: e.message.clone(),
        first_at_ms: e.first_at_ms,
        last_at_ms: e.last_at_ms,
        count: e.count,
    }
}

/// Whether an event is about `object`: "kind/name" exactly, or a bare name of either kind.
fn about(e: &pb::Event, object: &str) -> bool {
    if object.is_empty() || e.object == object {
        return true;
    }
    !object.contains('/') && e.object.split_once('/').is_some_and(|(_, n)| n == object)
}

/// The events about `object` (empty: all), oldest first.
pub fn events(st: &pb::ClusterState, object: &str) -> Vec<v1::Event> {
    st.events
        .iter()
        .filter(|e| about(e, object))
        .map(event_info)
        .collect()
}

/// "measured", "estimated", or "" when the worker did not say.
pub fn source_name(s: i32) -> &'static str {
    match v1::EnergySource::try_from(s) {
        Ok(v1::EnergySource::Measured) => "measured",
        Ok(v1::EnergySource::Estimated) => "estimated",
        _ => "",
    }
}

fn per_joule(tokens_per_s: f64, watts: f64) -> f64 {
    if watts > 0.0 {
        tokens_per_s / watts
    } else {
        0.0
    }
}

/// `model`'s share of its node's watts: by output tokens/s, else by requests running and
/// waiting, else evenly over the models the node serves.
pub fn watts_share(l: &pb::WorkerLoad, model: &str) -> f64 {
    if !l.models.iter().any(|m| m.model == model) {
        return 0.0;
    }
    let by = |f: fn(&pb::ModelLoad) -> f64| {
        let total: f64 = l.models.iter().map(f).sum();
        let mine: f64 = l.models.iter().filter(|m| m.model == model).map(f).sum();
        (total > 0.0).then_some(mine / total)
    };
    by(|m| m.output_tokens_per_s)
        .or_else(|| by(|m| f64::from(m.running) + f64::from(m.waiting)))
        .unwrap_or(1.0 / l.models.len() as f64)
}

/// Each node's and each deployment's figures from the `loads` the leader last heard, `heard`
/// being how long ago it heard each worker.
pub fn top(
    st: &pb::ClusterState,
    loads: &HashMap<String, pb::WorkerLoad>,
    heard: &HashMap<String, Duration>,
) -> (Vec<v1::NodeTop>, Vec<v1::DeploymentTop>) {
    let none = pb::WorkerLoad::default();
    let load = |n: &str| loads.get(n).unwrap_or(&none);
    let nodes = st
        .nodes
        .values()
        .map(|n| {
            let l = load(&n.name);
            v1::NodeTop {
                name: n.name.clone(),
                status: status_name(n.status).into(),
                schedule: schedule_name(n.schedule).into(),
                output_tokens_per_s: l.output_tokens_per_s,
                watts: l.watts,
                tokens_per_joule: per_joule(l.output_tokens_per_s, l.watts),
                kv_blocks_used: l.kv_blocks_used,
                kv_blocks_total: l.kv_blocks_total,
                running: l.running,
                waiting: l.waiting,
                energy_source: source_name(l.energy_source).into(),
                heard_ms_ago: heard
                    .get(&n.name)
                    .map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            }
        })
        .collect();
    let deployments = st
        .deployments
        .values()
        .map(|d| {
            let info = workloads::deployment_info(st, d);
            let mut t = v1::DeploymentTop {
                name: d.name.clone(),
                model: d.model.clone(),
                ready_replicas: info.ready_replicas,
                desired_replicas: info.desired_replicas,
                ..Default::default()
            };
            let mut sources = Vec::new();
            let serving = st.placements.values().filter(|p| {
                p.deployment == d.name && p.state == pb::PlacementState::Serving as i32
            });
            for p in serving {
                let l = load(&p.node);
                if let Some(m) = l.models.iter().find(|m| m.model == d.name) {
                    t.output_tokens_per_s += m.output_tokens_per_s;
                    t.running += m.running;
                    t.waiting += m.waiting;
                }
                t.watts += l.watts * watts_share(l, &d.name);
                sources.push(source_name(l.energy_source));
            }
            t.tokens_per_joule = per_joule(t.output_tokens_per_s, t.watts);
            t.energy_source = if sources.iter().any(|s| s.is_empty()) || sources.is_empty() {
                String::new()
            } else if sources.iter().all(|s| *s == "measured") {
                "measured".into()
            } else {
                "estimated".into()
            };
            t
        })
        .collect();
    (nodes, deployments)
}

/// How a worker's refusal reads to the admin API's caller: a worker that cannot be reached is
/// UNAVAILABLE naming its address; one that refuses is a precondition naming why.
fn worker_refused(node: &str, addr: &str, s: &Status) -> Error {
    match s.code() {
        Code::Unauthenticated | Code::PermissionDenied => Error::Precondition(format!(
            "node {node:?} at {addr} refused this scheduler's --join-token: {}",
            s.message()
        )),
        Code::FailedPrecondition | Code::Unimplemented | Code::InvalidArgument => {
            Error::Precondition(format!("node {node:?} at {addr}: {}", s.message()))
        }
        _ => Error::Unavailable(format!(
            "node {node:?} at {addr} cannot be reached: {}",
            s.message()
        )),
    }
}

/// The log lines of worker `node` at `addr`: its last `tail` (all when unset), then new ones
/// while `follow`, fetched with the cluster's join `token`.
pub async fn node_logs(
    node: &str,
    addr: &str,
    token: &str,
    tail: Option<u32>,
    follow: bool,
) -> Result<LogStream> {
    let connect = joule_client::Connect {
        connect_timeout: Duration::from_secs(2),
        timeout: None,
    };
    let mut c = connect
        .worker(addr, token)
        .map_err(|e| Error::Unavailable(format!("node {node:?}: {e}")))?;
    let lines = c
        .logs(pb::LogsRequest { tail, follow })
        .await
        .map_err(|s| worker_refused(node, addr, &s))?
        .into_inner();
    let (node, addr) = (node.to_string(), addr.to_string());
    Ok(Box::pin(lines.map(move |r| {
        // The client lives as long as the stream its channel carries.
        let _worker = &c;
        r.map(|l| v1::LogLine { text: l.text })
            .map_err(|s| Status::from(worker_refused(&node, &addr, &s)))
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, tps: f64, running: u32) -> pb::ModelLoad {
        pb::ModelLoad {
            model: name.into(),
            running,
            output_tokens_per_s: tps,
            ..Default::default()
        }
    }

    #[test]
    fn watts_are_shared_by_tokens_then_requests_then_evenly() {
        let mut l = pb::WorkerLoad {
            watts: 100.0,
            models: vec![model("a", 30.0, 1), model("b", 10.0, 3)],
            ..Default::default()
        };
        assert_eq!(watts_share(&l, "a"), 0.75);
        l.models = vec![model("a", 0.0, 1), model("b", 0.0, 3)];
        assert_eq!(watts_share(&l, "b"), 0.75);
        l.models = vec![model("a", 0.0, 0), model("b", 0.0, 0)];
        assert_eq!(watts_share(&l, "a"), 0.5);
        assert_eq!(watts_share(&l, "c"), 0.0);
    }

    #[test]
    fn top_sums_a_deployment_over_its_serving_replicas() {
        let mut st = pb::ClusterState::default();
        for n in ["w1", "w2"] {
            st.nodes.insert(
                n.into(),
                pb::Node {
                    name: n.into(),
                    status: pb::NodeStatus::Ready as i32,
                    ..Default::default()
                },
            );
            st.placements.insert(
                format!("chat/{n}"),
                pb::Placement {
                    deployment: "chat".into(),
                    node: n.into(),
                    state: pb::PlacementState::Serving as i32,
                    ..Default::default()
                },
            );
        }
        st.deployments.insert(
            "chat".into(),
            pb::Deployment {
                name: "chat".into(),
                replicas: 2,
                ..Default::default()
            },
        );
        let load = |tps, source: v1::EnergySource| pb::WorkerLoad {
            watts: 50.0,
            output_tokens_per_s: tps,
            energy_source: source as i32,
            kv_blocks_used: 10,
            kv_blocks_total: 40,
            models: vec![model("chat", tps, 1)],
            ..Default::default()
        };
        let loads = HashMap::from([
            ("w1".to_string(), load(20.0, v1::EnergySource::Measured)),
            ("w2".to_string(), load(30.0, v1::EnergySource::Estimated)),
        ]);
        let heard = HashMap::from([("w1".to_string(), Duration::from_millis(150))]);
        let (nodes, deps) = top(&st, &loads, &heard);
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].tokens_per_joule, 0.4);
        assert_eq!(nodes[0].energy_source, "measured");
        assert_eq!((nodes[0].heard_ms_ago, nodes[1].heard_ms_ago), (150, -1));
        assert_eq!(nodes[1].kv_blocks_used, 10);
        let d = &deps[0];
        assert_eq!((d.output_tokens_per_s, d.watts), (50.0, 100.0));
        assert_eq!(
            (d.tokens_per_joule, d.running, d.ready_replicas),
            (0.5, 2, 2)
        );
        assert_eq!(d.energy_source, "estimated");
    }

    #[test]
    fn events_filter_by_object_or_bare_name() {
        let mut st = pb::ClusterState::default();
        for o in ["node/w1", "deployment/chat", "deployment/w1"] {
            st.events.push(pb::Event {
                object: o.into(),
                count: 1,
                ..Default::default()
            });
        }
        assert_eq!(events(&st, "").len(), 3);
        assert_eq!(events(&st, "node/w1").len(), 1);
        assert_eq!(events(&st, "w1").len(), 2);
        assert_eq!(events(&st, "chat")[0].r#type, "Normal");
    }
}
