//! A tenant's bill for one month: its usage rows summed per model, priced per million tokens
//! and per kWh, with measured (NVML/RAPL) and estimated energy shown apart. [`compute`] is the
//! pure arithmetic; [`text`] is how `bill` prints it (JSON/YAML print the [`Bill`] itself).

use std::collections::BTreeMap;

use joule_proto::v1;
use serde::Serialize;

use crate::render::table_text;

/// Joules in a kWh.
const J_PER_KWH: f64 = 3.6e6;

/// What a bill charges.
#[derive(Debug, Clone, Serialize)]
pub struct Prices {
    pub per_mtok: f64,
    pub per_kwh: f64,
    pub currency: String,
}

/// One model's part of the bill.
#[derive(Debug, Serialize, PartialEq)]
pub struct Line {
    pub model: String,
    pub requests: u64,
    /// Prompt plus completion tokens.
    pub tokens: u64,
    /// Of `tokens`, prompt tokens served from the prefix cache.
    pub cached_tokens: u64,
    pub measured_kwh: f64,
    pub estimated_kwh: f64,
    pub tokens_cost: f64,
    pub energy_cost: f64,
}

#[derive(Debug, Serialize)]
pub struct Bill {
    pub tenant: String,
    /// `YYYY-MM`.
    pub month: String,
    /// The days billed, `YYYY-MM-DD`, inclusive.
    pub from: String,
    pub to: String,
    pub prices: Prices,
    pub lines: Vec<Line>,
    pub tokens: u64,
    pub cached_tokens: u64,
    pub measured_kwh: f64,
    pub estimated_kwh: f64,
    pub tokens_subtotal: f64,
    pub energy_subtotal: f64,
    pub total: f64,
}

/// The bill of `tenant` for `month` from its usage `rows` (rows of other tenants are left out).
pub fn compute(
    tenant: &str,
    month: &str,
    (from, to): (u32, u32),
    rows: &[v1::UsageRow],
    prices: &Prices,
) -> Bill {
    let mut per_model: BTreeMap<&str, (u64, u64, u64, f64, f64)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.tenant == tenant) {
        let e = per_model.entry(&r.model).or_default();
        e.0 += r.requests;
        e.1 += r.prompt_tokens + r.completion_tokens;
        e.2 += r.cached_prompt_tokens;
        e.3 += r.measured_joules;
        e.4 += r.estimated_joules;
    }
    let lines: Vec<Line> = per_model
        .into_iter()
        .map(
            |(model, (requests, tokens, cached, measured, estimated))| Line {
                model: model.to_string(),
                requests,
                tokens,
                cached_tokens: cached,
                measured_kwh: measured / J_PER_KWH,
                estimated_kwh: estimated / J_PER_KWH,
                tokens_cost: tokens as f64 / 1e6 * prices.per_mtok,
                energy_cost: (measured + estimated) / J_PER_KWH * prices.per_kwh,
            },
        )
        .collect();
    let tokens: u64 = lines.iter().map(|l| l.tokens).sum();
    let measured_kwh: f64 = lines.iter().map(|l| l.measured_kwh).sum();
    let estimated_kwh: f64 = lines.iter().map(|l| l.estimated_kwh).sum();
    let tokens_subtotal = tokens as f64 / 1e6 * prices.per_mtok;
    let energy_subtotal = (measured_kwh + estimated_kwh) * prices.per_kwh;
    Bill {
        tenant: tenant.to_string(),
        month: month.to_string(),
        from: joule_client::calendar::format_day(from),
        to: joule_client::calendar::format_day(to),
        prices: prices.clone(),
        cached_tokens: lines.iter().map(|l| l.cached_tokens).sum(),
        lines,
        tokens,
        measured_kwh,
        estimated_kwh,
        tokens_subtotal,
        energy_subtotal,
        total: tokens_subtotal + energy_subtotal,
    }
}

/// The bill as `bill` prints it.
pub fn text(b: &Bill) -> String {
    let c = &b.prices.currency;
    let mut s = format!(
        "Bill for tenant {}, {} ({} to {}, UTC)\nPrices: {} {c} per million tokens, {} {c} per \
         kWh\n\n",
        b.tenant, b.month, b.from, b.to, b.prices.per_mtok, b.prices.per_kwh
    );
    if b.lines.is_empty() {
        s.push_str("No usage.\n");
    } else {
        s.push_str(&table_text(
            &[
                "MODEL",
                "REQUESTS",
                "TOKENS",
                "CACHED",
                "MEASURED-KWH",
                "ESTIMATED-KWH",
                "TOKENS-COST",
                "ENERGY-COST",
            ],
            b.lines
                .iter()
                .map(|l| {
                    vec![
                        l.model.clone(),
                        l.requests.to_string(),
                        l.tokens.to_string(),
                        l.cached_tokens.to_string(),
                        format!("{:.3}", l.measured_kwh),
                        format!("{:.3}", l.estimated_kwh),
                        format!("{:.2}", l.tokens_cost),
                        format!("{:.2}", l.energy_cost),
                    ]
                })
                .collect(),
        ));
    }
    s.push_str(&format!(
        "\ntokens: {} ({} cached) x {} {c}/Mtok = {:.2} {c}\n",
        b.tokens, b.cached_tokens, b.prices.per_mtok, b.tokens_subtotal
    ));
    s.push_str(&format!(
        "energy: {:.3} kWh measured (NVML/RAPL), {:.3} kWh estimated x {} {c}/kWh = {:.2} {c}\n",
        b.measured_kwh, b.estimated_kwh, b.prices.per_kwh, b.energy_subtotal
    ));
    s.push_str(&format!("total:  {:.2} {c}\n", b.total));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(day: u32, model: &str, prompt: u64, cached: u64, completion: u64) -> v1::UsageRow {
        v1::UsageRow {
            tenant: "acme".into(),
            day,
            model: model.into(),
            requests: 10,
            prompt_tokens: prompt,
            cached_prompt_tokens: cached,
            completion_tokens: completion,
            measured_joules: 1.8e6,
            estimated_joules: 0.0,
        }
    }

    #[test]
    fn a_known_usage_gives_known_totals() {
        let mut rows = vec![
            row(20_788, "smollm2", 600_000, 100_000, 400_000),
            row(20_789, "smollm2", 1_000_000, 0, 0),
            row(20_788, "qwen", 0, 0, 500_000),
        ];
        rows[2].measured_joules = 0.0;
        rows[2].estimated_joules = 3.6e6;
        let mut other = row(20_788, "smollm2", 9_000_000, 0, 0);
        other.tenant = "globex".into();
        rows.push(other);
        let prices = Prices {
            per_mtok: 2.0,
            per_kwh: 0.5,
            currency: "USD".into(),
        };
        let b = compute("acme", "2026-12", (20_788, 20_818), &rows, &prices);
        assert_eq!(
            (b.from.as_str(), b.to.as_str()),
            ("2026-12-01", "2026-12-31")
        );
        assert_eq!(b.lines.len(), 2);
        // Models in name order: qwen, then smollm2 (two days summed).
        assert_eq!(
            (b.lines[0].model.as_str(), b.lines[0].tokens),
            ("qwen", 500_000)
        );
        let s = &b.lines[1];
        assert_eq!(
            (s.requests, s.tokens, s.cached_tokens),
            (20, 2_000_000, 100_000)
        );
        assert!((s.measured_kwh - 1.0).abs() < 1e-12 && s.estimated_kwh == 0.0);
        assert_eq!((b.tokens, b.cached_tokens), (2_500_000, 100_000));
        assert!((b.measured_kwh - 1.0).abs() < 1e-12);
        assert!((b.estimated_kwh - 1.0).abs() < 1e-12);
        assert!((b.tokens_subtotal - 5.0).abs() < 1e-9);
        assert!((b.energy_subtotal - 1.0).abs() < 1e-9);
        assert!((b.total - 6.0).abs() < 1e-9);
        let t = text(&b);
        assert!(
            t.contains("energy: 1.000 kWh measured (NVML/RAPL), 1.000 kWh estimated"),
            "{t}"
        );
        assert!(t.contains("total:  6.00 USD"), "{t}");
        let empty = compute("acme", "2026-12", (20_788, 20_818), &[], &prices);
        assert_eq!(empty.total, 0.0);
        assert!(text(&empty).contains("No usage."));
    }
}
