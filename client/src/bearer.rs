//! The bearer-token interceptor: adds `authorization: Bearer TOKEN` to every call. The token
//! is held as a sensitive header value, so it never shows in a `Debug` print or a log.

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;

/// Sends a bearer token (none when built from an empty one).
#[derive(Clone, Default)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(<redacted>)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Bearer {
    /// A token that is not valid in a header (a newline, non-ASCII) sends nothing, and the
    /// server answers UNAUTHENTICATED, which names the flag to fix.
    pub fn new(token: &str) -> Self {
        if token.is_empty() {
            return Self(None);
        }
        let v: Option<AsciiMetadataValue> = MetadataValue::try_from(format!("Bearer {token}"))
            .ok()
            .map(|mut v: AsciiMetadataValue| {
                v.set_sensitive(true);
                v
            });
        Self(v)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_in_the_header_and_never_in_debug_output() {
        let mut b = Bearer::new("s3cret");
        let r = b.call(tonic::Request::new(())).unwrap();
        assert_eq!(r.metadata().get("authorization").unwrap(), "Bearer s3cret");
        assert!(!format!("{b:?}").contains("s3cret"));
        let mut none = Bearer::new("");
        let r = none.call(tonic::Request::new(())).unwrap();
        assert!(r.metadata().get("authorization").is_none());
        let mut bad = Bearer::new("a\nb");
        assert!(
            bad.call(tonic::Request::new(()))
                .unwrap()
                .metadata()
                .is_empty()
        );
    }
}

/// Compares without stopping at the first difference, so timing does not reveal a token.
pub fn same_token(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// The server side: refuses every call without `authorization: Bearer TOKEN` (UNAUTHENTICATED,
/// naming the flag that holds the token), compared in constant time. With no token configured
/// it lets every call through (a worker run alone, on 127.0.0.1 by default).
#[derive(Clone)]
pub struct RequireBearer {
    token: Option<std::sync::Arc<str>>,
    flag: &'static str,
}

impl std::fmt::Debug for RequireBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireBearer")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("flag", &self.flag)
            .finish()
    }
}

impl RequireBearer {
    /// `flag` names where the token is set, e.g. "--join-token".
    pub fn new(token: Option<&str>, flag: &'static str) -> Self {
        Self {
            token: token.filter(|t| !t.is_empty()).map(std::sync::Arc::from),
            flag,
        }
    }
}

impl Interceptor for RequireBearer {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(token) = &self.token else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if same_token(t.as_bytes(), token.as_bytes()) => Ok(req),
            _ => Err(tonic::Status::unauthenticated(format!(
                "missing or wrong token: send `authorization: Bearer <token>` with the cluster's {}",
                self.flag
            ))),
        }
    }
}

#[cfg(test)]
mod require_tests {
    use super::*;

    #[test]
    fn only_the_right_token_passes() {
        let mut r = RequireBearer::new(Some("s3cret"), "--join-token");
        let with = |v: &str| {
            let mut q = tonic::Request::new(());
            q.metadata_mut().insert("authorization", v.parse().unwrap());
            q
        };
        assert!(r.call(with("Bearer s3cret")).is_ok());
        let e = r.call(with("Bearer s3creT")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("--join-token") && !e.message().contains("s3cret"));
        assert!(r.call(tonic::Request::new(())).is_err());
        assert!(!format!("{r:?}").contains("s3cret"));
        let mut open = RequireBearer::new(Some(""), "--join-token");
        assert!(open.call(tonic::Request::new(())).is_ok());
        assert!(same_token(b"a", b"a") && !same_token(b"a", b"ab") && !same_token(b"", b"x"));
    }
}
