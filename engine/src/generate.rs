//! Generation for one sequence: prefill the prompt, then decode token by token until a stop
//! token or the token limit, timing both phases. The batched, multi-sequence step loop is a
//! separate layer; this is what benches, tests and the `generate` example use.

use std::time::{Duration, Instant};

use crate::error::{EngineError, Result};
use crate::model::Model;
use crate::model::forward::Logits;
use crate::sample::{Sampler, SamplingParams};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token (EOS or end of turn).
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
    /// The callback asked to stop.
    Cancelled,
}

/// Timings of one generation.
#[derive(Debug, Clone)]
pub struct Stats {
    pub prefill_tokens: usize,
    pub prefill_time: Duration,
    pub decode_tokens: usize,
    pub decode_time: Duration,
    pub stop: StopReason,
}

impl Stats {
    /// `prefill: P tokens in X ms (R tok/s); decode: D tokens in Y ms (S tok/s)`.
    pub fn summary(&self) -> String {
        let rate = |n: usize, d: Duration| {
            if d.is_zero() {
                0.0
            } else {
                n as f64 / d.as_secs_f64()
            }
        };
        format!(
            "prefill: {} tokens in {:.1} ms ({:.1} tok/s); decode: {} tokens in {:.1} ms ({:.1} tok/s)",
            self.prefill_tokens,
            self.prefill_time.as_secs_f64() * 1e3,
            rate(self.prefill_tokens, self.prefill_time),
            self.decode_tokens,
            self.decode_time.as_secs_f64() * 1e3,
            rate(self.decode_tokens, self.decode_time),
        )
    }
}

/// Generates up to `params.max_tokens` after `prompt`. `on_text` gets each piece of text as it is
/// complete, and returns `false` to stop. The generated ids are returned with the stats.
pub fn generate(
    model: &Model,
    tk: &Tokenizer,
    prompt: &[u32],
    params: SamplingParams,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<(Vec<u32>, Stats)> {
    let ctx = model.config.context_len;
    if prompt.is_empty() {
        return Err(EngineError::InvalidRequest("the prompt is empty".into()));
    }
    if prompt.len() >= ctx {
        return Err(EngineError::InvalidRequest(format!(
            "the prompt is {} tokens but the model's context is {ctx} tokens; shorten it",
            prompt.len()
        )));
    }
    let max_tokens = (params.max_tokens as usize).min(ctx - prompt.len());
    let seed = params.seed.unwrap_or_else(crate::rng::fresh_seed);
    let mut sampler = Sampler::new(params, seed, prompt)?;
    let mut cache = model.new_cache(prompt.len() + max_tokens);
    let mut decoder = StreamDecoder::new();
    let mut out = Vec::new();

    let t0 = Instant::now();
    let mut logits = model.forward(prompt, &mut cache, Logits::Last)?;
    let prefill_time = t0.elapsed();
    let t1 = Instant::now();
    let mut stop = StopReason::Length;
    for i in 0..max_tokens {
        let id = sampler.sample(&logits).token;
        if tk.is_stop(id) {
            stop = StopReason::Stop;
            break;
        }
        out.push(id);
        let text = decoder.push(tk, id)?;
        if !text.is_empty() && !on_text(&text) {
            stop = StopReason::Cancelled;
            break;
        }
        if i + 1 < max_tokens {
            logits = model.forward(&[id], &mut cache, Logits::Last)?;
        }
    }
    let rest = decoder.finish(tk)?;
    if !rest.is_empty() {
        on_text(&rest);
    }
    let stats = Stats {
        prefill_tokens: prompt.len(),
        prefill_time,
        decode_tokens: out.len(),
        decode_time: t1.elapsed(),
        stop,
    };
    Ok((out, stats))
}
