//! TLS for every Joule port and every connection between Joule processes, from three PEM files
//! (`--tls-cert`, `--tls-key`, `--tls-ca`), the same flags on every daemon:
//!
//! - a certificate and key: every port the process listens on serves TLS;
//! - a CA as well: the internal gRPC ports (scheduler, worker) demand a client certificate that
//!   chains to it (mutual TLS), and every connection this process opens verifies the server
//!   against it and presents the process's own certificate;
//! - a CA alone: outgoing connections verify servers against it (a client with no identity).
//!
//! The gateway's client-facing ports never demand client certificates (API keys authenticate
//! clients there) and neither do the `/metrics` ports (read-only, scraped by Prometheus).
//!
//! The certificate and key are re-read when their files change (checked at most every
//! [`RELOAD_CHECK`], on the next handshake), so a certificate that cert-manager or an operator
//! renews in place is served and presented without a restart; a renewed pair that does not load
//! is logged and the previous one kept. The CA is read once, at start-up.
//!
//! It owns loading and checking the files (a bad file is refused at start-up, naming the
//! flag), the rustls settings of both sides (ring provider, TLS 1.2 and 1.3), the listeners
//! ([`listener`]), the connector [`crate::Connect`] uses, and the process-wide client setting.
//! It never logs key material and never turns verification off.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use tonic_health::pb::health_server::{Health, HealthServer};

pub mod connector;
pub mod listener;

/// The TLS flags, shared by every daemon (`#[command(flatten)]`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain to serve on every port (needs --tls-key). With --tls-ca it is
    /// also this process's client certificate, so it needs both the serverAuth and clientAuth
    /// extended key usages (cert-manager: `usages: [server auth, client auth]`). Re-read when
    /// the file changes.
    #[arg(long, env = "JOULE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "JOULE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: the servers this process connects to must chain to it, and with
    /// --tls-cert the internal gRPC ports demand client certificates that chain to it.
    #[arg(long, env = "JOULE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The name to expect in the certificates of the servers this process connects to, when
    /// it is not the host in their address (a cluster whose certificates all carry one
    /// internal name, e.g. workers advertised by pod IP).
    #[arg(long, env = "JOULE_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

/// A TLS file that cannot be used, naming the flag.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {path}: {what}")]
    Bad {
        flag: &'static str,
        path: PathBuf,
        what: String,
    },
    #[error("{0}")]
    Config(String),
}

/// How often, at most, the certificate and key files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take on any port before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The loaded TLS settings of one process; cheap to clone.
#[derive(Clone, Default)]
pub struct Tls {
    server: Option<Arc<ServerSide>>,
    client: Option<Client>,
}

/// What outgoing connections use.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: Option<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("serves_tls", &self.server.is_some())
            .field("mutual", &self.mutual())
            .field("client_tls", &self.client.is_some())
            .finish()
    }
}

struct ServerSide {
    /// Internal gRPC ports: client certificates required where a CA is given.
    internal: Arc<ServerConfig>,
    /// The gateway's gRPC port: server authentication only.
    public_grpc: Arc<ServerConfig>,
    /// HTTP ports (OpenAI API, `/metrics`): server authentication only, HTTP/2 or HTTP/1.1.
    http: Arc<ServerConfig>,
    mutual: bool,
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn certs(
    flag: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |what: String| TlsError::Bad {
        flag,
        path: path.to_path_buf(),
        what,
    };
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Reads and checks a certificate chain and its key.
fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = certs("--tls-cert", cert, &read("--tls-cert", cert)?)?;
    let key_pem = read("--tls-key", key)?;
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Bad {
        flag: "--tls-key",
        path: key.to_path_buf(),
        what: format!("no usable private key in the file ({e})"),
    })?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|e| TlsError::Bad {
        flag: "--tls-key",
        path: key.to_path_buf(),
        what: format!("does not go with --tls-cert {} ({e})", cert.display()),
    })
}

/// What identifies a file's content on disk without reading it: a replaced file (an atomic
/// rename, Kubernetes' symlink swap) has a new inode or time.
fn stamp(p: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.ino(), m.len()))
}

/// The certificate and key, re-read when their files change; both server and client
/// resolver.
struct KeyFiles {
    cert: PathBuf,
    key: PathBuf,
    /// How often, at most, the files are looked at ([`RELOAD_CHECK`]).
    every: Duration,
    state: Mutex<KeyState>,
}

struct KeyState {
    checked: Instant,
    stamps: [Option<(SystemTime, u64, u64)>; 2],
    key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for KeyFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFiles")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl KeyFiles {
    fn load(cert: &Path, key: &Path, every: Duration) -> Result<Self, TlsError> {
        let stamps = [stamp(cert), stamp(key)];
        let loaded = load_pair(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            every,
            state: Mutex::new(KeyState {
                checked: Instant::now(),
                stamps,
                key: Arc::new(loaded),
            }),
        })
    }

    /// The current pair, re-read first if the files changed since the last look.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.checked.elapsed() >= self.every {
            st.checked = Instant::now();
            let now = [stamp(&self.cert), stamp(&self.key)];
            if now != st.stamps {
                match load_pair(&self.cert, &self.key) {
                    Ok(k) => {
                        st.key = Arc::new(k);
                        st.stamps = now;
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    }
                    // A renewal caught half-written is tried again at the next check.
                    Err(e) => {
                        tracing::warn!(error = %e, "the changed TLS files do not load; serving the previous certificate")
                    }
                }
            }
        }
        st.key.clone()
    }
}

impl ResolvesServerCert for KeyFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for KeyFiles {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn server_config(
    keys: &Arc<KeyFiles>,
    client_roots: Option<&Arc<RootCertStore>>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_roots {
        Some(roots) => {
            let v = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| TlsError::Config(format!("--tls-ca: {e}")))?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let mut c = builder.with_cert_resolver(keys.clone());
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(c))
}

impl TlsArgs {
    /// Reads and checks the files: a missing file, a file with no certificate or key, or a
    /// key that does not match the certificate is an error naming the flag.
    pub fn load(&self) -> Result<Tls, TlsError> {
        self.load_checking_every(RELOAD_CHECK)
    }

    /// [`TlsArgs::load`], looking at the certificate files for a change at most every `every`.
    pub(crate) fn load_checking_every(&self, every: Duration) -> Result<Tls, TlsError> {
        let roots = match &self.tls_ca {
            Some(p) => {
                let list = certs("--tls-ca", p, &read("--tls-ca", p)?)?;
                let mut roots = RootCertStore::empty();
                let (_, bad) = roots.add_parsable_certificates(list);
                if roots.is_empty() || bad > 0 {
                    return Err(TlsError::Bad {
                        flag: "--tls-ca",
                        path: p.clone(),
                        what: format!("{bad} certificate(s) could not be parsed as a CA"),
                    });
                }
                Some(Arc::new(roots))
            }
            None => None,
        };
        let keys = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some(Arc::new(KeyFiles::load(c, k, every)?)),
            (None, None) => None,
            _ => {
                return Err(TlsError::Config(
                    "--tls-cert and --tls-key go together: give both or neither".into(),
                ));
            }
        };
        let server = match &keys {
            Some(keys) => Some(Arc::new(ServerSide {
                internal: server_config(keys, roots.as_ref(), &[b"h2"])?,
                public_grpc: server_config(keys, None, &[b"h2"])?,
                http: server_config(keys, None, &[b"h2", b"http/1.1"])?,
                mutual: roots.is_some(),
            })),
            None => None,
        };
        let client = match roots {
            Some(roots) => {
                let builder = ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TlsError::Config(e.to_string()))?
                    .with_root_certificates(roots);
                let mut config = match &keys {
                    Some(k) => builder.with_client_cert_resolver(k.clone()),
                    None => builder.with_no_client_auth(),
                };
                // Joule's connections are gRPC: HTTP/2 only.
                config.alpn_protocols = vec![b"h2".to_vec()];
                Some(Client {
                    config: Arc::new(config),
                    server_name: self.tls_server_name.clone(),
                })
            }
            None => None,
        };
        Ok(Tls { server, client })
    }

    /// For a daemon that both serves and dials the internal ports (scheduler, worker): TLS is
    /// all three files or none, since a half (serving TLS but dialling plain TCP, or the
    /// reverse) cannot talk to its peers.
    pub fn check_all_or_none(&self) -> Result<(), TlsError> {
        let given = [
            self.tls_cert.is_some(),
            self.tls_key.is_some(),
            self.tls_ca.is_some(),
        ];
        if given.iter().all(|g| *g) || given.iter().all(|g| !*g) {
            return Ok(());
        }
        Err(TlsError::Config(
            "TLS between Joule's components is mutual: give --tls-cert, --tls-key and --tls-ca \
             together (or none of them)"
                .into(),
        ))
    }
}

impl Tls {
    /// Whether this process's ports serve TLS.
    pub fn serves_tls(&self) -> bool {
        self.server.is_some()
    }

    /// Whether the internal gRPC ports demand client certificates.
    pub fn mutual(&self) -> bool {
        self.server.as_ref().is_some_and(|s| s.mutual)
    }

    /// The setting of an internal gRPC port (scheduler, worker): client certificates required
    /// where a CA is given. `None`: serve plain TCP.
    pub fn grpc_internal(&self) -> Option<Arc<ServerConfig>> {
        self.server.as_ref().map(|s| s.internal.clone())
    }

    /// The setting of a client-facing gRPC port (the gateway's): server TLS only.
    pub fn grpc_public(&self) -> Option<Arc<ServerConfig>> {
        self.server.as_ref().map(|s| s.public_grpc.clone())
    }

    /// The setting of an HTTP port (OpenAI API, `/metrics`): server TLS only.
    pub fn http(&self) -> Option<Arc<ServerConfig>> {
        self.server.as_ref().map(|s| s.http.clone())
    }

    /// Makes every connection [`crate::Connect`] opens in this process use TLS with this
    /// setting (where a CA was given). Call once at start-up, before any connection; a second
    /// call keeps the first setting and returns false.
    pub fn install_client(&self) -> bool {
        match &self.client {
            Some(c) => CLIENT.set(c.clone()).is_ok(),
            None => true,
        }
    }
}

static CLIENT: OnceLock<Client> = OnceLock::new();

/// The process-wide client setting, if [`Tls::install_client`] installed one.
pub(crate) fn client() -> Option<&'static Client> {
    CLIENT.get()
}

/// Serves only `grpc.health.v1` on `listener`, in plain TCP, for probes that cannot speak
/// TLS (Kubernetes' gRPC probes), answering what the daemon's own health service answers.
/// The port closes when the returned guard is dropped, on every path out of the daemon.
pub fn spawn_health<H: Health>(
    listener: tokio::net::TcpListener,
    health: HealthServer<H>,
) -> HealthPort {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
        {
            tracing::error!(error = %e, "the health port failed");
        }
    });
    HealthPort { _stop: stop, task }
}

/// Binds `--health-listen` (when given) and serves the health port there ([`spawn_health`]);
/// the error names the flag.
pub async fn health_port<H: Health>(
    addr: Option<&str>,
    health: HealthServer<H>,
) -> Result<Option<HealthPort>, String> {
    let Some(addr) = addr else { return Ok(None) };
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (--health-listen): {e}"))?;
    Ok(Some(spawn_health(l, health)))
}

/// The health port's server: stopped (its connections too) when dropped.
#[derive(Debug)]
pub struct HealthPort {
    _stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HealthPort {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The health service name every daemon reports SERVING for as long as it runs (for liveness
/// probes: unlike `""`, a drain does not turn it off). The `@` keeps it apart from every model
/// and deployment name, which also have health entries.
pub const LIVENESS: &str = "@liveness";

#[cfg(test)]
mod tests;
