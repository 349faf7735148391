//! The one place where API messages become engine types and back. Requests are checked here on
//! the way in: anything the engine would refuse comes back as `INVALID_ARGUMENT` with a message
//! naming the field, before the request reaches a model.

use std::sync::Arc;
use std::time::Duration;

use joule_engine::EngineError;
use joule_engine::batch::{Event, Finish, FinishReason, Usage};
use joule_engine::sample::{SamplingParams, TokenLogprobs};
use tonic::Status;

use joule_proto::v1;

/// The engine's sampling settings for `p`: unset fields take the engine's defaults, and the
/// result is validated (a refusal names the field and the accepted range).
pub fn sampling(p: Option<&v1::SamplingParams>) -> Result<SamplingParams, Status> {
    let d = SamplingParams::default();
    let Some(p) = p else {
        return Ok(d);
    };
    let s = SamplingParams {
        temperature: p.temperature.unwrap_or(d.temperature),
        top_k: p.top_k,
        top_p: p.top_p.unwrap_or(d.top_p),
        min_p: p.min_p.unwrap_or(d.min_p),
        repetition_penalty: p.repetition_penalty.unwrap_or(d.repetition_penalty),
        presence_penalty: p.presence_penalty.unwrap_or(d.presence_penalty),
        frequency_penalty: p.frequency_penalty.unwrap_or(d.frequency_penalty),
        seed: p.seed,
        max_tokens: p.max_tokens.unwrap_or(d.max_tokens),
        stop: p.stop.clone(),
        stop_token_ids: p.stop_token_ids.clone(),
        ignore_eos: p.ignore_eos,
        logprobs: p.logprobs,
    };
    s.validate().map_err(|e| status(&e))?;
    Ok(s)
}

/// The tenant id and weight of a request: empty or unset id is `default`, unset weight is 1.
pub fn tenant(t: Option<&v1::Tenant>) -> Result<(Arc<str>, f64), Status> {
    let id = t.map(|t| t.id.trim()).filter(|s| !s.is_empty());
    let weight = t.and_then(|t| t.weight).unwrap_or(1.0);
    if !(weight > 0.0 && weight.is_finite()) {
        return Err(Status::invalid_argument(format!(
            "tenant.weight must be a number > 0 (unset means 1), got {weight}"
        )));
    }
    if let Some(id) = id
        && (id.len() > 128 || id.chars().any(char::is_control))
    {
        return Err(Status::invalid_argument(
            "tenant.id must be at most 128 characters with no control characters",
        ));
    }
    Ok((Arc::from(id.unwrap_or("default")), weight))
}

/// What a generate request asks to complete.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// The prompt of `r`; refuses a request that sets neither form or an empty one.
pub fn prompt(r: &v1::GenerateRequest) -> Result<Prompt, Status> {
    match &r.prompt {
        Some(v1::generate_request::Prompt::Text(t)) if !t.is_empty() => Ok(Prompt::Text(t.clone())),
        Some(v1::generate_request::Prompt::TokenIds(ids)) if !ids.ids.is_empty() => {
            Ok(Prompt::Ids(ids.ids.clone()))
        }
        _ => Err(Status::invalid_argument(
            "prompt is empty: set prompt.text or prompt.token_ids",
        )),
    }
}

/// How many prompt tokens an earlier attempt generated (`resumed_tokens`); only with token ids.
pub fn resumed(r: &v1::GenerateRequest, prompt: &Prompt) -> Result<usize, Status> {
    match (r.resumed_tokens, prompt) {
        (0, _) => Ok(0),
        (n, Prompt::Ids(ids)) if (n as usize) < ids.len() => Ok(n as usize),
        (n, Prompt::Ids(ids)) => Err(Status::invalid_argument(format!(
            "resumed_tokens ({n}) must be fewer than the {} prompt.token_ids",
            ids.len()
        ))),
        (_, Prompt::Text(_)) => Err(Status::invalid_argument(
            "resumed_tokens needs prompt.token_ids (the earlier attempt's tokens), not text",
        )),
    }
}

/// The gRPC status for an engine error: what the caller sent is `INVALID_ARGUMENT` (a bad
/// request, a model file that does not parse or is not supported, a chat the template cannot
/// render), a prompt beyond the model's context `OUT_OF_RANGE`, a missing file is `NOT_FOUND`,
/// anything else `INTERNAL`.
pub fn status(e: &EngineError) -> Status {
    let msg = e.to_string();
    match e {
        EngineError::InvalidRequest(_)
        | EngineError::Format { .. }
        | EngineError::Unsupported { .. }
        | EngineError::Template(_) => Status::invalid_argument(msg),
        EngineError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Status::not_found(msg)
        }
        EngineError::OutOfMemory(_) => Status::resource_exhausted(msg),
        // A prompt longer than the context: nothing about the request's settings can fix it.
        EngineError::ContextExceeded(_) => Status::out_of_range(msg),
        // A GPU or driver failure is the server's problem, never the request's.
        EngineError::Device(_) => Status::internal(msg),
        _ => Status::internal(msg),
    }
}

pub fn finish_reason(r: FinishReason) -> v1::FinishReason {
    match r {
        FinishReason::Stop => v1::FinishReason::Stop,
        FinishReason::Length => v1::FinishReason::Length,
        FinishReason::Cancelled => v1::FinishReason::Cancelled,
        FinishReason::Error => v1::FinishReason::Error,
    }
}

/// The wire form of an engine finish reason, back (`None` for unspecified or unknown values).
pub fn engine_finish_reason(r: i32) -> Option<FinishReason> {
    match v1::FinishReason::try_from(r).ok()? {
        v1::FinishReason::Stop => Some(FinishReason::Stop),
        v1::FinishReason::Length => Some(FinishReason::Length),
        v1::FinishReason::Cancelled => Some(FinishReason::Cancelled),
        v1::FinishReason::Error => Some(FinishReason::Error),
        v1::FinishReason::Unspecified => None,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The wire usage; `source` says whether the engine's joules were measured or estimated.
pub fn usage(u: &Usage, source: v1::EnergySource) -> v1::Usage {
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    v1::Usage {
        prompt_tokens: n(u.prompt_tokens),
        cached_prompt_tokens: n(u.cached_prompt_tokens),
        completion_tokens: n(u.completion_tokens),
        time_to_first_token_ms: ms(u.time_to_first_token),
        time_per_output_token_ms: ms(u.time_per_output_token),
        joules: u.joules,
        energy_source: source as i32,
    }
}

pub fn finish(f: &Finish, source: v1::EnergySource) -> v1::Finish {
    v1::Finish {
        reason: finish_reason(f.reason) as i32,
        message: f.message.clone().unwrap_or_default(),
        usage: Some(usage(&f.usage, source)),
    }
}

/// A token's logprobs, with each token's text decoded alone by `text`.
pub fn logprob(l: &TokenLogprobs, text: &dyn Fn(u32) -> String) -> v1::TokenLogprob {
    v1::TokenLogprob {
        token_id: l.token,
        logprob: l.logprob,
        top: l
            .top
            .iter()
            .map(|&(token_id, logprob)| v1::TopLogprob {
                token_id,
                logprob,
                token: text(token_id),
            })
            .collect(),
        token: text(l.token),
    }
}

/// One stream event; the last one carries the usage with its joules and their `source`.
/// `text` decodes one token (for logprobs).
pub fn event(e: &Event, source: v1::EnergySource, text: &dyn Fn(u32) -> String) -> v1::TokenEvent {
    v1::TokenEvent {
        text: e.text.clone(),
        token_ids: e.token_ids.clone(),
        logprobs: e.logprobs.iter().map(|l| logprob(l, text)).collect(),
        finish: e.finish.as_ref().map(|f| finish(f, source)),
        produced_unix_micros: e
            .produced
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_micros() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn unset_sampling_fields_take_the_engine_defaults() {
        assert_eq!(sampling(None).unwrap(), SamplingParams::default());
        let p = v1::SamplingParams {
            temperature: Some(0.7),
            top_k: Some(40),
            max_tokens: Some(100),
            stop: vec!["\n\n".into()],
            logprobs: Some(3),
            seed: Some(9),
            ..Default::default()
        };
        let s = sampling(Some(&p)).unwrap();
        assert_eq!((s.temperature, s.top_k, s.max_tokens), (0.7, Some(40), 100));
        assert_eq!(
            (s.top_p, s.min_p, s.seed, s.logprobs),
            (1.0, 0.0, Some(9), Some(3))
        );
        assert_eq!(s.stop, vec!["\n\n".to_string()]);
    }

    #[test]
    fn bad_values_are_invalid_arguments_naming_the_field() {
        let cases: Vec<(v1::SamplingParams, &str)> = vec![
            (
                v1::SamplingParams {
                    temperature: Some(-1.0),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                v1::SamplingParams {
                    temperature: Some(f32::NAN),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                v1::SamplingParams {
                    top_p: Some(0.0),
                    ..Default::default()
                },
                "top_p",
            ),
            (
                v1::SamplingParams {
                    top_p: Some(1.5),
                    ..Default::default()
                },
                "top_p",
            ),
            (
                v1::SamplingParams {
                    top_k: Some(0),
                    ..Default::default()
                },
                "top_k",
            ),
            (
                v1::SamplingParams {
                    max_tokens: Some(0),
                    ..Default::default()
                },
                "max_tokens",
            ),
            (
                v1::SamplingParams {
                    logprobs: Some(21),
                    ..Default::default()
                },
                "logprobs",
            ),
        ];
        for (p, field) in cases {
            let e = sampling(Some(&p)).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{p:?}");
            assert!(e.message().contains(field), "{field}: {}", e.message());
        }
        for w in [0.0, -2.0, f64::INFINITY, f64::NAN] {
            let t = v1::Tenant {
                id: "a".into(),
                weight: Some(w),
            };
            let e = tenant(Some(&t)).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            assert!(e.message().contains("tenant.weight"));
        }
        let t = v1::Tenant {
            id: "a\u{7}".into(),
            weight: None,
        };
        assert_eq!(tenant(Some(&t)).unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(&*tenant(None).unwrap().0, "default");
        assert_eq!(
            tenant(Some(&v1::Tenant {
                id: "acme".into(),
                weight: Some(3.0)
            }))
            .unwrap(),
            (Arc::from("acme"), 3.0)
        );
    }

    #[test]
    fn a_request_without_a_prompt_is_refused() {
        let mut r = v1::GenerateRequest::default();
        assert_eq!(prompt(&r).unwrap_err().code(), Code::InvalidArgument);
        r.prompt = Some(v1::generate_request::Prompt::TokenIds(v1::TokenIds {
            ids: vec![],
        }));
        assert!(prompt(&r).unwrap_err().message().contains("prompt"));
        r.prompt = Some(v1::generate_request::Prompt::TokenIds(v1::TokenIds {
            ids: vec![1, 2],
        }));
        assert_eq!(prompt(&r).unwrap(), Prompt::Ids(vec![1, 2]));
        r.prompt = Some(v1::generate_request::Prompt::Text("hi".into()));
        assert_eq!(prompt(&r).unwrap(), Prompt::Text("hi".into()));
    }

    #[test]
    fn events_carry_text_tokens_logprobs_and_a_finish_with_joules() {
        let e = Event {
            text: "Paris".into(),
            token_ids: vec![7, 8],
            logprobs: vec![TokenLogprobs {
                token: 7,
                logprob: -0.5,
                top: vec![(7, -0.5), (9, -1.5)],
            }],
            finish: Some(Finish {
                reason: FinishReason::Length,
                message: None,
                usage: Usage {
                    prompt_tokens: 12,
                    cached_prompt_tokens: 4,
                    completion_tokens: 2,
                    time_to_first_token: Duration::from_millis(30),
                    time_per_output_token: Duration::from_micros(12_500),
                    preemptions: 0,
                    joules: 1.25,
                },
            }),
            produced: Some(std::time::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456)),
        };
        let text = |id: u32| format!("<{id}>");
        let t = event(&e, v1::EnergySource::Measured, &text);
        assert_eq!(t.produced_unix_micros, 1_700_000_000_123_456);
        let none = Event::default();
        assert_eq!(
            event(&none, v1::EnergySource::Measured, &text).produced_unix_micros,
            0
        );
        assert_eq!(
            (t.text.as_str(), t.token_ids.as_slice()),
            ("Paris", &[7u32, 8][..])
        );
        assert_eq!(
            t.logprobs[0].top[1],
            v1::TopLogprob {
                token_id: 9,
                logprob: -1.5,
                token: "<9>".into(),
            }
        );
        assert_eq!(t.logprobs[0].token, "<7>");
        let f = t.finish.unwrap();
        assert_eq!(engine_finish_reason(f.reason), Some(FinishReason::Length));
        let u = f.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens),
            (12, 4, 2)
        );
        assert_eq!(
            (u.time_to_first_token_ms, u.time_per_output_token_ms),
            (30.0, 12.5)
        );
        assert_eq!(
            (u.joules, u.energy_source),
            (1.25, v1::EnergySource::Measured as i32)
        );
        for r in [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::Cancelled,
            FinishReason::Error,
        ] {
            assert_eq!(engine_finish_reason(finish_reason(r) as i32), Some(r));
        }
        assert_eq!(engine_finish_reason(0), None);
        assert_eq!(engine_finish_reason(99), None);
    }

    #[test]
    fn engine_errors_map_to_the_status_a_client_can_act_on() {
        let e = EngineError::InvalidRequest("max_tokens must be at least 1".into());
        assert_eq!(status(&e).code(), Code::InvalidArgument);
        let missing = EngineError::Io {
            path: "/nope.gguf".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(status(&missing).code(), Code::NotFound);
        assert!(status(&missing).message().contains("/nope.gguf"));
        assert_eq!(
            status(&EngineError::Tokenizer("x".into())).code(),
            Code::Internal
        );
        let gpu = EngineError::Device("CUDA_ERROR_ILLEGAL_ADDRESS".into());
        assert_eq!(status(&gpu).code(), Code::Internal);
        let oom = EngineError::OutOfMemory("no room for a KV cache".into());
        assert_eq!(status(&oom).code(), Code::ResourceExhausted);
    }
}
