//! `Registry/WatchRouting`: the view gateways route by. Every replica serves it from the state
//! it has applied (a gateway keeps routing through a failover from any replica it reaches); the
//! leader adds its workers' latest load. The view is rebuilt every [`POLL`] and sent when it
//! changed, and at least every [`KEEPALIVE`], so a gateway can tell a dead stream from a quiet
//! one. It only reads: it never proposes a command.

use std::collections::HashMap;
use std::time::Duration;

use joule_proto::internal::v1 as pb;
use joule_proto::v1::EnergySource;
use prost::Message as _;

use crate::control::inputs::{CPU_BANDWIDTH_GBS, DEFAULT_BUSY_W, DEFAULT_IDLE_W};
use crate::placement::profile::roofline;
use crate::state::StateMachine;

/// How often the view is rebuilt.
pub const POLL: Duration = Duration::from_millis(100);
/// The longest two messages are apart.
pub const KEEPALIVE: Duration = Duration::from_secs(1);

/// The view from `st`; `loads` are the leader's latest heartbeats (empty on a follower).
pub fn view(
    sm: &StateMachine,
    loads: &HashMap<String, pb::WorkerLoad>,
    leader: bool,
) -> pb::RoutingView {
    let st = sm.state();
    let deployments = st
        .deployments
        .values()
        .map(|d| {
            let replicas = st
                .placements
                .values()
                .filter(|p| p.deployment == d.name)
                .filter_map(|p| replica(st, p, loads))
                .collect();
            pb::RoutedDeployment {
                name: d.name.clone(),
                model: d.model.clone(),
                ttft_p95_ms: d.ttft_p95_ms,
                // The older per-token target, where that is what was set.
                itl_p95_ms: match d.itl_p95_ms {
                    0 => d.constraints.as_ref().map_or(0, |c| c.max_ms_per_token),
                    t => t,
                },
                created_at_ms: d.created_at_ms,
                replicas,
            }
        })
        .collect();
    pb::RoutingView {
        applied_index: sm.applied(),
        from_leader: leader,
        deployments,
        keepalive_ms: KEEPALIVE.as_millis() as u32,
        tenants: tenants(st, joule_client::calendar::today()),
    }
}

/// Every tenant with its keys' hashes (what a gateway authenticates by) and its usage so far
/// this calendar month (what its monthly quota is checked against).
pub fn tenants(st: &pb::ClusterState, today: u32) -> Vec<pb::RoutedTenant> {
    let (first, _) = joule_client::calendar::month_of(today);
    st.tenants
        .values()
        .map(|t| {
            let used = crate::state::tenants::usage_between(st, &t.name, first, today);
            pb::RoutedTenant {
                name: t.name.clone(),
                weight: t.weight,
                quota: t.quota,
                deployments: t.deployments.clone(),
                keys: t
                    .api_keys
                    .iter()
                    .map(|k| pb::RoutedKey {
                        id: k.id.clone(),
                        sha256: k.sha256.clone(),
                        expires_at_ms: k.expires_at_ms,
                    })
                    .collect(),
                month_tokens: used.prompt_tokens.saturating_add(used.output_tokens),
                month_mj: used.measured_mj.saturating_add(used.estimated_mj),
            }
        })
        .collect()
}

fn replica(
    st: &pb::ClusterState,
    p: &pb::Placement,
    loads: &HashMap<String, pb::WorkerLoad>,
) -> Option<pb::RoutedReplica> {
    let node = st.nodes.get(&p.node)?;
    let hw = node.hardware.clone().unwrap_or_default();
    let sha = st.models.get(&p.model).map(|m| m.sha256.as_str());
    let (curve, energy_source) = match node
        .profiles
        .iter()
        .find(|m| sha.is_some_and(|s| !s.is_empty() && m.sha256 == s))
        .and_then(|m| m.calibration.as_ref())
        .filter(|c| !c.points.is_empty())
    {
        Some(c) => (c.points.clone(), c.source),
        None => (estimate(st, p, &hw), EnergySource::Estimated as i32),
    };
    let load = loads
        .get(&p.node)
        .and_then(|l| l.models.iter().find(|m| m.model == p.deployment));
    let positive = |x: f64, d: f64| if x.is_finite() && x > 0.0 { x } else { d };
    Some(pb::RoutedReplica {
        node: p.node.clone(),
        address: node.address.clone(),
        state: p.state,
        node_status: node.status,
        schedule: node.schedule,
        retiring: p.retiring,
        curve,
        energy_source,
        idle_watts: positive(hw.idle_watts, DEFAULT_IDLE_W),
        running: load.map_or(0, |l| l.running),
        waiting: load.map_or(0, |l| l.waiting),
    })
}

/// A roofline curve for a replica whose worker reported no calibration of its model.
fn estimate(
    st: &pb::ClusterState,
    p: &pb::Placement,
    hw: &pb::NodeHardware,
) -> Vec<pb::CalibrationPoint> {
    let positive = |x: f64, d: f64| if x.is_finite() && x > 0.0 { x } else { d };
    let size = st.models.get(&p.model).map_or(0, |m| m.size_bytes);
    roofline(
        positive(hw.mem_bandwidth_gbs, CPU_BANDWIDTH_GBS),
        size.max(1),
        positive(hw.idle_watts, DEFAULT_IDLE_W),
        positive(hw.busy_watts, DEFAULT_BUSY_W),
    )
    .into_iter()
    .map(|x| pb::CalibrationPoint {
        batch_size: x.batch,
        output_tokens_per_s: x.tokens_per_s,
        watts: x.watts,
        tokens_per_joule: x.tokens_per_s / x.watts,
    })
    .collect()
}

/// Whether two views route the same (the applied index alone moves with every heartbeat-free
/// write, e.g. a setting, so the comparison leaves it out).
pub fn same(a: &pb::RoutingView, b: &pb::RoutingView) -> bool {
    let strip = |v: &pb::RoutingView| {
        let mut v = v.clone();
        v.applied_index = 0;
        v.encode_to_vec()
    };
    strip(a) == strip(b)
}
