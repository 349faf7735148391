//! Prints the top logits after a list of token ids (a debugging aid for comparing against
//! `tests/reference/reference.py`).
//!
//! `cargo run --release -p joule-engine --example logits -- MODEL ID [ID ...]`

use joule_engine::model::forward::Logits;
use joule_engine::model::{LoadOptions, Model};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: logits MODEL ID [ID ...]"))?;
    let ids: Vec<u32> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    let model = Model::load(&path, &LoadOptions::default())?;
    let mut cache = model.new_cache(ids.len());
    let logits = model.forward(&ids, &mut cache, Logits::All)?;
    let vocab = model.config.vocab;
    for (pos, row) in logits.chunks(vocab).enumerate() {
        let mut top: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        let shown: Vec<String> = top[..5]
            .iter()
            .map(|(i, v)| format!("{i}:{v:.4}"))
            .collect();
        println!("pos {pos}: {}", shown.join(" "));
    }
    Ok(())
}
