//! What one worker shows: the models it serves and its engine, energy and calibration
//! figures (`joulectl models`, `joulectl stats`).

use joule_proto::internal::v1 as pb;
use joule_proto::v1::EnergySource;
use serde::Serialize;

use crate::render::{Format, emit, table};

#[derive(Serialize)]
struct Model<'a> {
    name: &'a str,
    architecture: &'a str,
    parameters: u64,
    context_length: u32,
    memory_bytes: u64,
    kv_blocks: u32,
    kv_block_size: u32,
    sha256: &'a str,
    path: &'a str,
}

#[derive(Serialize)]
struct Point {
    batch_size: u32,
    output_tokens_per_s: f64,
    watts: f64,
    tokens_per_joule: f64,
}

#[derive(Serialize)]
struct ModelStats<'a> {
    model: &'a str,
    running: u32,
    waiting: u32,
    kv_blocks_used: u32,
    kv_blocks_free: u32,
    prefix_hit_rate: f64,
    output_tokens_per_s: f64,
    output_tokens: u64,
    joules: f64,
    energy: &'static str,
    calibration: Vec<Point>,
}

#[derive(Serialize)]
struct Stats<'a> {
    watts: f64,
    joules: f64,
    energy: &'static str,
    sensors: &'a [String],
    draining: bool,
    models: Vec<ModelStats<'a>>,
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

pub fn models(ms: &[pb::ModelInfo], f: Format) -> anyhow::Result<()> {
    if !f.is_table() {
        let v: Vec<Model> = ms
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
            .collect();
        return emit(&serde_json::json!({ "items": v }), f);
    }
    table(
        &[
            "NAME",
            "ARCH",
            "PARAMS",
            "CONTEXT",
            "MEMORY",
            "KV BLOCKS",
            "SHA256",
        ],
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
            .collect(),
    );
    Ok(())
}

pub fn stats(s: &pb::StatsResponse, f: Format) -> anyhow::Result<()> {
    let p = s.power.clone().unwrap_or_default();
    let v = Stats {
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
    };
    if !f.is_table() {
        return emit(&v, f);
    }
    println!(
        "power {:.1} W, {:.1} J since start ({}; sensors: {}){}",
        v.watts,
        v.joules,
        v.energy,
        v.sensors.join(", "),
        if v.draining { ", DRAINING" } else { "" }
    );
    table(
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
    );
    for m in &v.models {
        if m.calibration.is_empty() {
            continue;
        }
        println!("\ncalibration of {} ({}):", m.model, v.energy);
        table(
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
        );
    }
    Ok(())
}
