//! The public gRPC API, `joule.v1.Inference`: `Generate` and `Chat` streams through the relay,
//! `ListModels` from the routing view. Health is served per model (a model is SERVING while
//! one of its replicas is ready; "" while the gateway has a routing view), with reflection.

use std::pin::Pin;
use std::sync::Arc;

use joule_proto::v1;
use joule_proto::v1::inference_server::Inference;
use tokio_stream::Stream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::error::Error;
use crate::relay::{Job, Prompt, Relay, fnv};

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::TokenEvent, Status>> + Send>>;

pub struct InferenceService {
    pub relay: Arc<Relay>,
}

impl InferenceService {
    /// Who the call's `authorization` metadata stands for.
    fn caller<T>(&self, req: &Request<T>) -> Result<crate::tenancy::keys::Caller, Status> {
        let view = self.relay.view.get();
        let auth = req
            .metadata()
            .get("authorization")
            .map(|v| v.as_encoded_bytes());
        Ok(self.relay.tenancy.caller(&view, auth)?)
    }

    /// Admits and runs `job` for `caller`. With `--no-auth` the request's own tenant (if any)
    /// is kept for the worker's fair share; with keys it is always the key's tenant.
    async fn run(
        &self,
        caller: crate::tenancy::keys::Caller,
        mut job: Job,
    ) -> Result<Response<EventStream>, Status> {
        let reserve =
            u64::from(job.sampling.max_tokens.unwrap_or(16)) + u64::from(job.prompt_estimate);
        let (ticket, _headers) = self
            .relay
            .tenancy
            .admit(caller, &job.model, reserve)
            .await
            .map_err(|(e, _)| Status::from(e))?;
        if self.relay.tenancy.auth || job.tenant.is_none() {
            job.tenant = Some(ticket.tenant());
        }
        job.ticket = Some(ticket);
        let rx = self.relay.start(job).await?;
        let s = ReceiverStream::new(rx).map(|item| item.map_err(Status::from));
        Ok(Response::new(Box::pin(s)))
    }

    /// The sampling a gRPC client asked for; an unset budget gets the gateway's default.
    fn sampling(&self, s: Option<v1::SamplingParams>) -> v1::SamplingParams {
        let mut s = s.unwrap_or_default();
        if s.max_tokens.is_none() {
            s.max_tokens = Some(16);
        }
        s
    }
}

fn model(m: &str) -> Result<String, Status> {
    if m.is_empty() {
        return Err(Error::bad("model", "model is empty: name one of ListModels").into());
    }
    Ok(m.to_string())
}

#[tonic::async_trait]
impl Inference for InferenceService {
    type GenerateStream = EventStream;
    type ChatStream = EventStream;

    async fn generate(
        &self,
        req: Request<v1::GenerateRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        if r.resumed_tokens > 0 {
            return Err(Status::invalid_argument(
                "resumed_tokens is set by the gateway itself when it moves a stream; leave it 0",
            ));
        }
        let prompt = match r.prompt {
            Some(v1::generate_request::Prompt::Text(t)) if !t.is_empty() => Prompt::Text(t),
            Some(v1::generate_request::Prompt::TokenIds(ids)) if !ids.ids.is_empty() => {
                Prompt::Ids(ids.ids)
            }
            _ => {
                return Err(Status::invalid_argument(
                    "prompt is empty: set prompt.text or prompt.token_ids",
                ));
            }
        };
        let estimate = match &prompt {
            Prompt::Text(t) => t.len() as u32 / 4 + 1,
            Prompt::Ids(ids) => ids.len() as u32,
            Prompt::Chat(_) => 0,
        };
        let job = Job {
            model: model(&r.model)?,
            prompt,
            sampling: self.sampling(r.sampling),
            tenant: r.tenant,
            ticket: None,
            request_id: r.request_id,
            prefix: None,
            prompt_estimate: estimate,
        };
        self.run(caller, job).await
    }

    async fn chat(&self, req: Request<v1::ChatRequest>) -> Result<Response<EventStream>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        if r.messages.is_empty() {
            return Err(Status::invalid_argument(
                "messages is empty: send at least one message",
            ));
        }
        let prefix = r
            .messages
            .first()
            .filter(|m| m.role == "system")
            .map(|m| fnv(m.content.as_bytes()));
        let estimate = r
            .messages
            .iter()
            .map(|m| m.content.len() as u32 / 4 + 4)
            .sum();
        let job = Job {
            model: model(&r.model)?,
            prompt: Prompt::Chat(r.messages),
            sampling: self.sampling(r.sampling),
            tenant: r.tenant,
            ticket: None,
            request_id: r.request_id,
            prefix,
            prompt_estimate: estimate,
        };
        self.run(caller, job).await
    }

    async fn list_models(
        &self,
        req: Request<v1::ListServedModelsRequest>,
    ) -> Result<Response<v1::ListServedModelsResponse>, Status> {
        self.caller(&req)?;
        let view = self.relay.view.get();
        let models = view
            .deployments
            .values()
            .map(|d| v1::ServedModel {
                name: d.name.clone(),
                model: d.model.clone(),
                ready_replicas: d.replicas.iter().filter(|r| r.ready).count() as u32,
                created: d.created_ms / 1000,
            })
            .collect();
        Ok(Response::new(v1::ListServedModelsResponse { models }))
    }
}

/// Keeps the health service in step with the routing view.
pub async fn report_health(relay: Arc<Relay>, health: HealthReporter) {
    let mut changed = relay.view.subscribe();
    let mut known: std::collections::BTreeSet<String> = Default::default();
    loop {
        let view = relay.view.get();
        let status = |ok: bool| {
            if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        health.set_service_status("", status(view.synced)).await;
        health
            .set_service_status("joule.v1.Inference", status(view.synced))
            .await;
        for d in view.deployments.values() {
            health
                .set_service_status(&d.name, status(d.replicas.iter().any(|r| r.ready)))
                .await;
            known.insert(d.name.clone());
        }
        for gone in known.iter().filter(|n| !view.deployments.contains_key(*n)) {
            health
                .set_service_status(gone, ServingStatus::NotServing)
                .await;
        }
        known.retain(|n| view.deployments.contains_key(n));
        if changed.changed().await.is_err() {
            return;
        }
    }
}
