//! Small random-weight models of real shape, written as GGUF or HF safetensors, for tests,
//! fuzz seeds and the reference fixtures (`tests/reference/`), with one type for every matrix
//! or a type per matrix ([`spm_vocab_gguf_mixed`]). Deterministic: the same spec always gives
//! the same bytes, so a fixture computed from a file matches the file a test writes.
//!
//! Also requantises a GGUF model ([`requantize`], the `requantize` example) to Q8_0, Q6_K or
//! llama.cpp's Q4_K_M mix ([`requant_dtype`]), deterministically, for tools and tests.

use std::path::{Path, PathBuf};

use crate::gguf::write::GgufWriter;
use crate::gguf::{GgufFile, Value};
use crate::model::weights::hf_tensor_name;
use crate::quant::dequantize_row;
use crate::quant::quantize::quantize_row;
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

/// `|got - want| / |want|` over a row, as root mean squares (quantisers' tests).
pub fn rel_rms(got: &[f32], want: &[f32]) -> f64 {
    let (mut e, mut s) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        e += (f64::from(g) - f64::from(w)).powi(2);
        s += f64::from(w).powi(2);
    }
    (e / s).sqrt()
}

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
    tensors_with(s, &|_, _| s.dtype)
}

/// [`tensors`] with the type of each matrix chosen by `dtype_of(name, cols)` instead of
/// `s.dtype`. The random stream a matrix draws depends only on its type and size, so where
/// `dtype_of` answers `s.dtype` the bytes are exactly [`tensors`]'.
fn tensors_with(
    s: &TinySpec,
    dtype_of: &dyn Fn(&str, usize) -> DType,
) -> Vec<(String, [usize; 2], DType, Vec<u8>)> {
    let mut rng = Rng::new(s.name.bytes().fold(0xC0FFEEu64, |h, b| {
        h.wrapping_mul(31).wrapping_add(b.into())
    }));
    let hd = s.dim / s.heads;
    let (q, kv) = (s.dim, s.kv_heads * hd);
    let mut out = Vec::new();
    let mat = |name: String, rows: usize, cols: usize, rng: &mut Rng| {
        let scale = 1.5 / (cols as f32).sqrt();
        let dtype = dtype_of(name.as_str(), cols);
        (
            name,
            [rows, cols],
            dtype,
            random_data(dtype, rows * cols, scale, rng),
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
    gguf_writer_with(s, &|_, _| s.dtype)
}

fn gguf_writer_with(s: &TinySpec, dtype_of: &dyn Fn(&str, usize) -> DType) -> GgufWriter {
    let mut w = GgufWriter::new();
    let a = s.arch;
    let u32v = |v: usize| Value::U32(v as u32);
    w.meta("general.architecture", Value::String(a.into()))
        .meta("general.name", Value::String(format!("tiny-{}", s.name)))
        .meta(&format!("{a}.block_count"), u32v(s.layers))
        // Tiny models: 256 positions; models of real width (the 1B-shaped benchmark model):
        // 4096, room for a 512-token prefill benchmark and its decode.
        .meta(
            &format!("{a}.context_length"),
            u32v(if s.dim >= 1024 { 4096 } else { 256 }),
        )
        .meta(&format!("{a}.embedding_length"), u32v(s.dim))
        .meta(&format!("{a}.feed_forward_length"), u32v(s.ffn))
        .meta(&format!("{a}.attention.head_count"), u32v(s.heads))
        .meta(&format!("{a}.attention.head_count_kv"), u32v(s.kv_heads))
        .meta(
            &format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        )
        .meta(&format!("{a}.rope.freq_base"), Value::F32(10_000.0));
    for (name, [rows, cols], dtype, data) in tensors_with(s, dtype_of) {
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
    spm_vocab_gguf_mixed(spec, &|_, _| spec.dtype)
}

/// [`spm_vocab_gguf_for`] with the type of each matrix chosen by `dtype_of(name, cols)` (GGUF
/// tensor name, row width) instead of `spec.dtype`; norms and biases stay F32. A `dtype_of` that
/// answers `spec.dtype` everywhere gives exactly the bytes of [`spm_vocab_gguf_for`]. The rows
/// must be whole blocks of the type chosen (see [`requant_dtype`] for a rule that ensures it).
pub fn spm_vocab_gguf_mixed(spec: &TinySpec, dtype_of: &dyn Fn(&str, usize) -> DType) -> Vec<u8> {
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
    let mut w = gguf_writer_with(&spec, dtype_of);
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

/// A requantisation scheme of [`requantize`], named as llama.cpp's `llama-quantize` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requant {
    /// Every matrix Q8_0.
    Q8_0,
    /// Every matrix Q6_K (Q8_0 where rows are not whole 256-blocks).
    Q6K,
    /// llama.cpp's Q4_K_M mix (see [`requant_dtype`]).
    Q4KM,
}

impl Requant {
    /// `q8_0`, `q6_k` or `q4_k_m` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "q8_0" => Some(Self::Q8_0),
            "q6_k" => Some(Self::Q6K),
            "q4_k_m" => Some(Self::Q4KM),
            _ => None,
        }
    }

    /// llama.cpp's name of the scheme.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "Q8_0",
            Self::Q6K => "Q6_K",
            Self::Q4KM => "Q4_K_M",
        }
    }

    /// llama.cpp's `general.file_type` (`llama_ftype`) of a model requantised this way.
    pub fn file_type(self) -> u32 {
        match self {
            Self::Q8_0 => 7,
            Self::Q6K => 18,
            Self::Q4KM => 15,
        }
    }
}

/// The type [`requantize`] gives matrix `name` (GGUF naming) with rows `cols` wide, in a model of
/// `n_layers` blocks that has a separate `output.weight` or not (`has_output`).
///
/// [`Requant::Q8_0`] and [`Requant::Q6K`] give every matrix that type. [`Requant::Q4KM`]
/// follows llama.cpp's Q4_K_M rule: Q6_K for `output.weight`, for `token_embd.weight` when it
/// is also the output (tied embeddings), and for `blk.N.attn_v.weight` and `blk.N.ffn_down*`
/// in llama.cpp's `use_more_bits` layers (the first and last eighth, and every third between);
/// Q4_K for every other matrix.
///
/// K-quants need rows of whole 256-blocks. Where `cols` is not a multiple of 256, Q4_K falls back
/// to Q4_1 and Q6_K to Q8_0 (llama.cpp falls back to Q5_0 and Q8_0; this engine does not read
/// Q5_0). SmolLM2-135M's width 576 is such a case: only its FFN-down matrices (rows 1536 wide)
/// become K-quants there.
pub fn requant_dtype(
    name: &str,
    cols: usize,
    n_layers: usize,
    has_output: bool,
    scheme: Requant,
) -> DType {
    let want = match scheme {
        Requant::Q8_0 => DType::Q8_0,
        Requant::Q6K => DType::Q6K,
        Requant::Q4KM => {
            // llama.cpp's `use_more_bits` (the first test keeps `i - n / 8` from underflowing).
            let n = n_layers;
            let more_bits = |i: usize| i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
            let layer = name.strip_prefix("blk.").and_then(|r| r.split_once('.'));
            let more = match layer {
                Some((i, rest)) if rest == "attn_v.weight" || rest.starts_with("ffn_down") => {
                    i.parse::<usize>().is_ok_and(more_bits)
                }
                _ => false,
            };
            if more || name == "output.weight" || (name == "token_embd.weight" && !has_output) {
                DType::Q6K
            } else {
                DType::Q4K
            }
        }
    };
    if cols.is_multiple_of(DType::Q4K.block_len()) {
        return want;
    }
    match want {
        DType::Q4K => DType::Q4_1,
        DType::Q6K => DType::Q8_0,
        other => other,
    }
}

/// The bytes of a GGUF holding `file` requantised with `scheme`.
///
/// Metadata is copied key by key (in sorted order), with `general.file_type` set to the
/// scheme's [`Requant::file_type`]; `general.alignment` is kept only when it is the writer's 32.
/// Tensors keep their names, dims and order. 1-D tensors (norms, biases, `rope_freqs`) are
/// copied byte for byte; each matrix gets [`requant_dtype`]'s type: its rows are expanded to
/// f32 ([`dequantize_row`]) and encoded again ([`quantize_row`]), or copied as they are where
/// the matrix already has that type or its rows are not whole blocks of it. Rows are encoded in
/// parallel; the bytes do not depend on the thread count. A model requantised from an already
/// quantised one carries both rounding errors.
///
/// Q4_K_M needs `general.architecture` and `{arch}.block_count`.
pub fn requantize(file: &GgufFile, scheme: Requant) -> crate::error::Result<Vec<u8>> {
    use rayon::prelude::*;
    let n_layers = match scheme {
        Requant::Q4KM => {
            let arch = file.str("general.architecture")?;
            let n = file.u64(&format!("{arch}.block_count"))?;
            usize::try_from(n).unwrap_or(usize::MAX)
        }
        Requant::Q8_0 | Requant::Q6K => 0,
    };
    let has_output = file.tensor_info("output.weight").is_some();
    let mut metadata = file.header.metadata.clone();
    metadata.insert("general.file_type".into(), Value::U32(scheme.file_type()));
    let mut w = GgufWriter::new();
    for (key, value) in metadata {
        if key == "general.alignment" && value.as_u64() != Some(32) {
            continue;
        }
        w.meta(&key, value);
    }
    for info in &file.header.tensors {
        let t = file.tensor(&info.name)?;
        let dtype = if info.dims.len() < 2 {
            t.dtype
        } else {
            let want = requant_dtype(&info.name, t.cols, n_layers, has_output, scheme);
            if t.cols.is_multiple_of(want.block_len()) {
                want
            } else {
                t.dtype
            }
        };
        let data = if dtype == t.dtype {
            t.data.to_vec()
        } else {
            let row_bytes = t.cols / t.dtype.block_len() * t.dtype.block_bytes();
            let rows: Vec<Vec<u8>> = t
                .data
                .par_chunks_exact(row_bytes)
                .map(|row| {
                    let mut f = vec![0f32; t.cols];
                    dequantize_row(t.dtype, row, &mut f);
                    quantize_row(dtype, &f)
                })
                .collect();
            rows.concat()
        };
        w.tensor(&info.name, &info.dims, dtype, data);
    }
    Ok(w.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value of `t`, expanded to f32.
    fn values(t: crate::tensor::TensorView<'_>) -> Vec<f32> {
        let row_bytes = t.cols / t.dtype.block_len() * t.dtype.block_bytes();
        let mut out = vec![f32::NAN; t.rows * t.cols];
        for (o, row) in out
            .chunks_exact_mut(t.cols)
            .zip(t.data.chunks_exact(row_bytes))
        {
            dequantize_row(t.dtype, row, o);
        }
        out
    }

    /// Requantises `src` with `scheme`, checks the result against the source and the rule, and
    /// returns the matrices' (name, type).
    fn check(src: &TinySpec, scheme: Requant) -> Vec<(String, DType)> {
        let file = GgufFile::from_bytes(format!("{}.gguf", src.name), gguf_bytes(src))
            .expect("source parses");
        let bytes = requantize(&file, scheme).expect("requantize");
        let again = requantize(&file, scheme).expect("requantize again");
        assert!(
            bytes == again,
            "{}: requantize is not deterministic",
            src.name
        );
        let out = GgufFile::from_bytes("requantized.gguf", bytes).expect("output parses");
        for (k, v) in &file.header.metadata {
            assert_eq!(out.get(k), Some(v), "{}: {k}", src.name);
        }
        assert_eq!(
            out.get("general.file_type"),
            Some(&Value::U32(scheme.file_type()))
        );
        assert_eq!(
            out.header.metadata.len(),
            file.header.metadata.len() + 1,
            "only general.file_type is added"
        );
        assert_eq!(out.header.tensors.len(), file.header.tensors.len());
        let mut types = Vec::new();
        for (a, b) in file.header.tensors.iter().zip(&out.header.tensors) {
            assert_eq!((&a.name, &a.dims), (&b.name, &b.dims));
            let ta = file.tensor(&a.name).expect("source tensor");
            let tb = out.tensor(&b.name).expect("output tensor");
            if a.dims.len() == 1 {
                assert_eq!(tb.dtype, ta.dtype, "{}", a.name);
                assert!(tb.data == ta.data, "{}: 1-D tensor changed", a.name);
                continue;
            }
            let want = requant_dtype(&a.name, ta.cols, src.layers, !src.tied, scheme);
            assert_eq!(tb.dtype, want, "{}", a.name);
            // Uniform source values: see `quant::quantize`'s bounds.
            let bound = match want {
                DType::Q8_0 => 0.01,
                DType::Q6K => 0.025,
                _ => 0.12,
            };
            let err = rel_rms(&values(tb), &values(ta));
            assert!(
                err < bound,
                "{} as {want}: relative RMS error {err}",
                a.name
            );
            types.push((a.name.clone(), want));
        }
        types
    }

    fn type_of(types: &[(String, DType)], name: &str) -> DType {
        types
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, t)| t)
            .unwrap_or_else(|| panic!("no matrix {name}"))
    }

    #[test]
    fn requantized_models_parse_follow_the_rule_and_stay_close() {
        let tied = spec("llama-f32-256", "llama", DType::F32, false, 256);
        let untied = TinySpec {
            name: "llama-f32-256-untied",
            tied: false,
            ..tied
        };
        for s in [tied, untied] {
            for scheme in [Requant::Q8_0, Requant::Q6K, Requant::Q4KM] {
                let types = check(&s, scheme);
                let only = |t: DType| types.iter().all(|&(_, u)| u == t);
                match scheme {
                    Requant::Q8_0 => assert!(only(DType::Q8_0)),
                    Requant::Q6K => assert!(only(DType::Q6K)),
                    Requant::Q4KM => {
                        // Two layers: layer 1 (>= 7*2/8) gets more bits, layer 0 does not.
                        let embd = if s.tied { DType::Q6K } else { DType::Q4K };
                        assert_eq!(type_of(&types, "token_embd.weight"), embd);
                        if !s.tied {
                            assert_eq!(type_of(&types, "output.weight"), DType::Q6K);
                        }
                        for (name, t) in [
                            ("blk.0.attn_v.weight", DType::Q4K),
                            ("blk.1.attn_v.weight", DType::Q6K),
                            ("blk.0.ffn_down.weight", DType::Q4K),
                            ("blk.1.ffn_down.weight", DType::Q6K),
                            ("blk.1.attn_q.weight", DType::Q4K),
                            ("blk.1.ffn_up.weight", DType::Q4K),
                        ] {
                            assert_eq!(type_of(&types, name), t, "{name}");
                        }
                    }
                }
            }
        }
        // Rows 64 wide: the K-quants fall back; FFN-down rows (128) too.
        let types = check(&TINY_MODELS[0], Requant::Q4KM);
        assert!(
            types
                .iter()
                .all(|&(_, t)| matches!(t, DType::Q4_1 | DType::Q8_0))
        );
        assert_eq!(type_of(&types, "token_embd.weight"), DType::Q8_0);
        // A Q4_K source to Q8_0: expanded and encoded again.
        check(&TINY_MODELS[6], Requant::Q8_0);
    }

    #[test]
    fn q4_k_m_follows_llama_cpp() {
        let q = |name: &str, cols: usize, layers: usize, has_output: bool| {
            requant_dtype(name, cols, layers, has_output, Requant::Q4KM)
        };
        let six = |tensor: &str, cols: usize, layers: usize| -> Vec<usize> {
            (0..layers)
                .filter(|i| {
                    let name = format!("blk.{i}.{tensor}");
                    q(name.as_str(), cols, layers, false) == DType::Q6K
                })
                .collect()
        };
        // Llama-3.2-1B: 16 layers of width 2048, tied embeddings.
        assert_eq!(six("attn_v.weight", 2048, 16), [0, 1, 4, 7, 10, 13, 14, 15]);
        assert_eq!(
            six("ffn_down.weight", 8192, 16),
            [0, 1, 4, 7, 10, 13, 14, 15]
        );
        assert_eq!(six("attn_q.weight", 2048, 16), Vec::<usize>::new());
        assert_eq!(q("token_embd.weight", 2048, 16, false), DType::Q6K);
        assert_eq!(q("token_embd.weight", 2048, 16, true), DType::Q4K);
        assert_eq!(q("output.weight", 2048, 16, true), DType::Q6K);
        assert_eq!(q("blk.3.ffn_gate.weight", 2048, 16, false), DType::Q4K);
        // SmolLM2-135M: 30 layers of width 576, FFN 1536; only FFN-down stays a K-quant.
        assert_eq!(
            six("ffn_down.weight", 1536, 30),
            [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
        );
        assert_eq!(q("blk.4.ffn_down.weight", 1536, 30, false), DType::Q4K);
        assert_eq!(q("blk.5.attn_v.weight", 576, 30, false), DType::Q8_0);
        assert_eq!(q("blk.4.attn_v.weight", 576, 30, false), DType::Q4_1);
        assert_eq!(q("token_embd.weight", 576, 30, false), DType::Q8_0);
        let other =
            |name: &str, cols: usize, scheme: Requant| requant_dtype(name, cols, 30, false, scheme);
        assert_eq!(other("blk.0.ffn_up.weight", 576, Requant::Q6K), DType::Q8_0);
        assert_eq!(
            other("blk.0.ffn_down.weight", 1536, Requant::Q6K),
            DType::Q6K
        );
        assert_eq!(other("output.weight", 576, Requant::Q8_0), DType::Q8_0);
        assert_eq!(Requant::parse("Q4_K_M"), Some(Requant::Q4KM));
        assert_eq!(Requant::parse("q6_k"), Some(Requant::Q6K));
        assert_eq!(Requant::parse("q8_0"), Some(Requant::Q8_0));
        assert_eq!(Requant::parse("q5_k_m"), None);
    }

    #[test]
    fn mixed_models_take_each_matrix_type_and_keep_the_plain_bytes() {
        let s = spec("llama-mixed-256", "llama", DType::Q4K, false, 256);
        assert!(spm_vocab_gguf_mixed(&s, &|_, _| s.dtype) == spm_vocab_gguf_for(&s));
        let rule =
            |name: &str, cols: usize| requant_dtype(name, cols, s.layers, !s.tied, Requant::Q4KM);
        let file = GgufFile::from_bytes("mixed.gguf", spm_vocab_gguf_mixed(&s, &rule))
            .expect("mixed model parses");
        for t in &file.header.tensors {
            let want = if t.dims.len() == 1 {
                DType::F32
            } else {
                rule(t.name.as_str(), t.dims[0] as usize)
            };
            assert_eq!(t.dtype, want, "{}", t.name);
        }
        assert_eq!(
            file.tensor_info("blk.1.attn_v.weight").map(|t| t.dtype),
            Some(DType::Q6K)
        );
    }
}
