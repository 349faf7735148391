//! One file per verb. Each takes the parsed flags, calls the API through [`crate::connect`]
//! and prints through [`crate::render`]; none of them formats a table by hand.

pub mod apply;
pub mod bench;
pub mod bill;
pub mod completion;
pub mod config;
pub mod create;
pub mod delete;
pub mod events;
pub mod explain;
pub mod get;
pub mod logs;
pub mod schedule;
pub mod top;
pub mod usage;
pub mod worker;

/// A kind of cluster resource, as kubectl names them (plural, singular or short).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Nodes,
    Models,
    Deployments,
    Placements,
    Events,
    Tenants,
    ApiKeys,
    Usage,
}

impl Resource {
    /// Each kind's names, which `get`, `describe`, `delete` and `explain` take in any case: its
    /// plural first, then its singular, then its short name and any more.
    pub const NAMES: &'static [(Resource, &'static [&'static str])] = &[
        (Self::Nodes, &["nodes", "node", "no"]),
        (Self::Models, &["models", "model", "mo"]),
        (Self::Deployments, &["deployments", "deployment", "deploy"]),
        (Self::Placements, &["placements", "placement", "pl"]),
        (Self::Events, &["events", "event", "ev"]),
        (Self::Tenants, &["tenants", "tenant", "tn"]),
        (Self::ApiKeys, &["apikeys", "apikey", "keys", "key"]),
        (Self::Usage, &["usage"]),
    ];

    /// Its plural name: "nodes".
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("", |(_, names)| names[0])
    }

    /// "nodes (no), models (mo), ...": every kind, with its short name.
    fn known() -> String {
        Self::NAMES
            .iter()
            .map(|(_, names)| match names.get(2) {
                Some(short) => format!("{} ({short})", names[0]),
                None => names[0].to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::str::FromStr for Resource {
    type Err = anyhow::Error;

    /// A kind by any of its names; a typo is answered with the closest kind (a usage error).
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let lower = s.to_ascii_lowercase();
        let kind_of = |name: &str| {
            Self::NAMES
                .iter()
                .find(|(_, names)| names.contains(&name))
                .map(|(r, _)| *r)
        };
        if let Some(r) = kind_of(lower.as_str()) {
            return Ok(r);
        }
        let all = Self::NAMES
            .iter()
            .flat_map(|(_, names)| names.iter().copied());
        Err(crate::exit::usage(
            match crate::closest::closest(&lower, all).and_then(kind_of) {
                Some(r) => format!("unknown resource type {s:?}; did you mean {:?}?", r.name()),
                None => format!("unknown resource type {s:?}; known: {}", Self::known()),
            },
        ))
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

    #[test]
    fn a_typo_gets_the_closest_kind_and_a_usage_exit_code() {
        let e = "nods".parse::<Resource>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown resource type \"nods\"; did you mean \"nodes\"?"
        );
        assert_eq!(crate::exit::code(&e), crate::exit::Code::Usage);
        for (typo, want) in [
            ("deploymnets", "deployments"),
            ("tenat", "tenants"),
            ("Modles", "models"),
            ("apikys", "apikeys"),
            ("placment", "placements"),
            ("nod", "nodes"),
        ] {
            let e = typo.parse::<Resource>().unwrap_err().to_string();
            assert!(
                e.ends_with(&format!("did you mean {want:?}?")),
                "{typo}: {e}"
            );
        }
        let e = "pods".parse::<Resource>().unwrap_err().to_string();
        assert!(
            e.contains("known: nodes (no), models (mo), deployments (deploy)")
                && e.ends_with("apikeys (keys), usage"),
            "{e}"
        );
        for (r, names) in Resource::NAMES {
            assert_eq!(r.name(), names[0]);
            for n in *names {
                assert_eq!(n.parse::<Resource>().unwrap(), *r, "{n}");
            }
        }
    }
}
