//! Connections: one worker (`--worker`), or the cluster's replicas (`--server`, `--token`, or
//! the context) with failover to the next replica when one cannot be reached. All through `joule-client`.

use anyhow::Context as _;
use joule_client::{Connect, Servers};

use crate::args::Cli;

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
