//! In-process clusters of real Raft nodes (real logs on disk, one thread each) joined by the
//! simulated network of `raft::sim`, whose filters isolate, partition, drop and delay.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use joule_proto::internal::v1 as pb;
use joule_scheduler::raft::sim::SimNet;
use joule_scheduler::raft::{Membership, NodeConfig, RaftError, RaftNode, node};
use tempfile::TempDir;

struct Cluster {
    net: SimNet,
    dirs: HashMap<u64, TempDir>,
    nodes: HashMap<u64, RaftNode>,
    voters: Vec<u64>,
    snapshot_entries: u64,
}

fn put(key: &str, value: &str) -> pb::Command {
    pb::Command {
        kind: Some(pb::command::Kind::PutSetting(pb::PutSetting {
            key: key.into(),
            value: value.into(),
        })),
    }
}

impl Cluster {
    fn new(n: u64, snapshot_entries: u64) -> Self {
        let mut c = Self {
            net: SimNet::new(42),
            dirs: HashMap::new(),
            nodes: HashMap::new(),
            voters: (1..=n).collect(),
            snapshot_entries,
        };
        for id in 1..=n {
            c.start(id);
        }
        c
    }

    fn config(&mut self, id: u64, voters: Vec<u64>) -> NodeConfig {
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| tempfile::tempdir().unwrap());
        let mut cfg = NodeConfig::new(id, voters, dir.path());
        cfg.tick = Duration::from_millis(10);
        cfg.election_ticks = 10;
        cfg.heartbeat_ticks = 2;
        cfg.snapshot_entries = self.snapshot_entries;
        cfg.request_timeout = Duration::from_millis(1500);
        cfg
    }

    /// Starts (or restarts, from its data dir) replica `id`.
    fn start(&mut self, id: u64) {
        let cfg = self.config(id, self.voters.clone());
        let node = node::start(cfg, self.net.transport(id)).expect("start");
        self.net.attach(node.clone());
        self.nodes.insert(id, node);
    }

    /// Starts a new, empty replica that joins by a membership change.
    fn start_joiner(&mut self, id: u64) {
        let cfg = self.config(id, Vec::new());
        let node = node::start(cfg, self.net.transport(id)).expect("start");
        self.net.attach(node.clone());
        self.nodes.insert(id, node);
    }

    fn kill(&mut self, id: u64) {
        self.net.detach(id);
        if let Some(n) = self.nodes.remove(&id) {
            n.stop();
        }
    }

    fn node(&self, id: u64) -> &RaftNode {
        &self.nodes[&id]
    }

    /// Waits until one of `among` leads and the rest of them agree.
    async fn leader_among(&self, among: &[u64], within: Duration) -> u64 {
        let end = Instant::now() + within;
        loop {
            let st: Vec<_> = among.iter().map(|i| self.node(*i).status()).collect();
            if let Some(l) = st.iter().find(|s| s.is_leader)
                && st.iter().all(|s| s.leader == l.id)
            {
                return l.id;
            }
            assert!(
                Instant::now() < end,
                "no agreed leader among {among:?}: {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn leader(&self) -> u64 {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        self.leader_among(&ids, Duration::from_secs(5)).await
    }

    /// Writes through `via`, retrying while there is no leader, as a client would.
    async fn write(&self, via: u64, key: &str, value: &str) -> u64 {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            match self.node(via).propose(&put(key, value)).await {
                Ok(i) => return i,
                Err(e) => {
                    assert!(
                        Instant::now() < end,
                        "write {key} via {via} never succeeded: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    async fn read(&self, via: u64, key: &str) -> Result<Option<String>, RaftError> {
        let k = key.to_string();
        self.node(via)
            .read(move |sm| sm.state().settings.get(&k).cloned())
            .await
    }

    /// Waits until replica `id` has applied `key = value` (without asking the leader).
    async fn converged(&self, id: u64, key: &str, value: &str) {
        let end = Instant::now() + Duration::from_secs(10);
        while self
            .node(id)
            .read_local(|sm| sm.state().settings.get(key).cloned())
            .as_deref()
            != Some(value)
        {
            assert!(
                Instant::now() < end,
                "replica {id} never applied {key}={value}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_is_elected_and_writes_through_any_replica_are_read_everywhere() {
    let c = Cluster::new(3, 10_000);
    let leader = c.leader().await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    // A follower forwards the proposal to the leader, and answers once it has applied it.
    let index = c.write(follower, "colour", "green").await;
    assert!(index > 0);
    for id in 1..=3 {
        assert_eq!(
            c.read(id, "colour").await.unwrap().as_deref(),
            Some("green")
        );
    }
    let st = c.node(leader).status();
    assert_eq!(st.voters, vec![1, 2, 3]);
    assert!(st.commit >= index && st.applied >= index, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_commit_and_a_healed_partition_converges() {
    let c = Cluster::new(5, 10_000);
    let old = c.leader().await;
    c.write(old, "k", "before").await;
    let minority: Vec<u64> = vec![old, (1..=5).find(|i| *i != old).unwrap()];
    let majority: Vec<u64> = (1..=5).filter(|i| !minority.contains(i)).collect();
    c.net.partition(&[&minority, &majority]);

    // The minority side answers every write with an error within its timeout: no hang, and
    // nothing it said it wrote.
    let started = Instant::now();
    let e = c
        .node(minority[1])
        .propose(&put("k", "lost"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            RaftError::NoLeader { .. }
                | RaftError::Timeout { .. }
                | RaftError::LeaderChanged { .. }
        ),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // The majority elects a leader of its own and commits.
    let new = c.leader_among(&majority, Duration::from_secs(5)).await;
    assert_ne!(new, old);
    c.write(majority[0], "k", "after").await;

    // The old leader, cut off from a quorum, steps down (check quorum) and cannot commit.
    let end = Instant::now() + Duration::from_secs(3);
    while c.node(old).status().is_leader {
        assert!(
            Instant::now() < end,
            "the partitioned leader never stepped down"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        c.read(old, "k").await.is_err(),
        "no linearizable read in a minority"
    );

    c.net.heal();
    for id in 1..=5 {
        c.converged(id, "k", "after").await;
    }
    assert_eq!(c.read(old, "k").await.unwrap().as_deref(), Some("after"));
    let terms: Vec<u64> = (1..=5).map(|i| c.node(i).status().term).collect();
    assert!(terms.iter().all(|t| *t == terms[0]), "{terms:?}");
}

/// A model, a deployment of it, a tenant with a key, and a usage report.
fn workload_commands() -> Vec<pb::Command> {
    use pb::command::Kind;
    let kinds = [
        Kind::PutModel(pb::PutModel {
            model: Some(pb::Model {
                name: "qwen".into(),
                source: "/models/qwen.gguf".into(),
                sha256: "ab".repeat(32),
                ..Default::default()
            }),
        }),
        Kind::PutDeployment(pb::PutDeployment {
            deployment: Some(pb::Deployment {
                name: "chat".into(),
                model: "qwen".into(),
                replicas: 2,
                ..Default::default()
            }),
        }),
        Kind::PutTenant(pb::PutTenant {
            tenant: Some(pb::Tenant {
                name: "acme".into(),
                ..Default::default()
            }),
        }),
        Kind::AddApiKey(pb::AddApiKey {
            tenant: "acme".into(),
            key: Some(pb::ApiKey {
                id: "k1".into(),
                sha256: "cd".repeat(32),
                created_at_ms: 1,
                ..Default::default()
            }),
        }),
        Kind::RecordUsage(pb::RecordUsage {
            reporter: "gw".into(),
            sequence: 1,
            records: vec![pb::UsageRecord {
                tenant: "acme".into(),
                model: "qwen".into(),
                day: 20_000,
                counters: Some(pb::UsageCounters {
                    requests: 1,
                    output_tokens: 64,
                    estimated_mj: 900,
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }),
    ];
    kinds
        .into_iter()
        .map(|k| pb::Command { kind: Some(k) })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_catches_up_from_a_snapshot() {
    let c = Cluster::new(3, 20);
    let leader = c.leader().await;
    let lagging = (1..=3).find(|i| *i != leader).unwrap();
    c.net.isolate(lagging);
    // Every kind of state travels in the snapshot, not only settings.
    for k in workload_commands() {
        c.node(leader).propose(&k).await.unwrap();
    }
    for i in 0..100 {
        c.write(leader, &format!("k{i}"), &i.to_string()).await;
    }
    let st = c.node(leader).status();
    assert!(st.first_index > 50, "the leader compacted its log: {st:?}");
    assert!(
        c.node(lagging)
            .read_local(|sm| sm.state().settings.is_empty())
    );
    c.net.heal();
    c.converged(lagging, "k99", "99").await;
    let n = c.node(lagging).read_local(|sm| sm.state().settings.len());
    assert_eq!(n, 100);
    let theirs = c.node(lagging).read_local(|sm| sm.state().clone());
    assert_eq!(theirs, c.node(leader).read_local(|sm| sm.state().clone()));
    assert_eq!(
        (
            theirs.models.len(),
            theirs.deployments.len(),
            theirs.tenants.len(),
            theirs.usage.len()
        ),
        (1, 1, 1, 1)
    );
    assert!(
        c.node(lagging).status().first_index > 1,
        "it was brought up to date by a snapshot, not by replaying the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_writes_survive_restarting_every_replica() {
    let mut c = Cluster::new(3, 15);
    let leader = c.leader().await;
    for i in 0..40 {
        c.write(leader, &format!("k{i}"), "v").await;
    }
    for id in 1..=3 {
        c.kill(id);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for id in 1..=3 {
        c.start(id);
    }
    c.leader().await;
    for id in 1..=3 {
        assert_eq!(c.read(id, "k39").await.unwrap().as_deref(), Some("v"));
        let n = c
            .node(id)
            .read(|sm| sm.state().settings.len())
            .await
            .unwrap();
        assert_eq!(n, 40);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_through_a_lossy_slow_network() {
    let c = Cluster::new(3, 10_000);
    c.leader().await;
    c.net.drop_rate(0.2);
    c.net.delay(Duration::from_millis(3));
    for i in 0..20 {
        let via = 1 + i % 3;
        c.write(via, &format!("k{i}"), "v").await;
    }
    let (delivered, dropped) = c.net.counts();
    assert!(
        dropped > 0 && delivered > dropped,
        "{delivered} delivered, {dropped} dropped"
    );
    c.net.heal();
    for id in 1..=3 {
        c.converged(id, "k19", "v").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_under_load_lose_no_acknowledged_write() {
    let mut c = Cluster::new(3, 50);
    let leader = c.leader().await;
    // A steady writer through replica 2 or 3 while the membership changes.
    let writer_via = if leader == 2 { 3 } else { 2 };
    let writer = c.node(writer_via).clone();
    let load = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..150 {
            if writer.propose(&put(&format!("w{i}"), "x")).await.is_ok() {
                acked.push(i);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        acked
    });

    // Add replica 4, then remove replica 1 (perhaps the leader).
    c.start_joiner(4);
    let l = c.leader_among(&[1, 2, 3], Duration::from_secs(5)).await;
    c.node(l)
        .change_membership(Membership::AddVoter(4))
        .await
        .unwrap();
    let e = c
        .node(l)
        .change_membership(Membership::AddVoter(4))
        .await
        .unwrap_err();
    assert!(matches!(e, RaftError::InvalidChange(_)), "{e}");
    let l = c.leader_among(&[1, 2, 3, 4], Duration::from_secs(5)).await;
    c.node(l)
        .change_membership(Membership::Remove(1))
        .await
        .unwrap();
    c.kill(1);
    let l = c.leader_among(&[2, 3, 4], Duration::from_secs(5)).await;
    let mut st = c.node(l).watch();
    tokio::time::timeout(
        Duration::from_secs(5),
        st.wait_for(|s| s.voters == [2, 3, 4]),
    )
    .await
    .expect("the new leader applies the removal")
    .unwrap();

    let acked = load.await.unwrap();
    assert!(acked.len() > 50, "only {} writes acknowledged", acked.len());
    let last = format!("w{}", acked.last().unwrap());
    c.converged(4, &last, "x").await;
    for id in [2, 3, 4] {
        for i in &acked {
            let v = c.read(id, &format!("w{i}")).await.unwrap();
            assert_eq!(
                v.as_deref(),
                Some("x"),
                "acknowledged write w{i} missing on {id}"
            );
        }
    }
}
