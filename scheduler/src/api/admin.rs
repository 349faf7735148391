//! `joule.v1.Admin`: what `joulectl` and operators call. Every call needs the admin token.
//! Reads that must reflect every acknowledged write go through [`Store::read`]; writes become
//! commands ([`crate::state::commands`]) proposed through the store.

use std::sync::Arc;

use joule_proto::internal::v1 as pb;
use joule_proto::v1;
use joule_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::liveness::Liveness;
use crate::state::commands;
use crate::store::{Membership, Store};

const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 << 10;

pub struct AdminService<S> {
    pub store: S,
    pub token: String,
    pub live: Arc<Liveness>,
}

pub fn status_name(s: i32) -> &'static str {
    match pb::NodeStatus::try_from(s) {
        Ok(pb::NodeStatus::Ready) => "Ready",
        Ok(pb::NodeStatus::Unreachable) => "Unreachable",
        _ => "Unknown",
    }
}

pub fn schedule_name(s: i32) -> &'static str {
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

fn key(k: &str) -> Result<()> {
    if k.is_empty() || k.len() > MAX_KEY {
        return Err(Error::Invalid(format!(
            "key: must be 1 to {MAX_KEY} bytes, got {}",
            k.len()
        )));
    }
    Ok(())
}

impl<S: Store> AdminService<S> {
    fn auth<T>(&self, req: &Request<T>, call: &'static str) -> Result<()> {
        super::auth::check_bearer(req, &self.token, call, "admin")
    }

    async fn propose(&self, cmd: pb::Command) -> Result<u64> {
        self.store
            .propose(cmd)
            .await
            .map_err(|e| self.store.error(e))
    }

    async fn nodes(&self) -> Result<Vec<v1::NodeInfo>> {
        let nodes = self
            .store
            .read(|sm| sm.state().nodes.values().cloned().collect::<Vec<_>>())
            .await
            .map_err(|e| self.store.error(e))?;
        let loads = self.live.loads();
        Ok(nodes
            .iter()
            .map(|n| node_info(n, loads.get(&n.name)))
            .collect())
    }

    async fn one(&self, name: &str) -> Result<v1::NodeInfo> {
        let all = self.nodes().await?;
        let names: Vec<&str> = all.iter().map(|n| n.name.as_str()).collect();
        all.iter()
            .find(|n| n.name == name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no node named {name:?}; known: {names:?}")))
    }
}

#[tonic::async_trait]
impl<S: Store> Admin for AdminService<S> {
    async fn cluster_status(
        &self,
        req: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        self.auth(&req, "ClusterStatus")?;
        let l = self.store.leadership();
        let m = self.store.members();
        let replicas = m
            .replicas
            .into_iter()
            .map(|r| v1::Replica {
                id: r.id,
                address: r.address,
                voter: r.voter,
                healthy: r.healthy,
                matched_index: r.matched_index,
            })
            .collect();
        Ok(Response::new(v1::ClusterStatusResponse {
            replica: l.me,
            leader: l.leader,
            term: l.term,
            commit_index: m.commit_index,
            applied_index: m.applied_index,
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
            return Err(Error::Invalid(format!(
                "value: at most {MAX_VALUE} bytes, got {}",
                r.value.len()
            ))
            .into());
        }
        let index = self.propose(commands::put_setting(r.key, r.value)).await?;
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
            .store
            .read(move |sm| (sm.state().settings.get(&k).cloned(), sm.applied()))
            .await
            .map_err(|e| self.store.error(e))?;
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
            return Err(Error::Invalid("id: replica ids start at 1".into()).into());
        }
        crate::config::check_address(&r.address)
            .map_err(|e| Error::Invalid(format!("address: {e}")))?;
        // The address first, so that every replica can reach the new one once it is a member.
        self.propose(commands::set_replica_address(r.id, r.address))
            .await?;
        let index = self
            .store
            .change_membership(Membership::AddVoter(r.id))
            .await
            .map_err(|e| self.store.error(e))?;
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
            .store
            .change_membership(Membership::Remove(id))
            .await
            .map_err(|e| self.store.error(e))?;
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
                return Err(Error::Invalid(format!(
                    "schedule: {other:?} is not Active, Cordoned or Draining"
                ))
                .into());
            }
        };
        self.one(&r.name).await?;
        self.propose(commands::set_node_schedule(&r.name, schedule))
            .await?;
        tracing::info!(node = %r.name, schedule = schedule_name(schedule as i32), "node schedule set");
        Ok(Response::new(self.one(&r.name).await?))
    }
}
