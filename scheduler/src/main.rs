//! The `joule-scheduler` binary: check the flags, open the replica's log (refusing a damaged
//! one), start its Raft node, serve gRPC on `--listen` until SIGTERM or SIGINT.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use joule_proto::internal::v1::raft_server::RaftServer;
use joule_proto::internal::v1::registry_server::RegistryServer;
use joule_proto::v1::admin_server::AdminServer;
use joule_scheduler::config::{Args, Peers};
use joule_scheduler::raft::node;
use joule_scheduler::registry::{Liveness, RegistryService, watch_workers};
use joule_scheduler::server::{AdminService, RaftService};
use joule_scheduler::transport::GrpcTransport;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let peers = match args.validate() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("joule-scheduler: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(token) = args.admin_token.clone().filter(|t| !t.is_empty()) else {
        eprintln!("joule-scheduler: --admin-token (or JOULE_ADMIN_TOKEN) is required");
        return ExitCode::from(2);
    };
    match run(&args, peers, token).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("joule-scheduler: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args, peers: Peers, token: String) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let transport = GrpcTransport::new(args.id, peers.clone(), tokio::runtime::Handle::current());
    let node = node::start(args.node_config(&peers), transport.clone())?;
    transport.attach(node.clone());
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    tokio::spawn(report_readiness(node.watch(), health));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(joule_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let live = Arc::new(Liveness::default());
    let admin = AdminService {
        node: node.clone(),
        transport: Arc::clone(&transport),
        token,
        live: live.clone(),
    };
    let heartbeat = std::time::Duration::from_millis(args.heartbeat_ms);
    let registry = RegistryService {
        node: node.clone(),
        transport: Arc::clone(&transport),
        join_token: args.join_token.clone().filter(|t| !t.is_empty()),
        heartbeat,
        live: live.clone(),
        leader_link: std::sync::Mutex::new(None),
    };
    tokio::spawn(watch_workers(
        node.clone(),
        live,
        heartbeat / 2,
        std::time::Duration::from_millis(args.unreachable_after_ms),
    ));
    tracing::info!(
        replica = args.id,
        listen = %listener.local_addr()?,
        peers = ?peers,
        data_dir = %args.data_dir.display(),
        "scheduler replica serving"
    );
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let stop = node.clone();
    let mut died = node.watch();
    let raft_died = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = raft_died.clone();
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(RaftServer::new(RaftService { node: node.clone() }))
        .add_service(AdminServer::new(admin))
        .add_service(RegistryServer::new(registry))
        .serve_with_incoming_shutdown(incoming, async move {
            tokio::select! {
                _ = joule_scheduler::terminated() => {}
                // The Raft thread ended on its own (a disk it cannot write): stop serving.
                _ = async { while died.changed().await.is_ok() {} } => {
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            stop.stop();
        })
        .await
        .context("the gRPC server failed")?;
    // Give the Raft thread its last step.
    for _ in 0..50 {
        if node.is_stopped() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    if raft_died.load(std::sync::atomic::Ordering::Relaxed) {
        anyhow::bail!("the Raft node stopped (see the error above); this replica exits");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The health service says whether this replica can serve its APIs: "" (the process) is always
/// SERVING; `joule.v1.Admin` and `joule.internal.v1.Registry` are SERVING while the replica
/// knows a leader, NOT_SERVING while it is cut off from a majority (a readiness probe's answer:
/// send clients elsewhere).
async fn report_readiness(
    mut status: tokio::sync::watch::Receiver<joule_scheduler::raft::Status>,
    health: tonic_health::server::HealthReporter,
) {
    let mut last = None;
    loop {
        let ready = status.borrow_and_update().leader != 0;
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
        if status.changed().await.is_err() {
            return;
        }
    }
}
