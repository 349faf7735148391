//! An engine on the tiny random model with its SentencePiece vocabulary: fast enough for
//! property tests with hundreds of sequences.

use joule_engine::batch::{EngineConfig, EngineHandle};
use joule_engine::gguf::GgufFile;
use joule_engine::tokenizer::Tokenizer;
use joule_engine::{LoadOptions, Model, testkit};

pub fn model_and_tokenizer() -> (Model, Tokenizer) {
    let file = GgufFile::from_bytes("tiny-spm.gguf", testkit::spm_vocab_gguf()).expect("gguf");
    let model = Model::from_gguf(&file, &LoadOptions { threads: 1 }).expect("load");
    (model, Tokenizer::from_gguf(&file).expect("tokenizer"))
}

pub fn engine(cfg: EngineConfig) -> EngineHandle {
    let (m, t) = model_and_tokenizer();
    EngineHandle::start(m, t, cfg).expect("engine")
}

/// Waits until nothing runs or waits, then checks every block is back and the books agree.
pub fn assert_pool_full(h: &EngineHandle) {
    for _ in 0..4000 {
        let s = h.stats();
        if s.running == 0 && s.waiting == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let s = h.stats();
    assert_eq!((s.running, s.waiting), (0, 0), "the engine did not go idle");
    h.check_kv().expect("consistent pool");
    assert_eq!(
        (s.kv.used, s.kv.free),
        (0, s.kv.total),
        "blocks still held: {:?}",
        s.kv
    );
}
