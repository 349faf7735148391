//! Real `joule-scheduler` processes on 127.0.0.1: bad start-up input is refused with the
//! reason, and a 3-replica cluster survives kill -9 of its leader, again and again, under a
//! load of writes and linearizable reads, losing no acknowledged write.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::linearizable::{self, Kind, Op};
use joule_proto::v1;
use joule_proto::v1::admin_client::AdminClient;
use tonic::Request;
use tonic::transport::Channel;

const TOKEN: &str = "test-admin-token";
const JOIN: &str = "test-join-token";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Replica {
    id: u64,
    addr: String,
    dir: PathBuf,
    child: Option<Child>,
}

struct Cluster {
    replicas: Vec<Replica>,
    peers: String,
    tmp: tempfile::TempDir,
}

impl Cluster {
    fn new(n: u64) -> Self {
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
        };
        for id in 1..=n {
            c.start(id);
        }
        c
    }

    fn start(&mut self, id: u64) {
        self.spawn(id, false);
    }

    /// Starts a new replica with `--join` (it waits to be added).
    fn start_joiner(&mut self) -> u64 {
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

    fn spawn(&mut self, id: u64, join: bool) {
        let log = self.tmp.path().join(format!("r{id}.log"));
        let r = &mut self.replicas[id as usize - 1];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_joule-scheduler"));
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
            .env("JOULE_JOIN_TOKEN", JOIN)
            .env("JOULE_HEARTBEAT_MS", "200")
            .env("JOULE_UNREACHABLE_AFTER_MS", "1000")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        r.child = Some(child);
    }

    fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.replicas[id as usize - 1].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn addr(&self, id: u64) -> &str {
        &self.replicas[id as usize - 1].addr
    }

    async fn status(&self, id: u64) -> Option<v1::ClusterStatusResponse> {
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
    async fn leader(&self, within: Duration, not: u64) -> u64 {
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

fn authed<T>(m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r.set_timeout(Duration::from_secs(5));
    r
}

async fn client(addr: &str) -> Option<AdminClient<Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .ok()?;
    Some(AdminClient::new(ch))
}

fn scheduler(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_joule-scheduler"))
        .args(args)
        .env("JOULE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_start_up_input_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for (args, want) in [
        (
            vec!["--id", "1", "--peers", "1=a:1,1=b:2"],
            "appears more than once",
        ),
        (
            vec!["--id", "1", "--peers", "1=nonsense"],
            "is not HOST:PORT",
        ),
        (
            vec!["--id", "4", "--peers", "1=a:1,2=b:1"],
            "does not list this replica's --id 4",
        ),
    ] {
        let mut a = args.clone();
        a.extend(["--data-dir", d]);
        let (code, err) = scheduler(&a);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn a_corrupt_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("raft.redb"), vec![0x42u8; 16384]).unwrap();
    let port = free_port();
    let (code, err) = scheduler(&[
        "--id",
        "1",
        "--peers",
        &format!("1=127.0.0.1:{port}"),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("raft.redb"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_is_refused_and_a_torn_tail_is_not() {
    let mut c = Cluster::new(1);
    c.leader(Duration::from_secs(10), 0).await;
    let mut admin = client(c.addr(1)).await.unwrap();
    for i in 0..20 {
        admin
            .put_setting(authed(v1::PutSettingRequest {
                key: format!("k{i}"),
                value: "x".repeat(100),
            }))
            .await
            .unwrap();
    }
    c.kill9(1);
    let dir = c.replicas[0].dir.clone();
    let wal = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .expect("a WAL file");
    let good = std::fs::read(&wal).unwrap();
    let start = |c: &Cluster| {
        Command::new(env!("CARGO_BIN_EXE_joule-scheduler"))
            .args(["--id", "1", "--peers", &c.peers, "--listen", c.addr(1)])
            .arg("--data-dir")
            .arg(&dir)
            .env("JOULE_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // A flipped byte in the middle of the log: refused, with the reason and what to do.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(&wal, &bad).unwrap();
    let out = start(&c).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("checksum mismatch") && err.contains("refuses to start"),
        "{err}"
    );

    // A torn last write (the crash came in the middle of appending a record nobody was told
    // about): cut off, and every acknowledged write is there.
    let mut torn = good.clone();
    torn.extend_from_slice(&200u32.to_le_bytes());
    torn.extend_from_slice(&[0xab; 4]);
    torn.push(1);
    torn.extend_from_slice(&[7; 30]); // 30 of the record's 200 bytes reached the disk
    std::fs::write(&wal, &torn).unwrap();
    c.replicas[0].child = Some(start(&c));
    c.leader(Duration::from_secs(10), 0).await;
    let mut admin = client(c.addr(1)).await.unwrap();
    let got = admin
        .get_setting(authed(v1::GetSettingRequest { key: "k19".into() }))
        .await
        .unwrap()
        .into_inner();
    assert!(got.found, "k19 was acknowledged before the torn write");
}

/// One client's loop: alternately writes a unique value to the register (and a key of its
/// own) and reads the register, through the replicas in turn.
async fn client_loop(
    cluster_addrs: Vec<String>,
    me: usize,
    stop: Arc<AtomicBool>,
    t0: Instant,
) -> (Vec<Op>, Vec<String>) {
    let mut ops = Vec::new();
    let mut acked_keys = Vec::new();
    let now = || t0.elapsed().as_nanos() as u64;
    let mut n = 0usize;
    let mut conns: Vec<Option<AdminClient<Channel>>> = vec![None; cluster_addrs.len()];
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let slot = (me + n) % cluster_addrs.len();
        if conns[slot].is_none() {
            conns[slot] = client(&cluster_addrs[slot]).await;
        }
        let Some(c) = conns[slot].as_mut() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if n.is_multiple_of(2) {
            let v = format!("c{me}-{n}");
            let call = now();
            let ok = c
                .put_setting(authed(v1::PutSettingRequest {
                    key: "register".into(),
                    value: v.clone(),
                }))
                .await
                .is_ok();
            ops.push(Op {
                call,
                ret: ok.then(now),
                kind: Kind::Write(v.clone()),
            });
            if !ok {
                conns[slot] = None;
                continue;
            }
            let key = format!("k/{v}");
            if c.put_setting(authed(v1::PutSettingRequest {
                key: key.clone(),
                value: "x".into(),
            }))
            .await
            .is_ok()
            {
                acked_keys.push(key);
            }
        } else {
            let call = now();
            match c
                .get_setting(authed(v1::GetSettingRequest {
                    key: "register".into(),
                }))
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    ops.push(Op {
                        call,
                        ret: Some(now()),
                        kind: Kind::Read(r.found.then_some(r.value)),
                    });
                }
                Err(_) => conns[slot] = None,
            }
        }
    }
    (ops, acked_keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_loses_no_acknowledged_write_and_stays_linearizable() {
    let mut c = Cluster::new(3);
    c.leader(Duration::from_secs(15), 0).await;

    // Wrong or missing admin token.
    let mut cl = client(c.addr(1)).await.unwrap();
    let e = cl
        .cluster_status(v1::ClusterStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    let addrs: Vec<String> = (1..=3).map(|i| c.addr(i).to_string()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..2)
        .map(|me| tokio::spawn(client_loop(addrs.clone(), me, stop.clone(), t0)))
        .collect();

    let mut failovers = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let old = c.leader(Duration::from_secs(10), 0).await;
        let killed = Instant::now();
        c.kill9(old);
        let new = c.leader(Duration::from_secs(10), old).await;
        failovers.push(killed.elapsed());
        // The killed replica comes back from its data dir and catches up.
        c.start(old);
        let target = c.status(new).await.map_or(0, |s| s.commit_index);
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = c.status(old).await
                && s.applied_index >= target
            {
                break;
            }
            assert!(
                Instant::now() < end,
                "replica {old} never caught up to {target}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut history = Vec::new();
    let mut acked = Vec::new();
    for t in clients {
        let (ops, keys) = t.await.unwrap();
        history.extend(ops);
        acked.extend(keys);
    }
    eprintln!(
        "failovers (kill -9 to an agreed new leader): {failovers:?}; {} operations, {} acknowledged keys",
        history.len(),
        acked.len()
    );
    let writes = history
        .iter()
        .filter(|o| matches!(o.kind, Kind::Write(_)) && o.ret.is_some())
        .count();
    assert!(writes > 10, "too few acknowledged writes: {writes}");
    linearizable::check(&history).unwrap();

    // Every acknowledged write is present, read linearizably through every replica.
    for id in 1..=3 {
        let mut cl = client(c.addr(id)).await.unwrap();
        for k in &acked {
            let r = cl
                .get_setting(authed(v1::GetSettingRequest { key: k.clone() }))
                .await
                .unwrap()
                .into_inner();
            assert!(r.found, "acknowledged write {k} missing on replica {id}");
        }
    }
}

async fn nodes(c: &Cluster, via: u64) -> Option<Vec<v1::NodeInfo>> {
    let mut cl = client(c.addr(via)).await?;
    let r = cl.list_nodes(authed(v1::ListNodesRequest {})).await.ok()?;
    Some(r.into_inner().nodes)
}

/// Waits until some live replica lists worker `name` with `status`; returns it.
async fn node_becomes(c: &Cluster, name: &str, status: &str, within: Duration) -> v1::NodeInfo {
    let end = Instant::now() + within;
    loop {
        for r in c.replicas.iter().filter(|r| r.child.is_some()) {
            if let Some(ns) = nodes(c, r.id).await
                && let Some(n) = ns.into_iter().find(|n| n.name == name)
                && n.status == status
            {
                return n;
            }
        }
        assert!(Instant::now() < end, "worker {name} never became {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_worker_stays_ready_across_failover_and_is_unreachable_once_gone() {
    let mut c = Cluster::new(3);
    c.leader(Duration::from_secs(15), 0).await;

    // A wrong join token is refused.
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addr(1)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reg = joule_proto::internal::v1::registry_client::RegistryClient::new(ch);
    let mut bad = Request::new(joule_proto::internal::v1::RegisterRequest::default());
    bad.metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    let e = reg.register(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // A real worker (its gRPC server and agent, in this process), registering through the
    // replicas in turn.
    let schedulers = (1..=3)
        .map(|i| c.addr(i).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let args = joule_worker::Args::load_from([
        "joule-worker",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--calibrate",
        "false",
        "--power-sensor",
        "estimate",
        "--scheduler",
        &schedulers,
        "--join-token",
        JOIN,
        "--node-name",
        "cpu-1",
    ])
    .unwrap();
    let worker = joule_worker::Worker::start(&args).await.unwrap();
    let n = node_becomes(&c, "cpu-1", "Ready", Duration::from_secs(10)).await;
    assert_eq!(n.address, worker.grpc_addr.to_string());
    assert!(n.logical_cpus > 0 && !n.cpu_model.is_empty(), "{n:?}");
    let since = n.status_since_ms;

    // Cordon it: the schedule is replicated and survives the failovers below.
    let mut admin = client(c.addr(1)).await.unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let cordoned = loop {
        match admin
            .set_node_schedule(authed(v1::SetNodeScheduleRequest {
                name: "cpu-1".into(),
                schedule: "Cordoned".into(),
            }))
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(e) => {
                assert!(Instant::now() < end, "cordon failed: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(cordoned.schedule, "Cordoned");
    let e = admin
        .get_node(authed(v1::GetNodeRequest {
            name: "nope".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("cpu-1"), "{}", e.message());

    // Two leader failovers: the worker stays Ready throughout (never marked Unreachable).
    for _ in 0..2 {
        let old = c.leader(Duration::from_secs(10), 0).await;
        c.kill9(old);
        c.leader(Duration::from_secs(10), old).await;
        // Longer than the unreachable timeout, so a wrong verdict would show.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let n = node_becomes(&c, "cpu-1", "Ready", Duration::from_secs(5)).await;
        assert_eq!(
            n.status_since_ms, since,
            "the worker was marked Unreachable at some point"
        );
        assert_eq!(n.schedule, "Cordoned");
        c.start(old);
    }

    // The worker stops: it is Unreachable after its heartbeats stop.
    worker.shutdown().await;
    let n = node_becomes(&c, "cpu-1", "Unreachable", Duration::from_secs(10)).await;
    assert!(n.status_since_ms > since);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_added_and_another_removed_at_run_time() {
    let mut c = Cluster::new(3);
    let leader = c.leader(Duration::from_secs(15), 0).await;
    let mut admin = client(c.addr(leader)).await.unwrap();
    admin
        .put_setting(authed(v1::PutSettingRequest {
            key: "before".into(),
            value: "1".into(),
        }))
        .await
        .unwrap();
    let new = c.start_joiner();
    let addr = c.addr(new).to_string();
    let r = admin
        .add_replica(authed(v1::AddReplicaRequest {
            id: new,
            address: addr,
        }))
        .await
        .unwrap();
    assert!(r.into_inner().index > 0);
    // Bad input: adding it again, or an address that is not HOST:PORT.
    let e = admin
        .add_replica(authed(v1::AddReplicaRequest {
            id: 9,
            address: "nowhere".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // The new replica catches up and serves linearizable reads.
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(mut cl) = client(c.addr(new)).await
            && let Ok(r) = cl
                .get_setting(authed(v1::GetSettingRequest {
                    key: "before".into(),
                }))
                .await
            && r.into_inner().found
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "the added replica never served the setting"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Remove a follower; the four-member status becomes three.
    let gone = (1..=3).find(|i| *i != leader).unwrap();
    admin
        .remove_replica(authed(v1::RemoveReplicaRequest { id: gone }))
        .await
        .unwrap();
    c.kill9(gone);
    let st = admin
        .cluster_status(authed(v1::ClusterStatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<u64> = st.replicas.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    let mut want: Vec<u64> = (1..=4).filter(|i| *i != gone).collect();
    want.sort_unstable();
    assert_eq!(ids, want);
    admin
        .put_setting(authed(v1::PutSettingRequest {
            key: "after".into(),
            value: "2".into(),
        }))
        .await
        .unwrap();
}

async fn health_of(addr: &str, service: &str) -> i32 {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

async fn health_becomes(addr: &str, service: &str, want: ServingStatus, within: Duration) {
    let end = Instant::now() + within;
    while health_of(addr, service).await != want as i32 {
        assert!(
            Instant::now() < end,
            "{service} on {addr} never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

use tonic_health::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_majority_answers_unavailable_and_says_not_serving() {
    let mut c = Cluster::new(3);
    let leader = c.leader(Duration::from_secs(10), 0).await;
    let survivor = (1..=3).find(|i| *i != leader).unwrap();
    let addr = c.addr(survivor).to_string();

    // Health and reflection, through the protocol, as a probe or grpcurl would ask.
    health_becomes(&addr, "", ServingStatus::Serving, Duration::from_secs(1)).await;
    health_becomes(
        &addr,
        "joule.v1.Admin",
        ServingStatus::Serving,
        Duration::from_secs(5),
    )
    .await;
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let ch = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let reqs = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol("joule.v1.ClusterStatusRequest".into()),
        ]
        .map(|m| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        });
        let mut answers = ServerReflectionClient::new(ch)
            .server_reflection_info(tokio_stream::iter(reqs))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("no service list");
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        for want in [
            "joule.v1.Admin",
            "joule.internal.v1.Registry",
            "grpc.health.v1.Health",
        ] {
            assert!(names.contains(&want), "{names:?}");
        }
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("no descriptor for joule.v1.ClusterStatusRequest");
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }

    // The two others die: the survivor is a minority of one.
    for id in (1..=3).filter(|i| *i != survivor) {
        c.kill9(id);
    }
    let mut admin = client(&addr).await.unwrap();
    for attempt in 0..2 {
        let t = Instant::now();
        let e = admin
            .put_setting(authed(v1::PutSettingRequest {
                key: "k".into(),
                value: format!("v{attempt}"),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(
            e.message().contains("leader"),
            "it says what it knows of the leader: {}",
            e.message()
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        let e = admin
            .get_setting(authed(v1::GetSettingRequest { key: "k".into() }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    }
    health_becomes(
        &addr,
        "joule.v1.Admin",
        ServingStatus::NotServing,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        health_of(&addr, "").await,
        ServingStatus::Serving as i32,
        "the process itself is alive"
    );
    let e = admin
        .put_setting(authed(v1::PutSettingRequest {
            key: "k".into(),
            value: "late".into(),
        }))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("no leader is known"),
        "{}",
        e.message()
    );

    // A second replica comes back: a majority again, writes commit.
    let back = (1..=3).find(|i| *i != survivor).unwrap();
    c.start(back);
    health_becomes(
        &addr,
        "joule.v1.Admin",
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = admin
            .put_setting(authed(v1::PutSettingRequest {
                key: "k".into(),
                value: "after".into(),
            }))
            .await;
        match r {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < end, "never wrote after recovery: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = admin
        .get_setting(authed(v1::GetSettingRequest { key: "k".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.value, "after");
}
