//! The scheduler's one error type and its one mapping to a gRPC status. Every service returns
//! [`Error`]; nothing else in the crate builds a `tonic::Status` from a failure, so a client
//! always gets the same code for the same cause.

use tonic::Status;

use crate::store::StoreError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is malformed; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The request names something the cluster does not have; the message names what exists.
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the cluster's state refuses it (a model in use, a change
    /// the membership does not allow).
    #[error("{0}")]
    Precondition(String),
    /// No token, or the wrong one; the message names the flag, never a token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The store could not (knowingly) do it; `hint` says where the leader is.
    #[error("{err}; {hint}")]
    Store { err: StoreError, hint: String },
    /// This replica cannot serve the call now (no leader, a peer it cannot reach): retry, or
    /// another replica.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::Invalid(_) => Status::invalid_argument(msg),
            Error::NotFound(_) => Status::not_found(msg),
            Error::Precondition(_) => Status::failed_precondition(msg),
            Error::Unauthenticated(_) => Status::unauthenticated(msg),
            Error::Unavailable(_) => Status::unavailable(msg),
            Error::Internal(_) => Status::internal(msg),
            Error::Store { err, .. } => match err {
                StoreError::NoLeader { .. }
                | StoreError::Timeout { .. }
                | StoreError::LeaderChanged { .. }
                | StoreError::Stopped(_) => Status::unavailable(msg),
                // The state machine's refusal is the whole message: no leader hint needed.
                StoreError::Rejected(m) => rejected(m),
                StoreError::InvalidChange(_) => Status::failed_precondition(msg),
            },
        }
    }
}

/// A command the state machine refused, by the kind of refusal its message states.
fn rejected(m: String) -> Status {
    if m.starts_with("no ") && m.contains(" named ") {
        Status::not_found(m)
    } else {
        Status::failed_precondition(m)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_cause_has_one_status() {
        let s: Status = Error::Invalid("key: must be 1 to 256 bytes".into()).into();
        assert_eq!(s.code(), Code::InvalidArgument);
        let s: Status = Error::Store {
            err: StoreError::NoLeader { replica: 2 },
            hint: "no leader is known".into(),
        }
        .into();
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().ends_with("no leader is known"));
        let s: Status = Error::Store {
            err: StoreError::Rejected("no model named \"x\"".into()),
            hint: "ignored".into(),
        }
        .into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "no model named \"x\"")
        );
        let s: Status = Error::Store {
            err: StoreError::Rejected("model \"m\" is used by deployment(s) d".into()),
            hint: String::new(),
        }
        .into();
        assert_eq!(s.code(), Code::FailedPrecondition);
    }
}
