//! The worker registry (`joule.internal.v1.Registry`). A worker registers through any replica:
//! its record is committed through Raft. It then heartbeats to any replica; a follower passes
//! the heartbeat on to the leader. The leader alone keeps when it last heard from each worker
//! (in memory: heartbeats are not replicated), and commits the transitions: Unreachable after
//! `--unreachable-after` without a heartbeat, Ready again at the next one. A new leader gives
//! every worker a full grace period before judging it, so a failover marks nobody Unreachable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use joule_proto::internal::v1 as pb;
use joule_proto::internal::v1::registry_client::RegistryClient;
use joule_proto::internal::v1::registry_server::Registry;
use pb::command::Kind;
use tonic::{Request, Response, Status};

use crate::raft::{RaftError, RaftNode};
use crate::transport::GrpcTransport;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// When the leader last heard from each worker, and what it said.
#[derive(Default)]
pub struct Liveness {
    inner: Mutex<LiveInner>,
}

#[derive(Default)]
struct LiveInner {
    /// The term this replica's records belong to (records from an older leadership are void).
    term: u64,
    seen: HashMap<String, (Instant, pb::WorkerLoad)>,
}

impl Liveness {
    /// The latest load each worker reported (on the leader).
    pub fn loads(&self) -> HashMap<String, pb::WorkerLoad> {
        let l = self.inner.lock().expect("liveness lock");
        l.seen.iter().map(|(k, v)| (k.clone(), v.1)).collect()
    }

    fn touch(&self, name: &str, load: pb::WorkerLoad) {
        let mut l = self.inner.lock().expect("liveness lock");
        l.seen.insert(name.to_string(), (Instant::now(), load));
    }
}

/// The service, on every replica.
pub struct RegistryService {
    pub node: RaftNode,
    pub transport: Arc<GrpcTransport>,
    /// `None`: this cluster takes no workers (every call is refused).
    pub join_token: Option<String>,
    pub heartbeat: Duration,
    pub live: Arc<Liveness>,
    /// Channel to the leader for passing heartbeats on, by its address.
    pub leader_link: Mutex<Option<(String, RegistryClient<tonic::transport::Channel>)>>,
}

impl RegistryService {
    fn auth<T>(&self, req: &Request<T>, call: &'static str) -> Result<(), Status> {
        let Some(token) = &self.join_token else {
            return Err(Status::unauthenticated(
                "this scheduler takes no workers: start it with --join-token",
            ));
        };
        crate::server::check_bearer(req, token, call, "join")
    }

    fn status(&self, e: RaftError) -> Status {
        crate::server::raft_status(e, &self.node, &self.transport)
    }

    fn leader_client(
        &self,
        addr: &str,
    ) -> Result<RegistryClient<tonic::transport::Channel>, Status> {
        let mut link = self.leader_link.lock().expect("link lock");
        if let Some((a, c)) = link.as_ref()
            && a == addr
        {
            return Ok(c.clone());
        }
        let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::internal(e.to_string()))?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(2));
        let c = RegistryClient::new(ep.connect_lazy());
        *link = Some((addr.to_string(), c.clone()));
        Ok(c)
    }
}

fn check_node(n: &pb::Node) -> Result<(), Status> {
    let name_ok = !n.name.is_empty()
        && n.name.len() <= 253
        && n.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if !name_ok {
        return Err(Status::invalid_argument(format!(
            "node.name: {:?} must be 1 to 253 letters, digits, '-', '.' or '_'",
            n.name
        )));
    }
    crate::config::check_address(&n.address)
        .map_err(|e| Status::invalid_argument(format!("node.address: {e}")))?;
    Ok(())
}

#[tonic::async_trait]
impl Registry for RegistryService {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        self.auth(&req, "Register")?;
        let mut n = req
            .into_inner()
            .node
            .ok_or_else(|| Status::invalid_argument("node: required"))?;
        check_node(&n)?;
        n.registered_at_ms = now_ms();
        let name = n.name.clone();
        let cmd = pb::Command {
            kind: Some(Kind::RegisterNode(pb::RegisterNode { node: Some(n) })),
        };
        let index = self.node.propose(&cmd).await.map_err(|e| self.status(e))?;
        self.live.touch(&name, pb::WorkerLoad::default());
        tracing::info!(node = %name, index, "worker registered");
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval_ms: self.heartbeat.as_millis() as u32,
            index,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.auth(&req, "Heartbeat")?;
        let token = req.metadata().get("authorization").cloned();
        let hb = req.into_inner();
        let st = self.node.status();
        if !st.is_leader {
            // Pass it on to the leader, who keeps the liveness records.
            let addr = self
                .transport
                .address(st.leader)
                .filter(|_| st.leader != 0)
                .ok_or_else(|| {
                    Status::unavailable(format!(
                        "replica {} knows no leader right now; retry",
                        st.id
                    ))
                })?;
            let mut c = self.leader_client(&addr)?;
            let mut fwd = Request::new(hb);
            if let Some(t) = token {
                fwd.metadata_mut().insert("authorization", t);
            }
            return c.heartbeat(fwd).await;
        }
        let status = self
            .node
            .read_local(|sm| sm.state().nodes.get(&hb.name).map(|n| n.status));
        let Some(status) = status else {
            return Err(Status::not_found(format!(
                "the cluster does not know a worker named {:?}; register again",
                hb.name
            )));
        };
        self.live.touch(&hb.name, hb.load.unwrap_or_default());
        if status != pb::NodeStatus::Ready as i32 {
            let cmd = pb::Command {
                kind: Some(Kind::SetNodeStatus(pb::SetNodeStatus {
                    name: hb.name.clone(),
                    status: pb::NodeStatus::Ready as i32,
                    at_ms: now_ms(),
                })),
            };
            self.node.propose(&cmd).await.map_err(|e| self.status(e))?;
            tracing::info!(node = %hb.name, "worker is back: Ready");
        }
        Ok(Response::new(pb::HeartbeatResponse {}))
    }
}

/// On the leader, every `every`: commits Unreachable for each Ready worker not heard from
/// within `after`. Runs on every replica; does nothing while it does not lead.
pub async fn watch_workers(node: RaftNode, live: Arc<Liveness>, every: Duration, after: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if node.is_stopped() {
            return;
        }
        let st = node.status();
        if !st.is_leader {
            continue;
        }
        let nodes: Vec<(String, i32)> = node.read_local(|sm| {
            sm.state()
                .nodes
                .values()
                .map(|n| (n.name.clone(), n.status))
                .collect()
        });
        let now = Instant::now();
        let late: Vec<String> = {
            let mut l = live.inner.lock().expect("liveness lock");
            if l.term != st.term {
                // A new leadership: everyone starts with a full grace period.
                l.term = st.term;
                l.seen.clear();
            }
            let mut late = Vec::new();
            for (name, status) in nodes {
                let seen = l
                    .seen
                    .entry(name.clone())
                    .or_insert((now, pb::WorkerLoad::default()))
                    .0;
                if status == pb::NodeStatus::Ready as i32 && now - seen > after {
                    late.push(name);
                }
            }
            late
        };
        for name in late {
            let cmd = pb::Command {
                kind: Some(Kind::SetNodeStatus(pb::SetNodeStatus {
                    name: name.clone(),
                    status: pb::NodeStatus::Unreachable as i32,
                    at_ms: now_ms(),
                })),
            };
            match node.propose(&cmd).await {
                Ok(_) => {
                    tracing::warn!(node = %name, after_ms = after.as_millis() as u64, "worker missed its heartbeats: Unreachable")
                }
                Err(e) => {
                    tracing::debug!(node = %name, error = %e, "could not mark the worker Unreachable")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_and_addresses_are_checked() {
        let mut n = pb::Node {
            name: "gpu-1.rack2".into(),
            address: "10.0.0.5:50061".into(),
            ..Default::default()
        };
        assert!(check_node(&n).is_ok());
        n.name = "bad name".into();
        assert!(check_node(&n).unwrap_err().message().contains("node.name"));
        n.name = "ok".into();
        n.address = "nowhere".into();
        assert!(
            check_node(&n)
                .unwrap_err()
                .message()
                .contains("node.address")
        );
    }
}
