//! The gateway's one error type, and the one place it becomes an HTTP status with OpenAI's
//! error object (`{"error": {"message", "type", "param", "code"}}`) or a gRPC status.

use axum::http::StatusCode;
use tonic::{Code, Status};

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A parameter the client must fix; `param` names it as the client wrote it.
    BadRequest {
        message: String,
        param: Option<String>,
    },
    /// No deployment of that name.
    ModelNotFound(String),
    /// The prompt does not fit the model's context.
    ContextExceeded(String),
    /// The body is over `--max-body-bytes`.
    PayloadTooLarge(String),
    /// Every replica's queue is full.
    NoCapacity(String),
    /// No replica is ready, or none could be reached.
    Unavailable(String),
    Internal(String),
    /// No API key, or one the cluster does not know (never echoed).
    Unauthenticated(String),
    /// The key's tenant may not use the deployment asked for.
    PermissionDenied(String),
    /// Over a per-minute or concurrency limit; `retry_ms` is when the budget frees up.
    RateLimited {
        message: String,
        /// "requests" or "tokens", as OpenAI's error type says.
        kind: &'static str,
        retry_ms: u64,
    },
    /// Over the monthly token or energy quota.
    QuotaExceeded {
        message: String,
        retry_ms: u64,
    },
}

/// The error's text (the same as `message()`).
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        Error::BadRequest {
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Error::BadRequest { message, .. } => message,
            Error::ModelNotFound(m)
            | Error::ContextExceeded(m)
            | Error::PayloadTooLarge(m)
            | Error::NoCapacity(m)
            | Error::Unavailable(m)
            | Error::Internal(m)
            | Error::Unauthenticated(m)
            | Error::PermissionDenied(m) => m,
            Error::RateLimited { message, .. } | Error::QuotaExceeded { message, .. } => message,
        }
    }

    /// When the client may usefully retry, ms (limits only).
    pub fn retry_ms(&self) -> Option<u64> {
        match self {
            Error::RateLimited { retry_ms, .. } | Error::QuotaExceeded { retry_ms, .. } => {
                Some(*retry_ms)
            }
            _ => None,
        }
    }

    /// HTTP status, OpenAI error type and code.
    pub fn http(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        match self {
            Error::BadRequest { .. } => (StatusCode::BAD_REQUEST, "invalid_request_error", None),
            Error::ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            Error::ContextExceeded(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                Some("context_length_exceeded"),
            ),
            Error::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                Some("request_too_large"),
            ),
            Error::NoCapacity(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("no_capacity"),
            ),
            Error::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("no_replica_ready"),
            ),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
            Error::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            Error::PermissionDenied(_) => (
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                Some("model_not_allowed"),
            ),
            Error::RateLimited { kind, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                kind,
                Some("rate_limit_exceeded"),
            ),
            Error::QuotaExceeded { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                Some("insufficient_quota"),
            ),
        }
    }

    /// The OpenAI error object.
    pub fn body(&self) -> serde_json::Value {
        let (_, kind, code) = self.http();
        let param = match self {
            Error::BadRequest { param, .. } => param.clone(),
            Error::ModelNotFound(_) | Error::PermissionDenied(_) => Some("model".into()),
            _ => None,
        };
        serde_json::json!({
            "error": {"message": self.message(), "type": kind, "param": param, "code": code}
        })
    }

    /// A label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::BadRequest { .. } => "invalid_request",
            Error::ModelNotFound(_) => "model_not_found",
            Error::ContextExceeded(_) => "context_exceeded",
            Error::PayloadTooLarge(_) => "too_large",
            Error::NoCapacity(_) => "no_capacity",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::PermissionDenied(_) => "permission_denied",
            Error::RateLimited { .. } => "rate_limited",
            Error::QuotaExceeded { .. } => "quota_exceeded",
        }
    }

    /// What a worker's refusal means for the client (once no other replica is left to try).
    pub fn from_worker(s: &Status) -> Self {
        let m = s.message().to_string();
        match s.code() {
            Code::InvalidArgument => Error::BadRequest {
                message: m,
                param: None,
            },
            Code::OutOfRange => Error::ContextExceeded(m),
            Code::ResourceExhausted => Error::NoCapacity(m),
            Code::Unavailable | Code::NotFound | Code::DeadlineExceeded | Code::Cancelled => {
                Error::Unavailable(m)
            }
            _ => Error::Internal(m),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let m = e.message().to_string();
        match e {
            Error::BadRequest { .. } => Status::invalid_argument(m),
            Error::ModelNotFound(_) => Status::not_found(m),
            Error::ContextExceeded(_) => Status::out_of_range(m),
            Error::PayloadTooLarge(_) => Status::resource_exhausted(m),
            Error::NoCapacity(_) => Status::resource_exhausted(m),
            Error::Unavailable(_) => Status::unavailable(m),
            Error::Internal(_) => Status::internal(m),
            Error::Unauthenticated(_) => Status::unauthenticated(m),
            Error::PermissionDenied(_) => Status::permission_denied(m),
            Error::RateLimited { .. } | Error::QuotaExceeded { .. } => {
                Status::resource_exhausted(m)
            }
        }
    }
}

/// Whether a worker's error before the first token proves the request did nothing there, so
/// another replica may take it: it could not be reached, was full, draining, or no longer
/// serves the model (a view a moment stale). Errors about the request itself are final.
pub fn retryable(s: &Status) -> bool {
    !matches!(
        s.code(),
        Code::InvalidArgument
            | Code::OutOfRange
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::FailedPrecondition
    )
}

/// A gRPC code as a metric label.
pub fn code_label(c: Code) -> &'static str {
    match c {
        Code::Unavailable => "unavailable",
        Code::ResourceExhausted => "resource_exhausted",
        Code::NotFound => "not_found",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::Cancelled => "cancelled",
        Code::Internal => "internal",
        Code::Unknown => "unknown",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_status_and_object() {
        let cases = [
            (
                Error::bad("temperature", "too hot"),
                400,
                Some("temperature"),
            ),
            (Error::ModelNotFound("no".into()), 404, Some("model")),
            (Error::ContextExceeded("long".into()), 413, None),
            (Error::PayloadTooLarge("big".into()), 413, None),
            (Error::NoCapacity("full".into()), 429, None),
            (Error::Unavailable("none".into()), 503, None),
            (Error::Internal("oops".into()), 500, None),
            (Error::Unauthenticated("who".into()), 401, None),
            (
                Error::PermissionDenied("not yours".into()),
                403,
                Some("model"),
            ),
            (
                Error::RateLimited {
                    message: "slow".into(),
                    kind: "requests",
                    retry_ms: 1,
                },
                429,
                None,
            ),
            (
                Error::QuotaExceeded {
                    message: "spent".into(),
                    retry_ms: 1,
                },
                429,
                None,
            ),
        ];
        for (e, status, param) in cases {
            assert_eq!(e.http().0.as_u16(), status, "{e:?}");
            let b = e.body();
            assert_eq!(b["error"]["message"], e.message());
            assert_eq!(b["error"]["param"].as_str(), param);
            assert!(b["error"]["type"].is_string());
        }
        assert_eq!(
            Status::from(Error::ContextExceeded("x".into())).code(),
            Code::OutOfRange
        );
    }

    #[test]
    fn only_errors_that_prove_nothing_ran_are_retried() {
        assert!(retryable(&Status::unavailable("draining")));
        assert!(retryable(&Status::resource_exhausted("queue full")));
        assert!(retryable(&Status::not_found("not loaded here")));
        assert!(!retryable(&Status::invalid_argument("bad")));
        assert!(!retryable(&Status::out_of_range("long")));
        assert_eq!(
            Error::from_worker(&Status::out_of_range("long")).http().0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
