//! The serving core on the default model: outputs do not depend on what else is in the batch,
//! on chunked prefill, on preemption or on prefix-cache hits; seeded sampling reproduces.

mod common;

use joule_engine::batch::{EngineConfig, EngineHandle, FinishReason, Output, Request};
use joule_engine::gguf::GgufFile;
use joule_engine::kv::{KvBudget, KvDType, KvLayout};
use joule_engine::sample::SamplingParams;
use joule_engine::tokenizer::Tokenizer;
use joule_engine::{LoadOptions, Model};

const TEXT: &str = "The history of the lighthouse begins with fires lit on hills to guide ships \
    home. Later, towers of stone carried lamps of oil, and lenses made by patient craftsmen threw \
    their beams far across the water. Keepers lived in small houses at the foot of each tower, \
    trimming wicks through long nights and writing the weather in their logs. Today most lights \
    run by themselves, yet people still walk out to them at dusk to watch the first flash sweep \
    over the waves, and children ask how a single flame could be seen so far away.";

fn start(cfg: EngineConfig) -> EngineHandle {
    let file = GgufFile::open(common::default_model()).expect("model");
    let model = Model::from_gguf(&file, &LoadOptions::with_threads(2)).expect("load");
    let tk = Tokenizer::from_gguf(&file).expect("tokenizer");
    EngineHandle::start(model, tk, cfg).expect("engine")
}

fn cfg(max_seqs: usize, max_batched_tokens: usize, prefix_caching: bool) -> EngineConfig {
    EngineConfig {
        max_seqs,
        max_batched_tokens,
        prefix_caching,
        kv_budget: KvBudget::Bytes(256 << 20),
        ..Default::default()
    }
}

/// 64 greedy requests of mixed prompt (1 to ~90 tokens) and output (4 to 24 tokens) lengths.
fn mixed_requests(
    tk: &Tokenizer,
    n: usize,
    params: impl Fn(usize) -> SamplingParams,
) -> Vec<Request> {
    let ids = tk.encode(TEXT).expect("encode");
    (0..n)
        .map(|i| {
            let len = 1 + (i * 37) % 90;
            let off = (i * 13) % (ids.len() - len);
            Request::new(ids[off..off + len].to_vec(), params(i))
        })
        .collect()
}

fn greedy(i: usize) -> SamplingParams {
    SamplingParams {
        max_tokens: 4 + (i * 7 % 21) as u32,
        ..Default::default()
    }
}

fn run_all(h: &EngineHandle, reqs: &[Request]) -> Vec<Output> {
    let streams: Vec<_> = reqs
        .iter()
        .map(|r| h.submit(r.clone()).expect("accepted"))
        .collect();
    streams.into_iter().map(|s| s.collect_blocking()).collect()
}

fn assert_same(alone: &[Output], got: &[Output], what: &str) {
    for (i, (a, g)) in alone.iter().zip(got).enumerate() {
        assert_eq!(a.token_ids, g.token_ids, "request {i} differs {what}");
        assert_eq!(a.text, g.text, "request {i} text differs {what}");
        assert_eq!(
            a.finish.reason, g.finish.reason,
            "request {i} ends differently {what}"
        );
    }
}

#[test]
fn greedy_outputs_in_batches_of_1_8_and_64_match_each_request_alone() {
    let alone_engine = start(cfg(1, 512, false));
    let reqs = mixed_requests(alone_engine.tokenizer(), 64, greedy);
    let alone = run_all(&alone_engine, &reqs);
    assert!(alone.iter().all(|o| !o.token_ids.is_empty()));
    assert!(
        alone
            .iter()
            .any(|o| o.finish.reason == FinishReason::Length)
    );
    drop(alone_engine);

    for max_seqs in [8, 64] {
        // A small token budget also splits the longer prompts into chunks.
        let h = start(cfg(max_seqs, 48, false));
        let got = run_all(&h, &reqs);
        assert_same(&alone, &got, &format!("in batches of {max_seqs}"));
        common::assert_pool_full(&h);
    }
}

#[test]
fn preempting_many_times_still_gives_the_same_outputs() {
    let file = GgufFile::open(common::default_model()).expect("model");
    let c = joule_engine::model::Config::from_gguf(&file).expect("config");
    let block = KvLayout::for_model(&c, 16, KvDType::F16).block_bytes() as u64;
    let reference = start(cfg(1, 512, false));
    let reqs = mixed_requests(reference.tokenizer(), 64, greedy);
    let alone = run_all(&reference, &reqs);
    drop(reference);

    // The longest request needs 8 blocks; 12 make 64 sequences fight for room.
    let h = start(EngineConfig {
        kv_budget: KvBudget::Bytes(12 * block),
        ..cfg(64, 64, true)
    });
    assert_eq!(h.kv_blocks(), 12);
    let got = run_all(&h, &reqs);
    assert_same(&alone, &got, "under preemption");
    let preempted: u32 = got.iter().map(|o| o.finish.usage.preemptions).sum();
    assert!(
        h.stats().preemptions_total >= 20 && preempted >= 20,
        "only {} preemptions",
        h.stats().preemptions_total
    );
    common::assert_pool_full(&h);
}

#[test]
fn prefix_cache_hits_give_the_same_outputs_and_are_reported() {
    let reference = start(cfg(1, 512, false));
    let tk = reference.tokenizer().clone();
    let ids = tk.encode(TEXT).expect("encode");
    let system = &ids[..70];
    let reqs: Vec<Request> = (0..24)
        .map(|i| {
            let mut p = system.to_vec();
            p.extend_from_slice(&ids[70 + i..70 + i + 1 + i % 9]);
            Request::new(p, greedy(i))
        })
        .collect();
    let alone = run_all(&reference, &reqs);
    drop(reference);

    let h = start(cfg(16, 64, true));
    let first = run_all(&h, &reqs[..1]);
    assert_eq!(first[0].finish.usage.cached_prompt_tokens, 0);
    let rest = run_all(&h, &reqs[1..]);
    let got: Vec<Output> = first.into_iter().chain(rest).collect();
    assert_same(&alone, &got, "with prefix-cache hits");
    for o in &got[1..] {
        // 70 shared tokens: 4 full blocks of 16.
        assert_eq!(
            o.finish.usage.cached_prompt_tokens, 64,
            "{:?}",
            o.finish.usage
        );
        assert!(o.finish.usage.prompt_tokens > 70);
    }
    let stats = h.stats();
    assert!(
        stats.prefix_hit_rate > 0.5,
        "hit rate {}",
        stats.prefix_hit_rate
    );
    assert!(stats.kv.cached > 0, "nothing stays cached: {:?}", stats.kv);
    common::assert_pool_full(&h);
}

#[test]
fn seeded_sampling_is_the_same_alone_and_in_any_batch() {
    let sampled = |i: usize| SamplingParams {
        temperature: 0.9,
        top_p: 0.95,
        top_k: Some(40),
        min_p: 0.02,
        frequency_penalty: 0.3,
        seed: Some(1000 + i as u64),
        max_tokens: 12,
        logprobs: Some(3),
        ..Default::default()
    };
    let reference = start(cfg(1, 512, false));
    let reqs = mixed_requests(reference.tokenizer(), 24, sampled);
    let alone = run_all(&reference, &reqs);
    drop(reference);
    let h = start(cfg(24, 40, true));
    let got = run_all(&h, &reqs);
    assert_same(&alone, &got, "with seeded sampling");
    for (a, g) in alone.iter().zip(&got) {
        assert_eq!(a.logprobs, g.logprobs);
        assert_eq!(g.logprobs.len(), g.token_ids.len());
    }
    // Another seed draws other tokens for at least some requests.
    let reseeded: Vec<Request> = reqs
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.params.seed = r.params.seed.map(|s| s + 7);
            r
        })
        .collect();
    let other = run_all(&h, &reseeded);
    assert!(
        alone
            .iter()
            .zip(&other)
            .any(|(a, o)| a.token_ids != o.token_ids)
    );
    common::assert_pool_full(&h);
}

#[test]
fn streams_carry_deltas_usage_and_end_at_stop_strings() {
    let h = start(cfg(8, 512, true));
    let tk = h.tokenizer().clone();
    let chat = tk
        .apply_chat_template(
            &[joule_engine::tokenizer::Message::new(
                "user",
                "List three colors.",
            )],
            true,
        )
        .expect("template");
    let prompt = tk.encode(&chat).expect("encode");
    let params = SamplingParams {
        max_tokens: 40,
        ..Default::default()
    };
    let mut s = h
        .submit(Request::new(prompt.clone(), params.clone()))
        .expect("ok");
    let (mut text, mut ids, mut finish) = (String::new(), Vec::new(), None);
    while let Some(ev) = s.blocking_next() {
        text.push_str(&ev.text);
        ids.extend(ev.token_ids);
        if ev.finish.is_some() {
            finish = ev.finish;
        }
    }
    let finish = finish.expect("a last event");
    assert_eq!(text, tk.decode(&ids, true).expect("decode"));
    let u = &finish.usage;
    assert_eq!(u.prompt_tokens, prompt.len());
    assert!(u.completion_tokens >= ids.len() && u.completion_tokens <= 40);
    assert!(u.time_to_first_token > std::time::Duration::ZERO);
    assert!(ids.len() < 2 || u.time_per_output_token > std::time::Duration::ZERO);

    // Stop at a string the model writes, wherever tokens split it.
    let cut = text
        .char_indices()
        .nth(text.chars().count() / 2)
        .map_or(0, |c| c.0);
    let stop: String = text[cut..].chars().take(3).collect();
    let stopped = h
        .submit(Request::new(
            prompt,
            SamplingParams {
                stop: vec![stop.clone()],
                ..params
            },
        ))
        .expect("ok")
        .collect_blocking();
    assert_eq!(stopped.finish.reason, FinishReason::Stop);
    assert_eq!(stopped.text, text[..text.find(&stop).expect("present")]);
    common::assert_pool_full(&h);
}

/// Stream-migration's contract: a request resumed from any point of an earlier attempt (its
/// prompt plus the tokens generated so far, `resumed` set to their count) continues that attempt
/// exactly: the same tokens, with penalties and seeded draws carried over, and the same text,
/// with held-back stop-string prefixes carried over.
#[test]
fn a_resumed_request_continues_the_interrupted_one_exactly() {
    let h = start(cfg(4, 512, true));
    let tk = h.tokenizer().clone();
    let prompt = tk
        .encode("Once upon a time, in a quiet village,")
        .expect("encode");
    for (label, temperature, seed) in [("greedy", 0.0, None), ("seeded", 0.8, Some(7))] {
        let params = SamplingParams {
            temperature,
            seed,
            frequency_penalty: 0.4,
            presence_penalty: 0.2,
            max_tokens: 24,
            stop: vec!["dragon".into()],
            ignore_eos: true,
            ..Default::default()
        };
        let whole = h
            .submit(Request::new(prompt.clone(), params.clone()))
            .expect("accepted")
            .collect_blocking();
        assert!(whole.token_ids.len() >= 12, "{label}: {whole:?}");
        for k in [1, 5, whole.token_ids.len() - 1] {
            // The first attempt, cut after k tokens: the text its events carried.
            let mut first = h
                .submit(Request::new(prompt.clone(), params.clone()))
                .expect("accepted");
            let (mut text, mut ids) = (String::new(), Vec::new());
            while ids.len() < k {
                let ev = first.blocking_next().expect("event");
                text.push_str(&ev.text);
                ids.extend(ev.token_ids);
            }
            drop(first);
            let mut rest_params = params.clone();
            rest_params.max_tokens = 24 - k as u32;
            let mut resumed_prompt = prompt.clone();
            resumed_prompt.extend(&ids);
            let rest = h
                .submit(Request::new(resumed_prompt, rest_params).resumed(k))
                .expect("accepted")
                .collect_blocking();
            ids.extend(&rest.token_ids);
            text.push_str(&rest.text);
            assert_eq!(ids, whole.token_ids, "{label}: resumed after {k} tokens");
            assert_eq!(text, whole.text, "{label}: text resumed after {k} tokens");
            assert_eq!(rest.finish.reason, whole.finish.reason, "{label} after {k}");
        }
    }
    // More resumed tokens than the prompt has is refused.
    let err = h
        .submit(Request::new(prompt.clone(), SamplingParams::default()).resumed(prompt.len()))
        .expect_err("refused");
    assert!(err.to_string().contains("resumed_tokens"), "{err}");
    common::assert_pool_full(&h);
}

/// Batch identity again at each other SIMD level this CPU runs, scalar aside (`JOULE_SIMD`
/// forced): the tiled kernels of every level must not depend on the batch either.
#[test]
fn every_simd_level_gives_the_same_outputs_in_any_batch() {
    common::rerun_at_other_levels(
        &[
            "greedy_outputs_in_batches_of_1_8_and_64_match_each_request_alone",
            "a_resumed_request_continues_the_interrupted_one_exactly",
        ],
        false,
    );
}
