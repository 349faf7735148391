//! One file per verb. Each takes the parsed flags, calls the API through [`crate::connect`]
//! and prints through [`crate::render`]; none of them formats a table by hand.

pub mod get;
pub mod schedule;
pub mod worker;

/// A kind of cluster resource, as kubectl names them (plural, singular or short).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Nodes,
}

impl std::str::FromStr for Resource {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "nodes" | "node" | "no" => Ok(Self::Nodes),
            other => anyhow::bail!(
                "the server doesn't have a resource type {other:?}; known: nodes (no)"
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
        let e = "pods".parse::<Resource>().unwrap_err().to_string();
        assert!(e.contains("\"pods\"") && e.contains("nodes"), "{e}");
    }
}
