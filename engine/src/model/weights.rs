//! The weights of a llama/qwen2 model, fetched by logical name from a GGUF file or an HF
//! checkpoint, shape-checked against the [`Config`]. Norms and biases are expanded to f32; the
//! matrices stay in their stored format (memory-mapped).

use std::path::Path;

use super::config::{Arch, Config};
use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;
use crate::quant::dequantize_row;
use crate::safetensors::SafetensorsDir;
use crate::tensor::Weight;

pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: Weight,
    pub wk: Weight,
    pub wv: Weight,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub wo: Weight,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Weight,
    pub w_up: Weight,
    pub w_down: Weight,
}

pub struct Weights {
    pub embed: Weight,
    pub layers: Vec<LayerWeights>,
    pub out_norm: Vec<f32>,
    /// The output projection; the embedding itself when tied.
    pub output: Weight,
}

/// GGUF tensor names and their HF checkpoint names, outside the layers and per layer.
const GLOBAL_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];
const LAYER_NAMES: [(&str, &str); 12] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_q.bias", "self_attn.q_proj.bias"),
    ("attn_k.bias", "self_attn.k_proj.bias"),
    ("attn_v.bias", "self_attn.v_proj.bias"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// The HF checkpoint name of a GGUF tensor name (`blk.3.attn_q.weight` →
/// `model.layers.3.self_attn.q_proj.weight`), if it is one the engine loads.
pub fn hf_tensor_name(gguf: &str) -> Option<String> {
    if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == gguf) {
        return Some(hf.to_string());
    }
    let (layer, t) = gguf.strip_prefix("blk.")?.split_once('.')?;
    let (_, hf) = LAYER_NAMES.iter().find(|(g, _)| *g == t)?;
    Some(format!("model.layers.{layer}.{hf}"))
}

/// Where weights come from.
pub enum Source<'a> {
    Gguf(&'a GgufFile),
    Hf(&'a SafetensorsDir),
}

/// Logical tensor names.
#[derive(Clone, Copy)]
enum Name {
    Embed,
    OutNorm,
    Output,
    Layer(usize, &'static str),
}

impl Source<'_> {
    fn path(&self) -> &Path {
        match self {
            Source::Gguf(f) => &f.path,
            Source::Hf(d) => &d.dir,
        }
    }

    fn name(&self, n: Name) -> String {
        let gguf = match n {
            Name::Embed => "token_embd.weight".into(),
            Name::OutNorm => "output_norm.weight".into(),
            Name::Output => "output.weight".into(),
            Name::Layer(i, t) => format!("blk.{i}.{t}"),
        };
        match self {
            Source::Gguf(_) => gguf,
            Source::Hf(_) => hf_tensor_name(&gguf).unwrap_or(gguf),
        }
    }

    fn has(&self, n: Name) -> bool {
        let name = self.name(n);
        match self {
            Source::Gguf(f) => f.tensor_info(&name).is_some(),
            Source::Hf(d) => d.has(&name),
        }
    }

    /// The tensor, checked to be `rows` x `cols`.
    fn matrix(&self, n: Name, rows: usize, cols: usize) -> Result<Weight> {
        let name = self.name(n);
        let w = match self {
            Source::Gguf(f) => f.weight(&name)?,
            Source::Hf(d) => d.weight(&name)?,
        };
        if (w.rows, w.cols) != (rows, cols) {
            return Err(EngineError::format(
                self.path(),
                &name,
                format!(
                    "shape is {} x {} (rows x columns), expected {rows} x {cols}",
                    w.rows, w.cols
                ),
            ));
        }
        Ok(w)
    }

    fn vector(&self, n: Name, len: usize) -> Result<Vec<f32>> {
        let w = self.matrix(n, 1, len)?;
        let mut out = vec![0f32; len];
        dequantize_row(w.dtype, w.row(0), &mut out);
        Ok(out)
    }

    fn opt_vector(&self, n: Name, len: usize) -> Result<Option<Vec<f32>>> {
        self.has(n).then(|| self.vector(n, len)).transpose()
    }
}

impl Weights {
    pub fn load(src: &Source<'_>, c: &Config) -> Result<Self> {
        let embed = src.matrix(Name::Embed, c.vocab, c.dim)?;
        let output = if src.has(Name::Output) {
            src.matrix(Name::Output, c.vocab, c.dim)?
        } else {
            embed.clone()
        };
        let (q, kv) = (c.q_dim(), c.kv_dim());
        let layers = (0..c.n_layers)
            .map(|i| {
                let l = |t| Name::Layer(i, t);
                let bias = |t, n| {
                    if c.arch == Arch::Qwen2 {
                        src.vector(l(t), n).map(Some)
                    } else {
                        src.opt_vector(l(t), n)
                    }
                };
                Ok(LayerWeights {
                    attn_norm: src.vector(l("attn_norm.weight"), c.dim)?,
                    wq: src.matrix(l("attn_q.weight"), q, c.dim)?,
                    wk: src.matrix(l("attn_k.weight"), kv, c.dim)?,
                    wv: src.matrix(l("attn_v.weight"), kv, c.dim)?,
                    bq: bias("attn_q.bias", q)?,
                    bk: bias("attn_k.bias", kv)?,
                    bv: bias("attn_v.bias", kv)?,
                    wo: src.matrix(l("attn_output.weight"), c.dim, q)?,
                    ffn_norm: src.vector(l("ffn_norm.weight"), c.dim)?,
                    w_gate: src.matrix(l("ffn_gate.weight"), c.ffn_dim, c.dim)?,
                    w_up: src.matrix(l("ffn_up.weight"), c.ffn_dim, c.dim)?,
                    w_down: src.matrix(l("ffn_down.weight"), c.dim, c.ffn_dim)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed,
            layers,
            out_norm: src.vector(Name::OutNorm, c.dim)?,
            output,
        })
    }

    /// Every matrix in the layout `k` runs fastest on. The embedding table stays as stored (rows
    /// are looked up, not multiplied); a tied output projection gets its own repacked copy.
    pub fn for_kernels(self, k: &crate::quant::Kernels) -> Self {
        let layers = self
            .layers
            .into_iter()
            .map(|l| LayerWeights {
                wq: l.wq.for_kernels(k),
                wk: l.wk.for_kernels(k),
                wv: l.wv.for_kernels(k),
                wo: l.wo.for_kernels(k),
                w_gate: l.w_gate.for_kernels(k),
                w_up: l.w_up.for_kernels(k),
                w_down: l.w_down.for_kernels(k),
                ..l
            })
            .collect();
        Self {
            output: self.output.for_kernels(k),
            layers,
            ..self
        }
    }

    /// Bytes of weights read to decode one token (every matrix once, one embedding row).
    pub fn bytes_per_token(&self) -> usize {
        let per_layer: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
                    .iter()
                    .map(|w| w.nbytes())
                    .sum::<usize>()
            })
            .sum();
        per_layer + self.output.nbytes() + self.embed.row_bytes()
    }
}
