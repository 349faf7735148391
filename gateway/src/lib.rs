//! `joule-gateway`: the public edge of a Joule cluster. Stateless: run one or many. It speaks
//! OpenAI-compatible HTTP and `joule.v1.Inference` gRPC, routes each request among the ready
//! replicas of its model by predicted joules per token within the latency target, retries
//! before the first token and moves a stream to another replica when its worker dies after it.
//! It never sits on the Raft path and holds no cluster state of its own beyond the routing view
//! it watches.
//!
//! Layout:
//! - [`config`]: flags and their checks.
//! - [`view`]: the routing view, kept current from any scheduler replica.
//! - [`route`]: the pure routing function (table-tested; the simulator runs it too).
//! - [`upstream`]: worker connections and in-flight counts; [`relay`]: attempts, retries and
//!   stream migration.
//! - [`tenancy`]: API keys, per-tenant limits (leased from the leader) and usage metering.
//! - [`openai`]: the HTTP API; [`grpc`]: the gRPC API; [`metrics`]: `/metrics`;
//!   [`error`]: the one error type and its HTTP and gRPC mappings.
//! - [`run`] serves until a shutdown future resolves; `main.rs` only parses flags and binds.

pub mod config;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod openai;
pub mod relay;
pub mod route;
pub mod tenancy;
pub mod upstream;
pub mod view;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use axum::http::header;
use axum::response::IntoResponse;
use joule_proto::v1::inference_server::InferenceServer;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::relay::Relay;
use crate::view::ViewHandle;

/// The gateway's three listeners.
#[derive(Debug)]
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: TcpListener,
    pub metrics: TcpListener,
    /// The plain-TCP health port (`--health-listen`), if any.
    pub health: Option<TcpListener>,
}

/// Serves until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Before any connection is made.
    settings.tls.install_client();
    let view = ViewHandle::default();
    let servers = Arc::new(joule_client::Servers::new(settings.schedulers.clone()));
    let watcher = tokio::spawn(view::watch(
        view.clone(),
        servers.clone(),
        settings.join_token.clone(),
        settings.name.clone(),
    ));
    let policy = settings.policy;
    let tls = settings.tls.clone();
    if !settings.auth {
        tracing::warn!(
            "--no-auth: every request is served WITHOUT an API key as the unlimited `default` \
             tenant; anyone who can reach this gateway can use it. For local use only."
        );
    }
    // This process's identity for leases and usage reports (a restart is a new reporter, so
    // its sequence starts afresh without colliding with the old one's).
    let instance = format!(
        "{}-{:012x}",
        settings.name,
        relay::fnv(
            &(tenancy::now_ms() as u64 ^ u64::from(std::process::id()).rotate_left(32))
                .to_le_bytes()
        ) & 0xffff_ffff_ffff
    );
    let link = Arc::new(tenancy::link::Link::new(
        servers,
        settings.join_token.clone(),
        std::time::Duration::from_secs(2),
    ));
    let metrics = Arc::new(metrics::Metrics::new());
    let limiter = tenancy::limits::Limiter::new(instance.clone());
    let meter = tenancy::usage::Meter::new(instance);
    let lease_task = tokio::spawn(limiter.clone().run(link.clone()));
    let flush_task = tokio::spawn(meter.clone().run(link.clone(), settings.usage_flush));
    let tenancy = Arc::new(tenancy::Tenancy::new(
        settings.auth,
        limiter,
        meter.clone(),
        metrics.clone(),
    ));
    let relay = Arc::new(Relay::new(view, settings, metrics, tenancy));
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(
            joule_client::tls::LIVENESS,
            tonic_health::ServingStatus::Serving,
        )
        .await;
    let health_task = tokio::spawn(grpc::report_health(relay.clone(), health));
    // Closed on every way out of this function.
    let _health_port = listeners
        .health
        .map(|l| joule_client::tls::spawn_health(l, health_service.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tracing::info!(
        http = %listeners.http.local_addr()?,
        grpc = %listeners.grpc.local_addr()?,
        metrics = %listeners.metrics.local_addr()?,
        routing = policy.as_str(),
        tls = ?tls,
        "joule-gateway listening"
    );

    let http = {
        let app = openai::router(relay.clone());
        let stop = stopped(stop_rx.clone());
        // Nagle off: SSE chunks are small and must not wait for an ACK.
        joule_client::tls::listener::spawn_http(listeners.http, tls.http(), app, true, stop)?
    };
    let metrics = {
        let r = relay.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let r = r.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        r.metrics.encode(),
                    )
                        .into_response()
                }
            }),
        );
        let stop = stopped(stop_rx.clone());
        joule_client::tls::listener::spawn_http(listeners.metrics, tls.http(), app, false, stop)?
    };
    let reflection_v1 = joule_proto::reflection::v1().context("building the reflection service")?;
    let reflection_v1alpha =
        joule_proto::reflection::v1alpha().context("building the reflection service")?;
    // Accepted connections with Nagle off (token events are small and must not wait for ACKs;
    // tonic's own setting does not reach connections it did not accept itself).
    let incoming = joule_client::tls::listener::incoming(listeners.grpc, tls.grpc_public())?;
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(InferenceServer::new(grpc::InferenceService { relay }))
        .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
    let grpc_result = grpc.await;
    watcher.abort();
    health_task.abort();
    let http_result = http.await;
    let metrics_result = metrics.await;
    lease_task.abort();
    flush_task.abort();
    // What was metered last is committed before the process ends.
    if let Err(e) = meter.flush(&link).await {
        tracing::warn!(error = %e, "usage metered since the last report could not be committed");
    }
    grpc_result.context("the gRPC server failed")?;
    http_result
        .context("the HTTP task failed")?
        .context("the HTTP server failed")?;
    metrics_result
        .context("the metrics task failed")?
        .context("the metrics server failed")?;
    tracing::info!("stopped");
    Ok(())
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
