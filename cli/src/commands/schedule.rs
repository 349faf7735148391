//! `cordon NODE`, `uncordon NODE`, `drain NODE`: a node's schedule, replicated by the cluster.

use joule_proto::v1;

use crate::connect::Cluster;
use crate::render::{self, Format};
use crate::views::node::Node;

pub async fn set(c: &Cluster, node: &str, schedule: &str, f: Format) -> anyhow::Result<()> {
    let n = c
        .call(|mut a| {
            let r = v1::SetNodeScheduleRequest {
                name: node.to_string(),
                schedule: schedule.to_string(),
            };
            async move { a.set_node_schedule(r).await }
        })
        .await?;
    if !f.is_table() {
        return render::emit(&Node::from(n), f);
    }
    let verb = match n.schedule.as_str() {
        "Cordoned" => "cordoned",
        "Draining" => "draining",
        _ => "uncordoned",
    };
    println!("node/{} {verb}", n.name);
    Ok(())
}
