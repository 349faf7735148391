//! `top nodes` and `top deployments`: tokens/s, watts, tokens per joule, KV use and queues
//! from the workers' latest heartbeats (the leader answers; any replica passes the call on).

use joule_proto::v1;

use crate::args::TopWhat;
use crate::connect::Cluster;
use crate::render::{self, Format};
use crate::views::top::{DeploymentTop, NodeTop};

pub async fn top(c: &Cluster, what: &TopWhat, f: Format) -> anyhow::Result<()> {
    let r = c
        .call(|mut a| async move { a.top(v1::TopRequest {}).await })
        .await?;
    match what {
        TopWhat::Nodes => {
            let v: Vec<NodeTop> = r.nodes.into_iter().map(NodeTop::from).collect();
            render::list(&v, f)
        }
        TopWhat::Deployments => {
            let v: Vec<DeploymentTop> =
                r.deployments.into_iter().map(DeploymentTop::from).collect();
            render::list(&v, f)
        }
    }
}
