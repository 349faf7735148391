//! Generates text from a model file: streams it to stdout, then prints the prefill and decode
//! rates to stderr.
//!
//! `cargo run --release -p joule-engine --example generate -- --model PATH --prompt TEXT [--chat]`

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use joule_engine::generate::generate;
use joule_engine::gguf::GgufFile;
use joule_engine::model::{LoadOptions, Model, physical_cores};
use joule_engine::sample::SamplingParams;
use joule_engine::tokenizer::{Message, Tokenizer};

#[derive(Parser, Debug)]
#[command(about = "Generate text with the Joule engine")]
struct Args {
    /// A GGUF file, or an HF directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long, env = "JOULE_MODEL")]
    model: PathBuf,
    /// The prompt (the user's message with --chat).
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt in the model's chat template.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// 0 (the default) is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads; defaults to the physical cores.
    #[arg(long, env = "JOULE_THREADS")]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = args.threads.unwrap_or_else(physical_cores);
    let opts = LoadOptions::with_threads(threads);
    let (model, tk) = if args.model.is_dir() {
        (
            Model::load(&args.model, &opts)?,
            Tokenizer::from_dir(&args.model)?,
        )
    } else {
        let file = GgufFile::open(&args.model)?;
        (
            Model::from_gguf(&file, &opts)?,
            Tokenizer::from_gguf(&file)?,
        )
    };
    let text = if args.chat {
        tk.apply_chat_template(&[Message::new("user", &args.prompt)], true)?
    } else {
        args.prompt.clone()
    };
    let prompt = tk.encode(&text)?;
    let params = SamplingParams {
        temperature: args.temperature,
        seed: Some(args.seed),
        max_tokens: u32::try_from(args.max_tokens).unwrap_or(u32::MAX),
        ..Default::default()
    };
    let mut stdout = std::io::stdout().lock();
    let (_, stats) = generate(&model, &tk, &prompt, params, |t| {
        // A closed pipe (`| head`) ends generation instead of failing it.
        stdout
            .write_all(t.as_bytes())
            .and_then(|_| stdout.flush())
            .is_ok()
    })
    .context("generation failed")?;
    writeln!(stdout).ok();
    eprintln!("{}", stats.summary());
    Ok(())
}
