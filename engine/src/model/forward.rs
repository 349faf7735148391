//! The forward pass of one sequence: embeddings, per layer RMSNorm → Q/K/V (+bias) → RoPE →
//! causal GQA attention over the KV cache → output projection → RMSNorm → SwiGLU MLP, then the
//! final norm and logits. Matrix products go through [`crate::matmul`]; the rest is here.

use rayon::prelude::*;

use super::Model;
use super::config::{Config, RopeLayout};
use crate::error::{EngineError, Result};
use crate::matmul::{Acts, matmul, needs_q};
use crate::quant::dequantize_row;

/// Keys and values of one sequence, per layer, `[position][kv_dim]` in f32. Memory grows with
/// the tokens actually cached, up to `capacity`.
#[derive(Debug)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    capacity: usize,
    len: usize,
}

impl KvCache {
    pub(super) fn new(c: &Config, capacity: usize) -> Self {
        Self {
            k: vec![Vec::new(); c.n_layers],
            v: vec![Vec::new(); c.n_layers],
            capacity,
            len: 0,
        }
    }

    /// Tokens cached so far.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Forgets everything after the first `len` tokens.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    Last,
    All,
}

impl Model {
    /// Runs `tokens` at positions `cache.len()..`, appends them to the cache and returns logits
    /// (`vocab` values for the last token, or for every token with [`Logits::All`]).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, which: Logits) -> Result<Vec<f32>> {
        let c = &self.config;
        if tokens.is_empty() {
            return Err(EngineError::InvalidRequest("no tokens to run".into()));
        }
        if cache.len + tokens.len() > cache.capacity {
            return Err(EngineError::InvalidRequest(format!(
                "{} tokens after {} cached exceed the cache of {} tokens (model context {})",
                tokens.len(),
                cache.len,
                cache.capacity,
                c.context_len
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(EngineError::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab
            )));
        }
        Ok(self.pool.install(|| self.run(tokens, cache, which)))
    }

    fn run(&self, tokens: &[u32], cache: &mut KvCache, which: Logits) -> Vec<f32> {
        let (c, w, k) = (&self.config, &self.weights, self.kernels);
        let n = tokens.len();
        let pos0 = cache.len;
        let (dim, qd, kvd) = (c.dim, c.q_dim(), c.kv_dim());

        let mut x = vec![0f32; n * dim];
        x.par_chunks_mut(dim)
            .zip(tokens.par_iter())
            .for_each(|(row, &t)| {
                dequantize_row(w.embed.dtype, w.embed.row(t as usize), row);
            });

        let mut acts = Acts::default();
        let (mut q, mut kk, mut vv) =
            (vec![0f32; n * qd], vec![0f32; n * kvd], vec![0f32; n * kvd]);
        let mut att = vec![0f32; n * qd];
        let mut proj = vec![0f32; n * dim];
        let (mut gate, mut up) = (vec![0f32; n * c.ffn_dim], vec![0f32; n * c.ffn_dim]);

        for (li, l) in w.layers.iter().enumerate() {
            rms_norm_into(&x, &l.attn_norm, c.norm_eps, dim, &mut acts.f);
            acts.prepare(n, dim, needs_q(&[&l.wq, &l.wk, &l.wv]));
            matmul(
                k,
                &[&l.wq, &l.wk, &l.wv],
                &acts,
                &mut [&mut q, &mut kk, &mut vv],
            );
            for (buf, b) in [(&mut q, &l.bq), (&mut kk, &l.bk), (&mut vv, &l.bv)] {
                if let Some(b) = b {
                    buf.chunks_mut(b.len())
                        .for_each(|r| r.iter_mut().zip(b).for_each(|(x, b)| *x += b));
                }
            }
            self.rope(&mut q, c.n_heads, pos0);
            self.rope(&mut kk, c.n_kv_heads, pos0);
            for (store, new) in [(&mut cache.k[li], &kk), (&mut cache.v[li], &vv)] {
                store.truncate(pos0 * kvd);
                store.extend_from_slice(new);
            }
            attention(c, &q, &cache.k[li], &cache.v[li], pos0, &mut att);

            acts.f.clear();
            acts.f.extend_from_slice(&att);
            acts.prepare(n, qd, needs_q(&[&l.wo]));
            matmul(k, &[&l.wo], &acts, &mut [&mut proj]);
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);

            rms_norm_into(&x, &l.ffn_norm, c.norm_eps, dim, &mut acts.f);
            acts.prepare(n, dim, needs_q(&[&l.w_gate, &l.w_up]));
            matmul(k, &[&l.w_gate, &l.w_up], &acts, &mut [&mut gate, &mut up]);
            acts.f.clear();
            acts.f.extend(
                gate.iter()
                    .zip(&up)
                    .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u),
            );
            acts.prepare(n, c.ffn_dim, needs_q(&[&l.w_down]));
            matmul(k, &[&l.w_down], &acts, &mut [&mut proj]);
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);
        }
        cache.len += n;

        let rows = match which {
            Logits::Last => &x[(n - 1) * dim..],
            Logits::All => &x[..],
        };
        rms_norm_into(rows, &w.out_norm, c.norm_eps, dim, &mut acts.f);
        let m = rows.len() / dim;
        acts.prepare(m, dim, needs_q(&[&w.output]));
        let mut logits = vec![0f32; m * c.vocab];
        matmul(k, &[&w.output], &acts, &mut [&mut logits]);
        logits
    }

    /// Rotates the first `rope_dim` dims of each head of `x` (`n` rows of `heads` heads).
    fn rope(&self, x: &mut [f32], heads: usize, pos0: usize) {
        let c = &self.config;
        let hd = c.head_dim;
        let half = c.rope_dim / 2;
        x.par_chunks_mut(heads * hd)
            .enumerate()
            .for_each(|(t, row)| {
                let pos = (pos0 + t) as f64;
                let cs: Vec<(f32, f32)> = self
                    .inv_freq
                    .iter()
                    .map(|&f| {
                        let (s, c) = (pos * f64::from(f)).sin_cos();
                        (c as f32, s as f32)
                    })
                    .collect();
                for head in row.chunks_mut(hd) {
                    for (i, &(cos, sin)) in cs.iter().enumerate() {
                        let (a, b) = match c.rope_layout {
                            RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                            RopeLayout::Halves => (i, i + half),
                        };
                        let (x0, x1) = (head[a], head[b]);
                        head[a] = x0 * cos - x1 * sin;
                        head[b] = x0 * sin + x1 * cos;
                    }
                }
            });
    }
}

/// `out = x / rms(x) * w`, row by row.
fn rms_norm_into(x: &[f32], w: &[f32], eps: f32, dim: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(x.len(), 0.0);
    for (o, r) in out.chunks_mut(dim).zip(x.chunks(dim)) {
        let ms = r.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let s = 1.0 / (ms + eps).sqrt();
        o.iter_mut()
            .zip(r)
            .zip(w)
            .for_each(|((o, x), w)| *o = x * s * w);
    }
}

/// Dot product with 8 independent accumulators (vectorizes without fast-math).
#[inline]
fn fdot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Causal attention of the `n` new queries (positions `pos0..`) over the cached keys/values.
fn attention(c: &Config, q: &[f32], kc: &[f32], vc: &[f32], pos0: usize, out: &mut [f32]) {
    let (hd, kvd) = (c.head_dim, c.kv_dim());
    let group = c.n_heads / c.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(hd).enumerate().for_each(|(idx, o)| {
        let (t, h) = (idx / c.n_heads, idx % c.n_heads);
        let kvh = h / group;
        let qh = &q[idx * hd..(idx + 1) * hd];
        let len = pos0 + t + 1;
        let mut scores: Vec<f32> = (0..len)
            .map(|j| fdot(qh, &kc[j * kvd + kvh * hd..][..hd]) * scale)
            .collect();
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let mut sum = 0f32;
        for s in &mut scores {
            *s = (*s - max).exp();
            sum += *s;
        }
        o.fill(0.0);
        for (j, s) in scores.iter().enumerate() {
            let p = s / sum;
            o.iter_mut()
                .zip(&vc[j * kvd + kvh * hd..][..hd])
                .for_each(|(o, v)| *o += p * v);
        }
    });
}
