//! One file per verb. Each takes the parsed flags, calls the API through [`crate::connect`]
//! and prints through [`crate::render`]; none of them formats a table by hand.

pub mod apply;
pub mod bill;
pub mod create;
pub mod delete;
pub mod get;
pub mod schedule;
pub mod usage;
pub mod worker;

/// A kind of cluster resource, as kubectl names them (plural, singular or short).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Nodes,
    Models,
    Deployments,
    Placements,
    Tenants,
    ApiKeys,
    Usage,
}

impl std::str::FromStr for Resource {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "nodes" | "node" | "no" => Ok(Self::Nodes),
            "models" | "model" | "mo" => Ok(Self::Models),
            "deployments" | "deployment" | "deploy" => Ok(Self::Deployments),
            "placements" | "placement" | "pl" => Ok(Self::Placements),
            "tenants" | "tenant" | "tn" => Ok(Self::Tenants),
            "apikeys" | "apikey" | "keys" | "key" => Ok(Self::ApiKeys),
            "usage" => Ok(Self::Usage),
            other => anyhow::bail!(
                "the server doesn't have a resource type {other:?}; known: nodes (no), models \
                 (mo), deployments (deploy), placements (pl), tenants (tn), apikeys (keys), usage"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_follow_kubectl() {
        for n in ["nodes", "node", "no", "NODES"] {
            assert_eq!(n.parse::<Resource>().unwrap(), Resource::Nodes);
        }
        assert_eq!("deploy".parse::<Resource>().unwrap(), Resource::Deployments);
        assert_eq!("pl".parse::<Resource>().unwrap(), Resource::Placements);
        assert_eq!("mo".parse::<Resource>().unwrap(), Resource::Models);
        for n in ["tenants", "tenant", "tn"] {
            assert_eq!(n.parse::<Resource>().unwrap(), Resource::Tenants);
        }
        for n in ["apikeys", "apikey", "keys"] {
            assert_eq!(n.parse::<Resource>().unwrap(), Resource::ApiKeys);
        }
        assert_eq!("usage".parse::<Resource>().unwrap(), Resource::Usage);
        let e = "pods".parse::<Resource>().unwrap_err().to_string();
        assert!(e.contains("\"pods\"") && e.contains("nodes"), "{e}");
    }
}
