//! Bearer tokens: every call on every scheduler port carries one (the admin, join or peer
//! token), compared in constant time. A refusal is logged with the call and the peer, never
//! with any token's value.

use tonic::Request;

use crate::error::Error;

pub use joule_client::same_token as same;

/// Checks `authorization: Bearer <token>` against `token` (the `--KIND-token` flag).
pub fn check_bearer<T>(
    req: &Request<T>,
    token: &str,
    call: &'static str,
    kind: &'static str,
) -> Result<(), Error> {
    let given = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if !token.is_empty() && same(t.as_bytes(), token.as_bytes()) => Ok(()),
        _ => {
            tracing::warn!(call, peer = ?req.remote_addr(), presented = given.is_some(), "{kind} call refused: missing or wrong {kind} token");
            Err(Error::Unauthenticated(format!(
                "missing or wrong {kind} token: send `authorization: Bearer <token>` with the \
                 scheduler's --{kind}-token"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"", b"x"));
        assert!(same(b"", b""));
    }

    #[test]
    fn a_missing_wrong_or_empty_token_is_refused() {
        let mut r = Request::new(());
        assert!(check_bearer(&r, "t", "X", "admin").is_err());
        r.metadata_mut()
            .insert("authorization", "Bearer u".parse().unwrap());
        assert!(check_bearer(&r, "t", "X", "admin").is_err());
        r.metadata_mut()
            .insert("authorization", "Bearer t".parse().unwrap());
        assert!(check_bearer(&r, "t", "X", "admin").is_ok());
        let mut empty = Request::new(());
        empty
            .metadata_mut()
            .insert("authorization", "Bearer ".parse().unwrap());
        assert!(check_bearer(&empty, "", "X", "peer").is_err());
    }
}
