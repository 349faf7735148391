//! The forward pass on a GPU: the CPU backend's step ([`crate::model::forward`]) with every
//! matrix, norm, rotation, KV write and attention done by the kernels of [`super::runtime`],
//! and the KV cache in device memory. Only the step's small index arrays go up and the logits
//! of the rows that want them come down.
//!
//! A step of fewer than [`super::DEFAULT_GEMM_ROWS`] rows (decode of small batches) runs its products
//! in the matrix-vector kernels, which read quantized weights directly with the CPU backend's
//! integer arithmetic; a larger step (prefill chunks, large decode batches) goes through
//! cuBLAS on dequantized tiles ([`super::gemm`]).

use std::path::Path;

use cudarc::driver::CudaSlice;

use super::DEFAULT_GEMM_ROWS;
use super::runtime::{Gpu, GpuKv, GpuQActs, GpuWeight, KvShape};
use crate::error::{EngineError, Result};
use crate::kv::{KvDType, KvLayout};
use crate::model::config::{Config, RopeLayout};
use crate::model::forward::{Rows, SeqChunk, check_chunks, rope_table};
use crate::model::weights::Weights;
use crate::quant::wants_q;

fn gpu_err(e: String) -> EngineError {
    EngineError::Device(e)
}

struct Layer {
    attn_norm: CudaSlice<f32>,
    wq: GpuWeight,
    wk: GpuWeight,
    wv: GpuWeight,
    bq: Option<CudaSlice<f32>>,
    bk: Option<CudaSlice<f32>>,
    bv: Option<CudaSlice<f32>>,
    wo: GpuWeight,
    ffn_norm: CudaSlice<f32>,
    w_gate: GpuWeight,
    w_up: GpuWeight,
    w_down: GpuWeight,
}

/// How big the KV cache is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvSize {
    Blocks(usize),
    /// This fraction of the device memory still free once the weights are in.
    FreeFraction(f64),
}

/// A model on one GPU, with its KV cache there.
pub struct CudaModel {
    pub config: Config,
    gpu: Gpu,
    embed: GpuWeight,
    layers: Vec<Layer>,
    /// One cache per layer.
    kv: Vec<GpuKv>,
    out_norm: CudaSlice<f32>,
    output: GpuWeight,
    inv_freq: Vec<f32>,
    layout: KvLayout,
    num_blocks: usize,
    /// Steps of at least this many rows use cuBLAS; `None`: never.
    gemm_rows: Option<usize>,
}

impl CudaModel {
    /// Uploads `weights` (as stored: not repacked for the CPU) to `gpu`, then allocates a KV
    /// cache of `size` in `block_size`-token blocks of `kv_dtype`.
    pub fn new(
        gpu: Gpu,
        config: Config,
        weights: &Weights,
        block_size: usize,
        kv_dtype: KvDType,
        size: KvSize,
    ) -> Result<Self> {
        let layout = KvLayout::for_model(&config, block_size, kv_dtype);
        let up = |v: &[f32]| gpu.upload(v).map_err(gpu_err);
        let w = |m: &crate::tensor::Weight| gpu.weight(m).map_err(gpu_err);
        let mut layers = Vec::with_capacity(weights.layers.len());
        for l in &weights.layers {
            layers.push(Layer {
                attn_norm: up(&l.attn_norm)?,
                wq: w(&l.wq)?,
                wk: w(&l.wk)?,
                wv: w(&l.wv)?,
                bq: l.bq.as_deref().map(up).transpose()?,
                bk: l.bk.as_deref().map(up).transpose()?,
                bv: l.bv.as_deref().map(up).transpose()?,
                wo: w(&l.wo)?,
                ffn_norm: up(&l.ffn_norm)?,
                w_gate: w(&l.w_gate)?,
                w_up: w(&l.w_up)?,
                w_down: w(&l.w_down)?,
            });
        }
        let (embed, out_norm, output) = (
            w(&weights.embed)?,
            up(&weights.out_norm)?,
            w(&weights.output)?,
        );
        let num_blocks = match size {
            KvSize::Blocks(n) => n,
            KvSize::FreeFraction(f) => {
                let (free, _) = gpu.mem_info().map_err(gpu_err)?;
                (free as f64 * f) as usize / layout.block_bytes()
            }
        };
        if num_blocks == 0 {
            return Err(EngineError::OutOfMemory(format!(
                "no room for a KV cache on {}: one block of {block_size} tokens takes {} bytes \
                 (raise the memory fraction, or use a smaller model or block)",
                gpu.info.describe(),
                layout.block_bytes()
            )));
        }
        let shape = shape(&layout, num_blocks);
        let kv = (0..layout.layers)
            .map(|_| gpu.kv(shape, kv_dtype == KvDType::F16))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(gpu_err)?;
        tracing::info!(gpu = %gpu.info.describe(), blocks = num_blocks, mib = (num_blocks * layout.block_bytes()) >> 20, "KV cache on the GPU");
        Ok(Self {
            embed,
            out_norm,
            output,
            layers,
            kv,
            inv_freq: config.rope_inv_freq(),
            config,
            gpu,
            layout,
            num_blocks,
            gemm_rows: Some(DEFAULT_GEMM_ROWS),
        })
    }

    /// Loads a model file onto GPU `ordinal` with a KV cache of `size`.
    pub fn load(
        path: &Path,
        ordinal: usize,
        cache_dir: &Path,
        block_size: usize,
        kv_dtype: KvDType,
        size: KvSize,
    ) -> Result<Self> {
        let (config, weights) = crate::model::load_parts(path)?;
        let gpu = Gpu::open(ordinal, cache_dir).map_err(gpu_err)?;
        Self::new(gpu, config, &weights, block_size, kv_dtype, size)
    }

    /// Steps of at least `rows` rows multiply through cuBLAS (`None`: never).
    pub fn set_gemm_rows(&mut self, rows: Option<usize>) {
        self.gemm_rows = rows;
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }
    pub fn layout(&self) -> &KvLayout {
        &self.layout
    }

    /// One step over every chunk, as [`crate::Model::forward_batch`]: the keys and values go
    /// into this model's device cache, and the logits the chunks asked for come back.
    pub fn forward_batch(&mut self, seqs: &[SeqChunk<'_>]) -> Result<Vec<f32>> {
        check_chunks(&self.config, &self.layout, self.num_blocks, seqs)?;
        self.run(seqs).map_err(gpu_err)
    }

    fn run(&mut self, seqs: &[SeqChunk<'_>]) -> std::result::Result<Vec<f32>, String> {
        let c = &self.config;
        let g = &self.gpu;
        let shape = shape(&self.layout, self.num_blocks);
        let rows = Rows::new(seqs, self.layout.block_size);
        let n = rows.pos.len();
        let (dim, qd, kvd, ffn) = (c.dim, c.q_dim(), c.kv_dim(), c.ffn_dim);

        // The step's index arrays.
        let ids: Vec<i32> = rows.tokens.iter().map(|&t| t as i32).collect();
        let slot_block: Vec<i32> = rows.slot.iter().map(|&(b, _)| b as i32).collect();
        let slot_index: Vec<i32> = rows.slot.iter().map(|&(_, s)| s as i32).collect();
        let mut tables = Vec::new();
        let mut starts = Vec::with_capacity(seqs.len());
        for s in seqs {
            starts.push(tables.len() as i32);
            tables.extend(s.blocks.iter().map(|&b| b as i32));
        }
        let table_start: Vec<i32> = rows.seq.iter().map(|&s| starts[s]).collect();
        let pos: Vec<i32> = rows.pos.iter().map(|&p| p as i32).collect();
        let max_len = rows.pos.iter().max().map_or(1, |p| p + 1);
        let (ids, slot_block, slot_index) = (
            g.upload(&ids)?,
            g.upload(&slot_block)?,
            g.upload(&slot_index)?,
        );
        let (tables, table_start, pos) =
            (g.upload(&tables)?, g.upload(&table_start)?, g.upload(&pos)?);
        let rope = g.upload(&rope_table(&self.inv_freq, &rows.pos))?;
        let half = c.rope_dim / 2;
        let halves = c.rope_layout == RopeLayout::Halves;

        let mut x = g.zeros::<f32>(n * dim)?;
        g.rows(&self.embed, &ids, n, &mut x)?;
        let mut h = g.zeros::<f32>(n * dim.max(qd).max(ffn))?;
        let (mut q, mut k, mut v) = (
            g.zeros::<f32>(n * qd)?,
            g.zeros::<f32>(n * kvd)?,
            g.zeros::<f32>(n * kvd)?,
        );
        let mut att = g.zeros::<f32>(n * qd)?;
        let mut proj = g.zeros::<f32>(n * dim)?;
        let (mut gate, mut up) = (g.zeros::<f32>(n * ffn)?, g.zeros::<f32>(n * ffn)?);

        let mm = Products::new(g, self.gemm_rows, n);
        for (l, kv) in self.layers.iter().zip(self.kv.iter_mut()) {
            g.rms_norm(&x, &l.attn_norm, c.norm_eps, n, dim, &mut h)?;
            let qa = mm.quantized(&h, dim, &[&l.wq, &l.wk, &l.wv])?;
            mm.run(&l.wq, &h, qa.as_ref(), &mut q)?;
            mm.run(&l.wk, &h, qa.as_ref(), &mut k)?;
            mm.run(&l.wv, &h, qa.as_ref(), &mut v)?;
            for (buf, b, width) in [
                (&mut q, &l.bq, qd),
                (&mut k, &l.bk, kvd),
                (&mut v, &l.bv, kvd),
            ] {
                if let Some(b) = b {
                    g.add_bias(buf, b, n * width)?;
                }
            }
            g.rope(&mut q, n, c.n_heads, c.head_dim, half, &rope, halves)?;
            g.rope(&mut k, n, c.n_kv_heads, c.head_dim, half, &rope, halves)?;
            g.kv_write(kv, shape, &k, &v, &slot_block, &slot_index, n)?;
            g.attention(
                &q,
                kv,
                shape,
                c.n_heads,
                &tables,
                &table_start,
                &pos,
                n,
                max_len,
                &mut att,
                super::runtime::ATTENTION_SCRATCH,
            )?;
            let qa = mm.quantized(&att, qd, &[&l.wo])?;
            mm.run(&l.wo, &att, qa.as_ref(), &mut proj)?;
            g.add(&mut x, &proj, n * dim)?;

            g.rms_norm(&x, &l.ffn_norm, c.norm_eps, n, dim, &mut h)?;
            let qa = mm.quantized(&h, dim, &[&l.w_gate, &l.w_up])?;
            mm.run(&l.w_gate, &h, qa.as_ref(), &mut gate)?;
            mm.run(&l.w_up, &h, qa.as_ref(), &mut up)?;
            g.swiglu(&gate, &up, n * ffn, &mut h)?;
            let qa = mm.quantized(&h, ffn, &[&l.w_down])?;
            mm.run(&l.w_down, &h, qa.as_ref(), &mut proj)?;
            g.add(&mut x, &proj, n * dim)?;
        }

        let m = rows.logit_rows.len();
        if m == 0 {
            g.stream().synchronize().map_err(|e| format!("CUDA: {e}"))?;
            return Ok(Vec::new());
        }
        let mut picked = g.zeros::<f32>(m * dim)?;
        for (i, &t) in rows.logit_rows.iter().enumerate() {
            g.copy_rows(&x, t * dim, &mut picked, i * dim, dim)?;
        }
        g.rms_norm(&picked, &self.out_norm, c.norm_eps, m, dim, &mut h)?;
        let mm = Products::new(g, self.gemm_rows, m);
        let qa = mm.quantized(&h, dim, &[&self.output])?;
        let mut logits = g.zeros::<f32>(m * c.vocab)?;
        mm.run(&self.output, &h, qa.as_ref(), &mut logits)?;
        let mut out = g.download(&logits)?;
        out.truncate(m * c.vocab);
        Ok(out)
    }
}

fn shape(layout: &KvLayout, num_blocks: usize) -> KvShape {
    KvShape {
        kv_heads: layout.kv_heads,
        head_dim: layout.head_dim,
        block_size: layout.block_size,
        num_blocks,
    }
}

/// The products of one step of `rows` rows: through cuBLAS when the step is large enough and
/// cuBLAS is loaded, else in the matrix-vector kernels.
struct Products<'a> {
    g: &'a Gpu,
    rows: usize,
    gemm: bool,
}

impl<'a> Products<'a> {
    fn new(g: &'a Gpu, gemm_rows: Option<usize>, rows: usize) -> Self {
        let gemm = g.blas().is_some() && gemm_rows.is_some_and(|m| rows >= m);
        Self { g, rows, gemm }
    }

    /// The activations quantized when the matrix-vector kernels run and any of `ws` needs
    /// them (the CPU backend's rule).
    fn quantized(
        &self,
        x: &CudaSlice<f32>,
        cols: usize,
        ws: &[&GpuWeight],
    ) -> std::result::Result<Option<GpuQActs>, String> {
        if !self.gemm && ws.iter().any(|w| wants_q(w.dtype)) {
            self.g.quantize(x, self.rows, cols).map(Some)
        } else {
            Ok(None)
        }
    }

    fn run(
        &self,
        w: &GpuWeight,
        x: &CudaSlice<f32>,
        q: Option<&GpuQActs>,
        out: &mut CudaSlice<f32>,
    ) -> std::result::Result<(), String> {
        if self.gemm {
            self.g.gemm(w, x, self.rows, out)
        } else {
            self.g.matvec(w, x, q, self.rows, out)
        }
    }
}
