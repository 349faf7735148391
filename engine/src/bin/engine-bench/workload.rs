//! The requests a benchmark run sends: lengths drawn from a fixed-seed distribution shaped like
//! ShareGPT (log-normal, mean ~160 prompt and ~340 output tokens, capped at 1024 in and 2048 in
//! all as vLLM's ShareGPT sampling does), prompts that start with one
//! of a few shared system prompts, or fixed lengths for a like-for-like llama.cpp comparison.

use joule_engine::rng::Rng;

/// One request of a run: its prompt tokens and how many tokens it generates.
#[derive(Debug, Clone)]
pub struct Job {
    pub prompt: Vec<u32>,
    pub output: u32,
}

/// How prompts and output lengths are drawn.
#[derive(Debug, Clone)]
pub enum Shape {
    /// ShareGPT-like lengths; each prompt starts with one of `system_prompts` shared prefixes
    /// of `system_len` tokens (none when 0).
    ShareGpt {
        system_prompts: usize,
        system_len: usize,
    },
    /// Every request exactly `prompt` tokens in (random, unshared) and `output` out.
    Fixed { prompt: usize, output: usize },
}

/// Means of the log-normal length distributions, and their spread (sigma of the log).
const PROMPT_MEAN: f64 = 160.0;
const PROMPT_SIGMA: f64 = 1.0;
const OUTPUT_MEAN: f64 = 340.0;
const OUTPUT_SIGMA: f64 = 0.7;
const MAX_PROMPT: usize = 1024;
const MAX_TOTAL: usize = 2048;

fn uniform(r: &mut Rng) -> f64 {
    // 53 random bits in (0, 1): never 0, so the logarithm below is finite.
    ((r.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A log-normal draw with the given mean: exp(N(mu, sigma)), mu = ln(mean) - sigma^2 / 2.
fn lognormal(r: &mut Rng, mean: f64, sigma: f64) -> f64 {
    let (u1, u2) = (uniform(r), uniform(r));
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (mean.ln() - sigma * sigma / 2.0 + sigma * z).exp()
}

fn tokens(r: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|_| (r.next_u64() % vocab as u64) as u32)
        .collect()
}

/// `n` jobs for a model with `vocab` tokens and a context of `ctx`, the same for the same seed.
pub fn jobs(shape: &Shape, n: usize, seed: u64, vocab: usize, ctx: usize) -> Vec<Job> {
    let mut r = Rng::new(seed);
    match *shape {
        Shape::Fixed { prompt, output } => (0..n)
            .map(|_| Job {
                prompt: tokens(&mut r, prompt, vocab),
                output: output as u32,
            })
            .collect(),
        Shape::ShareGpt {
            system_prompts,
            system_len,
        } => {
            let systems: Vec<Vec<u32>> = (0..system_prompts)
                .map(|_| tokens(&mut r, system_len, vocab))
                .collect();
            // vLLM's ShareGPT sampling keeps prompts up to 1024 tokens and totals up to 2048;
            // here lengths are capped at those (or at the model's context) instead of redrawn.
            let max_prompt = MAX_PROMPT.min(ctx / 2).max(2);
            let max_total = MAX_TOTAL.min(ctx);
            (0..n)
                .map(|_| {
                    let p = (lognormal(&mut r, PROMPT_MEAN, PROMPT_SIGMA).round() as usize)
                        .clamp(4.min(max_prompt), max_prompt);
                    let o = (lognormal(&mut r, OUTPUT_MEAN, OUTPUT_SIGMA).round() as usize)
                        .clamp(1, max_total - p);
                    let mut prompt = Vec::with_capacity(p);
                    if !systems.is_empty() {
                        let s = &systems[(r.next_u64() % systems.len() as u64) as usize];
                        // At least one token of the prompt is the request's own.
                        prompt.extend_from_slice(&s[..s.len().min(p - 1)]);
                    }
                    let own = p - prompt.len();
                    prompt.extend(tokens(&mut r, own, vocab));
                    Job {
                        prompt,
                        output: o as u32,
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharegpt_lengths_have_the_intended_means_and_fit_the_context() {
        let shape = Shape::ShareGpt {
            system_prompts: 4,
            system_len: 64,
        };
        let js = jobs(&shape, 4000, 7, 1000, 8192);
        let mean =
            |f: &dyn Fn(&Job) -> usize| js.iter().map(f).sum::<usize>() as f64 / js.len() as f64;
        let (p, o) = (mean(&|j| j.prompt.len()), mean(&|j| j.output as usize));
        assert!((140.0..180.0).contains(&p), "prompt mean {p}");
        assert!((310.0..370.0).contains(&o), "output mean {o}");
        assert!(js.iter().all(|j| j.prompt.len() <= 1024));
        assert!(
            js.iter()
                .all(|j| j.prompt.len() + j.output as usize <= 2048)
        );
        // Same seed, same jobs.
        let again = jobs(&shape, 4000, 7, 1000, 8192);
        assert!(js.iter().zip(&again).all(|(a, b)| a.prompt == b.prompt));
        // Shared prefixes: at most 4 distinct first-64-token prefixes among long prompts.
        let mut firsts: Vec<&[u32]> = js
            .iter()
            .filter(|j| j.prompt.len() > 64)
            .map(|j| &j.prompt[..64])
            .collect();
        firsts.sort();
        firsts.dedup();
        assert_eq!(firsts.len(), 4);
    }

    #[test]
    fn a_tiny_context_still_gives_valid_jobs() {
        let shape = Shape::ShareGpt {
            system_prompts: 2,
            system_len: 64,
        };
        for j in jobs(&shape, 200, 1, 50, 8) {
            assert!(!j.prompt.is_empty() && j.output >= 1);
            assert!(j.prompt.len() + j.output as usize <= 8);
        }
    }
}
