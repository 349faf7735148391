//! Metering: every finished request's tokens and joules, summed per tenant, UTC day and
//! deployment, and committed to the replicated usage records every `--usage-flush-ms`
//! (`Registry/RecordUsage`). Each report carries this process's reporter id (its name and a
//! per-start id) and the next sequence number; a report whose answer was lost is sent again
//! with the same sequence, and the state machine counts it once. A crash loses what was
//! metered since the last acknowledged report: at most one flush interval of usage, plus one
//! report in flight.
//!
//! It also answers what the tenant has used that is not committed yet, for monthly quotas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use joule_proto::internal::v1 as pb;
use joule_proto::v1;

use super::link::Link;

type RecordKey = (Arc<str>, u32, String);

#[derive(Debug, Default, Clone)]
struct Batch {
    records: HashMap<RecordKey, pb::UsageCounters>,
    key_uses: HashMap<(Arc<str>, String), i64>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.key_uses.is_empty()
    }

    fn tokens_and_mj(&self, tenant: &str) -> (u64, u64) {
        self.records
            .iter()
            .filter(|((t, _, _), _)| &**t == tenant)
            .fold((0, 0), |(tok, mj), (_, c)| {
                (
                    tok + c.prompt_tokens + c.output_tokens,
                    mj + c.measured_mj + c.estimated_mj,
                )
            })
    }
}

#[derive(Debug, Default)]
struct State {
    pending: Batch,
    /// The report being sent (kept until acknowledged) and its sequence.
    sending: Option<(u64, Batch)>,
    sequence: u64,
}

pub struct Meter {
    reporter: String,
    state: Mutex<State>,
}

/// One request's usage, as it is billed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Used {
    pub prompt_tokens: u64,
    pub cached_prompt_tokens: u64,
    pub completion_tokens: u64,
    pub joules: f64,
    pub measured: bool,
}

impl Used {
    pub fn from_usage(u: &v1::Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens.into(),
            cached_prompt_tokens: u.cached_prompt_tokens.into(),
            completion_tokens: u.completion_tokens.into(),
            joules: if u.joules.is_finite() && u.joules > 0.0 {
                u.joules
            } else {
                0.0
            },
            measured: u.energy_source == v1::EnergySource::Measured as i32,
        }
    }

    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl Meter {
    pub fn new(reporter: String) -> Arc<Self> {
        Arc::new(Self {
            reporter,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one finished request's usage.
    pub fn add(&self, tenant: &Arc<str>, key_id: &str, model: &str, u: Used, now_ms: i64) {
        let day = (now_ms.max(0) / 86_400_000) as u32;
        let mut s = self.lock();
        let c = s
            .pending
            .records
            .entry((tenant.clone(), day, model.to_string()))
            .or_default();
        c.requests += 1;
        c.prompt_tokens += u.prompt_tokens;
        c.cached_prompt_tokens += u.cached_prompt_tokens;
        c.output_tokens += u.completion_tokens;
        let mj = (u.joules * 1000.0).round() as u64;
        if u.measured {
            c.measured_mj += mj;
        } else {
            c.estimated_mj += mj;
        }
        if !key_id.is_empty() {
            let at = s
                .pending
                .key_uses
                .entry((tenant.clone(), key_id.to_string()))
                .or_default();
            *at = (*at).max(now_ms);
        }
    }

    /// Tokens and millijoules of `tenant` metered here but not yet committed.
    pub fn uncommitted(&self, tenant: &str) -> (u64, u64) {
        let s = self.lock();
        let (a, b) = s.pending.tokens_and_mj(tenant);
        let (c, d) = s
            .sending
            .as_ref()
            .map_or((0, 0), |(_, b)| b.tokens_and_mj(tenant));
        (a + c, b + d)
    }

    /// The next report to send: the unacknowledged one again, or the pending usage.
    fn next_report(&self) -> Option<pb::RecordUsage> {
        let mut s = self.lock();
        if s.sending.is_none() {
            if s.pending.is_empty() {
                return None;
            }
            s.sequence += 1;
            let b = std::mem::take(&mut s.pending);
            s.sending = Some((s.sequence, b));
        }
        let (seq, b) = s.sending.as_ref()?;
        Some(pb::RecordUsage {
            reporter: self.reporter.clone(),
            sequence: *seq,
            records: b
                .records
                .iter()
                .map(|((t, day, model), c)| pb::UsageRecord {
                    tenant: t.to_string(),
                    model: model.clone(),
                    day: *day,
                    counters: Some(*c),
                })
                .collect(),
            key_uses: b
                .key_uses
                .iter()
                .map(|((t, id), at)| pb::KeyUse {
                    tenant: t.to_string(),
                    id: id.clone(),
                    at_ms: *at,
                })
                .collect(),
        })
    }

    fn acknowledged(&self, seq: u64) {
        let mut s = self.lock();
        if s.sending.as_ref().is_some_and(|(q, _)| *q == seq) {
            s.sending = None;
        }
    }

    /// Sends what is due once; `Err` says why the schedulers did not take it (kept for the
    /// next try).
    pub async fn flush(&self, link: &Link) -> Result<(), String> {
        while let Some(r) = self.next_report() {
            let seq = r.sequence;
            link.call(|mut c| {
                let r = r.clone();
                async move { c.record_usage(r).await }
            })
            .await
            .map_err(|e| e.message().to_string())?;
            self.acknowledged(seq);
        }
        Ok(())
    }

    /// Flushes every `every` until the process ends.
    pub async fn run(self: Arc<Self>, link: Arc<Link>, every: Duration) {
        let mut failures = 0u32;
        loop {
            tokio::time::sleep(every).await;
            match self.flush(&link).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::warn!(error = %e, "usage not committed yet; kept for the next try");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(p: u64, c: u64, j: f64, measured: bool) -> Used {
        Used {
            prompt_tokens: p,
            cached_prompt_tokens: 0,
            completion_tokens: c,
            joules: j,
            measured,
        }
    }

    #[test]
    fn usage_is_summed_per_tenant_day_and_model_and_resent_with_its_sequence() {
        let m = Meter::new("gw-1".into());
        let acme: Arc<str> = Arc::from("acme");
        let day_ms = 86_400_000 * 20_000;
        m.add(
            &acme,
            "jk-aaaaaaaa",
            "smollm2",
            used(10, 5, 1.5, true),
            day_ms,
        );
        m.add(
            &acme,
            "jk-aaaaaaaa",
            "smollm2",
            used(1, 2, 0.25, false),
            day_ms + 5,
        );
        m.add(
            &acme,
            "",
            "smollm2",
            used(1, 1, 0.0, false),
            day_ms + 86_400_000,
        );
        assert_eq!(m.uncommitted("acme"), (20, 1750));
        let r = m.next_report().unwrap();
        assert_eq!((r.reporter.as_str(), r.sequence), ("gw-1", 1));
        assert_eq!(r.records.len(), 2, "two days");
        let first = r.records.iter().find(|x| x.day == 20_000).unwrap();
        let c = first.counters.unwrap();
        assert_eq!(
            (
                c.requests,
                c.prompt_tokens,
                c.output_tokens,
                c.measured_mj,
                c.estimated_mj
            ),
            (2, 11, 7, 1500, 250)
        );
        assert_eq!(r.key_uses.len(), 1);
        assert_eq!(r.key_uses[0].at_ms, day_ms + 5);
        // Not acknowledged: the same report again, even with new usage meanwhile.
        m.add(&acme, "", "smollm2", used(3, 3, 0.0, false), day_ms);
        assert_eq!(m.next_report().unwrap().sequence, 1);
        assert_eq!(m.uncommitted("acme"), (26, 1750));
        m.acknowledged(1);
        let r = m.next_report().unwrap();
        assert_eq!(r.sequence, 2);
        assert_eq!(r.records.len(), 1);
        m.acknowledged(2);
        assert!(m.next_report().is_none());
        assert_eq!(m.uncommitted("acme"), (0, 0));
    }
}
