//! Usage records (what one tenant used of one model on one UTC day, with measured and
//! estimated joules kept apart): `get usage` as a table, JSON/YAML, or CSV.

use joule_client::calendar::format_day;
use joule_proto::v1;
use serde::Serialize;

use crate::render::Render;

#[derive(Debug, Serialize)]
pub struct Usage {
    pub tenant: String,
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub model: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_prompt_tokens: u64,
    pub completion_tokens: u64,
    /// From NVML or RAPL readings.
    pub measured_joules: f64,
    pub estimated_joules: f64,
}

impl From<v1::UsageRow> for Usage {
    fn from(r: v1::UsageRow) -> Self {
        Self {
            tenant: r.tenant,
            day: format_day(r.day),
            model: r.model,
            requests: r.requests,
            prompt_tokens: r.prompt_tokens,
            cached_prompt_tokens: r.cached_prompt_tokens,
            completion_tokens: r.completion_tokens,
            measured_joules: r.measured_joules,
            estimated_joules: r.estimated_joules,
        }
    }
}

impl Render for Usage {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec![
            "TENANT",
            "DAY",
            "MODEL",
            "REQUESTS",
            "PROMPT",
            "CACHED",
            "COMPLETION",
            "MEASURED-J",
            "ESTIMATED-J",
        ]
    }

    fn row(&self, _wide: bool) -> Vec<String> {
        vec![
            self.tenant.clone(),
            self.day.clone(),
            self.model.clone(),
            self.requests.to_string(),
            self.prompt_tokens.to_string(),
            self.cached_prompt_tokens.to_string(),
            self.completion_tokens.to_string(),
            format!("{:.1}", self.measured_joules),
            format!("{:.1}", self.estimated_joules),
        ]
    }
}

/// One CSV field, quoted when it must be (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The rows as CSV, with a header line.
pub fn csv(rows: &[Usage]) -> String {
    let mut out = String::from(
        "tenant,day,model,requests,prompt_tokens,cached_prompt_tokens,completion_tokens,\
         measured_joules,estimated_joules\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            field(&r.tenant),
            r.day,
            field(&r.model),
            r.requests,
            r.prompt_tokens,
            r.cached_prompt_tokens,
            r.completion_tokens,
            r.measured_joules,
            r.estimated_joules,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_the_header_and_quotes_what_it_must() {
        let r = Usage::from(v1::UsageRow {
            tenant: "acme".into(),
            day: 20_788,
            model: "a,b".into(),
            requests: 3,
            prompt_tokens: 100,
            cached_prompt_tokens: 40,
            completion_tokens: 50,
            measured_joules: 12.5,
            estimated_joules: 0.0,
        });
        assert_eq!(
            csv(&[r]),
            "tenant,day,model,requests,prompt_tokens,cached_prompt_tokens,completion_tokens,\
             measured_joules,estimated_joules\n\
             acme,2026-12-01,\"a,b\",3,100,40,50,12.5,0\n"
        );
    }
}
