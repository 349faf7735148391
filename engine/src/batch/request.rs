//! What goes into the engine and what comes back out.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::UnboundedReceiver;

use super::engine::EngineHandle;
use crate::sample::{SamplingParams, TokenLogprobs};

/// One generation request. `prompt` is token ids (tokenize with the engine's tokenizer).
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// Who pays; under contention, tenants get admitted tokens in proportion to `weight`.
    pub tenant: Arc<str>,
    /// Positive, finite; 1 is an ordinary share.
    pub weight: f64,
}

impl Request {
    pub fn new(prompt: Vec<u32>, params: SamplingParams) -> Self {
        Self {
            prompt,
            params,
            tenant: Arc::from("default"),
            weight: 1.0,
        }
    }
    pub fn tenant(mut self, tenant: &str, weight: f64) -> Self {
        self.tenant = Arc::from(tenant);
        self.weight = weight;
        self
    }
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens` generated.
    Length,
    /// Cancelled by the caller, or the engine shut down.
    Cancelled,
    /// The engine could not run the request; `Finish::message` says why.
    Error,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Error => "error",
        }
    }
}

/// Token counts and latencies of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache instead of computed.
    pub cached_prompt_tokens: usize,
    pub completion_tokens: usize,
    /// From submission to the first generated token.
    pub time_to_first_token: Duration,
    /// Mean time between generated tokens after the first.
    pub time_per_output_token: Duration,
    /// Times the request was preempted (and recomputed) to make room for older ones.
    pub preemptions: u32,
    /// Energy of the steps this request ran in, split by tokens (0 when the engine has no
    /// meter; see [`super::EnergyMeter`]).
    pub joules: f64,
}

/// The end of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub reason: FinishReason,
    pub message: Option<String>,
    pub usage: Usage,
}

/// One step's output for one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    /// New text; never ends inside a UTF-8 character, may be empty.
    pub text: String,
    /// Tokens generated this step.
    pub token_ids: Vec<u32>,
    /// When asked for: one entry per token in `token_ids`.
    pub logprobs: Vec<TokenLogprobs>,
    /// On the last event only.
    pub finish: Option<Finish>,
    /// When the engine sampled this event's token (wall clock, so a consumer in another process
    /// on the same host can tell how long delivery took); `None` on events without one.
    pub produced: Option<SystemTime>,
}

/// A whole response, gathered from a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub logprobs: Vec<TokenLogprobs>,
    pub finish: Finish,
}

/// The events of one request. Dropping it cancels the request and frees its blocks.
#[derive(Debug)]
pub struct RequestStream {
    pub(super) id: u64,
    pub(super) rx: UnboundedReceiver<Event>,
    pub(super) engine: EngineHandle,
}

impl RequestStream {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next event, or `None` after the last one.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// [`Self::next`] as a poll, for hand-written streams.
    pub fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }

    /// [`Self::next`] for threads outside an async runtime.
    pub fn blocking_next(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }

    /// Asks the engine to stop this request; the stream then ends with `Cancelled`.
    pub fn cancel(&self) {
        self.engine.cancel(self.id);
    }

    /// Waits for the whole response (blocking).
    pub fn collect_blocking(mut self) -> Output {
        let mut out = Output {
            text: String::new(),
            token_ids: Vec::new(),
            logprobs: Vec::new(),
            finish: Finish {
                reason: FinishReason::Error,
                message: Some("the engine stopped before the request finished".into()),
                usage: Usage::default(),
            },
        };
        while let Some(ev) = self.blocking_next() {
            out.text.push_str(&ev.text);
            out.token_ids.extend(ev.token_ids);
            out.logprobs.extend(ev.logprobs);
            if let Some(f) = ev.finish {
                out.finish = f;
                break;
            }
        }
        out
    }
}
