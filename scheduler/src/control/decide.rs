//! From a plan to the commands that make it so, with the rollout rules that the pure placement
//! function does not know about:
//! - make-before-break: a placement the plan drops stays, marked retiring, while it serves and
//!   any of the plan's placements of that deployment is not serving yet; a worker that is gone
//!   (silent past `--reschedule-after`) keeps nothing;
//! - a failed placement stays on record (with its reason and failure count) while the leader
//!   backs off from that node, so `get placements` shows why, and the count grows;
//! - nothing is proposed for a deployment whose placements already match, so the loop never
//!   writes in a hot loop.

use std::collections::BTreeSet;

use joule_proto::internal::v1 as pb;

use super::inputs::Gone;
use crate::placement::Plan;
use crate::state::commands;

pub fn commands(st: &pb::ClusterState, plan: &Plan, gone: &Gone) -> Vec<pb::Command> {
    let mut out = Vec::new();
    for d in st.deployments.values() {
        let Some(o) = plan.outcome(&d.name) else {
            continue;
        };
        let mine: Vec<&pb::Placement> = st
            .placements
            .values()
            .filter(|p| p.deployment == d.name)
            .collect();
        let is_gone = |n: &str| gone.get(n).copied().unwrap_or(true);
        let serving = |n: &str| {
            mine.iter().any(|p| {
                p.node == n
                    && p.state == pb::PlacementState::Serving as i32
                    && p.model == d.model
                    && p.generation == d.generation
            })
        };
        let nodes: BTreeSet<&str> = o.placed.iter().map(|x| x.node.as_str()).collect();
        // A replica the plan could not place (or whose node failed) is not a replacement:
        // the retiring ones wait for it.
        let all_serving = o.pending == 0 && nodes.iter().all(|n| serving(n));
        let failed: BTreeSet<&str> = mine
            .iter()
            .filter(|p| {
                p.state == pb::PlacementState::Failed as i32
                    && !nodes.contains(p.node.as_str())
                    && !is_gone(&p.node)
            })
            .map(|p| p.node.as_str())
            .collect();
        let retiring: BTreeSet<&str> = if all_serving {
            BTreeSet::new()
        } else {
            mine.iter()
                .filter(|p| {
                    !nodes.contains(p.node.as_str())
                        && p.state == pb::PlacementState::Serving as i32
                        && !is_gone(&p.node)
                })
                .map(|p| p.node.as_str())
                .collect()
        };
        let now_nodes: BTreeSet<&str> = mine
            .iter()
            .filter(|p| p.state != pb::PlacementState::Failed as i32 && !p.retiring)
            .map(|p| p.node.as_str())
            .collect();
        let now_failed: BTreeSet<&str> = mine
            .iter()
            .filter(|p| p.state == pb::PlacementState::Failed as i32)
            .map(|p| p.node.as_str())
            .collect();
        let now_retiring: BTreeSet<&str> = mine
            .iter()
            .filter(|p| p.retiring)
            .map(|p| p.node.as_str())
            .collect();
        let pending = o.pending_reason.clone().unwrap_or_default();
        let retry = nodes.iter().any(|n| now_failed.contains(n));
        // A spec change (a new generation, another model) rolls out even on the same nodes.
        let current = mine
            .iter()
            .filter(|p| nodes.contains(p.node.as_str()))
            .all(|p| p.generation == d.generation && p.model == d.model);
        // A reason whose words changed (an estimate replaced by a measurement) is written
        // again; one whose figures alone moved is not (that would write every tick).
        let reasons_same = o.placed.iter().all(|x| {
            mine.iter()
                .find(|p| p.node == x.node)
                .is_some_and(|p| words(&p.reason) == words(&x.reason))
        });
        let same = current
            && reasons_same
            && now_nodes == nodes
            && !retry
            && now_failed == failed
            && now_retiring == retiring
            && d.pending_reason == pending;
        if same {
            continue;
        }
        let mut cmd = commands::set_placements(
            &d.name,
            d.generation,
            nodes.iter().map(|n| n.to_string()).collect(),
        );
        if let Some(pb::command::Kind::SetPlacements(sp)) = cmd.kind.as_mut() {
            sp.reasons = o
                .placed
                .iter()
                .map(|x| (x.node.clone(), x.reason.clone()))
                .collect();
            sp.retiring = retiring.iter().map(|n| n.to_string()).collect();
            sp.failed = failed.iter().map(|n| n.to_string()).collect();
            sp.pending_reason = pending;
        }
        tracing::info!(
            deployment = %d.name,
            nodes = ?nodes,
            retiring = ?retiring,
            failed = ?failed,
            pending = %o.pending_reason.as_deref().unwrap_or(""),
            "placement"
        );
        out.push(cmd);
    }
    out
}

/// A reason without its figures.
fn words(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_ascii_digit() && *c != '.')
        .collect()
}
