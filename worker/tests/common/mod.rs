//! Runs a real `joule-worker` process on 127.0.0.1 with the default model and talks to it over
//! gRPC and HTTP, as a scheduler or an operator would.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use joule_proto::internal::v1 as pb;
use joule_proto::internal::v1::worker_client::WorkerClient;
use joule_proto::v1;
use tonic::transport::Channel;

/// The default model, fetched by `deploy/fetch-default-model.sh`.
pub fn default_model() -> PathBuf {
    let p = joule_engine::testkit::default_model_path();
    assert!(
        p.exists(),
        "{} is missing: run deploy/fetch-default-model.sh first",
        p.display()
    );
    p
}

/// The `joule-worker` binary: `JOULE_WORKER_BIN` (for test binaries carried to another
/// machine), else the one cargo built with the tests.
pub fn worker_bin() -> PathBuf {
    std::env::var_os("JOULE_WORKER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_joule-worker")))
}

/// A worker process; killed when dropped.
pub struct Proc {
    pub child: Child,
    pub grpc: String,
    pub metrics: String,
    pub log: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `joule-worker` with `args` (plus ports on 127.0.0.1:0, one thread, no calibration
/// unless `args` turn it on, and a private cache dir) and waits until it listens.
pub fn spawn(args: &[&str]) -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(worker_bin());
    let cache = dir.path().display().to_string();
    let defaults = [
        ("--listen", "127.0.0.1:0"),
        ("--metrics-listen", "127.0.0.1:0"),
        ("--threads", "1"),
        ("--kv-budget", "64MiB"),
        ("--power-sensor", "estimate"),
        ("--cache-dir", cache.as_str()),
        ("--calibrate", "false"),
    ];
    for (flag, value) in defaults {
        if !args.contains(&flag) {
            cmd.args([flag, value]);
        }
    }
    cmd.args(args)
        .env("JOULE_LOG", "info,joule_worker=debug")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start joule-worker");
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    for r in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = log.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                eprintln!("[worker] {line}");
                log.lock().unwrap().push(line);
            }
        }));
    }
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let found = log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("joule-worker listening"))
            .cloned();
        if let Some(l) = found {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap()
                    .to_string()
            };
            return Proc {
                grpc: format!("http://{}", field("grpc_addr=")),
                metrics: field("metrics_addr="),
                child,
                log,
                dir,
                readers,
            };
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "joule-worker exited early: {st}; log: {:?}",
                log.lock().unwrap()
            );
        }
        assert!(Instant::now() < until, "joule-worker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Proc {
    pub async fn client(&self) -> WorkerClient<Channel> {
        WorkerClient::connect(self.grpc.clone())
            .await
            .expect("connect")
    }

    /// Waits until the start-up models are loaded (grpc.health.v1 says the worker serves).
    pub async fn ready(&self) -> WorkerClient<Channel> {
        let ch = Channel::from_shared(self.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let r = h
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if let Ok(r) = r
                && r.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                return self.client().await;
            }
            assert!(Instant::now() < until, "worker never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the process to exit and for its last log lines.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let st = self.child.wait().unwrap();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        st
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// GET /metrics over plain HTTP/1.1.
    pub fn metrics_text(&self) -> String {
        let mut s = std::net::TcpStream::connect(&self.metrics).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

pub fn greedy(max_tokens: u32) -> Option<v1::SamplingParams> {
    Some(v1::SamplingParams {
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        ignore_eos: true,
        ..Default::default()
    })
}

pub fn text_request(model: &str, text: &str, max_tokens: u32) -> v1::GenerateRequest {
    v1::GenerateRequest {
        model: model.into(),
        prompt: Some(v1::generate_request::Prompt::Text(text.into())),
        sampling: greedy(max_tokens),
        ..Default::default()
    }
}

/// What one stream delivered.
#[derive(Debug, Default)]
pub struct Collected {
    pub text: String,
    pub events: usize,
    pub tokens: usize,
    pub finish: Option<v1::Finish>,
    pub error: Option<tonic::Status>,
}

pub async fn collect(mut s: tonic::Streaming<v1::TokenEvent>) -> Collected {
    let mut c = Collected::default();
    loop {
        match s.message().await {
            Ok(Some(ev)) => {
                c.events += 1;
                c.tokens += ev.token_ids.len();
                c.text.push_str(&ev.text);
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

pub async fn generate(
    c: &mut WorkerClient<Channel>,
    r: v1::GenerateRequest,
) -> Result<Collected, tonic::Status> {
    Ok(collect(c.generate(r).await?.into_inner()).await)
}

pub async fn stats(c: &mut WorkerClient<Channel>) -> pb::StatsResponse {
    c.stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner()
}
