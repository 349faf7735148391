//! The `joule-scheduler` binary: parse and check the flags, bind `--listen`, and run the
//! replica ([`joule_scheduler::run`]) until SIGTERM or SIGINT.

use std::process::ExitCode;

use clap::Parser as _;
use joule_scheduler::config::Args;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = joule_proto::logging::init("info", args.log_format, false) {
        eprintln!("joule-scheduler: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = args.validate() {
        eprintln!("joule-scheduler: {e}");
        return ExitCode::from(2);
    }
    // TLS files are checked before anything starts, so a bad one is a usage error too.
    if let Err(e) = args
        .tls
        .check_all_or_none()
        .and_then(|()| args.tls.load().map(drop))
    {
        eprintln!("joule-scheduler: {e}");
        return ExitCode::from(2);
    }
    let listener = match TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "joule-scheduler: cannot listen on {} (--listen): {e}",
                args.listen
            );
            return ExitCode::FAILURE;
        }
    };
    match joule_scheduler::run(args, listener, joule_scheduler::terminated()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("joule-scheduler: {e:#}");
            ExitCode::FAILURE
        }
    }
}
