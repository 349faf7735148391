//! `apply -f FILE` (YAML or JSON, several documents, `-f -` for stdin): Model, Deployment and
//! Tenant objects shaped as kubectl users expect (`apiVersion: joule/v1`, `kind`,
//! `metadata.name`, `spec`). The whole file is parsed and checked before anything is sent; an
//! unknown field, a bad value (a negative or absurd limit, say) or malformed YAML is refused
//! naming the file, line and field.

use std::collections::BTreeMap;
use std::io::Read as _;

use anyhow::Context as _;
use joule_proto::v1;
use serde::Deserialize;
use serde_norway::Number;

use crate::connect::Cluster;

/// One object of an applied file.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Model(v1::ModelSpec),
    Deployment(v1::DeploymentSpec),
    Tenant(v1::TenantSpec),
}

impl Object {
    pub fn kind_name(&self) -> (&'static str, &str) {
        match self {
            Self::Model(m) => ("model", &m.name),
            Self::Deployment(d) => ("deployment", &d.name),
            Self::Tenant(t) => ("tenant", &t.name),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    api_version: Option<String>,
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Doc<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Metadata,
    spec: S,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ModelDoc {
    source: String,
    sha256: String,
    #[serde(default)]
    size_bytes: Option<u64>,
    #[serde(default)]
    format: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ReplicasDoc {
    Count(u32),
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LatencyDoc {
    #[serde(default)]
    ttft_p95_ms: u32,
    #[serde(default)]
    itl_p95_ms: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeploymentDoc {
    model: String,
    #[serde(default)]
    replicas: Option<ReplicasDoc>,
    #[serde(default)]
    min_replicas: Option<u32>,
    #[serde(default)]
    max_replicas: Option<u32>,
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    #[serde(default)]
    latency: Option<LatencyDoc>,
    #[serde(default)]
    priority: i32,
}

/// A tenant's spec. Numbers are read as any number and checked here, so that a negative, a
/// fraction or an absurd value is refused naming its field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TenantDoc {
    #[serde(default)]
    weight: Option<Number>,
    #[serde(default)]
    deployments: Vec<String>,
    #[serde(default)]
    limits: Option<LimitsDoc>,
    #[serde(default)]
    quota: Option<QuotaDoc>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LimitsDoc {
    #[serde(default)]
    requests_per_minute: Option<Number>,
    #[serde(default)]
    tokens_per_minute: Option<Number>,
    #[serde(default)]
    max_concurrent: Option<Number>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct QuotaDoc {
    #[serde(default)]
    tokens_per_month: Option<Number>,
    #[serde(default)]
    joules_per_month: Option<Number>,
    #[serde(default)]
    kwh_per_month: Option<Number>,
}

/// The most a tenant's limits and quotas may say (anything more is a typo).
const MAX_RPM: u64 = 10_000_000;
const MAX_TPM: u64 = 1_000_000_000_000;
const MAX_CONCURRENT: u64 = 100_000;
const MAX_TOKENS_PER_MONTH: u64 = 1_000_000_000_000_000;
const MAX_KWH_PER_MONTH: f64 = 1e9;
const MAX_WEIGHT: f64 = 1000.0;

/// A whole number from 0 to `max` (absent: 0, no limit).
fn whole(at: &str, field: &str, n: Option<&Number>, max: u64) -> anyhow::Result<u64> {
    let Some(n) = n else { return Ok(0) };
    let v = match (n.as_u64(), n.as_f64()) {
        (Some(v), _) => v as f64,
        // 1e6 and 100.0 are whole numbers too.
        (None, Some(f)) if f.is_finite() && f >= 0.0 && f.fract() == 0.0 => f,
        _ => anyhow::bail!("{at}: {field}: {n} is not a whole number >= 0"),
    };
    if v > max as f64 {
        anyhow::bail!("{at}: {field}: {n} is more than {max}");
    }
    Ok(n.as_u64().unwrap_or(v as u64))
}

/// A finite number from 0 to `max` (absent: 0, no limit).
fn amount(at: &str, field: &str, n: Option<&Number>, max: f64) -> anyhow::Result<f64> {
    let Some(n) = n else { return Ok(0.0) };
    match n.as_f64() {
        Some(v) if v.is_finite() && v >= 0.0 && v <= max => Ok(v),
        Some(v) if v.is_finite() && v > max => {
            anyhow::bail!("{at}: {field}: {n} is more than {max}")
        }
        _ => anyhow::bail!("{at}: {field}: {n} is not a number >= 0"),
    }
}

fn tenant(d: Doc<TenantDoc>, at: &str) -> anyhow::Result<v1::TenantSpec> {
    let s = d.spec;
    let weight = match &s.weight {
        None => 1.0,
        Some(n) => match n.as_f64() {
            Some(w) if w > 0.0 && w <= MAX_WEIGHT => w,
            _ => anyhow::bail!("{at}: spec.weight: {n} is not a number > 0 and <= {MAX_WEIGHT}"),
        },
    };
    let l = s.limits.unwrap_or_default();
    let q = s.quota.unwrap_or_default();
    let joules_per_month = match (&q.joules_per_month, &q.kwh_per_month) {
        (Some(_), Some(_)) => {
            anyhow::bail!("{at}: spec.quota: give joulesPerMonth or kwhPerMonth, not both")
        }
        (Some(j), None) => amount(
            at,
            "spec.quota.joulesPerMonth",
            Some(j),
            MAX_KWH_PER_MONTH * 3.6e6,
        )?,
        (None, k) => amount(at, "spec.quota.kwhPerMonth", k.as_ref(), MAX_KWH_PER_MONTH)? * 3.6e6,
    };
    Ok(v1::TenantSpec {
        name: d.metadata.name,
        weight,
        deployments: s.deployments,
        requests_per_minute: whole(
            at,
            "spec.limits.requestsPerMinute",
            l.requests_per_minute.as_ref(),
            MAX_RPM,
        )? as u32,
        tokens_per_minute: whole(
            at,
            "spec.limits.tokensPerMinute",
            l.tokens_per_minute.as_ref(),
            MAX_TPM,
        )?,
        max_concurrent: whole(
            at,
            "spec.limits.maxConcurrent",
            l.max_concurrent.as_ref(),
            MAX_CONCURRENT,
        )? as u32,
        tokens_per_month: whole(
            at,
            "spec.quota.tokensPerMonth",
            q.tokens_per_month.as_ref(),
            MAX_TOKENS_PER_MONTH,
        )?,
        joules_per_month,
    })
}

/// `FILE:LINE:COLUMN: message` from a YAML error in the document starting at `first_line`.
fn located(file: &str, first_line: usize, e: &serde_norway::Error) -> anyhow::Error {
    let msg = e.to_string();
    // The library appends " at line L column C" for the document; say it for the file.
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    match e.location() {
        Some(l) => anyhow::anyhow!("{file}:{}:{}: {msg}", first_line + l.line() - 1, l.column()),
        None => anyhow::anyhow!("{file}: document at line {first_line}: {msg}"),
    }
}

/// Splits a YAML stream at `---` lines: (first line number, text) per document.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            if !cur.trim().is_empty() {
                out.push((start, std::mem::take(&mut cur)));
            }
            cur.clear();
            // `--- {apiVersion: ...}`: the document starts on the separator's own line.
            let rest = line[3..].trim();
            if rest.is_empty() {
                start = i + 2;
            } else {
                start = i + 1;
                cur.push_str(rest);
                cur.push('\n');
            }
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    if !cur.trim().is_empty() {
        out.push((start, cur));
    }
    out
}

/// Parses every object of `text` (named `file` in errors); nothing is sent.
pub fn parse(file: &str, text: &str) -> anyhow::Result<Vec<Object>> {
    let mut objects = Vec::new();
    for (line, doc) in documents(text) {
        let head: Head = serde_norway::from_str(&doc).map_err(|e| located(file, line, &e))?;
        let at = format!("{file}: document at line {line}");
        match head.api_version.as_deref() {
            Some("joule/v1") => {}
            Some(v) => anyhow::bail!("{at}: apiVersion {v:?} is not joule/v1"),
            None => anyhow::bail!("{at}: apiVersion is missing (joule/v1)"),
        }
        let obj = match head.kind.as_deref() {
            Some("Model") => {
                let d: Doc<ModelDoc> =
                    serde_norway::from_str(&doc).map_err(|e| located(file, line, &e))?;
                Object::Model(v1::ModelSpec {
                    size_bytes: match d.spec.size_bytes {
                        Some(n) => n,
                        None => local_size(&d.spec.source).with_context(|| {
                            format!("{at}: spec.sizeBytes is needed for {:?}", d.spec.source)
                        })?,
                    },
                    name: d.metadata.name,
                    source: d.spec.source,
                    sha256: d.spec.sha256,
                    format: d.spec.format.unwrap_or_default(),
                })
            }
            Some("Deployment") => {
                let d: Doc<DeploymentDoc> =
                    serde_norway::from_str(&doc).map_err(|e| located(file, line, &e))?;
                Object::Deployment(deployment(d, &at)?)
            }
            Some("Tenant") => {
                let d: Doc<TenantDoc> =
                    serde_norway::from_str(&doc).map_err(|e| located(file, line, &e))?;
                Object::Tenant(tenant(d, &at)?)
            }
            Some(k) => anyhow::bail!("{at}: kind {k:?} is not Model, Deployment or Tenant"),
            None => anyhow::bail!("{at}: kind is missing (Model, Deployment or Tenant)"),
        };
        objects.push(obj);
    }
    if objects.is_empty() {
        anyhow::bail!("{file}: no objects to apply");
    }
    Ok(objects)
}

fn deployment(d: Doc<DeploymentDoc>, at: &str) -> anyhow::Result<v1::DeploymentSpec> {
    let s = d.spec;
    let (replicas, autoscale) = match s.replicas {
        None => (1, false),
        Some(ReplicasDoc::Count(n)) => (n, false),
        Some(ReplicasDoc::Word(w)) if w == "auto" => (0, true),
        Some(ReplicasDoc::Word(w)) => {
            anyhow::bail!("{at}: spec.replicas {w:?} is not a number or \"auto\"")
        }
    };
    if !autoscale && (s.min_replicas.is_some() || s.max_replicas.is_some()) {
        anyhow::bail!("{at}: spec.minReplicas and spec.maxReplicas need spec.replicas: auto");
    }
    let latency = s.latency.unwrap_or(LatencyDoc {
        ttft_p95_ms: 0,
        itl_p95_ms: 0,
    });
    Ok(v1::DeploymentSpec {
        name: d.metadata.name,
        model: s.model,
        replicas,
        autoscale,
        min_replicas: s.min_replicas.unwrap_or(if autoscale { 1 } else { 0 }),
        max_replicas: s.max_replicas.unwrap_or(0),
        selector: s.node_selector,
        ttft_p95_ms: latency.ttft_p95_ms,
        itl_p95_ms: latency.itl_p95_ms,
        priority: s.priority,
    })
}

/// The size of a `file://` source on this machine (the workers must have the same file).
fn local_size(source: &str) -> anyhow::Result<u64> {
    let path = source
        .strip_prefix("file://")
        .context("the size of an http(s) source cannot be read here: give spec.sizeBytes")?;
    Ok(std::fs::metadata(path)
        .with_context(|| format!("{path} is not on this machine: give spec.sizeBytes"))?
        .len())
}

/// Reads `-f FILE` (or stdin for `-`).
pub fn read(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))
    }
}

pub async fn apply(c: &Cluster, file: &str) -> anyhow::Result<()> {
    let objects = parse(if file == "-" { "<stdin>" } else { file }, &read(file)?)?;
    for o in objects {
        send(c, &o).await?;
        let (kind, name) = o.kind_name();
        println!("{kind}/{name} configured");
    }
    Ok(())
}

/// Creates or updates one object.
pub async fn send(c: &Cluster, o: &Object) -> anyhow::Result<()> {
    let (kind, name) = o.kind_name();
    match o {
        Object::Model(m) => c
            .call(|mut a| {
                let m = m.clone();
                async move { a.apply_model(m).await }
            })
            .await
            .map(drop),
        Object::Deployment(d) => c
            .call(|mut a| {
                let d = d.clone();
                async move { a.apply_deployment(d).await }
            })
            .await
            .map(drop),
        Object::Tenant(t) => c
            .call(|mut a| {
                let t = t.clone();
                async move { a.apply_tenant(t).await }
            })
            .await
            .map(drop),
    }
    .with_context(|| format!("{kind}/{name}"))
}

/// Whether the cluster has an object of this kind and name (NOT_FOUND: no; any other error is
/// an error).
pub async fn exists(c: &Cluster, o: &Object) -> anyhow::Result<bool> {
    let name = o.kind_name().1.to_string();
    let r = match o {
        Object::Model(_) => c
            .call(|mut a| {
                let name = name.clone();
                async move { a.get_model(v1::GetModelRequest { name }).await }
            })
            .await
            .map(drop),
        Object::Deployment(_) => c
            .call(|mut a| {
                let name = name.clone();
                async move { a.get_deployment(v1::GetDeploymentRequest { name }).await }
            })
            .await
            .map(drop),
        Object::Tenant(_) => c
            .call(|mut a| {
                let name = name.clone();
                async move { a.get_tenant(v1::GetTenantRequest { name }).await }
            })
            .await
            .map(drop),
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if crate::exit::code(&e) == crate::exit::Code::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"apiVersion: joule/v1
kind: Model
metadata: {name: smollm2}
spec: {source: "https://example.invalid/m.gguf", sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", sizeBytes: 100}
---
apiVersion: joule/v1
kind: Deployment
metadata: {name: smollm2}
spec:
  model: smollm2
  replicas: auto
  minReplicas: 1
  maxReplicas: 3
  nodeSelector: {gpu: p40}
  latency: {itlP95Ms: 50}
"#;

    #[test]
    fn several_documents_parse_into_specs() {
        let o = parse("f.yaml", GOOD).unwrap();
        assert_eq!(o.len(), 2);
        let Object::Deployment(d) = &o[1] else {
            panic!("{o:?}")
        };
        assert!(d.autoscale && d.min_replicas == 1 && d.max_replicas == 3);
        assert_eq!((d.itl_p95_ms, d.selector["gpu"].as_str()), (50, "p40"));
        let json = r#"{"apiVersion": "joule/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"model": "m", "replicas": 2}}"#;
        let Object::Deployment(d) = &parse("f.json", json).unwrap()[0] else {
            panic!()
        };
        assert_eq!(d.replicas, 2);
        // A document may start on its separator's line.
        let inline = "--- {apiVersion: joule/v1, kind: Deployment, metadata: {name: a}, spec: {model: m}}\n\
                      --- {apiVersion: joule/v1, kind: Deployment, metadata: {name: b}, spec: {model: m}}\n";
        let o = parse("f.yaml", inline).unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[1].kind_name(), ("deployment", "b"));
    }

    const TENANT: &str = "apiVersion: joule/v1
kind: Tenant
metadata: {name: acme}
spec:
  weight: 3
  deployments: [smollm2]
  limits:
    requestsPerMinute: 600
    tokensPerMinute: 100000
    maxConcurrent: 16
  quota:
    tokensPerMonth: 10000000
    joulesPerMonth: 3600000
";

    #[test]
    fn tenants_parse_with_their_limits_and_defaults() {
        let o = parse("t.yaml", TENANT).unwrap();
        assert_eq!(o[0].kind_name(), ("tenant", "acme"));
        let Object::Tenant(t) = &o[0] else {
            panic!("{o:?}")
        };
        assert_eq!(
            (t.weight, t.deployments.as_slice()),
            (3.0, &["smollm2".to_string()][..])
        );
        assert_eq!(
            (t.requests_per_minute, t.tokens_per_minute, t.max_concurrent),
            (600, 100_000, 16)
        );
        assert_eq!(
            (t.tokens_per_month, t.joules_per_month),
            (10_000_000, 3.6e6)
        );
        let bare = "apiVersion: joule/v1\nkind: Tenant\nmetadata: {name: b}\nspec: {}\n";
        let Object::Tenant(t) = &parse("t.yaml", bare).unwrap()[0] else {
            panic!()
        };
        assert_eq!(t.weight, 1.0);
        assert!(t.deployments.is_empty());
        assert_eq!(
            (t.requests_per_minute, t.tokens_per_minute, t.max_concurrent),
            (0, 0, 0)
        );
        assert_eq!((t.tokens_per_month, t.joules_per_month), (0, 0.0));
        let kwh = TENANT
            .replace("joulesPerMonth: 3600000", "kwhPerMonth: 1.5")
            .replace("tokensPerMonth: 10000000", "tokensPerMonth: 1e7")
            .replace("weight: 3", "weight: 0.5");
        let Object::Tenant(t) = &parse("t.yaml", &kwh).unwrap()[0] else {
            panic!()
        };
        assert!((t.joules_per_month - 5.4e6).abs() < 1e-6, "{t:?}");
        assert_eq!((t.tokens_per_month, t.weight), (10_000_000, 0.5));
        let json = r#"{"apiVersion": "joule/v1", "kind": "Tenant", "metadata": {"name": "j"}, "spec": {"limits": {"maxConcurrent": 4}}}"#;
        let Object::Tenant(t) = &parse("t.json", json).unwrap()[0] else {
            panic!()
        };
        assert_eq!((t.name.as_str(), t.max_concurrent), ("j", 4));
    }

    #[test]
    fn bad_tenant_numbers_are_refused_naming_the_field() {
        let e = |from: &str, to: &str| {
            assert!(TENANT.contains(from), "{from}");
            parse("f.yaml", &TENANT.replace(from, to))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e("requestsPerMinute: 600", "requestsPerMinute: -5"),
            "f.yaml: document at line 1: spec.limits.requestsPerMinute: -5 is not a whole number >= 0"
        );
        let m = e("requestsPerMinute: 600", "requestsPerMinute: lots");
        assert!(
            m.starts_with("f.yaml:8:") && m.contains("spec.limits.requestsPerMinute"),
            "{m}"
        );
        let m = e("requestsPerMinute: 600", "requestsPerMinute: 20000000");
        assert!(
            m.contains("spec.limits.requestsPerMinute: 20000000 is more than 10000000"),
            "{m}"
        );
        let m = e("tokensPerMinute: 100000", "tokensPerMinute: 10000000000000");
        assert!(
            m.contains("spec.limits.tokensPerMinute") && m.contains("more than"),
            "{m}"
        );
        let m = e("maxConcurrent: 16", "maxConcurrent: 100001");
        assert!(
            m.contains("spec.limits.maxConcurrent") && m.contains("more than"),
            "{m}"
        );
        let m = e("maxConcurrent: 16", "maxConcurrent: 1.5");
        assert!(
            m.contains("spec.limits.maxConcurrent: 1.5 is not a whole number"),
            "{m}"
        );
        for w in ["0", "-1", "1001", ".nan", "heavy"] {
            let m = e("weight: 3", &format!("weight: {w}"));
            assert!(m.contains("spec.weight"), "{w}: {m}");
        }
        let m = e("joulesPerMonth: 3600000", "joulesPerMonth: -1");
        assert!(
            m.contains("spec.quota.joulesPerMonth: -1 is not a number >= 0"),
            "{m}"
        );
        let m = e(
            "joulesPerMonth: 3600000",
            "joulesPerMonth: 3600000\n    kwhPerMonth: 1",
        );
        assert!(m.contains("not both"), "{m}");
        let m = e("maxConcurrent: 16", "maxConcurent: 16");
        assert!(
            m.starts_with("f.yaml:10:") && m.contains("maxConcurent"),
            "{m}"
        );
        let m = e("kind: Tenant", "kind: Tenants");
        assert!(m.contains("Model, Deployment or Tenant"), "{m}");
    }

    #[test]
    fn unknown_fields_and_bad_yaml_are_refused_with_file_and_line() {
        let bad = GOOD.replace("  priority_typo: 1\n", "").replace(
            "  latency: {itlP95Ms: 50}\n",
            "  latency: {itlP95Ms: 50}\n  replcas: 2\n",
        );
        let e = parse("f.yaml", &bad).unwrap_err().to_string();
        assert!(e.starts_with("f.yaml:16:") && e.contains("replcas"), "{e}");
        let e = parse(
            "f.yaml",
            "apiVersion: joule/v1\nkind: Model\nmetadata: {name: [}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f.yaml:3:"), "{e}");
        let e = parse("f.yaml", "apiVersion: v2\nkind: Model\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("joule/v1"), "{e}");
        let e = parse("f.yaml", "apiVersion: joule/v1\nkind: Pod\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"Pod\""), "{e}");
        let e = parse(
            "f.yaml",
            "apiVersion: joule/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {model: m, replicas: many}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"many\""), "{e}");
        assert!(
            parse("f.yaml", "\n")
                .unwrap_err()
                .to_string()
                .contains("no objects")
        );
    }
}
