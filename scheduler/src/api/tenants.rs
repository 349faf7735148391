//! The admin API's tenants, API keys and usage: requests checked and turned into state, state
//! turned into replies. Bad input gets INVALID_ARGUMENT naming the field; an unknown tenant,
//! deployment or key gets NOT_FOUND naming what exists. It never sees an API key, only the
//! SHA-256 the caller computed, and never returns a hash.

use joule_proto::internal::v1 as pb;
use joule_proto::names;
use joule_proto::v1;

use super::workloads::known;
use crate::error::{Error, Result};
use crate::state::tenants::{MAX_KEY_NAME, MAX_WEIGHT, MIN_WEIGHT};

/// The most requests per minute a limit may say (above it, say none: 0).
pub const MAX_RPM: u32 = 10_000_000;
pub const MAX_TPM: u64 = 1_000_000_000_000;
pub const MAX_CONCURRENT: u32 = 100_000;
pub const MAX_MONTHLY: u64 = 1_000_000_000_000_000;
/// The largest monthly energy quota, joules (1e9 kWh).
pub const MAX_MONTHLY_J: f64 = 3.6e15;
/// What an API key id looks like: the key's first characters.
pub const KEY_PREFIX: &str = "jk-";
pub const KEY_ID_LEN: usize = 11;

fn bad(field: &str, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{field}: {e}"))
}

/// A tenant spec as the state's tenant; refuses bad fields naming them.
pub fn tenant(spec: v1::TenantSpec, st: &pb::ClusterState) -> Result<pb::Tenant> {
    names::label("tenant", &spec.name).map_err(|e| bad("metadata.name", e))?;
    if !(spec.weight == 0.0 || (MIN_WEIGHT..=MAX_WEIGHT).contains(&spec.weight)) {
        return Err(bad(
            "spec.weight",
            format!("{} must be from {MIN_WEIGHT} to {MAX_WEIGHT}", spec.weight),
        ));
    }
    let limit = |field: &str, v: u64, max: u64| {
        if v > max {
            Err(bad(
                field,
                format!("{v} is more than {max} (0 means no limit)"),
            ))
        } else {
            Ok(())
        }
    };
    limit(
        "spec.limits.requestsPerMinute",
        spec.requests_per_minute.into(),
        MAX_RPM.into(),
    )?;
    limit(
        "spec.limits.tokensPerMinute",
        spec.tokens_per_minute,
        MAX_TPM,
    )?;
    limit(
        "spec.limits.maxConcurrent",
        spec.max_concurrent.into(),
        MAX_CONCURRENT.into(),
    )?;
    limit(
        "spec.quota.tokensPerMonth",
        spec.tokens_per_month,
        MAX_MONTHLY,
    )?;
    let j = spec.joules_per_month;
    if !(j == 0.0 || (1.0..=MAX_MONTHLY_J).contains(&j)) {
        return Err(bad(
            "spec.quota.joulesPerMonth (or kwhPerMonth)",
            format!("{j} J must be 0 (no quota) or from 1 J to {MAX_MONTHLY_J} J"),
        ));
    }
    for d in &spec.deployments {
        if !st.deployments.contains_key(d) {
            return Err(Error::NotFound(format!(
                "spec.deployments: tenant {:?} names deployment {d:?}, which the cluster does \
                 not have; deployments: {}",
                spec.name,
                known(st.deployments.keys())
            )));
        }
    }
    Ok(pb::Tenant {
        name: spec.name,
        quota: Some(pb::Quota {
            requests_per_minute: spec.requests_per_minute,
            tokens_per_minute: spec.tokens_per_minute,
            tokens_per_month: spec.tokens_per_month,
            max_concurrent: spec.max_concurrent,
            joules_per_month: j.round() as u64,
        }),
        deployments: spec.deployments,
        weight: spec.weight,
        ..Default::default()
    })
}

pub fn tenant_info(t: &pb::Tenant) -> v1::TenantInfo {
    let q = t.quota.unwrap_or_default();
    v1::TenantInfo {
        spec: Some(v1::TenantSpec {
            name: t.name.clone(),
            weight: if t.weight == 0.0 { 1.0 } else { t.weight },
            deployments: t.deployments.clone(),
            requests_per_minute: q.requests_per_minute,
            tokens_per_minute: q.tokens_per_minute,
            max_concurrent: q.max_concurrent,
            tokens_per_month: q.tokens_per_month,
            joules_per_month: q.joules_per_month as f64,
        }),
        created_at_ms: t.created_at_ms,
        api_keys: t.api_keys.len() as u32,
    }
}

pub fn find_tenant<'a>(st: &'a pb::ClusterState, name: &str) -> Result<&'a pb::Tenant> {
    st.tenants.get(name).ok_or_else(|| {
        Error::NotFound(format!(
            "no tenant named {name:?}; tenants: {}",
            known(st.tenants.keys())
        ))
    })
}

/// A new key's record from what the caller sent (never the key itself).
pub fn api_key(r: &v1::CreateApiKeyRequest, now_ms: i64) -> Result<pb::ApiKey> {
    let id_ok = r.id.len() == KEY_ID_LEN
        && r.id.starts_with(KEY_PREFIX)
        && r.id[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric());
    if !id_ok {
        return Err(bad(
            "id",
            format!(
                "{:?} is not an API key id: {KEY_PREFIX} and 8 letters or digits, the key's \
                 first {KEY_ID_LEN} characters",
                r.id
            ),
        ));
    }
    names::sha256("the key's SHA-256", &r.sha256).map_err(|e| bad("sha256", e))?;
    if r.name.chars().count() > MAX_KEY_NAME || r.name.chars().any(char::is_control) {
        return Err(bad(
            "name",
            format!("at most {MAX_KEY_NAME} printable characters"),
        ));
    }
    if r.expires_at_ms != 0 && r.expires_at_ms <= now_ms {
        return Err(bad("expires_at_ms", "already past"));
    }
    Ok(pb::ApiKey {
        id: r.id.clone(),
        sha256: r.sha256.clone(),
        name: r.name.clone(),
        expires_at_ms: r.expires_at_ms,
        ..Default::default()
    })
}

pub fn key_info(tenant: &str, k: &pb::ApiKey) -> v1::ApiKeyInfo {
    v1::ApiKeyInfo {
        tenant: tenant.to_string(),
        id: k.id.clone(),
        name: k.name.clone(),
        created_at_ms: k.created_at_ms,
        expires_at_ms: k.expires_at_ms,
        last_used_ms: k.last_used_ms,
    }
}

/// The usage rows asked for; `today` is the default end.
pub fn usage(
    st: &pb::ClusterState,
    r: &v1::GetUsageRequest,
    today: u32,
) -> Result<Vec<v1::UsageRow>> {
    let to = if r.to_day == 0 { today } else { r.to_day };
    if r.from_day > to {
        return Err(bad(
            "from_day",
            format!("day {} is after to_day {to}", r.from_day),
        ));
    }
    let tenant = (!r.tenant.is_empty()).then_some(r.tenant.as_str());
    if let Some(t) = tenant {
        names::label("tenant", t).map_err(|e| bad("tenant", e))?;
    }
    Ok(
        crate::state::tenants::usage_records(st, tenant, r.from_day, to)
            .map(|u| {
                let c = u.counters.unwrap_or_default();
                v1::UsageRow {
                    tenant: u.tenant.clone(),
                    day: u.day,
                    model: u.model.clone(),
                    requests: c.requests,
                    prompt_tokens: c.prompt_tokens,
                    cached_prompt_tokens: c.cached_prompt_tokens,
                    completion_tokens: c.output_tokens,
                    measured_joules: c.measured_mj as f64 / 1000.0,
                    estimated_joules: c.estimated_mj as f64 / 1000.0,
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> v1::TenantSpec {
        v1::TenantSpec {
            name: "acme".into(),
            weight: 3.0,
            requests_per_minute: 60,
            ..Default::default()
        }
    }

    #[test]
    fn bad_tenant_specs_are_refused_naming_the_field() {
        let st = pb::ClusterState::default();
        let t = tenant(spec(), &st).unwrap();
        assert_eq!((t.weight, t.quota.unwrap().requests_per_minute), (3.0, 60));
        for (s, field) in [
            (
                v1::TenantSpec {
                    name: "Acme Corp".into(),
                    ..spec()
                },
                "metadata.name",
            ),
            (
                v1::TenantSpec {
                    weight: -1.0,
                    ..spec()
                },
                "spec.weight",
            ),
            (
                v1::TenantSpec {
                    weight: f64::NAN,
                    ..spec()
                },
                "spec.weight",
            ),
            (
                v1::TenantSpec {
                    requests_per_minute: MAX_RPM + 1,
                    ..spec()
                },
                "spec.limits.requestsPerMinute",
            ),
            (
                v1::TenantSpec {
                    joules_per_month: f64::INFINITY,
                    ..spec()
                },
                "spec.quota.joulesPerMonth",
            ),
        ] {
            let e = tenant(s, &st).unwrap_err().to_string();
            assert!(e.starts_with(field), "{e}");
        }
        let e = tenant(
            v1::TenantSpec {
                deployments: vec!["nope".into()],
                ..spec()
            },
            &st,
        )
        .unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
    }

    #[test]
    fn keys_are_taken_by_id_and_hash_only() {
        let r = v1::CreateApiKeyRequest {
            tenant: "acme".into(),
            name: "ci".into(),
            id: "jk-Ab3dE5gH".into(),
            sha256: "ab".repeat(32),
            expires_at_ms: 0,
        };
        let k = api_key(&r, 1000).unwrap();
        assert_eq!((k.id.as_str(), k.name.as_str()), ("jk-Ab3dE5gH", "ci"));
        for (bad, field) in [
            (
                v1::CreateApiKeyRequest {
                    id: "sk-Ab3dE5gH".into(),
                    ..r.clone()
                },
                "id:",
            ),
            (
                v1::CreateApiKeyRequest {
                    id: "jk-Ab3d!5gH".into(),
                    ..r.clone()
                },
                "id:",
            ),
            (
                v1::CreateApiKeyRequest {
                    sha256: "AB".repeat(32),
                    ..r.clone()
                },
                "sha256:",
            ),
            (
                v1::CreateApiKeyRequest {
                    name: "x".repeat(65),
                    ..r.clone()
                },
                "name:",
            ),
            (
                v1::CreateApiKeyRequest {
                    expires_at_ms: 999,
                    ..r.clone()
                },
                "expires_at_ms:",
            ),
        ] {
            let e = api_key(&bad, 1000).unwrap_err().to_string();
            assert!(e.starts_with(field), "{e}");
        }
    }
}
