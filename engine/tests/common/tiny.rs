//! The tiny random model with its SentencePiece vocabulary: engines on it are fast enough for
//! property tests with hundreds of sequences.

use joule_engine::gguf::GgufFile;
use joule_engine::tokenizer::Tokenizer;
use joule_engine::{LoadOptions, Model, testkit};

pub fn model_and_tokenizer() -> (Model, Tokenizer) {
    let file = GgufFile::from_bytes("tiny-spm.gguf", testkit::spm_vocab_gguf()).expect("gguf");
    let model = Model::from_gguf(&file, &LoadOptions::with_threads(1)).expect("load");
    (model, Tokenizer::from_gguf(&file).expect("tokenizer"))
}
