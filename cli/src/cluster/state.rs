//! A local cluster's record, `cluster.json` in its directory (mode 600: it holds the tokens):
//! its tokens, each process's ports, the model it serves, and the tenant key `up` made. Ports
//! are chosen once (the defaults when free, else free ones the OS picks) and kept, because the
//! schedulers' Raft peers are named by them.
//!
//! It never chooses a port another process holds, and never writes a partial record.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The schedulers' default ports (7001-7003), the first worker's (50071 gRPC, 9471 metrics)
/// and the gateway's (8080 HTTP, 50051 gRPC, 9462 metrics): as `deploy/quickstart.sh` had them.
pub const SCHEDULER_PORT: u16 = 7001;
pub const WORKER_PORT: u16 = 50071;
pub const WORKER_METRICS_PORT: u16 = 9471;
pub const HTTP_PORT: u16 = 8080;
pub const GRPC_PORT: u16 = 50051;
pub const METRICS_PORT: u16 = 9462;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub admin_token: String,
    pub join_token: String,
    pub peer_token: String,
    pub schedulers: Vec<u16>,
    pub workers: Vec<WorkerPorts>,
    pub gateway: GatewayPorts,
    /// The worker's `--threads` (0: all cores).
    pub threads: u32,
    /// The model file and the deployment that serves it.
    pub model: String,
    pub model_sha256: String,
    pub model_size: u64,
    pub deployment: String,
    /// The tenant `up` made, and its key.
    pub tenant: String,
    #[serde(default)]
    pub api_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerPorts {
    pub grpc: u16,
    pub metrics: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayPorts {
    pub http: u16,
    pub grpc: u16,
    pub metrics: u16,
}

/// Ports handed out in this run, so two picks never collide.
#[derive(Default)]
pub struct Picker {
    taken: Vec<u16>,
}

impl Picker {
    /// Never hands out these.
    pub fn reserve(&mut self, ports: impl IntoIterator<Item = u16>) {
        self.taken.extend(ports);
    }

    /// `want` when it is free on 127.0.0.1, else a free port the OS picks.
    pub fn pick(&mut self, want: u16) -> anyhow::Result<u16> {
        if want != 0 && !self.taken.contains(&want) && free(want) {
            self.taken.push(want);
            return Ok(want);
        }
        for _ in 0..32 {
            let l = TcpListener::bind(("127.0.0.1", 0)).context("cannot bind 127.0.0.1")?;
            let p = l.local_addr()?.port();
            if !self.taken.contains(&p) {
                self.taken.push(p);
                return Ok(p);
            }
        }
        anyhow::bail!("no free port on 127.0.0.1")
    }
}

/// Whether nothing listens on 127.0.0.1:`port`.
/// The index in [`State::workers`] of the process (and node) named `worker-N`, N from 1.
pub fn worker_index(name: &str) -> Option<usize> {
    name.strip_prefix("worker-")?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

pub fn free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// 32 random bytes as hex.
pub fn token() -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)
        .map_err(|e| anyhow::anyhow!("cannot read the OS random source: {e}"))?;
    Ok(b.iter().map(|b| format!("{b:02x}")).collect())
}

impl State {
    /// A new cluster's record: tokens made here, ports chosen now.
    pub fn new(
        name: &str,
        workers: usize,
        threads: u32,
        model: &Path,
        model_sha256: &str,
        deployment: &str,
    ) -> anyhow::Result<Self> {
        let mut p = Picker::default();
        let schedulers = (0..3)
            .map(|i| p.pick(SCHEDULER_PORT + i))
            .collect::<anyhow::Result<_>>()?;
        let workers = (0..workers as u16)
            .map(|i| {
                Ok(WorkerPorts {
                    grpc: p.pick(WORKER_PORT.saturating_add(i))?,
                    metrics: p.pick(WORKER_METRICS_PORT.saturating_add(i))?,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let gateway = GatewayPorts {
            http: p.pick(HTTP_PORT)?,
            grpc: p.pick(GRPC_PORT)?,
            metrics: p.pick(METRICS_PORT)?,
        };
        Ok(Self {
            name: name.to_string(),
            admin_token: token()?,
            join_token: token()?,
            peer_token: token()?,
            schedulers,
            workers,
            gateway,
            threads,
            model: model.display().to_string(),
            model_sha256: model_sha256.to_string(),
            model_size: std::fs::metadata(model).map(|m| m.len()).unwrap_or(0),
            deployment: deployment.to_string(),
            tenant: "local".into(),
            api_key: String::new(),
        })
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join("cluster.json")
    }

    /// The record in `dir`, if there is one.
    pub fn load(dir: &Path) -> anyhow::Result<Option<Self>> {
        let p = Self::path(dir);
        match std::fs::read_to_string(&p) {
            Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
                anyhow::anyhow!(
                    "{} is damaged ({e}): remove the cluster with `joulectl cluster down \
                     --purge` and start again",
                    p.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", p.display())),
        }
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let tmp = dir.join(".cluster.json.new");
        crate::context::write_private(&tmp, serde_json::to_string_pretty(self)?.as_bytes())?;
        std::fs::rename(&tmp, Self::path(dir))?;
        Ok(())
    }

    /// `127.0.0.1:PORT` of every scheduler, comma-separated.
    pub fn servers(&self) -> String {
        self.schedulers
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The schedulers' `--peers`: `1=127.0.0.1:7001,...`.
    pub fn peers(&self) -> String {
        self.schedulers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.gateway.http)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_default_port_is_avoided_and_picks_never_collide() {
        let held = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let busy = held.local_addr().unwrap().port();
        let mut p = Picker::default();
        let got = p.pick(busy).unwrap();
        assert_ne!(got, busy);
        assert!(free(got));
        let again = p.pick(got).unwrap();
        assert_ne!(again, got, "a port handed out once is not handed out again");
    }

    #[test]
    fn the_record_round_trips_and_names_the_peers() {
        let d = tempfile::tempdir().unwrap();
        let s = State::new("t", 2, 1, Path::new("/m.gguf"), "ab", "smollm2").unwrap();
        assert_eq!(s.workers.len(), 2);
        assert_eq!(s.admin_token.len(), 64);
        assert_ne!(s.admin_token, s.join_token);
        s.save(d.path()).unwrap();
        let back = State::load(d.path()).unwrap().unwrap();
        assert_eq!(back.peers(), s.peers());
        assert!(back.peers().starts_with("1=127.0.0.1:"));
        assert_eq!(back.servers().split(',').count(), 3);
        std::fs::write(State::path(d.path()), "{").unwrap();
        let e = State::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("--purge"), "{e}");
    }
}
