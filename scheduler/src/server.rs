//! The scheduler's gRPC surface on `--listen`: the receiving end of the Raft transport
//! (`joule.internal.v1.Raft`), the admin API (`joule.v1.Admin`, every call checked against the
//! admin token), the standard health service and server reflection.

use std::sync::Arc;

use joule_proto::internal::v1 as pb;
use joule_proto::internal::v1::raft_server::Raft;
use joule_proto::v1;
use joule_proto::v1::admin_server::Admin;
use protobuf::Message as _;
use tonic::{Request, Response, Status};

use crate::raft::{Membership, RaftError, RaftMessage, RaftNode};
use crate::transport::GrpcTransport;

const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 << 10;

/// Receives other replicas' Raft messages.
pub struct RaftService {
    pub node: RaftNode,
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn step(&self, req: Request<pb::RaftBatch>) -> Result<Response<pb::RaftAck>, Status> {
        let b = req.into_inner();
        if b.to != self.node.id() {
            return Err(Status::failed_precondition(format!(
                "this is replica {}, not {}: check --peers on replica {}",
                self.node.id(),
                b.to,
                b.from
            )));
        }
        // Decode the whole batch first: a bad one is refused whole, never half applied.
        let msgs = b
            .messages
            .iter()
            .map(|m| RaftMessage::parse_from_bytes(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                Status::invalid_argument(format!("a Raft message does not decode: {e}"))
            })?;
        for m in msgs {
            self.node.step(m);
        }
        Ok(Response::new(pb::RaftAck {}))
    }
}

/// `joule.v1.Admin`.
pub struct AdminService {
    pub node: RaftNode,
    pub transport: Arc<GrpcTransport>,
    pub token: String,
    pub live: Arc<crate::registry::Liveness>,
}

fn status_name(s: i32) -> &'static str {
    match pb::NodeStatus::try_from(s) {
        Ok(pb::NodeStatus::Ready) => "Ready",
        Ok(pb::NodeStatus::Unreachable) => "Unreachable",
        _ => "Unknown",
    }
}

fn schedule_name(s: i32) -> &'static str {
    match pb::NodeSchedule::try_from(s) {
        Ok(pb::NodeSchedule::Cordoned) => "Cordoned",
        Ok(pb::NodeSchedule::Draining) => "Draining",
        _ => "Active",
    }
}

fn node_info(n: &pb::Node, load: Option<&pb::WorkerLoad>) -> v1::NodeInfo {
    let hw = n.hardware.clone().unwrap_or_default();
    let load = load.copied().unwrap_or_default();
    v1::NodeInfo {
        name: n.name.clone(),
        address: n.address.clone(),
        status: status_name(n.status).into(),
        schedule: schedule_name(n.schedule).into(),
        registered_at_ms: n.registered_at_ms,
        status_since_ms: n.status_since_ms,
        cpu_model: hw.cpu_model,
        logical_cpus: hw.logical_cpus,
        memory_bytes: hw.memory_bytes,
        gpus: hw.gpus,
        models: n.profiles.iter().map(|p| p.model.clone()).collect(),
        running: load.running,
        output_tokens_per_s: load.output_tokens_per_s,
        watts: load.watts,
    }
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `authorization: Bearer <token>`; refusals are logged without any token's value.
pub(crate) fn check_bearer<T>(
    req: &Request<T>,
    token: &str,
    call: &'static str,
    kind: &'static str,
) -> Result<(), Status> {
    let given = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same(t.as_bytes(), token.as_bytes()) => Ok(()),
        _ => {
            tracing::warn!(call, peer = ?req.remote_addr(), presented = given.is_some(), "{kind} call refused: missing or wrong {kind} token");
            Err(Status::unauthenticated(format!(
                "missing or wrong {kind} token: send `authorization: Bearer <token>` with the \
                 scheduler's --{kind}-token"
            )))
        }
    }
}

impl AdminService {
    fn auth<T>(&self, req: &Request<T>, call: &'static str) -> Result<(), Status> {
        check_bearer(req, &self.token, call, "admin")
    }

    fn status(&self, e: RaftError) -> Status {
        raft_status(e, &self.node, &self.transport)
    }
}

/// A Raft error as the status a client sees, naming the leader (and its address) where that
/// tells the client where to go.
pub(crate) fn raft_status(e: RaftError, node: &RaftNode, transport: &GrpcTransport) -> Status {
    let hint = match node.status().leader {
        0 => "no leader is known".to_string(),
        l => match transport.address(l) {
            Some(a) => format!("the leader is replica {l} at {a}"),
            None => format!("the leader is replica {l}"),
        },
    };
    match e {
        RaftError::NoLeader { .. }
        | RaftError::Timeout { .. }
        | RaftError::LeaderChanged { .. }
        | RaftError::Stopped(_) => Status::unavailable(format!("{e}; {hint}")),
        RaftError::Rejected(m) => Status::failed_precondition(m),
        RaftError::InvalidChange(m) => Status::failed_precondition(format!("{m}; {hint}")),
    }
}

fn key(k: &str) -> Result<(), Status> {
    if k.is_empty() || k.len() > MAX_KEY {
        return Err(Status::invalid_argument(format!(
            "key: must be 1 to {MAX_KEY} bytes, got {}",
            k.len()
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn cluster_status(
        &self,
        req: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        self.auth(&req, "ClusterStatus")?;
        let st = self.node.status();
        let mut ids: Vec<(u64, bool)> = st.voters.iter().map(|i| (*i, true)).collect();
        ids.extend(st.learners.iter().map(|i| (*i, false)));
        let replicas = ids
            .into_iter()
            .map(|(id, voter)| {
                let p = st.progress.iter().find(|p| p.0 == id);
                v1::Replica {
                    id,
                    address: self.transport.address(id).unwrap_or_default(),
                    voter,
                    healthy: match p {
                        Some(p) => p.2,
                        None => id == st.id || (id == st.leader && st.leader != 0),
                    },
                    matched_index: p.map_or(0, |p| p.1),
                }
            })
            .collect();
        Ok(Response::new(v1::ClusterStatusResponse {
            replica: st.id,
            leader: st.leader,
            term: st.term,
            commit_index: st.commit,
            applied_index: st.applied,
            replicas,
        }))
    }

    async fn put_setting(
        &self,
        req: Request<v1::PutSettingRequest>,
    ) -> Result<Response<v1::PutSettingResponse>, Status> {
        self.auth(&req, "PutSetting")?;
        let r = req.into_inner();
        key(&r.key)?;
        if r.value.len() > MAX_VALUE {
            return Err(Status::invalid_argument(format!(
                "value: at most {MAX_VALUE} bytes, got {}",
                r.value.len()
            )));
        }
        let cmd = pb::Command {
            kind: Some(pb::command::Kind::PutSetting(pb::PutSetting {
                key: r.key,
                value: r.value,
            })),
        };
        let index = self.node.propose(&cmd).await.map_err(|e| self.status(e))?;
        Ok(Response::new(v1::PutSettingResponse { index }))
    }

    async fn get_setting(
        &self,
        req: Request<v1::GetSettingRequest>,
    ) -> Result<Response<v1::GetSettingResponse>, Status> {
        self.auth(&req, "GetSetting")?;
        let k = req.into_inner().key;
        key(&k)?;
        let (value, index) = self
            .node
            .read(move |sm| (sm.state().settings.get(&k).cloned(), sm.applied()))
            .await
            .map_err(|e| self.status(e))?;
        Ok(Response::new(v1::GetSettingResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
            index,
        }))
    }

    async fn add_replica(
        &self,
        req: Request<v1::AddReplicaRequest>,
    ) -> Result<Response<v1::AddReplicaResponse>, Status> {
        self.auth(&req, "AddReplica")?;
        let r = req.into_inner();
        if r.id == 0 {
            return Err(Status::invalid_argument("id: replica ids start at 1"));
        }
        crate::config::check_address(&r.address)
            .map_err(|e| Status::invalid_argument(format!("address: {e}")))?;
        // The address first, so that every replica can reach the new one once it is a member.
        let cmd = pb::Command {
            kind: Some(pb::command::Kind::SetReplicaAddress(
                pb::SetReplicaAddress {
                    id: r.id,
                    address: r.address,
                },
            )),
        };
        self.node.propose(&cmd).await.map_err(|e| self.status(e))?;
        let index = self
            .node
            .change_membership(Membership::AddVoter(r.id))
            .await
            .map_err(|e| self.status(e))?;
        tracing::info!(replica = r.id, index, "replica added");
        Ok(Response::new(v1::AddReplicaResponse { index }))
    }

    async fn remove_replica(
        &self,
        req: Request<v1::RemoveReplicaRequest>,
    ) -> Result<Response<v1::RemoveReplicaResponse>, Status> {
        self.auth(&req, "RemoveReplica")?;
        let id = req.into_inner().id;
        let index = self
            .node
            .change_membership(Membership::Remove(id))
            .await
            .map_err(|e| self.status(e))?;
        tracing::info!(replica = id, index, "replica removed");
        Ok(Response::new(v1::RemoveReplicaResponse { index }))
    }

    async fn list_nodes(
        &self,
        req: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesResponse>, Status> {
        self.auth(&req, "ListNodes")?;
        Ok(Response::new(v1::ListNodesResponse {
            nodes: self.nodes().await?,
        }))
    }

    async fn get_node(
        &self,
        req: Request<v1::GetNodeRequest>,
    ) -> Result<Response<v1::NodeInfo>, Status> {
        self.auth(&req, "GetNode")?;
        Ok(Response::new(self.one(&req.into_inner().name).await?))
    }

    async fn set_node_schedule(
        &self,
        req: Request<v1::SetNodeScheduleRequest>,
    ) -> Result<Response<v1::NodeInfo>, Status> {
        self.auth(&req, "SetNodeSchedule")?;
        let r = req.into_inner();
        let schedule = match r.schedule.to_ascii_lowercase().as_str() {
            "active" | "uncordoned" => pb::NodeSchedule::Active,
            "cordoned" => pb::NodeSchedule::Cordoned,
            "draining" => pb::NodeSchedule::Draining,
            other => {
                return Err(Status::invalid_argument(format!(
                    "schedule: {other:?} is not Active, Cordoned or Draining"
                )));
            }
        };
        self.one(&r.name).await?;
        let cmd = pb::Command {
            kind: Some(pb::command::Kind::SetNodeSchedule(pb::SetNodeSchedule {
                name: r.name.clone(),
                schedule: schedule as i32,
            })),
        };
        self.node.propose(&cmd).await.map_err(|e| self.status(e))?;
        tracing::info!(node = %r.name, schedule = schedule_name(schedule as i32), "node schedule set");
        Ok(Response::new(self.one(&r.name).await?))
    }
}

impl AdminService {
    async fn nodes(&self) -> Result<Vec<v1::NodeInfo>, Status> {
        let nodes = self
            .node
            .read(|sm| sm.state().nodes.values().cloned().collect::<Vec<_>>())
            .await
            .map_err(|e| self.status(e))?;
        let loads = self.live.loads();
        Ok(nodes
            .iter()
            .map(|n| node_info(n, loads.get(&n.name)))
            .collect())
    }

    async fn one(&self, name: &str) -> Result<v1::NodeInfo, Status> {
        let all = self.nodes().await?;
        let names: Vec<&str> = all.iter().map(|n| n.name.as_str()).collect();
        all.iter()
            .find(|n| n.name == name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no node named {name:?}; known: {names:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_compare_exactly() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"", b"x"));
    }
}
