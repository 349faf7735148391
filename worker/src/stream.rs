//! One request's response stream, polled by the gRPC server straight from the engine's event
//! channel (no task or channel in between, so a token reaches the socket with one wake-up). It
//! converts events, records latency and usage metrics, cancels the engine request at the drain
//! deadline (waiting briefly for the engine to confirm, so the blocks are free before the
//! drain reports done), and, when the client goes away, is dropped, which cancels the request
//! at the engine's next step.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::convert;
use joule_engine::batch::{FinishReason, RequestStream};
use joule_proto::v1;
use prometheus_client::metrics::histogram::Histogram;
use tokio_stream::Stream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::Status;

use crate::registry::{Admission, Served};
use crate::state::{State, StreamGuard};

enum Phase {
    Streaming,
    /// Cut at the drain deadline: waiting for the engine's `Cancelled` (or the timeout).
    Cancelling(Pin<Box<tokio::time::Sleep>>),
    Done,
}

/// The events of one request, as the gRPC response.
pub struct TokenStream {
    inner: RequestStream,
    state: Arc<State>,
    served: Arc<Served>,
    source: v1::EnergySource,
    itl: Histogram,
    last: Option<Instant>,
    generated: usize,
    deadline: Pin<Box<WaitForCancellationFutureOwned>>,
    phase: Phase,
    /// The status label once the outcome is known.
    outcome: Option<&'static str>,
    _guard: StreamGuard,
    _admission: Admission,
}

impl TokenStream {
    pub fn new(
        inner: RequestStream,
        state: Arc<State>,
        served: Arc<Served>,
        guard: StreamGuard,
        admission: Admission,
    ) -> Self {
        Self {
            source: state.energy_source(),
            itl: state.metrics.inter_token(&served.name),
            deadline: Box::pin(state.cancel_all.clone().cancelled_owned()),
            inner,
            state,
            served,
            last: None,
            generated: 0,
            phase: Phase::Streaming,
            outcome: None,
            _guard: guard,
            _admission: admission,
        }
    }

    fn finish(&mut self, outcome: &'static str) {
        self.phase = Phase::Done;
        self.outcome = Some(outcome);
        self.state.metrics.request_done(&self.served.name, outcome);
    }

    fn event(&mut self, ev: joule_engine::batch::Event) -> v1::TokenEvent {
        if !ev.token_ids.is_empty() {
            let now = Instant::now();
            if let Some(t) = self.last {
                self.itl.observe((now - t).as_secs_f64());
            }
            self.last = Some(now);
            self.generated += ev.token_ids.len();
        }
        let tk = self.served.engine.tokenizer();
        let out = convert::event(&ev, self.source, &|id| {
            tk.decode(&[id], false).unwrap_or_default()
        });
        if let Some(f) = &ev.finish {
            let u = &f.usage;
            let ttft = (u.completion_tokens > 0).then_some(u.time_to_first_token.as_secs_f64());
            self.state.metrics.usage(
                &self.served.name,
                u.prompt_tokens as u32,
                u.completion_tokens as u32,
                u.joules,
                ttft,
            );
            self.finish(match f.reason {
                FinishReason::Cancelled => "cancelled",
                FinishReason::Error => "internal",
                FinishReason::Stop | FinishReason::Length => "ok",
            });
        }
        out
    }
}

impl Stream for TokenStream {
    type Item = Result<v1::TokenEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match &mut this.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::Streaming => {
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        this.inner.cancel();
                        this.state.note_cancelled();
                        this.phase =
                            Phase::Cancelling(Box::pin(tokio::time::sleep(Duration::from_secs(2))));
                        continue;
                    }
                    return match this.inner.poll_next(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Some(ev)) => Poll::Ready(Some(Ok(this.event(ev)))),
                        Poll::Ready(None) => {
                            this.finish("unavailable");
                            Poll::Ready(Some(Err(Status::unavailable(format!(
                                "model {:?} was unloaded or its engine stopped; retry on a \
                                 worker that serves it",
                                this.served.name
                            )))))
                        }
                    };
                }
                Phase::Cancelling(timeout) => {
                    let confirmed = loop {
                        match this.inner.poll_next(cx) {
                            Poll::Ready(Some(ev)) if ev.finish.is_none() => continue,
                            Poll::Ready(_) => break true,
                            Poll::Pending => break false,
                        }
                    };
                    if !confirmed && timeout.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let n = this.generated;
                    this.finish("unavailable");
                    return Poll::Ready(Some(Err(Status::unavailable(format!(
                        "the worker is shutting down and the drain deadline passed; the request \
                         was cancelled after {n} tokens; retry on another worker"
                    )))));
                }
            }
        }
    }
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        if self.outcome.is_none() {
            // The client went away: dropping `inner` cancels the request at the next step.
            tracing::debug!(model = %self.served.name, id = self.inner.id(), "client disconnected; request cancelled");
            self.state
                .metrics
                .request_done(&self.served.name, "cancelled");
        }
    }
}
