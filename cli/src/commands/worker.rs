//! The verbs that talk to one worker directly (`--worker`): stream a generation or a chat,
//! list its models, show its stats, wait until it serves, drain it.

use std::io::Write;
use std::time::Duration;

use joule_proto::internal::v1 as pb;
use joule_proto::v1;

use crate::args::Sampling;
use crate::render::Format;
use crate::status;
use crate::views;

pub async fn generate(
    w: &crate::connect::WorkerTarget,
    s: &Sampling,
    prompt: String,
) -> anyhow::Result<()> {
    let mut c = crate::connect::worker(&w.addr, &w.token).await?;
    let r = v1::GenerateRequest {
        model: s.model.clone(),
        prompt: Some(v1::generate_request::Prompt::Text(prompt)),
        sampling: Some(s.params()),
        ..Default::default()
    };
    print_stream(c.generate(r).await.map_err(status)?.into_inner()).await
}

pub async fn chat(
    w: &crate::connect::WorkerTarget,
    s: &Sampling,
    system: Option<String>,
    message: String,
) -> anyhow::Result<()> {
    let mut c = crate::connect::worker(&w.addr, &w.token).await?;
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

pub async fn models(w: &crate::connect::WorkerTarget, f: Format) -> anyhow::Result<()> {
    let mut c = crate::connect::worker(&w.addr, &w.token).await?;
    let m = c
        .list_models(pb::ListModelsRequest {})
        .await
        .map_err(status)?
        .into_inner();
    views::worker::models(&m.models, f)
}

pub async fn stats(w: &crate::connect::WorkerTarget, f: Format) -> anyhow::Result<()> {
    let mut c = crate::connect::worker(&w.addr, &w.token).await?;
    let s = c
        .stats(pb::StatsRequest::default())
        .await
        .map_err(status)?
        .into_inner();
    views::worker::stats(&s, f)
}

pub async fn drain(w: &crate::connect::WorkerTarget, deadline_ms: u32) -> anyhow::Result<()> {
    let mut c = crate::connect::worker(&w.addr, &w.token).await?;
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

/// Prints a stream's text as it arrives, then a usage line on stderr.
async fn print_stream(s: tonic::Streaming<v1::TokenEvent>) -> anyhow::Result<()> {
    let mut s = s;
    let mut out = std::io::stdout();
    while let Some(ev) = s.message().await.map_err(crate::status)? {
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

/// Waits until the worker answers, serves (`model`, or at least one model), or the timeout
/// passes; a worker still starting up (refusing connections) is retried.
pub async fn wait(
    w: &crate::connect::WorkerTarget,
    model: &str,
    timeout_s: u64,
) -> anyhow::Result<()> {
    let until = std::time::Instant::now() + Duration::from_secs(timeout_s.min(7 * 24 * 3600));
    let mut last = String::from("no answer yet");
    while std::time::Instant::now() < until {
        match crate::connect::worker(&w.addr, &w.token).await {
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
