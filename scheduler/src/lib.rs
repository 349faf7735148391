//! `joule-scheduler`: the control plane. Three or five replicas agree on the cluster state
//! through Raft ([`raft`]); the state and the commands that change it live in [`state`];
//! workers join and heartbeat through [`registry`]. The
//! daemon's flags are in [`config`], its gRPC services in [`server`], and the Raft transport
//! between replica processes in [`transport`].

pub mod config;
pub mod raft;
pub mod registry;
pub mod server;
pub mod state;
pub mod transport;

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
