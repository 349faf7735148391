//! Real `joule-scheduler` processes on 127.0.0.1, at start-up: bad input is refused with the
//! reason, a damaged data dir or log refuses to start, a torn last write is cut off.

use std::process::{Command, Stdio};
use std::time::Duration;

use joule_proto::v1;
use joule_testkit::cluster::{Cluster, PEER, TOKEN, authed, client, free_port, scheduler};

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
            .env("JOULE_PEER_TOKEN", PEER)
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
