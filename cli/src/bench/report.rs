//! The report of a run, through the CLI's one output seam ([`crate::render`]): `-o json|yaml`
//! (the workload, the load, the order of the rounds, each target's [`Summary`], the ratios), or
//! a table of the figures side by side (target, compare, target/compare), then the errors by
//! kind with one example each.
//!
//! It prints and formats; it computes nothing but display strings.

use serde::Serialize;
use serde_json::Value;

use super::stats::{Pcts, Ratios, Summary};
use crate::render::{self, Format};

/// Everything `-o json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: Value,
    pub load: Value,
    /// Warmup requests per target, sent first and not counted.
    pub warmup: u64,
    /// The order the rounds ran in.
    pub order: &'static str,
    pub target: Summary,
    pub compare: Option<Summary>,
    /// Target over compare (latencies: below 1 is faster; throughput: above 1 is more).
    pub ratios: Option<Ratios>,
}

impl Report {
    pub fn new(
        workload: Value,
        load: Value,
        warmup: u64,
        order: &'static str,
        target: Summary,
        compare: Option<Summary>,
    ) -> Self {
        let ratios = compare.as_ref().map(|c| Ratios::of(&target, c));
        Self {
            workload,
            load,
            warmup,
            order,
            target,
            compare,
            ratios,
        }
    }

    /// The target's summary, then the compare's.
    pub fn all(&self) -> impl Iterator<Item = &Summary> {
        std::iter::once(&self.target).chain(self.compare.as_ref())
    }
}

fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), num)
}

fn ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))
}

fn pct(p: &Option<Pcts>, q: fn(&Pcts) -> f64) -> String {
    opt(p.as_ref().map(q))
}

fn energy(s: &Summary) -> String {
    match s.energy.joules_per_output_token {
        Some(j) => format!("{} ({})", num(j), s.energy.source),
        None => format!("- ({})", s.energy.source),
    }
}

/// One row: a label, each summary's cell, and (with a compare) the ratio.
fn line(
    r: &Report,
    label: &str,
    cell: impl Fn(&Summary) -> String,
    rat: Option<Option<f64>>,
) -> Vec<String> {
    let mut row = vec![label.to_string()];
    row.extend(r.all().map(&cell));
    if r.compare.is_some() {
        row.push(rat.map_or_else(String::new, ratio));
    }
    row
}

/// Prints the report as `f` says.
pub fn print(r: &Report, f: Format) -> anyhow::Result<()> {
    if !f.is_table() {
        return render::emit(r, f);
    }
    let x = r.ratios.as_ref();
    let table = vec![
        line(r, "api", |s| s.api.to_string(), None),
        line(r, "address", |s| s.address.clone(), None),
        line(r, "model", |s| s.model.clone(), None),
        line(r, "requests ok", |s| s.requests.ok.to_string(), None),
        line(
            r,
            "requests failed",
            |s| s.requests.failed.to_string(),
            None,
        ),
        line(r, "wall (s)", |s| num(s.wall_s), None),
        line(r, "output tokens", |s| s.output_tokens.to_string(), None),
        line(
            r,
            "output tokens/s",
            |s| num(s.output_tokens_per_s),
            x.map(|x| x.output_tokens_per_s),
        ),
        line(
            r,
            "requests/s",
            |s| num(s.requests_per_s),
            x.map(|x| x.requests_per_s),
        ),
        line(
            r,
            "TTFT p50 (ms)",
            |s| pct(&s.ttft_ms, |p| p.p50),
            x.map(|x| x.ttft_p50),
        ),
        line(r, "TTFT p90 (ms)", |s| pct(&s.ttft_ms, |p| p.p90), None),
        line(
            r,
            "TTFT p99 (ms)",
            |s| pct(&s.ttft_ms, |p| p.p99),
            x.map(|x| x.ttft_p99),
        ),
        line(
            r,
            "ITL p50 (ms)",
            |s| pct(&s.itl_ms, |p| p.p50),
            x.map(|x| x.itl_p50),
        ),
        line(r, "ITL p90 (ms)", |s| pct(&s.itl_ms, |p| p.p90), None),
        line(
            r,
            "ITL p99 (ms)",
            |s| pct(&s.itl_ms, |p| p.p99),
            x.map(|x| x.itl_p99),
        ),
        line(r, "TPOT p50 (ms)", |s| pct(&s.tpot_ms, |p| p.p50), None),
        line(
            r,
            "E2E p50 (ms)",
            |s| pct(&s.e2e_ms, |p| p.p50),
            x.map(|x| x.e2e_p50),
        ),
        line(r, "E2E p90 (ms)", |s| pct(&s.e2e_ms, |p| p.p90), None),
        line(r, "E2E p99 (ms)", |s| pct(&s.e2e_ms, |p| p.p99), None),
        line(
            r,
            "joules/output token",
            energy,
            x.map(|x| x.joules_per_output_token),
        ),
    ];
    let mut header = vec!["METRIC", "TARGET"];
    if r.compare.is_some() {
        header.extend(["COMPARE", "TARGET/COMPARE"]);
    }
    println!(
        "workload {}, load {}, warmup {}, order: {}",
        r.workload, r.load, r.warmup, r.order
    );
    render::table(&header, table);
    let errors: Vec<Vec<String>> = [("target", Some(&r.target)), ("compare", r.compare.as_ref())]
        .into_iter()
        .filter_map(|(name, s)| s.map(|s| (name, s)))
        .flat_map(|(name, s)| {
            s.errors.iter().map(move |e| {
                vec![
                    name.to_string(),
                    e.kind.clone(),
                    e.count.to_string(),
                    e.example.clone(),
                ]
            })
        })
        .collect();
    if !errors.is_empty() {
        println!();
        render::table(&["OF", "ERROR", "COUNT", "EXAMPLE"], errors);
    }
    Ok(())
}
