//! OpenAI response objects from relayed events: whole responses (`chat.completion`,
//! `text_completion`) and the SSE chunks of a stream (the first with `role: assistant`, one
//! `id` per stream, exactly one `finish_reason`, the usage chunk with `include_usage`, then
//! `data: [DONE]`). `usage` carries the request's joules and whether they were measured or
//! estimated, in fields the official clients ignore.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use joule_proto::v1;
use serde_json::{Value, json};

use super::params::Logprobs;

/// Which endpoint is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// What every chunk or response of one request shares.
#[derive(Debug, Clone)]
pub struct Meta {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub logprobs: Logprobs,
}

impl Meta {
    pub fn new(kind: Kind, model: &str, logprobs: Logprobs) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seed = now.as_nanos() as u64
            ^ N.fetch_add(1, Ordering::Relaxed).rotate_left(40)
            ^ u64::from(std::process::id()).rotate_left(20);
        let prefix = match kind {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        };
        Self {
            kind,
            id: format!(
                "{prefix}-{:016x}{:08x}",
                crate::relay::fnv(&seed.to_le_bytes()),
                seed as u32
            ),
            created: now.as_secs(),
            model: model.to_string(),
            logprobs,
        }
    }
}

pub fn finish_reason(f: &v1::Finish) -> &'static str {
    match v1::FinishReason::try_from(f.reason) {
        Ok(v1::FinishReason::Length) => "length",
        _ => "stop",
    }
}

pub fn usage(u: &v1::Usage) -> Value {
    let source = match v1::EnergySource::try_from(u.energy_source) {
        Ok(v1::EnergySource::Measured) => "measured",
        _ => "estimated",
    };
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
        "joules": u.joules,
        "energy_source": source,
    })
}

fn bytes(s: &str) -> Value {
    Value::from(s.as_bytes().to_vec())
}

/// Chat logprob items of `events`.
fn chat_logprobs(lps: &[v1::TokenLogprob]) -> Vec<Value> {
    lps.iter()
        .map(|l| {
            json!({
                "token": l.token,
                "logprob": l.logprob,
                "bytes": bytes(&l.token),
                "top_logprobs": l.top.iter().map(|t| json!({
                    "token": t.token, "logprob": t.logprob, "bytes": bytes(&t.token)
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// Completion logprobs (the legacy shape), `offset` being the text already returned.
fn completion_logprobs(lps: &[v1::TokenLogprob], mut offset: usize) -> Value {
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top = Vec::new();
    let mut offsets = Vec::new();
    for l in lps {
        tokens.push(Value::from(l.token.clone()));
        token_logprobs.push(Value::from(l.logprob));
        let m: serde_json::Map<String, Value> = l
            .top
            .iter()
            .map(|t| (t.token.clone(), Value::from(t.logprob)))
            .collect();
        top.push(Value::Object(m));
        offsets.push(Value::from(offset));
        offset += l.token.len();
    }
    json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets})
}

/// A whole (non-streamed) response.
pub fn whole(meta: &Meta, text: &str, lps: &[v1::TokenLogprob], finish: &v1::Finish) -> Value {
    let fr = finish_reason(finish);
    let u = finish.usage.as_ref().map(usage).unwrap_or(Value::Null);
    match meta.kind {
        Kind::Chat => {
            let logprobs = match meta.logprobs {
                Logprobs::None => Value::Null,
                _ => json!({"content": chat_logprobs(lps), "refusal": null}),
            };
            json!({
                "id": meta.id, "object": "chat.completion", "created": meta.created,
                "model": meta.model, "system_fingerprint": null,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": null},
                    "logprobs": logprobs,
                    "finish_reason": fr,
                }],
                "usage": u,
            })
        }
        Kind::Completion => {
            let logprobs = match meta.logprobs {
                Logprobs::None => Value::Null,
                _ => completion_logprobs(lps, 0),
            };
            json!({
                "id": meta.id, "object": "text_completion", "created": meta.created,
                "model": meta.model, "system_fingerprint": null,
                "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": fr}],
                "usage": u,
            })
        }
    }
}

/// Turns relayed events into SSE chunks, one stream's worth.
#[derive(Debug)]
pub struct Chunker {
    pub meta: Meta,
    pub include_usage: bool,
    started: bool,
    /// Bytes of text sent so far (completion logprobs' offsets).
    sent: usize,
}

impl Chunker {
    pub fn new(meta: Meta, include_usage: bool) -> Self {
        Self {
            meta,
            include_usage,
            started: false,
            sent: 0,
        }
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> String {
        let object = match self.meta.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        let mut c = json!({
            "id": self.meta.id, "object": object, "created": self.meta.created,
            "model": self.meta.model, "system_fingerprint": null, "choices": choices,
        });
        if self.include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        format!("data: {c}\n\n")
    }

    /// The SSE text for one event (possibly several chunks; the last event adds the finish,
    /// the usage chunk and `[DONE]`).
    pub fn event(&mut self, ev: &v1::TokenEvent) -> String {
        let mut out = String::new();
        if !self.started && self.meta.kind == Kind::Chat {
            out.push_str(&self.chunk(
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
                None,
            ));
        }
        self.started = true;
        if !ev.text.is_empty() || !ev.logprobs.is_empty() {
            let logprobs = match self.meta.logprobs {
                Logprobs::None => Value::Null,
                Logprobs::Chat(_) => {
                    json!({"content": chat_logprobs(&ev.logprobs), "refusal": null})
                }
                Logprobs::Completion(_) => completion_logprobs(&ev.logprobs, self.sent),
            };
            let choice = match self.meta.kind {
                Kind::Chat => {
                    json!({"index": 0, "delta": {"content": ev.text}, "logprobs": logprobs, "finish_reason": null})
                }
                Kind::Completion => {
                    json!({"index": 0, "text": ev.text, "logprobs": logprobs, "finish_reason": null})
                }
            };
            self.sent += ev.text.len();
            out.push_str(&self.chunk(json!([choice]), None));
        }
        if let Some(f) = &ev.finish {
            let fr = finish_reason(f);
            let choice = match self.meta.kind {
                Kind::Chat => {
                    json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": fr})
                }
                Kind::Completion => {
                    json!({"index": 0, "text": "", "logprobs": null, "finish_reason": fr})
                }
            };
            out.push_str(&self.chunk(json!([choice]), None));
            if self.include_usage {
                let u = f.usage.as_ref().map(usage).unwrap_or(Value::Null);
                out.push_str(&self.chunk(json!([]), Some(u)));
            }
            out.push_str("data: [DONE]\n\n");
        }
        out
    }

    /// An error in the middle of a stream: OpenAI's error object as an event (the official
    /// clients raise it).
    pub fn error(&self, e: &crate::error::Error) -> String {
        format!("data: {}\n\n", e.body())
    }
}
