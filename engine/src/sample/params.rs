//! What a request may ask of sampling and stopping, with the checks that refuse nonsense.

use crate::error::{EngineError, Result};

/// The most alternatives a request may ask logprobs for (OpenAI's limit).
pub const MAX_LOGPROBS: u32 = 20;
const MAX_STOPS: usize = 16;
const MAX_STOP_BYTES: usize = 256;

/// Sampling and stopping settings of one request. The defaults are greedy decoding of up to 16
/// tokens, stopping at the model's end-of-turn tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep only the `k` likeliest tokens; `None` for no limit (`Some(0)` is refused).
    pub top_k: Option<u32>,
    /// Keep the smallest set of likeliest tokens whose probability reaches `top_p`; 1 = all.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the likeliest; 0 = off.
    pub min_p: f32,
    /// Divides positive logits (multiplies negative ones) of tokens seen in the prompt or the
    /// output; 1 = off.
    pub repetition_penalty: f32,
    /// Subtracted from the logit of every token already generated; 0 = off.
    pub presence_penalty: f32,
    /// Subtracted once per earlier occurrence in the output; 0 = off.
    pub frequency_penalty: f32,
    /// The same seed, prompt and settings give the same output. `None`: a fresh random seed.
    pub seed: Option<u64>,
    /// Most tokens to generate (at least 1).
    pub max_tokens: u32,
    /// Generation stops before any of these strings; the string is not returned.
    pub stop: Vec<String>,
    /// Generation stops at these token ids (as well as the model's own stop tokens).
    pub stop_token_ids: Vec<u32>,
    /// Keep going past the model's own stop tokens (benchmarks).
    pub ignore_eos: bool,
    /// Return the log probability of each token and of this many alternatives.
    pub logprobs: Option<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            max_tokens: 16,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            logprobs: None,
        }
    }
}

fn bad(msg: String) -> EngineError {
    EngineError::InvalidRequest(msg)
}

impl SamplingParams {
    /// Refuses settings that mean nothing, naming the field and the accepted range.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(bad(format!(
                "temperature must be a number >= 0 (0 is greedy), got {}",
                self.temperature
            )));
        }
        if self.top_k == Some(0) {
            return Err(bad(
                "top_k must be at least 1; leave it unset for no limit".into()
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(bad(format!("top_p must be in (0, 1], got {}", self.top_p)));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(bad(format!("min_p must be in [0, 1], got {}", self.min_p)));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(bad(format!(
                "repetition_penalty must be > 0 (1 is off), got {}",
                self.repetition_penalty
            )));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(bad(format!("{name} must be in [-2, 2], got {v}")));
            }
        }
        if self.max_tokens == 0 {
            return Err(bad("max_tokens must be at least 1".into()));
        }
        if self.stop.len() > MAX_STOPS {
            return Err(bad(format!(
                "at most {MAX_STOPS} stop strings, got {}",
                self.stop.len()
            )));
        }
        if let Some(s) = self
            .stop
            .iter()
            .find(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
        {
            return Err(bad(format!(
                "stop strings must be 1 to {MAX_STOP_BYTES} bytes, got one of {} bytes",
                s.len()
            )));
        }
        if let Some(n) = self.logprobs
            && n > MAX_LOGPROBS
        {
            return Err(bad(format!(
                "logprobs must be at most {MAX_LOGPROBS}, got {n}"
            )));
        }
        Ok(())
    }

    /// Whether any penalty needs the token history.
    pub(super) fn penalized(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }
}
