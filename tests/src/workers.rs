//! Real `joule-worker` processes on 127.0.0.1: started with the flags a test gives, found
//! serving through their gRPC health, killed with SIGKILL or stopped with SIGTERM.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use joule_proto::internal::v1 as pb;

/// The default model's file, as `deploy/fetch-default-model.sh` caches it.
pub fn default_model() -> PathBuf {
    let home = std::env::var_os("JOULE_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/joule"),
        PathBuf::from,
    );
    let p = home.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run deploy/fetch-default-model.sh",
        p.display()
    );
    p
}

/// The default model's sha256.
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// One worker process.
pub struct WorkerProc {
    pub name: String,
    /// Its gRPC address, HOST:PORT.
    pub addr: String,
    pub metrics: String,
    pub log: PathBuf,
    pub args: Vec<String>,
    pub child: Option<Child>,
}

impl WorkerProc {
    /// Starts `joule-worker --node-name NAME` with `args` on free ports, logging to `dir`.
    pub fn start(name: &str, dir: &std::path::Path, args: &[&str]) -> Self {
        let mut w = Self {
            name: name.to_string(),
            addr: format!("127.0.0.1:{}", crate::free_port()),
            metrics: format!("127.0.0.1:{}", crate::free_port()),
            log: dir.join(format!("{name}.log")),
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        w.restart();
        w
    }

    /// Starts a worker that joins `cluster`: no calibration, estimated power, its own cache
    /// under the cluster's temporary directory, a small KV budget, and `extra` flags.
    pub fn join(name: &str, cluster: &crate::cluster::Cluster, extra: &[&str]) -> Self {
        let cache = cluster.tmp.path().join(format!("cache-{name}"));
        let cache = cache.to_str().expect("a UTF-8 temporary path");
        let addrs = cluster.live_addrs();
        let mut args = vec![
            "--calibrate",
            "false",
            "--power-sensor",
            "estimate",
            "--scheduler",
            &addrs,
            "--join-token",
            crate::cluster::JOIN,
            "--cache-dir",
            cache,
            "--kv-budget",
            "64MiB",
        ];
        args.extend_from_slice(extra);
        Self::start(name, cluster.tmp.path(), &args)
    }

    /// The model cache directory of a worker started with [`WorkerProc::join`].
    pub fn joined_cache(name: &str, cluster: &crate::cluster::Cluster) -> PathBuf {
        cluster.tmp.path().join(format!("cache-{name}"))
    }

    /// Starts the process again with the same flags and ports (after a kill).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        let log = crate::append_log(&self.log);
        let child = Command::new(crate::bin("joule-worker"))
            .args(["--node-name", &self.name, "--listen", &self.addr])
            .args(["--metrics-listen", &self.metrics])
            .args(&self.args)
            .env("JOULE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start joule-worker");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        crate::kill9(&mut self.child);
    }

    /// The token its calls need: the join token of a worker in a cluster, else none.
    pub fn token(&self) -> String {
        match self.args.iter().position(|a| a == "--join-token") {
            Some(i) => self.args.get(i + 1).cloned().unwrap_or_default(),
            None => String::new(),
        }
    }

    /// A client of this worker.
    pub fn client(&self) -> joule_client::Worker {
        joule_client::Connect::streaming()
            .worker(&self.addr, &self.token())
            .expect("worker address")
    }

    /// The models it serves now (empty when it does not answer).
    pub async fn models(&self) -> Vec<pb::ModelInfo> {
        let mut c = self.client();
        match tokio::time::timeout(
            Duration::from_secs(2),
            c.list_models(pb::ListModelsRequest {}),
        )
        .await
        {
            Ok(Ok(r)) => r.into_inner().models,
            _ => Vec::new(),
        }
    }

    /// Requests running or queued on it now, over all its models (0 when it does not answer).
    pub async fn busy(&self) -> u32 {
        let mut c = self.client();
        match tokio::time::timeout(Duration::from_secs(2), c.stats(pb::StatsRequest::default()))
            .await
        {
            Ok(Ok(s)) => s
                .into_inner()
                .models
                .iter()
                .map(|m| m.running + m.waiting)
                .sum(),
            _ => 0,
        }
    }

    /// Waits until it serves a model named `model`.
    pub async fn wait_serving(&self, model: &str, within: Duration) {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.models().await.iter().any(|m| m.name == model) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "worker {} does not serve {model:?} after {within:?}; log:\n{}",
            self.name,
            self.log_tail()
        );
    }

    /// The end of its log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        crate::log_tail(&self.log)
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}
