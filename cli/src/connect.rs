//! Connections: one worker (`--worker`), or the cluster's replicas (`--server`, `--token`, or
//! the context) with failover to the next replica when one cannot be reached. All through `joule-client`.

use std::path::PathBuf;

use anyhow::Context as _;
use joule_client::tls::TlsArgs;
use joule_client::{Connect, Servers};

use crate::args::Cli;
use crate::context;

/// The TLS flags (or their `JOULE_TLS_*` variables) as joule-client takes them; an empty value
/// counts as none. With `drop_env` (the replicas come from a context `--context` names) the
/// variables count for nothing, as `JOULE_SERVER` and `JOULE_TOKEN` do not then: a leftover
/// variable must not pick another cluster's certificate.
pub fn tls_flags(cli: &Cli, drop_env: bool) -> TlsArgs {
    let keep = |v: &str, var: &str| !(v.is_empty() || drop_env && context::from_env(v, var));
    let path =
        |p: &Option<PathBuf>, var: &str| p.clone().filter(|p| keep(&p.to_string_lossy(), var));
    TlsArgs {
        tls_cert: path(&cli.client_certificate, "JOULE_TLS_CERT"),
        tls_key: path(&cli.client_key, "JOULE_TLS_KEY"),
        tls_ca: path(&cli.certificate_authority, "JOULE_TLS_CA"),
        tls_server_name: cli
            .tls_server_name
            .clone()
            .filter(|n| keep(n, "JOULE_TLS_SERVER_NAME")),
    }
}

/// What errors call each TLS file: the flag, or the context's key.
pub struct TlsNames {
    ca: String,
    cert: String,
    key: String,
    /// A context the settings came from, for the hint to mend it.
    context: Option<String>,
}

impl TlsNames {
    /// All from the flags.
    pub fn flags() -> Self {
        Self {
            ca: "--certificate-authority".into(),
            cert: "--client-certificate".into(),
            key: "--client-key".into(),
            context: None,
        }
    }

    /// All from the context `name`.
    pub fn context(name: &str) -> Self {
        let of = |k: &str| format!("the {k} of context {name:?}");
        Self {
            ca: of("certificate-authority"),
            cert: of("client-certificate"),
            key: of("client-key"),
            context: Some(name.to_string()),
        }
    }
}

/// The TLS settings of this run: the context's (`ctx`, where the replicas come from a context
/// that has some) with each setting the flags give taken over from them, or the flags alone.
/// A client certificate with no CA to verify the servers is a usage error.
pub fn client_tls(
    flags: TlsArgs,
    ctx: Option<(String, TlsArgs)>,
) -> anyhow::Result<(TlsArgs, TlsNames)> {
    let Some((name, c)) = ctx else {
        if flags.tls_ca.is_none() && flags.tls_cert.is_some() {
            return Err(crate::exit::usage(
                "--client-certificate needs --certificate-authority (to verify the servers)",
            ));
        }
        return Ok((flags, TlsNames::flags()));
    };
    // The context's settings are whole (`Context::check_tls`): it has a CA wherever it has a
    // client certificate, so taking flags over keeps a CA.
    let mut names = TlsNames::context(&name);
    let pick = |f: Option<PathBuf>, c: Option<PathBuf>, name: &mut String, flag: &str| {
        if f.is_some() {
            *name = flag.to_string();
        }
        f.or(c)
    };
    let args = TlsArgs {
        tls_ca: pick(
            flags.tls_ca,
            c.tls_ca,
            &mut names.ca,
            "--certificate-authority",
        ),
        tls_cert: pick(
            flags.tls_cert,
            c.tls_cert,
            &mut names.cert,
            "--client-certificate",
        ),
        tls_key: pick(flags.tls_key, c.tls_key, &mut names.key, "--client-key"),
        tls_server_name: flags.tls_server_name.or(c.tls_server_name),
    };
    Ok((args, names))
}

/// Reads and checks `a` and makes it what every connection of this process uses.
pub fn install_tls(a: &TlsArgs, names: &TlsNames) -> anyhow::Result<()> {
    load_tls(a, names)?.install_client();
    Ok(())
}

/// Reads and checks `a`. A file that is missing or wrong is a usage error naming where the
/// setting came from (`names`) and the path.
pub fn load_tls(a: &TlsArgs, names: &TlsNames) -> anyhow::Result<joule_client::tls::Tls> {
    a.load().map_err(|e| {
        let e = e
            .to_string()
            .replace("--tls-cert", &names.cert)
            .replace("--tls-key", &names.key)
            .replace("--tls-ca", &names.ca);
        crate::exit::usage(match &names.context {
            Some(c) => format!("{e} (mend it with `joulectl config set-context {c}`)"),
            None => e,
        })
    })
}

/// A connected worker client (connected now, so "cannot reach" is reported up front); `token`
/// is the join token a worker in a cluster needs (empty for one run alone).
pub async fn worker(addr: &str, token: &str) -> anyhow::Result<joule_client::Worker> {
    let connect = Connect::streaming();
    connect
        .connect(addr)
        .await
        .with_context(|| format!("--worker {addr}"))?;
    Ok(connect.worker(addr, token)?)
}

/// How long a call waits for a cluster that is starting (or electing a leader).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(15);

/// The cluster: its replicas and the admin token.
pub struct Cluster {
    servers: Servers,
    token: String,
}

impl Cluster {
    /// The cluster the flags, or else the context, name (see [`crate::context`]).
    pub fn new(cli: &Cli) -> anyhow::Result<Self> {
        let t = crate::context::admin_target(
            cli.server.as_deref(),
            cli.token.as_deref(),
            cli.context.as_deref(),
        )?;
        Self::with(&t.servers, &t.token)
    }

    /// The replicas `servers` (comma-separated) with the admin token `token`.
    pub fn with(servers: &str, token: &str) -> anyhow::Result<Self> {
        let addrs = joule_client::address::parse_list(servers).context("--server")?;
        if token.is_empty() {
            anyhow::bail!("--token (or JOULE_TOKEN) is required: the cluster's admin token");
        }
        Ok(Self {
            servers: Servers::new(addrs),
            token: token.to_string(),
        })
    }

    /// Calls `f` with an admin client of each replica in turn until one answers. While no
    /// replica can act (none reachable, or no leader yet: nothing was written), it tries again
    /// for up to [`SETTLE`].
    pub async fn call<T, F, Fut>(&self, mut f: F) -> anyhow::Result<T>
    where
        F: FnMut(joule_client::Admin) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let connect = Connect::default();
        let until = std::time::Instant::now() + SETTLE;
        loop {
            let r = self
                .servers
                .call(|addr| {
                    let c = connect.admin(&addr, &self.token);
                    let fut = c.map(&mut f);
                    async move {
                        match fut {
                            Ok(fut) => fut.await.map(tonic::Response::into_inner),
                            Err(e) => Err(tonic::Status::invalid_argument(e.to_string())),
                        }
                    }
                })
                .await;
            match r {
                Err(e)
                    if joule_client::failover::retryable(&e)
                        && std::time::Instant::now() < until =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                }
                r => return r.map_err(crate::status),
            }
        }
    }
}

/// The worker `--worker` names, and the token it takes (`--worker-token`).
pub struct WorkerTarget {
    pub addr: String,
    pub token: String,
}
