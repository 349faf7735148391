//! The committed fleet data (`scheduler/testdata/fleet.json`): hardware classes from published
//! figures (each naming its source, or saying it is assumed and how), model shapes, and named
//! fleets; and simulated [`Node`]s built from it for the tests and the `placement-sim` bench.
//!
//! A simulated node's "measured" profiles are the roofline of its class figures
//! ([`profile::roofline`]) labelled [`Source::Measured`]: stand-ins for calibration, so that
//! tests can drop them and watch estimates take over. They are not measurements.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{Deployment, Health, Node, Profile, Replicas, Schedule, Source, profile};

/// The fleet data, compiled in.
pub const FLEET_JSON: &str = include_str!("../../testdata/fleet.json");

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The note of a simulated node's stand-in profile.
pub const SYNTHETIC_NOTE: &str = "synthetic: roofline of the class figures in fleet.json";

/// The figures every class must give a source for.
const CLASS_FIGURES: [&str; 6] = [
    "memory_gib",
    "usable_gib",
    "mem_bandwidth_gbs",
    "tdp_watts",
    "idle_watts",
    "busy_watts",
];
const MODEL_FIGURES: [&str; 2] = ["size_bytes", "kv_bytes"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Gpu,
    Cpu,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Gpu => "gpu",
            Kind::Cpu => "cpu",
        }
    }
}

/// A hardware class.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Class {
    pub name: String,
    /// Node names are `{short}-{n}`.
    pub short: String,
    pub kind: Kind,
    pub memory_gib: f64,
    /// Memory left for models.
    pub usable_gib: f64,
    pub mem_bandwidth_gbs: f64,
    pub tdp_watts: f64,
    /// Loaded-idle.
    pub idle_watts: f64,
    /// At full decode load.
    pub busy_watts: f64,
    /// Figure name to its source.
    pub sources: BTreeMap<String, String>,
}

/// A model's memory shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelShape {
    pub name: String,
    pub size_bytes: u64,
    /// The KV cache reserved per replica.
    pub kv_bytes: u64,
    pub sources: BTreeMap<String, String>,
}

impl ModelShape {
    /// A deployment of this model: no selector, no target, priority 0, no demand.
    pub fn deployment(&self, name: &str, replicas: Replicas) -> Deployment {
        Deployment {
            name: name.to_owned(),
            model: self.name.clone(),
            weights_bytes: self.size_bytes,
            kv_bytes: self.kv_bytes,
            replicas,
            selector: BTreeMap::new(),
            max_itl_ms: None,
            priority: 0,
            demand_tokens_per_s: 0.0,
            excluded: BTreeMap::new(),
        }
    }
}

/// `count` nodes of a class in a named fleet.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub class: String,
    pub count: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The whole data file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    #[serde(default)]
    pub notes: Vec<String>,
    pub classes: Vec<Class>,
    pub models: Vec<ModelShape>,
    pub fleets: BTreeMap<String, Vec<Member>>,
}

/// Parses and checks the fleet data: unique names, usable figures, a source for every figure,
/// fleets naming known classes.
pub fn load(json: &str) -> Result<Fleet, String> {
    let fleet: Fleet = serde_json::from_str(json).map_err(|e| format!("fleet data: {e}"))?;
    let mut names = BTreeSet::new();
    let mut shorts = BTreeSet::new();
    for c in &fleet.classes {
        if !names.insert(c.name.as_str()) || !shorts.insert(c.short.as_str()) {
            return Err(format!("class {}: name or short name given twice", c.name));
        }
        let positive = [
            c.memory_gib,
            c.usable_gib,
            c.mem_bandwidth_gbs,
            c.tdp_watts,
            c.busy_watts,
        ];
        if positive.iter().any(|v| !(v.is_finite() && *v > 0.0))
            || !(c.idle_watts.is_finite() && c.idle_watts >= 0.0)
        {
            return Err(format!(
                "class {}: a figure is not a finite positive number",
                c.name
            ));
        }
        if c.usable_gib > c.memory_gib || c.idle_watts > c.busy_watts || c.busy_watts > c.tdp_watts
        {
            return Err(format!(
                "class {}: needs usable_gib <= memory_gib and idle <= busy <= tdp watts",
                c.name
            ));
        }
        sourced(&c.name, &c.sources, &CLASS_FIGURES)?;
    }
    let mut models = BTreeSet::new();
    for m in &fleet.models {
        if !models.insert(m.name.as_str()) {
            return Err(format!("model {}: given twice", m.name));
        }
        if m.size_bytes == 0 {
            return Err(format!("model {}: size_bytes is 0", m.name));
        }
        sourced(&m.name, &m.sources, &MODEL_FIGURES)?;
    }
    for (name, members) in &fleet.fleets {
        if let Some(m) = members.iter().find(|m| !names.contains(m.class.as_str())) {
            return Err(format!("fleet {name}: unknown class {}", m.class));
        }
    }
    Ok(fleet)
}

fn sourced(what: &str, sources: &BTreeMap<String, String>, figures: &[&str]) -> Result<(), String> {
    match figures
        .iter()
        .find(|f| sources.get(**f).is_none_or(|s| s.trim().is_empty()))
    {
        Some(f) => Err(format!("{what}: no source for {f}")),
        None => Ok(()),
    }
}

impl Fleet {
    pub fn class(&self, name: &str) -> Option<&Class> {
        self.classes.iter().find(|c| c.name == name)
    }

    pub fn model(&self, name: &str) -> Option<&ModelShape> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The nodes of a named fleet, `{short}-{n}` numbered per class from 1, each with a
    /// stand-in measured profile for each model in `measured`.
    pub fn nodes(&self, fleet: &str, measured: &[&ModelShape]) -> Result<Vec<Node>, String> {
        let members = self
            .fleets
            .get(fleet)
            .ok_or_else(|| format!("no fleet {fleet}"))?;
        let mut numbers: BTreeMap<&str, u32> = BTreeMap::new();
        let mut nodes = Vec::new();
        for member in members {
            let class = self
                .class(&member.class)
                .ok_or_else(|| format!("fleet {fleet}: unknown class {}", member.class))?;
            for _ in 0..member.count {
                let n = numbers.entry(class.short.as_str()).or_insert(0);
                *n += 1;
                let mut built = node(class, &format!("{}-{n}", class.short), measured);
                built.labels.extend(member.labels.clone());
                nodes.push(built);
            }
        }
        Ok(nodes)
    }
}

/// One ready, active node of a class, labelled `kind=gpu|cpu` and `gpu=SHORT` or
/// `cpu=SHORT`, with a stand-in measured profile for each model in `measured`.
pub fn node(class: &Class, name: &str, measured: &[&ModelShape]) -> Node {
    let labels = BTreeMap::from([
        ("kind".to_owned(), class.kind.label().to_owned()),
        (class.kind.label().to_owned(), class.short.clone()),
    ]);
    let profiles = measured
        .iter()
        .map(|m| (m.name.clone(), synthetic_profile(class, m)))
        .collect();
    Node {
        name: name.to_owned(),
        class: class.name.clone(),
        labels,
        health: Health::Ready,
        schedule: Schedule::Active,
        memory_bytes: (class.usable_gib * GIB) as u64,
        mem_bandwidth_gbs: class.mem_bandwidth_gbs,
        idle_watts: class.idle_watts,
        busy_watts: class.busy_watts,
        profiles,
    }
}

/// The roofline of a class's figures for a model, labelled measured (see the module
/// documentation).
pub fn synthetic_profile(class: &Class, model: &ModelShape) -> Profile {
    Profile {
        points: profile::roofline(
            class.mem_bandwidth_gbs,
            model.size_bytes,
            class.idle_watts,
            class.busy_watts,
        ),
        source: Source::Measured,
        note: SYNTHETIC_NOTE.to_owned(),
    }
}
