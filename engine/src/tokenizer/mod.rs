//! Text ↔ token ids. Built from a GGUF file's own vocabulary ([`gguf_vocab`]) or from an HF
//! `tokenizer.json` (+ `tokenizer_config.json`), both on the `tokenizers` crate, with BOS/EOS and
//! stop tokens resolved here once. Chat templates are rendered by [`chat`]; streaming decode that
//! never splits a UTF-8 character lives in [`stream`].

pub mod chat;
mod gguf_vocab;
pub mod stream;

use std::path::Path;

use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;

pub use chat::Message;
pub use stream::StreamDecoder;

/// Texts of special tokens that end an assistant turn in common chat formats.
const END_OF_TURN: [&str; 6] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
];

/// A tokenizer with its special ids and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Whether [`Tokenizer::encode`] prepends BOS.
    pub add_bos: bool,
    /// Ids that end generation (EOS, end-of-turn).
    pub stop_ids: Vec<u32>,
    pub chat_template: Option<String>,
    vocab: Vec<String>,
}

impl Tokenizer {
    fn new(
        inner: tokenizers::Tokenizer,
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
        mut stop_ids: Vec<u32>,
        chat_template: Option<String>,
        vocab: Vec<String>,
    ) -> Self {
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Self {
            inner,
            bos,
            eos,
            add_bos,
            stop_ids,
            chat_template,
            vocab,
        }
    }

    /// The tokenizer stored in a GGUF file.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        gguf_vocab::from_gguf(f)
    }

    /// The tokenizer of a model at `path`: a GGUF file's own, or an HF directory's.
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::from_dir(path)
        } else {
            Self::from_gguf(&GgufFile::open(path)?)
        }
    }

    /// The tokenizer of an HF model directory (`tokenizer.json`, optional `tokenizer_config.json`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(EngineError::format(
                &path,
                "tokenizer.json",
                "missing: an HF model directory needs a tokenizer.json",
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| {
            EngineError::format(&path, "tokenizer.json", format!("cannot load: {e}"))
        })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = match std::fs::read_to_string(&cfg_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                EngineError::format(
                    &cfg_path,
                    "tokenizer_config.json",
                    format!("invalid JSON: {e}"),
                )
            })?,
            Err(_) => serde_json::Value::Null,
        };
        // Token fields are a string or {"content": ...}.
        let token = |k: &str| {
            let v = cfg.get(k)?;
            let s = v.as_str().or_else(|| v.get("content")?.as_str())?;
            inner.token_to_id(s)
        };
        let (bos, eos) = (token("bos_token"), token("eos_token"));
        let add_bos = cfg
            .get("add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let mut stops: Vec<u32> = eos.into_iter().collect();
        stops.extend(END_OF_TURN.iter().filter_map(|t| inner.token_to_id(t)));
        let template = match cfg.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        let n = inner.get_vocab_size(true);
        let vocab = (0..n as u32)
            .map(|i| inner.id_to_token(i).unwrap_or_default())
            .collect();
        Ok(Self::new(inner, bos, eos, add_bos, stops, template, vocab))
    }

    /// This tokenizer as an HF `tokenizer.json` (exports a GGUF vocabulary for other tools).
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(true)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) are recognised;
    /// BOS is prepended when the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The text of `ids`; special tokens are dropped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }

    /// The stored text of one token (`Ġ` for a space in byte-level vocabularies).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.get(id as usize).map(String::as_str)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    pub fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.binary_search(&id).is_ok()
    }

    /// The text of the BOS/EOS tokens, for chat templates.
    pub fn special_text(&self, id: Option<u32>) -> String {
        id.and_then(|i| self.token_text(i))
            .unwrap_or_default()
            .to_string()
    }
}
