//! Fuzzes the GGUF reader and what is built on top of a parsed file: any byte string must give
//! `Ok` or an `Err`, never a panic, an abort, an out-of-memory or a hang.

#![no_main]

use joule_engine::gguf::GgufFile;
use joule_engine::model::{LoadOptions, Model};
use joule_engine::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes("fuzz.gguf", data.to_vec()) else {
        return;
    };
    let _ = Model::from_gguf(&file, &LoadOptions::with_threads(1));
    let _ = Tokenizer::from_gguf(&file);
});
