//! Listeners for every port: plain TCP, or TLS where a setting is given. With TLS, connections
//! are accepted at once and their handshakes run concurrently in their own tasks, so a slow or
//! silent client never holds up the others: at most [`MAX_HANDSHAKES`] at a time per port and
//! [`MAX_HANDSHAKES_PER_IP`] per client address (one host cannot take every slot), the
//! ClientHello within [`HELLO_TIMEOUT`] and the whole handshake within
//! [`super::HANDSHAKE_TIMEOUT`]. A connection over a limit is dropped (logged at warn, at most
//! once a second), one whose handshake fails too (at debug). Only finished TLS streams are
//! handed to the server.
//!
//! It owns those accept loops and the connection type [`Conn`] (for tonic and axum alike);
//! the rustls settings come from [`super::Tls`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;

/// The most TLS handshakes one port runs at once.
pub const MAX_HANDSHAKES: usize = 1024;
/// The most TLS handshakes one client address may have in flight on a port.
pub const MAX_HANDSHAKES_PER_IP: usize = 64;
/// How long a new connection may take to send its ClientHello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(3);

/// The handshakes in flight on one port, by client address.
#[derive(Default)]
struct InFlight {
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    last_warning: AtomicU64,
}

/// A handshake's place in [`InFlight`], given back when dropped.
struct Slot {
    flight: Arc<InFlight>,
    ip: IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.flight.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl InFlight {
    /// A slot for a handshake from `ip`, or `None` past a limit.
    fn take(self: &Arc<Self>, permits: &Arc<Semaphore>, ip: IpAddr) -> Option<Slot> {
        let permit = permits.clone().try_acquire_owned().ok()?;
        let mut m = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= MAX_HANDSHAKES_PER_IP {
            return None;
        }
        *n += 1;
        Some(Slot {
            flight: self.clone(),
            ip,
            _permit: permit,
        })
    }

    /// Warns that connections are being dropped, at most once a second.
    fn warn_dropped(&self, peer: SocketAddr) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_warning.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(%peer, "too many TLS handshakes in flight (per port or from this address); dropping new connections");
        }
    }
}

/// An accepted connection: plain TCP or TLS over it.
#[derive(Debug)]
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Conn::Plain(s) => s.connect_info(),
            Conn::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

/// The accepted connections of one port.
pub struct Listener {
    local: SocketAddr,
    ready: mpsc::Receiver<(Conn, SocketAddr)>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.local)
            .finish()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl Listener {
    /// Accepts on `tcp`: TLS with `tls` where given, plain TCP otherwise; `nodelay` turns
    /// Nagle off on each connection (small messages must not wait for an ACK). Needs a Tokio
    /// runtime.
    pub fn new(
        tcp: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        nodelay: bool,
    ) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let flight = Arc::new(InFlight::default());
        let accept_task = tokio::spawn(async move {
            loop {
                let (sock, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    // One connection's trouble: go on with the next.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionAborted
                                | io::ErrorKind::ConnectionReset
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue;
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, as axum does.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if nodelay && let Err(e) = sock.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                let Some(config) = tls.clone() else {
                    if tx.send((Conn::Plain(sock), peer)).await.is_err() {
                        return;
                    }
                    continue;
                };
                let Some(slot) = flight.take(&permits, peer.ip()) else {
                    flight.warn_dropped(peer);
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake =
                        async {
                            let lazy =
                                LazyConfigAcceptor::new(rustls::server::Acceptor::default(), sock);
                            let start = tokio::time::timeout(HELLO_TIMEOUT, lazy).await.map_err(
                                |_| io::Error::new(io::ErrorKind::TimedOut, "no ClientHello"),
                            )??;
                            start.into_stream(config).await
                        };
                    match tokio::time::timeout(super::HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(s)) => {
                            // The slot is held until the server has the connection.
                            let _ = tx.send((Conn::Tls(Box::new(s)), peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                    drop(slot);
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

/// The connections as a stream, for tonic's `serve_with_incoming` (the accept task lives as
/// long as the listener).
impl Stream for Listener {
    type Item = io::Result<Conn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready.poll_recv(cx).map(|c| c.map(|(c, _)| Ok(c)))
    }
}

impl axum::serve::Listener for Listener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The connections of a gRPC port for tonic: TLS with `tls` where given (accepted by
/// [`Listener`]), else plain TCP exactly as before TLS existed (tonic's own stream of the
/// listener, Nagle off).
pub fn incoming(
    tcp: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>>> {
    use tokio_stream::StreamExt as _;
    Ok(match tls {
        Some(config) => Box::pin(Listener::new(tcp, Some(config), true)?),
        None => Box::pin(
            tokio_stream::wrappers::TcpListenerStream::new(tcp).map(|c| {
                c.map(|s| {
                    if let Err(e) = s.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    Conn::Plain(s)
                })
            }),
        ),
    })
}

/// Serves `app` on `tcp` until `stop` resolves: TLS where `tls` is given, plain TCP as
/// before otherwise; `nodelay` turns Nagle off on each connection (small SSE chunks must not
/// wait for an ACK). The handle is the server's own task: aborting it stops the server.
pub fn spawn_http<F>(
    tcp: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    nodelay: bool,
    stop: F,
) -> io::Result<tokio::task::JoinHandle<io::Result<()>>>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    Ok(match tls {
        Some(config) => {
            let l = Listener::new(tcp, Some(config), nodelay)?;
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
