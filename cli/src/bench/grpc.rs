//! Joule's gRPC target: the gateway's `joule.v1.Inference` or one worker's
//! `joule.internal.v1.Worker` (`--grpc-api worker`), through `joule-client` (address rules,
//! the bearer token as `authorization: Bearer KEY` metadata). A raw prompt is a `Generate`,
//! messages a `Chat`; each `TokenEvent` with a token is a chunk, and the finish's `Usage` gives
//! the output tokens and the joules with their source.
//!
//! It owns a small Tokio runtime of its own (the sending threads block on it), so it must be
//! made and dropped outside any other runtime. It never retries a request.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use joule_client::{Authed, Bearer, Connect};
use joule_proto::internal::v1 as pb;
use joule_proto::v1;
use joule_proto::v1::inference_client::InferenceClient;

use super::{
    Endpoint, Energy, ErrorKind, Failure, GrpcApi, Outcome, Prompt, Request, Sampling, Source,
    Target, TargetInfo, Timeline,
};

#[derive(Clone)]
enum Client {
    Inference(InferenceClient<Authed>),
    Worker(joule_client::Worker),
}

enum Call {
    Generate(v1::GenerateRequest),
    Chat(v1::ChatRequest),
}

/// A gateway's or a worker's gRPC API.
pub struct Grpc {
    rt: tokio::runtime::Runtime,
    /// Cloned for each request (a clone shares the channel); behind a lock only so that the
    /// target is `Sync` whatever the channel's own guarantees.
    client: std::sync::Mutex<Client>,
    api: GrpcApi,
    addr: String,
    model: String,
    sampling: Sampling,
    timeout: Duration,
}

impl Grpc {
    /// The API at `addr` with `token` (empty: none); asks for the first model when `model` is
    /// `None`.
    pub fn connect(
        addr: &str,
        api: GrpcApi,
        token: &str,
        model: Option<&str>,
        sampling: Sampling,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-grpc")
            .enable_all()
            .build()
            .context("cannot start the gRPC client's runtime")?;
        let connect = Connect::streaming();
        let client = {
            // Lazy channels spawn their connection task on this runtime.
            let _in = rt.enter();
            match api {
                GrpcApi::Inference => Client::Inference(InferenceClient::with_interceptor(
                    connect.lazy(addr).context("--grpc")?,
                    Bearer::new(token),
                )),
                GrpcApi::Worker => Client::Worker(connect.worker(addr, token).context("--grpc")?),
            }
        };
        let model = match model {
            Some(m) => m.to_string(),
            None => rt
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), first_model(client.clone())).await
                })
                .map_err(|_| anyhow!("--grpc {addr}: ListModels gave no answer in 10 s"))?
                .map_err(|e| {
                    anyhow!("--grpc {addr}: ListModels: {e} (pass --model to skip this)")
                })?,
        };
        Ok(Self {
            rt,
            client: std::sync::Mutex::new(client),
            api,
            addr: addr.to_string(),
            model,
            sampling,
            timeout,
        })
    }

    /// The request `r` as a call.
    fn call(&self, r: &Request) -> Call {
        let sampling = Some(v1::SamplingParams {
            temperature: Some(self.sampling.temperature),
            max_tokens: Some(r.max_tokens),
            ignore_eos: self.sampling.ignore_eos,
            ..Default::default()
        });
        let messages = match (&r.prompt, self.sampling.endpoint) {
            (Prompt::Text(t), Endpoint::Completions) => {
                return Call::Generate(v1::GenerateRequest {
                    model: self.model.clone(),
                    prompt: Some(v1::generate_request::Prompt::Text(t.clone())),
                    sampling,
                    ..Default::default()
                });
            }
            (Prompt::Text(t), Endpoint::Chat) => vec![v1::ChatMessage {
                role: "user".into(),
                content: t.clone(),
            }],
            (Prompt::Chat(ms), _) => ms
                .iter()
                .map(|m| v1::ChatMessage {
                    role: m.role.clone(),
                    content: m.content.clone(),
                })
                .collect(),
        };
        Call::Chat(v1::ChatRequest {
            model: self.model.clone(),
            messages,
            sampling,
            ..Default::default()
        })
    }
}

/// The first model the API lists.
async fn first_model(c: Client) -> anyhow::Result<String> {
    let names: Vec<String> = match c {
        Client::Inference(mut c) => c
            .list_models(v1::ListServedModelsRequest {})
            .await
            .map_err(crate::status)?
            .into_inner()
            .models
            .into_iter()
            .map(|m| m.name)
            .collect(),
        Client::Worker(mut c) => c
            .list_models(pb::ListModelsRequest {})
            .await
            .map_err(crate::status)?
            .into_inner()
            .models
            .into_iter()
            .map(|m| m.name)
            .collect(),
    };
    names
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("it serves no model"))
}

/// A status before the stream started.
fn status_failure(s: &tonic::Status) -> Failure {
    let code = s.code();
    let msg = s.message().to_string();
    if code == tonic::Code::Unavailable && msg.to_ascii_lowercase().contains("connect") {
        return Failure::new(ErrorKind::Connect, msg);
    }
    if code == tonic::Code::DeadlineExceeded {
        return Failure::new(ErrorKind::Timeout, msg);
    }
    Failure::new(ErrorKind::Grpc(format!("{code:?}")), msg)
}

fn source(s: i32) -> Source {
    match v1::EnergySource::try_from(s) {
        Ok(v1::EnergySource::Measured) => Source::Measured,
        Ok(v1::EnergySource::Estimated) => Source::Estimated,
        _ => Source::Unknown,
    }
}

/// Reads one stream to its finish.
async fn stream(client: Client, call: Call, sent: Instant) -> Outcome {
    let opened = match (client, call) {
        (Client::Inference(mut c), Call::Generate(g)) => c.generate(g).await,
        (Client::Inference(mut c), Call::Chat(ch)) => c.chat(ch).await,
        (Client::Worker(mut c), Call::Generate(g)) => c.generate(g).await,
        (Client::Worker(mut c), Call::Chat(ch)) => c.chat(ch).await,
    };
    let mut s = opened.map_err(|e| status_failure(&e))?.into_inner();
    let mut tl = Timeline::new(sent);
    loop {
        let ev = match s.message().await {
            Ok(Some(ev)) => ev,
            Ok(None) => {
                return Err(Failure::new(
                    ErrorKind::StreamBroken,
                    format!(
                        "the stream ended without a finish after {} tokens",
                        tl.chunks()
                    ),
                ));
            }
            Err(e) if tl.chunks() == 0 => return Err(status_failure(&e)),
            Err(e) => {
                return Err(Failure::new(
                    ErrorKind::StreamBroken,
                    format!(
                        "the stream broke off after {} tokens: {:?}: {}",
                        tl.chunks(),
                        e.code(),
                        e.message()
                    ),
                ));
            }
        };
        let now = Instant::now();
        if !ev.token_ids.is_empty() || !ev.text.is_empty() {
            tl.token(now);
        }
        let Some(f) = ev.finish else { continue };
        match v1::FinishReason::try_from(f.reason) {
            Ok(v1::FinishReason::Error) | Ok(v1::FinishReason::Cancelled) => {
                return Err(Failure::new(ErrorKind::StreamError, f.message));
            }
            _ => {}
        }
        tl.end(now);
        let (tokens, energy) = match f.usage {
            Some(u) => {
                let src = source(u.energy_source);
                let energy = (src != Source::Unknown || u.joules > 0.0).then_some(Energy {
                    joules: u.joules,
                    source: src,
                });
                (Some(u64::from(u.completion_tokens)), energy)
            }
            None => (None, None),
        };
        return Ok(tl.done(tokens, energy));
    }
}

impl Target for Grpc {
    fn info(&self) -> TargetInfo {
        TargetInfo {
            api: match self.api {
                GrpcApi::Inference => "grpc-inference",
                GrpcApi::Worker => "grpc-worker",
            },
            address: self.addr.clone(),
            model: self.model.clone(),
        }
    }

    fn send(&self, r: &Request) -> Outcome {
        let call = self.call(r);
        let client = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let timeout = self.timeout;
        let sent = Instant::now();
        self.rt.block_on(async move {
            match tokio::time::timeout(timeout, stream(client, call, sent)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::new(
                    ErrorKind::Timeout,
                    format!("no finish within --timeout {timeout:?}"),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_before_the_stream_are_counted_by_kind() {
        let refused = tonic::Status::unavailable("error trying to connect: tcp connect error");
        assert_eq!(status_failure(&refused).kind, ErrorKind::Connect);
        let busy = tonic::Status::resource_exhausted("no replica has room");
        let f = status_failure(&busy);
        assert_eq!(f.kind, ErrorKind::Grpc("ResourceExhausted".into()));
        assert_eq!(f.kind.to_string(), "grpc ResourceExhausted");
        assert_eq!(source(1), Source::Measured);
        assert_eq!(source(2), Source::Estimated);
        assert_eq!(source(0), Source::Unknown);
    }
}
