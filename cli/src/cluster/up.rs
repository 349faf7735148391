//! `cluster up`: the record (made once), the processes that are not running (stale pid files
//! cleaned up and named), the model applied as a deployment, a tenant and its key, a wait with
//! progress until the gateway serves it, and the context. Also the health probes `status`
//! shows.
//!
//! It never starts a second copy of a running process, and it holds a lock on the cluster's
//! directory while it works, so two `up`s at once cannot both start one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use joule_proto::v1;
use serde::Serialize;

use super::procs::{self, Alive};
use super::state::{Picker, State, free, worker_index};
use super::{Lock, Proc, dir, fetch, processes};
use crate::connect::Cluster;
use crate::render::{self, Format};

/// The tenant `up` makes for the local cluster.
const TENANT: &str = "local";

/// What `up` prints (`-o json|yaml` too).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    name: String,
    already_up: bool,
    restarted: Vec<String>,
    base_url: String,
    api_key: String,
    model: String,
    deployment: String,
    servers: String,
    dir: String,
    context: String,
}

/// A DNS label from a file name: `Llama-3.2-1B.Q4_K_M.gguf` → `llama-3-2-1b-q4-k-m`.
pub fn deployment_name(model: &Path) -> String {
    let stem = model
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model");
    let mut out = String::new();
    for c in stem.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_matches('-').chars().take(63).collect();
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() { "model".into() } else { out }
}

/// The model file `--model` names, and its sha256.
fn resolve_model(model: &str) -> anyhow::Result<(PathBuf, String, String)> {
    if model == "default" {
        let p = fetch::default_model()?;
        return Ok((p, fetch::SHA256.into(), "smollm2".into()));
    }
    let p = std::fs::canonicalize(model)
        .with_context(|| format!("--model {model}: no such file (or pass --model default)"))?;
    if !p.is_file() {
        anyhow::bail!("--model {model}: not a file");
    }
    let len = std::fs::metadata(&p)?.len();
    let bar = crate::progress::bytes(len, format!("hashing {}", p.display()));
    let sha = fetch::sha256_file(&p, &bar)?;
    bar.finish_and_clear();
    let name = deployment_name(&p);
    Ok((p, sha, name))
}

pub async fn up(
    name: &str,
    workers: Option<usize>,
    threads: Option<u32>,
    model: Option<&str>,
    timeout: Duration,
    f: Format,
) -> anyhow::Result<()> {
    for v in ["JOULE_SERVER", "JOULE_TOKEN", "JOULE_CONTEXT"] {
        if std::env::var_os(v).is_some_and(|x| !x.is_empty()) {
            eprintln!(
                "note: {v} is set: it overrides the context this writes (unset it to use the \
                 local cluster by default)"
            );
        }
    }
    if workers == Some(0) || workers.is_some_and(|w| w > 64) {
        anyhow::bail!("--workers: 1 to 64");
    }
    let d = dir(name)?;
    {
        use std::os::unix::fs::DirBuilderExt as _;
        // Only its owner reads the data (tenants, key hashes) and the logs.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .with_context(|| format!("cannot create {}", d.display()))?;
    }
    let _lock = Lock::take(&d, "cluster up")?;
    // A broken config file is found before anything starts.
    crate::context::Config::load()?;
    let bins = [
        ("joule-scheduler", procs::binary("joule-scheduler")?),
        ("joule-worker", procs::binary("joule-worker")?),
        ("joule-gateway", procs::binary("joule-gateway")?),
    ];
    let bin = |b: &str| {
        bins.iter()
            .find(|(n, _)| *n == b)
            .map(|(_, p)| p.clone())
            .with_context(|| format!("no binary {b}"))
    };

    let mut s = match State::load(&d)? {
        Some(mut s) => {
            if let Some(w) = workers.filter(|w| *w != s.workers.len()) {
                anyhow::bail!(
                    "cluster {name:?} has {} workers, not {w}: `joulectl cluster down --purge \
                     --name {name}` first, or pass another --name",
                    s.workers.len()
                );
            }
            if let Some(t) = threads.filter(|t| *t != s.threads) {
                anyhow::bail!(
                    "cluster {name:?} runs its workers with --threads {}, not {t}: `joulectl \
                     cluster down --purge --name {name}` first",
                    s.threads
                );
            }
            let default = s.model_sha256 == fetch::SHA256;
            let same = match model {
                None => true,
                Some("default") => default,
                Some(m) => {
                    std::fs::canonicalize(m).is_ok_and(|p| p.display().to_string() == s.model)
                }
            };
            if !same {
                anyhow::bail!(
                    "cluster {name:?} serves {}: `joulectl cluster down --purge --name {name}` \
                     first to serve another model",
                    s.model
                );
            }
            if !Path::new(&s.model).is_file() {
                if !default {
                    anyhow::bail!(
                        "{}, the model cluster {name:?} serves, is gone: put it back, or \
                         `joulectl cluster down --purge --name {name}`",
                        s.model
                    );
                }
                // The cache was cleaned: fetch it again.
                s.model = fetch::default_model()?.display().to_string();
                s.save(&d)?;
            }
            s
        }
        None => {
            let (path, sha, deployment) = resolve_model(model.unwrap_or("default"))?;
            let n = workers.unwrap_or(1);
            // The cores shared out: N workers that each take every core would fight.
            let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
            let s = State::new(
                name,
                n,
                threads.unwrap_or(if n > 1 { (cores / n).max(1) as u32 } else { 0 }),
                &path,
                &sha,
                &deployment,
            )?;
            s.save(&d)?;
            s
        }
    };

    let all = processes(&s);
    let mut restarted = Vec::new();
    let mut to_start = Vec::new();
    for p in &all {
        match procs::alive(&d, &p.name, p.binary) {
            Alive::Running(_) => {}
            Alive::Stale(pid) => {
                let _ = std::fs::remove_file(procs::pid_file(&d, &p.name));
                eprintln!(
                    "{} (pid {pid}) had died: removed its stale pid file; starting it again \
                     (its log: {})",
                    p.name,
                    procs::log_file(&d, &p.name).display()
                );
                restarted.push(p.name.clone());
                to_start.push(p.clone());
            }
            Alive::Stopped => to_start.push(p.clone()),
        }
    }
    let already_up = to_start.is_empty();

    // Ports of what is to start: a scheduler's are fixed (its peers know them); a worker's
    // or the gateway's move when another process took them.
    let mut picker = Picker::default();
    // A moved port never lands on another of the cluster's own.
    picker.reserve(
        all.iter()
            .flat_map(|p| p.ports.iter().map(|(_, port)| *port)),
    );
    let mut moved = false;
    for p in &to_start {
        for (kind, port) in &p.ports {
            if free(*port) {
                continue;
            }
            if p.binary == "joule-scheduler" {
                anyhow::bail!(
                    "port {port} of {} is taken by another process: stop that process, or \
                     `joulectl cluster down --purge --name {name}` and start again",
                    p.name
                );
            }
            let new = picker.pick(0)?;
            eprintln!("{}'s {kind} port {port} is taken: using {new}", p.name);
            set_port(&mut s, &p.name, kind, new);
            moved = true;
        }
    }
    if moved {
        s.save(&d)?;
    }
    let to_start: Vec<Proc> = {
        let names: Vec<String> = to_start.into_iter().map(|p| p.name).collect();
        processes(&s)
            .into_iter()
            .filter(|p| names.contains(&p.name))
            .collect()
    };

    let servers = s.servers();
    let c = Cluster::with(&servers, &s.admin_token)?;
    // The schedulers first: workers and the gateway join them.
    for p in to_start.iter().filter(|p| p.binary == "joule-scheduler") {
        let i = p.name.trim_start_matches("scheduler-");
        let args = vec![
            "--id".into(),
            i.into(),
            "--peers".into(),
            s.peers(),
            "--listen".into(),
            format!("127.0.0.1:{}", p.ports[0].1),
            "--data-dir".into(),
            d.join(&p.name).display().to_string(),
        ];
        let env = [
            ("JOULE_ADMIN_TOKEN", s.admin_token.as_str()),
            ("JOULE_JOIN_TOKEN", s.join_token.as_str()),
            ("JOULE_PEER_TOKEN", s.peer_token.as_str()),
        ];
        procs::spawn(&d, &p.name, &bin(p.binary)?, &args, &env)?;
    }
    let hint = || {
        format!(
            "the processes started keep running: `joulectl cluster status --name {name}` \
             shows them, `joulectl cluster down --name {name}` stops them"
        )
    };
    wait_leader(&c, &d, &all, timeout)
        .await
        .with_context(hint)?;
    for p in to_start.iter().filter(|p| p.binary != "joule-scheduler") {
        let mut args: Vec<String> = Vec::new();
        if p.binary == "joule-worker" {
            args.extend([
                "--node-name".into(),
                p.name.clone(),
                "--listen".into(),
                format!("127.0.0.1:{}", p.ports[0].1),
                "--metrics-listen".into(),
                format!("127.0.0.1:{}", p.ports[1].1),
                "--scheduler".into(),
                servers.clone(),
                "--cache-dir".into(),
                d.join(&p.name).display().to_string(),
            ]);
            if s.threads > 0 {
                args.extend(["--threads".into(), s.threads.to_string()]);
            }
        } else {
            args.extend([
                "--scheduler".into(),
                servers.clone(),
                "--http-listen".into(),
                format!("127.0.0.1:{}", s.gateway.http),
                "--grpc-listen".into(),
                format!("127.0.0.1:{}", s.gateway.grpc),
                "--metrics-listen".into(),
                format!("127.0.0.1:{}", s.gateway.metrics),
            ]);
        }
        let env = [("JOULE_JOIN_TOKEN", s.join_token.as_str())];
        procs::spawn(&d, &p.name, &bin(p.binary)?, &args, &env)?;
    }
    if !to_start.is_empty() {
        eprintln!(
            "started {} of {} processes of cluster {name:?} (logs in {})",
            to_start.len(),
            all.len(),
            d.display()
        );
    }
    wait_nodes(&c, &d, &s, &all, timeout)
        .await
        .with_context(hint)?;
    apply(&c, &s).await.with_context(hint)?;
    ensure_key(&c, &mut s, &d).await.with_context(hint)?;
    wait_serving(&c, &d, &s, &all, timeout)
        .await
        .with_context(hint)?;

    let config = crate::context::path()?;
    let lock = crate::context::lock(&config)?;
    let mut cfg = crate::context::Config::load_from(&config)?;
    cfg.upsert(crate::context::Context {
        name: name.to_string(),
        servers: s
            .schedulers
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect(),
        token: s.admin_token.clone(),
        gateway: s.base_url(),
        api_key: s.api_key.clone(),
        ..Default::default()
    });
    cfg.current_context = name.to_string();
    cfg.save_to(&config)?;
    drop(lock);

    let sum = Summary {
        name: name.to_string(),
        already_up,
        restarted,
        base_url: s.base_url(),
        api_key: s.api_key.clone(),
        model: s.model.clone(),
        deployment: s.deployment.clone(),
        servers,
        dir: d.display().to_string(),
        context: name.to_string(),
    };
    if !f.is_table() {
        return render::emit(&sum, f);
    }
    println!(
        "cluster {name:?} is {}: 3 schedulers, {} worker{}, 1 gateway",
        if already_up { "already up" } else { "up" },
        s.workers.len(),
        if s.workers.len() == 1 { "" } else { "s" }
    );
    println!("  OpenAI base URL: {}", sum.base_url);
    println!("  API key:         {}", sum.api_key);
    println!(
        "  model:           {} (deployment {})",
        sum.model, sum.deployment
    );
    println!("  context:         {name} (current; `joulectl get nodes` uses it)");
    println!("  data and logs:   {}", sum.dir);
    Ok(())
}

fn set_port(s: &mut State, proc_name: &str, kind: &str, port: u16) {
    if proc_name.starts_with("worker-") {
        if let Some(w) = worker_index(proc_name).and_then(|i| s.workers.get_mut(i)) {
            match kind {
                "grpc" => w.grpc = port,
                _ => w.metrics = port,
            }
        }
    } else {
        match kind {
            "http" => s.gateway.http = port,
            "grpc" => s.gateway.grpc = port,
            _ => s.gateway.metrics = port,
        }
    }
}

/// An error for a process that exited while `up` waited, with its log's last lines.
fn died(d: &Path, all: &[Proc]) -> Option<anyhow::Error> {
    all.iter()
        .find(|p| !matches!(procs::alive(d, &p.name, p.binary), Alive::Running(_)))
        .map(|p| {
            anyhow::anyhow!(
                "{} exited (log {}):\n{}",
                p.name,
                procs::log_file(d, &p.name).display(),
                procs::log_tail(d, &p.name, 15)
            )
        })
}

/// Polls `check` every 300 ms until it is `Some`, a process dies, or `timeout` passes.
async fn poll<T, F, Fut>(
    what: &str,
    d: &Path,
    all: &[Proc],
    timeout: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if let Some(e) = died(d, all) {
            return Err(e.context(format!("while waiting for {what}")));
        }
        if Instant::now() > until {
            anyhow::bail!(
                "timed out after {} s waiting for {what} (logs in {})",
                timeout.as_secs(),
                d.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn wait_leader(c: &Cluster, d: &Path, all: &[Proc], timeout: Duration) -> anyhow::Result<()> {
    let bar = crate::progress::spinner();
    bar.set_message("electing a leader among the schedulers");
    let schedulers: Vec<Proc> = all
        .iter()
        .filter(|p| p.binary == "joule-scheduler")
        .cloned()
        .collect();
    poll(
        "a scheduler leader",
        d,
        &schedulers,
        timeout,
        move || async move {
            c.call(|mut a| async move { a.cluster_status(v1::ClusterStatusRequest {}).await })
                .await
                .ok()
                .filter(|s| s.leader != 0)
        },
    )
    .await?;
    bar.finish_and_clear();
    Ok(())
}

async fn wait_nodes(
    c: &Cluster,
    d: &Path,
    s: &State,
    all: &[Proc],
    timeout: Duration,
) -> anyhow::Result<()> {
    let bar = crate::progress::steps(s.workers.len() as u64, "workers joining".into());
    let want: Vec<String> = (1..=s.workers.len())
        .map(|i| format!("worker-{i}"))
        .collect();
    let (want, bar_ref) = (&want, &bar);
    poll("the workers to join", d, all, timeout, move || async move {
        let nodes = c
            .call(|mut a| async move { a.list_nodes(v1::ListNodesRequest {}).await })
            .await
            .ok()?
            .nodes;
        let ready = want
            .iter()
            .filter(|w| nodes.iter().any(|n| &n.name == *w && n.status == "Ready"))
            .count();
        bar_ref.set_position(ready as u64);
        (ready == want.len()).then_some(())
    })
    .await?;
    bar.finish_and_clear();
    Ok(())
}

/// The model, its deployment (a replica on every worker) and the tenant, each only when the
/// cluster lacks it: a user's changes to them stand.
async fn apply(c: &Cluster, s: &State) -> anyhow::Result<()> {
    use crate::commands::apply::{Object, exists, send};
    let objects = [
        Object::Model(v1::ModelSpec {
            name: s.deployment.clone(),
            source: format!("file://{}", s.model),
            sha256: s.model_sha256.clone(),
            size_bytes: s.model_size,
            format: "gguf".into(),
        }),
        Object::Deployment(v1::DeploymentSpec {
            name: s.deployment.clone(),
            model: s.deployment.clone(),
            replicas: s.workers.len() as u32,
            ..Default::default()
        }),
        Object::Tenant(v1::TenantSpec {
            name: TENANT.into(),
            ..Default::default()
        }),
    ];
    for o in &objects {
        if !exists(c, o).await? {
            send(c, o).await?;
        }
    }
    Ok(())
}

/// The key `up` made before, if the cluster still has it; else a new one, kept in the record.
async fn ensure_key(c: &Cluster, s: &mut State, d: &Path) -> anyhow::Result<()> {
    if !s.api_key.is_empty() {
        let id = crate::commands::create::key_id(&s.api_key).to_string();
        let keys = c
            .call(|mut a| async move {
                a.list_api_keys(v1::ListApiKeysRequest {
                    tenant: TENANT.into(),
                })
                .await
            })
            .await?
            .keys;
        if keys.iter().any(|k| k.id == id) {
            return Ok(());
        }
    }
    let (key, _) = crate::commands::create::make_key(c, TENANT, "cluster up", 0).await?;
    s.api_key = key;
    s.save(d)
}

async fn wait_serving(
    c: &Cluster,
    d: &Path,
    s: &State,
    all: &[Proc],
    timeout: Duration,
) -> anyhow::Result<()> {
    const STAGES: [&str; 5] = ["Pending", "Fetching", "Loading", "Calibrating", "Ready"];
    let bar = crate::progress::steps(
        STAGES.len() as u64,
        format!("{} starting (the first load calibrates)", s.deployment),
    );
    let dep = s.deployment.clone();
    let models_url = format!("{}/models", s.base_url());
    let key = s.api_key.clone();
    let last: std::cell::RefCell<BTreeMap<String, String>> = Default::default();
    let last = &last;
    let bar_c = bar.clone();
    poll("the deployment to serve", d, all, timeout, move || {
        let dep = dep.clone();
        let models_url = models_url.clone();
        let key = key.clone();
        let bar = bar_c.clone();
        async move {
            let req = v1::ListPlacementsRequest {
                deployment: dep.clone(),
                node: String::new(),
            };
            let pl = c
                .call(|mut a| {
                    let req = req.clone();
                    async move { a.list_placements(req).await }
                })
                .await
                .ok()?
                .placements;
            if let Some(p) = pl
                .iter()
                .min_by_key(|p| STAGES.iter().position(|s| *s == p.state).unwrap_or(0))
            {
                let pos = STAGES.iter().position(|s| *s == p.state).unwrap_or(0);
                bar.set_position(pos as u64);
                let note = if p.message.is_empty() {
                    p.state.clone()
                } else {
                    format!("{}: {}", p.state, p.message)
                };
                bar.set_message(format!("{} on {}: {note}", dep, p.node));
                let mut last = last.borrow_mut();
                if p.state == "Failed" && last.get(&p.node) != Some(&note) {
                    bar.suspend(|| eprintln!("{dep} on {} failed: {}", p.node, p.message));
                }
                last.insert(p.node.clone(), note);
            }
            let ready = !pl.is_empty() && pl.iter().all(|p| p.state == "Ready");
            let nodes: Vec<String> = pl.iter().map(|p| p.node.clone()).collect();
            (ready
                && gateway_serves(&models_url, &key, &dep)
                && workers_serve(s, &dep, &nodes).await)
                .then_some(())
        }
    })
    .await?;
    bar.finish_and_clear();
    Ok(())
}

/// Whether the worker of each placement has `dep` loaded and serving, as it says itself. A
/// cluster started again keeps the placements of its last run, which say Ready until the
/// worker reports anew, while the worker is still loading the model.
async fn workers_serve(s: &State, dep: &str, nodes: &[String]) -> bool {
    for node in nodes {
        let Some(w) = worker_index(node).and_then(|i| s.workers.get(i)) else {
            // Not one of this cluster's workers (joined from elsewhere): the cluster's word.
            continue;
        };
        let addr = format!("127.0.0.1:{}", w.grpc);
        let asked = async {
            let mut c = crate::connect::worker(&addr, &s.join_token).await.ok()?;
            let req = joule_proto::internal::v1::HealthRequest {
                model: dep.to_string(),
            };
            c.health(req).await.ok().map(|h| h.get_ref().serving)
        };
        if tokio::time::timeout(Duration::from_secs(2), asked).await != Ok(Some(true)) {
            return false;
        }
    }
    true
}

/// Whether the gateway lists `dep` with a ready replica for this key.
fn gateway_serves(models_url: &str, key: &str, dep: &str) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let Ok(body) = agent
        .get(models_url)
        .header("authorization", &format!("Bearer {key}"))
        .call()
        .and_then(|r| r.into_body().read_to_string())
    else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
        return false;
    };
    v["data"].as_array().is_some_and(|d| {
        d.iter()
            .any(|m| m["id"] == dep && m["joule"]["ready_replicas"].as_u64().is_some_and(|n| n > 0))
    })
}

/// What `status` shows in HEALTH per process.
pub struct Health(BTreeMap<String, String>);

impl Health {
    pub async fn probe(s: &State) -> Self {
        let mut h = BTreeMap::new();
        let connect = joule_client::Connect::default();
        for (i, port) in s.schedulers.iter().enumerate() {
            let name = format!("scheduler-{}", i + 1);
            let addr = format!("http://127.0.0.1:{port}");
            let answer = match connect.admin(&addr, &s.admin_token) {
                Ok(mut a) => tokio::time::timeout(
                    Duration::from_secs(2),
                    a.cluster_status(v1::ClusterStatusRequest {}),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .map(tonic::Response::into_inner),
                Err(_) => None,
            };
            let word = match answer {
                Some(r) if r.leader == r.replica => "Leader".to_string(),
                Some(r) if r.leader != 0 => "Follower".to_string(),
                Some(_) => "NoLeader".to_string(),
                None => "NoAnswer".to_string(),
            };
            h.insert(name, word);
        }
        if let Ok(c) = Cluster::with(&s.servers(), &s.admin_token) {
            let nodes = tokio::time::timeout(
                Duration::from_secs(3),
                c.call(|mut a| async move { a.list_nodes(v1::ListNodesRequest {}).await }),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|r| r.nodes)
            .unwrap_or_default();
            for n in nodes {
                h.insert(n.name.clone(), n.status.clone());
            }
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .into();
        let g = match agent
            .get(&format!("http://127.0.0.1:{}/health", s.gateway.http))
            .call()
        {
            Ok(r) if r.status() == 200 => "Ok".to_string(),
            Ok(r) => format!("HTTP {}", r.status().as_u16()),
            Err(_) => "NoAnswer".to_string(),
        };
        h.insert("gateway".into(), g);
        Self(h)
    }

    pub fn of(&self, name: &str) -> String {
        self.0
            .get(name)
            .cloned()
            .unwrap_or_else(|| "Unknown".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_names_are_dns_labels() {
        let n = |s: &str| deployment_name(Path::new(s));
        assert_eq!(n("/m/Llama-3.2-1B.Q4_K_M.gguf"), "llama-3-2-1b-q4-k-m");
        assert_eq!(n("/m/__.gguf"), "model");
        assert_eq!(n(&format!("/m/{}.gguf", "a".repeat(80))).len(), 63);
    }
}
