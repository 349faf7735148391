//! The serving core refuses bad requests before they take a block, says what to change, and
//! keeps serving everyone else; cancelled and dropped streams give their blocks back; tenants
//! share a contended engine by weight. Runs on the tiny random model (context 256).

mod common;

use std::time::{Duration, Instant};

use common::tiny;
use joule_engine::EngineError;
use joule_engine::batch::{EngineConfig, EngineHandle, FinishReason, Request};
use joule_engine::kv::{KvBudget, KvDType, KvLayout};
use joule_engine::sample::SamplingParams;

/// An engine whose pool holds exactly `blocks` blocks of 16 tokens.
fn engine_with_blocks(blocks: usize, max_seqs: usize) -> EngineHandle {
    let (model, tk) = tiny::model_and_tokenizer();
    let block = KvLayout::for_model(&model.config, 16, KvDType::F16).block_bytes();
    let h = EngineHandle::start(
        model,
        tk,
        EngineConfig {
            max_seqs,
            kv_budget: KvBudget::Bytes((blocks * block) as u64),
            ..Default::default()
        },
    )
    .expect("engine");
    assert_eq!(h.kv_blocks(), blocks);
    h
}

fn prompt(n: usize) -> Vec<u32> {
    (0..n).map(|i| 3 + (i * 7 % 400) as u32).collect()
}

fn params(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        max_tokens,
        ignore_eos: true,
        ..Default::default()
    }
}

fn refusal(h: &EngineHandle, r: Request) -> String {
    match h.submit(r) {
        Err(EngineError::InvalidRequest(m)) => m,
        Err(e) => panic!("refused with the wrong kind of error: {e}"),
        Ok(_) => panic!("a bad request was accepted"),
    }
}

#[test]
fn bad_requests_are_refused_with_what_to_change_before_taking_a_block() {
    let h = engine_with_blocks(8, 8);
    // A prompt beyond the context is its own kind of refusal (a gateway answers it with 413).
    match h.submit(Request::new(prompt(300), params(4))) {
        Err(EngineError::ContextExceeded(m)) => {
            assert!(
                m.contains("the model's context is 256; shorten the prompt"),
                "{m}"
            )
        }
        other => panic!("expected ContextExceeded, got {:?}", other.err()),
    }
    let cases: Vec<(Request, &str)> = vec![
        (Request::new(vec![], params(4)), "prompt is empty"),
        (
            Request::new(prompt(4), params(0)),
            "max_tokens must be at least 1",
        ),
        (
            Request::new(prompt(200), params(100)),
            "set max_tokens to at most 56",
        ),
        // 9 blocks of 16 tokens needed, 8 in the pool.
        (
            Request::new(prompt(130), params(10)),
            "need 9 KV blocks but the whole pool has 8",
        ),
        (
            Request::new(vec![3, 99_999], params(4)),
            "token id 99999 is outside",
        ),
        (
            Request::new(
                prompt(4),
                SamplingParams {
                    temperature: -0.5,
                    ..params(4)
                },
            ),
            "temperature must be a number >= 0",
        ),
        (
            Request::new(
                prompt(4),
                SamplingParams {
                    temperature: f32::NAN,
                    ..params(4)
                },
            ),
            "temperature",
        ),
        (
            Request::new(
                prompt(4),
                SamplingParams {
                    top_p: 0.0,
                    ..params(4)
                },
            ),
            "top_p must be in (0, 1]",
        ),
        (
            Request::new(
                prompt(4),
                SamplingParams {
                    top_p: 1.5,
                    ..params(4)
                },
            ),
            "top_p must be in (0, 1]",
        ),
        (
            Request::new(
                prompt(4),
                SamplingParams {
                    top_k: Some(0),
                    ..params(4)
                },
            ),
            "top_k must be at least 1",
        ),
        (
            Request::new(
                prompt(4),
                SamplingParams {
                    min_p: 2.0,
                    ..params(4)
                },
            ),
            "min_p must be in [0, 1]",
        ),
        (
            Request::new(
                prompt(4),
                SamplingParams {
                    stop: vec![String::new()],
                    ..params(4)
                },
            ),
            "stop strings must be 1 to",
        ),
        (
            Request::new(
                prompt(4),
                SamplingParams {
                    logprobs: Some(21),
                    ..params(4)
                },
            ),
            "logprobs must be at most 20",
        ),
        (
            Request::new(prompt(4), params(4)).tenant("a", 0.0),
            "tenant weight must be from 0.001 to 1e6",
        ),
        (
            Request::new(prompt(4), params(4)).tenant("", 1.0),
            "tenant id must be 1 to 256 bytes",
        ),
    ];
    for (req, want) in cases {
        let msg = refusal(&h, req);
        assert!(msg.contains(want), "{msg:?} does not say {want:?}");
        let s = h.stats();
        assert_eq!(
            (s.kv.used, s.waiting, s.running),
            (0, 0, 0),
            "{want}: {s:?}"
        );
    }
    // The engine still serves a good request afterwards, and every block comes back.
    let out = h
        .submit(Request::new(prompt(20), params(5)))
        .expect("accepted")
        .collect_blocking();
    assert_eq!(out.finish.reason, FinishReason::Length);
    assert_eq!(out.token_ids.len(), 5);
    common::assert_pool_full(&h);
}

#[test]
fn a_request_as_large_as_the_pool_never_wedges_the_engine_for_others() {
    // 8 blocks; one request takes all 8 when it finishes, the others need 2 each.
    let h = engine_with_blocks(8, 8);
    let big = h
        .submit(Request::new(prompt(100), params(28)))
        .expect("exactly the pool fits");
    let small: Vec<_> = (0..10)
        .map(|i| {
            h.submit(Request::new(prompt(10 + i), params(8)))
                .expect("accepted")
        })
        .collect();
    let too_big = refusal(&h, Request::new(prompt(100), params(29)));
    assert!(too_big.contains("whole pool has 8"), "{too_big}");
    let big = big.collect_blocking();
    assert_eq!(big.finish.reason, FinishReason::Length, "{:?}", big.finish);
    assert_eq!(big.token_ids.len(), 28);
    for s in small {
        let o = s.collect_blocking();
        assert_eq!(o.finish.reason, FinishReason::Length, "{:?}", o.finish);
        assert_eq!(o.token_ids.len(), 8);
    }
    common::assert_pool_full(&h);
}

#[test]
fn cancelled_and_dropped_streams_give_every_block_back() {
    let h = engine_with_blocks(64, 8);
    // Explicit cancel: the stream ends with Cancelled and the usage so far.
    let mut s = h
        .submit(Request::new(prompt(40), params(200)))
        .expect("accepted");
    let first = s.blocking_next().expect("a first event");
    assert_eq!(first.token_ids.len(), 1);
    s.cancel();
    let mut finish = None;
    while let Some(ev) = s.blocking_next() {
        if ev.finish.is_some() {
            finish = ev.finish;
        }
    }
    let finish = finish.expect("a last event");
    assert_eq!(finish.reason, FinishReason::Cancelled);
    assert!(finish.usage.completion_tokens >= 1 && finish.usage.completion_tokens < 200);
    common::assert_pool_full(&h);

    // Dropped streams, before and after their first token, running or still waiting (two run
    // at a time, so most of the 12 x 210 tokens are still to come when the streams go).
    let h2 = engine_with_blocks(64, 2);
    let mut streams: Vec<_> = (0..12)
        .map(|i| {
            h2.submit(Request::new(prompt(30 + i), params(210)))
                .expect("accepted")
        })
        .collect();
    for s in streams.iter_mut().take(4) {
        s.blocking_next().expect("an event");
    }
    drop(streams);
    common::assert_pool_full(&h2);
    let generated = h2.stats().generated_tokens_total;
    assert!(
        generated < 12 * 210,
        "nothing was cut short: {generated} tokens"
    );

    // After shutdown, submitting says so.
    h.shutdown();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match h.submit(Request::new(prompt(4), params(4))) {
            Err(e) => {
                assert!(e.to_string().contains("shut down"), "{e}");
                break;
            }
            Ok(s) => {
                // Accepted just before the loop stopped: it must still end, cancelled.
                let o = s.collect_blocking();
                assert_eq!(o.finish.reason, FinishReason::Cancelled, "{:?}", o.finish);
            }
        }
        assert!(Instant::now() < deadline, "submissions still accepted");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn under_contention_tenants_are_admitted_by_weight() {
    // One sequence at a time: every admission is a choice between the two tenants.
    let h = engine_with_blocks(64, 1);
    // Hold the engine busy while both queues fill, so the first pick is already contended.
    let blocker = h
        .submit(Request::new(prompt(8), params(60)))
        .expect("accepted");
    let streams: Vec<_> = (0..24)
        .map(|i| {
            let (tenant, weight) = if i % 2 == 0 {
                ("gold", 3.0)
            } else {
                ("bronze", 1.0)
            };
            let s = h
                .submit(Request::new(prompt(12), params(4)).tenant(tenant, weight))
                .expect("accepted");
            (tenant, s)
        })
        .collect();
    blocker.collect_blocking();
    // All arrived within microseconds of each other and ran one at a time, so the time to the
    // first token (stamped by the step loop) orders them by admission.
    let mut order: Vec<_> = streams
        .into_iter()
        .map(|(tenant, s)| {
            let o = s.collect_blocking();
            assert_eq!(o.finish.reason, FinishReason::Length);
            (o.finish.usage.time_to_first_token, tenant)
        })
        .collect();
    order.sort();
    // Equal requests, weights 3:1: of the first 12 admitted, about 9 are gold.
    let gold = order[..12].iter().filter(|(_, t)| *t == "gold").count();
    assert!(
        (8..=10).contains(&gold),
        "gold got {gold} of the first 12: {order:?}"
    );
    common::assert_pool_full(&h);
}
