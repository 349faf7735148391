//! Writes a random-weight GGUF model of Llama-3.2-1B's shape (16 layers, dim 2048, 32 heads,
//! 8 KV heads, FFN 8192, vocabulary 128256, tied embeddings), for benchmarks on hardware where
//! downloading the real model is not possible, with a small SentencePiece vocabulary padded to
//! the real size and a 4096-token context. The weights are noise: the throughput and the
//! bytes read per token are those of the real model; the text is not.
//!
//! `cargo run --release -p joule-engine --example random-model -- TYPE OUT.gguf`
//!
//! TYPE is `f16`, `q4_0`, `q8_0`, `q4_k` or `q6_k` (every matrix, embedding included, of that
//! type), or `q4_k_m`: llama.cpp's Q4_K_M mix as [`requant_dtype`] chooses it, Q6_K for the
//! tied embedding and for the value and FFN-down matrices of 8 of the 16 layers, Q4_K for the
//! rest (about 0.8 GB). The model is built in memory before it is written.

use std::process::ExitCode;

use joule_engine::tensor::DType;
use joule_engine::testkit::{
    Requant, TinySpec, requant_dtype, spm_vocab_gguf_for, spm_vocab_gguf_mixed,
};

const USAGE: &str = "usage: random-model f16|q4_0|q8_0|q4_k|q6_k|q4_k_m OUT.gguf";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, out] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    // `None`: the Q4_K_M mix.
    let dtype = match kind.as_str() {
        "f16" => Some(DType::F16),
        "q4_0" => Some(DType::Q4_0),
        "q8_0" => Some(DType::Q8_0),
        "q4_k" => Some(DType::Q4K),
        "q6_k" => Some(DType::Q6K),
        "q4_k_m" => None,
        other => {
            eprintln!(
                "random-model: type must be f16, q4_0, q8_0, q4_k, q6_k or q4_k_m, got {other:?}"
            );
            return ExitCode::from(2);
        }
    };
    let spec = TinySpec {
        name: "llama-3.2-1b-shape",
        arch: "llama",
        dtype: dtype.unwrap_or(DType::Q4K),
        safetensors: false,
        dim: 2048,
        ffn: 8192,
        vocab: 128_256,
        layers: 16,
        heads: 32,
        kv_heads: 8,
        tied: true,
    };
    eprintln!("random-model: building {out} ({kind}) in memory ...");
    let bytes = match dtype {
        Some(_) => spm_vocab_gguf_for(&spec),
        None => spm_vocab_gguf_mixed(&spec, &|name, cols| {
            requant_dtype(name, cols, spec.layers, !spec.tied, Requant::Q4KM)
        }),
    };
    if let Err(e) = std::fs::write(out, bytes) {
        eprintln!("random-model: cannot write {out}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
