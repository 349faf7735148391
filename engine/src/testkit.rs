//! Small random-weight models of real shape, written as GGUF or HF safetensors, for tests,
//! fuzz seeds and the reference fixtures (`tests/reference/`). Deterministic: the same spec
//! always gives the same bytes, so a fixture computed from a file matches the file a test writes.

use std::path::{Path, PathBuf};

use crate::gguf::Value;
use crate::gguf::write::GgufWriter;
use crate::model::weights::hf_tensor_name;
use crate::rng::Rng;
use crate::tensor::DType;

/// Where `deploy/fetch-default-model.sh` caches the default model (SmolLM2-135M-Instruct
/// Q4_1): `$JOULE_HOME/models/`, else `~/.cache/joule/models/`. The file may not exist yet.
pub fn default_model_path() -> PathBuf {
    let home = std::env::var_os("JOULE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/joule")
        });
    home.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// One tiny model.
#[derive(Debug, Clone, Copy)]
pub struct TinySpec {
    pub name: &'static str,
    /// `llama` or `qwen2`.
    pub arch: &'static str,
    /// Type of every matrix (embedding and output included).
    pub dtype: DType,
    /// Write HF safetensors + config.json instead of GGUF.
    pub safetensors: bool,
    pub dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub tied: bool,
}

const fn spec(
    name: &'static str,
    arch: &'static str,
    dtype: DType,
    safetensors: bool,
    dim: usize,
) -> TinySpec {
    let qwen = matches!(arch.as_bytes(), b"qwen2");
    TinySpec {
        name,
        arch,
        dtype,
        safetensors,
        dim,
        ffn: dim * 2,
        vocab: 512,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        tied: !qwen,
    }
}

/// The tiny models the reference fixtures cover: both architectures, every tensor type.
pub const TINY_MODELS: [TinySpec; 12] = [
    spec("llama-f32", "llama", DType::F32, false, 64),
    spec("llama-f16", "llama", DType::F16, false, 64),
    spec("llama-bf16", "llama", DType::BF16, false, 64),
    spec("llama-q8_0", "llama", DType::Q8_0, false, 64),
    spec("llama-q4_0", "llama", DType::Q4_0, false, 64),
    spec("llama-q4_1", "llama", DType::Q4_1, false, 64),
    spec("llama-q4_k", "llama", DType::Q4K, false, 256),
    spec("llama-q6_k", "llama", DType::Q6K, false, 256),
    spec("qwen2-q8_0", "qwen2", DType::Q8_0, false, 64),
    spec("qwen2-f16", "qwen2", DType::F16, false, 64),
    spec("llama-st-f32", "llama", DType::F32, true, 64),
    spec("qwen2-st-bf16", "qwen2", DType::BF16, true, 64),
];

/// Random, well-formed encoded data for `n` values of `dtype` with roughly `scale` magnitude.
pub fn random_data(dtype: DType, n: usize, scale: f32, rng: &mut Rng) -> Vec<u8> {
    let bb = dtype.block_bytes();
    let mut out = vec![0u8; n / dtype.block_len() * bb];
    rng.fill_bytes(&mut out);
    let f16 = |v: f32| half::f16::from_f32(v).to_bits().to_le_bytes();
    for b in out.chunks_exact_mut(bb) {
        match dtype {
            DType::F32 => b.copy_from_slice(&rng.symmetric(scale).to_le_bytes()),
            DType::F16 => b.copy_from_slice(&f16(rng.symmetric(scale))),
            DType::BF16 => b.copy_from_slice(
                &half::bf16::from_f32(rng.symmetric(scale))
                    .to_bits()
                    .to_le_bytes(),
            ),
            DType::Q8_0 => b[..2].copy_from_slice(&f16(scale / 127.0 * (0.5 + rng.next_f32()))),
            DType::Q4_0 => b[..2].copy_from_slice(&f16(scale / 8.0 * (0.5 + rng.next_f32()))),
            DType::Q4_1 => {
                b[..2].copy_from_slice(&f16(scale / 8.0 * (0.5 + rng.next_f32())));
                b[2..4].copy_from_slice(&f16(-scale * (0.5 + rng.next_f32())));
            }
            DType::Q4K => {
                // 6-bit sub-scales and mins multiply d and dmin.
                b[..2].copy_from_slice(&f16(scale / 8.0 / 48.0));
                b[2..4].copy_from_slice(&f16(scale / 48.0));
            }
            DType::Q6K => b[208..210].copy_from_slice(&f16(scale / 32.0 / 64.0)),
        }
    }
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// (name, [rows, cols], dtype, data) of every tensor, in GGUF naming.
fn tensors(s: &TinySpec) -> Vec<(String, [usize; 2], DType, Vec<u8>)> {
    let mut rng = Rng::new(s.name.bytes().fold(0xC0FFEEu64, |h, b| {
        h.wrapping_mul(31).wrapping_add(b.into())
    }));
    let hd = s.dim / s.heads;
    let (q, kv) = (s.dim, s.kv_heads * hd);
    let mut out = Vec::new();
    let mat = |name: String, rows: usize, cols: usize, rng: &mut Rng| {
        let scale = 1.5 / (cols as f32).sqrt();
        (
            name,
            [rows, cols],
            s.dtype,
            random_data(s.dtype, rows * cols, scale, rng),
        )
    };
    let norm = |name: String, n: usize, rng: &mut Rng| {
        let v: Vec<f32> = (0..n).map(|_| 1.0 + rng.symmetric(0.2)).collect();
        (name, [1, n], DType::F32, f32_bytes(&v))
    };
    let bias = |name: String, n: usize, rng: &mut Rng| {
        let v: Vec<f32> = (0..n).map(|_| rng.symmetric(0.5)).collect();
        (name, [1, n], DType::F32, f32_bytes(&v))
    };
    out.push(mat("token_embd.weight".into(), s.vocab, s.dim, &mut rng));
    for i in 0..s.layers {
        out.push(norm(format!("blk.{i}.attn_norm.weight"), s.dim, &mut rng));
        out.push(mat(format!("blk.{i}.attn_q.weight"), q, s.dim, &mut rng));
        out.push(mat(format!("blk.{i}.attn_k.weight"), kv, s.dim, &mut rng));
        out.push(mat(format!("blk.{i}.attn_v.weight"), kv, s.dim, &mut rng));
        if s.arch == "qwen2" {
            out.push(bias(format!("blk.{i}.attn_q.bias"), q, &mut rng));
            out.push(bias(format!("blk.{i}.attn_k.bias"), kv, &mut rng));
            out.push(bias(format!("blk.{i}.attn_v.bias"), kv, &mut rng));
        }
        out.push(mat(
            format!("blk.{i}.attn_output.weight"),
            s.dim,
            q,
            &mut rng,
        ));
        out.push(norm(format!("blk.{i}.ffn_norm.weight"), s.dim, &mut rng));
        out.push(mat(
            format!("blk.{i}.ffn_gate.weight"),
            s.ffn,
            s.dim,
            &mut rng,
        ));
        out.push(mat(
            format!("blk.{i}.ffn_up.weight"),
            s.ffn,
            s.dim,
            &mut rng,
        ));
        out.push(mat(
            format!("blk.{i}.ffn_down.weight"),
            s.dim,
            s.ffn,
            &mut rng,
        ));
    }
    out.push(norm("output_norm.weight".into(), s.dim, &mut rng));
    if !s.tied {
        out.push(mat("output.weight".into(), s.vocab, s.dim, &mut rng));
    }
    out
}

/// The GGUF bytes of `s` (no tokenizer: logits tests feed token ids).
pub fn gguf_bytes(s: &TinySpec) -> Vec<u8> {
    gguf_writer(s).to_bytes()
}

fn gguf_writer(s: &TinySpec) -> GgufWriter {
    let mut w = GgufWriter::new();
    let a = s.arch;
    let u32v = |v: usize| Value::U32(v as u32);
    w.meta("general.architecture", Value::String(a.into()))
        .meta("general.name", Value::String(format!("tiny-{}", s.name)))
        .meta(&format!("{a}.block_count"), u32v(s.layers))
        .meta(&format!("{a}.context_length"), u32v(256))
        .meta(&format!("{a}.embedding_length"), u32v(s.dim))
        .meta(&format!("{a}.feed_forward_length"), u32v(s.ffn))
        .meta(&format!("{a}.attention.head_count"), u32v(s.heads))
        .meta(&format!("{a}.attention.head_count_kv"), u32v(s.kv_heads))
        .meta(
            &format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        )
        .meta(&format!("{a}.rope.freq_base"), Value::F32(10_000.0));
    for (name, [rows, cols], dtype, data) in tensors(s) {
        let dims: Vec<u64> = if rows == 1 {
            vec![cols as u64]
        } else {
            vec![cols as u64, rows as u64]
        };
        w.tensor(&name, &dims, dtype, data);
    }
    w
}

/// `model.safetensors` bytes and `config.json` text of `s` (float types only).
pub fn safetensors_files(s: &TinySpec) -> (Vec<u8>, String) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, [rows, cols], dtype, bytes) in tensors(s) {
        let shape = if rows == 1 {
            vec![cols]
        } else {
            vec![rows, cols]
        };
        let start = data.len();
        data.extend_from_slice(&bytes);
        header.insert(
            hf_tensor_name(&name).unwrap_or(name),
            serde_json::json!({"dtype": dtype.to_string(), "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&header).unwrap_or_default();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&h);
    file.extend_from_slice(&data);
    let config = serde_json::json!({
        "model_type": s.arch,
        "hidden_size": s.dim,
        "intermediate_size": s.ffn,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "vocab_size": s.vocab,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": s.tied,
    });
    (
        file,
        serde_json::to_string_pretty(&config).unwrap_or_default(),
    )
}

/// Writes `s` under `dir` and returns the path to load: `NAME.gguf` or the directory `NAME/`.
pub fn write(s: &TinySpec, dir: &Path) -> std::io::Result<PathBuf> {
    if s.safetensors {
        let d = dir.join(s.name);
        std::fs::create_dir_all(&d)?;
        let (st, cfg) = safetensors_files(s);
        std::fs::write(d.join("model.safetensors"), st)?;
        std::fs::write(d.join("config.json"), cfg)?;
        Ok(d)
    } else {
        let p = dir.join(format!("{}.gguf", s.name));
        std::fs::write(&p, gguf_bytes(s))?;
        Ok(p)
    }
}

/// Text the small SentencePiece vocabulary of [`spm_vocab_gguf`] is trained on.
const SPM_CORPUS: &str = "the quick brown fox jumps over the lazy dog. The cat sat on the mat; \
    it is what it is, and that is that! Then there were three thin things in the theatre. \
    Numbers 0 1 2 3 45 678 and words: tokenizer, token, tokens, merge, merges, score.";

/// A GGUF holding the tiny `llama-f32` model with a `llama` (SentencePiece) vocabulary of
/// exactly its 512 tokens: `<unk>`, `<s>`, `</s>`, 256 byte tokens, single characters, and merges
/// learnt on a small text, scored so earlier merges win (as SentencePiece BPE scores are).
pub fn spm_vocab_gguf() -> Vec<u8> {
    spm_vocab_gguf_for(&TINY_MODELS[0])
}

/// The model `spec` as GGUF with the same small SentencePiece vocabulary, padded with unused
/// tokens to `spec.vocab`.
pub fn spm_vocab_gguf_for(spec: &TinySpec) -> Vec<u8> {
    let spec = *spec;
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types: Vec<i32> = vec![2, 3, 3];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    types.extend(std::iter::repeat_n(6, 256));
    let mut scores: Vec<f32> = vec![0.0; tokens.len()];
    // Words as sequences of pieces, SentencePiece style ("▁" marks a space).
    let text = format!("▁{}", SPM_CORPUS.replace(' ', "▁"));
    let mut words: Vec<Vec<String>> = text
        .split('▁')
        .filter(|w| !w.is_empty())
        .map(|w| {
            std::iter::once("▁".to_string())
                .chain(w.chars().map(String::from))
                .collect()
        })
        .collect();
    let mut chars: Vec<String> = words.iter().flatten().cloned().collect();
    chars.sort();
    chars.dedup();
    for c in chars {
        scores.push(-1000.0 - tokens.len() as f32);
        tokens.push(c);
        types.push(1);
    }
    // Greedy BPE training: repeatedly merge the most frequent adjacent pair (ties: first seen).
    while tokens.len() < spec.vocab {
        let mut counts: Vec<((String, String), usize)> = Vec::new();
        for w in &words {
            for p in w.windows(2) {
                let key = (p[0].clone(), p[1].clone());
                match counts.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((key, 1)),
                }
            }
        }
        // `max_by_key` keeps the last maximum; reverse so the first seen wins ties.
        let best = counts
            .into_iter()
            .rev()
            .filter(|(k, _)| !tokens.contains(&format!("{}{}", k.0, k.1)))
            .max_by_key(|(_, n)| *n);
        let Some(((a, b), _)) = best else { break };
        let merged = format!("{a}{b}");
        for w in &mut words {
            let mut i = 0;
            while i + 1 < w.len() {
                if w[i] == a && w[i + 1] == b {
                    w[i] = merged.clone();
                    w.remove(i + 1);
                }
                i += 1;
            }
        }
        scores.push(-(tokens.len() as f32));
        tokens.push(merged);
        types.push(1);
    }
    // Pad to the model's vocabulary with unused tokens.
    while tokens.len() < spec.vocab {
        scores.push(-1e9);
        tokens.push(format!("<unused{}>", tokens.len()));
        types.push(5);
    }
    let mut w = gguf_writer(&spec);
    let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    w.meta("tokenizer.ggml.model", Value::String("llama".into()))
        .meta("tokenizer.ggml.tokens", strings(&tokens))
        .meta(
            "tokenizer.ggml.scores",
            Value::Array(scores.iter().map(|&s| Value::F32(s)).collect()),
        )
        .meta(
            "tokenizer.ggml.token_type",
            Value::Array(types.iter().map(|&t| Value::I32(t)).collect()),
        )
        .meta("tokenizer.ggml.bos_token_id", Value::U32(1))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(2))
        .meta("tokenizer.ggml.unknown_token_id", Value::U32(0))
        .meta("tokenizer.ggml.add_bos_token", Value::Bool(true))
        .meta("tokenizer.ggml.add_space_prefix", Value::Bool(true));
    w.to_bytes()
}
