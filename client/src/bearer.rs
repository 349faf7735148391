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
