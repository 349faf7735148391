//! `joule-engine`: turns a model file into tokens. No networking lives here.
//!
//! Layout:
//! - [`gguf`]: GGUF v2/v3 reader (and a writer for tests and tools); [`safetensors`]: HF
//!   safetensors + `config.json`.
//! - [`tensor`]: stored element types; [`quant`]: block formats and SIMD dot products;
//!   [`matmul`]: threaded matrix-vector and matrix-matrix products over stored weights.
//! - [`model`]: hyperparameters, weights and the forward pass of `llama` and `qwen2`.
//! - [`tokenizer`]: GGUF vocabularies (BPE `gpt2`, SentencePiece `llama`) and `tokenizer.json`,
//!   and chat templates.
//! - [`backend`]: where a step runs (the CPU, or a GPU with the `cuda` feature).
//! - [`cuda`]: the CUDA backend's device side (GPU probe, compute types, NVRTC kernels); a
//!   stub that answers "built without CUDA" without the `cuda` feature.
//! - [`generate`]: a single-sequence generation loop with sampling; [`error`]: the one error type.

pub mod backend;
pub mod batch;
pub mod cuda;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod kv;
pub mod matmul;
pub mod model;
pub mod quant;
pub mod rng;
pub mod safetensors;
pub mod sample;
pub mod tensor;
pub mod testkit;
pub mod tokenizer;

pub use error::{EngineError, Result};
pub use model::{LoadOptions, Model};
