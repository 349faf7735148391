//! `joulectl`: Joule's command-line client, in kubectl's grammar (`get`, `describe`, `apply`,
//! `create`, `delete`, `cordon`, `drain`, `-o table|wide|json|yaml`) against the cluster's
//! scheduler replicas (`--server`, `--token`, or a context of `config.yaml`), plus `cluster
//! up|down|status` (a local cluster), `config` (contexts), `bill` (a tenant's month, priced)
//! and verbs that talk to one worker directly (`--worker`).
//!
//! Layout: [`args`] (flags), [`commands`] (one file per verb), [`cluster`] (the local cluster),
//! [`context`] (contexts), [`connect`] (clients, through `joule-client`), [`render`] (the one
//! output seam), [`progress`] (progress bars) and [`views`] (what each resource shows).

mod args;
mod bench;
mod closest;
mod cluster;
mod commands;
mod connect;
mod context;
mod exit;
mod progress;
mod render;
mod tls;
mod views;

use clap::Parser as _;

use args::{Cli, Cmd, CreateWhat};
use commands::{apply, bill, completion, create, delete, explain, get, schedule, worker};
use render::Format;

/// A gRPC status as an error a user reads (the code, then the server's message) that keeps
/// its code for the exit code ([`exit`]).
pub fn status(s: tonic::Status) -> anyhow::Error {
    exit::Failure::status(&s).into()
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let f = cli.output;
    // `config` only writes contexts: the TLS flags there are settings to keep, checked as a
    // whole context by `config set-context`. The commands that reach the cluster's replicas
    // take the context's TLS where the replicas come from a context, each setting the flags
    // give taking precedence; the rest (a local cluster, a worker named by --worker, bench,
    // explain, completion) take the flags alone.
    if !matches!(cli.cmd, Cmd::Config { .. }) {
        let from_context = cli.cmd.reaches_replicas()
            && context::replicas_from_context(cli.server.as_deref(), cli.context.as_deref());
        let ctx = if from_context {
            context::context_tls(cli.context.as_deref())
                .map_err(|e| exit::usage(format!("{e:#}")))?
        } else {
            None
        };
        // A context named on purpose wins over the JOULE_TLS_* variables, as over
        // JOULE_SERVER and JOULE_TOKEN.
        let named = cli.context.as_deref().is_some_and(|c| !c.is_empty());
        let flags = connect::tls_flags(&cli, from_context && named);
        let (tls, names) = connect::client_tls(flags, ctx)?;
        connect::install_tls(&tls, &names)?;
    }
    if f == Format::Csv && !matches!(cli.cmd, Cmd::Get { .. }) {
        return Err(exit::usage(render::CSV_ONLY));
    }
    let w = &connect::WorkerTarget {
        addr: cli.worker.clone(),
        token: cli.worker_token.clone().unwrap_or_default(),
    };
    match &cli.cmd {
        Cmd::Cluster { cmd } => cluster::run(cmd, f).await,
        Cmd::Bench(a) => commands::bench::bench(a, cli.context.as_deref(), f),
        Cmd::Config { cmd } => commands::config::run(cmd, &cli, f),
        Cmd::Get {
            resource,
            name,
            filters,
        } => {
            let r = resource.parse()?;
            let c = connect::Cluster::new(&cli)?;
            get::get(&c, r, name.as_deref(), filters, f).await
        }
        Cmd::Apply { file } => {
            let c = connect::Cluster::new(&cli)?;
            apply::apply(&c, file).await
        }
        Cmd::Create {
            what:
                CreateWhat::Apikey {
                    tenant,
                    name,
                    expires,
                },
        } => {
            let c = connect::Cluster::new(&cli)?;
            create::apikey(&c, tenant, name.as_deref(), expires.as_deref(), f).await
        }
        Cmd::Delete {
            resource,
            name,
            tenant,
        } => {
            let r = resource.parse()?;
            let c = connect::Cluster::new(&cli)?;
            delete::delete(&c, r, name, tenant.as_deref()).await
        }
        Cmd::Bill {
            tenant,
            month,
            price_per_mtok,
            price_per_kwh,
            currency,
        } => {
            let c = connect::Cluster::new(&cli)?;
            bill::bill(
                &c,
                tenant,
                month,
                *price_per_mtok,
                *price_per_kwh,
                currency,
                f,
            )
            .await
        }
        Cmd::Describe { resource, name } => {
            let r = resource.parse()?;
            let c = connect::Cluster::new(&cli)?;
            get::describe(&c, r, name, f).await
        }
        Cmd::Explain { what } => explain::explain(what, f),
        Cmd::Completion { shell } => completion::completion(*shell),
        Cmd::Logs { node, follow, tail } => {
            let c = connect::Cluster::new(&cli)?;
            commands::logs::logs(&c, node, *tail, *follow).await
        }
        Cmd::Top { what } => commands::top::top(&connect::Cluster::new(&cli)?, what, f).await,
        Cmd::Cordon { node } => {
            schedule::set(&connect::Cluster::new(&cli)?, node, "Cordoned", f).await
        }
        Cmd::Uncordon { node } => {
            schedule::set(&connect::Cluster::new(&cli)?, node, "Active", f).await
        }
        Cmd::Drain {
            node: Some(node), ..
        } => schedule::set(&connect::Cluster::new(&cli)?, node, "Draining", f).await,
        Cmd::Drain {
            node: None,
            deadline_ms,
        } => worker::drain(w, *deadline_ms).await,
        Cmd::Generate { s, prompt } => worker::generate(w, s, prompt.clone()).await,
        Cmd::Chat { s, system, message } => {
            worker::chat(w, s, system.clone(), message.clone()).await
        }
        Cmd::Models => worker::models(w, f).await,
        Cmd::Stats => worker::stats(w, f).await,
        Cmd::Wait { model, timeout_s } => worker::wait(w, model, *timeout_s).await,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    exit::install_panic_hook();
    // Usage errors exit with 2, --help and --version with 0 (clap's own).
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let code = exit::code(&e);
            // A reader that left (`| head -1`) is no error: say nothing.
            if code != exit::Code::Ok {
                eprintln!("{}", exit::line(&e));
            }
            code.exit_code()
        }
    }
}
