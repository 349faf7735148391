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

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..50).map(|i| ((i * 37) % 50) as f32 / 10.0).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens() {
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.9,
            seed: 42,
            ..Default::default()
        };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone()).expect("valid");
            (0..20).map(|_| s.sample(&logits())).collect::<Vec<_>>()
        };
        assert_eq!(draw(&p), draw(&p));
        let other = SamplingParams {
            seed: 43,
            ..p.clone()
        };
        assert_ne!(draw(&p), draw(&other));
    }

    #[test]
    fn greedy_and_top_k_one_pick_the_argmax_and_top_k_bounds_the_choice() {
        let l = logits();
        let best = argmax(&l);
        assert_eq!(l[best as usize], 4.9);
        let mut greedy = Sampler::new(SamplingParams::default()).expect("valid");
        let mut k1 = Sampler::new(SamplingParams {
            temperature: 2.0,
            top_k: 1,
            ..Default::default()
        })
        .expect("valid");
        assert_eq!((greedy.sample(&l), k1.sample(&l)), (best, best));
        let mut k3 = Sampler::new(SamplingParams {
            temperature: 5.0,
            top_k: 3,
            seed: 1,
            ..Default::default()
        })
        .expect("ok");
        assert!((0..200).all(|_| l[k3.sample(&l) as usize] >= 4.7));
        assert_eq!(argmax(&[f32::NAN, 1.0, 3.0, 3.0]), 2);
    }

    #[test]
    fn bad_parameters_are_refused() {
        for p in [
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
        ] {
            assert!(Sampler::new(p).is_err());
        }
    }
}
