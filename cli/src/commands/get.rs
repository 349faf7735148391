//! `get RESOURCE [NAME]` and `describe RESOURCE NAME`.

use joule_proto::v1;

use super::Resource;
use crate::args::GetFilters;
use crate::connect::Cluster;
use crate::render::{self, Format};
use crate::views::apikey::ApiKey;
use crate::views::deployment::{self, Deployment};
use crate::views::model::{self, Model};
use crate::views::node::{self, Node};
use crate::views::placement::Placement;
use crate::views::tenant::{self, Tenant};

pub async fn get(
    c: &Cluster,
    r: Resource,
    name: Option<&str>,
    filters: &GetFilters,
    f: Format,
) -> anyhow::Result<()> {
    if f == Format::Csv && r != Resource::Usage {
        anyhow::bail!(render::CSV_ONLY);
    }
    if (filters.from.is_some() || filters.to.is_some()) && r != Resource::Usage {
        anyhow::bail!("--from and --to are only for `get usage`");
    }
    let node_filter = filters.node.as_deref();
    match (r, name) {
        (Resource::Nodes, None) => {
            let v = c
                .call(|mut a| async move { a.list_nodes(v1::ListNodesRequest {}).await })
                .await?
                .nodes;
            render::list(&v.into_iter().map(Node::from).collect::<Vec<_>>(), f)
        }
        (Resource::Nodes, Some(n)) => render::one(&Node::from(get_node(c, n).await?), f),
        (Resource::Models, None) => {
            let v = c
                .call(|mut a| async move { a.list_models(v1::ListModelsRequest {}).await })
                .await?
                .models;
            render::list(&v.into_iter().map(Model::from).collect::<Vec<_>>(), f)
        }
        (Resource::Models, Some(n)) => render::one(&Model::from(get_model(c, n).await?), f),
        (Resource::Deployments, None) => {
            let v = c
                .call(
                    |mut a| async move { a.list_deployments(v1::ListDeploymentsRequest {}).await },
                )
                .await?
                .deployments;
            render::list(&v.into_iter().map(Deployment::from).collect::<Vec<_>>(), f)
        }
        (Resource::Deployments, Some(n)) => {
            render::one(&Deployment::from(get_deployment(c, n).await?), f)
        }
        (Resource::Placements, name) => {
            let req = v1::ListPlacementsRequest {
                deployment: name.unwrap_or_default().to_string(),
                node: node_filter.unwrap_or_default().to_string(),
            };
            let v = c
                .call(|mut a| {
                    let req = req.clone();
                    async move { a.list_placements(req).await }
                })
                .await?
                .placements;
            render::list(&v.into_iter().map(Placement::from).collect::<Vec<_>>(), f)
        }
        (Resource::Tenants, None) => {
            let v = c
                .call(|mut a| async move { a.list_tenants(v1::ListTenantsRequest {}).await })
                .await?
                .tenants;
            render::list(&v.into_iter().map(Tenant::from).collect::<Vec<_>>(), f)
        }
        (Resource::Tenants, Some(n)) => render::one(&Tenant::from(get_tenant(c, n).await?), f),
        (Resource::ApiKeys, id) => {
            let Some(t) = filters.tenant.as_deref() else {
                anyhow::bail!("get apikeys needs --tenant NAME: keys belong to a tenant");
            };
            let req = v1::ListApiKeysRequest {
                tenant: t.to_string(),
            };
            let v: Vec<ApiKey> = c
                .call(|mut a| {
                    let req = req.clone();
                    async move { a.list_api_keys(req).await }
                })
                .await?
                .keys
                .into_iter()
                .map(ApiKey::from)
                .collect();
            match id {
                None => render::list(&v, f),
                Some(id) => match v.iter().find(|k| k.id == id) {
                    Some(k) => render::one(k, f),
                    None => anyhow::bail!("NotFound: tenant {t:?} has no API key {id:?}"),
                },
            }
        }
        (Resource::Usage, name) => {
            let tenant = match (filters.tenant.as_deref(), name) {
                (Some(a), Some(b)) if a != b => {
                    anyhow::bail!("get usage {b} --tenant {a}: name one tenant")
                }
                (t, n) => t.or(n),
            };
            super::usage::get(c, tenant, filters.from.as_deref(), filters.to.as_deref(), f).await
        }
    }
}

pub async fn describe(c: &Cluster, r: Resource, name: &str, f: Format) -> anyhow::Result<()> {
    let text = match r {
        Resource::Nodes => {
            let n = Node::from(get_node(c, name).await?);
            if !f.is_table() {
                return render::emit(&n, f);
            }
            node::describe(&n)
        }
        Resource::Models => {
            let m = Model::from(get_model(c, name).await?);
            if !f.is_table() {
                return render::emit(&m, f);
            }
            model::describe(&m)
        }
        Resource::Deployments => {
            let d = Deployment::from(get_deployment(c, name).await?);
            if !f.is_table() {
                return render::emit(&d, f);
            }
            deployment::describe(&d)
        }
        Resource::Tenants => {
            let t = Tenant::from(get_tenant(c, name).await?);
            if !f.is_table() {
                return render::emit(&t, f);
            }
            tenant::describe(&t)
        }
        Resource::Placements => {
            anyhow::bail!("describe a deployment or a node to see its placements")
        }
        Resource::ApiKeys => anyhow::bail!("list a tenant's keys with `get apikeys --tenant NAME`"),
        Resource::Usage => anyhow::bail!("see usage with `get usage` (or a bill with `bill`)"),
    };
    print!("{text}");
    Ok(())
}

async fn get_node(c: &Cluster, name: &str) -> anyhow::Result<v1::NodeInfo> {
    c.call(|mut a| {
        let name = name.to_string();
        async move { a.get_node(v1::GetNodeRequest { name }).await }
    })
    .await
}

async fn get_model(c: &Cluster, name: &str) -> anyhow::Result<v1::ModelInfo> {
    c.call(|mut a| {
        let name = name.to_string();
        async move { a.get_model(v1::GetModelRequest { name }).await }
    })
    .await
}

async fn get_tenant(c: &Cluster, name: &str) -> anyhow::Result<v1::TenantInfo> {
    c.call(|mut a| {
        let name = name.to_string();
        async move { a.get_tenant(v1::GetTenantRequest { name }).await }
    })
    .await
}

async fn get_deployment(c: &Cluster, name: &str) -> anyhow::Result<v1::DeploymentInfo> {
    c.call(|mut a| {
        let name = name.to_string();
        async move { a.get_deployment(v1::GetDeploymentRequest { name }).await }
    })
    .await
}
