//! `logs NODE [-f] [--tail N]`: a worker's recent log lines, fetched through the cluster
//! (whichever replica answers asks the worker with the cluster's join token), printed as the
//! worker wrote them; `-f` keeps printing new ones until interrupted.

use joule_proto::v1;

use crate::connect::Cluster;
use crate::exit::Failure;
use crate::render;

pub async fn logs(c: &Cluster, node: &str, tail: Option<u32>, follow: bool) -> anyhow::Result<()> {
    let req = v1::NodeLogsRequest {
        node: node.to_string(),
        tail,
        follow,
    };
    // A client of the replica that answered lives as long as the stream it carries.
    let mut _answered = None;
    let mut lines = c
        .call(|mut a| {
            _answered = Some(a.clone());
            let req = req.clone();
            async move { a.node_logs(req).await }
        })
        .await?;
    while let Some(l) = lines
        .message()
        .await
        .map_err(|s| anyhow::Error::from(Failure::status(&s)))?
    {
        render::print(&format!("{}\n", l.text))?;
    }
    Ok(())
}
