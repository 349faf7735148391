//! Replicas are added and removed at run time, and a replica cut off from the majority answers
//! UNAVAILABLE and says NOT_SERVING, through the protocol (health and reflection included).

use std::time::{Duration, Instant};

use joule_proto::v1;
use joule_testkit::cluster::{Cluster, authed, client};
use tonic::transport::Channel;

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
    joule_testkit::reflection::assert_serves(
        &addr,
        &[
            "joule.v1.Admin",
            "joule.internal.v1.Registry",
            "grpc.health.v1.Health",
        ],
        "joule.v1.ClusterStatusRequest",
    )
    .await;
    {
        // Raft messages without the peer token are refused: nobody who merely reaches the
        // port can inject them.
        let mut raft = joule_client::Connect::default()
            .raft(&addr, "wrong-peer-token")
            .unwrap();
        let e = raft
            .step(joule_proto::internal::v1::RaftBatch {
                from: 9,
                to: survivor,
                messages: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        assert!(e.message().contains("--peer-token"), "{}", e.message());
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
