//! The worker registry (`joule.internal.v1.Registry`). A worker registers through any replica:
//! its record is committed through the store. It then heartbeats to any replica; a follower
//! passes the heartbeat on to the leader, which keeps the liveness records
//! ([`crate::liveness`]). Every call needs the join token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use joule_proto::internal::v1 as pb;
use joule_proto::internal::v1::registry_server::Registry;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::liveness::Liveness;
use crate::state::commands;
use crate::store::Store;

/// The service, on every replica.
pub struct RegistryService<S> {
    pub store: S,
    /// `None`: this cluster takes no workers (every call is refused).
    pub join_token: Option<String>,
    pub heartbeat: Duration,
    pub live: Arc<Liveness>,
    /// Client of the leader for passing heartbeats on, by its address.
    pub leader_link: Mutex<Option<(String, joule_client::Registry)>>,
    /// Tenants' rate budgets, while this replica leads.
    pub budgets: crate::limits::Budgets,
}

/// The most usage records one report may carry.
pub const MAX_USAGE_RECORDS: usize = 100_000;

impl<S: Store> RegistryService<S> {
    pub fn new(
        store: S,
        join_token: Option<String>,
        heartbeat: Duration,
        live: Arc<Liveness>,
    ) -> Self {
        Self {
            store,
            join_token: join_token.filter(|t| !t.is_empty()),
            heartbeat,
            live,
            leader_link: Mutex::new(None),
            budgets: Default::default(),
        }
    }

    fn auth<T>(&self, req: &Request<T>, call: &'static str) -> Result<()> {
        let Some(token) = &self.join_token else {
            return Err(Error::Unauthenticated(
                "this scheduler takes no workers: start it with --join-token".into(),
            ));
        };
        super::auth::check_bearer(req, token, call, "join")
    }

    /// The leader's client, or UNAVAILABLE when this replica knows of none.
    fn to_leader(&self) -> Result<joule_client::Registry> {
        let l = self.store.leadership();
        let addr = self
            .store
            .address(l.leader)
            .filter(|_| l.leader != 0)
            .ok_or_else(|| {
                Error::Unavailable(format!("replica {} knows no leader right now; retry", l.me))
            })?;
        self.leader_client(&addr)
    }

    fn leader_client(&self, addr: &str) -> Result<joule_client::Registry> {
        let mut link = self.leader_link.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((a, c)) = link.as_ref()
            && a == addr
        {
            return Ok(c.clone());
        }
        let token = self.join_token.as_deref().unwrap_or_default();
        let mut connect = joule_client::Connect::internal();
        connect.timeout = Some(Duration::from_secs(2));
        let c = connect
            .registry(addr, token)
            .map_err(|e| Error::Internal(e.to_string()))?;
        *link = Some((addr.to_string(), c.clone()));
        Ok(c)
    }
}

pub fn check_node(n: &pb::Node) -> Result<()> {
    let name_ok = !n.name.is_empty()
        && n.name.len() <= 253
        && n.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if !name_ok {
        return Err(Error::Invalid(format!(
            "node.name: {:?} must be 1 to 253 letters, digits, '-', '.' or '_'",
            n.name
        )));
    }
    crate::config::check_address(&n.address)
        .map_err(|e| Error::Invalid(format!("node.address: {e}")))?;
    Ok(())
}

type RoutingStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::RoutingView, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> Registry for RegistryService<S> {
    type WatchRoutingStream = RoutingStream;

    async fn watch_routing(
        &self,
        req: Request<pb::WatchRoutingRequest>,
    ) -> Result<Response<RoutingStream>, Status> {
        self.auth(&req, "WatchRouting")?;
        let gateway = req.into_inner().gateway;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (store, live) = (self.store.clone(), self.live.clone());
        tokio::spawn(async move {
            tracing::debug!(%gateway, "gateway watches the routing view");
            let mut last: Option<(pb::RoutingView, tokio::time::Instant)> = None;
            let mut tick = tokio::time::interval(super::routing::POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !store.is_stopped() {
                tick.tick().await;
                let leader = store.leadership().is_leader();
                let loads = if leader {
                    live.loads()
                } else {
                    Default::default()
                };
                let view = store.read_local(|sm| super::routing::view(sm, &loads, leader));
                let due = last.as_ref().is_none_or(|(v, at)| {
                    !super::routing::same(v, &view) || at.elapsed() >= super::routing::KEEPALIVE
                });
                if due {
                    // A gateway that reads nothing for this long (a half-open connection) is
                    // gone: the task ends rather than wait forever.
                    let sent = tokio::time::timeout(
                        super::routing::KEEPALIVE * 10,
                        tx.send(Ok(view.clone())),
                    )
                    .await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                    last = Some((view, tokio::time::Instant::now()));
                }
            }
            tracing::debug!(%gateway, "routing watch ended");
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        self.auth(&req, "Register")?;
        let mut n = req
            .into_inner()
            .node
            .ok_or_else(|| Error::Invalid("node: required".into()))?;
        check_node(&n)?;
        n.registered_at_ms = commands::now_ms();
        let name = n.name.clone();
        let index = self
            .store
            .propose(commands::register_node(n))
            .await
            .map_err(|e| self.store.error(e))?;
        let l = self.store.leadership();
        if l.is_leader() {
            self.live.touch(l.term, &name, pb::WorkerLoad::default());
        }
        tracing::info!(node = %name, index, "worker registered");
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval_ms: self.heartbeat.as_millis() as u32,
            index,
        }))
    }

    async fn lease(
        &self,
        req: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        self.auth(&req, "Lease")?;
        let r = req.into_inner();
        let l = self.store.leadership();
        if !l.is_leader() {
            return self.to_leader()?.lease(r).await;
        }
        if r.gateway.is_empty() || r.asks.len() > crate::limits::MAX_ASKS {
            return Err(Error::Invalid(format!(
                "a lease needs its gateway and at most {} asks",
                crate::limits::MAX_ASKS
            ))
            .into());
        }
        let quotas: std::collections::HashMap<String, pb::Quota> = self.store.read_local(|sm| {
            r.asks
                .iter()
                .filter_map(|a| {
                    let t = sm.state().tenants.get(&a.tenant)?;
                    Some((a.tenant.clone(), t.quota.unwrap_or_default()))
                })
                .collect()
        });
        let resp = self.budgets.lease(
            l.term,
            |t| quotas.get(t).copied(),
            &r,
            std::time::Instant::now(),
        );
        Ok(Response::new(resp))
    }

    async fn record_usage(
        &self,
        req: Request<pb::RecordUsage>,
    ) -> Result<Response<pb::RecordUsageResponse>, Status> {
        self.auth(&req, "RecordUsage")?;
        let r = req.into_inner();
        if r.reporter.is_empty() || r.sequence == 0 {
            return Err(Error::Invalid(
                "a usage report needs its reporter and a sequence from 1".into(),
            )
            .into());
        }
        if r.records.len() + r.key_uses.len() > MAX_USAGE_RECORDS {
            return Err(Error::Invalid(format!(
                "a usage report carries at most {MAX_USAGE_RECORDS} records; send several"
            ))
            .into());
        }
        let (reporter, sequence, n) = (r.reporter.clone(), r.sequence, r.records.len());
        let index = self
            .store
            .propose(commands::record_usage(r))
            .await
            .map_err(|e| self.store.error(e))?;
        tracing::debug!(%reporter, sequence, records = n, index, "usage recorded");
        Ok(Response::new(pb::RecordUsageResponse { index }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.auth(&req, "Heartbeat")?;
        let hb = req.into_inner();
        let l = self.store.leadership();
        if !l.is_leader() {
            // Pass it on to the leader, who keeps the liveness records.
            return self.to_leader()?.heartbeat(hb).await;
        }
        let status = self
            .store
            .read_local(|sm| sm.state().nodes.get(&hb.name).map(|n| n.status));
        let Some(status) = status else {
            return Err(Error::NotFound(format!(
                "the cluster does not know a worker named {:?}; register again",
                hb.name
            ))
            .into());
        };
        crate::liveness::synced(&self.store, &self.live)
            .await
            .map_err(|e| self.store.error(e))?;
        self.live
            .touch(l.term, &hb.name, hb.load.clone().unwrap_or_default());
        self.record_reports(&hb).await;
        if status != pb::NodeStatus::Ready as i32 {
            self.store
                .propose(commands::set_node_status(&hb.name, pb::NodeStatus::Ready))
                .await
                .map_err(|e| self.store.error(e))?;
            tracing::info!(node = %hb.name, "worker is back: Ready");
        }
        let assignments = self
            .store
            .read_local(|sm| assignments(sm.state(), &hb.name));
        Ok(Response::new(pb::HeartbeatResponse { assignments }))
    }
}

/// Every deployment placed on `node` (retiring ones too: they serve until replaced), except
/// placements that failed (the leader backs off before it asks again).
pub fn assignments(st: &pb::ClusterState, node: &str) -> Vec<pb::Assignment> {
    st.placements
        .values()
        .filter(|p| p.node == node && p.state != pb::PlacementState::Failed as i32)
        .filter_map(|p| {
            let m = st.models.get(&p.model)?;
            Some(pb::Assignment {
                deployment: p.deployment.clone(),
                model: m.name.clone(),
                source: m.source.clone(),
                sha256: m.sha256.clone(),
                size_bytes: m.size_bytes,
                attempt: p.failures,
            })
        })
        .collect()
}

/// The reports that change what the state says of a placement: its state, its message, or
/// fetch progress by a tenth. Stale reports (an earlier attempt) are ignored.
pub fn changed_reports(
    st: &pb::ClusterState,
    node: &str,
    reports: &[pb::PlacementReport],
) -> Vec<pb::Command> {
    reports
        .iter()
        .filter_map(|r| {
            let p = st.placements.get(&format!("{}/{node}", r.deployment))?;
            if r.attempt != p.failures || p.state == pb::PlacementState::Failed as i32 {
                return None;
            }
            let moved = (r.progress - p.progress).abs() >= 0.1;
            if p.state == r.state && p.message == r.message && !moved {
                return None;
            }
            let state = pb::PlacementState::try_from(r.state).ok()?;
            let c = commands::set_placement_state(&r.deployment, node, r, state);
            Some(c)
        })
        .collect()
}

impl<S: Store> RegistryService<S> {
    async fn record_reports(&self, hb: &pb::HeartbeatRequest) {
        let cmds = self
            .store
            .read_local(|sm| changed_reports(sm.state(), &hb.name, &hb.placements));
        for c in cmds {
            // Stale, the placement moved meanwhile, or no quorum: the heartbeat still answers
            // (the worker needs its assignment), and the next one says it again.
            if let Err(e) = self.store.propose(c).await {
                tracing::debug!(node = %hb.name, error = %e, "placement report not applied");
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
        let e: Status = check_node(&n).unwrap_err().into();
        assert!(e.message().contains("node.name"));
        n.name = "ok".into();
        n.address = "nowhere".into();
        let e: Status = check_node(&n).unwrap_err().into();
        assert!(e.message().contains("node.address"));
    }
}
