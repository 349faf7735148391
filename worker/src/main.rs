//! The `joule-worker` binary: parse settings, start logging, serve until SIGTERM, drain, exit.

use joule_worker::{Args, Worker};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match Args::load() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let worker = match Worker::start(&args).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("{e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    joule_worker::server::terminated().await;
    worker.shutdown().await;
    tracing::info!("stopped");
    std::process::ExitCode::SUCCESS
}
