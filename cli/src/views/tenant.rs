//! A tenant (who uses the cluster: weight, limits, monthly quota, allowed deployments):
//! `get tenants`, `describe tenant`.

use joule_proto::v1;
use serde::Serialize;

use crate::render::{Render, age};

#[derive(Debug, Serialize)]
pub struct Tenant {
    pub name: String,
    pub weight: f64,
    /// Empty: every deployment.
    pub deployments: Vec<String>,
    pub requests_per_minute: u32,
    pub tokens_per_minute: u64,
    pub max_concurrent: u32,
    pub tokens_per_month: u64,
    pub joules_per_month: f64,
    pub api_keys: u32,
    pub created_at_ms: i64,
}

impl From<v1::TenantInfo> for Tenant {
    fn from(t: v1::TenantInfo) -> Self {
        let s = t.spec.unwrap_or_default();
        Self {
            name: s.name,
            // 0 means the default weight, 1.
            weight: if s.weight > 0.0 { s.weight } else { 1.0 },
            deployments: s.deployments,
            requests_per_minute: s.requests_per_minute,
            tokens_per_minute: s.tokens_per_minute,
            max_concurrent: s.max_concurrent,
            tokens_per_month: s.tokens_per_month,
            joules_per_month: s.joules_per_month,
            api_keys: t.api_keys,
            created_at_ms: t.created_at_ms,
        }
    }
}

/// A limit or quota: `-` for 0 (none).
fn limit(v: f64) -> String {
    if v == 0.0 { "-".into() } else { v.to_string() }
}

/// A count that may exceed what an f64 holds exactly: `-` for 0.
fn count(v: u64) -> String {
    if v == 0 { "-".into() } else { v.to_string() }
}

fn deployments(d: &[String]) -> String {
    if d.is_empty() {
        "all".into()
    } else {
        d.join(",")
    }
}

impl Render for Tenant {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec![
            "NAME",
            "WEIGHT",
            "RPM",
            "TPM",
            "CONCURRENT",
            "TOKENS/MONTH",
            "JOULES/MONTH",
            "DEPLOYMENTS",
            "KEYS",
            "AGE",
        ]
    }

    fn row(&self, _wide: bool) -> Vec<String> {
        vec![
            self.name.clone(),
            self.weight.to_string(),
            limit(f64::from(self.requests_per_minute)),
            count(self.tokens_per_minute),
            limit(f64::from(self.max_concurrent)),
            count(self.tokens_per_month),
            limit(self.joules_per_month),
            deployments(&self.deployments),
            self.api_keys.to_string(),
            age(self.created_at_ms, super::now_ms()),
        ]
    }
}

pub fn describe(t: &Tenant) -> String {
    let mut s = String::new();
    let mut kv = |k: &str, v: String| s.push_str(&format!("{:<14}{v}\n", format!("{k}:")));
    let none = |v: String| if v == "-" { "unlimited".to_string() } else { v };
    kv("Name", t.name.clone());
    kv("Weight", t.weight.to_string());
    kv(
        "Deployments",
        if t.deployments.is_empty() {
            "all".into()
        } else {
            t.deployments.join(", ")
        },
    );
    kv(
        "Limits",
        format!(
            "{} requests/min, {} tokens/min, {} concurrent",
            none(limit(f64::from(t.requests_per_minute))),
            none(count(t.tokens_per_minute)),
            none(limit(f64::from(t.max_concurrent))),
        ),
    );
    kv(
        "Quota",
        format!(
            "{} tokens/month, {} joules/month{}",
            none(count(t.tokens_per_month)),
            none(limit(t.joules_per_month)),
            if t.joules_per_month > 0.0 {
                format!(" ({:.3} kWh)", t.joules_per_month / 3.6e6)
            } else {
                String::new()
            },
        ),
    );
    kv("API keys", t.api_keys.to_string());
    kv("Age", age(t.created_at_ms, super::now_ms()));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_limits_show_as_dashes() {
        let t = Tenant::from(v1::TenantInfo {
            spec: Some(v1::TenantSpec {
                name: "acme".into(),
                weight: 0.0,
                requests_per_minute: 600,
                joules_per_month: 3.6e6,
                ..Default::default()
            }),
            api_keys: 2,
            ..Default::default()
        });
        assert_eq!(
            t.row(false),
            [
                "acme", "1", "600", "-", "-", "-", "3600000", "all", "2", "-"
            ]
        );
        let d = describe(&t);
        assert!(d.contains("600 requests/min, unlimited tokens/min"), "{d}");
        assert!(d.contains("(1.000 kWh)"), "{d}");
    }
}
