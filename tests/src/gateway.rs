//! A `joule-gateway` process on free 127.0.0.1 ports in front of a test [`Cluster`], its
//! clients, and the deployment helpers the gateway tests share.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use joule_proto::v1;
use joule_proto::v1::inference_client::InferenceClient;
use tonic::transport::Channel;

use crate::cluster::{Cluster, JOIN};
use crate::workers::{DEFAULT_MODEL_SHA256, default_model};

pub struct GatewayProc {
    pub name: String,
    pub http: String,
    pub grpc: String,
    pub metrics: String,
    pub log: PathBuf,
    pub args: Vec<String>,
    pub child: Option<Child>,
}

impl GatewayProc {
    /// Starts a gateway watching `cluster`'s replicas, with `extra` flags.
    pub fn start(name: &str, cluster: &Cluster, extra: &[&str]) -> Self {
        let mut args = vec![
            "--scheduler".to_string(),
            cluster.live_addrs(),
            "--join-token".to_string(),
            JOIN.to_string(),
            "--no-auth".to_string(),
            "--name".to_string(),
            name.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut g = Self {
            name: name.to_string(),
            http: format!("127.0.0.1:{}", crate::free_port()),
            grpc: format!("127.0.0.1:{}", crate::free_port()),
            metrics: format!("127.0.0.1:{}", crate::free_port()),
            log: cluster.tmp.path().join(format!("{name}.log")),
            args,
            child: None,
        };
        g.restart();
        g
    }

    /// Starts a gateway that checks API keys (no `--no-auth`): every request needs a tenant's
    /// key, `Authorization: Bearer KEY` over HTTP and gRPC alike. `extra` flags as
    /// [`GatewayProc::start`].
    pub fn start_authed(name: &str, cluster: &Cluster, extra: &[&str]) -> Self {
        let mut args = vec![
            "--scheduler".to_string(),
            cluster.live_addrs(),
            "--join-token".to_string(),
            JOIN.to_string(),
            "--name".to_string(),
            name.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut g = Self {
            name: name.to_string(),
            http: format!("127.0.0.1:{}", crate::free_port()),
            grpc: format!("127.0.0.1:{}", crate::free_port()),
            metrics: format!("127.0.0.1:{}", crate::free_port()),
            log: cluster.tmp.path().join(format!("{name}.log")),
            args,
            child: None,
        };
        g.restart();
        g
    }

    /// Starts the process again with the same flags and ports (after a kill).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        let log = crate::append_log(&self.log);
        let child = Command::new(crate::bin("joule-gateway"))
            .args(["--http-listen", &self.http, "--grpc-listen", &self.grpc])
            .args(["--metrics-listen", &self.metrics])
            .args(&self.args)
            .env("RUST_LOG", "info,joule_gateway=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start joule-gateway");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        crate::kill9(&mut self.child);
    }

    /// A client of its public gRPC API.
    pub fn client(&self) -> InferenceClient<Channel> {
        let ch = joule_client::Connect::streaming()
            .lazy(&self.grpc)
            .expect("gateway address");
        InferenceClient::new(ch)
    }

    /// Ready replicas of `model` as the gateway sees them (0 when it does not answer).
    pub async fn ready(&self, model: &str) -> u32 {
        let mut c = self.client();
        match tokio::time::timeout(
            Duration::from_secs(2),
            c.list_models(v1::ListServedModelsRequest {}),
        )
        .await
        {
            Ok(Ok(r)) => r
                .into_inner()
                .models
                .iter()
                .find(|m| m.name == model)
                .map_or(0, |m| m.ready_replicas),
            _ => 0,
        }
    }

    /// Waits until the gateway routes to `n` ready replicas of `model`.
    pub async fn wait_ready(&self, model: &str, n: u32, within: Duration) {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.ready(model).await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "gateway {} does not see {n} ready replicas of {model:?} after {within:?}; log:\n{}",
            self.name,
            self.log_tail()
        );
    }

    /// Its `/metrics` text (empty when it does not answer).
    pub fn scrape(&self) -> String {
        crate::http::get(&self.metrics, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default()
    }

    /// The end of its log.
    pub fn log_tail(&self) -> String {
        crate::log_tail(&self.log)
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The default model as a cluster model named `name`.
pub fn default_model_spec(name: &str) -> v1::ModelSpec {
    let path = default_model();
    v1::ModelSpec {
        name: name.into(),
        source: format!("file://{}", path.display()),
        sha256: DEFAULT_MODEL_SHA256.into(),
        size_bytes: std::fs::metadata(&path).expect("the default model").len(),
        format: String::new(),
    }
}

/// A deployment of `model` with a fixed number of replicas.
pub fn deployment_spec(name: &str, model: &str, replicas: u32) -> v1::DeploymentSpec {
    v1::DeploymentSpec {
        name: name.into(),
        model: model.into(),
        replicas,
        ..Default::default()
    }
}

impl Cluster {
    /// Applies a model and a deployment of it.
    pub async fn apply(&self, model: v1::ModelSpec, d: v1::DeploymentSpec) {
        let m = model.clone();
        self.admin(Duration::from_secs(10), |mut a| {
            let m = m.clone();
            async move { a.apply_model(m).await }
        })
        .await
        .expect("apply model");
        self.admin(Duration::from_secs(10), |mut a| {
            let d = d.clone();
            async move { a.apply_deployment(d).await }
        })
        .await
        .expect("apply deployment");
    }

    /// Waits until `n` workers are Ready.
    pub async fn wait_nodes(&self, n: usize, within: Duration) {
        let end = Instant::now() + within;
        loop {
            let nodes = self
                .admin(Duration::from_secs(5), |mut a| async move {
                    a.list_nodes(v1::ListNodesRequest {}).await
                })
                .await
                .map(|r| r.nodes)
                .unwrap_or_default();
            if nodes.iter().filter(|x| x.status == "Ready").count() >= n {
                return;
            }
            assert!(Instant::now() < end, "workers not Ready: {nodes:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A whole stream: its text, token ids and finish (or the error that ended it).
#[derive(Debug, Default, Clone)]
pub struct Collected {
    pub text: String,
    pub ids: Vec<u32>,
    pub finish: Option<v1::Finish>,
    pub error: Option<tonic::Status>,
}

/// Reads a stream to its end.
pub async fn collect(mut s: tonic::Streaming<v1::TokenEvent>) -> Collected {
    let mut c = Collected::default();
    loop {
        match s.message().await {
            Ok(Some(ev)) => {
                c.text.push_str(&ev.text);
                c.ids.extend(ev.token_ids);
                if ev.finish.is_some() {
                    c.finish = ev.finish;
                }
            }
            Ok(None) => return c,
            Err(e) => {
                c.error = Some(e);
                return c;
            }
        }
    }
}
