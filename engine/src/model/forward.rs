//! The batched forward pass: any number of sequences, each contributing a chunk of new tokens
//! (a prompt chunk or one decode token), run together. Per layer: RMSNorm → Q/K/V (+bias) →
//! RoPE → keys/values written to their paged slots → causal GQA attention of each new token over
//! its own sequence's blocks → output projection → RMSNorm → SwiGLU MLP; then the final norm and
//! logits for the rows that want them. Weight products run once per step over every token of
//! every sequence ([`crate::matmul`]), so the weights are read once per step, not per sequence.
//!
//! Each output row depends only on its own sequence: the products, norms and attention of a row
//! never mix in another row's numbers, so a sequence gets bit-identical logits alone, in any
//! batch, or recomputed after preemption.

use rayon::prelude::*;

use super::Model;
use super::attention::{Batch, attention};
use super::config::{Config, RopeLayout};
use super::elementwise::{add_into, rms_norm_into, swiglu_into};
use crate::error::{EngineError, Result};
use crate::kv::{DEFAULT_BLOCK_SIZE, KvDType, KvLayout, KvStore};
use crate::matmul::{Acts, matmul, needs_q};
use crate::quant::dequantize_row;

/// Which positions of a chunk get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

/// One sequence's part of a batched step.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    /// New tokens, at positions `start..start + tokens.len()`.
    pub tokens: &'a [u32],
    /// Tokens of this sequence already in the KV store.
    pub start: usize,
    /// The sequence's block table; it must cover `start + tokens.len()` slots.
    pub blocks: &'a [u32],
    pub logits: Logits,
}

/// The KV cache of a single sequence with its own small f32 store, for callers that run one
/// sequence at a time (`generate`, reference checks). The batched engine shares one store.
#[derive(Debug)]
pub struct KvCache {
    store: KvStore,
    blocks: Vec<u32>,
    capacity: usize,
    len: usize,
}

impl KvCache {
    pub(super) fn new(c: &Config, capacity: usize) -> Self {
        let layout = KvLayout::for_model(c, DEFAULT_BLOCK_SIZE, KvDType::F32);
        let n = capacity.div_ceil(DEFAULT_BLOCK_SIZE);
        Self {
            store: KvStore::new(layout, n),
            blocks: (0..n as u32).collect(),
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

impl Model {
    /// Runs `tokens` at positions `cache.len()..`, appends them to the cache and returns logits
    /// (`vocab` values for the last token, or for every token with [`Logits::All`]).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, which: Logits) -> Result<Vec<f32>> {
        if cache.len + tokens.len() > cache.capacity {
            return Err(EngineError::InvalidRequest(format!(
                "{} tokens after {} cached exceed the cache of {} tokens (model context {})",
                tokens.len(),
                cache.len,
                cache.capacity,
                self.config.context_len
            )));
        }
        let chunk = SeqChunk {
            tokens,
            start: cache.len,
            blocks: &cache.blocks,
            logits: which,
        };
        let out = self.forward_batch(&[chunk], &mut cache.store)?;
        cache.len += tokens.len();
        Ok(out)
    }

    /// Runs one step over every chunk, writing their keys and values into `kv`, and returns the
    /// logits the chunks asked for, `vocab` values per row, in chunk order.
    pub fn forward_batch(&self, seqs: &[SeqChunk<'_>], kv: &mut KvStore) -> Result<Vec<f32>> {
        check_chunks(&self.config, kv.layout(), kv.num_blocks(), seqs)?;
        Ok(self.pool.install(|| self.run(seqs, kv)))
    }

    fn run(&self, seqs: &[SeqChunk<'_>], kv: &mut KvStore) -> Vec<f32> {
        let (c, w, k) = (&self.config, &self.weights, self.kernels);
        let rows = Rows::new(seqs, kv.layout().block_size);
        let n = rows.pos.len();
        let (dim, qd, kvd) = (c.dim, c.q_dim(), c.kv_dim());

        let mut x = vec![0f32; n * dim];
        x.par_chunks_mut(dim)
            .zip(rows.tokens.par_iter())
            .for_each(|(row, &t)| {
                dequantize_row(w.embed.dtype, w.embed.row(t as usize), row);
            });
        let rope = rope_table(&self.inv_freq, &rows.pos);

        let mut acts = Acts::default();
        acts.q.bits = self.activations();
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
            self.rope(&mut q, c.n_heads, &rope);
            self.rope(&mut kk, c.n_kv_heads, &rope);
            for t in 0..n {
                let (block, slot) = rows.slot[t];
                kv.write(
                    li,
                    block,
                    slot,
                    &kk[t * kvd..(t + 1) * kvd],
                    &vv[t * kvd..(t + 1) * kvd],
                );
            }
            let batch = Batch {
                seqs,
                seq: &rows.seq,
                pos: &rows.pos,
            };
            attention(c, &q, kv, li, &batch, &mut att);

            acts.f.clear();
            acts.f.extend_from_slice(&att);
            acts.prepare(n, qd, needs_q(&[&l.wo]));
            matmul(k, &[&l.wo], &acts, &mut [&mut proj]);
            add_into(&mut x, &proj);

            rms_norm_into(&x, &l.ffn_norm, c.norm_eps, dim, &mut acts.f);
            acts.prepare(n, dim, needs_q(&[&l.w_gate, &l.w_up]));
            matmul(k, &[&l.w_gate, &l.w_up], &acts, &mut [&mut gate, &mut up]);
            acts.f.clear();
            swiglu_into(&gate, &up, &mut acts.f);
            acts.prepare(n, c.ffn_dim, needs_q(&[&l.w_down]));
            matmul(k, &[&l.w_down], &acts, &mut [&mut proj]);
            add_into(&mut x, &proj);
        }

        let picked: Vec<f32> = rows
            .logit_rows
            .iter()
            .flat_map(|&t| x[t * dim..(t + 1) * dim].iter().copied())
            .collect();
        let m = rows.logit_rows.len();
        if m == 0 {
            return Vec::new();
        }
        rms_norm_into(&picked, &w.out_norm, c.norm_eps, dim, &mut acts.f);
        acts.prepare(m, dim, needs_q(&[&w.output]));
        let mut logits = vec![0f32; m * c.vocab];
        matmul(k, &[&w.output], &acts, &mut [&mut logits]);
        logits
    }

    /// Rotates the first `rope_dim` dims of each head of `x` (rows of `heads` heads).
    fn rope(&self, x: &mut [f32], heads: usize, table: &[f32]) {
        let c = &self.config;
        let hd = c.head_dim;
        let half = c.rope_dim / 2;
        x.par_chunks_mut(heads * hd)
            .zip(table.par_chunks(2 * half))
            .with_min_len(16)
            .for_each(|(row, cs)| {
                let (cos, sin) = cs.split_at(half);
                for head in row.chunks_mut(hd) {
                    match c.rope_layout {
                        RopeLayout::Interleaved => {
                            for (p, (&cos, &sin)) in
                                head.chunks_exact_mut(2).zip(cos.iter().zip(sin))
                            {
                                let (x0, x1) = (p[0], p[1]);
                                p[0] = x0 * cos - x1 * sin;
                                p[1] = x0 * sin + x1 * cos;
                            }
                        }
                        RopeLayout::Halves => {
                            // Same arithmetic per pair; laid out so it runs lane-parallel.
                            let (a, b) = head[..2 * half].split_at_mut(half);
                            for i in 0..half {
                                let (x0, x1) = (a[i], b[i]);
                                a[i] = x0 * cos[i] - x1 * sin[i];
                                b[i] = x0 * sin[i] + x1 * cos[i];
                            }
                        }
                    }
                }
            });
    }
}

/// Checks a step's chunks against the model and a KV store of `num_blocks` blocks in `layout`:
/// what every backend checks before it runs anything.
pub(crate) fn check_chunks(
    c: &Config,
    layout: &KvLayout,
    num_blocks: usize,
    seqs: &[SeqChunk<'_>],
) -> Result<()> {
    let want = KvLayout::for_model(c, layout.block_size, layout.dtype);
    if *layout != want {
        return Err(EngineError::InvalidRequest(
            "the KV store was made for another model".into(),
        ));
    }
    if seqs.is_empty() || seqs.iter().any(|s| s.tokens.is_empty()) {
        return Err(EngineError::InvalidRequest("no tokens to run".into()));
    }
    let bs = want.block_size;
    for s in seqs {
        let end = s.start + s.tokens.len();
        if end > c.context_len {
            return Err(EngineError::InvalidRequest(format!(
                "position {end} is past the model's context of {} tokens",
                c.context_len
            )));
        }
        if s.blocks.len() * bs < end || s.blocks.iter().any(|&b| b as usize >= num_blocks) {
            return Err(EngineError::InvalidRequest(format!(
                "the block table does not cover {end} tokens of the KV store"
            )));
        }
        if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(EngineError::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab
            )));
        }
    }
    Ok(())
}

/// Per row, the cosines then the sines of every rotated pair at the row's position (in f64,
/// rounded to f32).
pub(crate) fn rope_table(inv_freq: &[f32], pos: &[usize]) -> Vec<f32> {
    let half = inv_freq.len();
    let mut t = vec![0f32; pos.len() * 2 * half];
    for (row, &p) in t.chunks_mut(2 * half).zip(pos) {
        let (cos, sin) = row.split_at_mut(half);
        for ((c, s), &f) in cos.iter_mut().zip(sin).zip(inv_freq) {
            let (sn, cs) = (p as f64 * f64::from(f)).sin_cos();
            (*c, *s) = (cs as f32, sn as f32);
        }
    }
    t
}

/// The batch flattened to rows: each new token's id, sequence, position and KV slot.
pub(crate) struct Rows {
    pub tokens: Vec<u32>,
    pub seq: Vec<usize>,
    pub pos: Vec<usize>,
    pub slot: Vec<(u32, usize)>,
    pub logit_rows: Vec<usize>,
}

impl Rows {
    pub(crate) fn new(seqs: &[SeqChunk<'_>], bs: usize) -> Self {
        let mut r = Rows {
            tokens: Vec::new(),
            seq: Vec::new(),
            pos: Vec::new(),
            slot: Vec::new(),
            logit_rows: Vec::new(),
        };
        for (i, s) in seqs.iter().enumerate() {
            let first = r.pos.len();
            for (j, &t) in s.tokens.iter().enumerate() {
                let p = s.start + j;
                r.tokens.push(t);
                r.seq.push(i);
                r.pos.push(p);
                r.slot.push((s.blocks[p / bs], p % bs));
            }
            match s.logits {
                Logits::None => {}
                Logits::Last => r.logit_rows.push(r.pos.len() - 1),
                Logits::All => r.logit_rows.extend(first..r.pos.len()),
            }
        }
        r
    }
}
