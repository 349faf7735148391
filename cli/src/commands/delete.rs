//! `delete model|deployment|tenant NAME` and `delete apikey ID --tenant NAME`.

use joule_proto::v1;

use super::Resource;
use crate::connect::Cluster;
use crate::exit;
use crate::render;

pub async fn delete(
    c: &Cluster,
    r: Resource,
    name: &str,
    tenant: Option<&str>,
) -> anyhow::Result<()> {
    let n = name.to_string();
    if tenant.is_some() && r != Resource::ApiKeys {
        return Err(exit::usage(
            "--tenant is only for `delete apikey ID --tenant NAME`",
        ));
    }
    let done = match r {
        Resource::Models => {
            c.call(|mut a| {
                let name = n.clone();
                async move { a.delete_model(v1::DeleteModelRequest { name }).await }
            })
            .await?;
            format!("model/{name} deleted\n")
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
            format!("deployment/{name} deleted\n")
        }
        Resource::Tenants => {
            c.call(|mut a| {
                let name = n.clone();
                async move { a.delete_tenant(v1::DeleteTenantRequest { name }).await }
            })
            .await?;
            format!("tenant/{name} deleted\n")
        }
        Resource::ApiKeys => {
            let Some(tenant) = tenant else {
                return Err(exit::usage(format!(
                    "delete apikey {name} needs --tenant NAME: keys belong to a tenant"
                )));
            };
            c.call(|mut a| {
                let req = v1::DeleteApiKeyRequest {
                    tenant: tenant.to_string(),
                    id: n.clone(),
                };
                async move { a.delete_api_key(req).await }
            })
            .await?;
            format!("apikey/{name} deleted (tenant {tenant})\n")
        }
        Resource::Nodes | Resource::Placements | Resource::Events | Resource::Usage => {
            return Err(exit::usage(
                "delete takes a model, a deployment, a tenant or an apikey (a node leaves by \
                 itself; placements follow their deployment; usage stays on record)",
            ));
        }
    };
    render::print(&done)
}
