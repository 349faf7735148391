//! `get RESOURCE [NAME] [-l SELECTOR] [-w]` and `describe RESOURCE NAME`: each resource is
//! fetched as its view rows by one function, which `get` prints once or, with `-w`, polls
//! ([`watch`]); `-l` selects nodes by their labels ([`selector`]).

mod selector;
pub mod watch;

pub use selector::Selector;

use std::time::Duration;

use joule_client::calendar;
use joule_proto::v1;

use super::Resource;
use crate::args::GetFilters;
use crate::connect::Cluster;
use crate::exit;
use crate::render::{self, Format, Render};
use crate::views::apikey::ApiKey;
use crate::views::deployment::{self, Deployment};
use crate::views::model::{self, Model};
use crate::views::node::{self, Node};
use crate::views::placement::Placement;
use crate::views::tenant::{self, Tenant};
use crate::views::usage::Usage;

/// How `get` prints: the format, and with `-w` how often it polls.
#[derive(Clone, Copy)]
struct How {
    f: Format,
    watch: Option<Duration>,
}

/// The flags of `get` that do not fit `r` (and `NAME`), as a usage error.
fn check(r: Resource, name: Option<&str>, filters: &GetFilters, f: Format) -> anyhow::Result<()> {
    if f == Format::Csv && r != Resource::Usage {
        return Err(exit::usage(render::CSV_ONLY));
    }
    if f == Format::Csv && filters.watch {
        return Err(exit::usage(
            "-w prints a table, wide, JSON or YAML, not CSV",
        ));
    }
    if (filters.from.is_some() || filters.to.is_some()) && r != Resource::Usage {
        return Err(exit::usage("--from and --to are only for `get usage`"));
    }
    if let Some(sel) = &filters.selector {
        if r != Resource::Nodes {
            let why = if r == Resource::Deployments {
                " (a deployment's node selector shows in `get deployments -o wide`)"
            } else {
                ""
            };
            return Err(exit::usage(format!(
                "-l {sel}: only nodes have labels to select by; {} have none{why}",
                r.name()
            )));
        }
        if let Some(n) = name {
            return Err(exit::usage(format!(
                "get nodes {n} -l {sel}: give a NAME or a selector, not both"
            )));
        }
    }
    Ok(())
}

pub async fn get(
    c: &Cluster,
    r: Resource,
    name: Option<&str>,
    filters: &GetFilters,
    f: Format,
) -> anyhow::Result<()> {
    check(r, name, filters, f)?;
    let how = How {
        f,
        watch: filters.watch.then_some(filters.watch_interval),
    };
    let named = name.is_some();
    match r {
        Resource::Nodes => {
            let sel = filters.selector.as_ref();
            show(how, named, || nodes(c, name, sel)).await
        }
        Resource::Models => show(how, named, || models(c, name)).await,
        Resource::Deployments => show(how, named, || deployments(c, name)).await,
        // NAME filters placements by deployment: always a list.
        Resource::Placements => {
            let node = filters.node.as_deref();
            show(how, false, || placements(c, name, node)).await
        }
        // NAME filters events by object (`node/w1`, or a bare name): always a list.
        Resource::Events => show(how, false, || super::events::fetch(c, name)).await,
        Resource::Tenants => show(how, named, || tenants(c, name)).await,
        Resource::ApiKeys => {
            let Some(t) = filters.tenant.as_deref() else {
                return Err(exit::usage(
                    "get apikeys needs --tenant NAME: keys belong to a tenant",
                ));
            };
            show(how, named, || api_keys(c, t, name)).await
        }
        Resource::Usage => {
            let tenant = match (filters.tenant.as_deref(), name) {
                (Some(a), Some(b)) if a != b => {
                    return Err(exit::usage(format!(
                        "get usage {b} --tenant {a}: name one tenant"
                    )));
                }
                (t, n) => t.or(n),
            };
            let (from, to) = (filters.from.as_deref(), filters.to.as_deref());
            if how.watch.is_none() {
                // Usage prints CSV too: its own verb file prints it.
                return super::usage::get(c, tenant, from, to, f).await;
            }
            let days = super::usage::range(from, to, calendar::today())?;
            show(how, false, || usage(c, tenant, days)).await
        }
    }
}

/// Prints what `fetch` lists once (a `named` object as itself), or watches it with `-w`.
async fn show<T, F, Fut>(how: How, named: bool, mut fetch: F) -> anyhow::Result<()>
where
    T: Render + watch::Keyed,
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<T>>>,
{
    if let Some(every) = how.watch {
        return watch::watch(how.f, every, fetch).await;
    }
    let v = fetch().await?;
    match (named, v.as_slice()) {
        (true, [one]) => render::one(one, how.f),
        _ => render::list(&v, how.f),
    }
}

async fn nodes(
    c: &Cluster,
    name: Option<&str>,
    sel: Option<&Selector>,
) -> anyhow::Result<Vec<Node>> {
    let v = match name {
        Some(n) => vec![get_node(c, n).await?],
        None => {
            c.call(|mut a| async move { a.list_nodes(v1::ListNodesRequest {}).await })
                .await?
                .nodes
        }
    };
    Ok(v.into_iter()
        .map(Node::from)
        .filter(|n| sel.is_none_or(|s| s.matches(&n.labels)))
        .collect())
}

async fn models(c: &Cluster, name: Option<&str>) -> anyhow::Result<Vec<Model>> {
    let v = match name {
        Some(n) => vec![get_model(c, n).await?],
        None => {
            c.call(|mut a| async move { a.list_models(v1::ListModelsRequest {}).await })
                .await?
                .models
        }
    };
    Ok(v.into_iter().map(Model::from).collect())
}

async fn deployments(c: &Cluster, name: Option<&str>) -> anyhow::Result<Vec<Deployment>> {
    let v = match name {
        Some(n) => vec![get_deployment(c, n).await?],
        None => {
            c.call(|mut a| async move { a.list_deployments(v1::ListDeploymentsRequest {}).await })
                .await?
                .deployments
        }
    };
    Ok(v.into_iter().map(Deployment::from).collect())
}

async fn placements(
    c: &Cluster,
    deployment: Option<&str>,
    node: Option<&str>,
) -> anyhow::Result<Vec<Placement>> {
    let req = v1::ListPlacementsRequest {
        deployment: deployment.unwrap_or_default().to_string(),
        node: node.unwrap_or_default().to_string(),
    };
    let v = c
        .call(|mut a| {
            let req = req.clone();
            async move { a.list_placements(req).await }
        })
        .await?
        .placements;
    Ok(v.into_iter().map(Placement::from).collect())
}

async fn tenants(c: &Cluster, name: Option<&str>) -> anyhow::Result<Vec<Tenant>> {
    let v = match name {
        Some(n) => vec![get_tenant(c, n).await?],
        None => {
            c.call(|mut a| async move { a.list_tenants(v1::ListTenantsRequest {}).await })
                .await?
                .tenants
        }
    };
    Ok(v.into_iter().map(Tenant::from).collect())
}

/// The keys of `tenant`, or the one named `id`.
async fn api_keys(c: &Cluster, tenant: &str, id: Option<&str>) -> anyhow::Result<Vec<ApiKey>> {
    let req = v1::ListApiKeysRequest {
        tenant: tenant.to_string(),
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
    let Some(id) = id else { return Ok(v) };
    match v.into_iter().find(|k| k.id == id) {
        Some(k) => Ok(vec![k]),
        None => Err(exit::not_found(format!(
            "NotFound: tenant {tenant:?} has no API key {id:?}"
        ))),
    }
}

async fn usage(c: &Cluster, tenant: Option<&str>, days: (u32, u32)) -> anyhow::Result<Vec<Usage>> {
    Ok(super::usage::fetch(c, tenant.unwrap_or_default(), days)
        .await?
        .into_iter()
        .map(Usage::from)
        .collect())
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
            return Err(exit::usage(
                "describe a deployment or a node to see its placements",
            ));
        }
        Resource::Events => {
            return Err(exit::usage("list events with `get events [OBJECT]`"));
        }
        Resource::ApiKeys => {
            return Err(exit::usage(
                "list a tenant's keys with `get apikeys --tenant NAME`",
            ));
        }
        Resource::Usage => {
            return Err(exit::usage(
                "see usage with `get usage` (or a bill with `bill`)",
            ));
        }
    };
    render::print(&text)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn filters() -> GetFilters {
        GetFilters {
            watch_interval: Duration::from_secs(2),
            ..Default::default()
        }
    }

    #[test]
    fn flags_that_do_not_fit_the_kind_are_usage_errors() {
        let mut sel = filters();
        sel.selector = Some(Selector::parse("gpu=h100").unwrap());
        assert!(check(Resource::Nodes, None, &sel, Format::Table).is_ok());
        let e = check(Resource::Deployments, None, &sel, Format::Table).unwrap_err();
        assert_eq!(exit::code(&e), exit::Code::Usage);
        let m = e.to_string();
        assert!(
            m.contains("-l gpu=h100")
                && m.contains("deployments have none")
                && m.contains("-o wide"),
            "{m}"
        );
        let m = check(Resource::Tenants, None, &sel, Format::Table)
            .unwrap_err()
            .to_string();
        assert!(m.ends_with("tenants have none"), "{m}");
        let m = check(Resource::Nodes, Some("gpu-1"), &sel, Format::Table)
            .unwrap_err()
            .to_string();
        assert!(m.contains("not both"), "{m}");
        let mut w = filters();
        w.watch = true;
        assert!(check(Resource::Usage, None, &w, Format::Csv).is_err());
        assert!(check(Resource::Usage, None, &filters(), Format::Csv).is_ok());
        let e = check(Resource::Nodes, None, &filters(), Format::Csv).unwrap_err();
        assert_eq!(exit::code(&e), exit::Code::Usage);
        let mut from = filters();
        from.from = Some("2026-12-01".into());
        assert!(check(Resource::Nodes, None, &from, Format::Table).is_err());
    }
}
