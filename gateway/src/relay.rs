//! One request's life behind the gateway: pick a replica ([`crate::route`]), open the stream,
//! retry on another replica until the first token arrives, then relay events to the client and,
//! when the worker dies, drains, stalls or answers garbage mid-stream, resume on another replica
//! from the prompt plus the tokens already relayed (`resumed_tokens`, the remaining budget, the
//! same seed) so the client sees one uninterrupted stream.
//!
//! It owns the attempt and migration budgets and the in-flight counts; it never parses HTTP or
//! builds a gRPC status (the frontends do, through [`crate::error`]). A client that goes away
//! drops its receiver: the relay notices at once and drops the upstream stream, which cancels
//! the sequence on the worker at its next step.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use joule_proto::internal::v1 as pb;
use joule_proto::v1;
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::config::Settings;
use crate::error::{Error, retryable};
use crate::metrics::Metrics;
use crate::route::{self, Ask, Candidate};
use crate::upstream::{InFlight, Upstreams};
use crate::view::{Replica, ViewHandle};

/// What a request asks to complete.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
    Chat(Vec<v1::ChatMessage>),
}

/// A request as the frontends hand it over.
#[derive(Debug, Clone)]
pub struct Job {
    /// The deployment's name.
    pub model: String,
    pub prompt: Prompt,
    /// `max_tokens` is always set (the frontends apply the default).
    pub sampling: v1::SamplingParams,
    pub tenant: Option<v1::Tenant>,
    /// The tenant's account of this request (settled and billed when the job is dropped).
    pub ticket: Option<Arc<crate::tenancy::Ticket>>,
    pub request_id: String,
    /// A hash of the prefix shared with other requests (the system prompt), for affinity.
    pub prefix: Option<u64>,
    /// Roughly how many tokens the prompt has (for the TTFT prediction).
    pub prompt_estimate: u32,
}

/// The events of a stream, in order; an `Err` is the last item.
pub type Events = mpsc::Receiver<Result<v1::TokenEvent, Error>>;

/// How long a client may leave an event unread before its stream is cancelled.
const SEND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Replicas remembered per prefix before the memory is cleared.
const AFFINITY_ENTRIES: usize = 8192;

pub struct Relay {
    pub view: ViewHandle,
    pub upstreams: Upstreams,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub tenancy: Arc<crate::tenancy::Tenancy>,
    tick: AtomicU64,
    affinity: Mutex<HashMap<u64, String>>,
}

/// An open stream on one replica.
struct Attempt {
    stream: Streaming<v1::TokenEvent>,
    node: String,
    _inflight: InFlight,
}

/// Why one replica did not take the request.
enum Fail {
    /// Another replica may take it.
    Retry(Error, &'static str),
    /// The request itself is wrong: tell the client.
    Final(Error),
}

/// A stream to resume: the tokens relayed so far and the prompt's ids once known.
struct Resume<'a> {
    generated: &'a [u32],
    prompt_ids: &'a mut Option<Vec<u32>>,
}

impl Relay {
    pub fn new(
        view: ViewHandle,
        settings: Settings,
        metrics: Arc<Metrics>,
        tenancy: Arc<crate::tenancy::Tenancy>,
    ) -> Self {
        Self {
            view,
            upstreams: Upstreams::new(settings.join_token.clone()),
            settings,
            metrics,
            tenancy,
            tick: AtomicU64::new(0),
            affinity: Mutex::new(HashMap::new()),
        }
    }

    /// Starts `job`: resolves once a replica has sent its first event (or with the error
    /// that ended every attempt). The rest of the stream follows on the receiver.
    pub async fn start(self: &Arc<Self>, mut job: Job) -> Result<Events, Error> {
        let t0 = Instant::now();
        // A sampled request without a seed gets one here, so that a moved stream continues
        // with the same draws (each request still gets its own).
        if job.sampling.seed.is_none() && job.sampling.temperature.unwrap_or(1.0) > 0.0 {
            job.sampling.seed = Some(fresh_seed());
        }
        let mut exclude = Vec::new();
        let (attempt, first) = match self.open(&job, &mut exclude, None).await {
            Ok(x) => x,
            Err(e) => {
                // A name nobody deployed is not a label (clients could make unbounded series).
                let model = match e {
                    Error::ModelNotFound(_) => "",
                    _ => job.model.as_str(),
                };
                self.metrics.done(model, e.label());
                return Err(e);
            }
        };
        self.metrics.ttft(&job.model, t0.elapsed().as_secs_f64());
        let (tx, rx) = mpsc::channel(32);
        tokio::spawn(self.clone().pump(job, attempt, first, tx, exclude));
        Ok(rx)
    }

    /// Finds a replica that takes the request (fresh, or resumed) and returns its first event.
    async fn open(
        &self,
        job: &Job,
        exclude: &mut Vec<String>,
        mut resume: Option<Resume<'_>>,
    ) -> Result<(Attempt, v1::TokenEvent), Error> {
        let mut last: Option<Error> = None;
        for _ in 0..self.settings.max_attempts {
            let view = self.view.get();
            if !view.synced {
                return Err(Error::Unavailable(
                    "the gateway has not heard from a scheduler yet; retry in a moment".into(),
                ));
            }
            let Some(dep) = view.deployments.get(&job.model) else {
                let known: Vec<&str> = view.deployments.keys().map(String::as_str).collect();
                return Err(Error::ModelNotFound(format!(
                    "the model {:?} does not exist; this cluster serves: {}",
                    job.model,
                    if known.is_empty() {
                        "(none yet)".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            let replicas: Vec<&Replica> = dep.routable().collect();
            if replicas.is_empty() {
                let states: Vec<String> = dep
                    .replicas
                    .iter()
                    .map(|r| format!("{} {}", r.node, r.state))
                    .collect();
                return Err(last.unwrap_or_else(|| {
                    Error::Unavailable(format!(
                        "no replica of {:?} is ready yet ({}); retry shortly",
                        job.model,
                        if states.is_empty() {
                            "none placed".to_string()
                        } else {
                            states.join(", ")
                        }
                    ))
                }));
            }
            let cands: Vec<Candidate> = replicas
                .iter()
                .map(|r| self.candidate(r, &job.model))
                .collect();
            let key = job.prefix.map(|p| p ^ fnv(job.model.as_bytes()));
            let affinity = key.and_then(|k| {
                self.affinity
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&k)
                    .cloned()
            });
            let ask = Ask {
                itl_ms: dep.itl_ms,
                ttft_ms: dep.ttft_ms,
                prompt_tokens: job.prompt_estimate,
                affinity,
                exclude: exclude.clone(),
                tick: self.tick.fetch_add(1, Ordering::Relaxed),
            };
            let policy = self.settings.policy;
            let d = route::route(&cands, &ask, policy);
            let (Some(i), Some(why)) = (d.chosen, d.why) else {
                break;
            };
            let r = replicas[i];
            tracing::debug!(model = %job.model, node = %r.node, why = why.as_str(), scores = %d, "routed");
            self.metrics
                .routed(&job.model, &r.node, policy.as_str(), why.as_str());
            match self.try_one(job, r, resume.as_mut()).await {
                Ok(x) => {
                    if let Some(k) = key {
                        let mut a = self.affinity.lock().unwrap_or_else(|e| e.into_inner());
                        if a.len() >= AFFINITY_ENTRIES {
                            a.clear();
                        }
                        a.insert(k, r.node.clone());
                    }
                    return Ok(x);
                }
                Err(Fail::Final(e)) => return Err(e),
                Err(Fail::Retry(e, reason)) => {
                    tracing::info!(model = %job.model, node = %r.node, reason, error = %e, "trying another replica");
                    self.metrics.retry(&job.model, reason);
                    exclude.push(r.node.clone());
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::Unavailable(format!(
                "no replica of {:?} is left to try (tried {})",
                job.model,
                exclude.join(", ")
            ))
        }))
    }

    fn candidate(&self, r: &Replica, model: &str) -> Candidate {
        Candidate {
            node: r.node.clone(),
            curve: r.curve.clone(),
            idle_watts: r.idle_watts,
            running: r.running.max(self.upstreams.inflight(&r.node, model)),
            waiting: r.waiting,
            fallback: !r.ready,
        }
    }

    /// Opens the stream on `r` and waits for its first event.
    async fn try_one(
        &self,
        job: &Job,
        r: &Replica,
        resume: Option<&mut Resume<'_>>,
    ) -> Result<(Attempt, v1::TokenEvent), Fail> {
        let mut client = self
            .upstreams
            .client(&r.address)
            .map_err(|e| Fail::Retry(e, "address"))?;
        let inflight = self.upstreams.start(&r.node, &job.model);
        let limit = self.settings.first_token_timeout;
        let opened = async {
            if let Some(t) = &job.ticket {
                t.dispatched(job.prompt_estimate);
            }
            let resp = match resume {
                None => match &job.prompt {
                    Prompt::Chat(messages) => {
                        client
                            .chat(v1::ChatRequest {
                                model: job.model.clone(),
                                messages: messages.clone(),
                                sampling: Some(job.sampling.clone()),
                                tenant: job.tenant.clone(),
                                request_id: job.request_id.clone(),
                            })
                            .await?
                    }
                    p => {
                        let prompt = match p {
                            Prompt::Ids(ids) => {
                                v1::generate_request::Prompt::TokenIds(v1::TokenIds {
                                    ids: ids.clone(),
                                })
                            }
                            Prompt::Text(t) => v1::generate_request::Prompt::Text(t.clone()),
                            Prompt::Chat(_) => unreachable!("matched above"),
                        };
                        client.generate(self.request(job, prompt, 0)).await?
                    }
                },
                Some(res) => {
                    let mut ids = match res.prompt_ids.as_ref() {
                        Some(ids) => ids.clone(),
                        None => {
                            let t = match &job.prompt {
                                Prompt::Ids(ids) => ids.clone(),
                                Prompt::Text(text) => {
                                    client
                                        .tokenize(pb::TokenizeRequest {
                                            model: job.model.clone(),
                                            text: text.clone(),
                                            add_special: true,
                                            messages: Vec::new(),
                                        })
                                        .await?
                                        .into_inner()
                                        .ids
                                }
                                Prompt::Chat(messages) => {
                                    client
                                        .tokenize(pb::TokenizeRequest {
                                            model: job.model.clone(),
                                            messages: messages.clone(),
                                            ..Default::default()
                                        })
                                        .await?
                                        .into_inner()
                                        .ids
                                }
                            };
                            *res.prompt_ids = Some(t.clone());
                            t
                        }
                    };
                    ids.extend_from_slice(res.generated);
                    let prompt = v1::generate_request::Prompt::TokenIds(v1::TokenIds { ids });
                    client
                        .generate(self.request(job, prompt, res.generated.len()))
                        .await?
                }
            };
            let mut stream = resp.into_inner();
            let first = stream.message().await?;
            Ok::<_, tonic::Status>((stream, first))
        };
        match tokio::time::timeout(limit, opened).await {
            Err(_) => Err(Fail::Retry(
                Error::Unavailable(format!(
                    "replica {} sent no token within {} ms",
                    r.node,
                    limit.as_millis()
                )),
                "stalled",
            )),
            Ok(Err(s)) if retryable(&s) => Err(Fail::Retry(
                Error::from_worker(&s),
                crate::error::code_label(s.code()),
            )),
            Ok(Err(s)) => Err(Fail::Final(Error::from_worker(&s))),
            Ok(Ok((_, None))) => Err(Fail::Retry(
                Error::Unavailable(format!("replica {} ended the stream at once", r.node)),
                "empty",
            )),
            Ok(Ok((_, Some(ev)))) if broken(&ev) => Err(Fail::Retry(
                Error::Unavailable(format!(
                    "replica {} could not run the request: {}",
                    r.node,
                    ev.finish.as_ref().map_or("", |f| f.message.as_str())
                )),
                "engine",
            )),
            Ok(Ok((stream, Some(ev)))) => Ok((
                Attempt {
                    stream,
                    node: r.node.clone(),
                    _inflight: inflight,
                },
                ev,
            )),
        }
    }

    fn request(
        &self,
        job: &Job,
        prompt: v1::generate_request::Prompt,
        resumed: usize,
    ) -> v1::GenerateRequest {
        let mut sampling = job.sampling.clone();
        if resumed > 0 {
            let max = sampling.max_tokens.unwrap_or(16) as usize;
            sampling.max_tokens = Some(max.saturating_sub(resumed).max(1) as u32);
        }
        v1::GenerateRequest {
            model: job.model.clone(),
            prompt: Some(prompt),
            sampling: Some(sampling),
            tenant: job.tenant.clone(),
            request_id: job.request_id.clone(),
            resumed_tokens: resumed as u32,
        }
    }

    /// Relays events until the stream finishes, moving it when its replica fails.
    async fn pump(
        self: Arc<Self>,
        job: Job,
        mut cur: Attempt,
        first: v1::TokenEvent,
        tx: mpsc::Sender<Result<v1::TokenEvent, Error>>,
        failed_before: Vec<String>,
    ) {
        let model = job.model.clone();
        let itl = self.metrics.itl(&model);
        let mut prompt_ids = match &job.prompt {
            Prompt::Ids(ids) => Some(ids.clone()),
            _ => None,
        };
        let mut generated: Vec<u32> = Vec::new();
        let mut before_attempt = 0usize;
        let mut migrations = 0u32;
        // Replicas that failed this request already are not tried again.
        let mut dead: Vec<String> = failed_before;
        let max_tokens = job.sampling.max_tokens.unwrap_or(16) as usize;
        let mut next = Some(first);
        let mut last_token: Option<Instant> = None;
        loop {
            let got = match next.take() {
                Some(ev) => Ok(ev),
                None => {
                    tokio::select! {
                        biased;
                        _ = tx.closed() => {
                            tracing::debug!(model = %model, node = %cur.node, "client went away; stream cancelled");
                            self.metrics.done(&model, "cancelled");
                            return;
                        }
                        r = tokio::time::timeout(self.settings.token_timeout, cur.stream.message()) => match r {
                            Err(_) => Err(format!(
                                "no token from {} for {} ms",
                                cur.node,
                                self.settings.token_timeout.as_millis()
                            )),
                            Ok(Err(s)) => Err(format!("{}: {}", cur.node, s.message())),
                            Ok(Ok(None)) => Err(format!("{} ended the stream before its finish", cur.node)),
                            Ok(Ok(Some(ev))) if broken(&ev) => Err(format!(
                                "{} stopped the request: {}",
                                cur.node,
                                ev.finish.as_ref().map_or("", |f| f.message.as_str())
                            )),
                            Ok(Ok(Some(ev))) => Ok(ev),
                        }
                    }
                }
            };
            match got {
                Ok(mut ev) => {
                    if !ev.token_ids.is_empty() {
                        let now = Instant::now();
                        if let Some(t) = last_token {
                            itl.observe((now - t).as_secs_f64());
                        }
                        last_token = Some(now);
                        generated.extend_from_slice(&ev.token_ids);
                        if let Some(t) = &job.ticket {
                            t.relayed(ev.token_ids.len());
                        }
                    }
                    let done = ev.finish.is_some();
                    if let Some(u) = ev.finish.as_mut().and_then(|f| f.usage.as_mut()) {
                        if migrations > 0 {
                            account_moved(u, before_attempt);
                        }
                        self.metrics.usage(&model, u.completion_tokens, u.joules);
                        if let Some(t) = &job.ticket {
                            t.finish(u);
                        }
                    }
                    // A client that stops reading for this long is gone.
                    let sent = tokio::time::timeout(SEND_DEADLINE, tx.send(Ok(ev))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        tracing::debug!(model = %model, "client gone or not reading; stream cancelled");
                        self.metrics.done(&model, "cancelled");
                        return;
                    }
                    if done {
                        self.metrics.done(&model, "ok");
                        return;
                    }
                }
                Err(why) => {
                    migrations += 1;
                    dead.push(cur.node.clone());
                    drop(cur);
                    if migrations > self.settings.max_migrations {
                        self.metrics.migration(&model, "gave_up");
                        self.metrics.done(&model, "unavailable");
                        let _ = tx
                            .send(Err(Error::Unavailable(format!(
                                "the stream broke after {} tokens ({why}) and had already \
                                 moved {} times; giving up",
                                generated.len(),
                                migrations - 1
                            ))))
                            .await;
                        return;
                    }
                    if generated.len() >= max_tokens {
                        // Every token was relayed; only the finish was lost.
                        let prompt = prompt_ids
                            .as_ref()
                            .map_or(job.prompt_estimate, |p| p.len() as u32);
                        let usage = v1::Usage {
                            prompt_tokens: prompt,
                            completion_tokens: generated.len() as u32,
                            energy_source: v1::EnergySource::Estimated as i32,
                            ..Default::default()
                        };
                        if let Some(t) = &job.ticket {
                            t.finish(&usage);
                        }
                        let ev = v1::TokenEvent {
                            finish: Some(v1::Finish {
                                reason: v1::FinishReason::Length as i32,
                                message: String::new(),
                                usage: Some(usage),
                            }),
                            ..Default::default()
                        };
                        let _ = tx.send(Ok(ev)).await;
                        self.metrics.done(&model, "ok");
                        return;
                    }
                    tracing::warn!(model = %model, tokens = generated.len(), reason = %why, "stream broke; moving it");
                    let moved = Instant::now();
                    let mut exclude = dead.clone();
                    let resume = Resume {
                        generated: &generated,
                        prompt_ids: &mut prompt_ids,
                    };
                    let opened = tokio::select! {
                        biased;
                        _ = tx.closed() => {
                            self.metrics.done(&model, "cancelled");
                            return;
                        }
                        r = self.open(&job, &mut exclude, Some(resume)) => r,
                    };
                    dead = exclude;
                    match opened {
                        Ok((a, ev)) => {
                            tracing::info!(model = %model, to = %a.node, tokens = generated.len(), ms = moved.elapsed().as_millis() as u64, "stream moved");
                            self.metrics.migration(&model, "moved");
                            before_attempt = generated.len();
                            cur = a;
                            next = Some(ev);
                        }
                        Err(e) => {
                            self.metrics.migration(&model, "no_replica");
                            self.metrics.done(&model, "unavailable");
                            let _ = tx
                                .send(Err(Error::Unavailable(format!(
                                    "the stream broke after {} tokens ({why}) and no other \
                                     replica could take it over: {}",
                                    generated.len(),
                                    e.message()
                                ))))
                                .await;
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// A finish that means the worker failed the request (not the request's own end).
fn broken(ev: &v1::TokenEvent) -> bool {
    ev.finish.as_ref().is_some_and(|f| {
        f.reason == v1::FinishReason::Error as i32 || f.reason == v1::FinishReason::Cancelled as i32
    })
}

/// The usage of a moved stream as the client's: the prompt as it sent it, every token relayed,
/// and the energy of the earlier attempts estimated at the last one's joules per token (their
/// workers never reported it), so it is labelled estimated.
fn account_moved(u: &mut v1::Usage, earlier: usize) {
    let earlier = earlier as u32;
    let last = u.completion_tokens;
    u.prompt_tokens = u.prompt_tokens.saturating_sub(earlier);
    u.cached_prompt_tokens = u.cached_prompt_tokens.min(u.prompt_tokens);
    u.completion_tokens = last + earlier;
    if last > 0 {
        u.joules *= f64::from(last + earlier) / f64::from(last);
    }
    u.energy_source = v1::EnergySource::Estimated as i32;
}

/// A seed that differs between requests and gateways.
fn fresh_seed() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    fnv(
        &(t ^ N.fetch_add(1, Ordering::Relaxed).rotate_left(32) ^ u64::from(std::process::id()))
            .to_le_bytes(),
    )
}

/// FNV-1a, for prefix keys.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_stream_is_billed_for_every_token_and_labelled_estimated() {
        let mut u = v1::Usage {
            prompt_tokens: 30,
            cached_prompt_tokens: 28,
            completion_tokens: 10,
            joules: 1.0,
            energy_source: v1::EnergySource::Measured as i32,
            ..Default::default()
        };
        account_moved(&mut u, 20);
        assert_eq!((u.prompt_tokens, u.completion_tokens), (10, 30));
        assert_eq!(u.cached_prompt_tokens, 10);
        assert!((u.joules - 3.0).abs() < 1e-9);
        assert_eq!(u.energy_source, v1::EnergySource::Estimated as i32);
    }
}
