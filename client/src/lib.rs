//! `joule-client`: the one way any Joule component or tool connects to a Joule endpoint (a
//! worker, a scheduler replica). It owns the address rules ([`address`]), connection and
//! request timeouts ([`Connect`]), the bearer-token interceptor ([`Bearer`]), the typed clients
//! and failover across a list of replicas ([`failover`]), and the UTC calendar days usage is
//! counted in ([`calendar`]).
//!
//! It must never hold cluster state or retry a call whose outcome is unknown to the caller
//! (only errors that prove nothing happened move on to the next replica), and it must never log
//! or print a token.

pub mod address;
mod bearer;
pub mod calendar;
pub mod failover;
pub mod tls;

use std::time::Duration;

use joule_proto::internal::v1::raft_client::RaftClient;
use joule_proto::internal::v1::registry_client::RegistryClient;
use joule_proto::internal::v1::worker_client::WorkerClient;
use joule_proto::v1::admin_client::AdminClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub use address::{AddressError, normalize};
pub use bearer::{Bearer, RequireBearer, same_token};
pub use failover::Servers;

/// A channel that sends a bearer token with every call.
pub type Authed = InterceptedService<Channel, Bearer>;
/// `joule.v1.Admin`, with the admin token.
pub type Admin = AdminClient<Authed>;
/// `joule.internal.v1.Registry`, with the join token.
pub type Registry = RegistryClient<Authed>;
/// `joule.internal.v1.Raft`, with the peer token.
pub type Raft = RaftClient<Authed>;
/// `joule.internal.v1.Worker` (inference and model management on one worker).
pub type Worker = WorkerClient<Authed>;

/// How to connect: timeouts, and whether to wait for the connection.
#[derive(Debug, Clone)]
pub struct Connect {
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// How long one unary call may take; `None` for streams that run as long as they need.
    pub timeout: Option<Duration>,
}

impl Default for Connect {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(1000),
            timeout: Some(Duration::from_secs(10)),
        }
    }
}

impl Connect {
    /// Settings for calls between replicas: short timeouts, so a dead peer is noticed fast.
    pub fn internal() -> Self {
        Self {
            connect_timeout: Duration::from_millis(500),
            timeout: Some(Duration::from_secs(5)),
        }
    }

    /// Settings for streams (generations run for as long as they need).
    pub fn streaming() -> Self {
        Self {
            timeout: None,
            ..Self::default()
        }
    }

    /// The endpoint for `addr` (`HOST:PORT` or a URL). Where a client TLS setting is
    /// installed ([`tls::Tls::install_client`]) the channels below connect through
    /// [`tls::connector`], whatever the scheme; the endpoint alone carries no TLS, so it stays
    /// private to them.
    fn endpoint(&self, addr: &str) -> Result<Endpoint, AddressError> {
        let mut url = normalize(addr)?;
        match (tls::client(), url.strip_prefix("https://")) {
            // With --tls-ca every connection is TLS, whatever scheme the address was given
            // with; the TLS is [`tls::connector`]'s, so tonic is handed an http:// URI (its own
            // connector refuses https:// without its own TLS setting).
            (Some(_), Some(rest)) => url = format!("http://{rest}"),
            (None, Some(_)) => {
                return Err(AddressError::new(
                    addr,
                    "https needs a CA to verify the server: pass --tls-ca (joulectl: --certificate-authority)",
                ));
            }
            _ => {}
        }
        let mut ep = Endpoint::from_shared(url.clone())
            .map_err(|e| AddressError::new(addr, e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if let Some(t) = self.timeout {
            ep = ep.timeout(t);
        }
        Ok(ep)
    }

    /// A channel to `addr` that connects on first use (and reconnects after failures), so a
    /// replica that is down at start-up is not an error yet. Needs a Tokio runtime.
    pub fn lazy(&self, addr: &str) -> Result<Channel, AddressError> {
        let ep = self.endpoint(addr)?;
        Ok(match tls::client() {
            Some(c) => {
                ep.connect_with_connector_lazy(tls::connector::TlsConnector { client: c.clone() })
            }
            None => ep.connect_lazy(),
        })
    }

    /// A channel to `addr`, connected now: an error says the endpoint cannot be reached.
    pub async fn connect(&self, addr: &str) -> Result<Channel, ConnectError> {
        let ep = self.endpoint(addr)?;
        let r = match tls::client() {
            Some(c) => {
                ep.connect_with_connector(tls::connector::TlsConnector { client: c.clone() })
                    .await
            }
            None => ep.connect().await,
        };
        r.map_err(|e| ConnectError::Unreachable {
            addr: addr.to_string(),
            reason: source_chain(&e),
        })
    }

    pub fn admin(&self, addr: &str, token: &str) -> Result<Admin, AddressError> {
        Ok(AdminClient::with_interceptor(
            self.lazy(addr)?,
            Bearer::new(token),
        ))
    }

    pub fn registry(&self, addr: &str, token: &str) -> Result<Registry, AddressError> {
        Ok(RegistryClient::with_interceptor(
            self.lazy(addr)?,
            Bearer::new(token),
        ))
    }

    pub fn raft(&self, addr: &str, token: &str) -> Result<Raft, AddressError> {
        Ok(RaftClient::with_interceptor(
            self.lazy(addr)?,
            Bearer::new(token),
        ))
    }

    /// A worker client; `token` may be empty (a worker run alone takes none).
    pub fn worker(&self, addr: &str, token: &str) -> Result<Worker, AddressError> {
        Ok(WorkerClient::with_interceptor(
            self.lazy(addr)?,
            Bearer::new(token),
        ))
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
}

/// An error and its causes on one line (tonic's transport errors hide the useful part in
/// their sources: "connection refused").
pub fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}
