//! The `joule-gateway` binary: parse and check the flags, bind the three ports, and serve
//! ([`joule_gateway::run`]) until SIGTERM or SIGINT.

use std::process::ExitCode;

use clap::Parser as _;
use joule_gateway::Listeners;
use joule_gateway::config::Args;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = joule_proto::logging::init("info", args.log_format, false) {
        eprintln!("joule-gateway: {e}");
        return ExitCode::FAILURE;
    }
    let settings = match args.validate() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("joule-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let bind = |flag: &'static str, addr: String| async move {
        TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} ({flag}): {e}"))
    };
    let listeners = async {
        Ok::<_, String>(Listeners {
            http: bind("--http-listen", args.http_listen.clone()).await?,
            grpc: bind("--grpc-listen", args.grpc_listen.clone()).await?,
            metrics: bind("--metrics-listen", args.metrics_listen.clone()).await?,
            health: match &args.health_listen {
                Some(a) => Some(bind("--health-listen", a.clone()).await?),
                None => None,
            },
        })
    }
    .await;
    let listeners = match listeners {
        Ok(l) => l,
        Err(e) => {
            eprintln!("joule-gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    match joule_gateway::run(settings, listeners, joule_gateway::terminated()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("joule-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}
