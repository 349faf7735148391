//! Builds a tokenizer from a GGUF file's own vocabulary: `gpt2` (byte-level BPE from the merges,
//! with the pre-tokenizer regex named by `tokenizer.ggml.pre`) or `llama` (SentencePiece: BPE
//! whose merge order follows the token scores, byte fallback, `▁` for spaces).

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSeq;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

use super::Tokenizer;
use crate::error::{EngineError, Result};
use crate::gguf::{GgufFile, Value};

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Token types as GGUF stores them.
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

fn err(f: &GgufFile, field: &str, msg: impl Into<String>) -> EngineError {
    EngineError::format(&f.path, field, msg)
}

fn strings<'a>(f: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    let arr = f
        .get(key)
        .ok_or_else(|| {
            err(
                f,
                key,
                "missing: the file has no tokenizer (pass a tokenizer.json instead)",
            )
        })?
        .as_array()
        .ok_or_else(|| err(f, key, "expected an array of strings"))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| err(f, key, "expected an array of strings"))
        })
        .collect()
}

fn numbers(f: &GgufFile, key: &str, n: usize) -> Result<Option<Vec<f64>>> {
    let Some(v) = f.get(key) else { return Ok(None) };
    let arr = v
        .as_array()
        .ok_or_else(|| err(f, key, "expected an array of numbers"))?;
    if arr.len() != n {
        return Err(err(
            f,
            key,
            format!("has {} entries, expected one per token ({n})", arr.len()),
        ));
    }
    let out: Option<Vec<f64>> = arr.iter().map(Value::as_f64).collect();
    out.map(Some)
        .ok_or_else(|| err(f, key, "expected an array of numbers"))
}

/// The tokenizer stored in `f`.
pub(super) fn from_gguf(f: &GgufFile) -> Result<Tokenizer> {
    if f.get("tokenizer.ggml.model").is_none() {
        return Err(err(
            f,
            "tokenizer.ggml.model",
            "missing: the file has no tokenizer (pass a tokenizer.json instead)",
        ));
    }
    let kind = f.str("tokenizer.ggml.model")?;
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
    let n = tokens.len();
    let types = numbers(f, "tokenizer.ggml.token_type", n)?.unwrap_or_else(|| vec![1.0; n]);
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    if vocab.len() != n {
        return Err(err(
            f,
            "tokenizer.ggml.tokens",
            "the vocabulary lists a token twice",
        ));
    }
    let mut tk = match kind {
        "gpt2" => gpt2(f, vocab)?,
        "llama" => {
            let scores = numbers(f, "tokenizer.ggml.scores", n)?.ok_or_else(|| {
                err(
                    f,
                    "tokenizer.ggml.scores",
                    "missing: a `llama` vocabulary needs scores",
                )
            })?;
            let add_space = f
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            sentencepiece(&tokens, &scores, vocab, add_space)
                .map_err(|e| err(f, "tokenizer.ggml.tokens", e))?
        }
        other => {
            return Err(EngineError::unsupported(
                &f.path,
                "tokenizer.ggml.model",
                format!("tokenizer `{other}` is not supported (expected gpt2 or llama)"),
            ));
        }
    };
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| matches!(**t as i64, TYPE_CONTROL | TYPE_USER_DEFINED))
        .map(|(s, t)| AddedToken::from(s.to_string(), *t as i64 == TYPE_CONTROL))
        .collect();
    tk.add_special_tokens(&specials);

    let id = |k: &str| {
        f.opt_u64(k)
            .map(|v| v.map(|v| v as u32).filter(|&v| (v as usize) < n))
    };
    let bos = id("tokenizer.ggml.bos_token_id")?;
    let eos = id("tokenizer.ggml.eos_token_id")?;
    let default_bos = kind == "llama";
    let add_bos = f
        .get("tokenizer.ggml.add_bos_token")
        .and_then(Value::as_bool)
        .unwrap_or(default_bos);
    let mut stops: Vec<u32> = [
        eos,
        id("tokenizer.ggml.eot_token_id")?,
        id("tokenizer.ggml.eom_token_id")?,
    ]
    .into_iter()
    .flatten()
    .collect();
    stops.extend(
        tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| super::END_OF_TURN.contains(t))
            .map(|(i, _)| i as u32),
    );
    let template = f
        .get("tokenizer.chat_template")
        .and_then(Value::as_str)
        .map(String::from);
    Ok(Tokenizer::new(
        tk,
        bos,
        eos,
        add_bos,
        stops,
        template,
        tokens.iter().map(|s| s.to_string()).collect(),
    ))
}

fn gpt2(f: &GgufFile, vocab: Vocab) -> Result<tokenizers::Tokenizer> {
    let merges = strings(f, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    err(
                        f,
                        "tokenizer.ggml.merges",
                        format!("merge `{m}` is not two tokens"),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| err(f, "tokenizer.ggml.merges", e.to_string()))?;
    let pre = f
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let (digits, regex) = match pre {
        "default" | "gpt2" | "gpt-2" => (false, GPT2),
        "smollm" | "starcoder" | "refact" => (true, GPT2),
        "llama-bpe" | "llama3" | "smaug-bpe" | "falcon3" => (false, LLAMA3),
        "qwen2" | "deepseek-r1-qwen" => (false, QWEN2),
        other => {
            return Err(EngineError::unsupported(
                &f.path,
                "tokenizer.ggml.pre",
                format!(
                    "pre-tokenizer `{other}` is not supported (expected default, gpt2, smollm, llama-bpe or qwen2)"
                ),
            ));
        }
    };
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        let s = Split::new(
            SplitPattern::Regex(re.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| err(f, "tokenizer.ggml.pre", e.to_string()))?;
        Ok(s.into())
    };
    let mut steps = Vec::new();
    if digits {
        steps.push(split(r"\p{N}")?);
    }
    steps.push(split(regex)?);
    steps.push(ByteLevel::new(false, false, false).into());
    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(PreSeq::new(steps)));
    tk.with_decoder(Some(ByteLevel::default()));
    Ok(tk)
}

/// The longest piece whose merges are derived.
const MAX_MERGED_PIECE: usize = 256;

/// SentencePiece BPE as a `tokenizers` BPE: a merge (a, b) exists when `a`, `b` and `ab` are all
/// tokens, and merges apply in order of the score of `ab`, highest first.
fn sentencepiece(
    tokens: &[&str],
    scores: &[f64],
    vocab: Vocab,
    add_space: bool,
) -> Result<tokenizers::Tokenizer, String> {
    let mut merges: Vec<(f64, u32, String, String)> = Vec::new();
    // Finding a token's merges costs its length squared; real pieces are a few dozen bytes, so
    // longer ones stay in the vocabulary but are never produced by merging.
    for (id, tok) in tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| t.len() <= MAX_MERGED_PIECE)
    {
        for (split, _) in tok.char_indices().skip(1) {
            let (a, b) = tok.split_at(split);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                merges.push((scores[id], id as u32, a.to_string(), b.to_string()));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges = merges.into_iter().map(|(_, _, a, b)| (a, b)).collect();
    let unk = tokens
        .iter()
        .position(|t| *t == "<unk>")
        .map(|i| tokens[i].to_string());
    let mut b = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        b = b.unk_token(unk);
    }
    let bpe = b.build().map_err(|e| e.to_string())?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let mut norm: Vec<NormalizerWrapper> = Vec::new();
    if add_space {
        norm.push(Prepend::new("▁".into()).into());
    }
    norm.push(Replace::new(" ", "▁").map_err(|e| e.to_string())?.into());
    tk.with_normalizer(Some(tokenizers::normalizers::Sequence::new(norm)));
    let mut dec: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(|e| e.to_string())?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space {
        dec.push(Strip::new(' ', 1, 0).into());
    }
    tk.with_decoder(Some(DecoderSeq::new(dec)));
    Ok(tk)
}
