//! Every command the scheduler proposes, built in one place: callers say what should happen
//! and never assemble a `pb::Command` by hand. Times come from the proposer ([`now_ms`]) so
//! that applying stays deterministic.

use std::time::{SystemTime, UNIX_EPOCH};

use joule_proto::internal::v1 as pb;
use pb::command::Kind;

/// Unix milliseconds by this replica's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn cmd(k: Kind) -> pb::Command {
    pb::Command { kind: Some(k) }
}

pub fn register_node(node: pb::Node) -> pb::Command {
    cmd(Kind::RegisterNode(pb::RegisterNode { node: Some(node) }))
}

pub fn set_node_status(name: &str, status: pb::NodeStatus) -> pb::Command {
    cmd(Kind::SetNodeStatus(pb::SetNodeStatus {
        name: name.to_string(),
        status: status as i32,
        at_ms: now_ms(),
    }))
}

pub fn set_node_schedule(name: &str, schedule: pb::NodeSchedule) -> pb::Command {
    cmd(Kind::SetNodeSchedule(pb::SetNodeSchedule {
        name: name.to_string(),
        schedule: schedule as i32,
        at_ms: now_ms(),
    }))
}

pub fn put_setting(key: String, value: String) -> pb::Command {
    cmd(Kind::PutSetting(pb::PutSetting { key, value }))
}

pub fn set_replica_address(id: u64, address: String) -> pb::Command {
    cmd(Kind::SetReplicaAddress(pb::SetReplicaAddress {
        id,
        address,
    }))
}

pub fn put_model(mut model: pb::Model) -> pb::Command {
    model.created_at_ms = now_ms();
    cmd(Kind::PutModel(pb::PutModel { model: Some(model) }))
}

pub fn delete_model(name: &str) -> pb::Command {
    cmd(Kind::DeleteModel(pb::DeleteModel {
        name: name.to_string(),
    }))
}

pub fn put_deployment(mut d: pb::Deployment) -> pb::Command {
    d.updated_at_ms = now_ms();
    cmd(Kind::PutDeployment(pb::PutDeployment {
        deployment: Some(d),
    }))
}

pub fn delete_deployment(name: &str) -> pb::Command {
    cmd(Kind::DeleteDeployment(pb::DeleteDeployment {
        name: name.to_string(),
        at_ms: now_ms(),
    }))
}

pub fn set_placements(deployment: &str, generation: u64, nodes: Vec<String>) -> pb::Command {
    cmd(Kind::SetPlacements(pb::SetPlacements {
        deployment: deployment.to_string(),
        generation,
        nodes,
        at_ms: now_ms(),
        ..Default::default()
    }))
}

/// A worker's report on its placement of `deployment`, about `attempt` of file `sha256`.
pub fn set_placement_state(
    deployment: &str,
    node: &str,
    r: &pb::PlacementReport,
    state: pb::PlacementState,
) -> pb::Command {
    cmd(Kind::SetPlacementState(pb::SetPlacementState {
        deployment: deployment.to_string(),
        node: node.to_string(),
        state: state as i32,
        message: r.message.clone(),
        at_ms: now_ms(),
        progress: r.progress,
        attempt: r.attempt,
        sha256: r.sha256.clone(),
    }))
}

pub fn put_tenant(mut t: pb::Tenant) -> pb::Command {
    t.created_at_ms = now_ms();
    cmd(Kind::PutTenant(pb::PutTenant { tenant: Some(t) }))
}

pub fn delete_tenant(name: &str) -> pb::Command {
    cmd(Kind::DeleteTenant(pb::DeleteTenant {
        name: name.to_string(),
    }))
}

pub fn add_api_key(tenant: &str, mut key: pb::ApiKey) -> pb::Command {
    key.created_at_ms = now_ms();
    cmd(Kind::AddApiKey(pb::AddApiKey {
        tenant: tenant.to_string(),
        key: Some(key),
    }))
}

pub fn revoke_api_key(tenant: &str, id: &str) -> pb::Command {
    cmd(Kind::RevokeApiKey(pb::RevokeApiKey {
        tenant: tenant.to_string(),
        id: id.to_string(),
    }))
}

/// A gateway's usage report, as it sent it (its own sequence makes a retry count once).
pub fn record_usage(report: pb::RecordUsage) -> pb::Command {
    cmd(Kind::RecordUsage(report))
}
