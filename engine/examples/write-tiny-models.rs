//! Writes the tiny random-weight models of `joule_engine::testkit::TINY_MODELS` into a directory
//! (the fixture regeneration script feeds them to the Python reference), and `spm-vocab.gguf`,
//! a tiny model with a SentencePiece vocabulary (its tokenizer fixture comes from llama.cpp).
//!
//! `cargo run --release -p joule-engine --example write-tiny-models -- OUTDIR`

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: write-tiny-models OUTDIR"))?;
    std::fs::create_dir_all(&dir)?;
    for spec in &joule_engine::testkit::TINY_MODELS {
        let path = joule_engine::testkit::write(spec, dir.as_ref())?;
        println!("{} {}", spec.name, path.display());
    }
    // Not a logits fixture: the SentencePiece vocabulary for the tokenizer fixture.
    std::fs::write(
        std::path::Path::new(&dir).join("spm-vocab.gguf"),
        joule_engine::testkit::spm_vocab_gguf(),
    )?;
    Ok(())
}
