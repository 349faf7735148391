//! Malformed model files and impossible requests give errors that name the file, the field and
//! what was expected; nothing panics.

mod common;

use joule_engine::EngineError;
use joule_engine::generate::generate;
use joule_engine::gguf::write::GgufWriter;
use joule_engine::gguf::{GgufFile, Value};
use joule_engine::model::{LoadOptions, Model};
use joule_engine::sample::SamplingParams;
use joule_engine::testkit::{self, TINY_MODELS};
use joule_engine::tokenizer::Tokenizer;

fn tiny_gguf() -> Vec<u8> {
    testkit::gguf_bytes(&TINY_MODELS[3])
}

fn open(bytes: Vec<u8>) -> Result<Model, EngineError> {
    let f = GgufFile::from_bytes("bad.gguf", bytes)?;
    Model::from_gguf(&f, &LoadOptions::with_threads(1))
}

fn err_text(r: Result<Model, EngineError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_truncation_is_an_error_naming_the_file() {
    let full = tiny_gguf();
    assert!(open(full.clone()).is_ok());
    for cut in (0..full.len()).step_by(97).chain([full.len() - 1]) {
        let msg = err_text(open(full[..cut].to_vec()));
        assert!(msg.starts_with("bad.gguf: "), "cut at {cut}: {msg}");
    }
}

#[test]
fn a_truncated_tensor_says_how_many_bytes_are_missing() {
    let full = tiny_gguf();
    let msg = err_text(open(full[..full.len() - 10].to_vec()));
    assert!(
        msg.contains("output_norm.weight") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn wrong_magic_and_version_are_named() {
    let mut b = tiny_gguf();
    b[0] = b'X';
    assert!(err_text(open(b)).contains("magic: expected \"GGUF\""));
    let mut b = tiny_gguf();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(err_text(open(b)).contains("GGUF version 1 is not supported"));
}

#[test]
fn corrupt_bytes_never_panic() {
    let full = tiny_gguf();
    let mut rng = joule_engine::rng::Rng::new(11);
    for _ in 0..300 {
        let mut b = full.clone();
        for _ in 0..4 {
            let i = (rng.next_u64() as usize) % 2000.min(b.len());
            b[i] = rng.next_u64() as u8;
        }
        let _ = open(b); // Ok or Err, never a panic.
    }
}

/// A one-tensor GGUF for header-level cases.
fn one_tensor(dims: &[u64], dtype_id: u32, data_len: usize) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::String("llama".into()));
    w.tensor(
        "token_embd.weight",
        dims,
        joule_engine::tensor::DType::F32,
        vec![0u8; data_len],
    );
    let mut b = w.to_bytes();
    // Patch the type id that follows the dims of the only tensor.
    let name_at = b
        .windows(17)
        .position(|x| x == b"token_embd.weight")
        .expect("name");
    let type_at = name_at + 17 + 4 + 8 * dims.len();
    b[type_at..type_at + 4].copy_from_slice(&dtype_id.to_le_bytes());
    b
}

#[test]
fn a_tensor_larger_than_its_data_is_rejected() {
    let msg = GgufFile::from_bytes("x.gguf", one_tensor(&[64, 8], 0, 64 * 4))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("token_embd.weight") && msg.contains("needs 2048 bytes"),
        "{msg}"
    );
}

#[test]
fn an_unknown_tensor_type_is_named() {
    let msg = GgufFile::from_bytes("x.gguf", one_tensor(&[64], 6, 256))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("token_embd.weight") && msg.contains("Q5_0") && msg.contains("not supported"),
        "{msg}"
    );
    let msg = GgufFile::from_bytes("x.gguf", one_tensor(&[64], 99, 256))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("id 99"), "{msg}");
}

#[test]
fn a_row_not_a_multiple_of_the_block_is_rejected() {
    let msg = GgufFile::from_bytes("x.gguf", one_tensor(&[40], 8, 256))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("not a multiple of the Q8_0 block size 32"),
        "{msg}"
    );
}

#[test]
fn an_unknown_architecture_is_named() {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::String("gpt-neox".into()));
    let msg = err_text(open(w.to_bytes()));
    assert!(
        msg.contains("general.architecture") && msg.contains("`gpt-neox` is not supported"),
        "{msg}"
    );
}

#[test]
fn a_missing_hyperparameter_is_named() {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::String("llama".into()));
    let msg = err_text(open(w.to_bytes()));
    assert!(
        msg.contains("llama.embedding_length: missing metadata key"),
        "{msg}"
    );
}

#[test]
fn a_weight_of_the_wrong_shape_is_named_with_the_expected_shape() {
    let mut spec = TINY_MODELS[0];
    spec.ffn = 96; // The file says 128 in metadata only if we lie: write 96-wide FFN tensors...
    let mut bytes = testkit::gguf_bytes(&spec);
    // ...and claim 128 in the metadata.
    let key = b"llama.feed_forward_length";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("key")
        + key.len()
        + 4;
    bytes[at..at + 4].copy_from_slice(&128u32.to_le_bytes());
    let msg = err_text(open(bytes));
    assert!(
        msg.contains("blk.0.ffn_gate.weight") && msg.contains("expected 128 x 64"),
        "{msg}"
    );
}

#[test]
fn a_missing_tokenizer_is_reported() {
    let f = GgufFile::from_bytes("tiny.gguf", tiny_gguf()).expect("open");
    let msg = Tokenizer::from_gguf(&f)
        .err()
        .expect("no tokenizer")
        .to_string();
    assert!(
        msg.contains("tiny.gguf: tokenizer.ggml.model: missing"),
        "{msg}"
    );
    let dir = tempfile::tempdir().expect("dir");
    let msg = Tokenizer::from_dir(dir.path())
        .err()
        .expect("no tokenizer.json")
        .to_string();
    assert!(
        msg.contains("tokenizer.json") && msg.contains("missing"),
        "{msg}"
    );
}

#[test]
fn a_prompt_longer_than_the_context_is_refused() {
    let f = GgufFile::open(common::default_model()).expect("open");
    let tk = Tokenizer::from_gguf(&f).expect("tokenizer");
    let model = Model::from_gguf(&f, &LoadOptions::with_threads(1)).expect("model");
    let prompt = vec![28u32; model.config.context_len + 1];
    let err = generate(
        &model,
        &tk,
        &prompt,
        SamplingParams {
            max_tokens: 4,
            ..Default::default()
        },
        |_| true,
    )
    .expect_err("refused");
    assert!(err.to_string().contains("context is 8192 tokens"), "{err}");
    let err = generate(
        &model,
        &tk,
        &[],
        SamplingParams {
            max_tokens: 4,
            ..Default::default()
        },
        |_| true,
    )
    .expect_err("refused");
    assert!(err.to_string().contains("empty"), "{err}");
    let mut cache = model.new_cache(4);
    let err = model
        .forward(
            &[49_152],
            &mut cache,
            joule_engine::model::forward::Logits::Last,
        )
        .expect_err("bad id");
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
}

#[test]
fn bad_safetensors_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    let spec = TINY_MODELS[10];
    let path = testkit::write(&spec, dir.path()).expect("write");
    let st = path.join("model.safetensors");
    let full = std::fs::read(&st).expect("read");
    std::fs::write(&st, &full[..full.len() - 4]).expect("truncate");
    let msg = Model::load(&path, &LoadOptions::with_threads(1))
        .err()
        .expect("truncated")
        .to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("data_offsets"),
        "{msg}"
    );
    std::fs::write(path.join("config.json"), "{\"model_type\": \"llama\"}").expect("config");
    std::fs::write(&st, &full).expect("restore");
    let msg = Model::load(&path, &LoadOptions::with_threads(1))
        .err()
        .expect("config")
        .to_string();
    assert!(msg.contains("config.json: hidden_size"), "{msg}");
}

#[test]
fn an_absurd_head_size_is_an_error_not_an_overflow() {
    // Found by reading the code behind the fuzzer: key_length = 2^63 + 2 overflowed n_heads * head_dim.
    let spec = TINY_MODELS[0];
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::String("llama".into()))
        .meta("llama.embedding_length", Value::U32(spec.dim as u32))
        .meta("llama.block_count", Value::U32(1))
        .meta("llama.feed_forward_length", Value::U32(spec.ffn as u32))
        .meta("llama.attention.head_count", Value::U32(2))
        .meta("llama.attention.key_length", Value::U64((1 << 63) + 2))
        .meta("llama.context_length", Value::U32(16));
    w.tensor(
        "token_embd.weight",
        &[spec.dim as u64, 4],
        joule_engine::tensor::DType::F32,
        vec![0; spec.dim * 16],
    );
    let msg = err_text(open(w.to_bytes()));
    assert!(msg.contains("hyperparameters: sizes beyond"), "{msg}");
}

#[test]
fn a_huge_sentencepiece_token_loads() {
    // Deriving merges is quadratic in a token's length: a 256 KiB token once took 20 s.
    let mut w = GgufWriter::new();
    let tokens = vec![
        "<unk>".to_string(),
        "a".repeat(256 * 1024),
        "a".into(),
        "aa".into(),
    ];
    w.meta("tokenizer.ggml.model", Value::String("llama".into()))
        .meta(
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        )
        .meta(
            "tokenizer.ggml.scores",
            Value::Array(vec![Value::F32(0.0); 4]),
        )
        .meta("tokenizer.ggml.add_space_prefix", Value::Bool(false));
    let f = GgufFile::from_bytes("long.gguf", w.to_bytes()).expect("parse");
    let tk = Tokenizer::from_gguf(&f).expect("tokenizer");
    assert_eq!(tk.encode("aaa").expect("encode"), vec![3, 2]);
}
