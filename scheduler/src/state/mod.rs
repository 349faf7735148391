//! The replicated state machine: the cluster state (`joule.internal.v1.ClusterState`) and how
//! each committed command changes it: workers and settings here, models, deployments and
//! placements in [`workloads`], tenants, API keys and usage in [`tenants`]. Applying is deterministic (no clocks, no randomness, maps
//! in key order), so every replica that applies the same log holds the same state and encodes
//! the same snapshot bytes. A command that does not fit the state (a node that is not there) is
//! still committed; it changes nothing and its proposer gets the reason. A command that applies
//! may leave events ([`events`]: nodes joined or lost, placements made or moved), kept in the
//! state itself.

pub use joule_proto::names;
pub mod commands;
pub mod events;
pub mod tenants;
pub mod workloads;

use joule_proto::internal::v1 as pb;
use pb::command::Kind;
use prost::Message as _;

/// The state at some applied log index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateMachine {
    state: pb::ClusterState,
    applied: u64,
}

impl StateMachine {
    pub fn state(&self) -> &pb::ClusterState {
        &self.state
    }

    /// The log index of the last command applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Applies the command at `index`; `Err` says why it changed nothing.
    pub fn apply(&mut self, index: u64, cmd: &pb::Command) -> Result<(), String> {
        self.applied = index;
        let kind = cmd.kind.as_ref().ok_or("empty command")?;
        let before = events::Before::of(&self.state, kind);
        let s = &mut self.state;
        match kind {
            Kind::RegisterNode(r) => {
                let mut n = r.node.clone().ok_or("register_node without a node")?;
                if n.name.is_empty() {
                    return Err("a node needs a name".into());
                }
                n.schedule = match s.nodes.get(&n.name) {
                    // An admin's cordon or drain outlives the worker re-registering.
                    Some(old) => old.schedule,
                    None => pb::NodeSchedule::Active as i32,
                };
                n.status = pb::NodeStatus::Ready as i32;
                n.status_since_ms = n.registered_at_ms;
                s.nodes.insert(n.name.clone(), n);
            }
            Kind::SetNodeStatus(c) => {
                let n = node(s, &c.name)?;
                if n.status != c.status {
                    n.status = c.status;
                    n.status_since_ms = c.at_ms;
                }
            }
            Kind::SetNodeSchedule(c) => node(s, &c.name)?.schedule = c.schedule,
            Kind::RemoveNode(c) => {
                s.nodes
                    .remove(&c.name)
                    .ok_or_else(|| format!("no node named {:?}", c.name))?;
                workloads::forget_node(s, &c.name);
            }
            Kind::PutSetting(c) => {
                if c.key.is_empty() {
                    return Err("a setting needs a key".into());
                }
                s.settings.insert(c.key.clone(), c.value.clone());
            }
            Kind::SetReplicaAddress(c) => {
                if c.id == 0 {
                    return Err("replica ids start at 1".into());
                }
                if c.address.is_empty() {
                    s.replicas.remove(&c.id);
                } else {
                    s.replicas.insert(c.id, c.address.clone());
                }
            }
            Kind::PutModel(c) => workloads::put_model(s, c)?,
            Kind::DeleteModel(c) => workloads::delete_model(s, c)?,
            Kind::PutDeployment(c) => workloads::put_deployment(s, c)?,
            Kind::DeleteDeployment(c) => workloads::delete_deployment(s, c)?,
            Kind::SetPlacements(c) => workloads::set_placements(s, c)?,
            Kind::SetPlacementState(c) => workloads::set_placement_state(s, c)?,
            Kind::PutTenant(c) => tenants::put_tenant(s, c)?,
            Kind::DeleteTenant(c) => tenants::delete_tenant(s, c)?,
            Kind::AddApiKey(c) => tenants::add_api_key(s, c)?,
            Kind::RevokeApiKey(c) => tenants::revoke_api_key(s, c)?,
            Kind::RecordUsage(c) => tenants::record_usage(s, c)?,
        }
        events::record(s, kind, before);
        Ok(())
    }

    /// Notes a log index that carried no command (a new leader's empty entry, a conf change).
    pub fn skip(&mut self, index: u64) {
        self.applied = index;
    }

    /// The whole state, encoded: what a snapshot carries.
    pub fn snapshot(&self) -> Vec<u8> {
        self.state.encode_to_vec()
    }

    /// Replaces the state with a snapshot's, taken at `index`.
    pub fn restore(&mut self, data: &[u8], index: u64) -> Result<(), prost::DecodeError> {
        self.state = pb::ClusterState::decode(data)?;
        self.applied = index;
        Ok(())
    }
}

fn node<'a>(s: &'a mut pb::ClusterState, name: &str) -> Result<&'a mut pb::Node, String> {
    s.nodes
        .get_mut(name)
        .ok_or_else(|| format!("no node named {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(k: Kind) -> pb::Command {
        pb::Command { kind: Some(k) }
    }

    fn register(name: &str, at: i64) -> pb::Command {
        cmd(Kind::RegisterNode(pb::RegisterNode {
            node: Some(pb::Node {
                name: name.into(),
                address: "127.0.0.1:7100".into(),
                registered_at_ms: at,
                ..Default::default()
            }),
        }))
    }

    #[test]
    fn a_cordon_outlives_re_registration() {
        let mut sm = StateMachine::default();
        sm.apply(1, &register("gpu-1", 10)).unwrap();
        let cordon = cmd(Kind::SetNodeSchedule(pb::SetNodeSchedule {
            name: "gpu-1".into(),
            schedule: pb::NodeSchedule::Cordoned as i32,
            at_ms: 15,
        }));
        sm.apply(2, &cordon).unwrap();
        let down = cmd(Kind::SetNodeStatus(pb::SetNodeStatus {
            name: "gpu-1".into(),
            status: pb::NodeStatus::Unreachable as i32,
            at_ms: 20,
        }));
        sm.apply(3, &down).unwrap();
        assert_eq!(sm.state().nodes["gpu-1"].status_since_ms, 20);
        sm.apply(4, &register("gpu-1", 30)).unwrap();
        let n = &sm.state().nodes["gpu-1"];
        assert_eq!(n.schedule, pb::NodeSchedule::Cordoned as i32);
        assert_eq!(
            (n.status, n.status_since_ms),
            (pb::NodeStatus::Ready as i32, 30)
        );
        assert_eq!(sm.applied(), 4);
    }

    #[test]
    fn commands_that_do_not_fit_change_nothing_and_say_why() {
        let mut sm = StateMachine::default();
        sm.apply(1, &register("a", 1)).unwrap();
        let before = sm.state().clone();
        let e = sm
            .apply(
                2,
                &cmd(Kind::RemoveNode(pb::RemoveNode {
                    name: "b".into(),
                    at_ms: 2,
                })),
            )
            .unwrap_err();
        assert_eq!(e, "no node named \"b\"");
        assert_eq!(
            sm.apply(3, &pb::Command::default()).unwrap_err(),
            "empty command"
        );
        assert!(sm.apply(4, &register("", 1)).is_err());
        assert_eq!(sm.state(), &before);
        assert_eq!(sm.applied(), 4, "the index still counts as applied");
    }

    #[test]
    fn a_snapshot_restores_the_same_state_and_bytes() {
        let mut sm = StateMachine::default();
        for (i, n) in ["c", "a", "b"].iter().enumerate() {
            sm.apply(i as u64 + 1, &register(n, 5)).unwrap();
        }
        sm.apply(
            4,
            &cmd(Kind::PutSetting(pb::PutSetting {
                key: "k".into(),
                value: "v".into(),
            })),
        )
        .unwrap();
        let bytes = sm.snapshot();
        let mut other = StateMachine::default();
        other.restore(&bytes, 4).unwrap();
        assert_eq!(other, sm);
        assert_eq!(other.snapshot(), bytes, "encoding is deterministic");
        assert!(other.restore(b"\xff\xff\xff", 9).is_err());
    }
}

#[cfg(test)]
mod command_tests;
