//! Property tests of the step loop and the KV pool over random arrivals, lengths, pool sizes and
//! cancellations: no block is leaked or freed twice, the pool is whole again once every stream
//! has ended, and every request that ran to the end produced what it produces alone.

mod common;

use std::time::Duration;

use common::tiny;
use joule_engine::batch::{EngineConfig, FinishReason, Request};
use joule_engine::generate::generate;
use joule_engine::kv::{KvBudget, KvDType, KvLayout};
use joule_engine::sample::SamplingParams;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Req {
    base: usize,
    prompt_len: usize,
    max_tokens: u32,
    /// Drop the stream after this many events (`Some(0)`: right away).
    drop_after: Option<usize>,
    /// Cancel explicitly after this many events.
    cancel_after: Option<usize>,
    delay_ms: u64,
}

fn req() -> impl Strategy<Value = Req> {
    (
        0..3usize,
        1..60usize,
        1..40u32,
        prop::option::weighted(0.25, 0..8usize),
        prop::option::weighted(0.15, 0..8usize),
        0..3u64,
    )
        .prop_map(
            |(base, prompt_len, max_tokens, drop_after, cancel_after, delay_ms)| Req {
                base,
                prompt_len,
                max_tokens,
                drop_after,
                cancel_after,
                delay_ms,
            },
        )
}

fn prompt(base: usize, len: usize) -> Vec<u32> {
    // Three families of prompts that share prefixes within a family.
    (0..len)
        .map(|i| 3 + ((i * (base + 5) + base * 97) % 500) as u32)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn blocks_are_never_leaked_and_finished_outputs_match_alone(
        reqs in prop::collection::vec(req(), 1..24),
        pool_blocks in 8usize..40,
        block_size in prop::sample::select(vec![4usize, 8, 16]),
        max_seqs in 1usize..10,
        max_batched_tokens in 4usize..80,
        prefix_caching in any::<bool>(),
    ) {
        let (model, tk) = tiny::model_and_tokenizer();
        let block = KvLayout::for_model(&model.config, block_size, KvDType::F32).block_bytes();
        let h = joule_engine::batch::EngineHandle::start(model, tk, EngineConfig {
            max_seqs,
            max_batched_tokens,
            block_size,
            prefix_caching,
            kv_dtype: KvDType::F32,
            kv_budget: KvBudget::Bytes((pool_blocks * block) as u64),
        }).expect("engine");
        let mut threads = Vec::new();
        for r in &reqs {
            std::thread::sleep(Duration::from_millis(r.delay_ms));
            let params = SamplingParams { max_tokens: r.max_tokens, ..Default::default() };
            let fits = (r.prompt_len + r.max_tokens as usize).div_ceil(block_size) <= pool_blocks;
            let submitted = h.submit(Request::new(prompt(r.base, r.prompt_len), params));
            prop_assert_eq!(submitted.is_ok(), fits, "{:?}", submitted.as_ref().err());
            let Ok(mut stream) = submitted else { continue };
            let r = r.clone();
            threads.push(std::thread::spawn(move || {
                let (mut ids, mut seen) = (Vec::new(), 0);
                loop {
                    if r.drop_after == Some(seen) {
                        return None;
                    }
                    if r.cancel_after == Some(seen) {
                        stream.cancel();
                    }
                    let ev = stream.blocking_next()?;
                    seen += 1;
                    ids.extend(ev.token_ids);
                    if let Some(f) = ev.finish {
                        return Some((r, ids, f.reason));
                    }
                }
            }));
        }
        let done: Vec<_> = threads.into_iter().filter_map(|t| t.join().expect("reader")).collect();
        common::assert_pool_full(&h);
        let (model, tk) = tiny::model_and_tokenizer();
        for (r, ids, reason) in done {
            if reason == FinishReason::Cancelled {
                prop_assert!(r.cancel_after.is_some());
                continue;
            }
            let params = SamplingParams { max_tokens: r.max_tokens, ..Default::default() };
            let (alone, _) = generate(&model, &tk, &prompt(r.base, r.prompt_len), params, |_| true)
                .expect("alone");
            prop_assert_eq!(ids, alone);
        }
    }
}
