//! A model with an http source, served by `python3 -m http.server` on 127.0.0.1: the worker
//! downloads it into its cache, verifies it and serves it; a URL that 404s or serves the wrong
//! bytes leaves the placement Failed with that reason and no partial file behind.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use joule_proto::v1;
use joule_testkit::cluster::{Cluster, describe, ready_nodes};
use joule_testkit::workers::{DEFAULT_MODEL_SHA256, WorkerProc, default_model};

struct HttpServer(Child);

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `python3 -m http.server` serving `dir` on a free port of 127.0.0.1.
async fn http_server(dir: &std::path::Path) -> (HttpServer, u16) {
    let port = joule_testkit::free_port();
    let server = HttpServer(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server"),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (server, port);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("http.server did not start on {port}");
}

async fn apply(c: &Cluster, name: &str, url: &str, sha256: &str, size: u64) {
    let m = v1::ModelSpec {
        name: name.into(),
        source: url.into(),
        sha256: sha256.into(),
        size_bytes: size,
        format: String::new(),
    };
    c.admin(Duration::from_secs(10), |mut a| {
        let m = m.clone();
        async move { a.apply_model(m).await }
    })
    .await
    .expect("apply model");
    let d = v1::DeploymentSpec {
        name: name.into(),
        model: name.into(),
        replicas: 1,
        ..Default::default()
    };
    c.admin(Duration::from_secs(10), |mut a| {
        let d = d.clone();
        async move { a.apply_deployment(d).await }
    })
    .await
    .expect("apply deployment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_source_is_downloaded_verified_and_served_and_bad_urls_fail_with_the_reason() {
    let c = Cluster::with_env(1, &[("JOULE_PLACEMENT_INTERVAL_MS", "200")]);
    c.leader(Duration::from_secs(15), 0).await;
    let site = c.tmp.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let model = default_model();
    let size = std::fs::metadata(&model).unwrap().len();
    std::fs::copy(&model, site.join("smollm2.gguf")).unwrap();
    std::fs::write(site.join("wrong.gguf"), b"these are not the model's bytes").unwrap();
    let (_http, port) = http_server(&site).await;
    let w = WorkerProc::join("fetcher", &c, &["--fetch-timeout-s", "5"]);
    let cache = WorkerProc::joined_cache("fetcher", &c);

    let base = format!("http://127.0.0.1:{port}");
    apply(
        &c,
        "fetched",
        &format!("{base}/smollm2.gguf"),
        DEFAULT_MODEL_SHA256,
        size,
    )
    .await;
    let ps = c
        .placements_until("fetched", Duration::from_secs(60), "Ready", |ps| {
            ready_nodes(ps) == ["fetcher"]
        })
        .await;
    assert_eq!(ps.len(), 1, "{}", describe(&ps));
    w.wait_serving("fetched", Duration::from_secs(5)).await;
    let cached = cache
        .join("models")
        .join(format!("{DEFAULT_MODEL_SHA256}.gguf"));
    assert_eq!(std::fs::metadata(&cached).unwrap().len(), size);

    // A URL that 404s, and one that serves the wrong bytes: Failed with the reason (a sha256
    // the cache does not hold, so that it downloads).
    let other = "ab".repeat(32);
    for (name, file, why) in [
        ("missing", "nope.gguf", "404"),
        ("wrong", "wrong.gguf", "wrong bytes"),
    ] {
        apply(&c, name, &format!("{base}/{file}"), &other, size).await;
        let ps = c
            .placements_until(name, Duration::from_secs(30), "Failed", |ps| {
                ps.iter().any(|p| p.state == "Failed")
            })
            .await;
        assert!(ps[0].message.contains(why), "{name}: {}", describe(&ps));
    }
    let partial: Vec<_> = std::fs::read_dir(cache.join("models"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "partial"))
        .collect();
    assert!(partial.is_empty(), "partial files left: {partial:?}");
    // The good one serves throughout.
    assert!(w.models().await.iter().any(|m| m.name == "fetched"));
}
