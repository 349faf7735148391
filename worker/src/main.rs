//! The `joule-worker` binary: parse settings, start logging, serve until SIGTERM, drain, exit.

use joule_worker::{Args, Worker};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match Args::load() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    // Kept lines serve `Logs` (`joulectl logs NODE`).
    if let Err(e) = joule_proto::logging::init(&args.log, args.log_format, true) {
        eprintln!("{e}");
        return std::process::ExitCode::FAILURE;
    }
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
