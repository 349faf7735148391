//! `explain KIND[.FIELD...]`: the fields of the objects `apply -f` takes (Model, Deployment,
//! Tenant), as `kubectl explain` shows them: the kind, its version, what it is, and each field
//! with its type and one line on what it means, its unit, default and bounds. Every field lives
//! in one table ([`KINDS`]); the tests check it against the parser of `apply`, so that the two
//! cannot drift apart.

use serde::Serialize;

use super::Resource;
use crate::exit;
use crate::render::{self, Format};

/// The `apiVersion` of every object.
pub const API_VERSION: &str = "joule/v1";

/// One field of a kind, by its dotted path from the document's top.
#[derive(Debug, Serialize)]
pub struct Field {
    /// `spec.limits.requestsPerMinute`.
    pub path: &'static str,
    /// `string`, `integer`, `number`, `object`, `[]string`, `map[string]string`, or a union.
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub required: bool,
    pub description: &'static str,
    /// A value `apply -f` accepts, as JSON; empty for an object (its fields make it).
    #[serde(skip)]
    pub example: &'static str,
    /// The path of a field that may not be given with this one (empty: none).
    #[serde(skip)]
    pub excludes: &'static str,
}

const fn field(
    path: &'static str,
    ty: &'static str,
    required: bool,
    description: &'static str,
    example: &'static str,
) -> Field {
    Field {
        path,
        ty,
        required,
        description,
        example,
        excludes: "",
    }
}

impl Field {
    /// This field, which may not be given with `other`.
    const fn not_with(mut self, other: &'static str) -> Self {
        self.excludes = other;
        self
    }

    /// Its last name: `requestsPerMinute`.
    pub fn name(&self) -> &'static str {
        self.path.rsplit('.').next().unwrap_or(self.path)
    }

    fn depth(&self) -> usize {
        self.path.matches('.').count()
    }
}

/// A kind `apply -f` takes.
#[derive(Debug, Serialize)]
pub struct Kind {
    pub kind: &'static str,
    #[serde(skip)]
    pub resource: Resource,
    pub description: &'static str,
    pub fields: &'static [Field],
}

const REQUIRED: bool = true;
const OPTIONAL: bool = false;

const MODEL: &[Field] = &[
    field(
        "apiVersion",
        "string",
        REQUIRED,
        "joule/v1.",
        "\"joule/v1\"",
    ),
    field("kind", "string", REQUIRED, "Model.", "\"Model\""),
    field(
        "metadata",
        "object",
        REQUIRED,
        "The model's name (and labels).",
        "",
    ),
    field(
        "metadata.name",
        "string",
        REQUIRED,
        "1-128 of A-Z a-z 0-9 . _ - : /, not starting with / or .; deployments name it.",
        "\"smollm2\"",
    ),
    field(
        "metadata.labels",
        "map[string]string",
        OPTIONAL,
        "Accepted, as kubectl users write them; not stored.",
        "{\"team\": \"ml\"}",
    ),
    field(
        "spec",
        "object",
        REQUIRED,
        "Where the weights are and what they are.",
        "",
    ),
    field(
        "spec.source",
        "string",
        REQUIRED,
        "file:///absolute/path.gguf on every worker, or an http(s):// URL workers download \
         into their cache.",
        "\"https://example.invalid/smollm2.gguf\"",
    ),
    field(
        "spec.sha256",
        "string",
        REQUIRED,
        "64 lowercase hex digits: workers check the file against it.",
        "\"b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53\"",
    ),
    field(
        "spec.sizeBytes",
        "integer",
        OPTIONAL,
        "The file's size in bytes, which placement fits into memory; default: the size of a \
         file:// source on this machine (required for http(s)).",
        "270000000",
    ),
    field(
        "spec.format",
        "string",
        OPTIONAL,
        "\"gguf\" (the default, and the only format workers fetch).",
        "\"gguf\"",
    ),
];

const DEPLOYMENT: &[Field] = &[
    field(
        "apiVersion",
        "string",
        REQUIRED,
        "joule/v1.",
        "\"joule/v1\"",
    ),
    field("kind", "string", REQUIRED, "Deployment.", "\"Deployment\""),
    field(
        "metadata",
        "object",
        REQUIRED,
        "The deployment's name (and labels).",
        "",
    ),
    field(
        "metadata.name",
        "string",
        REQUIRED,
        "A DNS label: 1-63 of a-z 0-9 -, starting and ending with a letter or digit.",
        "\"smollm2\"",
    ),
    field(
        "metadata.labels",
        "map[string]string",
        OPTIONAL,
        "Accepted, as kubectl users write them; not stored (-l selects nodes only).",
        "{\"team\": \"ml\"}",
    ),
    field(
        "spec",
        "object",
        REQUIRED,
        "What to serve, how many times and where.",
        "",
    ),
    field(
        "spec.model",
        "string",
        REQUIRED,
        "The name of a Model the cluster has.",
        "\"smollm2\"",
    ),
    field(
        "spec.replicas",
        "integer | \"auto\"",
        OPTIONAL,
        "How many workers serve it, at most 1024 (default 1); \"auto\" scales between \
         minReplicas and maxReplicas by measured demand.",
        "\"auto\"",
    ),
    field(
        "spec.minReplicas",
        "integer",
        OPTIONAL,
        "With replicas: auto, the fewest replicas (default 1).",
        "1",
    ),
    field(
        "spec.maxReplicas",
        "integer",
        OPTIONAL,
        "With replicas: auto, the most replicas: 1 to 1024, at least minReplicas (required \
         with auto).",
        "3",
    ),
    field(
        "spec.nodeSelector",
        "map[string]string",
        OPTIONAL,
        "Worker labels a node must all have to serve it (default: any node).",
        "{\"gpu\": \"h100\"}",
    ),
    field(
        "spec.latency",
        "object",
        OPTIONAL,
        "p95 latency targets the placement keeps (default: none).",
        "",
    ),
    field(
        "spec.latency.ttftP95Ms",
        "integer",
        OPTIONAL,
        "Time to first token, p95, in milliseconds (0: no target).",
        "500",
    ),
    field(
        "spec.latency.itlP95Ms",
        "integer",
        OPTIONAL,
        "Inter-token latency, p95, in milliseconds (0: no target).",
        "50",
    ),
    field(
        "spec.priority",
        "integer",
        OPTIONAL,
        "Higher places first and is never displaced by lower (default 0; may be negative).",
        "5",
    ),
];

const TENANT: &[Field] = &[
    field(
        "apiVersion",
        "string",
        REQUIRED,
        "joule/v1.",
        "\"joule/v1\"",
    ),
    field("kind", "string", REQUIRED, "Tenant.", "\"Tenant\""),
    field(
        "metadata",
        "object",
        REQUIRED,
        "The tenant's name (and labels).",
        "",
    ),
    field(
        "metadata.name",
        "string",
        REQUIRED,
        "A DNS label: 1-63 of a-z 0-9 -, starting and ending with a letter or digit.",
        "\"acme\"",
    ),
    field(
        "metadata.labels",
        "map[string]string",
        OPTIONAL,
        "Accepted, as kubectl users write them; not stored.",
        "{\"team\": \"ml\"}",
    ),
    field(
        "spec",
        "object",
        REQUIRED,
        "Its share, limits, quota and deployments ({} for the defaults).",
        "",
    ),
    field(
        "spec.weight",
        "number",
        OPTIONAL,
        "Its share of a busy worker relative to other tenants: from 0.001 to 1000 (default 1).",
        "3",
    ),
    field(
        "spec.deployments",
        "[]string",
        OPTIONAL,
        "The deployments its API keys may use (default: all).",
        "[\"smollm2\"]",
    ),
    field(
        "spec.limits",
        "object",
        OPTIONAL,
        "Rate limits; absent or 0: no limit.",
        "",
    ),
    field(
        "spec.limits.requestsPerMinute",
        "integer",
        OPTIONAL,
        "Requests a minute, at most 10000000.",
        "600",
    ),
    field(
        "spec.limits.tokensPerMinute",
        "integer",
        OPTIONAL,
        "Prompt plus completion tokens a minute, at most 1000000000000.",
        "100000",
    ),
    field(
        "spec.limits.maxConcurrent",
        "integer",
        OPTIONAL,
        "Requests in flight at once, at most 100000.",
        "16",
    ),
    field(
        "spec.quota",
        "object",
        OPTIONAL,
        "Quotas per calendar month (UTC); absent or 0: no quota.",
        "",
    ),
    field(
        "spec.quota.tokensPerMonth",
        "integer",
        OPTIONAL,
        "Prompt plus completion tokens a month, at most 1000000000000000.",
        "10000000",
    ),
    field(
        "spec.quota.joulesPerMonth",
        "number",
        OPTIONAL,
        "Energy a month in joules, measured and estimated together: 0, or 1 to 3.6e15.",
        "3600000",
    )
    .not_with("spec.quota.kwhPerMonth"),
    field(
        "spec.quota.kwhPerMonth",
        "number",
        OPTIONAL,
        "The same quota in kWh (1 kWh = 3.6e6 J), at most 1e9; give it or joulesPerMonth.",
        "1.5",
    )
    .not_with("spec.quota.joulesPerMonth"),
];

/// Every kind `apply -f` takes, with every field it accepts.
pub const KINDS: &[Kind] = &[
    Kind {
        kind: "Model",
        resource: Resource::Models,
        description: "A model file the cluster knows: where workers fetch it, its checksum and \
                      its size. Deployments serve it.",
        fields: MODEL,
    },
    Kind {
        kind: "Deployment",
        resource: Resource::Deployments,
        description: "A model served on some workers: how many replicas (fixed, or scaled by \
                      demand), on which nodes, with which latency targets and priority. The \
                      scheduler places its replicas on the nodes that cost the fewest joules \
                      per token.",
        fields: DEPLOYMENT,
    },
    Kind {
        kind: "Tenant",
        resource: Resource::Tenants,
        description: "Who uses the cluster through the gateway: its share of busy workers, its \
                      rate limits, its monthly quota and the deployments its API keys may use \
                      (keys are made with `joulectl create apikey --tenant NAME`).",
        fields: TENANT,
    },
];

/// What `-o json|yaml` prints: the kind, or one field, with the fields below it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Explanation<'a> {
    kind: &'static str,
    api_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a Field>,
    description: &'static str,
    fields: Vec<&'a Field>,
}

/// The kind and field `what` names: `tenant`, `Tenants`, `tn.limits`, `tenant.spec.limits`.
fn resolve(what: &str) -> anyhow::Result<(&'static Kind, Option<&'static Field>)> {
    let (kind, path) = match what.split_once('.') {
        Some((k, p)) => (k, Some(p)),
        None => (what, None),
    };
    let r: Resource = kind.parse()?;
    let Some(k) = KINDS.iter().find(|k| k.resource == r) else {
        return Err(exit::usage(format!(
            "explain covers the kinds `apply -f` takes: Model, Deployment and Tenant ({} are \
             not applied)",
            r.name()
        )));
    };
    let Some(path) = path else {
        return Ok((k, None));
    };
    // `tenant.limits` is `tenant.spec.limits`, as in the YAML a user has in mind.
    let lower = path.to_ascii_lowercase();
    let found = k.fields.iter().find(|f| {
        let p = f.path.to_ascii_lowercase();
        p == lower || p == format!("spec.{lower}")
    });
    match found {
        Some(f) => Ok((k, Some(f))),
        None => {
            let near = crate::closest::closest(
                path,
                k.fields
                    .iter()
                    .flat_map(|f| [f.path, f.path.strip_prefix("spec.").unwrap_or(f.path)]),
            );
            let kind = k.kind.to_ascii_lowercase();
            Err(exit::usage(match near {
                Some(n) => {
                    let near = format!("{kind}.{n}");
                    format!("{} has no field {path:?}; did you mean {near:?}?", k.kind)
                }
                None => format!(
                    "{} has no field {path:?}; `joulectl explain {kind}` lists its fields",
                    k.kind
                ),
            }))
        }
    }
}

/// The fields under `top` (all of the kind's without one), `top` excluded.
fn below<'a>(k: &'a Kind, top: Option<&Field>) -> Vec<&'a Field> {
    k.fields
        .iter()
        .filter(|f| match top {
            None => true,
            Some(t) => f
                .path
                .strip_prefix(t.path)
                .is_some_and(|rest| rest.starts_with('.')),
        })
        .collect()
}

fn kind_line(ty: &str, required: bool) -> String {
    format!("<{ty}>{}", if required { " -required-" } else { "" })
}

/// The text `explain` prints for `what`.
pub fn text(what: &str) -> anyhow::Result<String> {
    let (k, top) = resolve(what)?;
    let mut s = format!("KIND:     {}\nVERSION:  {API_VERSION}\n\n", k.kind);
    let description = match top {
        Some(f) => {
            s.push_str(&format!(
                "FIELD: {} {}\n\n",
                f.name(),
                kind_line(f.ty, f.required)
            ));
            f.description
        }
        None => k.description,
    };
    s.push_str(&format!("DESCRIPTION:\n    {description}\n"));
    let fields = below(k, top);
    if !fields.is_empty() {
        s.push_str("\nFIELDS:\n");
        let base = top.map_or(0, |t| t.depth() + 1);
        for f in fields {
            let indent = "  ".repeat(f.depth() - base + 1);
            s.push_str(&format!(
                "{indent}{}\t{}\n{indent}  {}\n",
                f.name(),
                kind_line(f.ty, f.required),
                f.description
            ));
            if !f.example.is_empty() {
                s.push_str(&format!("{indent}  Example: {}\n", f.example));
            }
        }
    }
    Ok(s)
}

pub fn explain(what: &str, f: Format) -> anyhow::Result<()> {
    if f.is_table() {
        return render::print(&text(what)?);
    }
    let (k, top) = resolve(what)?;
    render::emit(
        &Explanation {
            kind: k.kind,
            api_version: API_VERSION,
            field: top,
            description: top.map_or(k.description, |t| t.description),
            fields: below(k, top),
        },
        f,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value};

    use super::*;
    use crate::commands::apply::{self, Object};

    /// A document of `k` with every field that has an example, but those in `leave_out`.
    fn example(k: &Kind, leave_out: &[&str]) -> Value {
        let mut doc = Map::new();
        for f in k.fields {
            if f.example.is_empty() || leave_out.contains(&f.path) {
                continue;
            }
            let v: Value = serde_json::from_str(f.example)
                .unwrap_or_else(|e| panic!("{}.{}: example {:?}: {e}", k.kind, f.path, f.example));
            let parts: Vec<&str> = f.path.split('.').collect();
            let (last, parents) = parts.split_last().expect("a path has a name");
            let mut at = &mut doc;
            for p in parents {
                at = at
                    .entry(p.to_string())
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("a parent field is an object");
            }
            at.insert(last.to_string(), v);
        }
        Value::Object(doc)
    }

    #[test]
    fn every_explained_field_is_accepted_by_apply() {
        for k in KINDS {
            // Each field once, in a document with every field it may go with: of two that
            // exclude each other, the one that is not `f` (the second of them when neither is).
            let at = |path: &str| k.fields.iter().position(|g| g.path == path);
            for f in k.fields {
                let leave_out: Vec<&str> = k
                    .fields
                    .iter()
                    .filter(|g| {
                        g.path != f.path
                            && !g.excludes.is_empty()
                            && (g.excludes == f.path || at(g.path) > at(g.excludes))
                    })
                    .map(|g| g.path)
                    .collect();
                let doc = example(k, &leave_out).to_string();
                let o = apply::parse("explained.json", &doc).unwrap_or_else(|e| {
                    panic!("{}.{}: apply refuses {doc}: {e:#}", k.kind, f.path)
                });
                assert_eq!(o.len(), 1);
                assert_eq!(o[0].kind_name().0, k.kind.to_ascii_lowercase(), "{doc}");
            }
            // Each object field is there because of its fields.
            for f in k.fields.iter().filter(|f| f.example.is_empty()) {
                assert_eq!(f.ty, "object", "{}.{} has no example", k.kind, f.path);
                assert!(!below(k, Some(f)).is_empty(), "{}.{}", k.kind, f.path);
            }
        }
        // And the examples mean what the table says.
        let t = KINDS.iter().find(|k| k.kind == "Tenant").unwrap();
        let doc = example(t, &["spec.quota.joulesPerMonth"]).to_string();
        let Object::Tenant(t) = &apply::parse("t.json", &doc).unwrap()[0] else {
            panic!("{doc}")
        };
        assert_eq!((t.requests_per_minute, t.max_concurrent), (600, 16));
        assert!((t.joules_per_month - 1.5 * 3.6e6).abs() < 1e-6);
        let d = KINDS.iter().find(|k| k.kind == "Deployment").unwrap();
        let doc = example(d, &[]).to_string();
        let Object::Deployment(d) = &apply::parse("d.json", &doc).unwrap()[0] else {
            panic!("{doc}")
        };
        assert!(d.autoscale && d.max_replicas == 3 && d.ttft_p95_ms == 500 && d.priority == 5);
    }

    /// The fields of `struct NAME { ... }` in apply.rs, as serde names them (camelCase).
    fn accepted_by(name: &str) -> Vec<String> {
        const APPLY: &str = include_str!("apply.rs");
        let start = [format!("struct {name} {{"), format!("struct {name}<")]
            .iter()
            .find_map(|p| APPLY.find(p.as_str()))
            .unwrap_or_else(|| panic!("apply.rs has no struct {name}"));
        let body = &APPLY[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find("\n}").unwrap()];
        body.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && !l.starts_with("//"))
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim()))
            .filter(|n| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
            })
            .map(|n| {
                let mut parts = n.split('_');
                let mut out = parts.next().unwrap_or_default().to_string();
                for p in parts {
                    let mut c = p.chars();
                    if let Some(first) = c.next() {
                        out.extend(first.to_uppercase());
                        out.push_str(c.as_str());
                    }
                }
                out
            })
            .collect()
    }

    #[test]
    fn every_field_apply_accepts_is_explained() {
        let all = ["Model", "Deployment", "Tenant"];
        for (structure, kinds, prefix) in [
            ("Doc", &all[..], ""),
            ("Metadata", &all[..], "metadata."),
            ("ModelDoc", &["Model"][..], "spec."),
            ("DeploymentDoc", &["Deployment"][..], "spec."),
            ("LatencyDoc", &["Deployment"][..], "spec.latency."),
            ("TenantDoc", &["Tenant"][..], "spec."),
            ("LimitsDoc", &["Tenant"][..], "spec.limits."),
            ("QuotaDoc", &["Tenant"][..], "spec.quota."),
        ] {
            let fields = accepted_by(structure);
            assert!(
                !fields.is_empty(),
                "no fields found in apply.rs's {structure}"
            );
            for kind in kinds {
                let k = KINDS.iter().find(|k| k.kind == *kind).unwrap();
                for name in &fields {
                    let path = format!("{prefix}{name}");
                    assert!(
                        k.fields.iter().any(|f| f.path == path),
                        "apply takes {kind} {path} ({structure}), which explain does not explain"
                    );
                }
            }
        }
    }

    #[test]
    fn explain_shows_kinds_and_fields_as_kubectl_does() {
        for what in ["tenant", "Tenants", "tn", "TENANT"] {
            let t = text(what).unwrap();
            assert!(
                t.starts_with("KIND:     Tenant\nVERSION:  joule/v1\n\nDESCRIPTION:\n"),
                "{t}"
            );
            for f in TENANT {
                assert!(
                    t.contains(&format!("{}\t<{}>", f.name(), f.ty)),
                    "{}: {t}",
                    f.path
                );
                assert!(t.contains(f.description), "{}", f.path);
            }
        }
        let t = text("deployment").unwrap();
        assert!(t.contains("\n  spec\t<object> -required-\n"), "{t}");
        assert!(t.contains("\n    replicas\t<integer | \"auto\">\n"), "{t}");
        assert!(t.contains("\n      ttftP95Ms\t<integer>\n"), "{t}");
        let m = text("mo").unwrap();
        assert!(
            m.contains("sha256\t<string> -required-") && m.contains("sizeBytes"),
            "{m}"
        );
        for what in ["tenant.limits", "tenant.spec.limits", "Tenant.Limits"] {
            let l = text(what).unwrap();
            assert!(l.contains("FIELD: limits <object>\n"), "{what}: {l}");
            assert!(
                l.contains("\n  requestsPerMinute\t<integer>\n"),
                "{what}: {l}"
            );
            assert!(!l.contains("weight"), "{what}: {l}");
        }
        let leaf = text("deploy.replicas").unwrap();
        assert!(leaf.contains("FIELD: replicas <integer | \"auto\">") && !leaf.contains("FIELDS:"));
    }

    #[test]
    fn unknown_kinds_and_fields_get_the_closest() {
        let e = text("tenat").unwrap_err();
        assert!(e.to_string().ends_with("did you mean \"tenants\"?"), "{e}");
        assert_eq!(exit::code(&e), exit::Code::Usage);
        let e = text("tenant.limts").unwrap_err().to_string();
        assert!(e.ends_with("did you mean \"tenant.limits\"?"), "{e}");
        let e = text("deployment.spec.replicsa").unwrap_err().to_string();
        assert!(
            e.ends_with("did you mean \"deployment.spec.replicas\"?"),
            "{e}"
        );
        let e = text("tenant.colour").unwrap_err().to_string();
        assert!(
            e.contains("`joulectl explain tenant` lists its fields"),
            "{e}"
        );
        let e = text("nodes").unwrap_err().to_string();
        assert!(e.contains("Model, Deployment and Tenant"), "{e}");
    }

    #[test]
    fn json_explains_the_same_fields() {
        let (k, top) = resolve("tenant.quota").unwrap();
        let v = serde_json::to_value(Explanation {
            kind: k.kind,
            api_version: API_VERSION,
            field: top,
            description: top.map_or(k.description, |t| t.description),
            fields: below(k, top),
        })
        .unwrap();
        assert_eq!(v["apiVersion"], "joule/v1");
        assert_eq!(v["field"]["type"], "object");
        let names: Vec<&str> = v["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "spec.quota.tokensPerMonth",
                "spec.quota.joulesPerMonth",
                "spec.quota.kwhPerMonth"
            ]
        );
    }
}
