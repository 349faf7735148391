//! `joule.v1.Admin`: what `joulectl` and operators call. Every call needs the admin token.
//! Reads that must reflect every acknowledged write go through [`Store::read`]; writes become
//! commands ([`crate::state::commands`]) proposed through the store.

use std::sync::Arc;

use joule_proto::internal::v1 as pb;
use joule_proto::v1;
use joule_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use super::{observe, tenants, workloads};
use crate::error::{Error, Result};
use crate::liveness::Liveness;
use crate::state::commands;
use crate::store::{Membership, Store};
use workloads::known;

const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 << 10;

pub struct AdminService<S> {
    pub store: S,
    pub token: String,
    pub live: Arc<Liveness>,
    /// The cluster's join token (empty: none), which workers' own APIs take (`NodeLogs`).
    pub join_token: String,
}

/// Marks a call a follower passed on to the leader, so it is never passed on twice.
const FORWARDED: &str = "x-joule-forwarded";

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

fn node_info(st: &pb::ClusterState, n: &pb::Node, load: Option<&pb::WorkerLoad>) -> v1::NodeInfo {
    let hw = n.hardware.clone().unwrap_or_default();
    let load = load.cloned().unwrap_or_default();
    let placements: Vec<v1::PlacementInfo> = st
        .placements
        .values()
        .filter(|p| p.node == n.name)
        .map(workloads::placement_info)
        .collect();
    let placed_bytes = st
        .placements
        .values()
        .filter(|p| p.node == n.name && p.state != pb::PlacementState::Failed as i32)
        .filter_map(|p| st.models.get(&p.model))
        .map(|m| m.size_bytes)
        .sum();
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
        labels: n.labels.clone(),
        placements,
        model_memory_bytes: hw.model_memory_bytes,
        placed_bytes,
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
        let loads = self.live.loads();
        self.read(move |st| {
            st.nodes
                .values()
                .map(|n| node_info(st, n, loads.get(&n.name)))
                .collect()
        })
        .await
    }

    /// A linearizable read of the state.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&pb::ClusterState) -> T + Send + 'static,
    ) -> Result<T> {
        self.store
            .read(move |sm| f(sm.state()))
            .await
            .map_err(|e| self.store.error(e))
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
    type NodeLogsStream = observe::LogStream;

    async fn node_logs(
        &self,
        req: Request<v1::NodeLogsRequest>,
    ) -> Result<Response<observe::LogStream>, Status> {
        self.auth(&req, "NodeLogs")?;
        let r = req.into_inner();
        // From this replica's state: a worker's logs help most when the cluster is in trouble.
        let addr = self.store.read_local(|sm| {
            let st = sm.state();
            st.nodes
                .get(&r.node)
                .map(|n| n.address.clone())
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "no node named {:?}; nodes: {}",
                        r.node,
                        known(st.nodes.keys())
                    ))
                })
        })?;
        tracing::debug!(node = %r.node, %addr, follow = r.follow, "node logs");
        let lines = observe::node_logs(&r.node, &addr, &self.join_token, r.tail, r.follow).await?;
        Ok(Response::new(lines))
    }

    async fn list_events(
        &self,
        req: Request<v1::ListEventsRequest>,
    ) -> Result<Response<v1::ListEventsResponse>, Status> {
        self.auth(&req, "ListEvents")?;
        let object = req.into_inner().object;
        let events = self.read(move |st| observe::events(st, &object)).await?;
        Ok(Response::new(v1::ListEventsResponse { events }))
    }

    async fn top(&self, req: Request<v1::TopRequest>) -> Result<Response<v1::TopResponse>, Status> {
        self.auth(&req, "Top")?;
        let l = self.store.leadership();
        if !l.is_leader() {
            // Only the leader hears heartbeats.
            let addr = self
                .store
                .address(l.leader)
                .filter(|_| l.leader != 0 && !req.metadata().contains_key(FORWARDED))
                .ok_or_else(|| {
                    Error::Unavailable(format!("replica {} knows no leader right now; retry", l.me))
                })?;
            let mut leader = joule_client::Connect::internal()
                .admin(&addr, &self.token)
                .map_err(|e| Error::Internal(e.to_string()))?;
            let mut fwd = Request::new(req.into_inner());
            fwd.metadata_mut()
                .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
            return leader.top(fwd).await;
        }
        let loads = self.live.loads();
        let heard = self.live.silence(l.term);
        let (nodes, deployments) = self
            .store
            .read_local(|sm| observe::top(sm.state(), &loads, &heard));
        Ok(Response::new(v1::TopResponse {
            nodes,
            deployments,
            leader: l.me,
        }))
    }

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

    async fn apply_model(
        &self,
        req: Request<v1::ModelSpec>,
    ) -> Result<Response<v1::ModelInfo>, Status> {
        self.auth(&req, "ApplyModel")?;
        let m = workloads::model(req.into_inner())?;
        let name = m.name.clone();
        self.propose(commands::put_model(m)).await?;
        tracing::info!(model = %name, "model applied");
        let info = self
            .read(move |st| workloads::find_model(st, &name))
            .await??;
        Ok(Response::new(info))
    }

    async fn get_model(
        &self,
        req: Request<v1::GetModelRequest>,
    ) -> Result<Response<v1::ModelInfo>, Status> {
        self.auth(&req, "GetModel")?;
        let name = req.into_inner().name;
        let info = self
            .read(move |st| workloads::find_model(st, &name))
            .await??;
        Ok(Response::new(info))
    }

    async fn list_models(
        &self,
        req: Request<v1::ListModelsRequest>,
    ) -> Result<Response<v1::ListModelsResponse>, Status> {
        self.auth(&req, "ListModels")?;
        let models = self
            .read(|st| {
                st.models
                    .values()
                    .map(|m| workloads::model_info(st, m))
                    .collect()
            })
            .await?;
        Ok(Response::new(v1::ListModelsResponse { models }))
    }

    async fn delete_model(
        &self,
        req: Request<v1::DeleteModelRequest>,
    ) -> Result<Response<v1::DeleteModelResponse>, Status> {
        self.auth(&req, "DeleteModel")?;
        let name = req.into_inner().name;
        let n = name.clone();
        self.read(move |st| workloads::find_model(st, &n)).await??;
        self.propose(commands::delete_model(&name)).await?;
        tracing::info!(model = %name, "model deleted");
        Ok(Response::new(v1::DeleteModelResponse {}))
    }

    async fn apply_deployment(
        &self,
        req: Request<v1::DeploymentSpec>,
    ) -> Result<Response<v1::DeploymentInfo>, Status> {
        self.auth(&req, "ApplyDeployment")?;
        let spec = req.into_inner();
        let d = self
            .read(move |st| workloads::deployment(spec, st))
            .await??;
        let name = d.name.clone();
        self.propose(commands::put_deployment(d)).await?;
        tracing::info!(deployment = %name, "deployment applied");
        let info = self
            .read(move |st| workloads::find_deployment(st, &name))
            .await??;
        Ok(Response::new(info))
    }

    async fn get_deployment(
        &self,
        req: Request<v1::GetDeploymentRequest>,
    ) -> Result<Response<v1::DeploymentInfo>, Status> {
        self.auth(&req, "GetDeployment")?;
        let name = req.into_inner().name;
        let info = self
            .read(move |st| workloads::find_deployment(st, &name))
            .await??;
        Ok(Response::new(info))
    }

    async fn list_deployments(
        &self,
        req: Request<v1::ListDeploymentsRequest>,
    ) -> Result<Response<v1::ListDeploymentsResponse>, Status> {
        self.auth(&req, "ListDeployments")?;
        let deployments = self
            .read(|st| {
                st.deployments
                    .values()
                    .map(|d| workloads::deployment_info(st, d))
                    .collect()
            })
            .await?;
        Ok(Response::new(v1::ListDeploymentsResponse { deployments }))
    }

    async fn delete_deployment(
        &self,
        req: Request<v1::DeleteDeploymentRequest>,
    ) -> Result<Response<v1::DeleteDeploymentResponse>, Status> {
        self.auth(&req, "DeleteDeployment")?;
        let name = req.into_inner().name;
        let n = name.clone();
        self.read(move |st| workloads::find_deployment(st, &n))
            .await??;
        self.propose(commands::delete_deployment(&name)).await?;
        tracing::info!(deployment = %name, "deployment deleted");
        Ok(Response::new(v1::DeleteDeploymentResponse {}))
    }

    async fn list_placements(
        &self,
        req: Request<v1::ListPlacementsRequest>,
    ) -> Result<Response<v1::ListPlacementsResponse>, Status> {
        self.auth(&req, "ListPlacements")?;
        let r = req.into_inner();
        let placements = self
            .read(move |st| -> Result<Vec<v1::PlacementInfo>> {
                if !r.deployment.is_empty() && !st.deployments.contains_key(&r.deployment) {
                    return Err(Error::NotFound(format!(
                        "no deployment named {:?}; deployments: {}",
                        r.deployment,
                        workloads::known(st.deployments.keys())
                    )));
                }
                if !r.node.is_empty() && !st.nodes.contains_key(&r.node) {
                    return Err(Error::NotFound(format!(
                        "no node named {:?}; nodes: {}",
                        r.node,
                        workloads::known(st.nodes.keys())
                    )));
                }
                Ok(st
                    .placements
                    .values()
                    .filter(|p| r.deployment.is_empty() || p.deployment == r.deployment)
                    .filter(|p| r.node.is_empty() || p.node == r.node)
                    .map(workloads::placement_info)
                    .collect())
            })
            .await??;
        Ok(Response::new(v1::ListPlacementsResponse { placements }))
    }

    async fn apply_tenant(
        &self,
        req: Request<v1::TenantSpec>,
    ) -> Result<Response<v1::TenantInfo>, Status> {
        self.auth(&req, "ApplyTenant")?;
        let spec = req.into_inner();
        let t = self.read(move |st| tenants::tenant(spec, st)).await??;
        let name = t.name.clone();
        self.propose(commands::put_tenant(t)).await?;
        tracing::info!(tenant = %name, "tenant applied");
        let info = self
            .read(move |st| tenants::find_tenant(st, &name).map(tenants::tenant_info))
            .await??;
        Ok(Response::new(info))
    }

    async fn get_tenant(
        &self,
        req: Request<v1::GetTenantRequest>,
    ) -> Result<Response<v1::TenantInfo>, Status> {
        self.auth(&req, "GetTenant")?;
        let name = req.into_inner().name;
        let info = self
            .read(move |st| tenants::find_tenant(st, &name).map(tenants::tenant_info))
            .await??;
        Ok(Response::new(info))
    }

    async fn list_tenants(
        &self,
        req: Request<v1::ListTenantsRequest>,
    ) -> Result<Response<v1::ListTenantsResponse>, Status> {
        self.auth(&req, "ListTenants")?;
        let tenants = self
            .read(|st| st.tenants.values().map(tenants::tenant_info).collect())
            .await?;
        Ok(Response::new(v1::ListTenantsResponse { tenants }))
    }

    async fn delete_tenant(
        &self,
        req: Request<v1::DeleteTenantRequest>,
    ) -> Result<Response<v1::DeleteTenantResponse>, Status> {
        self.auth(&req, "DeleteTenant")?;
        let name = req.into_inner().name;
        let n = name.clone();
        self.read(move |st| tenants::find_tenant(st, &n).map(|_| ()))
            .await??;
        self.propose(commands::delete_tenant(&name)).await?;
        tracing::info!(tenant = %name, "tenant deleted");
        Ok(Response::new(v1::DeleteTenantResponse {}))
    }

    async fn create_api_key(
        &self,
        req: Request<v1::CreateApiKeyRequest>,
    ) -> Result<Response<v1::ApiKeyInfo>, Status> {
        self.auth(&req, "CreateApiKey")?;
        let r = req.into_inner();
        let key = tenants::api_key(&r, commands::now_ms())?;
        let t = r.tenant.clone();
        self.read(move |st| tenants::find_tenant(st, &t).map(|_| ()))
            .await??;
        let id = key.id.clone();
        self.propose(commands::add_api_key(&r.tenant, key)).await?;
        tracing::info!(tenant = %r.tenant, key = %id, "API key created");
        let (t, i) = (r.tenant.clone(), id.clone());
        let info = self
            .read(move |st| {
                let tn = tenants::find_tenant(st, &t)?;
                tn.api_keys
                    .iter()
                    .find(|k| k.id == i)
                    .map(|k| tenants::key_info(&t, k))
                    .ok_or_else(|| Error::NotFound(format!("key {i:?} is gone already")))
            })
            .await??;
        Ok(Response::new(info))
    }

    async fn list_api_keys(
        &self,
        req: Request<v1::ListApiKeysRequest>,
    ) -> Result<Response<v1::ListApiKeysResponse>, Status> {
        self.auth(&req, "ListApiKeys")?;
        let t = req.into_inner().tenant;
        let keys = self
            .read(move |st| {
                let tn = tenants::find_tenant(st, &t)?;
                Ok::<_, Error>(
                    tn.api_keys
                        .iter()
                        .map(|k| tenants::key_info(&t, k))
                        .collect(),
                )
            })
            .await??;
        Ok(Response::new(v1::ListApiKeysResponse { keys }))
    }

    async fn delete_api_key(
        &self,
        req: Request<v1::DeleteApiKeyRequest>,
    ) -> Result<Response<v1::DeleteApiKeyResponse>, Status> {
        self.auth(&req, "DeleteApiKey")?;
        let r = req.into_inner();
        let (t, id) = (r.tenant.clone(), r.id.clone());
        self.read(move |st| {
            let tn = tenants::find_tenant(st, &t)?;
            if tn.api_keys.iter().any(|k| k.id == id) {
                Ok(())
            } else {
                Err(Error::NotFound(format!(
                    "tenant {t:?} has no API key {id:?}; its keys: {}",
                    known(tn.api_keys.iter().map(|k| &k.id))
                )))
            }
        })
        .await??;
        self.propose(commands::revoke_api_key(&r.tenant, &r.id))
            .await?;
        tracing::info!(tenant = %r.tenant, key = %r.id, "API key revoked");
        Ok(Response::new(v1::DeleteApiKeyResponse {}))
    }

    async fn get_usage(
        &self,
        req: Request<v1::GetUsageRequest>,
    ) -> Result<Response<v1::GetUsageResponse>, Status> {
        self.auth(&req, "GetUsage")?;
        let r = req.into_inner();
        let today = joule_client::calendar::today();
        let rows = self.read(move |st| tenants::usage(st, &r, today)).await??;
        Ok(Response::new(v1::GetUsageResponse { rows }))
    }
}
