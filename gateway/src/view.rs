//! The routing view: every deployment's replicas, their workers' addresses, states, curves and
//! load, and the tenants with their keys' hashes, as the schedulers last said. A task ([`watch`]) keeps it current from a
//! `WatchRouting` stream of any scheduler replica, moving to the next replica when its stream
//! fails or goes quiet past three keepalives; the last view stays in force meanwhile, so a
//! scheduler failover fails no request. Readers take an `Arc` snapshot and never wait.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use joule_client::{Connect, Servers};
use joule_proto::internal::v1 as pb;
use tokio::sync::watch;

use crate::route::Point;

/// One replica of a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    pub node: String,
    pub address: String,
    /// Serving, on a Ready node that is not draining, not retiring.
    pub ready: bool,
    /// Serving, but retiring or draining: used only when no ready replica is left.
    pub fallback: bool,
    pub curve: Vec<Point>,
    pub estimated: bool,
    pub idle_watts: f64,
    /// Its load as the leader last heard (0 from a follower's view).
    pub running: u32,
    pub waiting: u32,
    /// Its placement state, for messages ("Loading", "Fetching", ...).
    pub state: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub name: String,
    pub model: String,
    pub ttft_ms: Option<f64>,
    pub itl_ms: Option<f64>,
    pub created_ms: i64,
    pub replicas: Vec<Replica>,
}

impl Deployment {
    /// Replicas a request may go to (ready ones, then fallbacks).
    pub fn routable(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.iter().filter(|r| r.ready || r.fallback)
    }
}

/// The whole view.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Whether any scheduler has answered yet.
    pub synced: bool,
    pub deployments: BTreeMap<String, Deployment>,
    pub applied_index: u64,
    /// Tenants and their keys' hashes.
    pub tenants: Arc<crate::tenancy::keys::Directory>,
}

impl View {
    pub fn from_proto(v: &pb::RoutingView) -> Self {
        let deployments = v
            .deployments
            .iter()
            .map(|d| (d.name.clone(), deployment(d)))
            .collect();
        View {
            synced: true,
            deployments,
            applied_index: v.applied_index,
            tenants: Arc::new(crate::tenancy::keys::Directory::from_proto(&v.tenants)),
        }
    }
}

fn deployment(d: &pb::RoutedDeployment) -> Deployment {
    let ms = |v: u32| (v > 0).then_some(f64::from(v));
    Deployment {
        name: d.name.clone(),
        model: d.model.clone(),
        ttft_ms: ms(d.ttft_p95_ms),
        itl_ms: ms(d.itl_p95_ms),
        created_ms: d.created_at_ms,
        replicas: d.replicas.iter().map(replica).collect(),
    }
}

fn replica(r: &pb::RoutedReplica) -> Replica {
    let serving = r.state == pb::PlacementState::Serving as i32
        && r.node_status == pb::NodeStatus::Ready as i32;
    let draining = r.schedule == pb::NodeSchedule::Draining as i32;
    let state = pb::PlacementState::try_from(r.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("PLACEMENT_STATE_")
                .to_lowercase()
        })
        .unwrap_or_default();
    Replica {
        node: r.node.clone(),
        address: r.address.clone(),
        ready: serving && !draining && !r.retiring,
        fallback: serving && (draining || r.retiring),
        curve: r
            .curve
            .iter()
            .map(|p| Point {
                batch: p.batch_size,
                tokens_per_s: p.output_tokens_per_s,
                watts: p.watts,
            })
            .collect(),
        estimated: r.energy_source != joule_proto::v1::EnergySource::Measured as i32,
        idle_watts: r.idle_watts,
        running: r.running,
        waiting: r.waiting,
        state: if r.node_status == pb::NodeStatus::Ready as i32 {
            state
        } else {
            "node unreachable".into()
        },
    }
}

/// A cloneable handle on the current view.
#[derive(Debug, Clone)]
pub struct ViewHandle {
    current: Arc<RwLock<Arc<View>>>,
    changed: watch::Sender<u64>,
}

impl Default for ViewHandle {
    fn default() -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(View::default()))),
            changed: watch::channel(0).0,
        }
    }
}

impl ViewHandle {
    pub fn get(&self) -> Arc<View> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set(&self, v: View) {
        let index = v.applied_index;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(v);
        self.changed.send_replace(index);
    }

    /// Notified after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// How long a follower's view (no load figures) is followed before the leader is looked for.
const LEAVE_FOLLOWER_AFTER: Duration = Duration::from_secs(10);

/// Keeps `view` current from the schedulers until the process ends.
pub async fn watch(view: ViewHandle, servers: Arc<Servers>, token: String, gateway: String) {
    let connect = Connect {
        connect_timeout: Duration::from_millis(500),
        timeout: None,
    };
    let mut failures = 0u32;
    loop {
        for addr in servers.order() {
            match follow(&view, &connect, addr, &token, &gateway).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(scheduler = addr, error = %e, "routing view: trying the next scheduler");
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Follows one scheduler's stream until it fails or goes quiet.
async fn follow(
    view: &ViewHandle,
    connect: &Connect,
    addr: &str,
    token: &str,
    gateway: &str,
) -> Result<(), String> {
    let mut client = connect.registry(addr, token).map_err(|e| e.to_string())?;
    let req = pb::WatchRoutingRequest {
        gateway: gateway.to_string(),
    };
    let mut stream = tokio::time::timeout(Duration::from_secs(2), client.watch_routing(req))
        .await
        .map_err(|_| "no answer within 2 s".to_string())?
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let mut quiet = Duration::from_secs(3);
    let mut got = false;
    let mut since_leader = Instant::now();
    let mut behind = 0u32;
    loop {
        let msg = tokio::time::timeout(quiet, stream.message())
            .await
            .map_err(|_| format!("quiet for {} ms", quiet.as_millis()))?
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        let Some(v) = msg else {
            return if got {
                Ok(())
            } else {
                Err("the stream ended".into())
            };
        };
        if !got {
            tracing::info!(
                scheduler = addr,
                deployments = v.deployments.len(),
                "routing view synced"
            );
            got = true;
        }
        quiet = Duration::from_millis(u64::from(v.keepalive_ms.max(100)) * 3);
        // A view older than the one in force (another replica, behind) is not taken, unless
        // older ones keep coming (a control plane restored from an older state).
        let current = view.get();
        if v.applied_index >= current.applied_index || !current.synced || behind >= 30 {
            view.set(View::from_proto(&v));
            behind = 0;
        } else {
            behind += 1;
        }
        // Only the leader's view carries the workers' load: a follower's is used while no
        // leader answers, and left after a while to look for the leader.
        if v.from_leader {
            since_leader = Instant::now();
        } else if since_leader.elapsed() > LEAVE_FOLLOWER_AFTER {
            return Ok(());
        }
    }
}
