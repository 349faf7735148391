//! The connector [`crate::Connect`] uses where a client TLS setting is installed: TCP with
//! Nagle off, then TLS with that setting (HTTP/2 by ALPN), verifying the server's certificate
//! against the CA for the name `--tls-server-name` gives, else the address's host, and
//! presenting this process's certificate where it has one (re-read when its files change).
//!
//! It owns nothing else; tonic's connect timeout wraps it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// TCP then TLS to the URI's host and port.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    pub(crate) client: super::Client,
}

impl tonic::codegen::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| format!("{uri}: no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = client.server_name.clone().unwrap_or_else(|| host.clone());
            let name = ServerName::try_from(name.clone())
                .map_err(|e| format!("{name:?} is not a name a certificate can carry: {e}"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(&client.config))
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
