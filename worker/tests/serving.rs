//! A real `joule-worker` on 127.0.0.1 with the default model: streaming, chat, two models,
//! cancellation, drain on SIGTERM, 32 concurrent streams with their joules, metrics, health.

mod common;

use std::time::{Duration, Instant};

use common::*;
use joule_proto::internal::v1 as pb;
use joule_proto::v1;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_generate_and_chat_with_joules_in_the_usage() {
    let model = default_model();
    let w = spawn(&["--model", model.to_str().unwrap()]);
    let mut c = w.ready().await;
    let name = "SmolLM2-135M-Instruct.Q4_1";

    let out = generate(&mut c, text_request(name, "The capital of France is", 12))
        .await
        .unwrap();
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.tokens, 12);
    assert!(out.events >= 2, "streamed in {} events", out.events);
    let f = out.finish.expect("finish");
    assert_eq!(f.reason, v1::FinishReason::Length as i32);
    let u = f.usage.expect("usage");
    assert_eq!(u.completion_tokens, 12);
    assert!(u.prompt_tokens >= 5);
    assert!(u.joules > 0.0, "joules {}", u.joules);
    assert_eq!(u.energy_source, v1::EnergySource::Estimated as i32);

    // The model name may be left out when the worker serves one model.
    let chat = v1::ChatRequest {
        model: String::new(),
        messages: vec![v1::ChatMessage {
            role: "user".into(),
            content: "What is the capital of France?".into(),
        }],
        sampling: Some(v1::SamplingParams {
            temperature: Some(0.0),
            max_tokens: Some(16),
            ..Default::default()
        }),
        ..Default::default()
    };
    let out = collect(c.chat(chat.clone()).await.unwrap().into_inner()).await;
    assert!(out.text.contains("Paris"), "{:?}", out.text);
    // Tokenize with messages gives the prompt the chat stream started from (a gateway resumes
    // a moved chat stream from it).
    let chat_ids = c
        .tokenize(pb::TokenizeRequest {
            model: name.into(),
            messages: chat.messages.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ids;
    let used = out
        .finish
        .as_ref()
        .and_then(|f| f.usage.as_ref())
        .map(|u| u.prompt_tokens);
    assert_eq!(Some(chat_ids.len() as u32), used);

    let ids = c
        .tokenize(pb::TokenizeRequest {
            model: name.into(),
            text: "Hello world".into(),
            add_special: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ids;
    assert!(!ids.is_empty());
    let by_ids = v1::GenerateRequest {
        model: name.into(),
        prompt: Some(v1::generate_request::Prompt::TokenIds(v1::TokenIds { ids })),
        sampling: greedy(3),
        ..Default::default()
    };
    assert_eq!(generate(&mut c, by_ids).await.unwrap().tokens, 3);

    let models = c
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].name, name);
    assert_eq!(models[0].architecture, "llama");
    assert_eq!(
        models[0].sha256,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    assert!(models[0].parameters > 100_000_000);

    // Standard health, per model too.
    let ch = tonic::transport::Channel::from_shared(w.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    let st = |s: &str| tonic_health::pb::HealthCheckRequest {
        service: s.to_string(),
    };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(
        h.check(st(name)).await.unwrap().into_inner().status,
        serving
    );
    assert_eq!(
        h.check(st("joule.internal.v1.Worker"))
            .await
            .unwrap()
            .into_inner()
            .status,
        serving
    );
    assert_eq!(
        h.check(st("nope")).await.unwrap_err().code(),
        Code::NotFound
    );

    // Server reflection lists the services, so grpcurl needs no .proto files.
    joule_testkit::reflection::assert_serves(
        &w.grpc,
        &["joule.internal.v1.Worker", "grpc.health.v1.Health"],
        "joule.v1.GenerateRequest",
    )
    .await;

    // Metrics, labelled by model.
    let m = w.metrics_text();
    for needle in [
        &format!("joule_requests_total{{model=\"{name}\",status=\"ok\"}} 3"),
        "joule_time_to_first_token_seconds_bucket{",
        "joule_inter_token_latency_seconds_count{",
        &format!("joule_kv_blocks{{model=\"{name}\",state=\"free\"}}"),
        "joule_power_watts{sensor=\"estimate\",source=\"estimated\"}",
        "joule_energy_joules_total{source=\"estimated\"}",
        &format!("joule_tokens_per_joule{{model=\"{name}\"}}"),
        &format!("joule_queue_depth{{model=\"{name}\"}} 0"),
    ] {
        assert!(m.contains(needle), "{needle} missing from:\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_status_naming_the_problem() {
    let model = default_model();
    let w = spawn(&["--model", &format!("small={}", model.display())]);
    let mut c = w.ready().await;

    let e = generate(&mut c, text_request("big", "hi", 4))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("small"), "{}", e.message());

    let mut r = text_request("small", "hi", 4);
    r.sampling.as_mut().unwrap().temperature = Some(-1.0);
    let e = generate(&mut c, r).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("temperature"), "{}", e.message());

    let mut r = text_request("small", "hi", 4);
    r.prompt = None;
    let e = generate(&mut c, r).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("prompt"), "{}", e.message());

    let e = generate(&mut c, text_request("small", "hi", 100_000))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("max_tokens"), "{}", e.message());

    let r = v1::GenerateRequest {
        model: "small".into(),
        prompt: Some(v1::generate_request::Prompt::TokenIds(v1::TokenIds {
            ids: vec![1, 999_999],
        })),
        ..Default::default()
    };
    let e = generate(&mut c, r).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("999999"), "{}", e.message());

    let e = c
        .chat(v1::ChatRequest {
            model: "small".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("messages"), "{}", e.message());

    // Loads that fail leave the worker serving "small".
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a model at all").unwrap();
    let load = |name: &str, path: &std::path::Path, sha: &str| pb::LoadModelRequest {
        name: name.into(),
        path: path.display().to_string(),
        sha256: sha.into(),
    };
    let e = c.load_model(load("junk", &junk, "")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("junk.gguf"), "{}", e.message());
    let e = c
        .load_model(load("bad", &model, &"0".repeat(64)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("sha256"), "{}", e.message());
    let e = c
        .load_model(load("gone", &dir.path().join("missing.gguf"), ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c.load_model(load("small", &model, "")).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = c
        .load_model(load("bad name", &model, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let models = c
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(models.len(), 1);
    assert_eq!(
        generate(&mut c, text_request("small", "hi", 2))
            .await
            .unwrap()
            .tokens,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_with_resource_exhausted() {
    let model = default_model();
    let w = spawn(&[
        "--model",
        model.to_str().unwrap(),
        "--max-seqs",
        "1",
        "--max-queued",
        "1",
    ]);
    let mut c = w.ready().await;
    let name = "SmolLM2-135M-Instruct.Q4_1";
    let a = c.generate(text_request(name, "one", 400)).await.unwrap();
    let b = c.generate(text_request(name, "two", 400)).await.unwrap();
    let e = c
        .generate(text_request(name, "three", 4))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("limit 2"), "{}", e.message());
    drop((a, b));
    // Places free up once the cancelled streams end.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match generate(&mut c, text_request(name, "four", 2)).await {
            Ok(out) => {
                assert_eq!(out.tokens, 2);
                break;
            }
            Err(e) if e.code() == Code::ResourceExhausted && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_serve_at_once_and_unload_frees_one() {
    let model = default_model();
    let p = model.to_str().unwrap();
    let w = spawn(&["--model", &format!("a={p}"), "--model", &format!("b={p}")]);
    let mut c = w.ready().await;
    let (mut c1, mut c2) = (c.clone(), c.clone());
    let (x, y) = tokio::join!(
        generate(&mut c1, text_request("a", "Once upon a time", 16)),
        generate(&mut c2, text_request("b", "Once upon a time", 16)),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!((x.tokens, y.tokens), (16, 16));
    assert_eq!(x.text, y.text, "same weights, greedy: same text");
    let st = stats(&mut c).await;
    assert_eq!(st.models.len(), 2);
    assert!(
        st.models
            .iter()
            .all(|m| m.output_tokens >= 16 && m.joules > 0.0)
    );

    c.unload_model(pb::UnloadModelRequest { name: "a".into() })
        .await
        .unwrap();
    let e = generate(&mut c, text_request("a", "hi", 2))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("serves: b"), "{}", e.message());
    assert_eq!(stats(&mut c).await.models.len(), 1);
    assert_eq!(
        generate(&mut c, text_request("b", "hi", 2))
            .await
            .unwrap()
            .tokens,
        2
    );
    // Loaded again under the same name at run time.
    let info = c
        .load_model(pb::LoadModelRequest {
            name: "a".into(),
            path: p.into(),
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .model
        .unwrap();
    assert_eq!(info.name, "a");
    assert!(info.memory_bytes > 64 << 20);
    assert_eq!(
        generate(&mut c, text_request("a", "hi", 2))
            .await
            .unwrap()
            .tokens,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_limits_what_loads() {
    let model = default_model();
    let p = model.to_str().unwrap();
    // One model takes ~98 MB of weights + 64 MiB of KV; the budget fits one, not two.
    let w = spawn(&[
        "--model",
        &format!("a={p}"),
        "--model",
        &format!("b={p}"),
        "--memory-budget",
        "250MiB",
    ]);
    let mut c = w.ready().await;
    let names: Vec<String> = c
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, vec!["a".to_string()]);
    assert!(
        w.logged("memory budget"),
        "the refusal is logged with its reason"
    );
    let e = c
        .load_model(pb::LoadModelRequest {
            name: "b".into(),
            path: p.into(),
            sha256: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("--memory-budget"), "{}", e.message());
    c.unload_model(pb::UnloadModelRequest { name: "a".into() })
        .await
        .unwrap();
    c.load_model(pb::LoadModelRequest {
        name: "b".into(),
        path: p.into(),
        sha256: String::new(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_frees_its_kv_blocks() {
    let model = default_model();
    let w = spawn(&["--model", model.to_str().unwrap()]);
    let mut c = w.ready().await;
    let name = "SmolLM2-135M-Instruct.Q4_1";
    let mut s = c
        .generate(text_request(
            name,
            "Write a long story about a dragon.",
            2000,
        ))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        s.message().await.unwrap().unwrap();
    }
    let st = stats(&mut c).await;
    assert_eq!(st.models[0].running, 1);
    assert!(st.models[0].kv_blocks_used > 0);
    drop(s);
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let m = &stats(&mut c).await.models[0];
        if m.running == 0 && m.kv_blocks_used == 0 {
            break;
        }
        assert!(Instant::now() < until, "blocks still held: {m:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(w.logged("client disconnected; request cancelled"));
    let m = w.metrics_text();
    assert!(
        m.contains(&format!(
            "joule_requests_total{{model=\"{name}\",status=\"cancelled\"}} 1"
        )),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_streams_then_exits() {
    let model = default_model();
    let mut w = spawn(&["--model", model.to_str().unwrap()]);
    let c = w.ready().await;
    let name = "SmolLM2-135M-Instruct.Q4_1";
    let mut streams = Vec::new();
    for i in 0..4 {
        let mut c = c.clone();
        let s = c
            .generate(text_request(name, &format!("Story number {i}:"), 48))
            .await
            .unwrap()
            .into_inner();
        streams.push(tokio::spawn(collect(s)));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.sigterm();
    // New requests are refused while the old ones finish.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = c.clone();
        match c.generate(text_request(name, "late", 2)).await {
            Err(e) if e.code() == Code::Unavailable => {
                assert!(e.message().contains("draining"), "{}", e.message());
                break;
            }
            Ok(_) | Err(_) => {}
        }
        assert!(Instant::now() < until, "never refused while draining");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for s in streams {
        let out = s.await.unwrap();
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(out.tokens, 48);
        assert_eq!(out.finish.unwrap().reason, v1::FinishReason::Length as i32);
    }
    let (st, w) = tokio::task::spawn_blocking(move || (w.wait_exit(), w))
        .await
        .unwrap();
    assert!(st.success(), "exit status {st}");
    // The four streams, plus any "late" request admitted before the signal arrived.
    let line = w
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("drained finished="))
        .cloned()
        .expect("drain logged");
    let finished: u32 = line
        .split("finished=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(finished >= 4, "{line}");
    assert!(line.contains("cancelled=0"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_drain_deadline_are_cancelled_with_a_clear_status() {
    let model = default_model();
    let w = spawn(&[
        "--model",
        model.to_str().unwrap(),
        "--drain-timeout-s",
        "0.3",
    ]);
    let mut c = w.ready().await;
    let name = "SmolLM2-135M-Instruct.Q4_1";
    let s = c
        .generate(text_request(name, "A very long story:", 2500))
        .await
        .unwrap()
        .into_inner();
    let pending = tokio::spawn(collect(s));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = c
        .drain(pb::DrainRequest { deadline_ms: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.finished, r.cancelled), (0, 1));
    let out = pending.await.unwrap();
    let e = out.error.expect("cut at the deadline");
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("drain deadline"), "{}", e.message());
    let st = stats(&mut c).await;
    assert!(st.draining);
    assert_eq!(st.models[0].kv_blocks_used, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_streams_complete_and_their_joules_add_up() {
    let model = default_model();
    let w = spawn(&["--model", model.to_str().unwrap(), "--threads", "2"]);
    let mut c = w.ready().await;
    let name = "SmolLM2-135M-Instruct.Q4_1";
    let before = stats(&mut c).await.power.unwrap().joules;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            generate(
                &mut c,
                text_request(name, &format!("Request {i}: tell me a fact."), 24),
            )
            .await
        }));
    }
    let mut sum = 0.0;
    for t in tasks {
        let out = t.await.unwrap().unwrap();
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(out.tokens, 24);
        sum += out.finish.unwrap().usage.unwrap().joules;
    }
    let after = stats(&mut c).await;
    let total = after.power.unwrap().joules - before;
    let m = &after.models[0];
    assert_eq!(m.running + m.waiting, 0);
    assert_eq!(m.kv_blocks_used, 0);
    let err = (sum - total).abs() / total;
    eprintln!(
        "requests {sum:.2} J, sensor {total:.2} J, difference {:.2}%",
        err * 100.0
    );
    assert!(err < 0.05, "requests {sum} J vs sensor {total} J");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibration_is_measured_once_cached_and_redone_on_request() {
    let model = default_model();
    let cache = tempfile::tempdir().unwrap();
    let args = |extra: &'static [&'static str]| {
        let mut v = vec![
            "--model".to_string(),
            model.display().to_string(),
            "--calibrate".into(),
            "true".into(),
            "--calibration-batches".into(),
            "1,2,4,4000".into(),
            "--calibration-tokens".into(),
            "8".into(),
            "--cache-dir".into(),
            cache.path().display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let first = args(&[]);
    let w = spawn(&first.iter().map(String::as_str).collect::<Vec<_>>());
    let mut c = w.ready().await;
    let cal = stats(&mut c).await.models[0].calibration.clone().unwrap();
    let sizes: Vec<u32> = cal.points.iter().map(|p| p.batch_size).collect();
    assert_eq!(sizes, vec![1, 2, 4], "4000 does not fit and is skipped");
    for p in &cal.points {
        assert!(
            p.output_tokens_per_s > 0.0 && p.watts > 0.0 && p.tokens_per_joule > 0.0,
            "{p:?}"
        );
        let tpj = p.output_tokens_per_s / p.watts;
        assert!((tpj - p.tokens_per_joule).abs() / tpj < 0.05, "{p:?}");
    }
    assert_eq!(cal.source, v1::EnergySource::Estimated as i32);
    assert!(w.logged("calibrating [3/3] batch   4"));
    let files: Vec<_> = std::fs::read_dir(cache.path().join("calibration"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
    let m = w.metrics_text();
    assert!(m.contains("joule_calibration_tokens_per_joule{model=\"SmolLM2-135M-Instruct.Q4_1\",batch_size=\"4\",source=\"estimated\"}"), "{m}");
    drop(w);

    let w = spawn(&first.iter().map(String::as_str).collect::<Vec<_>>());
    let mut c = w.ready().await;
    let cached = stats(&mut c).await.models[0].calibration.clone().unwrap();
    assert_eq!(
        (cached.measured_at, &cached.hardware),
        (cal.measured_at, &cal.hardware)
    );
    for (a, b) in cached.points.iter().zip(&cal.points) {
        assert_eq!(a.batch_size, b.batch_size);
        assert!((a.tokens_per_joule - b.tokens_per_joule).abs() < 1e-9 * b.tokens_per_joule);
    }
    assert!(w.logged("calibration profile from cache"));
    assert!(!w.logged("calibrating ["));
    drop(w);

    let again = args(&["--recalibrate"]);
    let w = spawn(&again.iter().map(String::as_str).collect::<Vec<_>>());
    w.ready().await;
    assert!(w.logged("calibrating [1/3]"));
    assert!(!w.logged("calibration profile from cache"));
}

#[test]
fn an_unavailable_sensor_or_a_bad_flag_stops_start_up_with_the_reason() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_joule-worker"))
        .args(["--power-sensor", "gpu"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nvml") && err.contains("estimate"), "{err}");

    // Where RAPL is readable the worker starts on it; where it is not (as in most
    // containers), start-up stops and says why.
    let rapl = joule_worker::power::rapl::open_all(std::path::Path::new("/sys/class/powercap"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_joule-worker"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--power-sensor", "rapl", "--calibrate", "false"])
        .env("NO_COLOR", "1")
        .env("JOULE_DRAIN_TIMEOUT_S", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    match rapl {
        Err(reason) => {
            let out = out.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(1));
            // The log goes to stderr.
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(log.contains("RAPL"), "{log}");
            assert!(reason.contains("RAPL"), "{reason}");
        }
        Ok(sensors) => {
            assert!(!sensors.is_empty());
            let mut child = out;
            std::thread::sleep(std::time::Duration::from_secs(1));
            assert!(child.try_wait().unwrap().is_none(), "started on RAPL");
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}
