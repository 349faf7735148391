//! OpenAI request bodies to [`Job`]s: JSON errors name the field, every value OpenAI would
//! refuse is refused here with the parameter's name, and features this server does not have
//! (tools, images, `n` above 1, `logit_bias`, ...) get a 400 that says so instead of being
//! silently ignored.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::types::{ChatRequest, CompletionRequest, Sampling, Stop};
use crate::error::Error;
use crate::relay::{Job, Prompt, fnv};
use joule_proto::v1;

/// How the response reports logprobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logprobs {
    None,
    /// `choices[].logprobs.content[]` with this many alternatives.
    Chat(u32),
    /// `choices[].logprobs.tokens/token_logprobs/top_logprobs`.
    Completion(u32),
}

/// A checked request and how to answer it.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub job: Job,
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: Logprobs,
}

/// Parses a JSON body; errors name the field as the client wrote it. The body and its
/// structured fields must be JSON objects (serde would also read a struct from an array of its
/// fields in order, which the OpenAI API never sends).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let v: Value = serde_json::from_slice(body).map_err(|e| Error::BadRequest {
        message: format!("the body is not valid JSON: {e}"),
        param: None,
    })?;
    objects_only(&v)?;
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = inner.to_string();
        let quoted = text.split('`').nth(1).map(str::to_string);
        let at = |field: &str| match path.as_str() {
            "." | "" => field.to_string(),
            p if p == field || p.ends_with(&format!(".{field}")) => p.to_string(),
            p => format!("{p}.{field}"),
        };
        if text.starts_with("unknown field")
            && let Some(f) = quoted
        {
            let p = at(&f);
            return Error::bad(
                &p,
                format!("unknown parameter {p:?}: the OpenAI API has no such field"),
            );
        }
        if text.starts_with("missing field")
            && let Some(f) = quoted
        {
            let p = at(&f);
            return Error::bad(&p, format!("missing required parameter {p:?}"));
        }
        let p = if path == "." { String::new() } else { path };
        let short = text.split(" at line ").next().unwrap_or(&text).to_string();
        Error::BadRequest {
            message: if p.is_empty() {
                format!("invalid body: {short}")
            } else {
                format!("invalid value for {p:?}: {short}")
            },
            param: (!p.is_empty()).then_some(p),
        }
    })
}

/// Refuses a body that is not an object, and `messages[i]` or `stream_options` that are not.
fn objects_only(v: &Value) -> Result<(), Error> {
    let Some(top) = v.as_object() else {
        return Err(Error::BadRequest {
            message: "the body must be a JSON object".into(),
            param: None,
        });
    };
    if let Some(Value::Array(ms)) = top.get("messages")
        && let Some(i) = ms.iter().position(|m| !m.is_object())
    {
        return Err(Error::bad(
            &format!("messages[{i}]"),
            "each message must be an object with role and content",
        ));
    }
    if let Some(o) = top.get("stream_options")
        && !o.is_object()
        && !o.is_null()
    {
        return Err(Error::bad(
            "stream_options",
            "stream_options must be an object",
        ));
    }
    Ok(())
}

pub fn completion(body: &[u8], default_max: u32) -> Result<Parsed, Error> {
    let r: CompletionRequest = parse(body)?;
    if r.echo == Some(true) {
        return Err(Error::bad("echo", "echo is not supported"));
    }
    if r.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(Error::bad("suffix", "suffix (insertion) is not supported"));
    }
    if r.best_of.is_some_and(|b| b != 1) {
        return Err(Error::bad("best_of", "best_of must be 1"));
    }
    let logprobs = match r.logprobs {
        None => Logprobs::None,
        Some(n @ 0..=20) => Logprobs::Completion(n as u32),
        Some(_) => return Err(Error::bad("logprobs", "logprobs must be from 0 to 20")),
    };
    let prompt = completion_prompt(&r.prompt)?;
    let estimate = match &prompt {
        Prompt::Ids(ids) => ids.len() as u32,
        Prompt::Text(t) => (t.len() / 4) as u32 + 1,
        Prompt::Chat(_) => 0,
    };
    let s = r.sampling();
    finish(
        r.model,
        prompt,
        &s,
        logprobs,
        default_max,
        "max_tokens",
        None,
        estimate,
    )
}

fn completion_prompt(p: &Value) -> Result<Prompt, Error> {
    let bad = || {
        Error::bad(
            "prompt",
            "prompt must be a non-empty string, an array of one string, or an array of token ids",
        )
    };
    let ids = |a: &[Value]| -> Result<Vec<u32>, Error> {
        a.iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| Error::bad("prompt", "token ids must be integers from 0"))
            })
            .collect()
    };
    match p {
        Value::String(s) if !s.is_empty() => Ok(Prompt::Text(s.clone())),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => completion_prompt(&a[0]),
        Value::Array(a) if a.len() > 1 && a.iter().all(Value::is_string) => Err(Error::bad(
            "prompt",
            "one prompt per request: send each prompt of the batch as its own request",
        )),
        Value::Array(a) if a.len() == 1 && a[0].is_array() => completion_prompt(&a[0]),
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_number) => {
            Ok(Prompt::Ids(ids(a)?))
        }
        _ => Err(bad()),
    }
}

pub fn chat(body: &[u8], default_max: u32) -> Result<Parsed, Error> {
    let r: ChatRequest = parse(body)?;
    let unsupported =
        |param: &str, what: &str| Err(Error::bad(param, format!("{what} is not supported")));
    if r.tools.as_ref().is_some_and(non_empty) || r.functions.as_ref().is_some_and(non_empty) {
        return unsupported("tools", "tool calling");
    }
    if let Some(c) = &r.tool_choice
        && c != "none"
        && !c.is_null()
    {
        return unsupported("tool_choice", "tool calling");
    }
    if r.function_call
        .as_ref()
        .is_some_and(|v| !v.is_null() && v != "none")
    {
        return unsupported("function_call", "function calling");
    }
    if let Some(f) = &r.response_format
        && !f.is_null()
        && f.get("type").and_then(Value::as_str) != Some("text")
    {
        return unsupported(
            "response_format",
            "structured output (json_object, json_schema)",
        );
    }
    if let Some(m) = &r.modalities
        && !m.is_null()
        && m.as_array().is_none_or(|a| a.iter().any(|x| x != "text"))
    {
        return unsupported("modalities", "output other than text");
    }
    if r.audio.as_ref().is_some_and(|v| !v.is_null()) {
        return unsupported("audio", "audio output");
    }
    if r.prediction.as_ref().is_some_and(|v| !v.is_null()) {
        return unsupported("prediction", "predicted output");
    }
    if r.messages.is_empty() {
        return Err(Error::bad(
            "messages",
            "messages must hold at least one message",
        ));
    }
    let mut messages = Vec::with_capacity(r.messages.len());
    for (i, m) in r.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" | "assistant" | "tool" => m.role.as_str(),
            other => {
                return Err(Error::bad(
                    &format!("messages[{i}].role"),
                    format!(
                        "role {other:?} is not one of system, developer, user, assistant, tool"
                    ),
                ));
            }
        };
        if m.tool_calls.as_ref().is_some_and(non_empty) {
            return unsupported(&format!("messages[{i}].tool_calls"), "tool calling");
        }
        let content = content(&m.content)
            .map_err(|why| Error::bad(&format!("messages[{i}].content"), why))?;
        messages.push(v1::ChatMessage {
            role: role.to_string(),
            content,
        });
    }
    let logprobs = match (r.logprobs, r.top_logprobs) {
        (Some(true), None) => Logprobs::Chat(0),
        (Some(true), Some(n @ 0..=20)) => Logprobs::Chat(n as u32),
        (_, Some(n)) if !(0..=20).contains(&n) => {
            return Err(Error::bad(
                "top_logprobs",
                "top_logprobs must be from 0 to 20",
            ));
        }
        (_, Some(_)) => {
            return Err(Error::bad(
                "top_logprobs",
                "top_logprobs needs logprobs: true",
            ));
        }
        _ => Logprobs::None,
    };
    // The shared system prompt (or the client's own cache key) keys prefix affinity.
    let prefix = r
        .prompt_cache_key
        .as_deref()
        .map(|k| fnv(k.as_bytes()))
        .or_else(|| {
            messages
                .first()
                .filter(|m| m.role == "system")
                .map(|m| fnv(m.content.as_bytes()))
        });
    let estimate = messages
        .iter()
        .map(|m| m.content.len() as u32 / 4 + 4)
        .sum();
    let max_param = if r.max_completion_tokens.is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let s = r.sampling();
    finish(
        r.model,
        Prompt::Chat(messages),
        &s,
        logprobs,
        default_max,
        max_param,
        prefix,
        estimate,
    )
}

fn non_empty(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

/// A message's text: a string, or an array of `{"type": "text", "text": ...}` parts.
fn content(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    (Some(kind), _) if kind != "text" => {
                        return Err(format!(
                            "content parts of type {kind:?} are not supported (text only)"
                        ));
                    }
                    _ => {
                        return Err(
                            "a content part must be {\"type\": \"text\", \"text\": ...}".into()
                        );
                    }
                }
            }
            Ok(out)
        }
        _ => Err("content must be a string or an array of text parts".into()),
    }
}

#[allow(clippy::too_many_arguments)]
fn finish(
    model: String,
    prompt: Prompt,
    s: &Sampling,
    logprobs: Logprobs,
    default_max: u32,
    max_param: &str,
    prefix: Option<u64>,
    estimate: u32,
) -> Result<Parsed, Error> {
    if model.is_empty() {
        return Err(Error::bad(
            "model",
            "model is empty: name one of GET /v1/models",
        ));
    }
    let max_tokens = match s.max_tokens {
        None => default_max,
        Some(n) if n < 1 => {
            return Err(Error::bad(
                max_param,
                format!("{max_param} must be at least 1, got {n}"),
            ));
        }
        Some(n) => u32::try_from(n)
            .map_err(|_| Error::bad(max_param, format!("{max_param} is too large")))?,
    };
    let range = |param: &str, v: Option<f64>, lo: f64, hi: f64| -> Result<Option<f32>, Error> {
        match v {
            Some(x) if !(lo..=hi).contains(&x) => Err(Error::bad(
                param,
                format!("{param} must be from {lo} to {hi}, got {x}"),
            )),
            v => Ok(v.map(|x| x as f32)),
        }
    };
    let mut temperature = range("temperature", s.temperature, 0.0, 2.0)?;
    let mut top_p = range("top_p", s.top_p, 0.0, 1.0)?;
    if top_p == Some(0.0) {
        // Nothing but the likeliest token: greedy.
        temperature = Some(0.0);
        top_p = None;
    }
    let presence_penalty = range("presence_penalty", s.presence_penalty, -2.0, 2.0)?;
    let frequency_penalty = range("frequency_penalty", s.frequency_penalty, -2.0, 2.0)?;
    let min_p = range("min_p", s.min_p, 0.0, 1.0)?;
    let repetition_penalty = match s.repetition_penalty {
        Some(x) if !(x > 0.0 && x <= 10.0) => {
            return Err(Error::bad(
                "repetition_penalty",
                "repetition_penalty must be in (0, 10]",
            ));
        }
        v => v.map(|x| x as f32),
    };
    let top_k = match s.top_k {
        None | Some(-1) | Some(0) => None,
        Some(k) if k >= 1 => Some(u32::try_from(k).unwrap_or(u32::MAX)),
        Some(k) => {
            return Err(Error::bad(
                "top_k",
                format!("top_k must be at least 1 (or -1: no limit), got {k}"),
            ));
        }
    };
    match s.n {
        None | Some(1) => {}
        Some(n) if n < 1 => return Err(Error::bad("n", format!("n must be at least 1, got {n}"))),
        Some(n) => {
            return Err(Error::bad(
                "n",
                format!(
                    "n = {n} is not supported: this server returns one choice per request; send \
                     {n} requests (with different seeds) instead"
                ),
            ));
        }
    }
    if s.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(Error::bad("logit_bias", "logit_bias is not supported"));
    }
    let stop = match &s.stop {
        None => Vec::new(),
        Some(Stop::One(x)) => vec![x.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stop.len() > 4 {
        return Err(Error::bad("stop", "stop takes at most 4 sequences"));
    }
    if stop.iter().any(String::is_empty) {
        return Err(Error::bad("stop", "stop sequences must not be empty"));
    }
    let stream = s.stream.unwrap_or(false);
    if s.stream_options.is_some() && !stream {
        return Err(Error::bad(
            "stream_options",
            "stream_options needs stream: true",
        ));
    }
    let include_usage = s
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let sampling = v1::SamplingParams {
        temperature,
        top_k,
        top_p,
        min_p,
        repetition_penalty,
        presence_penalty,
        frequency_penalty,
        seed: s.seed.map(|x| x as u64),
        max_tokens: Some(max_tokens),
        stop,
        stop_token_ids: Vec::new(),
        ignore_eos: s.ignore_eos.unwrap_or(false),
        logprobs: match logprobs {
            Logprobs::None => None,
            Logprobs::Chat(n) | Logprobs::Completion(n) => Some(n),
        },
    };
    Ok(Parsed {
        job: Job {
            model,
            prompt,
            sampling,
            tenant: None,
            ticket: None,
            request_id: String::new(),
            prefix,
            prompt_estimate: estimate,
        },
        stream,
        include_usage,
        logprobs,
    })
}

#[cfg(test)]
mod tests;
