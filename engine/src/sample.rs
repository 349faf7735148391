//! Choosing the next token from logits: greedy, or temperature with top-k / top-p, from a
//! seeded generator so the same seed gives the same text.

use crate::error::{EngineError, Result};
use crate::rng::Rng;

/// Sampling settings for one request.
#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means no limit.
    pub top_k: usize,
    /// 1.0 means no limit.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(EngineError::InvalidRequest(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(EngineError::InvalidRequest(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// Samples tokens with fixed settings.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

/// Index of the largest value; the lowest index wins ties, NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = Rng::new(params.seed);
        Ok(Self { params, rng })
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        if p.temperature == 0.0 || p.top_k == 1 {
            return argmax(logits);
        }
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (i as u32, v / p.temperature))
            .collect();
        if cand.is_empty() {
            return 0;
        }
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if p.top_k > 0 {
            cand.truncate(p.top_k);
        }
        let max = cand[0].1;
        let mut total = 0f32;
        for c in &mut cand {
            c.1 = (c.1 - max).exp();
            total += c.1;
        }
        if p.top_p < 1.0 {
            let mut acc = 0f32;
            let keep = cand.iter().position(|c| {
                acc += c.1 / total;
                acc >= p.top_p
            });
            cand.truncate(keep.map_or(cand.len(), |k| k + 1));
            total = cand.iter().map(|c| c.1).sum();
        }
        let mut r = self.rng.next_f32() * total;
        for c in &cand {
            if r < c.1 {
                return c.0;
            }
            r -= c.1;
        }
        cand[cand.len() - 1].0
    }
}
