//! The logits pipeline of one sequence: penalties over its history, then greedy or a seeded
//! draw after temperature, top-k, top-p and min-p; logprobs come from the model's own
//! distribution (the raw logits), as OpenAI-style APIs report them.

use std::collections::HashMap;

use super::params::SamplingParams;
use crate::error::Result;
use crate::rng::Rng;

/// The log probability of a chosen token and of the likeliest alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    /// The `n` likeliest tokens, likeliest first.
    pub top: Vec<(u32, f32)>,
}

/// One sampling decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprobs: Option<TokenLogprobs>,
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

/// Samples one sequence's tokens.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// Occurrences of each token in the output so far.
    counts: HashMap<u32, u32>,
    /// Tokens of the prompt (for the repetition penalty).
    prompt: Vec<u32>,
}

impl Sampler {
    /// A sampler for `params` with `seed` (the caller resolves `params.seed == None`).
    pub fn new(params: SamplingParams, seed: u64, prompt: &[u32]) -> Result<Self> {
        params.validate()?;
        let mut prompt = if params.repetition_penalty != 1.0 {
            prompt.to_vec()
        } else {
            Vec::new()
        };
        prompt.sort_unstable();
        prompt.dedup();
        Ok(Self {
            params,
            rng: Rng::new(seed),
            counts: HashMap::new(),
            prompt,
        })
    }

    /// Takes `generated`, the output of an interrupted earlier attempt, as this sampler's own:
    /// they count for the penalties, and the seeded stream skips the draws they took (one per
    /// token unless decoding is greedy), so the next token is the one that attempt would have
    /// drawn. (A step whose logits were all non-finite took no draw; such a step is not
    /// replayed exactly.)
    pub fn resume(&mut self, generated: &[u32]) {
        let greedy = self.params.temperature == 0.0 || self.params.top_k == Some(1);
        for &t in generated {
            *self.counts.entry(t).or_default() += 1;
            if !greedy {
                self.rng.next_f32();
            }
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits` and records it in the history.
    pub fn sample(&mut self, logits: &[f32]) -> Sampled {
        let logprobs = self.params.logprobs.map(|n| (log_softmax_max(logits), n));
        let token = if self.params.penalized() {
            let mut l = logits.to_vec();
            self.penalize(&mut l);
            self.pick(&l)
        } else {
            self.pick(logits)
        };
        *self.counts.entry(token).or_default() += 1;
        let logprobs = logprobs.map(|((max, lse), n)| {
            let lp = |t: u32| logits[t as usize] - max - lse;
            TokenLogprobs {
                token,
                logprob: lp(token),
                top: top_n(logits, n as usize)
                    .into_iter()
                    .map(|t| (t, lp(t)))
                    .collect(),
            }
        });
        Sampled { token, logprobs }
    }

    fn penalize(&self, l: &mut [f32]) {
        let p = &self.params;
        let rep = |x: &mut f32| {
            *x = if *x > 0.0 {
                *x / p.repetition_penalty
            } else {
                *x * p.repetition_penalty
            }
        };
        if p.repetition_penalty != 1.0 {
            for &t in &self.prompt {
                if !self.counts.contains_key(&t) {
                    rep(&mut l[t as usize]);
                }
            }
        }
        for (&t, &n) in &self.counts {
            let x = &mut l[t as usize];
            if p.repetition_penalty != 1.0 {
                rep(x);
            }
            *x -= p.presence_penalty + p.frequency_penalty * n as f32;
        }
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        if p.temperature == 0.0 || p.top_k == Some(1) {
            return argmax(logits);
        }
        let inv_t = 1.0 / p.temperature;
        let max = logits[argmax(logits) as usize];
        if !max.is_finite() {
            return argmax(logits);
        }
        // Unnormalized probabilities, in token order unless a cut needs them sorted.
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u32, ((v - max) * inv_t).exp()))
            .filter(|c| c.1 > 0.0)
            .collect();
        if p.min_p > 0.0 {
            // The likeliest token has weight exp(0) = 1.
            cand.retain(|c| c.1 >= p.min_p);
        }
        if let Some(k) = p.top_k {
            sort_top(&mut cand, k as usize);
            cand.truncate(k as usize);
        }
        if p.top_p < 1.0 {
            let total: f32 = cand.iter().map(|c| c.1).sum();
            let goal = p.top_p * total;
            // Sort only as much of the head as the cut needs.
            let mut k = 64;
            loop {
                sort_top(&mut cand, k);
                let mut acc = 0f32;
                if let Some(i) = cand[..k.min(cand.len())].iter().position(|c| {
                    acc += c.1;
                    acc >= goal
                }) {
                    cand.truncate(i + 1);
                    break;
                }
                if k >= cand.len() {
                    break;
                }
                k *= 4;
            }
        }
        let total: f32 = cand.iter().map(|c| c.1).sum();
        let mut r = self.rng.next_f32() * total;
        for c in &cand {
            if r < c.1 {
                return c.0;
            }
            r -= c.1;
        }
        cand.last().map_or_else(|| argmax(logits), |c| c.0)
    }
}

/// Puts the `k` heaviest candidates first, heaviest first (ties by token id).
fn sort_top(cand: &mut [(u32, f32)], k: usize) {
    let by = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k < cand.len() {
        cand.select_nth_unstable_by(k, by);
        cand[..k].sort_unstable_by(by);
    } else {
        cand.sort_unstable_by(by);
    }
}

/// `(max, log(sum(exp(x - max))))` of the logits.
fn log_softmax_max(l: &[f32]) -> (f32, f32) {
    let max = l[argmax(l) as usize];
    let sum: f64 = l.iter().map(|&x| f64::from((x - max).exp())).sum();
    (max, sum.ln() as f32)
}

/// The `n` likeliest token ids, likeliest first.
fn top_n(l: &[f32], n: usize) -> Vec<u32> {
    let mut c: Vec<(u32, f32)> = l.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect();
    sort_top(&mut c, n);
    c.into_iter().take(n).map(|c| c.0).collect()
}

#[cfg(test)]
mod tests;
