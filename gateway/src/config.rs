//! The gateway's flags (every one also an environment variable, for Helm) and their checks.
//! It owns no state: [`Args::validate`] turns the flags into [`Settings`] or says which flag is
//! wrong.

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::route::Policy;

/// How requests pick a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Routing {
    /// The fewest predicted joules per output token within the deployment's latency target.
    Energy,
    /// The replica with the fewest requests in flight (a baseline).
    LeastLoaded,
    /// Each replica in turn (a baseline).
    RoundRobin,
}

impl From<Routing> for Policy {
    fn from(r: Routing) -> Self {
        match r {
            Routing::Energy => Policy::Energy,
            Routing::LeastLoaded => Policy::LeastLoaded,
            Routing::RoundRobin => Policy::RoundRobin,
        }
    }
}

#[derive(Parser, Clone)]
#[command(
    name = "joule-gateway",
    version,
    about = "The public edge of a Joule cluster: OpenAI-compatible HTTP and gRPC, each request \
             routed to the replica that serves it for the fewest joules per token"
)]
pub struct Args {
    /// Scheduler replicas to watch the routing view from, HOST:PORT,... (any one will do).
    #[arg(long = "scheduler", env = "JOULE_SCHEDULER")]
    pub schedulers: String,
    /// The cluster's join token: it authorises gateways as it does workers.
    #[arg(long, env = "JOULE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// OpenAI-compatible HTTP (`/v1/chat/completions`, `/v1/completions`, `/v1/models`).
    #[arg(long, env = "JOULE_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: String,
    /// `joule.v1.Inference`, health and reflection.
    #[arg(long, env = "JOULE_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    pub grpc_listen: String,
    /// Prometheus `/metrics`.
    #[arg(long, env = "JOULE_METRICS_LISTEN", default_value = "127.0.0.1:9462")]
    pub metrics_listen: String,
    /// How requests pick a replica.
    #[arg(long, env = "JOULE_ROUTING", value_enum, default_value = "energy")]
    pub routing: Routing,
    /// Serve without API keys (local use only): every request is the unlimited `default`
    /// tenant's. Without it, every request needs `Authorization: Bearer KEY`.
    #[arg(long, env = "JOULE_NO_AUTH")]
    pub no_auth: bool,
    /// How often metered usage is committed to the schedulers, ms (a crash loses at most this
    /// much of it).
    #[arg(long, env = "JOULE_USAGE_FLUSH_MS", default_value_t = 1000)]
    pub usage_flush_ms: u64,
    /// The largest HTTP request body accepted, bytes (larger: 413).
    #[arg(long, env = "JOULE_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Replicas tried for a request before its first token.
    #[arg(long, env = "JOULE_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// Times one stream may move to another replica after its first token.
    #[arg(long, env = "JOULE_MAX_MIGRATIONS", default_value_t = 3)]
    pub max_migrations: u32,
    /// How long a replica may take to send a request's first token before the request moves.
    #[arg(long, env = "JOULE_FIRST_TOKEN_TIMEOUT_MS", default_value_t = 60_000)]
    pub first_token_timeout_ms: u64,
    /// How long a replica may go quiet between two tokens before the stream moves.
    #[arg(long, env = "JOULE_TOKEN_TIMEOUT_MS", default_value_t = 15_000)]
    pub token_timeout_ms: u64,
    /// `max_tokens` of an HTTP request that sets none.
    #[arg(long, env = "JOULE_DEFAULT_MAX_TOKENS", default_value_t = 512)]
    pub default_max_tokens: u32,
    /// This gateway's name in the schedulers' logs (default: the host name).
    #[arg(long, env = "JOULE_GATEWAY_NAME")]
    pub name: Option<String>,
    /// How log lines are written to stderr: text (coloured only on a terminal) or json (one
    /// object per line, for log shippers). RUST_LOG filters them.
    #[arg(long, env = "JOULE_LOG_FORMAT", default_value = "text")]
    pub log_format: joule_proto::logging::LogFormat,
    /// A second, plain-TCP port that serves only `grpc.health.v1`, for probes that cannot
    /// speak TLS (Kubernetes' gRPC probes); off when not given.
    #[arg(long, env = "JOULE_HEALTH_LISTEN")]
    pub health_listen: Option<String>,
    /// TLS: --tls-cert/--tls-key serve TLS on all three ports (clients are not asked for
    /// certificates: API keys authenticate them); --tls-ca makes the connections to schedulers
    /// and workers TLS, presenting --tls-cert where they demand a client certificate.
    #[command(flatten)]
    pub tls: joule_client::tls::TlsArgs,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("schedulers", &self.schedulers)
            .field(
                "join_token",
                &self.join_token.as_ref().map(|_| "<redacted>"),
            )
            .field("http_listen", &self.http_listen)
            .field("grpc_listen", &self.grpc_listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("routing", &self.routing)
            .finish_non_exhaustive()
    }
}

/// The checked settings the gateway runs with.
#[derive(Clone)]
pub struct Settings {
    pub schedulers: Vec<String>,
    pub join_token: String,
    pub policy: Policy,
    pub max_body_bytes: usize,
    pub max_attempts: u32,
    pub max_migrations: u32,
    pub first_token_timeout: Duration,
    pub token_timeout: Duration,
    pub default_max_tokens: u32,
    pub name: String,
    /// Whether requests need an API key.
    pub auth: bool,
    pub usage_flush: Duration,
    /// The loaded TLS files (none: plain TCP).
    pub tls: joule_client::tls::Tls,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("schedulers", &self.schedulers)
            .field("join_token", &"<redacted>")
            .field("policy", &self.policy)
            .field("name", &self.name)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Args {
    /// The settings, or the flag that is wrong and why.
    pub fn validate(&self) -> Result<Settings, String> {
        let schedulers = joule_client::address::parse_list(&self.schedulers)
            .map_err(|e| format!("--scheduler: {e}"))?;
        let join_token = self.join_token.clone().unwrap_or_default();
        if join_token.is_empty() {
            return Err(
                "--join-token (JOULE_JOIN_TOKEN) is required: the cluster's join \
                        token authorises gateways"
                    .into(),
            );
        }
        for (flag, v) in [
            ("--http-listen", &self.http_listen),
            ("--grpc-listen", &self.grpc_listen),
            ("--metrics-listen", &self.metrics_listen),
            (
                "--health-listen",
                self.health_listen.as_ref().unwrap_or(&self.metrics_listen),
            ),
        ] {
            if v.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!("{flag}: {v:?} is not IP:PORT"));
            }
        }
        if self.max_body_bytes < 1024 {
            return Err("--max-body-bytes must be at least 1024".into());
        }
        if self.max_attempts == 0 {
            return Err("--max-attempts must be at least 1".into());
        }
        if self.first_token_timeout_ms == 0 || self.token_timeout_ms == 0 {
            return Err("--first-token-timeout-ms and --token-timeout-ms must be positive".into());
        }
        if !(50..=60_000).contains(&self.usage_flush_ms) {
            return Err("--usage-flush-ms must be from 50 to 60000".into());
        }
        if self.default_max_tokens == 0 {
            return Err("--default-max-tokens must be at least 1".into());
        }
        let name = self.name.clone().unwrap_or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "gateway".into())
        });
        Ok(Settings {
            schedulers,
            join_token,
            policy: self.routing.into(),
            max_body_bytes: self.max_body_bytes,
            max_attempts: self.max_attempts,
            max_migrations: self.max_migrations,
            first_token_timeout: Duration::from_millis(self.first_token_timeout_ms),
            token_timeout: Duration::from_millis(self.token_timeout_ms),
            default_max_tokens: self.default_max_tokens,
            name,
            auth: !self.no_auth,
            usage_flush: Duration::from_millis(self.usage_flush_ms),
            tls: {
                if self.tls.tls_ca.is_some() && self.tls.tls_cert.is_none() {
                    return Err(
                        "--tls-ca needs --tls-cert and --tls-key: the schedulers and \
                                workers demand a client certificate"
                            .into(),
                    );
                }
                self.tls.load().map_err(|e| e.to_string())?
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["g", "--scheduler", "127.0.0.1:7001"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn the_join_token_is_required_and_never_printed() {
        let e = args(&[]).validate().unwrap_err();
        assert!(e.contains("--join-token"), "{e}");
        let a = args(&["--join-token", "s3cret"]);
        let s = a.validate().unwrap();
        assert_eq!(s.policy, Policy::Energy);
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn bad_flags_name_themselves() {
        let e = args(&["--join-token", "t", "--http-listen", "nope"])
            .validate()
            .unwrap_err();
        assert!(e.contains("--http-listen"), "{e}");
        let e = args(&["--join-token", "t", "--max-attempts", "0"])
            .validate()
            .unwrap_err();
        assert!(e.contains("--max-attempts"), "{e}");
        assert!(Args::try_parse_from(["g", "--scheduler", "a:1", "--routing", "random"]).is_err());
        let s = args(&["--join-token", "t", "--routing", "least-loaded"])
            .validate()
            .unwrap();
        assert_eq!(s.policy, Policy::LeastLoaded);
    }
}
