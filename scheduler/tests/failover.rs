//! A 3-replica cluster of real processes survives kill -9 of its leader, again and again,
//! under a load of writes and linearizable reads, losing no acknowledged write. (A registered
//! worker across failovers: the test kit's `tests/registry.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use joule_proto::v1;
use joule_proto::v1::admin_client::AdminClient;
use joule_testkit::cluster::{Cluster, authed, client};
use joule_testkit::linearizable::{self, Kind, Op};
use tonic::transport::Channel;

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
