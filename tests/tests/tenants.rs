//! Tenancy end to end, with real processes on 127.0.0.1: three scheduler replicas, a worker on
//! the default model, and `joule-gateway`s started without `--no-auth`, set up with `joulectl`.
//!
//! - API keys: no key, a wrong one or a malformed one is a 401 `invalid_api_key`, a tenant
//!   not allowed the deployment a 403 `model_not_allowed` (the official `openai` client,
//!   `tests/python/tenants_openai.py`, and gRPC); a revoked key is refused by every gateway
//!   within a second; no key is ever in a log, the metrics or the cluster's files;
//! - limits: a burst over requestsPerMinute gets 429s with Retry-After and the x-ratelimit
//!   headers; streams count against tokensPerMinute; two gateways together admit at most the
//!   limit (the leader's buckets);
//! - fair share: tenants of weights 3 and 1 saturating a worker get tokens 3:1;
//! - usage: what the cluster committed equals what the clients received, and a gateway killed
//!   mid-run loses at most its last flush and counts nothing twice;
//! - a tenant deleted mid-request: the request finishes, then its key gets 401; bad input to
//!   `joulectl` is refused naming the field.
//!
//! The tests run one at a time (each starts a cluster; the machine may have two cores).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use joule_proto::v1;
use joule_testkit::cluster::{Cluster, ready_nodes};
use joule_testkit::gateway::{GatewayProc, default_model_spec, deployment_spec};
use joule_testkit::python::{self, python_with_openai};
use joule_testkit::tenants::{
    HttpResponse, TenantYaml, Usage, apply_tenant, apply_yaml, chat, chat_body, check_retry_after,
    committed, completion_body, create_key, delete_key, delete_tenant, files_containing,
    generate_request, grpc_generate, is_key_shape, joulectl, joulectl_ok, key_id, keyed,
    made_up_key, post_keyed, time_until_refused, usage_rows, wait_serving,
};
use joule_testkit::workers::WorkerProc;
use tokio::sync::Mutex;
use tonic::Code;

static SERIAL: Mutex<()> = Mutex::const_new(());

const MODEL: &str = "smollm2";

/// Three replicas and one worker (`--threads 1`, and `worker_flags`) serving one replica of the
/// default model as deployment `smollm2`, Ready.
async fn cluster(worker_flags: &[&str]) -> (Cluster, WorkerProc) {
    let c = Cluster::with_env(
        3,
        &[
            ("JOULE_PLACEMENT_INTERVAL_MS", "200"),
            ("JOULE_KV_RESERVE_BYTES", "67108864"),
        ],
    );
    c.leader(Duration::from_secs(15), 0).await;
    let mut flags = vec!["--threads", "1", "--drain-timeout-s", "1"];
    flags.extend_from_slice(worker_flags);
    let w = WorkerProc::join("w1", &c, &flags);
    c.wait_nodes(1, Duration::from_secs(30)).await;
    c.apply(default_model_spec(MODEL), deployment_spec(MODEL, MODEL, 1))
        .await;
    c.placements_until(MODEL, Duration::from_secs(90), "Ready", |ps| {
        ready_nodes(ps).len() == 1
    })
    .await;
    (c, w)
}

/// The ends of the gateways' logs, for a failing test's message.
fn logs(gws: &[&GatewayProc]) -> String {
    gws.iter()
        .map(|g| format!("--- {} log:\n{}\n", g.name, g.log_tail()))
        .collect()
}

fn script() -> std::path::PathBuf {
    python::script("tenants_openai.py")
}

/// `tenants_openai.py --base-url <g> --model smollm2 ARGS`, which must pass.
async fn run_script(py: &std::path::Path, g: &GatewayProc, args: &[&str]) {
    let mut all = vec![
        "--base-url".to_string(),
        format!("http://{}/v1", g.http),
        "--model".to_string(),
        MODEL.to_string(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let (ok, out) = python::run(py, &script(), all).await;
    println!("{out}");
    assert!(
        ok,
        "tenants_openai.py {} failed:\n{out}\n{}",
        args[0],
        logs(&[g])
    );
    assert!(out.contains("ok "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_checked_and_revocation_reaches_every_gateway_within_a_second() {
    let _one = SERIAL.lock().await;
    let py = python_with_openai();
    let (c, _w) = cluster(&[]).await;
    // A deployment that is never placed (its model fits no node): the only one "other" may use.
    let mut huge = default_model_spec("huge");
    huge.size_bytes = 1 << 50;
    c.apply(huge, deployment_spec("pending", "huge", 1)).await;
    apply_tenant(&c, &TenantYaml::new("acme").deployments(&[MODEL]));
    apply_tenant(&c, &TenantYaml::new("other").deployments(&["pending"]));
    let key = create_key(&c, "acme", &["--name", "ci", "--expires", "30d"]);
    let denied = create_key(&c, "other", &[]);
    assert_ne!(key, denied, "two keys are the same");
    let wrong = made_up_key();
    assert!(is_key_shape(&wrong));
    let g1 = GatewayProc::start_authed("gw1", &c, &[]);
    let g2 = GatewayProc::start_authed("gw2", &c, &[]);
    for g in [&g1, &g2] {
        wait_serving(g, &key, MODEL, Duration::from_secs(60));
        // /health needs no key.
        let (status, body) = joule_testkit::http::get(&g.http, "/health").expect("GET /health");
        assert_eq!(status, 200, "{}: /health without a key: {body}", g.name);
    }

    // The official client: no key, a wrong and a malformed one are 401; the key serves; a
    // tenant not allowed the deployment is 403.
    run_script(
        &py,
        &g1,
        &[
            "auth",
            "--key",
            key.as_str(),
            "--denied-key",
            denied.as_str(),
            "--wrong-key",
            wrong.as_str(),
        ],
    )
    .await;

    // The same over gRPC.
    for (what, k) in [
        ("no key", None),
        ("a wrong key", Some(wrong.as_str())),
        ("a malformed key", Some("hello")),
    ] {
        let e = grpc_generate(&g1, k, generate_request(MODEL, 2))
            .await
            .err()
            .unwrap_or_else(|| panic!("gRPC with {what} was served"));
        assert_eq!(e.code(), Code::Unauthenticated, "gRPC with {what}: {e}");
        if let Some(k) = k {
            assert!(
                !e.message().contains(k),
                "gRPC with {what}: the status echoes it: {e}"
            );
        }
    }
    let got = grpc_generate(&g1, Some(key.as_str()), generate_request(MODEL, 2))
        .await
        .unwrap_or_else(|e| panic!("gRPC with the key: {e}\n{}", logs(&[&g1])));
    assert_eq!(got.ids.len(), 2, "gRPC with the key");
    let e = grpc_generate(&g1, Some(denied.as_str()), generate_request(MODEL, 2))
        .await
        .expect_err("gRPC with a key of a tenant not allowed the deployment was served");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");

    // Listings show the key's id and label, never the key.
    let listing = joulectl_ok(&c, &["get", "apikeys", "--tenant", "acme", "-o", "json"]);
    assert!(
        listing.contains(key_id(&key)),
        "get apikeys does not list {}: {listing}",
        key_id(&key)
    );
    assert!(
        listing.contains("\"ci\""),
        "get apikeys lacks the label: {listing}"
    );
    assert!(!listing.contains(&key), "get apikeys shows the key itself");

    // Revoked: every gateway refuses it within a second.
    delete_key(&c, "acme", &key);
    let since = Instant::now();
    let refused = time_until_refused(&[&g1, &g2], &key, MODEL, since, Duration::from_secs(10));
    for (g, (t, last)) in [&g1, &g2].iter().zip(&refused) {
        let t = t.unwrap_or_else(|| {
            panic!(
                "{} still serves the revoked key 10 s after the delete (last: {last})\n{}",
                g.name,
                logs(&[*g])
            )
        });
        assert!(
            t <= Duration::from_secs(1),
            "{} refused the revoked key only {t:?} after the delete (last: {last})",
            g.name
        );
    }
    for g in [&g1, &g2] {
        let r = chat(&g.http, &key, MODEL, 1).expect("a request");
        assert_eq!(
            r.status,
            401,
            "{}: the revoked key: {}",
            g.name,
            r.summary()
        );
        assert_eq!(
            r.error_code().as_deref(),
            Some("invalid_api_key"),
            "{}",
            r.summary()
        );
        assert_eq!(
            r.error_type().as_deref(),
            Some("invalid_request_error"),
            "{}",
            r.summary()
        );
        assert!(!r.body.contains(&key), "the 401 echoes the key: {}", r.body);
        let e = grpc_generate(g, Some(key.as_str()), generate_request(MODEL, 1))
            .await
            .expect_err("gRPC with the revoked key was served");
        assert_eq!(e.code(), Code::Unauthenticated, "{}: {e}", g.name);
        // The other tenant's key is untouched.
        let r = chat(&g.http, &denied, MODEL, 1).expect("a request");
        assert_eq!(
            r.status,
            403,
            "{}: the other tenant's key: {}",
            g.name,
            r.summary()
        );
        assert_eq!(
            r.error_code().as_deref(),
            Some("model_not_allowed"),
            "{}",
            r.summary()
        );
    }

    // No key is in a gateway's metrics, or in any log or file of the cluster.
    for g in [&g1, &g2] {
        let m = g.scrape();
        assert!(!m.is_empty(), "{} serves no metrics", g.name);
        for k in [&key, &denied, &wrong] {
            assert!(!m.contains(k.as_str()), "{}'s metrics hold a key", g.name);
        }
    }
    for k in [&key, &denied, &wrong] {
        let hits = files_containing(c.tmp.path(), k);
        assert!(
            hits.is_empty(),
            "a key ({}…) is written in {hits:?}",
            key_id(k)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_above_the_rpm_limit_gets_429_with_retry_after_and_headers_and_streams_count_against_tpm()
 {
    let _one = SERIAL.lock().await;
    let py = python_with_openai();
    let (c, _w) = cluster(&[]).await;
    apply_tenant(&c, &TenantYaml::new("warm"));
    apply_tenant(&c, &TenantYaml::new("burst").rpm(5));
    apply_tenant(&c, &TenantYaml::new("meter").tpm(300));
    let warm = create_key(&c, "warm", &[]);
    let burst = create_key(&c, "burst", &[]);
    let meter = create_key(&c, "meter", &[]);
    let g = GatewayProc::start_authed("gw1", &c, &[]);
    // Served at all (with a key without limits: the limited ones' budgets stay whole).
    wait_serving(&g, &warm, MODEL, Duration::from_secs(60));

    // 8 quick requests at 5 a minute; streamed ones until tokensPerMinute 300 is spent.
    run_script(
        &py,
        &g,
        &[
            "rpm",
            "--key",
            burst.as_str(),
            "--limit",
            "5",
            "--requests",
            "8",
        ],
    )
    .await;
    run_script(
        &py,
        &g,
        &[
            "tpm",
            "--key",
            meter.as_str(),
            "--limit",
            "300",
            "--max-tokens",
            "64",
        ],
    )
    .await;

    // Over gRPC, the spent budgets are RESOURCE_EXHAUSTED.
    for (who, key, max_tokens) in [("burst", &burst, 1), ("meter", &meter, 100)] {
        let mut codes = Vec::new();
        for _ in 0..3 {
            codes.push(
                match grpc_generate(&g, Some(key.as_str()), generate_request(MODEL, max_tokens))
                    .await
                {
                    Ok(_) => Code::Ok,
                    Err(e) => e.code(),
                },
            );
        }
        assert!(
            codes.contains(&Code::ResourceExhausted)
                && codes
                    .iter()
                    .all(|c| matches!(c, Code::Ok | Code::ResourceExhausted)),
            "gRPC for {who} after its budget was spent: {codes:?}\n{}",
            logs(&[&g])
        );
    }
    // A tenant without limits is not held back by the others'.
    let r = chat(&g.http, &warm, MODEL, 1).expect("a request");
    assert_eq!(r.status, 200, "the unlimited tenant: {}", r.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_admit_at_most_the_rpm_limit() {
    let _one = SERIAL.lock().await;
    let (c, _w) = cluster(&[]).await;
    apply_tenant(&c, &TenantYaml::new("warm"));
    apply_tenant(&c, &TenantYaml::new("shared").rpm(60));
    let warm = create_key(&c, "warm", &[]);
    let key = create_key(&c, "shared", &[]);
    let g1 = GatewayProc::start_authed("gw1", &c, &[]);
    let g2 = GatewayProc::start_authed("gw2", &c, &[]);
    for g in [&g1, &g2] {
        wait_serving(g, &warm, MODEL, Duration::from_secs(60));
    }
    // The key reaches both gateways; these two requests count against the limit too, and the
    // refill is counted from the first.
    let (first, _) = wait_serving(&g1, &key, MODEL, Duration::from_secs(30));
    wait_serving(&g2, &key, MODEL, Duration::from_secs(30));
    let warmups = 2u64;

    const N: usize = 200;
    let barrier = Arc::new(Barrier::new(N));
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let addr = if i % 2 == 0 {
                g1.http.clone()
            } else {
                g2.http.clone()
            };
            let (key, barrier) = (key.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (i % 2, chat(&addr, &key, MODEL, 1))
            })
        })
        .collect();
    let results: Vec<(usize, std::io::Result<HttpResponse>)> = handles
        .into_iter()
        .map(|h| h.join().expect("a request thread"))
        .collect();
    let elapsed = first.elapsed();

    let mut admitted = [0u64; 2];
    let mut refused = 0u64;
    let mut problems = Vec::new();
    for (gi, r) in &results {
        match r {
            Ok(r) if r.status == 200 => {
                admitted[*gi] += 1;
                if r.header("x-ratelimit-limit-requests") != Some("60")
                    || r.header("x-ratelimit-remaining-requests").is_none()
                    || r.header("x-ratelimit-reset-requests").is_none()
                {
                    problems.push(format!(
                        "gw{}: a 200 without the x-ratelimit headers: {}",
                        gi + 1,
                        r.summary()
                    ));
                }
            }
            Ok(r) if r.status == 429 => {
                refused += 1;
                if r.error_code().as_deref() != Some("rate_limit_exceeded")
                    || r.error_type().as_deref() != Some("requests")
                {
                    problems.push(format!("gw{}: {}", gi + 1, r.summary()));
                } else if let Err(e) = check_retry_after(r) {
                    problems.push(format!("gw{}: {e}", gi + 1));
                }
            }
            Ok(r) => problems.push(format!("gw{}: {}", gi + 1, r.summary())),
            Err(e) => problems.push(format!("gw{}: {e}", gi + 1)),
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {N} responses are neither a 200 nor a 429 rate_limit_exceeded (type requests) \
         with Retry-After:\n{}\n{}",
        problems.len(),
        problems[..problems.len().min(10)].join("\n"),
        logs(&[&g1, &g2])
    );
    let burst = admitted[0] + admitted[1];
    let bound = 60 + elapsed.as_secs_f64().ceil() as u64 + 2;
    assert!(
        burst + warmups <= bound,
        "the two gateways admitted {burst} of {N} (gw1 {}, gw2 {}) plus {warmups} before, over \
         {elapsed:?}: more than 60 + the refill + 2 = {bound}",
        admitted[0],
        admitted[1]
    );
    assert!(
        burst >= 30,
        "only {burst} of {N} admitted (gw1 {}, gw2 {}) with 58 of 60 left: the limit starves \
         the tenant",
        admitted[0],
        admitted[1]
    );
    assert_eq!(burst + refused, N as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_3_and_1_share_a_saturated_worker_3_to_1() {
    let _one = SERIAL.lock().await;
    // Eight sequences at most run at once, six of them heavy's and two light's at 3:1. Each
    // tenant keeps more streams going than its share, so both stay backlogged, but not so
    // many that light's queue outlasts the gateway's first-token timeout on a slow machine.
    // The share is counted in admissions of whole requests (each is charged at admission),
    // so requests are short (6 to 14 tokens after a one-word prompt): many admissions per
    // second of a CPU worker, and one admission more or less at the window's ends moves the
    // ratio by little. Both tenants send the same mix of lengths (the prompt is charged too,
    // so shorter requests would lower a tenant's share of completion tokens), and the
    // lengths differ so that requests finish one by one, not in lockstep waves of eight
    // (with waves, a window holds few admission rounds and one 8:0 round skews it).
    const SLOTS: u32 = 8;
    const STREAMS: [usize; 2] = [10, 5];
    // The window ends once it holds this many completion tokens (and lasts at least 12 s), so
    // a slow machine counts as many admissions as a fast one.
    const WINDOW_TOKENS: usize = 960;
    let (c, w) = cluster(&["--max-seqs", "8"]).await;
    apply_tenant(&c, &TenantYaml::new("heavy").weight(3.0));
    apply_tenant(&c, &TenantYaml::new("light").weight(1.0));
    let heavy = create_key(&c, "heavy", &[]);
    let light = create_key(&c, "light", &[]);
    let g = GatewayProc::start_authed("gw1", &c, &[]);
    wait_serving(&g, &heavy, MODEL, Duration::from_secs(60));
    wait_serving(&g, &light, MODEL, Duration::from_secs(30));

    let t0 = Instant::now();
    // (tenant, when, tokens) of every event received.
    let events: Arc<std::sync::Mutex<Vec<(usize, Duration, usize)>>> = Arc::default();
    let errors: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for (ti, key) in [heavy.clone(), light.clone()].into_iter().enumerate() {
        for j in 0..STREAMS[ti] {
            let (mut gw, key) = (g.client(), key.clone());
            let (events, errors) = (events.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    let mut req = generate_request(MODEL, 6 + 2 * (j % 5) as u32);
                    req.prompt = Some(v1::generate_request::Prompt::Text("Hello".into()));
                    req.request_id = format!("fair-{ti}-{j}-{n}");
                    match gw.generate(keyed(req, &key)).await {
                        Ok(s) => {
                            let mut s = s.into_inner();
                            loop {
                                match s.message().await {
                                    Ok(Some(ev)) if !ev.token_ids.is_empty() => {
                                        let at = t0.elapsed();
                                        events.lock().unwrap().push((ti, at, ev.token_ids.len()));
                                    }
                                    Ok(Some(_)) => {}
                                    Ok(None) => break,
                                    Err(e) => {
                                        errors.lock().unwrap().push(format!("tenant {ti}: {e}"));
                                        break;
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            errors.lock().unwrap().push(format!("tenant {ti}: {e}"));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }));
        }
    }
    // Let the queues fill and the shares settle, then count a window in the middle.
    let from = Duration::from_secs(6);
    let (least, most) = (
        from + Duration::from_secs(12),
        from + Duration::from_secs(90),
    );
    let counted = |to: Duration| -> usize {
        let ev = events.lock().unwrap();
        ev.iter()
            .filter(|(_, at, _)| *at >= from && *at < to)
            .map(|e| e.2)
            .sum()
    };
    tokio::time::sleep_until((t0 + from).into()).await;
    let mut busy = Vec::new();
    let to = loop {
        busy.push(w.busy().await);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = t0.elapsed();
        if now >= most || (now >= least && counted(now) >= WINDOW_TOKENS) {
            break now;
        }
    };
    for t in &tasks {
        t.abort();
    }
    let mut tokens = [0usize; 2];
    for (ti, at, n) in events.lock().unwrap().iter() {
        if *at >= from && *at < to {
            tokens[*ti] += n;
        }
    }
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} streams failed, e.g. {:?}\n{}",
        errors.len(),
        &errors[..errors.len().min(5)],
        logs(&[&g])
    );
    assert!(
        busy.iter().all(|&b| b > SLOTS),
        "the worker was not saturated through the window (running + waiting: {busy:?}); \
         {}",
        w.log_tail()
    );
    let secs = (to - from).as_secs_f64();
    let ratio = tokens[0] as f64 / tokens[1].max(1) as f64;
    eprintln!(
        "fair share: weights 3 and 1 got {} and {} completion tokens in {secs:.1} s: ratio {ratio:.2}",
        tokens[0], tokens[1]
    );
    assert!(
        tokens[1] > 0 && (2.7..=3.3).contains(&ratio),
        "weights 3 and 1 got {} and {} tokens in {secs:.1} s ({:.1} and {:.1} tokens/s): ratio \
         {ratio:.2}, want 3 ± 10% (running + waiting: {busy:?})\n{}",
        tokens[0],
        tokens[1],
        tokens[0] as f64 / secs,
        tokens[1] as f64 / secs,
        logs(&[&g])
    );
}

/// Polls the committed usage until it covers `want` (every tenant there has at least those
/// requests and tokens) and then holds still for 1.2 s, for up to `within`: what it is then,
/// and how long until it covered `want` (None: never).
async fn settle(
    c: &Cluster,
    want: &BTreeMap<String, Usage>,
    within: Duration,
) -> (BTreeMap<String, Usage>, Option<Duration>) {
    let start = Instant::now();
    let covers = |got: &BTreeMap<String, Usage>| {
        want.iter().all(|(t, w)| {
            got.get(t).is_some_and(|g| {
                g.requests >= w.requests
                    && g.prompt_tokens >= w.prompt_tokens
                    && g.completion_tokens >= w.completion_tokens
            })
        })
    };
    let mut covered = None;
    loop {
        let now = committed(c);
        if covered.is_none() && covers(&now) {
            covered = Some(start.elapsed());
        }
        if covered.is_some() {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            let later = committed(c);
            if later == now || start.elapsed() > within {
                return (later, covered);
            }
            continue;
        }
        if start.elapsed() > within {
            return (now, None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn plus(a: &BTreeMap<String, Usage>, b: &BTreeMap<String, Usage>) -> BTreeMap<String, Usage> {
    let mut out = a.clone();
    for (t, u) in b {
        out.entry(t.clone()).or_default().add(u);
    }
    out
}

fn delta(now: &BTreeMap<String, Usage>, base: &BTreeMap<String, Usage>, t: &str) -> Usage {
    now.get(t)
        .copied()
        .unwrap_or_default()
        .minus(&base.get(t).copied().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_committed_equals_what_clients_received_and_a_killed_gateway_double_counts_nothing() {
    let _one = SERIAL.lock().await;
    let (c, _w) = cluster(&[]).await;
    apply_tenant(&c, &TenantYaml::new("alpha"));
    apply_tenant(&c, &TenantYaml::new("beta"));
    let keys = [
        ("alpha".to_string(), create_key(&c, "alpha", &[])),
        ("beta".to_string(), create_key(&c, "beta", &[])),
    ];
    let g1 = GatewayProc::start_authed("gw1", &c, &["--usage-flush-ms", "1000"]);
    let mut g2 = GatewayProc::start_authed("gw2", &c, &["--usage-flush-ms", "1000"]);
    let mut warm = BTreeMap::new();
    for g in [&g1, &g2] {
        for (t, k) in &keys {
            let (_, r) = wait_serving(g, k, MODEL, Duration::from_secs(60));
            let u = r
                .usage()
                .unwrap_or_else(|| panic!("no usage: {}", r.summary()));
            warm.entry(t.clone()).or_insert_with(Usage::default).add(&u);
        }
    }
    // What the warm-ups left on record, once it holds still.
    let (base, covered) = settle(&c, &warm, Duration::from_secs(10)).await;
    assert!(
        covered.is_some(),
        "the warm-ups' usage {warm:?} was never committed: {base:?}\n{}",
        logs(&[&g1, &g2])
    );

    // Phase 1: each tenant, through each gateway, a chat, a streamed chat, a completion and a
    // streamed completion (some prompts repeat: cached prompt tokens).
    let prompts = [
        "Name three colors.",
        "Write a haiku about the sea.",
        "Name three colors.",
    ];
    let mut received: BTreeMap<String, Usage> = BTreeMap::new();
    let mut n = 0usize;
    for (t, k) in &keys {
        for g in [&g1, &g2] {
            for kind in 0..4 {
                n += 1;
                let max_tokens = 3 + (n % 5) as u32;
                let prompt = prompts[n % prompts.len()];
                let (path, body) = match kind {
                    0 => (
                        "/v1/chat/completions",
                        chat_body(MODEL, prompt, max_tokens, false),
                    ),
                    1 => (
                        "/v1/chat/completions",
                        chat_body(MODEL, prompt, max_tokens, true),
                    ),
                    2 => (
                        "/v1/completions",
                        completion_body(MODEL, prompt, max_tokens, false),
                    ),
                    _ => (
                        "/v1/completions",
                        completion_body(MODEL, prompt, max_tokens, true),
                    ),
                };
                let r = post_keyed(&g.http, path, &body, Some(k.as_str())).expect("a request");
                assert_eq!(r.status, 200, "{t} via {} {path}: {}", g.name, r.summary());
                let u = r
                    .usage()
                    .unwrap_or_else(|| panic!("{t} via {} {path}: no usage: {}", g.name, r.body));
                assert_eq!(u.completion_tokens, u64::from(max_tokens), "{}", r.body);
                received.entry(t.clone()).or_default().add(&u);
            }
        }
    }
    let (now, covered) = settle(&c, &plus(&base, &received), Duration::from_secs(10)).await;
    for (t, _) in &keys {
        let (got, want) = (delta(&now, &base, t), received[t]);
        assert_eq!(
            (
                got.requests,
                got.prompt_tokens,
                got.cached_prompt_tokens,
                got.completion_tokens
            ),
            (
                want.requests,
                want.prompt_tokens,
                want.cached_prompt_tokens,
                want.completion_tokens
            ),
            "{t}: committed (requests, prompt, cached, completion) differ from what the clients \
             received\ncommitted {got:?}\nreceived {want:?}\n{}",
            logs(&[&g1, &g2])
        );
        assert!(
            (got.joules - want.joules).abs() <= 0.01 * want.joules + 1e-3,
            "{t}: committed {} J, the clients received {} J (want within 1%)",
            got.joules,
            want.joules
        );
    }
    let covered = covered.expect("covered, as the equality above shows");
    assert!(
        covered <= Duration::from_secs(3),
        "the usage was committed {covered:?} after the last response (flush every 1 s)"
    );
    for (t, _) in &keys {
        let rows = usage_rows(&c, Some(t));
        assert!(
            !rows.is_empty() && rows.iter().all(|r| r.tenant == *t && r.model == MODEL),
            "get usage --tenant {t}: want rows of {t} and model {MODEL}: {rows:?}"
        );
    }

    // Phase 2: load on both gateways; gateway 2 is killed -9 mid-run.
    let stop = Arc::new(AtomicBool::new(false));
    // Set just before gw2's kill: from then on its requests may fail.
    let dead = Arc::new(AtomicBool::new(false));
    // (gateway, tenant, when received, usage) of every whole response.
    type Got = (usize, String, Instant, Usage);
    let mut threads = Vec::new();
    for (gi, addr) in [(0usize, g1.http.clone()), (1, g2.http.clone())] {
        for (t, k) in &keys {
            let (addr, t, k) = (addr.clone(), t.clone(), k.clone());
            let (stop, dead) = (stop.clone(), dead.clone());
            threads.push(std::thread::spawn(move || {
                let (mut got, mut failed): (Vec<Got>, Vec<String>) = (Vec::new(), Vec::new());
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body =
                        chat_body(MODEL, "Name three colors.", 4 + i % 4, i.is_multiple_of(2));
                    let r = post_keyed(&addr, "/v1/chat/completions", &body, Some(k.as_str()));
                    // A request to gw2 that its kill cut short: the client got no usage.
                    let cut = gi == 1 && dead.load(Ordering::Relaxed);
                    match r {
                        Ok(r) if r.status == 200 => match r.usage() {
                            Some(u) => got.push((gi, t.clone(), Instant::now(), u)),
                            None if cut => {}
                            None => failed.push(format!("gw{}: no usage: {}", gi + 1, r.summary())),
                        },
                        _ if cut => std::thread::sleep(Duration::from_millis(50)),
                        Ok(r) => failed.push(format!("gw{}: {}", gi + 1, r.summary())),
                        Err(e) => failed.push(format!("gw{}: {e}", gi + 1)),
                    }
                }
                (got, failed)
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    dead.store(true, Ordering::Relaxed);
    g2.kill9();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut got = Vec::new();
    for t in threads {
        let (g, failed) = t.join().expect("a load thread");
        assert!(
            failed.is_empty(),
            "requests failed (other than gw2's after its kill): {:?}\n{}",
            &failed[..failed.len().min(5)],
            logs(&[&g1, &g2])
        );
        got.extend(g);
    }
    let before_kill = got.iter().filter(|x| x.0 == 1).count();
    let after_kill_gw1 = got.iter().filter(|x| x.0 == 0 && x.2 > killed).count();
    assert!(
        before_kill > 0 && after_kill_gw1 > 0,
        "gw2 answered {before_kill} before its kill, gw1 {after_kill_gw1} after it: no real run"
    );
    let (mut received, mut lost): (BTreeMap<String, Usage>, BTreeMap<String, Usage>) =
        Default::default();
    for (gi, t, at, u) in &got {
        received.entry(t.clone()).or_default().add(u);
        if *gi == 1 && *at + Duration::from_secs(2) >= killed {
            lost.entry(t.clone()).or_default().add(u);
        }
    }
    let floor: BTreeMap<String, Usage> = received
        .iter()
        .map(|(t, u)| {
            (
                t.clone(),
                u.minus(&lost.get(t).copied().unwrap_or_default()),
            )
        })
        .collect();
    let (after, _) = settle(&c, &plus(&now, &floor), Duration::from_secs(10)).await;
    for (t, _) in &keys {
        let got = delta(&after, &now, t);
        let (want, low) = (received[t], floor[t]);
        let ok = got.requests <= want.requests
            && got.prompt_tokens <= want.prompt_tokens
            && got.completion_tokens <= want.completion_tokens
            && got.requests >= low.requests
            && got.prompt_tokens >= low.prompt_tokens
            && got.completion_tokens >= low.completion_tokens
            && got.joules <= want.joules * 1.01 + 1e-3
            && got.joules >= low.joules * 0.99 - 1e-3;
        assert!(
            ok,
            "{t}: after gw2's kill -9 the committed usage must lie between what the clients \
             received less gw2's last 2 s, and what they received\ncommitted {got:?}\nat most \
             {want:?}\nat least {low:?}\n{}",
            logs(&[&g1, &g2])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_deleted_mid_request_finishes_it_and_then_gets_401() {
    let _one = SERIAL.lock().await;
    let (c, w) = cluster(&[]).await;
    apply_tenant(&c, &TenantYaml::new("doomed"));
    let key = create_key(&c, "doomed", &[]);
    let g = GatewayProc::start_authed("gw1", &c, &[]);
    wait_serving(&g, &key, MODEL, Duration::from_secs(60));

    const LONG: u32 = 300;
    let stream = std::thread::spawn({
        let (addr, key) = (g.http.clone(), key.clone());
        move || {
            let body = chat_body(
                MODEL,
                "Tell me a long story about a lighthouse.",
                LONG,
                true,
            );
            let r = post_keyed(&addr, "/v1/chat/completions", &body, Some(key.as_str()));
            (r, Instant::now())
        }
    });
    let end = Instant::now() + Duration::from_secs(10);
    while w.busy().await == 0 {
        assert!(
            Instant::now() < end,
            "the long stream never started\n{}",
            logs(&[&g])
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    delete_tenant(&c, "doomed");
    let deleted = Instant::now();
    let refused = time_until_refused(&[&g], &key, MODEL, deleted, Duration::from_secs(10));
    let (t, last) = &refused[0];
    let t = t.unwrap_or_else(|| {
        panic!(
            "the deleted tenant's key is still served after 10 s (last: {last})\n{}",
            logs(&[&g])
        )
    });
    assert!(
        t <= Duration::from_secs(1),
        "the deleted tenant's key was refused only {t:?} after the delete"
    );
    let e = grpc_generate(&g, Some(key.as_str()), generate_request(MODEL, 1))
        .await
        .expect_err("gRPC with the deleted tenant's key was served");
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");

    let (r, finished) = stream.join().expect("the stream's thread");
    let r = r.expect("the long stream's response");
    assert!(
        finished > deleted,
        "the stream ended before the tenant was deleted: the test needs a longer one"
    );
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(
        r.finish_reason().as_deref(),
        Some("length"),
        "the running stream did not finish normally: {}",
        r.summary()
    );
    let u = r
        .usage()
        .unwrap_or_else(|| panic!("no usage chunk: {}", r.summary()));
    assert_eq!(u.completion_tokens, u64::from(LONG));
    assert!(r.body.contains("[DONE]"), "{}", r.summary());

    // Its usage stays on record.
    let end = Instant::now() + Duration::from_secs(6);
    loop {
        let done = committed(&c)
            .get("doomed")
            .map_or(0, |u| u.completion_tokens);
        if done >= u64::from(LONG) {
            break;
        }
        assert!(
            Instant::now() < end,
            "the deleted tenant's usage is not on record: {done} completion tokens, want >= {LONG}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `GetTenant` through the admin API.
async fn get_tenant(c: &Cluster, name: &str) -> Result<v1::TenantInfo, tonic::Status> {
    let name = name.to_string();
    c.admin(Duration::from_secs(5), |mut a| {
        let name = name.clone();
        async move { a.get_tenant(v1::GetTenantRequest { name }).await }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tenant_input_is_refused_naming_what_is_wrong() {
    let _one = SERIAL.lock().await;
    let c = Cluster::with_env(3, &[]);
    c.leader(Duration::from_secs(15), 0).await;
    c.apply(default_model_spec(MODEL), deployment_spec(MODEL, MODEL, 1))
        .await;

    // A whole tenant document applies and reads back as written.
    let full = "apiVersion: joule/v1\nkind: Tenant\nmetadata: {name: acme}\nspec:\n  weight: 3\n  \
                deployments: [smollm2]\n  limits: {requestsPerMinute: 60, tokensPerMinute: \
                100000, maxConcurrent: 16}\n  quota: {tokensPerMonth: 10000000, joulesPerMonth: \
                3600000}\n";
    let (code, out, err) = apply_yaml(&c, "acme", full);
    assert_eq!(code, 0, "apply of\n{full}\nstdout: {out}\nstderr: {err}");
    let spec = get_tenant(&c, "acme")
        .await
        .expect("get tenant acme")
        .spec
        .expect("a spec");
    assert_eq!(
        (
            spec.weight,
            spec.deployments.clone(),
            spec.requests_per_minute,
            spec.tokens_per_minute,
            spec.max_concurrent,
            spec.tokens_per_month,
            spec.joules_per_month
        ),
        (
            3.0,
            vec![MODEL.to_string()],
            60,
            100_000,
            16,
            10_000_000,
            3_600_000.0
        ),
        "{spec:?}"
    );

    // Negative and absurd values are refused naming the field; nothing is created.
    for (t, field) in [
        (TenantYaml::new("neg").rpm(-5), "requestsPerMinute"),
        (TenantYaml::new("negtpm").tpm(-1), "tokensPerMinute"),
        (
            TenantYaml::new("big").max_concurrent(1 << 40),
            "maxConcurrent",
        ),
        (TenantYaml::new("heavy").weight(1e6), "weight"),
    ] {
        let yaml = t.to_yaml();
        let (code, out, err) = apply_yaml(&c, &t.name, &yaml);
        assert_ne!(code, 0, "apply of\n{yaml}\nsucceeded: {out}");
        assert!(
            err.contains(field),
            "apply of\n{yaml}\nfailed without naming {field}: {err}"
        );
        let got = get_tenant(&c, &t.name).await;
        assert!(
            got.is_err(),
            "the refused tenant {} exists: {got:?}",
            t.name
        );
    }

    // A key for a tenant that does not exist.
    let (code, out, err) = joulectl(&c, &["create", "apikey", "--tenant", "nosuch"]);
    assert_ne!(code, 0, "create apikey --tenant nosuch succeeded: {out}");
    assert!(
        err.contains("nosuch"),
        "create apikey --tenant nosuch: {err}"
    );
    assert!(
        !out.contains("jk-"),
        "a key was printed for no tenant: {out}"
    );

    // A month that does not exist.
    let bill = [
        "bill",
        "--tenant",
        "acme",
        "--month",
        "2026-13",
        "--price-per-mtok",
        "1",
        "--price-per-kwh",
        "0.3",
    ];
    let (code, out, err) = joulectl(&c, &bill);
    assert_ne!(code, 0, "{bill:?} succeeded: {out}");
    assert!(
        err.contains("--month"),
        "{bill:?} failed without naming --month: {err}"
    );

    // Keys of a real tenant are distinct, listed by id and never shown again.
    let a = create_key(&c, "acme", &["--name", "one"]);
    let b = create_key(&c, "acme", &["--name", "two", "--expires", "30d"]);
    assert_ne!(a, b);
    let listing = joulectl_ok(&c, &["get", "apikeys", "--tenant", "acme", "-o", "json"]);
    for k in [&a, &b] {
        assert!(
            listing.contains(key_id(k)),
            "{} not listed: {listing}",
            key_id(k)
        );
        assert!(
            !listing.contains(k.as_str()),
            "get apikeys shows a key: {listing}"
        );
    }
}
