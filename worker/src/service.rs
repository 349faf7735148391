//! `joule.internal.v1.Worker` over the shared [`State`]: requests are checked and converted by
//! `crate::convert`, admitted against the model's queue limit, and streamed from the
//! engine by a [`TokenStream`] each.

use std::pin::Pin;
use std::sync::Arc;

use crate::convert::{self, Prompt};
use joule_engine::batch::Request as EngineRequest;
use joule_engine::sample::SamplingParams;
use joule_engine::tokenizer::Message;
use joule_proto::internal::v1 as pb;
use joule_proto::internal::v1::worker_server::Worker;
use joule_proto::v1;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use crate::registry::Served;
use crate::state::State;
use crate::stream::TokenStream;

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::TokenEvent, Status>> + Send>>;
type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogLine, Status>> + Send>>;

/// How often a followed log is checked for new lines.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct WorkerService {
    pub state: Arc<State>,
}

impl WorkerService {
    /// `name`, or the only model when `name` is empty.
    fn model(&self, name: &str) -> Result<Arc<Served>, Status> {
        if name.is_empty() {
            let ready = self.state.models.ready();
            return match ready.as_slice() {
                [one] => Ok(one.clone()),
                _ => Err(Status::invalid_argument(format!(
                    "model is empty; name one of: {}",
                    names(&ready)
                ))),
            };
        }
        self.state.models.get(name)
    }

    fn start(
        &self,
        served: Arc<Served>,
        prompt: Vec<u32>,
        resumed: usize,
        params: SamplingParams,
        tenant: (Arc<str>, f64),
        request_id: String,
    ) -> Result<Response<EventStream>, Status> {
        let guard = self.state.open_stream()?;
        let admission = served.admit()?;
        let req = EngineRequest::new(prompt, params)
            .tenant(&tenant.0, tenant.1)
            .resumed(resumed);
        let stream = served.engine.submit(req).map_err(|e| {
            let s = convert::status(&e);
            self.state
                .metrics
                .request_done(&served.name, code_name(s.code()));
            s
        })?;
        tracing::debug!(model = %served.name, request_id = %request_id, id = stream.id(), "stream started");
        Ok(Response::new(Box::pin(TokenStream::new(
            stream,
            self.state.clone(),
            served,
            guard,
            admission,
        ))))
    }
}

fn names(models: &[Arc<Served>]) -> String {
    if models.is_empty() {
        return "(none loaded)".into();
    }
    models
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lower-case name of a gRPC code, for metric labels.
pub fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

#[tonic::async_trait]
impl Worker for WorkerService {
    type GenerateStream = EventStream;
    type ChatStream = EventStream;
    type LogsStream = LogStream;

    async fn logs(&self, req: Request<pb::LogsRequest>) -> Result<Response<LogStream>, Status> {
        let r = req.into_inner();
        let ring = joule_proto::logging::recent().ok_or_else(|| {
            Status::failed_precondition(
                "this worker keeps no log lines (it runs inside another program, not as the \
                 joule-worker daemon)",
            )
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        // Nothing here logs: a followed stream would otherwise feed on itself.
        tokio::spawn(async move {
            let first = ring.tail(r.tail.map(|n| n as usize));
            let mut next = first.next;
            for text in first.lines {
                if tx.send(Ok(pb::LogLine { text })).await.is_err() {
                    return;
                }
            }
            if !r.follow {
                return;
            }
            let mut tick = tokio::time::interval(FOLLOW_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tick.tick() => {}
                }
                let more = ring.since(next);
                next = more.next;
                let gap = (more.missed > 0)
                    .then(|| format!("... {} lines dropped: this reader fell behind", more.missed));
                for text in gap.into_iter().chain(more.lines) {
                    if tx.send(Ok(pb::LogLine { text })).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn generate(
        &self,
        req: Request<v1::GenerateRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = req.into_inner();
        let served = self.model(&r.model)?;
        let params = convert::sampling(r.sampling.as_ref())?;
        let tenant = convert::tenant(r.tenant.as_ref())?;
        let prompt = convert::prompt(&r)?;
        let resumed = convert::resumed(&r, &prompt)?;
        let prompt = match prompt {
            Prompt::Ids(ids) => ids,
            Prompt::Text(t) => served
                .engine
                .tokenizer()
                .encode(&t)
                .map_err(|e| convert::status(&e))?,
        };
        self.start(served, prompt, resumed, params, tenant, r.request_id)
    }

    async fn chat(&self, req: Request<v1::ChatRequest>) -> Result<Response<EventStream>, Status> {
        let r = req.into_inner();
        let served = self.model(&r.model)?;
        let params = convert::sampling(r.sampling.as_ref())?;
        let tenant = convert::tenant(r.tenant.as_ref())?;
        let ids = chat_prompt(&served, &r.messages)?;
        self.start(served, ids, 0, params, tenant, r.request_id)
    }

    async fn tokenize(
        &self,
        req: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        let r = req.into_inner();
        let served = self.model(&r.model)?;
        if !r.messages.is_empty() {
            let ids = chat_prompt(&served, &r.messages)?;
            return Ok(Response::new(pb::TokenizeResponse { ids }));
        }
        let tk = served.engine.tokenizer();
        let mut ids = tk.encode(&r.text).map_err(|e| convert::status(&e))?;
        if !r.add_special && tk.add_bos && !ids.is_empty() && Some(ids[0]) == tk.bos {
            ids.remove(0);
        }
        Ok(Response::new(pb::TokenizeResponse { ids }))
    }

    async fn load_model(
        &self,
        req: Request<pb::LoadModelRequest>,
    ) -> Result<Response<pb::LoadModelResponse>, Status> {
        let r = req.into_inner();
        if self.state.draining() {
            return Err(Status::unavailable(
                "this worker is draining; it loads no models",
            ));
        }
        if r.path.is_empty() {
            return Err(Status::invalid_argument(
                "path is empty: give the model file's path on the worker",
            ));
        }
        let state = self.state.clone();
        let served = tokio::task::spawn_blocking(move || {
            crate::server::load(
                &state,
                Some(&r.name),
                std::path::Path::new(&r.path),
                Some(&r.sha256),
            )
        })
        .await
        .map_err(|e| Status::internal(format!("the load task failed: {e}")))??;
        self.state
            .health
            .set_service_status(&served.name, ServingStatus::Serving)
            .await;
        Ok(Response::new(pb::LoadModelResponse {
            model: Some(info(&served)),
        }))
    }

    async fn unload_model(
        &self,
        req: Request<pb::UnloadModelRequest>,
    ) -> Result<Response<pb::UnloadModelResponse>, Status> {
        let name = req.into_inner().name;
        self.state.models.unload(&name)?;
        self.state
            .health
            .set_service_status(&name, ServingStatus::NotServing)
            .await;
        Ok(Response::new(pb::UnloadModelResponse {}))
    }

    async fn list_models(
        &self,
        _req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let models = self.state.models.ready().iter().map(|m| info(m)).collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let want = req.into_inner().model;
        let models = if want.is_empty() {
            self.state.models.ready()
        } else {
            vec![self.state.models.get(&want)?]
        };
        let source = self.state.energy_source() as i32;
        let stats = models
            .iter()
            .map(|m| {
                let s = m.engine.stats();
                let u32c = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
                pb::ModelStats {
                    model: m.name.clone(),
                    running: u32c(s.running),
                    waiting: u32c(s.waiting),
                    preempted: s.preemptions_total,
                    kv_blocks_used: u32c(s.kv.used),
                    kv_blocks_free: u32c(s.kv.free),
                    kv_blocks_cached: u32c(s.kv.cached),
                    prefix_hit_rate: s.prefix_hit_rate,
                    output_tokens_per_s: s.tokens_per_s,
                    kv_waste: s.kv_waste,
                    joules: s.joules_total,
                    output_tokens: s.generated_tokens_total,
                    energy_source: source,
                    calibration: m
                        .calibration
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_ref()
                        .map(crate::server::calibration_message),
                }
            })
            .collect();
        let p = &self.state.power;
        Ok(Response::new(pb::StatsResponse {
            models: stats,
            power: Some(pb::PowerReading {
                watts: p.watts(),
                joules: p.total_joules(),
                source,
                sensors: p.sensors(),
            }),
            draining: self.state.draining(),
        }))
    }

    async fn health(
        &self,
        req: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let model = req.into_inner().model;
        let (serving, message) = if self.state.draining() {
            (false, "draining".to_string())
        } else if model.is_empty() {
            (true, String::new())
        } else {
            match self.state.models.get(&model) {
                Ok(_) => (true, String::new()),
                Err(e) => (false, e.message().to_string()),
            }
        };
        Ok(Response::new(pb::HealthResponse { serving, message }))
    }

    async fn drain(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        let ms = req.into_inner().deadline_ms;
        let deadline = if ms == 0 {
            self.state.drain_timeout
        } else {
            std::time::Duration::from_millis(ms.into())
        };
        let (finished, cancelled) = self.state.drain(deadline).await;
        Ok(Response::new(pb::DrainResponse {
            finished,
            cancelled,
        }))
    }
}

/// The token ids of a chat: checked, rendered with the model's chat template and tokenized (as
/// `Chat` and `Tokenize` with messages both do).
fn chat_prompt(served: &Served, messages: &[v1::ChatMessage]) -> Result<Vec<u32>, Status> {
    if messages.is_empty() {
        return Err(Status::invalid_argument(
            "messages is empty: send at least one message",
        ));
    }
    if let Some((i, _)) = messages
        .iter()
        .enumerate()
        .find(|(_, m)| m.role.trim().is_empty())
    {
        return Err(Status::invalid_argument(format!(
            "messages[{i}].role is empty"
        )));
    }
    let msgs: Vec<Message> = messages
        .iter()
        .map(|m| Message::new(&m.role, &m.content))
        .collect();
    let tk = served.engine.tokenizer();
    let text = tk
        .apply_chat_template(&msgs, true)
        .map_err(|e| convert::status(&e))?;
    let mut ids = tk.encode(&text).map_err(|e| convert::status(&e))?;
    // Templates that write the BOS themselves would otherwise get it twice.
    if tk.add_bos && ids.len() >= 2 && ids[0] == ids[1] && Some(ids[0]) == tk.bos {
        ids.remove(0);
    }
    Ok(ids)
}

/// The wire description of a served model.
pub fn info(m: &Served) -> pb::ModelInfo {
    let c = &m.engine.config();
    pb::ModelInfo {
        name: m.name.clone(),
        path: m.path.display().to_string(),
        sha256: m.sha256.clone(),
        architecture: format!("{:?}", c.arch).to_lowercase(),
        parameters: m.parameters,
        context_length: u32::try_from(c.context_len).unwrap_or(u32::MAX),
        memory_bytes: m.memory_bytes,
        kv_blocks: u32::try_from(m.engine.kv_blocks()).unwrap_or(u32::MAX),
        kv_block_size: u32::try_from(m.engine.stats().block_size).unwrap_or(u32::MAX),
    }
}
