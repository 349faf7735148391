//! What the cluster serves: models, deployments (the desired state) and placements (which
//! worker runs which deployment, as the placement function decided and the workers report).
//! Each function applies one command to the state or changes nothing and says why.

use joule_proto::internal::v1 as pb;

use super::names;

pub fn put_model(s: &mut pb::ClusterState, c: &pb::PutModel) -> Result<(), String> {
    let mut m = c.model.clone().ok_or("put_model without a model")?;
    names::model(&m.name)?;
    names::sha256("the model's sha256", &m.sha256)?;
    if m.source.is_empty() {
        return Err(format!("model {:?} needs a source (a path or URL)", m.name));
    }
    if let Some(old) = s.models.get(&m.name) {
        m.created_at_ms = old.created_at_ms;
    }
    s.models.insert(m.name.clone(), m);
    Ok(())
}

pub fn delete_model(s: &mut pb::ClusterState, c: &pb::DeleteModel) -> Result<(), String> {
    if !s.models.contains_key(&c.name) {
        return Err(format!("no model named {:?}", c.name));
    }
    let users: Vec<&str> = s
        .deployments
        .values()
        .filter(|d| d.model == c.name)
        .map(|d| d.name.as_str())
        .collect();
    if !users.is_empty() {
        return Err(format!(
            "model {:?} is used by deployment(s) {}; delete or change them first",
            c.name,
            users.join(", ")
        ));
    }
    s.models.remove(&c.name);
    Ok(())
}

/// The most replicas one deployment may ask for.
pub const MAX_REPLICAS: u32 = 1024;

pub fn put_deployment(s: &mut pb::ClusterState, c: &pb::PutDeployment) -> Result<(), String> {
    let mut d = c
        .deployment
        .clone()
        .ok_or("put_deployment without a deployment")?;
    names::label("deployment", &d.name)?;
    if !s.models.contains_key(&d.model) {
        return Err(format!(
            "no model named {:?}: deployment {:?} needs it; add the model first",
            d.model, d.name
        ));
    }
    if d.replicas > MAX_REPLICAS || d.max_replicas > MAX_REPLICAS {
        return Err(format!(
            "deployment {:?} asks for {} replicas; at most {MAX_REPLICAS}",
            d.name,
            d.replicas.max(d.max_replicas)
        ));
    }
    if d.autoscale && (d.max_replicas == 0 || d.min_replicas > d.max_replicas) {
        return Err(format!(
            "deployment {:?}: autoscale needs 0 <= min_replicas ({}) <= max_replicas ({}) and \
             max_replicas >= 1",
            d.name, d.min_replicas, d.max_replicas
        ));
    }
    for (k, v) in &d.selector {
        names::label_value("selector", k, v)?;
    }
    let constraints = d.constraints.get_or_insert_default();
    constraints.nodes.sort();
    constraints.nodes.dedup();
    match s.deployments.get(&d.name) {
        Some(old) => {
            d.created_at_ms = old.created_at_ms;
            d.pending_reason.clone_from(&old.pending_reason);
            let same = old.model == d.model
                && old.replicas == d.replicas
                && old.constraints == d.constraints
                && old.autoscale == d.autoscale
                && old.min_replicas == d.min_replicas
                && old.max_replicas == d.max_replicas
                && old.selector == d.selector
                && old.ttft_p95_ms == d.ttft_p95_ms
                && old.itl_p95_ms == d.itl_p95_ms
                && old.priority == d.priority;
            d.generation = old.generation + u64::from(!same);
        }
        None => {
            d.generation = 1;
            d.created_at_ms = d.updated_at_ms;
        }
    }
    s.deployments.insert(d.name.clone(), d);
    Ok(())
}

pub fn delete_deployment(s: &mut pb::ClusterState, c: &pb::DeleteDeployment) -> Result<(), String> {
    s.deployments
        .remove(&c.name)
        .ok_or_else(|| format!("no deployment named {:?}", c.name))?;
    s.placements.retain(|_, p| p.deployment != c.name);
    Ok(())
}

fn placement_key(deployment: &str, node: &str) -> String {
    format!("{deployment}/{node}")
}

pub fn set_placements(s: &mut pb::ClusterState, c: &pb::SetPlacements) -> Result<(), String> {
    let d = s
        .deployments
        .get(&c.deployment)
        .ok_or_else(|| format!("no deployment named {:?}", c.deployment))?;
    if c.generation != d.generation {
        return Err(format!(
            "stale placement: decided for generation {} of {:?}, which is at {}",
            c.generation, c.deployment, d.generation
        ));
    }
    let most = if d.autoscale {
        d.max_replicas
    } else {
        d.replicas
    };
    if c.nodes.len() > most as usize {
        return Err(format!(
            "{} placements for {:?}, which asks for at most {most} replicas",
            c.nodes.len(),
            c.deployment
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for n in c.nodes.iter().chain(&c.retiring).chain(&c.failed) {
        if !seen.insert(n.as_str()) {
            return Err(format!("worker {n:?} is named twice"));
        }
    }
    for n in &c.nodes {
        let node = s
            .nodes
            .get(n)
            .ok_or_else(|| format!("no node named {n:?}"))?;
        let new = !s.placements.contains_key(&placement_key(&d.name, n));
        if new && node.schedule != pb::NodeSchedule::Active as i32 {
            return Err(format!(
                "worker {n:?} is cordoned or draining: it takes no new placements"
            ));
        }
    }
    for n in c.retiring.iter().chain(&c.failed) {
        if !s.placements.contains_key(&placement_key(&d.name, n)) {
            return Err(format!(
                "worker {n:?} does not run {:?}: only a placement in force can be kept",
                d.name
            ));
        }
    }
    for n in &c.failed {
        let p = &s.placements[&placement_key(&d.name, n)];
        if p.state != pb::PlacementState::Failed as i32 {
            return Err(format!(
                "the placement of {:?} on {n:?} has not failed",
                d.name
            ));
        }
    }
    let (name, model, generation) = (d.name.clone(), d.model.clone(), d.generation);
    let pending = c.pending_reason.clone();
    if let Some(d) = s.deployments.get_mut(&name) {
        d.pending_reason = pending;
    }
    s.placements
        .retain(|_, p| p.deployment != name || seen.contains(p.node.as_str()));
    for n in &c.nodes {
        let p = s
            .placements
            .entry(placement_key(&name, n))
            .or_insert_with(|| pb::Placement {
                deployment: name.clone(),
                node: n.clone(),
                model: model.clone(),
                ..Default::default()
            });
        let failed = p.state == pb::PlacementState::Failed as i32;
        if p.model != model || p.state == pb::PlacementState::Unspecified as i32 || failed {
            // A new placement, the deployment moved to another model, or a retry after a
            // failure: load again.
            p.model = model.clone();
            p.state = pb::PlacementState::Pending as i32;
            p.message.clear();
            p.progress = 0.0;
            p.since_ms = c.at_ms;
        }
        p.retiring = false;
        p.generation = generation;
        if let Some(r) = c.reasons.get(n) {
            p.reason.clone_from(r);
        }
    }
    for n in &c.retiring {
        if let Some(p) = s.placements.get_mut(&placement_key(&name, n)) {
            p.retiring = true;
        }
    }
    Ok(())
}

pub fn set_placement_state(
    s: &mut pb::ClusterState,
    c: &pb::SetPlacementState,
) -> Result<(), String> {
    if c.state == pb::PlacementState::Unspecified as i32
        || pb::PlacementState::try_from(c.state).is_err()
    {
        return Err(format!(
            "placement state {} is not one a worker reports",
            c.state
        ));
    }
    let p = s
        .placements
        .get(&placement_key(&c.deployment, &c.node))
        .ok_or_else(|| {
            format!(
                "deployment {:?} is not placed on worker {:?}",
                c.deployment, c.node
            )
        })?;
    let file = s.models.get(&p.model).map(|m| m.sha256.as_str());
    if c.attempt != p.failures
        || p.state == pb::PlacementState::Failed as i32
        || (!c.sha256.is_empty() && file.is_some_and(|f| f != c.sha256))
    {
        return Err(format!(
            "stale report on the placement of {:?} on {:?}: it is about attempt {} of {}, the \
             placement is at attempt {} of {}",
            c.deployment,
            c.node,
            c.attempt,
            if c.sha256.is_empty() { "-" } else { &c.sha256 },
            p.failures,
            file.unwrap_or("-")
        ));
    }
    let Some(p) = s.placements.get_mut(&placement_key(&c.deployment, &c.node)) else {
        return Ok(());
    };
    if p.state != c.state {
        p.since_ms = c.at_ms;
        if c.state == pb::PlacementState::Failed as i32 {
            p.failures += 1;
        }
    }
    if c.state == pb::PlacementState::Serving as i32 {
        p.failures = 0;
    }
    p.state = c.state;
    p.message.clone_from(&c.message);
    p.progress = c.progress.clamp(0.0, 1.0);
    Ok(())
}

/// A worker leaves the cluster: its placements go with it.
pub fn forget_node(s: &mut pb::ClusterState, name: &str) {
    s.placements.retain(|_, p| p.node != name);
}
