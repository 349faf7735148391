//! The OpenAI-compatible HTTP API (axum): `GET /v1/models`, `GET /v1/models/{model}`,
//! `POST /v1/completions`, `POST /v1/chat/completions` (whole or SSE), `GET /health`. Bodies are
//! read with a size limit and parsed here ([`params`]); the relay does the rest; every error is
//! OpenAI's error object with its status ([`crate::error`]), never a bare 500. Completions
//! and the model list need `Authorization: Bearer KEY` (unless `--no-auth`); `/health` does not.
//!
//! - [`types`]: the request bodies; [`params`]: checks and conversion to a job;
//!   [`response`]: whole responses and SSE chunks.

pub mod params;
pub mod response;
pub mod types;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::Error;
use crate::relay::Relay;
use response::{Chunker, Kind, Meta};

pub fn router(relay: Arc<Relay>) -> Router {
    let limit = relay.settings.max_body_bytes;
    // The key is checked before anything else, the body included.
    let keyed = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{*model}", get(model))
        .route_layer(axum::middleware::from_fn_with_state(
            relay.clone(),
            authenticate,
        ));
    Router::new()
        .merge(keyed)
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(relay)
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, _, _) = self.http();
        let mut r = (status, axum::Json(self.body())).into_response();
        let h = r.headers_mut();
        if let Some(ms) = self.retry_ms() {
            // Whole seconds, rounded up, as HTTP says; the exact figure beside it.
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(ms.div_ceil(1000).max(1)),
            );
            h.insert(
                HeaderName::from_static("retry-after-ms"),
                HeaderValue::from(ms),
            );
        } else if status == StatusCode::SERVICE_UNAVAILABLE
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// Adds the `x-ratelimit-*` headers.
fn with_headers(mut r: Response, headers: &crate::tenancy::limits::Headers) -> Response {
    for &(k, ref v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(HeaderName::from_static(k), v);
        }
    }
    r
}

fn body(b: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, Error> {
    b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge(format!(
                "the request body is larger than this gateway's limit of {limit} bytes"
            ))
        } else {
            Error::BadRequest {
                message: format!("cannot read the request body: {e}"),
                param: None,
            }
        }
    })
}

/// Middleware: who the request is for (`Authorization: Bearer KEY`), before its body is read;
/// the caller rides in the request's extensions.
async fn authenticate(
    State(relay): State<Arc<Relay>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let view = relay.view.get();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match relay.tenancy.caller(&view, auth) {
        Ok(c) => {
            drop(view);
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        Err(e) => reject(&relay, e),
    }
}

type Caller = axum::Extension<crate::tenancy::keys::Caller>;

async fn chat(
    State(relay): State<Arc<Relay>>,
    caller: Caller,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    admit_and_serve(relay, Kind::Chat, caller.0, b).await
}

async fn completions(
    State(relay): State<Arc<Relay>>,
    caller: Caller,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    admit_and_serve(relay, Kind::Completion, caller.0, b).await
}

/// The tenant's permissions and limits, once the body says which model and how many tokens.
async fn admit_and_serve(
    relay: Arc<Relay>,
    kind: Kind,
    caller: crate::tenancy::keys::Caller,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let limit = relay.settings.max_body_bytes;
    let default_max = relay.settings.default_max_tokens;
    let parsed = body(b, limit).and_then(|b| match kind {
        Kind::Chat => params::chat(&b, default_max),
        Kind::Completion => params::completion(&b, default_max),
    });
    let mut p = match parsed {
        Ok(p) => p,
        Err(e) => return reject(&relay, e),
    };
    let reserve =
        u64::from(p.job.sampling.max_tokens.unwrap_or(16)) + u64::from(p.job.prompt_estimate);
    let model = p.job.model.clone();
    match relay.tenancy.admit(caller, &model, reserve).await {
        Ok((ticket, headers)) => {
            p.job.tenant = Some(ticket.tenant());
            p.job.ticket = Some(ticket);
            with_headers(serve(relay, kind, p).await, &headers)
        }
        Err((e, headers)) => with_headers(reject(&relay, e), &headers),
    }
}

fn reject(relay: &Relay, e: Error) -> Response {
    relay.metrics.done("", e.label());
    e.into_response()
}

async fn serve(relay: Arc<Relay>, kind: Kind, p: params::Parsed) -> Response {
    let meta = Meta::new(kind, &p.job.model, p.logprobs);
    let mut rx = match relay.start(p.job).await {
        Ok(rx) => rx,
        Err(e) => return e.into_response(),
    };
    if p.stream {
        let mut chunker = Chunker::new(meta, p.include_usage);
        let sse = ReceiverStream::new(rx).map(move |item| {
            Ok::<_, Infallible>(match item {
                Ok(ev) => chunker.event(&ev),
                Err(e) => chunker.error(&e),
            })
        });
        return Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(sse))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let mut text = String::new();
    let mut lps = Vec::new();
    while let Some(item) = rx.recv().await {
        match item {
            Ok(ev) => {
                text.push_str(&ev.text);
                lps.extend(ev.logprobs);
                if let Some(f) = ev.finish {
                    return axum::Json(response::whole(&meta, &text, &lps, &f)).into_response();
                }
            }
            Err(e) => return e.into_response(),
        }
    }
    Error::Internal("the stream ended without a finish".into()).into_response()
}

fn model_object(d: &crate::view::Deployment) -> Value {
    json!({
        "id": d.name,
        "object": "model",
        "created": d.created_ms.max(0) / 1000,
        "owned_by": "joule",
        "joule": {"model": d.model, "ready_replicas": d.replicas.iter().filter(|r| r.ready).count()},
    })
}

async fn models(State(relay): State<Arc<Relay>>, caller: Caller) -> Response {
    let view = relay.view.get();
    // A tenant sees the models it may use.
    let data: Vec<Value> = view
        .deployments
        .values()
        .filter(|d| caller.tenant.may_use(&d.name))
        .map(model_object)
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn model(
    State(relay): State<Arc<Relay>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Response {
    let view = relay.view.get();
    match view
        .deployments
        .get(&name)
        .filter(|d| caller.tenant.may_use(&d.name))
    {
        Some(d) => axum::Json(model_object(d)).into_response(),
        None => Error::ModelNotFound(format!("the model {name:?} does not exist")).into_response(),
    }
}

async fn health(State(relay): State<Arc<Relay>>) -> Response {
    let view = relay.view.get();
    if !view.synced {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"status": "starting", "message": "no routing view from a scheduler yet"}),
            ),
        )
            .into_response();
    }
    let ready = view
        .deployments
        .values()
        .filter(|d| d.replicas.iter().any(|r| r.ready))
        .count();
    axum::Json(json!({"status": "ok", "deployments": view.deployments.len(), "ready": ready}))
        .into_response()
}

async fn not_found() -> Response {
    let e = json!({"error": {"message": "no such endpoint: see /v1/models, /v1/completions, /v1/chat/completions", "type": "invalid_request_error", "param": null, "code": "unknown_url"}});
    (StatusCode::NOT_FOUND, axum::Json(e)).into_response()
}

async fn method_not_allowed() -> Response {
    let e = json!({"error": {"message": "method not allowed on this endpoint", "type": "invalid_request_error", "param": null, "code": "method_not_allowed"}});
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(e)).into_response()
}
