//! `get RESOURCE [NAME]` and `describe RESOURCE NAME`.

use joule_proto::v1;

use super::Resource;
use crate::connect::Cluster;
use crate::render::{self, Format};
use crate::views::node::{self, Node};

pub async fn get(c: &Cluster, r: Resource, name: Option<&str>, f: Format) -> anyhow::Result<()> {
    match (r, name) {
        (Resource::Nodes, None) => {
            let nodes = c
                .call(|mut a| async move { a.list_nodes(v1::ListNodesRequest {}).await })
                .await?
                .nodes;
            let v: Vec<Node> = nodes.into_iter().map(Node::from).collect();
            render::list(&v, f)
        }
        (Resource::Nodes, Some(n)) => render::one(&Node::from(get_node(c, n).await?), f),
    }
}

pub async fn describe(c: &Cluster, r: Resource, name: &str, f: Format) -> anyhow::Result<()> {
    match r {
        Resource::Nodes => {
            let n = Node::from(get_node(c, name).await?);
            if f.is_table() {
                print!("{}", node::describe(&n));
                Ok(())
            } else {
                render::emit(&n, f)
            }
        }
    }
}

async fn get_node(c: &Cluster, name: &str) -> anyhow::Result<v1::NodeInfo> {
    c.call(|mut a| {
        let name = name.to_string();
        async move { a.get_node(v1::GetNodeRequest { name }).await }
    })
    .await
}
