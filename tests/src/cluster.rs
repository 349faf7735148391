//! A cluster of real `joule-scheduler` processes on 127.0.0.1, and the admin client that talks
//! to it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use joule_proto::v1;
use joule_proto::v1::admin_client::AdminClient;
use tonic::Request;
use tonic::transport::Channel;

pub use crate::free_port;

pub const TOKEN: &str = "test-admin-token";
pub const JOIN: &str = "test-join-token";
pub const PEER: &str = "test-peer-token";

pub struct Replica {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub replicas: Vec<Replica>,
    pub peers: String,
    pub tmp: tempfile::TempDir,
    /// Extra environment of every replica (flags by their `JOULE_*` variables).
    pub env: Vec<(String, String)>,
}

impl Cluster {
    pub fn new(n: u64) -> Self {
        Self::with_env(n, &[])
    }

    /// `n` replicas, each with the extra environment `env` (e.g. `JOULE_RESCHEDULE_AFTER_MS`).
    pub fn with_env(n: u64, env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let replicas: Vec<Replica> = (1..=n)
            .map(|id| Replica {
                id,
                addr: format!("127.0.0.1:{}", free_port()),
                dir: tmp.path().join(format!("r{id}")),
                child: None,
            })
            .collect();
        let peers = replicas
            .iter()
            .map(|r| format!("{}={}", r.id, r.addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Self {
            replicas,
            peers,
            tmp,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for id in 1..=n {
            c.start(id);
        }
        c
    }

    pub fn start(&mut self, id: u64) {
        self.spawn(id, false);
    }

    /// Starts a new replica with `--join` (it waits to be added).
    pub fn start_joiner(&mut self) -> u64 {
        let id = self.replicas.len() as u64 + 1;
        self.replicas.push(Replica {
            id,
            addr: format!("127.0.0.1:{}", free_port()),
            dir: self.tmp.path().join(format!("r{id}")),
            child: None,
        });
        self.spawn(id, true);
        id
    }

    pub fn spawn(&mut self, id: u64, join: bool) {
        let log = self.tmp.path().join(format!("r{id}.log"));
        let r = &mut self.replicas[id as usize - 1];
        let mut cmd = Command::new(crate::bin("joule-scheduler"));
        if join {
            cmd.arg("--join");
        }
        let child = cmd
            .args([
                "--id",
                &id.to_string(),
                "--peers",
                &self.peers,
                "--listen",
                &r.addr,
            ])
            .arg("--data-dir")
            .arg(&r.dir)
            .env("JOULE_ADMIN_TOKEN", TOKEN)
            .env("JOULE_PEER_TOKEN", PEER)
            .env("JOULE_JOIN_TOKEN", JOIN)
            .env("JOULE_HEARTBEAT_MS", "200")
            .env("JOULE_UNREACHABLE_AFTER_MS", "1000")
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        r.child = Some(child);
    }

    pub fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.replicas[id as usize - 1].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn addr(&self, id: u64) -> &str {
        &self.replicas[id as usize - 1].addr
    }

    pub async fn status(&self, id: u64) -> Option<v1::ClusterStatusResponse> {
        let mut c = client(self.addr(id)).await?;
        let r = tokio::time::timeout(
            Duration::from_millis(500),
            c.cluster_status(authed(v1::ClusterStatusRequest {})),
        )
        .await
        .ok()?;
        r.ok().map(|r| r.into_inner())
    }

    /// The leader all live replicas agree on, other than `not`.
    pub async fn leader(&self, within: Duration, not: u64) -> u64 {
        let end = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for r in self.replicas.iter().filter(|r| r.child.is_some()) {
                seen.push(self.status(r.id).await.map(|s| s.leader));
            }
            if let Some(Some(l)) = seen.first()
                && *l != 0
                && *l != not
                && seen.iter().all(|s| *s == Some(*l))
            {
                return *l;
            }
            assert!(Instant::now() < end, "no agreed leader: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

pub fn authed<T>(m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r.set_timeout(Duration::from_secs(5));
    r
}

/// An admin client of `addr` through `joule-client`, so it speaks TLS where the test process
/// installed a client setting ([`joule_client::tls::Tls::install_client`]).
pub async fn client(addr: &str) -> Option<AdminClient<Channel>> {
    let connect = joule_client::Connect {
        connect_timeout: Duration::from_millis(300),
        timeout: None,
    };
    let ch = connect.connect(addr).await.ok()?;
    Some(AdminClient::new(ch))
}

pub fn scheduler(args: &[&str]) -> (i32, String) {
    let out = Command::new(crate::bin("joule-scheduler"))
        .args(args)
        .env("JOULE_ADMIN_TOKEN", TOKEN)
        .env("JOULE_PEER_TOKEN", PEER)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Cluster {
    /// The addresses of the replicas running now, comma-separated (a worker's --scheduler).
    pub fn live_addrs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| r.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Calls `f` on an admin client of each running replica in turn until one answers
    /// anything but UNAVAILABLE (a replica without a leader, or one just killed), retrying
    /// for up to `within`.
    pub async fn admin<T, F, Fut>(&self, within: Duration, mut f: F) -> Result<T, tonic::Status>
    where
        F: FnMut(joule_client::Admin) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let end = Instant::now() + within;
        loop {
            let mut last = None;
            for r in self.replicas.iter().filter(|r| r.child.is_some()) {
                let c = joule_client::Connect::default()
                    .admin(&r.addr, TOKEN)
                    .expect("replica address");
                match f(c).await {
                    Ok(v) => return Ok(v.into_inner()),
                    Err(e) if e.code() == tonic::Code::Unavailable => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            if Instant::now() >= end {
                return Err(last.unwrap_or_else(|| tonic::Status::unavailable("no replica")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The placements of `deployment` (empty when no replica answers).
    pub async fn placements(&self, deployment: &str) -> Vec<v1::PlacementInfo> {
        let d = deployment.to_string();
        self.admin(Duration::from_secs(5), |mut a| {
            let d = d.clone();
            async move {
                a.list_placements(v1::ListPlacementsRequest {
                    deployment: d,
                    node: String::new(),
                })
                .await
            }
        })
        .await
        .map(|r| r.placements)
        .unwrap_or_default()
    }

    /// Waits until `cond` holds of the deployment's placements; returns them, or panics with
    /// what they were.
    pub async fn placements_until(
        &self,
        deployment: &str,
        within: Duration,
        what: &str,
        cond: impl Fn(&[v1::PlacementInfo]) -> bool,
    ) -> Vec<v1::PlacementInfo> {
        let end = Instant::now() + within;
        loop {
            let ps = self.placements(deployment).await;
            if cond(&ps) {
                return ps;
            }
            assert!(
                Instant::now() < end,
                "{deployment}: not {what} after {within:?}; placements: {}",
                describe(&ps)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Placements on one line each, for a failing test's message.
pub fn describe(ps: &[v1::PlacementInfo]) -> String {
    ps.iter()
        .map(|p| {
            format!(
                "\n  {} on {}: {}{} ({}) [{}]",
                p.deployment,
                p.node,
                p.state,
                if p.retiring { ",retiring" } else { "" },
                p.message,
                p.reason
            )
        })
        .collect()
}

/// The nodes whose placement is Ready (and not retiring), sorted.
pub fn ready_nodes(ps: &[v1::PlacementInfo]) -> Vec<String> {
    let mut v: Vec<String> = ps
        .iter()
        .filter(|p| p.state == "Ready" && !p.retiring)
        .map(|p| p.node.clone())
        .collect();
    v.sort();
    v
}
