//! `joule-scheduler`: the control plane. Three or five replicas agree on the cluster state.
//!
//! Layout:
//! - [`config`]: the daemon's flags and their checks.
//! - [`store`]: the seam to the replicated command log ([`store::Store`]); [`raft`] is the
//!   embedded backend, [`transport`] carries its messages between replica processes.
//! - [`state`]: the replicated state machine and the commands that change it.
//! - [`api`]: the gRPC services; [`error`] maps every failure to a gRPC status, once.
//! - [`liveness`]: the leader's view of which workers answer.
//! - [`placement`]: the pure placement function; [`control`]: the leader's loop that runs it
//!   and commits the result.
//! - [`run`] starts one replica on a listener until a shutdown future resolves; `main.rs` only
//!   parses flags, so tests start replicas in-process.

pub mod api;
pub mod config;
pub mod control;
pub mod error;
pub mod limits;
pub mod liveness;
pub mod placement;
pub mod raft;
pub mod state;
pub mod store;
pub mod transport;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use joule_proto::internal::v1::raft_server::RaftServer;
use joule_proto::internal::v1::registry_server::RegistryServer;
use joule_proto::v1::admin_server::AdminServer;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;

use crate::api::admin::AdminService;
use crate::api::raft::RaftService;
use crate::api::registry::RegistryService;
use crate::config::Args;
use crate::liveness::{Liveness, watch_workers};
use crate::store::{RaftStore, Store};
use crate::transport::GrpcTransport;

/// Runs one replica: opens its log (refusing a damaged one), starts its Raft node and serves
/// gRPC on `listener` until `shutdown` resolves or the Raft node dies. `args` must have passed
/// [`Args::validate`].
pub async fn run(
    args: Args,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let peers = args.validate().map_err(anyhow::Error::msg)?;
    args.tls.check_all_or_none()?;
    let tls = args.tls.load()?;
    tls.install_client();
    let admin_token = args.admin_token.clone().unwrap_or_default();
    let peer_token = args.peer_token.clone().unwrap_or_default();
    let transport = GrpcTransport::new(
        args.id,
        peers.clone(),
        peer_token.clone(),
        tokio::runtime::Handle::current(),
    );
    let node = raft::node::start(args.node_config(&peers), transport.clone())?;
    transport.attach(node.clone());
    let store = RaftStore::new(node.clone(), Arc::clone(&transport));
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    health
        .set_service_status(joule_client::tls::LIVENESS, ServingStatus::Serving)
        .await;
    tokio::spawn(report_readiness(store.clone(), health));
    // Closed on every way out of this function.
    let _health_port =
        joule_client::tls::health_port(args.health_listen.as_deref(), health_service.clone())
            .await
            .map_err(anyhow::Error::msg)?;
    let live = Arc::new(Liveness::default());
    let heartbeat = Duration::from_millis(args.heartbeat_ms);
    tokio::spawn(watch_workers(
        store.clone(),
        live.clone(),
        heartbeat / 2,
        Duration::from_millis(args.unreachable_after_ms),
    ));
    tokio::spawn(control::run(store.clone(), live.clone(), args.control()));
    let admin = AdminService {
        store: store.clone(),
        token: admin_token,
        live: live.clone(),
        join_token: args.join_token.clone().unwrap_or_default(),
    };
    let registry = RegistryService::new(store.clone(), args.join_token.clone(), heartbeat, live);
    tracing::info!(
        replica = args.id,
        listen = %listener.local_addr()?,
        peers = ?peers,
        tls = ?tls,
        data_dir = %args.data_dir.display(),
        "scheduler replica serving"
    );
    // Nagle off on accepted connections: a small reply (a lease, a heartbeat answer) must not
    // wait for the client's delayed ACK (40 ms on Linux).
    let incoming = joule_client::tls::listener::incoming(listener, tls.grpc_internal())?;
    let mut died = node.watch();
    let raft_died = Arc::new(AtomicBool::new(false));
    let flag = raft_died.clone();
    let stop = node.clone();
    let reflection_v1 = joule_proto::reflection::v1().context("building the reflection service")?;
    let reflection_v1alpha =
        joule_proto::reflection::v1alpha().context("building the reflection service")?;
    let served = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(RaftServer::new(RaftService {
            node: node.clone(),
            peer_token,
        }))
        .add_service(AdminServer::new(admin))
        .add_service(RegistryServer::new(registry))
        .serve_with_incoming_shutdown(incoming, async move {
            tokio::select! {
                _ = shutdown => {}
                // The Raft thread ended on its own (a disk it cannot write): stop serving.
                _ = async { while died.changed().await.is_ok() {} } => {
                    flag.store(true, Ordering::Relaxed);
                }
            }
            stop.stop();
        })
        .await;
    served.context("the gRPC server failed")?;
    // Give the Raft thread its last step.
    for _ in 0..50 {
        if node.is_stopped() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if raft_died.load(Ordering::Relaxed) {
        anyhow::bail!("the Raft node stopped (see the error above); this replica exits");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The health service says whether this replica can serve its APIs: "" (the process) is always
/// SERVING; `joule.v1.Admin` and `joule.internal.v1.Registry` are SERVING while the replica
/// knows a leader, NOT_SERVING while it is cut off from a majority (a readiness probe's answer:
/// send clients elsewhere).
async fn report_readiness<S: Store>(store: S, health: tonic_health::server::HealthReporter) {
    let mut watch = store.watch();
    let mut last = None;
    loop {
        let ready = watch.borrow_and_update().leader != 0;
        if last != Some(ready) {
            let s = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for svc in ["joule.v1.Admin", "joule.internal.v1.Registry"] {
                health.set_service_status(svc, s).await;
            }
            last = Some(ready);
        }
        if watch.changed().await.is_err() {
            return;
        }
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
