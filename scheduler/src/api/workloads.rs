//! The admin API's models, deployments and placements: requests checked and turned into
//! commands, state turned into replies. Bad input gets INVALID_ARGUMENT naming the field; an
//! unknown name gets NOT_FOUND naming what exists; deleting a model in use gets
//! FAILED_PRECONDITION naming the deployments (the state machine's own refusal).

use joule_proto::internal::v1 as pb;
use joule_proto::names;
use joule_proto::v1;

use crate::error::{Error, Result};

pub fn state_name(s: i32) -> &'static str {
    match pb::PlacementState::try_from(s) {
        Ok(pb::PlacementState::Pending) => "Pending",
        Ok(pb::PlacementState::Fetching) => "Fetching",
        Ok(pb::PlacementState::Loading) => "Loading",
        Ok(pb::PlacementState::Calibrating) => "Calibrating",
        Ok(pb::PlacementState::Serving) => "Ready",
        Ok(pb::PlacementState::Failed) => "Failed",
        _ => "Unknown",
    }
}

/// A model spec as the state's model; refuses bad fields naming them.
pub fn model(spec: v1::ModelSpec) -> Result<pb::Model> {
    let bad = |f: &str, e: String| Error::Invalid(format!("{f}: {e}"));
    names::model(&spec.name).map_err(|e| bad("metadata.name", e))?;
    names::sha256("the sha256", &spec.sha256).map_err(|e| bad("spec.sha256", e))?;
    let source_ok = spec.source.starts_with("file:///")
        || spec.source.starts_with("http://")
        || spec.source.starts_with("https://");
    if !source_ok {
        return Err(bad(
            "spec.source",
            format!(
                "{:?} is not file:///absolute/path, http://... or https://...",
                spec.source
            ),
        ));
    }
    if spec.size_bytes == 0 {
        return Err(bad(
            "spec.sizeBytes (size_bytes)",
            "required: the file's size in bytes (placement fits memory with it)".into(),
        ));
    }
    let format = if spec.format.is_empty() {
        "gguf".to_string()
    } else {
        spec.format.to_ascii_lowercase()
    };
    if format != "gguf" {
        return Err(bad(
            "spec.format",
            format!("{:?}: workers fetch gguf files only", spec.format),
        ));
    }
    Ok(pb::Model {
        name: spec.name,
        source: spec.source,
        sha256: spec.sha256,
        size_bytes: spec.size_bytes,
        format,
        ..Default::default()
    })
}

pub fn model_info(st: &pb::ClusterState, m: &pb::Model) -> v1::ModelInfo {
    v1::ModelInfo {
        spec: Some(v1::ModelSpec {
            name: m.name.clone(),
            source: m.source.clone(),
            sha256: m.sha256.clone(),
            size_bytes: m.size_bytes,
            format: m.format.clone(),
        }),
        created_at_ms: m.created_at_ms,
        used_by: st
            .deployments
            .values()
            .filter(|d| d.model == m.name)
            .map(|d| d.name.clone())
            .collect(),
    }
}

/// A deployment spec as the state's deployment; refuses bad fields naming them.
pub fn deployment(spec: v1::DeploymentSpec, st: &pb::ClusterState) -> Result<pb::Deployment> {
    let bad = |f: &str, e: String| Error::Invalid(format!("{f}: {e}"));
    names::label("deployment", &spec.name).map_err(|e| bad("metadata.name", e))?;
    if spec.model.is_empty() {
        return Err(bad(
            "spec.model",
            "required: the model this deployment serves".into(),
        ));
    }
    if !st.models.contains_key(&spec.model) {
        return Err(Error::NotFound(format!(
            "deployment {:?} names model {:?}, which the cluster does not have; models: {}",
            spec.name,
            spec.model,
            known(st.models.keys())
        )));
    }
    let max = crate::state::workloads::MAX_REPLICAS;
    if spec.autoscale {
        if spec.max_replicas == 0
            || spec.min_replicas > spec.max_replicas
            || spec.max_replicas > max
        {
            return Err(bad(
                "spec.maxReplicas (max_replicas)",
                format!(
                    "autoscale needs min_replicas ({}) <= max_replicas ({}), 1 <= max_replicas <= \
                     {max}",
                    spec.min_replicas, spec.max_replicas
                ),
            ));
        }
    } else if spec.replicas > max {
        return Err(bad(
            "spec.replicas",
            format!("{}: at most {max}", spec.replicas),
        ));
    }
    for (k, v) in &spec.selector {
        names::label_value("selector", k, v).map_err(|e| bad("spec.nodeSelector (selector)", e))?;
    }
    Ok(pb::Deployment {
        name: spec.name,
        model: spec.model,
        replicas: spec.replicas,
        autoscale: spec.autoscale,
        min_replicas: spec.min_replicas,
        max_replicas: spec.max_replicas,
        selector: spec.selector,
        ttft_p95_ms: spec.ttft_p95_ms,
        itl_p95_ms: spec.itl_p95_ms,
        priority: spec.priority,
        ..Default::default()
    })
}

pub fn placement_info(p: &pb::Placement) -> v1::PlacementInfo {
    v1::PlacementInfo {
        deployment: p.deployment.clone(),
        node: p.node.clone(),
        model: p.model.clone(),
        state: state_name(p.state).into(),
        message: p.message.clone(),
        since_ms: p.since_ms,
        reason: p.reason.clone(),
        progress: p.progress,
        retiring: p.retiring,
        failures: p.failures,
    }
}

pub fn deployment_info(st: &pb::ClusterState, d: &pb::Deployment) -> v1::DeploymentInfo {
    let placements: Vec<v1::PlacementInfo> = st
        .placements
        .values()
        .filter(|p| p.deployment == d.name)
        .map(placement_info)
        .collect();
    let ready = st
        .placements
        .values()
        .filter(|p| {
            p.deployment == d.name && p.state == pb::PlacementState::Serving as i32 && !p.retiring
        })
        .count() as u32;
    let placed = st
        .placements
        .values()
        .filter(|p| {
            p.deployment == d.name && p.state != pb::PlacementState::Failed as i32 && !p.retiring
        })
        .count() as u32;
    v1::DeploymentInfo {
        spec: Some(v1::DeploymentSpec {
            name: d.name.clone(),
            model: d.model.clone(),
            replicas: d.replicas,
            autoscale: d.autoscale,
            min_replicas: d.min_replicas,
            max_replicas: d.max_replicas,
            selector: d.selector.clone(),
            ttft_p95_ms: d.ttft_p95_ms,
            itl_p95_ms: d.itl_p95_ms,
            priority: d.priority,
        }),
        generation: d.generation,
        created_at_ms: d.created_at_ms,
        updated_at_ms: d.updated_at_ms,
        desired_replicas: if d.autoscale { placed } else { d.replicas },
        ready_replicas: ready,
        placements,
        pending_reason: d.pending_reason.clone(),
    }
}

/// "a, b, c", or "none".
pub fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

pub fn find_model(st: &pb::ClusterState, name: &str) -> Result<v1::ModelInfo> {
    st.models
        .get(name)
        .map(|m| model_info(st, m))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no model named {name:?}; models: {}",
                known(st.models.keys())
            ))
        })
}

pub fn find_deployment(st: &pb::ClusterState, name: &str) -> Result<v1::DeploymentInfo> {
    st.deployments
        .get(name)
        .map(|d| deployment_info(st, d))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no deployment named {name:?}; deployments: {}",
                known(st.deployments.keys())
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> v1::ModelSpec {
        v1::ModelSpec {
            name: "smollm2".into(),
            source: "file:///m/a.gguf".into(),
            sha256: "ab".repeat(32),
            size_bytes: 100,
            format: String::new(),
        }
    }

    #[test]
    fn bad_specs_are_refused_naming_the_field() {
        assert_eq!(model(spec()).unwrap().format, "gguf");
        for (f, field) in [
            (
                v1::ModelSpec {
                    name: "a b".into(),
                    ..spec()
                },
                "metadata.name:",
            ),
            (
                v1::ModelSpec {
                    sha256: "x".into(),
                    ..spec()
                },
                "spec.sha256:",
            ),
            (
                v1::ModelSpec {
                    source: "s3://b".into(),
                    ..spec()
                },
                "spec.source:",
            ),
            (
                v1::ModelSpec {
                    size_bytes: 0,
                    ..spec()
                },
                "spec.sizeBytes (size_bytes):",
            ),
            (
                v1::ModelSpec {
                    format: "onnx".into(),
                    ..spec()
                },
                "spec.format:",
            ),
        ] {
            let e = model(f).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)));
            assert!(e.to_string().starts_with(field), "{e}");
        }
        let mut st = pb::ClusterState::default();
        let d = v1::DeploymentSpec {
            name: "d".into(),
            model: "nope".into(),
            replicas: 1,
            ..Default::default()
        };
        let e = deployment(d.clone(), &st).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)) && e.to_string().contains("models: none"));
        st.models.insert("nope".into(), model(spec()).unwrap());
        assert!(deployment(d.clone(), &st).is_ok());
        let auto = v1::DeploymentSpec {
            autoscale: true,
            min_replicas: 3,
            max_replicas: 2,
            ..d.clone()
        };
        assert!(
            deployment(auto, &st)
                .unwrap_err()
                .to_string()
                .starts_with("spec.maxReplicas")
        );
        let sel = v1::DeploymentSpec {
            selector: [("gpu".to_string(), "-bad".to_string())].into(),
            ..d
        };
        assert!(
            deployment(sel, &st)
                .unwrap_err()
                .to_string()
                .starts_with("spec.nodeSelector")
        );
    }
}
