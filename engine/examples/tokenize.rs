//! Prints the token ids of a text, and each id's stored token, with the model's own tokenizer.
//!
//! `cargo run --release -p joule-engine --example tokenize -- MODEL TEXT`

use joule_engine::gguf::GgufFile;
use joule_engine::tokenizer::Tokenizer;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(text)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: tokenize MODEL TEXT");
    };
    let path = std::path::PathBuf::from(path);
    let tk = if path.is_dir() {
        Tokenizer::from_dir(&path)?
    } else {
        Tokenizer::from_gguf(&GgufFile::open(&path)?)?
    };
    let ids = tk.encode(&text)?;
    println!("{ids:?}");
    let pieces: Vec<&str> = ids
        .iter()
        .map(|&i| tk.token_text(i).unwrap_or("?"))
        .collect();
    println!("{pieces:?}");
    Ok(())
}
