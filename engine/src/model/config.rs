//! Hyperparameters of a decoder-only transformer, read from GGUF metadata or HF `config.json`,
//! and validated so the forward pass can index without checks.

use std::path::Path;

use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;

/// Supported architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3, Mistral, TinyLlama, SmolLM.
    Llama,
    /// Qwen2: llama plus biases on Q, K and V.
    Qwen2,
}

impl Arch {
    pub fn parse(path: &Path, field: &str, name: &str) -> Result<Self> {
        match name {
            "llama" | "mistral" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            other => Err(EngineError::unsupported(
                path,
                field,
                format!(
                    "architecture `{other}` is not supported (expected llama, mistral or qwen2)"
                ),
            )),
        }
    }
}

/// Which dimensions RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs (2i, 2i+1): llama-architecture GGUF files (the converter permuted Q and K).
    Interleaved,
    /// Pairs (i, i + d/2) ("rotate half"): HF checkpoints and qwen2 GGUF files.
    Halves,
}

/// How RoPE frequencies are stretched for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f32,
    },
    /// Per-frequency divisors (Llama 3.1 style; GGUF `rope_freqs.weight`).
    Factors(Vec<f32>),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub arch: Arch,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub vocab: usize,
    pub context_len: usize,
    pub norm_eps: f32,
    pub rope_theta: f32,
    pub rope_dim: usize,
    pub rope_layout: RopeLayout,
    pub rope_scaling: RopeScaling,
}

impl Config {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Reads `{arch}.*` keys from a GGUF file; `vocab` comes from the embedding tensor.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch_name = f.str("general.architecture")?;
        let arch = Arch::parse(&f.path, "general.architecture", arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let usize_of = |k: &str| f.u64(&key(k)).map(|v| v as usize);
        let dim = usize_of("embedding_length")?;
        let n_heads = usize_of("attention.head_count")?;
        let n_kv_heads = f
            .opt_u64(&key("attention.head_count_kv"))?
            .map_or(n_heads, |v| v as usize);
        let head_dim = match f.opt_u64(&key("attention.key_length"))? {
            Some(v) => v as usize,
            None if n_heads > 0 => dim / n_heads,
            None => 0,
        };
        let vocab = f
            .tensor_info("token_embd.weight")
            .and_then(|t| t.dims.get(1))
            .copied()
            .unwrap_or(0) as usize;
        let scaling = match f.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
            None | Some("none") => RopeScaling::None,
            Some("linear") => {
                let factor = f.opt_f64(&key("rope.scaling.factor"))?.unwrap_or(1.0) as f32;
                RopeScaling::Linear { factor }
            }
            Some(other) => {
                return Err(EngineError::unsupported(
                    &f.path,
                    key("rope.scaling.type"),
                    format!("RoPE scaling `{other}` is not supported (expected none or linear)"),
                ));
            }
        };
        let cfg = Config {
            arch,
            dim,
            n_layers: usize_of("block_count")?,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim: usize_of("feed_forward_length")?,
            vocab,
            context_len: usize_of("context_length")?,
            norm_eps: f
                .opt_f64(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5) as f32,
            rope_theta: f.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0) as f32,
            rope_dim: f
                .opt_u64(&key("rope.dimension_count"))?
                .map_or(head_dim, |v| v as usize),
            rope_layout: if arch == Arch::Llama {
                RopeLayout::Interleaved
            } else {
                RopeLayout::Halves
            },
            rope_scaling: scaling,
        };
        cfg.validate(&f.path)?;
        Ok(cfg)
    }

    /// Reads an HF `config.json`.
    pub fn from_hf_json(path: &Path, json: &serde_json::Value) -> Result<Self> {
        let get = |k: &str| json.get(k).filter(|v| !v.is_null());
        let need = |k: &str| -> Result<usize> {
            get(k)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| {
                    EngineError::format(path, k, "missing or not a non-negative integer")
                })
        };
        let arch_name = get("model_type").and_then(|v| v.as_str()).unwrap_or("");
        let arch = Arch::parse(path, "model_type", arch_name)?;
        let dim = need("hidden_size")?;
        let n_heads = need("num_attention_heads")?;
        let n_kv_heads =
            get("num_key_value_heads").map_or(Ok(n_heads), |_| need("num_key_value_heads"))?;
        let head_dim = match get("head_dim") {
            Some(_) => need("head_dim")?,
            None => dim.checked_div(n_heads).unwrap_or(0),
        };
        let float = |k: &str, default: f64| get(k).and_then(|v| v.as_f64()).unwrap_or(default);
        let rope_scaling = match get("rope_scaling") {
            None => RopeScaling::None,
            Some(rs) => {
                let kind = rs
                    .get("rope_type")
                    .or_else(|| rs.get("type"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("");
                let factor = rs.get("factor").and_then(|v| v.as_f64()).unwrap_or(1.0) as f32;
                match kind {
                    "linear" => RopeScaling::Linear { factor },
                    "default" => RopeScaling::None,
                    "llama3" => {
                        let f = |k: &str, d: f64| {
                            rs.get(k).and_then(|v| v.as_f64()).unwrap_or(d) as f32
                        };
                        let theta = float("rope_theta", 10_000.0) as f32;
                        RopeScaling::Factors(llama3_factors(
                            theta,
                            head_dim,
                            factor,
                            f("low_freq_factor", 1.0),
                            f("high_freq_factor", 4.0),
                            f("original_max_position_embeddings", 8192.0),
                        ))
                    }
                    other => {
                        return Err(EngineError::unsupported(
                            path,
                            "rope_scaling.type",
                            format!(
                                "RoPE scaling `{other}` is not supported (expected linear or llama3)"
                            ),
                        ));
                    }
                }
            }
        };
        let cfg = Config {
            arch,
            dim,
            n_layers: need("num_hidden_layers")?,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim: need("intermediate_size")?,
            vocab: need("vocab_size")?,
            context_len: get("max_position_embeddings")
                .and_then(|v| v.as_u64())
                .unwrap_or(2048) as usize,
            norm_eps: float("rms_norm_eps", 1e-6) as f32,
            rope_theta: float("rope_theta", 10_000.0) as f32,
            rope_dim: head_dim,
            rope_layout: RopeLayout::Halves,
            rope_scaling,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, msg: String| Err(EngineError::format(path, field, msg));
        // Bounds far above any real model keep every size product (and allocation) in range.
        const MAX: usize = 1 << 24;
        let sizes = [
            self.dim,
            self.n_layers,
            self.n_heads,
            self.n_kv_heads,
            self.head_dim,
            self.ffn_dim,
            self.vocab,
        ];
        if sizes.iter().any(|&v| v > MAX) || self.n_heads * self.head_dim > MAX {
            return bad(
                "hyperparameters",
                format!("sizes beyond {MAX} are not plausible, found {self:?}"),
            );
        }
        if self.dim == 0
            || self.n_layers == 0
            || self.n_heads == 0
            || self.n_kv_heads == 0
            || self.ffn_dim == 0
        {
            return bad(
                "hyperparameters",
                format!("sizes must be positive, found {self:?}"),
            );
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(
                "head_count_kv",
                format!(
                    "{} query heads is not a multiple of {} KV heads",
                    self.n_heads, self.n_kv_heads
                ),
            );
        }
        if self.head_dim == 0
            || !self.head_dim.is_multiple_of(2)
            || self.rope_dim > self.head_dim
            || !self.rope_dim.is_multiple_of(2)
        {
            return bad(
                "rope.dimension_count",
                format!(
                    "head size {} / rope size {} must be even and rope <= head",
                    self.head_dim, self.rope_dim
                ),
            );
        }
        if self.vocab == 0 {
            return bad("token_embd.weight", "vocabulary size is 0".into());
        }
        if self.context_len == 0 {
            return bad("context_length", "context length is 0".into());
        }
        Ok(())
    }

    /// The inverse frequency of each rotated pair, scaling applied.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let half = self.rope_dim / 2;
        (0..half)
            .map(|i| {
                let base = self.rope_theta.powf(-2.0 * i as f32 / self.rope_dim as f32);
                match &self.rope_scaling {
                    RopeScaling::None => base,
                    RopeScaling::Linear { factor } => base / factor,
                    RopeScaling::Factors(f) => base / f.get(i).copied().unwrap_or(1.0),
                }
            })
            .collect()
    }
}

/// Llama 3.1's per-frequency divisors (as in its reference code).
fn llama3_factors(
    theta: f32,
    head_dim: usize,
    factor: f32,
    low: f32,
    high: f32,
    orig_ctx: f32,
) -> Vec<f32> {
    let (low_wavelen, high_wavelen) = (orig_ctx / low, orig_ctx / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = theta.powf(-2.0 * i as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (orig_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Value;
    use crate::gguf::write::GgufWriter;

    fn gguf(extra: &[(&str, Value)]) -> Result<Config> {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", Value::String("llama".into()))
            .meta("llama.embedding_length", Value::U32(64))
            .meta("llama.block_count", Value::U32(1))
            .meta("llama.feed_forward_length", Value::U32(128))
            .meta("llama.attention.head_count", Value::U32(4))
            .meta("llama.context_length", Value::U32(128))
            .meta("llama.rope.freq_base", Value::F32(500_000.0))
            .meta("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-6));
        for (k, v) in extra {
            w.meta(k, v.clone());
        }
        w.tensor(
            "token_embd.weight",
            &[64, 10],
            crate::tensor::DType::F32,
            vec![0; 64 * 10 * 4],
        );
        Config::from_gguf(&GgufFile::from_bytes("c.gguf", w.to_bytes())?)
    }

    #[test]
    fn rope_theta_eps_and_linear_scaling_come_from_the_metadata() {
        let plain = gguf(&[]).expect("config");
        assert_eq!(
            (
                plain.rope_theta,
                plain.norm_eps,
                plain.n_kv_heads,
                plain.vocab
            ),
            (500_000.0, 1e-6, 4, 10)
        );
        assert_eq!(plain.rope_layout, RopeLayout::Interleaved);
        let scaled = gguf(&[
            ("llama.rope.scaling.type", Value::String("linear".into())),
            ("llama.rope.scaling.factor", Value::F32(4.0)),
        ])
        .expect("config");
        for (a, b) in plain.rope_inv_freq().iter().zip(scaled.rope_inv_freq()) {
            assert!((a / 4.0 - b).abs() <= 1e-6 * a);
        }
        let err = gguf(&[("llama.rope.scaling.type", Value::String("yarn".into()))]).unwrap_err();
        assert!(
            err.to_string()
                .contains("RoPE scaling `yarn` is not supported"),
            "{err}"
        );
    }

    #[test]
    fn hf_config_reads_llama3_scaling_and_qwen2_layout() {
        let json = serde_json::json!({
            "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 10, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        });
        let c = Config::from_hf_json(Path::new("config.json"), &json).expect("config");
        assert_eq!(c.rope_layout, RopeLayout::Halves);
        let RopeScaling::Factors(f) = &c.rope_scaling else {
            panic!("llama3 factors expected")
        };
        // High frequencies keep their period, the lowest are stretched by the full factor.
        assert_eq!((f[0], f[f.len() - 1]), (1.0, 8.0));
        let mut qwen = json.clone();
        qwen["model_type"] = "qwen2".into();
        qwen["rope_scaling"] = serde_json::Value::Null;
        let q = Config::from_hf_json(Path::new("config.json"), &qwen).expect("config");
        assert_eq!(
            (q.arch, q.rope_scaling.clone()),
            (Arch::Qwen2, RopeScaling::None)
        );
        let mut bad = json;
        bad["num_attention_heads"] = 3.into();
        let err = Config::from_hf_json(Path::new("config.json"), &bad).unwrap_err();
        assert!(
            err.to_string().contains("not a multiple of 2 KV heads"),
            "{err}"
        );
    }
}
