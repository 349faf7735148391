//! A real worker process registers with a 3-replica scheduler cluster: it stays Ready across
//! leader failovers (never marked Unreachable) and is Unreachable once it stops.

use std::time::{Duration, Instant};

use joule_proto::v1;
use joule_testkit::cluster::{Cluster, authed, client};
use joule_testkit::workers::WorkerProc;
use tonic::Request;

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
    let mut reg = joule_client::Connect::default()
        .registry(c.addr(1), "nope")
        .unwrap();
    let e = reg
        .register(Request::new(
            joule_proto::internal::v1::RegisterRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // A real worker process, registering through the replicas in turn.
    let mut worker = WorkerProc::join("cpu-1", &c, &[]);
    let n = node_becomes(&c, "cpu-1", "Ready", Duration::from_secs(20)).await;
    assert_eq!(n.address, worker.addr);
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

    // The worker dies: it is Unreachable after its heartbeats stop.
    worker.kill9();
    let n = node_becomes(&c, "cpu-1", "Unreachable", Duration::from_secs(10)).await;
    assert!(n.status_since_ms > since);
}
