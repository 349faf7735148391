//! What one worker shows: the models it serves and its engine, energy and calibration
//! figures (`joulectl models`, `joulectl stats`).

use joule_proto::internal::v1 as pb;
use joule_proto::v1::EnergySource;
use serde::Serialize;

use crate::render::{Format, emit, print, table, table_text};

#[derive(Serialize)]
pub struct Model<'a> {
    pub name: &'a str,
    pub architecture: &'a str,
    pub parameters: u64,
    pub context_length: u32,
    pub memory_bytes: u64,
    pub kv_blocks: u32,
    pub kv_block_size: u32,
    pub sha256: &'a str,
    pub path: &'a str,
}

#[derive(Serialize)]
pub struct Point {
    pub batch_size: u32,
    pub output_tokens_per_s: f64,
    pub watts: f64,
    pub tokens_per_joule: f64,
}

#[derive(Serialize)]
pub struct ModelStats<'a> {
    pub model: &'a str,
    pub running: u32,
    pub waiting: u32,
    pub kv_blocks_used: u32,
    pub kv_blocks_free: u32,
    pub prefix_hit_rate: f64,
    pub output_tokens_per_s: f64,
    pub output_tokens: u64,
    pub joules: f64,
    pub energy: &'static str,
    pub calibration: Vec<Point>,
}

#[derive(Serialize)]
pub struct Stats<'a> {
    pub watts: f64,
    pub joules: f64,
    pub energy: &'static str,
    pub sensors: &'a [String],
    pub draining: bool,
    pub models: Vec<ModelStats<'a>>,
}

#[derive(Serialize)]
pub struct Items<T> {
    pub items: Vec<T>,
}

fn source(v: i32) -> &'static str {
    match EnergySource::try_from(v) {
        Ok(EnergySource::Measured) => "measured",
        Ok(EnergySource::Estimated) => "estimated",
        _ => "unknown",
    }
}

fn mib(b: u64) -> String {
    format!("{:.0}Mi", b as f64 / (1u64 << 20) as f64)
}

/// `joulectl models` as JSON/YAML: `{"items": [...]}`.
pub fn model_views(ms: &[pb::ModelInfo]) -> Items<Model<'_>> {
    Items {
        items: ms
            .iter()
            .map(|m| Model {
                name: &m.name,
                architecture: &m.architecture,
                parameters: m.parameters,
                context_length: m.context_length,
                memory_bytes: m.memory_bytes,
                kv_blocks: m.kv_blocks,
                kv_block_size: m.kv_block_size,
                sha256: &m.sha256,
                path: &m.path,
            })
            .collect(),
    }
}

pub const MODEL_HEADERS: [&str; 7] = [
    "NAME",
    "ARCH",
    "PARAMS",
    "CONTEXT",
    "MEMORY",
    "KV BLOCKS",
    "SHA256",
];

/// `joulectl models` as table rows, under [`MODEL_HEADERS`].
pub fn model_rows(ms: &[pb::ModelInfo]) -> Vec<Vec<String>> {
    ms.iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.architecture.clone(),
                format!("{:.0}M", m.parameters as f64 / 1e6),
                m.context_length.to_string(),
                mib(m.memory_bytes),
                format!("{}x{}", m.kv_blocks, m.kv_block_size),
                m.sha256.chars().take(12).collect(),
            ]
        })
        .collect()
}

pub fn models(ms: &[pb::ModelInfo], f: Format) -> anyhow::Result<()> {
    if !f.is_table() {
        return emit(&model_views(ms), f);
    }
    table(&MODEL_HEADERS, model_rows(ms));
    Ok(())
}

/// `joulectl stats` as a view (what JSON/YAML print).
pub fn stats_view(s: &pb::StatsResponse) -> Stats<'_> {
    let p = s.power.clone().unwrap_or_default();
    Stats {
        watts: p.watts,
        joules: p.joules,
        energy: source(p.source),
        sensors: s
            .power
            .as_ref()
            .map(|p| p.sensors.as_slice())
            .unwrap_or(&[]),
        draining: s.draining,
        models: s
            .models
            .iter()
            .map(|m| ModelStats {
                model: &m.model,
                running: m.running,
                waiting: m.waiting,
                kv_blocks_used: m.kv_blocks_used,
                kv_blocks_free: m.kv_blocks_free,
                prefix_hit_rate: m.prefix_hit_rate,
                output_tokens_per_s: m.output_tokens_per_s,
                output_tokens: m.output_tokens,
                joules: m.joules,
                energy: source(m.energy_source),
                calibration: m
                    .calibration
                    .iter()
                    .flat_map(|c| &c.points)
                    .map(|p| Point {
                        batch_size: p.batch_size,
                        output_tokens_per_s: p.output_tokens_per_s,
                        watts: p.watts,
                        tokens_per_joule: p.tokens_per_joule,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// `joulectl stats` as text: the power line, the engines, each model's calibration.
pub fn stats_text(v: &Stats) -> String {
    let mut s = format!(
        "power {:.1} W, {:.1} J since start ({}; sensors: {}){}\n",
        v.watts,
        v.joules,
        v.energy,
        v.sensors.join(", "),
        if v.draining { ", DRAINING" } else { "" }
    );
    s.push_str(&table_text(
        &[
            "MODEL",
            "RUNNING",
            "WAITING",
            "KV USED/FREE",
            "PREFIX HITS",
            "TOK/S",
            "TOKENS",
            "JOULES",
            "TOKENS/J",
        ],
        v.models
            .iter()
            .map(|m| {
                vec![
                    m.model.to_string(),
                    m.running.to_string(),
                    m.waiting.to_string(),
                    format!("{}/{}", m.kv_blocks_used, m.kv_blocks_free),
                    format!("{:.0}%", m.prefix_hit_rate * 100.0),
                    format!("{:.1}", m.output_tokens_per_s),
                    m.output_tokens.to_string(),
                    format!("{:.1} ({})", m.joules, m.energy),
                    if m.joules > 0.0 {
                        format!("{:.2}", m.output_tokens as f64 / m.joules)
                    } else {
                        "-".into()
                    },
                ]
            })
            .collect(),
    ));
    for m in &v.models {
        if m.calibration.is_empty() {
            continue;
        }
        s.push_str(&format!("\ncalibration of {} ({}):\n", m.model, v.energy));
        s.push_str(&table_text(
            &["BATCH", "TOK/S", "WATTS", "TOKENS/J"],
            m.calibration
                .iter()
                .map(|p| {
                    vec![
                        p.batch_size.to_string(),
                        format!("{:.1}", p.output_tokens_per_s),
                        format!("{:.1}", p.watts),
                        format!("{:.3}", p.tokens_per_joule),
                    ]
                })
                .collect(),
        ));
    }
    s
}

pub fn stats(s: &pb::StatsResponse, f: Format) -> anyhow::Result<()> {
    let v = stats_view(s);
    if !f.is_table() {
        return emit(&v, f);
    }
    print(&stats_text(&v))
}
