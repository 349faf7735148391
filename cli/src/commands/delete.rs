//! `delete model|deployment NAME`.

use joule_proto::v1;

use super::Resource;
use crate::connect::Cluster;

pub async fn delete(c: &Cluster, r: Resource, name: &str) -> anyhow::Result<()> {
    let n = name.to_string();
    match r {
        Resource::Models => {
            c.call(|mut a| {
                let name = n.clone();
                async move { a.delete_model(v1::DeleteModelRequest { name }).await }
            })
            .await?;
            println!("model/{name} deleted");
        }
        Resource::Deployments => {
            c.call(|mut a| {
                let name = n.clone();
                async move {
                    a.delete_deployment(v1::DeleteDeploymentRequest { name })
                        .await
                }
            })
            .await?;
            println!("deployment/{name} deleted");
        }
        Resource::Nodes | Resource::Placements => anyhow::bail!(
            "delete takes a model or a deployment (a node leaves by itself; placements follow \
             their deployment)"
        ),
    }
    Ok(())
}
