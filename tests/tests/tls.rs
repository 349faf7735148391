//! Mutual TLS across a whole cluster of real processes on 127.0.0.1: three schedulers, a
//! worker and a gateway, every one started with `--tls-cert/--tls-key/--tls-ca`.
//!
//! - The replicas elect a leader over mTLS, the worker registers and the gateway watches over
//!   mTLS, and a generation crosses gateway → worker over mTLS.
//! - A scheduler refuses plain TCP, a TLS client with no certificate, and a certificate from
//!   another CA.
//! - The gateway serves HTTPS (OpenAI API and `/metrics`) to clients that trust the CA and ask
//!   them for no certificate (the official `openai` client streams a chat over it); plain HTTP
//!   on that port gets no answer.
//! - The plain health port answers `grpc.health.v1` (Kubernetes' probes speak no TLS).
//! - joulectl reaches the cluster with `--certificate-authority` and a client certificate, and
//!   is refused without them.

use std::process::Command;
use std::time::Duration;

use joule_proto::v1;
use joule_proto::v1::admin_client::AdminClient;
use joule_testkit::cluster::{Cluster, TOKEN, authed};
use joule_testkit::gateway::{GatewayProc, collect, default_model_spec, deployment_spec};
use joule_testkit::tls::Pki;
use joule_testkit::workers::WorkerProc;
use tonic::transport::{ClientTlsConfig, Endpoint};

const MODEL: &str = "smol";

/// A channel to `addr`, set up by `tls` (none: plain TCP), connected now.
async fn channel(
    addr: &str,
    tls: Option<ClientTlsConfig>,
) -> Result<tonic::transport::Channel, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    if let Some(t) = tls {
        ep = ep.tls_config(t).unwrap();
    }
    ep.connect().await.map_err(|e| format!("connect: {e:?}"))
}

/// `ClusterStatus` on `addr` over a channel set up by `tls`.
async fn status(addr: &str, tls: Option<ClientTlsConfig>) -> Result<u64, String> {
    let ch = channel(addr, tls).await?;
    let r = AdminClient::new(ch)
        .cluster_status(authed(v1::ClusterStatusRequest {}))
        .await
        .map_err(|e| format!("call: {e}"))?;
    Ok(r.into_inner().leader)
}

/// `grpc.health.v1` Check of "" on `addr` over a channel set up by `tls`.
async fn health(addr: &str, tls: Option<ClientTlsConfig>) -> Result<i32, String> {
    let ch = channel(addr, tls).await?;
    let r = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| format!("call: {e}"))?;
    Ok(r.into_inner().status)
}

fn https_agent(pki: &Pki) -> ureq::Agent {
    use ureq::tls::{PemItem, RootCerts, TlsConfig};
    let pem = std::fs::read(&pki.ca).unwrap();
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::new_with_certs(&certs))
                .build(),
        )
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_on_mutual_tls_and_refuses_plain_and_foreign_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "joule");
    let rogue = Pki::new(dir.path(), "rogue");
    // This test process is a client of the cluster like any component: it presents the node
    // certificate and trusts the cluster CA on every connection joule-client makes.
    let client_tls = joule_client::tls::TlsArgs {
        tls_cert: Some(pki.cert.clone()),
        tls_key: Some(pki.key.clone()),
        tls_ca: Some(pki.ca.clone()),
        tls_server_name: None,
    }
    .load()
    .unwrap();
    assert!(client_tls.install_client());

    let mut env: Vec<(&str, String)> = pki.env();
    env.push(("JOULE_PLACEMENT_INTERVAL_MS", "200".into()));
    env.push(("JOULE_KV_RESERVE_BYTES", "67108864".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = Cluster::with_env(3, &env);
    // Elections and heartbeats cross between the replicas over mTLS.
    c.leader(Duration::from_secs(20), 0).await;

    let addr = c.addr(1).to_string();
    assert!(status(&addr, Some(pki.client())).await.unwrap() > 0);
    let plain = status(&addr, None).await;
    assert!(plain.is_err(), "plain TCP was answered: {plain:?}");
    let anonymous = ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(
        std::fs::read(&pki.ca).unwrap(),
    ));
    let anon = status(&addr, Some(anonymous.clone())).await;
    assert!(
        anon.is_err(),
        "a client with no certificate was answered: {anon:?}"
    );
    let foreign = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(&pki.ca).unwrap(),
        ))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(&rogue.cert).unwrap(),
            std::fs::read(&rogue.key).unwrap(),
        ));
    let f = status(&addr, Some(foreign.clone())).await;
    assert!(
        f.is_err(),
        "a certificate from another CA was answered: {f:?}"
    );

    // joulectl: with the CA and a client certificate it answers; without, it is refused.
    let joulectl = |tls: &[&str]| {
        Command::new(joule_testkit::bin("joulectl"))
            .args(["--server", &c.live_addrs(), "--token", TOKEN])
            .args(tls)
            .args(["get", "nodes", "-o", "json"])
            .env_remove("JOULE_SERVER")
            .env_remove("JOULE_TOKEN")
            .output()
            .unwrap()
    };
    let (ca, cert, key) = (
        pki.ca.display().to_string(),
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
    );
    let tls: [&str; 6] = [
        "--certificate-authority",
        &ca,
        "--client-certificate",
        &cert,
        "--client-key",
        &key,
    ];
    let ok = joulectl(&tls);
    assert!(
        ok.status.success(),
        "joulectl with TLS: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = joulectl(&[]);
    assert!(!refused.status.success(), "joulectl without TLS succeeded");
    let missing = joulectl(&["--certificate-authority", "/nonexistent/ca.pem"]);
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("--certificate-authority") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );

    // A context keeps the TLS files (as absolute paths) and a bare `joulectl` then uses them.
    let home = tempfile::tempdir().unwrap();
    let ctl = |args: &[&str]| {
        Command::new(joule_testkit::bin("joulectl"))
            .args(args)
            .env("JOULE_HOME", home.path())
            .env_remove("JOULE_SERVER")
            .env_remove("JOULE_TOKEN")
            .env_remove("JOULE_CONTEXT")
            .output()
            .unwrap()
    };
    let servers = c.live_addrs();
    // The token from standard input (`--token -`), kept off the command line.
    let mut set = Command::new(joule_testkit::bin("joulectl"))
        .args([
            "config",
            "set-context",
            "secure",
            "--server",
            &servers,
            "--token",
            "-",
        ])
        .args(tls)
        .env("JOULE_HOME", home.path())
        .env_remove("JOULE_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        writeln!(set.stdin.take().unwrap(), "{TOKEN}").unwrap();
    }
    let set = set.wait_with_output().unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let listed =
        String::from_utf8_lossy(&ctl(&["config", "get-contexts", "-o", "json"]).stdout).to_string();
    assert!(listed.contains(r#""tls": "mutual""#), "{listed}");
    let got = ctl(&["get", "nodes", "-o", "json"]);
    assert!(
        got.status.success(),
        "joulectl with the context's TLS: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    // A file that is not there: refused, naming the setting and the path; nothing written.
    let before = std::fs::read(home.path().join("config.yaml")).unwrap();
    let bad = ctl(&[
        "config",
        "set-context",
        "secure",
        "--client-key",
        "/nonexistent/key.pem",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("client-key of context \"secure\"") && err.contains("/nonexistent/key.pem"),
        "{err}"
    );
    // A client certificate with no CA to verify the servers: refused, nothing written.
    let half = ctl(&[
        "config",
        "set-context",
        "secure",
        "--no-tls",
        "--client-certificate",
        &cert,
        "--client-key",
        &key,
    ]);
    assert_eq!(
        half.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&half.stderr)
    );
    assert!(String::from_utf8_lossy(&half.stderr).contains("certificate-authority"));
    assert_eq!(
        std::fs::read(home.path().join("config.yaml")).unwrap(),
        before
    );
    // Forgotten, the context is plain again, and the cluster refuses it.
    let clear = ctl(&["config", "set-context", "secure", "--no-tls"]);
    assert!(
        clear.status.success(),
        "{}",
        String::from_utf8_lossy(&clear.stderr)
    );
    assert!(
        !ctl(&["get", "nodes"]).status.success(),
        "a plain context was answered"
    );

    // A worker registers over mTLS and serves its port with mTLS.
    let flags = pki.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut wargs = vec!["--threads", "1"];
    wargs.extend(&flags);
    let w = WorkerProc::join("w1", &c, &wargs);
    c.wait_nodes(1, Duration::from_secs(60)).await;
    // The worker's port: only clients with a certificate from the cluster's CA.
    assert!(health(&w.addr, Some(pki.client())).await.is_ok());
    let w_plain = health(&w.addr, None).await;
    assert!(
        w_plain.is_err(),
        "the worker answered plain TCP: {w_plain:?}"
    );
    let w_anon = health(&w.addr, Some(anonymous.clone())).await;
    assert!(
        w_anon.is_err(),
        "the worker answered a client with no certificate: {w_anon:?}"
    );
    let w_foreign = health(&w.addr, Some(foreign.clone())).await;
    assert!(
        w_foreign.is_err(),
        "the worker answered another CA's certificate: {w_foreign:?}"
    );

    c.apply(default_model_spec(MODEL), deployment_spec(MODEL, MODEL, 1))
        .await;
    let health_port = format!("127.0.0.1:{}", joule_testkit::free_port());
    let mut gargs = flags.clone();
    gargs.extend(["--health-listen", health_port.as_str()]);
    let g = GatewayProc::start("gw", &c, &gargs);
    // The gateway's view comes from a scheduler over mTLS.
    g.wait_ready(MODEL, 1, Duration::from_secs(120)).await;

    // A generation: client → gateway over TLS, gateway → worker over mTLS.
    let req = v1::GenerateRequest {
        model: MODEL.into(),
        prompt: Some(v1::generate_request::Prompt::Text("The sea is".into())),
        sampling: Some(v1::SamplingParams {
            temperature: Some(0.0),
            max_tokens: Some(6),
            ignore_eos: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let got = collect(g.client().generate(req).await.unwrap().into_inner()).await;
    assert_eq!(got.ids.len(), 6, "{:?}\n{}", got.error, g.log_tail());

    // The gateway's public gRPC port asks clients for no certificate (API keys authenticate
    // them): a client that only trusts the CA is served.
    assert_eq!(health(&g.grpc, Some(anonymous)).await, Ok(1));

    // HTTPS for OpenAI clients and Prometheus; no client certificate asked.
    let agent = https_agent(&pki);
    let mut r = agent
        .get(format!("https://{}/v1/models", g.http))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.body_mut().read_to_string().unwrap();
    assert!(body.contains(MODEL), "{body}");
    let r = agent
        .get(format!("https://{}/metrics", g.metrics))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let plain_http = joule_testkit::http::get(&g.http, "/v1/models");
    assert!(
        !matches!(plain_http, Ok((200, _))),
        "plain HTTP was served on the TLS port"
    );

    // The official openai client over HTTPS: streamed chat and a completion; refused without
    // the CA.
    let py = joule_testkit::python::python_with_openai();
    let (passed, out) = joule_testkit::python::run(
        &py,
        &joule_testkit::python::script("openai_tls.py"),
        vec![
            format!("https://{}/v1", g.http),
            pki.ca.display().to_string(),
            MODEL.into(),
        ],
    )
    .await;
    assert!(passed, "{out}\n{}", g.log_tail());

    // The plain health port answers what the gateway's own health service answers.
    let ch = Endpoint::from_shared(format!("http://{health_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut hc = tonic_health::pb::health_client::HealthClient::new(ch);
    for service in [MODEL, joule_client::tls::LIVENESS] {
        let r = hc
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, 1, "{service} SERVING");
    }
    drop(w);
}

#[test]
fn half_a_tls_setting_or_a_bad_file_is_refused_at_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "joule");
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (cert, key, ca) = (
        pki.cert.to_str().unwrap(),
        pki.key.to_str().unwrap(),
        pki.ca.to_str().unwrap(),
    );
    let base = [
        "--id",
        "1",
        "--peers",
        "1=127.0.0.1:1",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
    ];
    let run = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        joule_testkit::cluster::scheduler(&a)
    };
    // Serving TLS but dialling its peers in plain TCP (or the reverse) cannot work.
    let (code, err) = run(&["--tls-cert", cert, "--tls-key", key]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-cert, --tls-key and --tls-ca"), "{err}");
    let (code, err) = run(&["--tls-ca", ca]);
    assert_eq!(code, 2, "{err}");
    // A key that is not the certificate's, and a missing file.
    let other = Pki::new(dir.path(), "other");
    let (code, err) = run(&[
        "--tls-cert",
        cert,
        "--tls-key",
        other.key.to_str().unwrap(),
        "--tls-ca",
        ca,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--tls-key") && err.contains("does not go with --tls-cert"),
        "{err}"
    );
    let out = Command::new(joule_testkit::bin("joule-worker"))
        .args([
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-ca",
            "/nonexistent/ca.pem",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--tls-ca /nonexistent/ca.pem"), "{err}");
    assert!(!std::path::Path::new(data).exists(), "nothing was written");
}
