//! `joule-scheduler`'s flags, each with a `JOULE_*` environment variable, and the checks that
//! refuse a bad cluster description at start-up (malformed or duplicate peers, this replica
//! missing from them, timing that cannot elect a leader) with the reason.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::raft::NodeConfig;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "joule-scheduler",
    version,
    about = "Joule's control plane: one replica of the Raft-replicated scheduler"
)]
pub struct Args {
    /// This replica's id: a positive integer, unique in the cluster.
    #[arg(long, env = "JOULE_ID")]
    pub id: u64,
    /// Every founding replica, this one included: `ID=HOST:PORT,...` (the gRPC port of each).
    /// With `--join`: the replicas of the running cluster, so this one can answer them.
    #[arg(long, env = "JOULE_PEERS", default_value = "")]
    pub peers: String,
    /// Start with no membership and wait to be added by a membership change
    /// (`joule.v1.Admin/AddReplica` on the leader).
    #[arg(long, env = "JOULE_JOIN")]
    pub join: bool,
    /// Where the Raft log and snapshots live; keep it on a persistent disk.
    #[arg(long, env = "JOULE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The admin and client API (gRPC), and the Raft transport between replicas.
    #[arg(long, env = "JOULE_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: String,
    /// Required by admin calls (`authorization: Bearer ...`).
    #[arg(long, env = "JOULE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Required of workers that register.
    #[arg(long, env = "JOULE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// The secret every replica of this cluster shares: Raft messages between replicas carry
    /// it, and a replica refuses messages without it. The same on every replica.
    #[arg(long, env = "JOULE_PEER_TOKEN", hide_env_values = true)]
    pub peer_token: Option<String>,
    /// One Raft clock tick, in milliseconds.
    #[arg(long, env = "JOULE_TICK_MS", default_value_t = 50)]
    pub tick_ms: u64,
    /// Ticks without a leader before a follower campaigns (randomised up to twice this).
    #[arg(long, env = "JOULE_ELECTION_TICKS", default_value_t = 10)]
    pub election_ticks: usize,
    /// Ticks between the leader's heartbeats.
    #[arg(long, env = "JOULE_HEARTBEAT_TICKS", default_value_t = 2)]
    pub heartbeat_ticks: usize,
    /// How often workers heartbeat (told to them when they register), in milliseconds.
    #[arg(long, env = "JOULE_HEARTBEAT_MS", default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// A worker not heard from for this long is marked Unreachable, in milliseconds.
    #[arg(long, env = "JOULE_UNREACHABLE_AFTER_MS", default_value_t = 3000)]
    pub unreachable_after_ms: u64,
    /// Applied entries between snapshots.
    #[arg(long, env = "JOULE_SNAPSHOT_ENTRIES", default_value_t = 10_000)]
    pub snapshot_entries: u64,
    /// A worker silent this long loses its placements to other workers, in milliseconds.
    #[arg(long, env = "JOULE_RESCHEDULE_AFTER_MS", default_value_t = 10_000)]
    pub reschedule_after_ms: u64,
    /// How often the leader runs placement, ms.
    #[arg(long, env = "JOULE_PLACEMENT_INTERVAL_MS", default_value_t = 1000)]
    pub placement_interval_ms: u64,
    /// Memory reserved per replica for its KV cache on top of the model file, bytes (match
    /// the workers' --kv-budget).
    #[arg(long, env = "JOULE_KV_RESERVE_BYTES", default_value_t = 512 << 20)]
    pub kv_reserve_bytes: u64,
    /// A running placement moves only when another node would serve it for this fraction
    /// fewer joules per token (0 to 1).
    #[arg(long, env = "JOULE_CHURN_THRESHOLD", default_value_t = 0.25)]
    pub churn_threshold: f64,
    /// How log lines are written to stderr: text (coloured only on a terminal) or json (one
    /// object per line, for log shippers). RUST_LOG filters them.
    #[arg(long, env = "JOULE_LOG_FORMAT", default_value = "text")]
    pub log_format: joule_proto::logging::LogFormat,
    /// A second, plain-TCP port that serves only `grpc.health.v1`, for probes that cannot
    /// speak TLS (Kubernetes' gRPC probes); off when not given.
    #[arg(long, env = "JOULE_HEALTH_LISTEN")]
    pub health_listen: Option<String>,
    #[command(flatten)]
    pub tls: joule_client::tls::TlsArgs,
}

/// The founding replicas, by id.
pub type Peers = BTreeMap<u64, String>;

/// Checks that `addr` is HOST:PORT with a port from 1 to 65535.
pub fn check_address(addr: &str) -> Result<(), String> {
    addr.rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .map(|_| ())
        .ok_or_else(|| format!("{addr:?} is not HOST:PORT with a port from 1 to 65535"))
}

/// Parses `ID=HOST:PORT,...`, refusing malformed entries, id 0 and duplicate ids or addresses.
pub fn parse_peers(s: &str) -> Result<Peers, String> {
    let mut peers = Peers::new();
    for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("peer {item:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("peer {item:?}: the id {id:?} is not a positive integer"))?;
        if id == 0 {
            return Err(format!("peer {item:?}: ids start at 1"));
        }
        let addr = addr.trim();
        check_address(addr).map_err(|e| format!("peer {item:?}: {e}"))?;
        if let Some((other, _)) = peers.iter().find(|(_, a)| a.as_str() == addr) {
            return Err(format!(
                "peers {other} and {id} have the same address {addr}"
            ));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("peer id {id} appears more than once"));
        }
    }
    Ok(peers)
}

impl Args {
    /// The placement loop's settings.
    pub fn control(&self) -> crate::control::Settings {
        crate::control::Settings {
            reschedule_after: Duration::from_millis(self.reschedule_after_ms),
            interval: Duration::from_millis(self.placement_interval_ms),
            kv_reserve_bytes: self.kv_reserve_bytes,
            churn_threshold: self.churn_threshold,
        }
    }

    /// Checks the flags together; returns the founding peers.
    pub fn validate(&self) -> Result<Peers, String> {
        if self.id == 0 {
            return Err("--id must be a positive integer".into());
        }
        if self.admin_token.as_deref().is_none_or(str::is_empty) {
            return Err("--admin-token (or JOULE_ADMIN_TOKEN) is required".into());
        }
        if self.peer_token.as_deref().is_none_or(str::is_empty) {
            return Err(
                "--peer-token (or JOULE_PEER_TOKEN) is required: the secret the replicas share \
                 (the same on every replica)"
                    .into(),
            );
        }
        let peers = parse_peers(&self.peers).map_err(|e| format!("--peers: {e}"))?;
        match (self.join, peers.is_empty()) {
            (true, true) => {
                return Err(
                    "--join needs --peers listing the running cluster's replicas, so this one \
                     can answer them"
                        .into(),
                );
            }
            (false, true) => {
                return Err(
                    "--peers is required (every founding replica, this one included), or \
                     --join to be added to a running cluster"
                        .into(),
                );
            }
            (false, false) if !peers.contains_key(&self.id) => {
                return Err(format!(
                    "--peers does not list this replica's --id {}: {:?}",
                    self.id,
                    peers.keys().collect::<Vec<_>>()
                ));
            }
            _ => {}
        }
        if self.heartbeat_ms == 0 || self.unreachable_after_ms <= self.heartbeat_ms {
            return Err(format!(
                "--unreachable-after-ms ({}) must be greater than --heartbeat-ms ({}), which must \
                 be at least 1",
                self.unreachable_after_ms, self.heartbeat_ms
            ));
        }
        if self.tick_ms == 0 {
            return Err("--tick-ms must be at least 1".into());
        }
        if self.reschedule_after_ms < self.unreachable_after_ms {
            return Err(format!(
                "--reschedule-after-ms ({}) must be at least --unreachable-after-ms ({})",
                self.reschedule_after_ms, self.unreachable_after_ms
            ));
        }
        if self.placement_interval_ms == 0 {
            return Err("--placement-interval-ms must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.churn_threshold) {
            return Err(format!(
                "--churn-threshold ({}) must be from 0 to 1",
                self.churn_threshold
            ));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(format!(
                "--election-ticks ({}) must be greater than --heartbeat-ticks ({}), which must be \
                 at least 1",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        Ok(peers)
    }

    pub fn node_config(&self, peers: &Peers) -> NodeConfig {
        let voters = if self.join {
            Vec::new()
        } else {
            peers.keys().copied().collect()
        };
        let mut c = NodeConfig::new(self.id, voters, &self.data_dir);
        c.tick = Duration::from_millis(self.tick_ms);
        c.election_ticks = self.election_ticks;
        c.heartbeat_ticks = self.heartbeat_ticks;
        c.snapshot_entries = self.snapshot_entries;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut v = vec![
            "joule-scheduler",
            "--data-dir",
            "/tmp/x",
            "--admin-token",
            "a",
            "--peer-token",
            "p",
        ];
        v.extend_from_slice(extra);
        Args::try_parse_from(v)
    }

    #[test]
    fn a_good_peer_list_parses() {
        let p = parse_peers("1=10.0.0.1:7000, 2=node-b:7000,3=[::1]:7001").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[&3], "[::1]:7001");
    }

    #[test]
    fn bad_peer_lists_are_refused_with_the_reason() {
        for (input, want) in [
            ("1=a:1,1=b:2", "peer id 1 appears more than once"),
            ("1=a:1,2=a:1", "peers 1 and 2 have the same address a:1"),
            ("1:a:1", "is not ID=HOST:PORT"),
            ("x=a:1", "is not a positive integer"),
            ("0=a:1", "ids start at 1"),
            ("1=a", "is not HOST:PORT"),
            ("1=a:0", "is not HOST:PORT"),
            ("1=:7000", "is not HOST:PORT"),
            ("1=a:99999", "is not HOST:PORT"),
        ] {
            let e = parse_peers(input).unwrap_err();
            assert!(e.contains(want), "{input}: {e}");
        }
    }

    #[test]
    fn flags_are_checked_together() {
        let a = args(&["--id", "4", "--peers", "1=a:1,2=b:1,3=c:1"]).unwrap();
        assert!(
            a.validate()
                .unwrap_err()
                .contains("does not list this replica's --id 4")
        );
        let a = args(&["--id", "1"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--peers is required"));
        let a = args(&["--id", "4", "--join"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--join needs --peers"));
        let a = args(&["--id", "4", "--join", "--peers", "1=a:1"]).unwrap();
        let peers = a.validate().unwrap();
        assert!(
            a.node_config(&peers).voters.is_empty(),
            "a joiner starts with no membership"
        );
        let a = args(&["--id", "1", "--peers", "1=a:1", "--election-ticks", "2"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--election-ticks (2)"));
        let a = args(&[
            "--id",
            "2",
            "--peers",
            "1=a:1,2=b:1,3=c:1",
            "--tick-ms",
            "20",
        ])
        .unwrap();
        let peers = a.validate().unwrap();
        let c = a.node_config(&peers);
        assert_eq!(
            (c.voters, c.tick),
            (vec![1, 2, 3], Duration::from_millis(20))
        );
        assert!(args(&["--id", "1", "--peers", "1=a:1", "--tick-ms", "x"]).is_err());
    }

    #[test]
    fn tokens_are_required() {
        let a = Args::try_parse_from([
            "joule-scheduler",
            "--data-dir",
            "/tmp/x",
            "--id",
            "1",
            "--peers",
            "1=a:1",
            "--admin-token",
            "a",
        ])
        .unwrap();
        assert!(a.validate().unwrap_err().contains("--peer-token"));
        let mut b = a.clone();
        b.admin_token = Some(String::new());
        b.peer_token = Some("p".into());
        assert!(b.validate().unwrap_err().contains("--admin-token"));
    }
}
