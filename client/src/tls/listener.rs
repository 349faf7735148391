//! A TLS listener for the axum ports: TCP connections are accepted at once and their
//! handshakes run concurrently in their own tasks (bounded by [`super::HANDSHAKE_TIMEOUT`]), so a
//! slow or silent client never holds up the others. A failed handshake is logged at debug and
//! dropped; `accept` only ever returns finished TLS streams.
//!
//! It owns nothing but that loop; the rustls setting comes from [`super::Tls::http`].

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Accepted TLS connections of one port, for `axum::serve`.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish()
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl TlsListener {
    /// Serves TLS with `config` on `tcp`; `nodelay` turns Nagle off on each connection.
    /// Needs a Tokio runtime.
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        nodelay: bool,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let accept_task = tokio::spawn(async move {
            loop {
                let (sock, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, as axum does.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if nodelay {
                    let _ = sock.set_nodelay(true);
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(super::HANDSHAKE_TIMEOUT, acceptor.accept(sock));
                    match hs.await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            local,
            ready,
            accept_task,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves `app` on `tcp` until `stop` resolves: TLS where `tls` is given, plain TCP otherwise;
/// `nodelay` turns Nagle off on each connection (small SSE chunks must not wait for an ACK).
pub fn spawn_http<F>(
    tcp: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    nodelay: bool,
    stop: F,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    Ok(match tls {
        Some(config) => {
            let l = TlsListener::new(tcp, config, nodelay)?;
            tokio::spawn(async move { axum::serve(l, app).with_graceful_shutdown(stop).await })
        }
        None => {
            use axum::serve::ListenerExt as _;
            let l = tcp.tap_io(move |s| {
                if nodelay {
                    let _ = s.set_nodelay(true);
                }
            });
            tokio::spawn(async move { axum::serve(l, app).with_graceful_shutdown(stop).await })
        }
    })
}
