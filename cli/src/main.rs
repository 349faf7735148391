//! `joulectl`: Joule's command-line client. For now it talks to one worker directly
//! (`--worker`): stream a generation or a chat, list models, show stats, drain. Tables by
//! default, `-o json|yaml` for scripts.

mod output;

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use joule_proto::internal::v1 as pb;
use joule_proto::internal::v1::worker_client::WorkerClient;
use joule_proto::v1;
use tonic::transport::Channel;

use output::Format;

#[derive(Parser, Debug)]
#[command(name = "joulectl", version, about = "Joule's command-line client")]
struct Cli {
    /// The worker's gRPC address.
    #[arg(
        long,
        global = true,
        env = "JOULE_WORKER",
        default_value = "http://127.0.0.1:50061"
    )]
    worker: String,
    /// Output format of listings.
    #[arg(short = 'o', long, global = true, default_value = "table")]
    output: Format,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug)]
struct Sampling {
    /// Model name; empty: the worker's only model.
    #[arg(long, short, default_value = "")]
    model: String,
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// 0 is greedy.
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    seed: Option<u64>,
}

impl Sampling {
    fn params(&self) -> v1::SamplingParams {
        v1::SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            max_tokens: Some(self.max_tokens),
            ..Default::default()
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Stream the completion of a raw prompt.
    Generate {
        #[command(flatten)]
        s: Sampling,
        prompt: String,
    },
    /// Stream a chat answer (rendered with the model's chat template).
    Chat {
        #[command(flatten)]
        s: Sampling,
        /// A system message to start the chat with.
        #[arg(long)]
        system: Option<String>,
        message: String,
    },
    /// The models the worker serves.
    Models,
    /// Engine, energy and calibration figures.
    Stats,
    /// Wait until the worker (or a model) is serving.
    Wait {
        #[arg(long, default_value = "")]
        model: String,
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
    /// Stop admitting; let streams finish until the deadline; cancel the rest.
    Drain {
        #[arg(long, default_value_t = 0)]
        deadline_ms: u32,
    },
}

async fn connect(addr: &str) -> anyhow::Result<WorkerClient<Channel>> {
    let ch = Channel::from_shared(addr.to_string())
        .with_context(|| format!("--worker {addr:?} is not a URL like http://127.0.0.1:50061"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach the worker at {addr}"))?;
    Ok(WorkerClient::new(ch))
}

/// Prints a stream's text as it arrives, then a usage line on stderr.
async fn print_stream(s: tonic::Streaming<v1::TokenEvent>) -> anyhow::Result<()> {
    let mut s = s;
    let mut out = std::io::stdout();
    while let Some(ev) = s.message().await.map_err(status)? {
        out.write_all(ev.text.as_bytes())?;
        out.flush()?;
        if let Some(f) = ev.finish {
            writeln!(out)?;
            let reason = v1::FinishReason::try_from(f.reason)
                .map(|r| {
                    r.as_str_name()
                        .trim_start_matches("FINISH_REASON_")
                        .to_lowercase()
                })
                .unwrap_or_default();
            if let Some(u) = f.usage {
                let source = v1::EnergySource::try_from(u.energy_source)
                    .map(|s| {
                        s.as_str_name()
                            .trim_start_matches("ENERGY_SOURCE_")
                            .to_lowercase()
                    })
                    .unwrap_or_default();
                eprintln!(
                    "[{reason}] {} prompt + {} output tokens, first token {:.0} ms, {:.1} ms/token, {:.2} J ({source}), {:.1} tokens/J",
                    u.prompt_tokens,
                    u.completion_tokens,
                    u.time_to_first_token_ms,
                    u.time_per_output_token_ms,
                    u.joules,
                    if u.joules > 0.0 {
                        u.completion_tokens as f64 / u.joules
                    } else {
                        0.0
                    }
                );
            }
            if !f.message.is_empty() {
                eprintln!("{}", f.message);
            }
        }
    }
    Ok(())
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Cmd::Wait { model, timeout_s } = &cli.cmd {
        return wait(&cli.worker, model, *timeout_s).await;
    }
    let mut c = connect(&cli.worker).await?;
    match cli.cmd {
        Cmd::Generate { s, prompt } => {
            let r = v1::GenerateRequest {
                model: s.model.clone(),
                prompt: Some(v1::generate_request::Prompt::Text(prompt)),
                sampling: Some(s.params()),
                ..Default::default()
            };
            print_stream(c.generate(r).await.map_err(status)?.into_inner()).await
        }
        Cmd::Chat { s, system, message } => {
            let mut messages = Vec::new();
            if let Some(sys) = system {
                messages.push(v1::ChatMessage {
                    role: "system".into(),
                    content: sys,
                });
            }
            messages.push(v1::ChatMessage {
                role: "user".into(),
                content: message,
            });
            let r = v1::ChatRequest {
                model: s.model.clone(),
                messages,
                sampling: Some(s.params()),
                ..Default::default()
            };
            print_stream(c.chat(r).await.map_err(status)?.into_inner()).await
        }
        Cmd::Models => {
            let m = c
                .list_models(pb::ListModelsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            output::models(&m.models, cli.output)
        }
        Cmd::Stats => {
            let s = c
                .stats(pb::StatsRequest::default())
                .await
                .map_err(status)?
                .into_inner();
            output::stats(&s, cli.output)
        }
        Cmd::Wait { .. } => unreachable!("handled above"),
        Cmd::Drain { deadline_ms } => {
            let r = c
                .drain(pb::DrainRequest { deadline_ms })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "drained: {} finished, {} cancelled",
                r.finished, r.cancelled
            );
            Ok(())
        }
    }
}

/// Waits until the worker answers, serves (`model`, or at least one model), or the timeout
/// passes; a worker still starting up (refusing connections) is retried.
async fn wait(addr: &str, model: &str, timeout_s: u64) -> anyhow::Result<()> {
    let until = std::time::Instant::now() + Duration::from_secs(timeout_s);
    let mut last = String::from("no answer yet");
    while std::time::Instant::now() < until {
        match connect(addr).await {
            Ok(mut c) => {
                let h = c
                    .health(pb::HealthRequest {
                        model: model.to_string(),
                    })
                    .await;
                let listed = c
                    .list_models(pb::ListModelsRequest {})
                    .await
                    .map(|r| !r.into_inner().models.is_empty());
                match (h, listed) {
                    (Ok(h), Ok(listed)) => {
                        let h = h.into_inner();
                        if h.serving && (listed || !model.is_empty()) {
                            return Ok(());
                        }
                        last = if h.message.is_empty() {
                            "no model loaded yet".into()
                        } else {
                            h.message
                        };
                    }
                    (Err(e), _) | (_, Err(e)) => last = e.message().to_string(),
                }
            }
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("not serving after {timeout_s}s: {last}")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
