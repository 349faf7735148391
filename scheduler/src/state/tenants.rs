//! Who uses the cluster: tenants with their quotas and API keys (stored as SHA-256 hashes, never
//! the keys), and the usage they are billed for, in tokens and in measured or estimated energy.

use joule_proto::internal::v1 as pb;

use super::names;

/// The largest priority weight a tenant may have (relative to others' weights).
pub const MAX_WEIGHT: f64 = 1000.0;
/// The smallest.
pub const MIN_WEIGHT: f64 = 0.001;
/// The longest label an API key may have.
pub const MAX_KEY_NAME: usize = 64;

pub fn put_tenant(s: &mut pb::ClusterState, c: &pb::PutTenant) -> Result<(), String> {
    let mut t = c.tenant.clone().ok_or("put_tenant without a tenant")?;
    names::label("tenant", &t.name)?;
    if !t.api_keys.is_empty() {
        return Err("API keys are added with AddApiKey, not with the tenant".into());
    }
    for d in &t.deployments {
        names::label("deployment", d)?;
    }
    t.deployments.sort();
    t.deployments.dedup();
    if !(t.weight == 0.0 || (MIN_WEIGHT..=MAX_WEIGHT).contains(&t.weight)) {
        return Err(format!(
            "a tenant's weight must be from {MIN_WEIGHT} to {MAX_WEIGHT}, got {}",
            t.weight
        ));
    }
    if let Some(old) = s.tenants.get_mut(&t.name) {
        t.created_at_ms = old.created_at_ms;
        t.api_keys = std::mem::take(&mut old.api_keys);
    }
    s.tenants.insert(t.name.clone(), t);
    Ok(())
}

pub fn delete_tenant(s: &mut pb::ClusterState, c: &pb::DeleteTenant) -> Result<(), String> {
    s.tenants
        .remove(&c.name)
        .map(|_| ())
        .ok_or_else(|| format!("no tenant named {:?}", c.name))
}

fn tenant<'a>(s: &'a mut pb::ClusterState, name: &str) -> Result<&'a mut pb::Tenant, String> {
    s.tenants
        .get_mut(name)
        .ok_or_else(|| format!("no tenant named {name:?}"))
}

pub fn add_api_key(s: &mut pb::ClusterState, c: &pb::AddApiKey) -> Result<(), String> {
    let k = c.key.clone().ok_or("add_api_key without a key")?;
    names::sha256("an API key's sha256", &k.sha256)?;
    if k.id.is_empty() || k.id.len() > 64 {
        return Err("an API key's id must be 1-64 characters".into());
    }
    if k.name.chars().count() > MAX_KEY_NAME || k.name.chars().any(char::is_control) {
        return Err(format!(
            "an API key's name must be at most {MAX_KEY_NAME} printable characters"
        ));
    }
    if k.last_used_ms != 0 {
        return Err("a new API key has not been used".into());
    }
    if s.tenants
        .values()
        .any(|t| t.api_keys.iter().any(|o| o.sha256 == k.sha256))
    {
        return Err("this API key is already in use; generate another".into());
    }
    let t = tenant(s, &c.tenant)?;
    if t.api_keys.iter().any(|o| o.id == k.id) {
        return Err(format!(
            "tenant {:?} already has a key {:?}",
            c.tenant, k.id
        ));
    }
    t.api_keys.push(k);
    Ok(())
}

pub fn revoke_api_key(s: &mut pb::ClusterState, c: &pb::RevokeApiKey) -> Result<(), String> {
    let t = tenant(s, &c.tenant)?;
    let before = t.api_keys.len();
    t.api_keys.retain(|k| k.id != c.id);
    if t.api_keys.len() == before {
        return Err(format!("tenant {:?} has no key {:?}", c.tenant, c.id));
    }
    Ok(())
}

/// The tenant an API key's hash belongs to.
pub fn tenant_of_key<'a>(s: &'a pb::ClusterState, sha256: &str) -> Option<&'a pb::Tenant> {
    s.tenants
        .values()
        .find(|t| t.api_keys.iter().any(|k| k.sha256 == sha256))
}

fn usage_key(tenant: &str, day: u32, model: &str) -> String {
    format!("{tenant}/{day:08}/{model}")
}

pub fn record_usage(s: &mut pb::ClusterState, c: &pb::RecordUsage) -> Result<(), String> {
    if c.reporter.is_empty() {
        return Err("a usage report needs its reporter".into());
    }
    if let Some(last) = s.usage_reporters.get(&c.reporter)
        && c.sequence <= *last
    {
        // A retry of a report already counted (its first answer was lost).
        return Ok(());
    }
    for r in &c.records {
        names::label("tenant", &r.tenant)?;
        names::model(&r.model)?;
    }
    for r in &c.records {
        let total = s
            .usage
            .entry(usage_key(&r.tenant, r.day, &r.model))
            .or_insert_with(|| pb::UsageRecord {
                tenant: r.tenant.clone(),
                model: r.model.clone(),
                day: r.day,
                counters: Some(Default::default()),
            })
            .counters
            .get_or_insert_default();
        add(total, &r.counters.unwrap_or_default());
    }
    for u in &c.key_uses {
        // A key revoked (or a tenant deleted) since its use is simply not there any more.
        if let Some(k) = s
            .tenants
            .get_mut(&u.tenant)
            .and_then(|t| t.api_keys.iter_mut().find(|k| k.id == u.id))
        {
            k.last_used_ms = k.last_used_ms.max(u.at_ms);
        }
    }
    s.usage_reporters.insert(c.reporter.clone(), c.sequence);
    Ok(())
}

/// Every usage record from `from_day` to `to_day` (inclusive), of one tenant or (`None`) all,
/// in tenant, day and model order.
pub fn usage_records<'a>(
    s: &'a pb::ClusterState,
    tenant: Option<&'a str>,
    from_day: u32,
    to_day: u32,
) -> impl Iterator<Item = &'a pb::UsageRecord> + 'a {
    let range: Box<dyn Iterator<Item = (&String, &pb::UsageRecord)>> = match tenant {
        Some(t) => Box::new(s.usage.range(format!("{t}/")..format!("{t}0"))),
        None => Box::new(s.usage.iter()),
    };
    range
        .map(|(_, r)| r)
        .filter(move |r| r.day >= from_day && r.day <= to_day)
}

/// A tenant's usage from `from_day` to `to_day` (inclusive), summed over models.
pub fn usage_between(
    s: &pb::ClusterState,
    tenant: &str,
    from_day: u32,
    to_day: u32,
) -> pb::UsageCounters {
    let mut sum = pb::UsageCounters::default();
    let lo = format!("{tenant}/{from_day:08}/");
    let hi = format!("{tenant}/{:08}/", u64::from(to_day) + 1);
    for r in s.usage.range(lo..hi).map(|(_, r)| r) {
        let c = r.counters.unwrap_or_default();
        add(&mut sum, &c);
    }
    sum
}

fn add(total: &mut pb::UsageCounters, c: &pb::UsageCounters) {
    total.requests = total.requests.saturating_add(c.requests);
    total.prompt_tokens = total.prompt_tokens.saturating_add(c.prompt_tokens);
    total.cached_prompt_tokens = total
        .cached_prompt_tokens
        .saturating_add(c.cached_prompt_tokens);
    total.output_tokens = total.output_tokens.saturating_add(c.output_tokens);
    total.measured_mj = total.measured_mj.saturating_add(c.measured_mj);
    total.estimated_mj = total.estimated_mj.saturating_add(c.estimated_mj);
}
