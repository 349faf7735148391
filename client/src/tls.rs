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
//! It owns loading and checking the files (so a bad file is refused at start-up, naming the
//! flag), the tonic configurations, the rustls acceptor for the axum ports ([`listener`]), and
//! the process-wide client setting that [`crate::Connect`] applies. It never logs key material
//! and never turns verification off.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

pub mod listener;

/// The TLS flags, shared by every daemon (`#[command(flatten)]`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain to serve on every port (needs --tls-key). With --tls-ca it is
    /// also this process's client certificate, so it needs both the serverAuth and clientAuth
    /// extended key usages (cert-manager: `usages: [server auth, client auth]`).
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

/// The loaded TLS settings of one process; cheap to clone.
#[derive(Clone, Default)]
pub struct Tls {
    server: Option<Arc<ServerSide>>,
    client: Option<ClientTlsConfig>,
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
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Option<Vec<u8>>,
    /// For the HTTP ports: server authentication only.
    http: Arc<rustls::ServerConfig>,
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
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsArgs {
    /// Reads and checks the files: a missing file, a file with no certificate or key, or a
    /// key that does not match the certificate is an error naming the flag.
    pub fn load(&self) -> Result<Tls, TlsError> {
        let ca = match &self.tls_ca {
            Some(p) => {
                let pem = read("--tls-ca", p)?;
                let list = certs("--tls-ca", p, &pem)?;
                let mut roots = rustls::RootCertStore::empty();
                let (_, bad) = roots.add_parsable_certificates(list);
                if roots.is_empty() || bad > 0 {
                    return Err(TlsError::Bad {
                        flag: "--tls-ca",
                        path: p.clone(),
                        what: format!("{bad} certificate(s) could not be parsed as a CA"),
                    });
                }
                Some(pem)
            }
            None => None,
        };
        let server = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => {
                let cert_pem = read("--tls-cert", c)?;
                let key_pem = read("--tls-key", k)?;
                let chain = certs("--tls-cert", c, &cert_pem)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Bad {
                    flag: "--tls-key",
                    path: k.clone(),
                    what: format!("no usable private key in the file ({e})"),
                })?;
                let mut http = rustls::ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TlsError::Config(e.to_string()))?
                    .with_no_client_auth()
                    .with_single_cert(chain, key)
                    .map_err(|e| TlsError::Bad {
                        flag: "--tls-key",
                        path: k.clone(),
                        what: format!("does not go with --tls-cert {} ({e})", c.display()),
                    })?;
                http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                Some(Arc::new(ServerSide {
                    cert_pem,
                    key_pem,
                    ca_pem: ca.clone(),
                    http: Arc::new(http),
                }))
            }
            (None, None) => None,
            _ => {
                return Err(TlsError::Config(
                    "--tls-cert and --tls-key go together: give both or neither".into(),
                ));
            }
        };
        let client = ca.map(|pem| {
            let mut c = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            if let Some(s) = &server {
                c = c.identity(Identity::from_pem(&s.cert_pem, &s.key_pem));
            }
            if let Some(name) = &self.tls_server_name {
                c = c.domain_name(name.clone());
            }
            c
        });
        Ok(Tls { server, client })
    }
}

impl Tls {
    /// No TLS anywhere (plain TCP), as when no flag is given.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether this process's ports serve TLS.
    pub fn serves_tls(&self) -> bool {
        self.server.is_some()
    }

    /// Whether the internal gRPC ports demand client certificates.
    pub fn mutual(&self) -> bool {
        self.server.as_ref().is_some_and(|s| s.ca_pem.is_some())
    }

    /// The gRPC server setting for an internal port (scheduler, worker): client certificates
    /// required where a CA is given. `None`: serve plain TCP.
    pub fn grpc_internal(&self) -> Option<ServerTlsConfig> {
        let s = self.server.as_ref()?;
        let mut c = self.grpc_public()?;
        if let Some(ca) = &s.ca_pem {
            c = c.client_ca_root(Certificate::from_pem(ca));
        }
        Some(c)
    }

    /// The gRPC server setting for a client-facing port (the gateway's): server TLS only.
    pub fn grpc_public(&self) -> Option<ServerTlsConfig> {
        let s = self.server.as_ref()?;
        Some(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(&s.cert_pem, &s.key_pem))
                .timeout(HANDSHAKE_TIMEOUT),
        )
    }

    /// The rustls setting for an HTTP port (OpenAI API, `/metrics`): server TLS only.
    pub fn http(&self) -> Option<Arc<rustls::ServerConfig>> {
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

/// How long a TLS handshake may take on any port before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

static CLIENT: OnceLock<ClientTlsConfig> = OnceLock::new();

/// The process-wide client setting, if [`Tls::install_client`] installed one.
pub(crate) fn client() -> Option<&'static ClientTlsConfig> {
    CLIENT.get()
}

/// Serves only `grpc.health.v1` on `listener`, in plain TCP, for probes that cannot speak TLS
/// (Kubernetes' gRPC probes). It answers what the daemon's own health service answers.
pub async fn serve_health<S>(listener: tokio::net::TcpListener, health: S)
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming(incoming)
        .await
    {
        tracing::error!(error = %e, "the health port failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn args(cert: Option<&Path>, key: Option<&Path>, ca: Option<&Path>) -> TlsArgs {
        TlsArgs {
            tls_cert: cert.map(Path::to_path_buf),
            tls_key: key.map(Path::to_path_buf),
            tls_ca: ca.map(Path::to_path_buf),
            tls_server_name: None,
        }
    }

    #[test]
    fn good_files_load_and_say_what_they_turn_on() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = pair(d.path(), "a");
        let none = args(None, None, None).load().unwrap();
        assert!(!none.serves_tls() && none.grpc_internal().is_none() && none.http().is_none());
        let server = args(Some(&c), Some(&k), None).load().unwrap();
        assert!(server.serves_tls() && !server.mutual());
        assert!(server.http().is_some() && server.grpc_internal().is_some());
        let mutual = args(Some(&c), Some(&k), Some(&c)).load().unwrap();
        assert!(mutual.serves_tls() && mutual.mutual());
        let client_only = args(None, None, Some(&c)).load().unwrap();
        assert!(!client_only.serves_tls() && client_only.client.is_some());
    }

    #[test]
    fn bad_files_are_refused_naming_the_flag_and_the_path() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = pair(d.path(), "a");
        let (c2, k2) = pair(d.path(), "b");
        let junk = d.path().join("junk.pem");
        std::fs::write(&junk, "not pem at all\n").unwrap();
        let missing = d.path().join("missing.pem");
        let cases: Vec<(TlsArgs, &str, &Path)> = vec![
            (args(Some(&missing), Some(&k), None), "--tls-cert", &missing),
            (args(Some(&c), Some(&missing), None), "--tls-key", &missing),
            (args(None, None, Some(&missing)), "--tls-ca", &missing),
            (args(Some(&junk), Some(&k), None), "--tls-cert", &junk),
            (args(Some(&c), Some(&junk), None), "--tls-key", &junk),
            (args(None, None, Some(&junk)), "--tls-ca", &junk),
            // A key that is not the certificate's.
            (args(Some(&c), Some(&k2), None), "--tls-key", &k2),
            (args(Some(&c2), Some(&k), None), "--tls-key", &k),
        ];
        for (a, flag, path) in cases {
            let e = a.load().unwrap_err().to_string();
            assert!(
                e.contains(flag) && e.contains(&path.display().to_string()),
                "{a:?}: {e}"
            );
        }
        let half = args(Some(&c), None, None).load().unwrap_err().to_string();
        assert!(
            half.contains("--tls-cert and --tls-key go together"),
            "{half}"
        );
    }
}
