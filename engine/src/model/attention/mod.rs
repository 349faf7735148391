//! Paged causal attention for a batched step: each new token, for each KV head, attends over its
//! own sequence's blocks up to its position, for the query heads sharing that KV head (GQA).
//! Work items are (token, KV head) pairs, so threads split across sequences and heads alike.
//!
//! The two inner loops (query·key scores over a block, and probability-weighted values added
//! into the output) run on a [`Kernels`] pair picked once for the CPU: AVX2/FMA/F16C on x86-64,
//! portable code elsewhere. Each reads a block's keys or values once for every query head of the
//! group. Keys are stored transposed (see `kv::store`), so scores come out eight slots per
//! vector with no horizontal sums; values are summed in registers a few heads and 32 dims at a
//! time. A token's result depends only on its own sequence's keys and values, never on the
//! batch it runs in.

use std::sync::OnceLock;

use half::f16;
use rayon::prelude::*;

use super::SeqChunk;
use super::config::Config;
use crate::kv::{KvDType, KvStore};

#[cfg(target_arch = "x86_64")]
mod x86;

/// `out[h * stride + s] = q_h · k_s` for the first `slots` slots of one block of keys stored
/// transposed (`keys[d * bs + s]`, `bs` slots in all, as `f16` when the flag says so, else
/// f32) and the query heads `q` (`heads * hd`).
type ScoresFn = fn(k: &[u8], f16: bool, hd: usize, bs: usize, q: &[f32], out: &mut [f32], st: Span);
/// Which slots of a block to score, and the stride between heads' rows of the output.
#[derive(Clone, Copy, Debug)]
struct Span {
    slots: usize,
    stride: usize,
}
/// `o_h += sum_s p[h * stride + s] * v_s` over the `slots` value rows of one block.
type ValuesFn = fn(vals: &[u8], f16: bool, hd: usize, p: &[f32], stride: usize, o: &mut [f32]);
/// `x = softmax(x * scale)` in place (`scale > 0`).
type SoftmaxFn = fn(x: &mut [f32], scale: f32);

#[derive(Clone, Copy)]
struct Kernels {
    scores: ScoresFn,
    values: ValuesFn,
    softmax: SoftmaxFn,
    /// Asks for a block's data ahead of its use (a no-op where there is no such hint).
    prefetch: fn(data: &[u8]),
}

fn kernels() -> &'static Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    K.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if crate::quant::Kernels::detect().level != "scalar"
            && let Some(k) = x86::kernels()
        {
            return k;
        }
        Kernels {
            scores: scalar_scores,
            values: scalar_values,
            softmax: scalar_softmax,
            prefetch: |_| {},
        }
    })
}

fn scalar_softmax(x: &mut [f32], scale: f32) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s)) * scale;
    let mut sum = 0f32;
    for s in x.iter_mut() {
        *s = (*s * scale - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|s| *s *= inv);
}

/// Element `i` of stored data.
fn elem(data: &[u8], f16: bool, i: usize) -> f32 {
    if f16 {
        f16::from_le_bytes([data[2 * i], data[2 * i + 1]]).to_f32()
    } else {
        f32::from_le_bytes(data[4 * i..4 * i + 4].try_into().expect("4 bytes"))
    }
}

fn row(data: &[u8], f16: bool, hd: usize, s: usize, out: &mut [f32]) {
    for (d, o) in out.iter_mut().enumerate() {
        *o = elem(data, f16, s * hd + d);
    }
}

fn slots_of(data: &[u8], f16: bool, hd: usize) -> usize {
    data.len() / (hd * if f16 { 2 } else { 4 })
}

fn scalar_scores(
    keys: &[u8],
    f16: bool,
    hd: usize,
    bs: usize,
    q: &[f32],
    out: &mut [f32],
    st: Span,
) {
    assert!(st.slots <= bs && slots_of(keys, f16, hd) == bs);
    for s in 0..st.slots {
        for (h, qh) in q.chunks_exact(hd).enumerate() {
            out[h * st.stride + s] = qh
                .iter()
                .enumerate()
                .map(|(d, a)| a * elem(keys, f16, d * bs + s))
                .sum();
        }
    }
}

fn scalar_values(vals: &[u8], f16: bool, hd: usize, p: &[f32], stride: usize, o: &mut [f32]) {
    let mut v = vec![0f32; hd];
    for s in 0..slots_of(vals, f16, hd) {
        row(vals, f16, hd, s, &mut v);
        for (h, oh) in o.chunks_exact_mut(hd).enumerate() {
            let w = p[h * stride + s];
            oh.iter_mut().zip(&v).for_each(|(o, v)| *o += w * v);
        }
    }
}

/// Which tokens of the batch belong to which sequence, at which position.
pub(super) struct Batch<'a> {
    pub seqs: &'a [SeqChunk<'a>],
    /// Per token: index into `seqs`, and position in its sequence.
    pub seq: &'a [usize],
    pub pos: &'a [usize],
}

/// Attention of every token of the batch for one layer; `q` and `out` are `tokens * q_dim`.
pub(super) fn attention(
    c: &Config,
    q: &[f32],
    kv: &KvStore,
    layer: usize,
    b: &Batch<'_>,
    out: &mut [f32],
) {
    let k = kernels();
    let hd = c.head_dim;
    let group = c.n_heads / c.n_kv_heads;
    let bs = kv.layout().block_size;
    let f16 = kv.layout().dtype == KvDType::F16;
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(group * hd)
        .enumerate()
        .for_each_init(Vec::new, |scores, (idx, o)| {
            let (t, g) = (idx / c.n_kv_heads, idx % c.n_kv_heads);
            let blocks = b.seqs[b.seq[t]].blocks;
            let len = b.pos[t] + 1;
            let qs = &q[t * c.q_dim() + g * group * hd..][..group * hd];
            scores.clear();
            scores.resize(group * len, 0f32);
            let used = &blocks[..len.div_ceil(bs)];
            for (i, &blk) in used.iter().enumerate() {
                let span = Span {
                    slots: bs.min(len - i * bs),
                    stride: len,
                };
                if let Some(&next) = used.get(i + 1) {
                    (k.prefetch)(kv.keys(layer, next, g));
                }
                let keys = kv.keys(layer, blk, g);
                (k.scores)(keys, f16, hd, bs, qs, &mut scores[i * bs..], span);
            }
            for sc in scores.chunks_mut(len) {
                (k.softmax)(sc, scale);
            }
            o.fill(0.0);
            for (i, &blk) in used.iter().enumerate() {
                let slots = bs.min(len - i * bs);
                if let Some(&next) = used.get(i + 1) {
                    (k.prefetch)(kv.values(layer, next, g, bs.min(len - (i + 1) * bs)));
                }
                let vals = kv.values(layer, blk, g, slots);
                (k.values)(vals, f16, hd, &scores[i * bs..], len, o);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The CPU's kernels agree with the portable ones for both storage types and odd shapes.
    #[test]
    fn simd_kernels_match_the_portable_ones() {
        let k = kernels();
        let mut r = Rng::new(5);
        for (hd, heads, slots, bs) in [
            (64usize, 3usize, 16usize, 16usize),
            (64, 3, 9, 16),
            (128, 1, 7, 8),
            (64, 9, 1, 16),
            (32, 4, 5, 32),
            (72, 2, 13, 24),
            (40, 5, 3, 4),
            (16, 3, 17, 17),
        ] {
            for f16 in [true, false] {
                let n = bs * hd;
                let xs: Vec<f32> = (0..n).map(|_| r.symmetric(2.0)).collect();
                let data: Vec<u8> = if f16 {
                    xs.iter()
                        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                        .collect()
                } else {
                    xs.iter().flat_map(|&x| x.to_le_bytes()).collect()
                };
                let q: Vec<f32> = (0..heads * hd).map(|_| r.symmetric(1.0)).collect();
                let stride = slots + 3;
                let span = Span { slots, stride };
                // Sentinels: the kernels must not write past `slots` in any head's row.
                let (mut a, mut b) = (vec![7f32; heads * stride], vec![7f32; heads * stride]);
                (k.scores)(&data, f16, hd, bs, &q, &mut a, span);
                scalar_scores(&data, f16, hd, bs, &q, &mut b, span);
                for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                    assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "scores {x} vs {y}");
                    if i % stride >= slots {
                        assert_eq!(*x, 7.0, "score written past the block's slots");
                    }
                }
                let p: Vec<f32> = (0..heads * stride).map(|_| r.next_f32()).collect();
                let vals = &data[..slots * hd * if f16 { 2 } else { 4 }];
                let (mut a, mut b) = (vec![0.5f32; heads * hd], vec![0.5f32; heads * hd]);
                (k.values)(vals, f16, hd, &p, stride, &mut a);
                scalar_values(vals, f16, hd, &p, stride, &mut b);
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "values {x} vs {y}");
                }
            }
        }
        // Softmax over lengths around the vector width, with large, tiny and equal scores.
        for len in [1usize, 7, 8, 9, 33, 500] {
            let mut a: Vec<f32> = (0..len).map(|_| r.symmetric(60.0)).collect();
            a[len / 2] = 90.0;
            let mut b = a.clone();
            (k.softmax)(&mut a, 0.125);
            scalar_softmax(&mut b, 0.125);
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 2e-6 * (1e-3 + y.abs()),
                    "softmax {x} vs {y}"
                );
            }
            assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
}
