//! The cluster's events (`get events`): what happened to nodes and deployments, derived from
//! each command as it applies and kept in the replicated state (`ClusterState.events`, the last
//! [`MAX_EVENTS`]), so every replica answers the same list and snapshots carry it.
//!
//! This module owns that ring. It never reads a clock: every time comes from the command (the
//! proposer's clock), so applying stays deterministic. It is called only for commands that
//! changed the state; a refused command leaves no event.

use std::collections::{BTreeMap, BTreeSet};

use joule_proto::internal::v1 as pb;
use pb::command::Kind;

/// The most events the state keeps; the oldest go first.
pub const MAX_EVENTS: usize = 1000;

/// A placement as it was before a `SetPlacements`.
#[derive(Debug, Clone, Copy)]
pub struct WasPlaced {
    state: i32,
    retiring: bool,
    failures: u32,
}

/// What the state said before a command, as far as its events need.
#[derive(Debug)]
pub enum Before {
    Nothing,
    /// The node's status, schedule and address, if it was known.
    Node(Option<(i32, i32, String)>),
    /// The deployment's generation, if it existed.
    Deployment(Option<u64>),
    /// The deployment's placements by node, and its pending reason.
    Placements {
        placed: BTreeMap<String, WasPlaced>,
        pending: String,
    },
    /// The placement's state, if it existed.
    Placement(Option<i32>),
}

impl Before {
    /// Takes what `k`'s events will compare against, before `k` applies.
    pub fn of(s: &pb::ClusterState, k: &Kind) -> Self {
        let node = |name: &str| {
            s.nodes
                .get(name)
                .map(|n| (n.status, n.schedule, n.address.clone()))
        };
        match k {
            Kind::RegisterNode(r) => Self::Node(r.node.as_ref().and_then(|n| node(&n.name))),
            Kind::SetNodeStatus(c) => Self::Node(node(&c.name)),
            Kind::SetNodeSchedule(c) => Self::Node(node(&c.name)),
            Kind::PutDeployment(c) => Self::Deployment(
                c.deployment
                    .as_ref()
                    .and_then(|d| s.deployments.get(&d.name))
                    .map(|d| d.generation),
            ),
            Kind::SetPlacements(c) => Self::Placements {
                placed: s
                    .placements
                    .values()
                    .filter(|p| p.deployment == c.deployment)
                    .map(|p| {
                        let was = WasPlaced {
                            state: p.state,
                            retiring: p.retiring,
                            failures: p.failures,
                        };
                        (p.node.clone(), was)
                    })
                    .collect(),
                pending: s
                    .deployments
                    .get(&c.deployment)
                    .map(|d| d.pending_reason.clone())
                    .unwrap_or_default(),
            },
            Kind::SetPlacementState(c) => Self::Placement(
                s.placements
                    .get(&format!("{}/{}", c.deployment, c.node))
                    .map(|p| p.state),
            ),
            _ => Self::Nothing,
        }
    }
}

/// Appends the events of `k`, which has just changed `s`, given what held `before` it.
pub fn record(s: &mut pb::ClusterState, k: &Kind, before: Before) {
    for e in derive(s, k, before) {
        push(&mut s.events, e);
    }
}

/// Adds `e` to the ring: a repeat of a record (same kind, reason, object and message) is
/// counted in it and moved to the end; past [`MAX_EVENTS`] the oldest go.
pub fn push(events: &mut Vec<pb::Event>, e: pb::Event) {
    let same = |x: &pb::Event| {
        x.warning == e.warning
            && x.reason == e.reason
            && x.object == e.object
            && x.message == e.message
    };
    if let Some(i) = events.iter().rposition(same) {
        let mut old = events.remove(i);
        old.count = old.count.saturating_add(1);
        old.last_at_ms = old.last_at_ms.max(e.last_at_ms);
        events.push(old);
        return;
    }
    events.push(e);
    if events.len() > MAX_EVENTS {
        let extra = events.len() - MAX_EVENTS;
        events.drain(..extra);
    }
}

fn event(at_ms: i64, warning: bool, reason: &str, object: String, message: String) -> pb::Event {
    pb::Event {
        warning,
        reason: reason.to_string(),
        object,
        message,
        first_at_ms: at_ms,
        last_at_ms: at_ms,
        count: 1,
    }
}

fn normal(at_ms: i64, reason: &str, object: String, message: String) -> pb::Event {
    event(at_ms, false, reason, object, message)
}

fn warning(at_ms: i64, reason: &str, object: String, message: String) -> pb::Event {
    event(at_ms, true, reason, object, message)
}

const READY: i32 = pb::NodeStatus::Ready as i32;
const UNREACHABLE: i32 = pb::NodeStatus::Unreachable as i32;
const FAILED: i32 = pb::PlacementState::Failed as i32;
const SERVING: i32 = pb::PlacementState::Serving as i32;

fn derive(s: &pb::ClusterState, k: &Kind, before: Before) -> Vec<pb::Event> {
    match (k, before) {
        (Kind::RegisterNode(r), Before::Node(was)) => {
            let Some(n) = &r.node else { return Vec::new() };
            let obj = format!("node/{}", n.name);
            let e = match was {
                None => normal(
                    n.registered_at_ms,
                    "Joined",
                    obj,
                    format!("joined at {}", n.address),
                ),
                Some(_) => normal(
                    n.registered_at_ms,
                    "Registered",
                    obj,
                    format!("registered again at {}", n.address),
                ),
            };
            vec![e]
        }
        (Kind::SetNodeStatus(c), Before::Node(Some((was, _, _)))) if was != c.status => {
            let obj = format!("node/{}", c.name);
            match c.status {
                UNREACHABLE => vec![warning(
                    c.at_ms,
                    "Unreachable",
                    obj,
                    "missed its heartbeats".into(),
                )],
                READY => vec![normal(c.at_ms, "Ready", obj, "heartbeats again".into())],
                _ => Vec::new(),
            }
        }
        (Kind::SetNodeSchedule(c), Before::Node(Some((_, was, _)))) if was != c.schedule => {
            let obj = format!("node/{}", c.name);
            let (reason, message) = match pb::NodeSchedule::try_from(c.schedule) {
                Ok(pb::NodeSchedule::Cordoned) => ("Cordoned", "takes no new placements"),
                Ok(pb::NodeSchedule::Draining) => {
                    ("Draining", "its placements move to other nodes")
                }
                _ => ("Uncordoned", "takes new placements again"),
            };
            vec![normal(c.at_ms, reason, obj, message.into())]
        }
        (Kind::RemoveNode(c), _) => vec![normal(
            c.at_ms,
            "Removed",
            format!("node/{}", c.name),
            "left the cluster with its placements".into(),
        )],
        (Kind::PutDeployment(c), Before::Deployment(was)) => {
            let Some(d) = c
                .deployment
                .as_ref()
                .and_then(|d| s.deployments.get(&d.name))
            else {
                return Vec::new();
            };
            let size = if d.autoscale {
                format!(
                    "{} to {} replicas (autoscale)",
                    d.min_replicas, d.max_replicas
                )
            } else {
                format!("{} replica(s)", d.replicas)
            };
            let obj = format!("deployment/{}", d.name);
            match was {
                None => vec![normal(
                    d.updated_at_ms,
                    "Created",
                    obj,
                    format!("model {}, {size}", d.model),
                )],
                Some(g) if g != d.generation => vec![normal(
                    d.updated_at_ms,
                    "Updated",
                    obj,
                    format!("generation {}: model {}, {size}", d.generation, d.model),
                )],
                Some(_) => Vec::new(),
            }
        }
        (Kind::DeleteDeployment(c), _) => vec![normal(
            c.at_ms,
            "Deleted",
            format!("deployment/{}", c.name),
            "deleted with its placements".into(),
        )],
        (Kind::SetPlacements(c), Before::Placements { placed, pending }) => {
            placement_events(c, &placed, &pending)
        }
        (Kind::SetPlacementState(c), Before::Placement(Some(was))) if was != c.state => {
            let obj = format!("deployment/{}", c.deployment);
            match c.state {
                SERVING => vec![normal(
                    c.at_ms,
                    "Ready",
                    obj,
                    format!("serving on {}", c.node),
                )],
                FAILED => vec![warning(
                    c.at_ms,
                    "Failed",
                    obj,
                    format!("on {}: {}", c.node, c.message),
                )],
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// The events of one placement decision: placed (or moved), placed again after failures,
/// kept retiring, removed, and why replicas are missing.
fn placement_events(
    c: &pb::SetPlacements,
    placed: &BTreeMap<String, WasPlaced>,
    pending: &str,
) -> Vec<pb::Event> {
    let obj = || format!("deployment/{}", c.deployment);
    let at = c.at_ms;
    let kept: BTreeSet<&str> = c
        .nodes
        .iter()
        .chain(&c.retiring)
        .chain(&c.failed)
        .map(String::as_str)
        .collect();
    let in_force = |p: &WasPlaced| p.state != FAILED && !p.retiring;
    let newly_retiring: Vec<&str> = c
        .retiring
        .iter()
        .filter(|n| placed.get(n.as_str()).is_some_and(in_force))
        .map(String::as_str)
        .collect();
    let dropped: Vec<&str> = placed
        .keys()
        .filter(|n| !kept.contains(n.as_str()))
        .map(String::as_str)
        .collect();
    let added: Vec<&str> = c
        .nodes
        .iter()
        .filter(|n| !placed.contains_key(n.as_str()))
        .map(String::as_str)
        .collect();
    let mut from: Vec<&str> = newly_retiring.clone();
    from.extend(
        dropped
            .iter()
            .filter(|n| placed.get(**n).is_some_and(in_force)),
    );
    from.sort_unstable();
    let mut out = Vec::new();
    for n in &added {
        let why = c
            .reasons
            .get(*n)
            .map_or_else(|| n.to_string(), Clone::clone);
        out.push(if from.is_empty() {
            normal(at, "Scheduled", obj(), format!("placed on {why}"))
        } else {
            normal(
                at,
                "Moved",
                obj(),
                format!("moved from {} to {why}", from.join(", ")),
            )
        });
    }
    for n in &c.nodes {
        if let Some(p) = placed.get(n).filter(|p| p.state == FAILED) {
            out.push(normal(
                at,
                "Retry",
                obj(),
                format!("placing on {n} again after {} failed load(s)", p.failures),
            ));
        }
    }
    if added.is_empty() {
        for n in &newly_retiring {
            out.push(normal(
                at,
                "Retiring",
                obj(),
                format!("{n} serves until its replacement does"),
            ));
        }
    }
    for n in &dropped {
        if added.is_empty() || !from.contains(n) {
            out.push(normal(at, "Removed", obj(), format!("removed from {n}")));
        }
    }
    if !c.pending_reason.is_empty() && c.pending_reason != pending {
        out.push(warning(
            at,
            "FailedScheduling",
            obj(),
            c.pending_reason.clone(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateMachine;

    fn cmd(k: Kind) -> pb::Command {
        pb::Command { kind: Some(k) }
    }

    fn apply(sm: &mut StateMachine, k: Kind) -> Result<(), String> {
        sm.apply(sm.applied() + 1, &cmd(k))
    }

    fn register(name: &str, at: i64) -> Kind {
        Kind::RegisterNode(pb::RegisterNode {
            node: Some(pb::Node {
                name: name.into(),
                address: format!("{name}:50061"),
                registered_at_ms: at,
                ..Default::default()
            }),
        })
    }

    fn status(name: &str, s: pb::NodeStatus, at: i64) -> Kind {
        Kind::SetNodeStatus(pb::SetNodeStatus {
            name: name.into(),
            status: s as i32,
            at_ms: at,
        })
    }

    fn seen(sm: &StateMachine) -> Vec<(String, String, u32)> {
        sm.state()
            .events
            .iter()
            .map(|e| (e.reason.clone(), e.object.clone(), e.count))
            .collect()
    }

    fn deploy(sm: &mut StateMachine, at: i64) {
        apply(
            sm,
            Kind::PutModel(pb::PutModel {
                model: Some(pb::Model {
                    name: "m".into(),
                    source: "file:///m.gguf".into(),
                    sha256: "a".repeat(64),
                    ..Default::default()
                }),
            }),
        )
        .unwrap();
        apply(
            sm,
            Kind::PutDeployment(pb::PutDeployment {
                deployment: Some(pb::Deployment {
                    name: "chat".into(),
                    model: "m".into(),
                    replicas: 1,
                    updated_at_ms: at,
                    ..Default::default()
                }),
            }),
        )
        .unwrap();
    }

    fn place(nodes: &[&str], retiring: &[&str], at: i64) -> Kind {
        Kind::SetPlacements(pb::SetPlacements {
            deployment: "chat".into(),
            generation: 1,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            retiring: retiring.iter().map(|n| n.to_string()).collect(),
            reasons: nodes
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        format!("{n}: 1.50 tok/J at batch 8 (measured)"),
                    )
                })
                .collect(),
            at_ms: at,
            ..Default::default()
        })
    }

    #[test]
    fn nodes_joining_lost_and_back_are_events_timed_by_their_commands() {
        let mut sm = StateMachine::default();
        apply(&mut sm, register("w1", 100)).unwrap();
        apply(&mut sm, status("w1", pb::NodeStatus::Unreachable, 200)).unwrap();
        // The same status again changes nothing and says nothing.
        apply(&mut sm, status("w1", pb::NodeStatus::Unreachable, 250)).unwrap();
        apply(&mut sm, status("w1", pb::NodeStatus::Ready, 300)).unwrap();
        let ev = &sm.state().events;
        assert_eq!(
            seen(&sm),
            vec![
                ("Joined".into(), "node/w1".into(), 1),
                ("Unreachable".into(), "node/w1".into(), 1),
                ("Ready".into(), "node/w1".into(), 1),
            ]
        );
        assert_eq!(ev[0].message, "joined at w1:50061");
        assert!(ev[1].warning && !ev[2].warning);
        assert_eq!(
            ev.iter().map(|e| e.last_at_ms).collect::<Vec<_>>(),
            vec![100, 200, 300]
        );
    }

    #[test]
    fn a_repeat_is_counted_in_one_record_moved_to_the_end() {
        let mut sm = StateMachine::default();
        apply(&mut sm, register("w1", 100)).unwrap();
        for (i, s) in [pb::NodeStatus::Unreachable, pb::NodeStatus::Ready]
            .iter()
            .cycle()
            .take(4)
            .enumerate()
        {
            apply(&mut sm, status("w1", *s, 200 + i as i64)).unwrap();
        }
        assert_eq!(
            seen(&sm),
            vec![
                ("Joined".into(), "node/w1".into(), 1),
                ("Unreachable".into(), "node/w1".into(), 2),
                ("Ready".into(), "node/w1".into(), 2),
            ]
        );
        let ready = &sm.state().events[2];
        assert_eq!((ready.first_at_ms, ready.last_at_ms), (201, 203));
    }

    #[test]
    fn the_ring_keeps_the_newest_max_events() {
        let mut events = Vec::new();
        for i in 0..(MAX_EVENTS as i64 + 10) {
            push(
                &mut events,
                normal(i, "Joined", format!("node/w{i}"), "joined".into()),
            );
        }
        assert_eq!(events.len(), MAX_EVENTS);
        assert_eq!(events[0].object, "node/w10");
        assert_eq!(events.last().unwrap().last_at_ms, MAX_EVENTS as i64 + 9);
    }

    #[test]
    fn a_refused_command_leaves_no_event() {
        let mut sm = StateMachine::default();
        assert!(apply(&mut sm, status("ghost", pb::NodeStatus::Unreachable, 1)).is_err());
        assert!(apply(&mut sm, place(&["w1"], &[], 5)).is_err());
        assert!(sm.state().events.is_empty());
    }

    #[test]
    fn placements_made_moved_ready_and_failed_are_events() {
        let mut sm = StateMachine::default();
        apply(&mut sm, register("w1", 1)).unwrap();
        apply(&mut sm, register("w2", 2)).unwrap();
        deploy(&mut sm, 10);
        apply(&mut sm, place(&["w1"], &[], 20)).unwrap();
        apply(
            &mut sm,
            Kind::SetPlacementState(pb::SetPlacementState {
                deployment: "chat".into(),
                node: "w1".into(),
                state: SERVING,
                at_ms: 30,
                ..Default::default()
            }),
        )
        .unwrap();
        // A drain: w1 retires while w2 loads, then goes once w2 serves.
        apply(&mut sm, place(&["w2"], &["w1"], 40)).unwrap();
        apply(
            &mut sm,
            Kind::SetPlacementState(pb::SetPlacementState {
                deployment: "chat".into(),
                node: "w2".into(),
                state: FAILED,
                message: "out of memory".into(),
                at_ms: 50,
                ..Default::default()
            }),
        )
        .unwrap();
        apply(&mut sm, place(&["w2"], &[], 60)).unwrap();
        let ev: Vec<(String, String)> = sm
            .state()
            .events
            .iter()
            .filter(|e| e.object == "deployment/chat")
            .map(|e| (e.reason.clone(), e.message.clone()))
            .collect();
        assert_eq!(
            ev,
            vec![
                ("Created".into(), "model m, 1 replica(s)".into()),
                (
                    "Scheduled".into(),
                    "placed on w1: 1.50 tok/J at batch 8 (measured)".into()
                ),
                ("Ready".into(), "serving on w1".into()),
                (
                    "Moved".into(),
                    "moved from w1 to w2: 1.50 tok/J at batch 8 (measured)".into()
                ),
                ("Failed".into(), "on w2: out of memory".into()),
                (
                    "Retry".into(),
                    "placing on w2 again after 1 failed load(s)".into()
                ),
                ("Removed".into(), "removed from w1".into()),
            ]
        );
        let failed = sm
            .state()
            .events
            .iter()
            .find(|e| e.reason == "Failed")
            .unwrap();
        assert!(failed.warning);
    }

    #[test]
    fn why_replicas_are_missing_is_a_warning_once_per_reason() {
        let mut sm = StateMachine::default();
        deploy(&mut sm, 10);
        let pending = |at| {
            Kind::SetPlacements(pb::SetPlacements {
                deployment: "chat".into(),
                generation: 1,
                pending_reason: "no Ready node".into(),
                at_ms: at,
                ..Default::default()
            })
        };
        apply(&mut sm, pending(20)).unwrap();
        apply(&mut sm, pending(30)).unwrap();
        let w: Vec<&pb::Event> = sm
            .state()
            .events
            .iter()
            .filter(|e| e.reason == "FailedScheduling")
            .collect();
        assert_eq!(w.len(), 1);
        assert!(w[0].warning);
        assert_eq!((w[0].message.as_str(), w[0].count), ("no Ready node", 1));
    }

    #[test]
    fn a_snapshot_carries_the_events() {
        let mut sm = StateMachine::default();
        apply(&mut sm, register("w1", 100)).unwrap();
        let bytes = sm.snapshot();
        let mut other = StateMachine::default();
        other.restore(&bytes, sm.applied()).unwrap();
        assert_eq!(other.state().events, sm.state().events);
    }
}
