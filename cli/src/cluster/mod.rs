//! `cluster up | down | status`: a whole Joule cluster on this machine, each part a real
//! process (three `joule-scheduler` replicas, `--workers` `joule-worker`s, one
//! `joule-gateway`), kept under `${JOULE_HOME:-~/.cache/joule}/cluster/NAME/` (data dirs,
//! `NAME.log`, `NAME.pid`, `cluster.json`). `up` fetches the default model when needed,
//! applies it as a deployment and a tenant with an API key, waits until it serves, and writes
//! a context; run twice, it changes nothing; with processes that died, it says so and starts
//! them again. `down` stops every process by its pid, the gateway first, then the workers
//! (which drain), then the schedulers.
//!
//! Layout: [`state`] (the record and its ports), [`procs`] (processes), [`fetch`] (the default
//! model), [`up`] (bringing it up and waiting), here: the verbs' flags, `down` and `status`.
//! It never leaves a process it started without a pid file, and never prints a token.

pub mod fetch;
pub mod procs;
pub mod state;
mod up;

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use serde::Serialize;

use crate::render::{self, Format, Render};
use procs::Alive;
use state::State;

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Start a local cluster (or the parts of it that are not running) and wait until it
    /// serves; writes the context NAME and makes it current.
    Up {
        #[command(flatten)]
        name: Name,
        /// Workers to start (each a node of the cluster).
        #[arg(long)]
        workers: Option<usize>,
        /// Engine threads per worker (default: the cores shared out among the workers).
        #[arg(long)]
        threads: Option<u32>,
        /// A GGUF file to serve, or `default` (SmolLM2-135M-Instruct Q4_1, fetched once;
        /// the default for a new cluster). A cluster keeps the model it was made with.
        #[arg(long)]
        model: Option<String>,
        /// How long to wait for it to serve (the first load calibrates), in seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
    /// Stop every process of the local cluster (the gateway, then the workers, which drain,
    /// then the schedulers).
    Down {
        #[command(flatten)]
        name: Name,
        /// Also delete its data, logs and context.
        #[arg(long)]
        purge: bool,
    },
    /// Each process of the local cluster: pid, state, health and ports.
    Status {
        #[command(flatten)]
        name: Name,
    },
}

#[derive(clap::Args, Debug)]
pub struct Name {
    /// The local cluster's name (its directory and its context).
    #[arg(long, default_value = "local", env = "JOULE_CLUSTER")]
    pub name: String,
}

/// The cluster's directory.
pub fn dir(name: &str) -> anyhow::Result<PathBuf> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        anyhow::bail!("--name {name:?}: 1-63 of a-z 0-9 -");
    }
    Ok(fetch::cache_dir()?.join("cluster").join(name))
}

/// An exclusive lock on the cluster's directory, held while `up` or `down` works.
pub struct Lock(#[allow(dead_code)] std::fs::File);

impl Lock {
    pub fn take(dir: &std::path::Path, verb: &str) -> anyhow::Result<Self> {
        use std::os::fd::AsRawFd as _;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))?;
        // SAFETY: flock(2) on a descriptor this File owns.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            anyhow::bail!(
                "another joulectl is starting or stopping the cluster in {} (wait for it, or                  stop it, then run `joulectl {verb}` again)",
                dir.display()
            );
        }
        Ok(Self(f))
    }
}

/// The binary a process of this name runs.
fn binary_of(name: &str) -> Option<&'static str> {
    if name.starts_with("scheduler-") {
        Some("joule-scheduler")
    } else if name.starts_with("worker-") {
        Some("joule-worker")
    } else if name == "gateway" {
        Some("joule-gateway")
    } else {
        None
    }
}

/// The processes named by the pid files in `d` (for a cluster whose record is damaged).
fn from_pid_files(d: &std::path::Path) -> Vec<Proc> {
    let mut v: Vec<Proc> = std::fs::read_dir(d)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            let name = n.strip_suffix(".pid")?.to_string();
            let binary = binary_of(&name)?;
            Some(Proc {
                name,
                binary,
                ports: Vec::new(),
            })
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// One process of the cluster: its name, binary and ports.
#[derive(Debug, Clone)]
pub struct Proc {
    pub name: String,
    pub binary: &'static str,
    pub ports: Vec<(&'static str, u16)>,
}

/// Every process, in start order: schedulers, workers, gateway.
pub fn processes(s: &State) -> Vec<Proc> {
    let mut v: Vec<Proc> = s
        .schedulers
        .iter()
        .enumerate()
        .map(|(i, p)| Proc {
            name: format!("scheduler-{}", i + 1),
            binary: "joule-scheduler",
            ports: vec![("grpc", *p)],
        })
        .collect();
    v.extend(s.workers.iter().enumerate().map(|(i, w)| Proc {
        name: format!("worker-{}", i + 1),
        binary: "joule-worker",
        ports: vec![("grpc", w.grpc), ("metrics", w.metrics)],
    }));
    v.push(Proc {
        name: "gateway".into(),
        binary: "joule-gateway",
        ports: vec![
            ("http", s.gateway.http),
            ("grpc", s.gateway.grpc),
            ("metrics", s.gateway.metrics),
        ],
    });
    v
}

pub async fn run(cmd: &ClusterCmd, f: Format) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::Up {
            name,
            workers,
            threads,
            model,
            timeout_s,
        } => {
            up::up(
                &name.name,
                *workers,
                *threads,
                model.as_deref(),
                Duration::from_secs(*timeout_s),
                f,
            )
            .await
        }
        ClusterCmd::Down { name, purge } => down(&name.name, *purge),
        ClusterCmd::Status { name } => status(&name.name, f).await,
    }
}

fn down(name: &str, purge: bool) -> anyhow::Result<()> {
    let d = dir(name)?;
    if !d.exists() {
        println!("no local cluster {name:?}: nothing to stop");
        return forget_context(name, purge);
    }
    let _lock = Lock::take(&d, "cluster down")?;
    let all = match State::load(&d) {
        Ok(Some(s)) => processes(&s),
        Ok(None) => from_pid_files(&d),
        Err(e) => {
            // Still stop what the pid files name: a damaged record must not keep it running.
            eprintln!("{e:#}; stopping the processes its pid files name");
            from_pid_files(&d)
        }
    };
    let mut stopped = 0;
    // The gateway first (no new requests), then the workers (they drain), then the
    // schedulers.
    for group in ["joule-gateway", "joule-worker", "joule-scheduler"] {
        let mut running = Vec::new();
        for p in all.iter().filter(|p| p.binary == group) {
            match procs::alive(&d, &p.name, p.binary) {
                Alive::Running(pid) => running.push((p.name.clone(), pid, p.binary)),
                Alive::Stale(_) => {
                    let _ = std::fs::remove_file(procs::pid_file(&d, &p.name));
                }
                Alive::Stopped => {}
            }
        }
        stopped += running.len();
        for k in procs::stop(&d, &running, Duration::from_secs(40)) {
            eprintln!("{k} did not stop within 40 s of SIGTERM: killed");
        }
    }
    let left: Vec<String> = all
        .iter()
        .filter(|p| matches!(procs::alive(&d, &p.name, p.binary), Alive::Running(_)))
        .map(|p| p.name.clone())
        .collect();
    if !left.is_empty() {
        anyhow::bail!(
            "{} still running after SIGKILL; nothing deleted",
            left.join(", ")
        );
    }
    if purge {
        std::fs::remove_dir_all(&d)?;
        forget_context(name, true)?;
        println!("cluster {name:?}: stopped {stopped} processes; deleted its data and context");
    } else {
        println!(
            "cluster {name:?}: stopped {stopped} processes (data kept in {}; `cluster up` starts \
             it again, `cluster down --purge` deletes it)",
            d.display()
        );
    }
    Ok(())
}

/// With `purge`, removes the context `up` wrote for the cluster.
fn forget_context(name: &str, purge: bool) -> anyhow::Result<()> {
    if !purge {
        return Ok(());
    }
    let config = crate::context::path()?;
    let _lock = crate::context::lock(&config)?;
    let mut cfg = crate::context::Config::load_from(&config)?;
    if cfg.get(name).is_some() {
        cfg.contexts.retain(|c| c.name != name);
        if cfg.current_context == name {
            cfg.current_context.clear();
        }
        cfg.save_to(&config)?;
    }
    Ok(())
}

/// A process as `status` shows it.
#[derive(Serialize)]
struct Row {
    name: String,
    pid: Option<u32>,
    state: &'static str,
    health: String,
    ports: String,
    log: String,
}

impl Render for Row {
    fn headers(_: bool) -> Vec<&'static str> {
        vec!["NAME", "PID", "STATE", "HEALTH", "PORTS", "LOG"]
    }
    fn row(&self, _: bool) -> Vec<String> {
        vec![
            self.name.clone(),
            self.pid.map_or("-".into(), |p| p.to_string()),
            self.state.into(),
            self.health.clone(),
            self.ports.clone(),
            self.log.clone(),
        ]
    }
}

async fn status(name: &str, f: Format) -> anyhow::Result<()> {
    let d = dir(name)?;
    let Some(s) = State::load(&d)? else {
        anyhow::bail!("no local cluster {name:?}: run `joulectl cluster up`");
    };
    let health = up::Health::probe(&s).await;
    let rows: Vec<Row> = processes(&s)
        .into_iter()
        .map(|p| {
            let (pid, st) = match procs::alive(&d, &p.name, p.binary) {
                Alive::Running(pid) => (Some(pid), "Running"),
                Alive::Stale(pid) => (Some(pid), "Exited"),
                Alive::Stopped => (None, "Stopped"),
            };
            Row {
                health: if st == "Running" {
                    health.of(&p.name)
                } else {
                    "-".into()
                },
                log: procs::log_file(&d, &p.name).display().to_string(),
                name: p.name,
                pid,
                state: st,
                ports: p
                    .ports
                    .iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        })
        .collect();
    let down = rows.iter().filter(|r| r.state != "Running").count();
    render::list(&rows, f)?;
    if down > 0 {
        anyhow::bail!(
            "cluster {name:?}: {down} of {} processes are not running (`joulectl cluster up` \
             starts them again)",
            rows.len()
        );
    }
    Ok(())
}
