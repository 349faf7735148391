//! Writes a random-weight GGUF model of Llama-3.2-1B's shape (16 layers, dim 2048, 32 heads,
//! 8 KV heads, FFN 8192, vocabulary 128256, tied embeddings), for benchmarks on hardware where
//! downloading the real model is not possible, with a small SentencePiece vocabulary padded to
//! the real size and a 256-token context. The weights are noise: the throughput and the
//! bytes read per token are those of the real model; the text is not.
//!
//! `cargo run --release -p joule-engine --example random-model -- f16|q4_0|q8_0 OUT.gguf`

use joule_engine::tensor::DType;
use joule_engine::testkit::{TinySpec, spm_vocab_gguf_for};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dtype, out] = args.as_slice() else {
        eprintln!("usage: random-model f16|q4_0|q8_0 OUT.gguf");
        return std::process::ExitCode::from(2);
    };
    let dtype = match dtype.as_str() {
        "f16" => DType::F16,
        "q4_0" => DType::Q4_0,
        "q8_0" => DType::Q8_0,
        other => {
            eprintln!("random-model: type must be f16, q4_0 or q8_0, got {other:?}");
            return std::process::ExitCode::from(2);
        }
    };
    let spec = TinySpec {
        name: "llama-3.2-1b-shape",
        arch: "llama",
        dtype,
        safetensors: false,
        dim: 2048,
        ffn: 8192,
        vocab: 128_256,
        layers: 16,
        heads: 32,
        kv_heads: 8,
        tied: true,
    };
    eprintln!("random-model: building {out} ({dtype:?}) in memory ...");
    if let Err(e) = std::fs::write(out, spm_vocab_gguf_for(&spec)) {
        eprintln!("random-model: cannot write {out}: {e}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
