//! `joulectl bench`, the load generator: the same seeded list of requests against one target
//! (an OpenAI-compatible HTTP server, or Joule's gRPC API) and optionally a second
//! OpenAI-compatible server to compare with, streamed so that each token's arrival is timed.
//!
//! Layout: this file holds the shared types (a [`Request`], what one request measured
//! ([`Done`]) or why it failed ([`Failure`]), the [`Target`] trait) and [`run`], which orders the
//! rounds and prints the report. [`workload`] makes the requests, [`load`] sends a range of them
//! (closed loop or Poisson arrivals), [`http`] and [`sse`] speak OpenAI's streaming API,
//! [`grpc`] Joule's, [`stats`] turns outcomes into percentiles and [`report`] prints them.
//!
//! It must never change what it sends between targets (same requests, same order, same seed),
//! never count a warmup request, and never print an API key.

pub mod grpc;
pub mod http;
pub mod load;
pub mod report;
pub mod sse;
pub mod stats;
pub mod workload;

use std::io::IsTerminal as _;
use std::ops::Range;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::render::Format;
use load::{Load, Segment};
use workload::Workload;

/// One chat message of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// What a request asks the model to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// A raw prompt (`/completions`, or `Generate`; a user message with `--endpoint chat`).
    Text(String),
    /// Chat messages (`/chat/completions`, or `Chat`).
    Chat(Vec<Message>),
}

/// One request of a workload: every target gets the very same list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub prompt: Prompt,
    pub max_tokens: u32,
}

/// Which endpoint a raw prompt goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Endpoint {
    /// `/completions` (gRPC: `Generate`): the prompt as it is.
    Completions,
    /// `/chat/completions` (gRPC: `Chat`): the prompt as one user message.
    Chat,
}

/// Which gRPC service `--grpc` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GrpcApi {
    /// `joule.v1.Inference`, the gateway's public API.
    Inference,
    /// `joule.internal.v1.Worker`, one worker directly (the token is the cluster's join token).
    Worker,
}

/// The sampling every request of a run shares.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    pub temperature: f32,
    pub ignore_eos: bool,
    pub endpoint: Endpoint,
}

/// Where the energy figure of a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Measured,
    Estimated,
    /// Joules without a source.
    Unknown,
}

/// A request's energy, as the server reported it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Energy {
    pub joules: f64,
    pub source: Source,
}

/// Where a request's output token count comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// The server's usage (`completion_tokens`).
    Usage,
    /// Streamed chunks with text, one token each (the server sent no usage).
    Chunks,
}

/// What one successful request measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    /// Send to the first chunk with output; `None` when there was no output at all.
    pub ttft: Option<Duration>,
    /// The gaps between successive chunks with output.
    pub itl: Vec<Duration>,
    /// Send to the end of the stream.
    pub e2e: Duration,
    pub output_tokens: u64,
    pub counted: Counted,
    pub energy: Option<Energy>,
}

/// Why a request failed, as counted in the report.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// An HTTP status other than 200.
    Http(u16),
    /// A gRPC status before the stream started (its code's name).
    Grpc(String),
    /// `--timeout` passed.
    Timeout,
    /// No connection (refused, reset before an answer, no such host).
    Connect,
    /// The stream broke off, or ended without its end.
    StreamBroken,
    /// The server sent an error in the middle of the stream.
    StreamError,
    /// An answer that is not what the protocol says.
    BadResponse,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(code) => write!(f, "http {code}"),
            Self::Grpc(code) => write!(f, "grpc {code}"),
            Self::Timeout => f.write_str("timeout"),
            Self::Connect => f.write_str("connect"),
            Self::StreamBroken => f.write_str("stream broken"),
            Self::StreamError => f.write_str("stream error"),
            Self::BadResponse => f.write_str("bad response"),
        }
    }
}

/// A failed request: its kind and the server's (or the transport's) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// What a request's outcome is.
pub type Outcome = Result<Done, Failure>;

/// Who was loaded, as the report names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetInfo {
    /// `openai-http`, `grpc-inference` or `grpc-worker`.
    pub api: &'static str,
    pub address: String,
    pub model: String,
}

/// A server that takes requests: one call per request, blocking, from many threads at once.
pub trait Target: Send + Sync {
    fn info(&self) -> TargetInfo;
    /// Sends `r` and reads its stream to the end; never panics on what the server sends.
    fn send(&self, r: &Request) -> Outcome;
}

/// Arrival times of a stream's output, into a [`Done`].
#[derive(Debug, Clone)]
pub struct Timeline {
    sent: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    itl: Vec<Duration>,
    chunks: u64,
    end: Option<Instant>,
}

impl Timeline {
    pub fn new(sent: Instant) -> Self {
        Self {
            sent,
            first: None,
            last: None,
            itl: Vec::new(),
            chunks: 0,
            end: None,
        }
    }

    /// A chunk with output arrived at `at`.
    pub fn token(&mut self, at: Instant) {
        match self.last {
            Some(last) => self.itl.push(at.saturating_duration_since(last)),
            None => self.first = Some(at),
        }
        self.last = Some(at);
        self.chunks += 1;
    }

    /// The stream's end arrived at `at` (the first end counts).
    pub fn end(&mut self, at: Instant) {
        if self.end.is_none() {
            self.end = Some(at);
        }
    }

    /// Chunks with output so far.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// The measurements; `usage_tokens` is the server's count, if it gave one.
    pub fn done(self, usage_tokens: Option<u64>, energy: Option<Energy>) -> Done {
        let end = self.end.or(self.last).unwrap_or_else(Instant::now);
        Done {
            ttft: self.first.map(|f| f.saturating_duration_since(self.sent)),
            itl: self.itl,
            e2e: end.saturating_duration_since(self.sent),
            output_tokens: usage_tokens.unwrap_or(self.chunks),
            counted: if usage_tokens.is_some() {
                Counted::Usage
            } else {
                Counted::Chunks
            },
            energy,
        }
    }
}

/// A server to load, before it is connected.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    Http {
        /// The flag that named it (`--url`, `--compare`), for errors.
        flag: &'static str,
        url: String,
        key: Option<String>,
        model: Option<String>,
        /// The flag that names its model (`--model`, `--compare-model`).
        model_flag: &'static str,
    },
    Grpc {
        addr: String,
        api: GrpcApi,
        key: Option<String>,
        model: Option<String>,
    },
}

impl TargetSpec {
    /// Connects (and asks for the first model when none was named).
    fn open(
        &self,
        s: Sampling,
        timeout: Duration,
        conns: usize,
    ) -> anyhow::Result<Box<dyn Target>> {
        let t: Box<dyn Target> = match self {
            Self::Http {
                flag,
                url,
                key,
                model,
                model_flag,
            } => Box::new(http::OpenAi::connect(
                http::Settings {
                    flag,
                    model_flag,
                    url: url.as_str(),
                    key: key.as_deref(),
                    model: model.as_deref(),
                    timeout,
                    conns,
                },
                s,
            )?),
            Self::Grpc {
                addr,
                api,
                key,
                model,
            } => Box::new(grpc::Grpc::connect(
                addr,
                *api,
                key.as_deref().unwrap_or(""),
                model.as_deref(),
                s,
                timeout,
            )?),
        };
        Ok(t)
    }
}

/// Everything a run needs, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: TargetSpec,
    pub compare: Option<TargetSpec>,
    pub workload: Workload,
    pub load: Load,
    /// Requests per target; `None`: as many as `duration` allows.
    pub requests: Option<u64>,
    pub duration: Option<Duration>,
    pub warmup: u64,
    pub timeout: Duration,
    pub sampling: Sampling,
}

/// Warmup requests take indices from here, so they are not the measured ones.
const WARMUP_BASE: u64 = 1 << 48;
/// With `--duration` alone, the second half's indices start here.
const OPEN_HALF: u64 = 1 << 40;

/// One round: which target (0: target, 1: compare) gets which indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub target: usize,
    pub indices: Range<u64>,
}

/// The rounds of a run. One target: all requests at once. Two: halves in the order A B B A, so
/// a machine that warms up or slows down over the run favours neither.
pub fn rounds(requests: Option<u64>, compare: bool) -> Vec<Round> {
    let all = 0..requests.unwrap_or(u64::MAX);
    if !compare {
        return vec![Round {
            target: 0,
            indices: all,
        }];
    }
    let half = requests.map_or(OPEN_HALF, |n| n / 2);
    let (h1, h2) = (0..half, half..all.end);
    [(0, &h1), (1, &h1), (1, &h2), (0, &h2)]
        .into_iter()
        .filter(|(_, r)| !r.is_empty())
        .map(|(target, r)| Round {
            target,
            indices: r.clone(),
        })
        .collect()
}

/// Runs the plan and prints the report; an error when every request of a target failed.
pub fn run(p: Plan, f: Format) -> anyhow::Result<()> {
    let conns = p.load.threads();
    let mut targets: Vec<Box<dyn Target>> = vec![p.target.open(p.sampling, p.timeout, conns)?];
    if let Some(c) = &p.compare {
        targets.push(c.open(p.sampling, p.timeout, conns)?);
    }
    let names = ["target", "compare"];
    let rounds = rounds(p.requests, targets.len() > 1);
    let show = f.is_table() && std::io::stderr().is_terminal();
    let bar = progress(show, p.requests.map(|n| n * targets.len() as u64));
    // With a duration, each round gets its share of it.
    let budget = p.duration.map(|d| d / (rounds.len() as u32).max(1));
    let mut segments: Vec<Vec<Segment>> = targets.iter().map(|_| Vec::new()).collect();
    let mut warmed = vec![false; targets.len()];
    for (i, r) in rounds.iter().enumerate() {
        let t: &dyn Target = &*targets[r.target];
        if p.warmup > 0 && !warmed[r.target] {
            bar.set_message(format!("{}: warmup", names[r.target]));
            let _unmeasured = load::segment(
                t,
                &p.workload,
                WARMUP_BASE..WARMUP_BASE + p.warmup,
                &p.load,
                None,
                None,
            );
            warmed[r.target] = true;
        }
        bar.set_message(format!(
            "{} (round {}/{})",
            names[r.target],
            i + 1,
            rounds.len()
        ));
        let seg = load::segment(
            t,
            &p.workload,
            r.indices.clone(),
            &p.load,
            budget,
            Some(&bar),
        );
        segments[r.target].push(seg);
    }
    bar.finish_and_clear();
    let mut summaries = targets
        .iter()
        .zip(&segments)
        .map(|(t, segs)| stats::Summary::of(t.info(), segs));
    let (Some(target), compare) = (summaries.next(), summaries.next()) else {
        anyhow::bail!("no target to report on");
    };
    let order = if compare.is_some() {
        "target, compare, compare, target (halves of the requests)"
    } else {
        "target"
    };
    let rep = report::Report::new(
        p.workload.describe(),
        p.load.describe(),
        p.warmup,
        order,
        target,
        compare,
    );
    report::print(&rep, f)?;
    for s in rep.all() {
        if s.requests.ok == 0 {
            let first = s
                .errors
                .first()
                .map(|e| format!(" (first error: {}: {})", e.kind, e.example))
                .unwrap_or_default();
            anyhow::bail!("every request to {} failed{first}", s.address);
        }
    }
    Ok(())
}

/// The progress bar on stderr (hidden unless `show`): requests done of `total`, or a spinner.
fn progress(show: bool, total: Option<u64>) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(n) => (
            ProgressBar::new(n),
            "{spinner} {msg} [{bar:30}] {pos}/{len} requests, {elapsed}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {msg} {pos} requests, {elapsed}",
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_targets_run_halves_in_the_order_a_b_b_a_and_each_gets_every_request() {
        let r = rounds(Some(9), true);
        let got: Vec<(usize, Range<u64>)> =
            r.iter().map(|x| (x.target, x.indices.clone())).collect();
        assert_eq!(got, vec![(0, 0..4), (1, 0..4), (1, 4..9), (0, 4..9)]);
        // One request: no empty round.
        let one = rounds(Some(1), true);
        assert_eq!(one.len(), 2);
        assert!(one.iter().all(|x| x.indices == (0..1)));
        assert_eq!(
            rounds(Some(5), false),
            vec![Round {
                target: 0,
                indices: 0..5
            }]
        );
        // A duration alone: unbounded halves that do not overlap.
        let open = rounds(None, true);
        assert_eq!(open[0].indices.start, 0);
        assert_eq!(open[2].indices.start, OPEN_HALF);
        const { assert!(WARMUP_BASE > OPEN_HALF) };
    }

    #[test]
    fn a_timeline_measures_ttft_itl_and_end_to_end() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Timeline::new(t0);
        t.token(t0 + ms(30));
        t.token(t0 + ms(40));
        t.token(t0 + ms(55));
        t.end(t0 + ms(60));
        t.end(t0 + ms(99));
        let d = t.done(Some(3), None);
        assert_eq!(d.ttft, Some(ms(30)));
        assert_eq!(d.itl, vec![ms(10), ms(15)]);
        assert_eq!(d.e2e, ms(60));
        assert_eq!((d.output_tokens, d.counted), (3, Counted::Usage));
        let mut t = Timeline::new(t0);
        t.token(t0 + ms(5));
        let d = t.done(None, None);
        assert_eq!((d.output_tokens, d.counted), (1, Counted::Chunks));
        assert_eq!(d.e2e, ms(5));
    }
}
