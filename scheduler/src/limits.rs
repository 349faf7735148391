//! Tenants' rate budgets, kept by the leader alone (in memory, like liveness): one token bucket
//! per tenant for requests and one for tokens, each holding up to the per-minute limit and
//! refilled at a sixtieth of it per second, and the concurrency slots each gateway holds.
//! Gateways lease slices of the buckets ([`Budgets::lease`]) and admit only what they hold, so
//! however many gateways there are, together they admit at most what the buckets give out.
//!
//! A new leader starts with full buckets and no holdings: a failover can let one more bucket's
//! worth through. A gateway's slots lapse [`LEASE`] after its last lease, so a dead gateway's
//! slots come back. Each gateway holds one spare slot when they are free; a gateway that needs a
//! slot held as another's spare gets it, and the other loses the spare at its next lease, so
//! concurrency can pass the limit by one slot per other gateway for at most one lease round. This module never proposes a command and never blocks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use joule_proto::internal::v1 as pb;

/// How long concurrency slots stay held without a renewing lease; also how long a gateway
/// counts as present.
pub const LEASE: Duration = Duration::from_secs(3);
/// The most tenants one lease may ask about.
pub const MAX_ASKS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// The per-minute limit: the bucket's size.
    cap: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn full(cap: f64, now: Instant) -> Self {
        Self {
            cap,
            level: cap,
            at: now,
        }
    }

    fn per_s(&self) -> f64 {
        self.cap / 60.0
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.per_s()).min(self.cap);
        self.at = now;
    }

    /// Takes up to `want` whole units; returns how many.
    fn take(&mut self, want: u64) -> u64 {
        let got = (want as f64).min(self.level.floor().max(0.0));
        self.level -= got;
        got as u64
    }

    fn give_back(&mut self, n: u64) {
        self.level = (self.level + n as f64).min(self.cap);
    }

    /// Milliseconds until the bucket holds `n` (capped at its size), 0 if it does.
    fn ms_until(&self, n: f64) -> u32 {
        let short = n.min(self.cap) - self.level;
        if short <= 0.0 {
            0
        } else {
            ((short / self.per_s()) * 1000.0)
                .ceil()
                .min(u32::MAX as f64) as u32
        }
    }
}

#[derive(Default)]
struct Tenant {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    /// Slots held and needed, by gateway, and when last renewed.
    slots: HashMap<String, (u32, u32, Instant)>,
}

/// Keeps `b` sized to `limit` per minute (`None`: no limit).
fn resize(b: &mut Option<Bucket>, limit: u64, now: Instant) {
    match (limit, b.as_mut()) {
        (0, _) => *b = None,
        (l, None) => *b = Some(Bucket::full(l as f64, now)),
        (l, Some(x)) => {
            x.refill(now);
            x.cap = l as f64;
            x.level = x.level.min(x.cap);
        }
    }
}

#[derive(Default)]
struct Inner {
    term: u64,
    tenants: HashMap<String, Tenant>,
    gateways: HashMap<String, Instant>,
}

/// The leader's budgets.
#[derive(Default)]
pub struct Budgets {
    inner: Mutex<Inner>,
}

impl Budgets {
    /// Grants what `req` asks of the tenants' budgets in leadership `term`; `quota` is each
    /// tenant's limits (`None`: no such tenant, nothing granted).
    pub fn lease(
        &self,
        term: u64,
        quota: impl Fn(&str) -> Option<pb::Quota>,
        req: &pb::LeaseRequest,
        now: Instant,
    ) -> pb::LeaseResponse {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.term != term {
            // A new leadership starts afresh (the stated failover bound).
            *g = Inner {
                term,
                ..Default::default()
            };
        }
        g.gateways.insert(req.gateway.clone(), now);
        g.gateways
            .retain(|_, at| now.saturating_duration_since(*at) < LEASE);
        let gateways = g.gateways.len() as u32;
        let mut grants = Vec::with_capacity(req.asks.len());
        for a in req.asks.iter().take(MAX_ASKS) {
            let Some(q) = quota(&a.tenant) else {
                g.tenants.remove(&a.tenant);
                grants.push(pb::TenantGrant {
                    tenant: a.tenant.clone(),
                    ..Default::default()
                });
                continue;
            };
            let t = g.tenants.entry(a.tenant.clone()).or_default();
            resize(&mut t.requests, q.requests_per_minute.into(), now);
            resize(&mut t.tokens, q.tokens_per_minute, now);
            let mut grant = pb::TenantGrant {
                tenant: a.tenant.clone(),
                ..Default::default()
            };
            match t.requests.as_mut() {
                None => grant.requests = a.requests,
                Some(b) => {
                    b.give_back(a.return_requests);
                    grant.requests = b.take(a.requests);
                    grant.requests_left = b.level;
                    grant.requests_retry_ms = b.ms_until(1.0);
                    grant.requests_reset_ms = b.ms_until(b.cap);
                }
            }
            match t.tokens.as_mut() {
                None => grant.tokens = a.tokens,
                Some(b) => {
                    b.give_back(a.return_tokens);
                    grant.tokens = b.take(a.tokens);
                    grant.tokens_left = b.level;
                    grant.tokens_retry_ms = b.ms_until(a.tokens.max(1) as f64);
                    grant.tokens_reset_ms = b.ms_until(b.cap);
                }
            }
            t.slots
                .retain(|_, (_, _, at)| now.saturating_duration_since(*at) < LEASE);
            let needed = a.concurrent_needed.min(a.concurrent);
            grant.concurrent = match q.max_concurrent {
                0 => a.concurrent,
                max => {
                    let (held, need) = t
                        .slots
                        .iter()
                        .filter(|(gw, _)| **gw != req.gateway)
                        .fold((0u32, 0u32), |(h, n), (_, (h1, n1, _))| (h + h1, n + n1));
                    // Spares first from what nobody holds; what this gateway needs may also
                    // come out of others' spares (they lose them at their next lease).
                    let free = a.concurrent.min(max.saturating_sub(held));
                    free.max(needed.min(max.saturating_sub(need)))
                }
            };
            if grant.concurrent == 0 {
                t.slots.remove(&req.gateway);
            } else {
                t.slots
                    .insert(req.gateway.clone(), (grant.concurrent, needed, now));
            }
            grants.push(grant);
        }
        pb::LeaseResponse {
            grants,
            lease_ms: LEASE.as_millis() as u32,
            gateways,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(rpm: u32, tpm: u64, conc: u32) -> pb::Quota {
        pb::Quota {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            max_concurrent: conc,
            ..Default::default()
        }
    }

    fn ask(gw: &str, requests: u64, tokens: u64, concurrent: u32) -> pb::LeaseRequest {
        pb::LeaseRequest {
            gateway: gw.into(),
            asks: vec![pb::TenantAsk {
                tenant: "acme".into(),
                requests,
                tokens,
                concurrent,
                concurrent_needed: concurrent,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn gateways_together_get_at_most_the_bucket_and_it_refills_at_a_sixtieth_per_second() {
        let b = Budgets::default();
        let q = |_: &str| Some(quota(60, 0, 0));
        let t0 = Instant::now();
        let mut got = 0;
        for i in 0..20 {
            let gw = if i % 2 == 0 { "a" } else { "b" };
            got += b.lease(1, q, &ask(gw, 10, 0, 0), t0).grants[0].requests;
        }
        assert_eq!(got, 60);
        let r = b.lease(1, q, &ask("a", 5, 0, 0), t0).grants[0].clone();
        assert_eq!((r.requests, r.requests_retry_ms), (0, 1000));
        assert_eq!(r.requests_reset_ms, 60_000);
        // 2.5 s later: two whole requests.
        let later = t0 + Duration::from_millis(2500);
        assert_eq!(
            b.lease(1, q, &ask("b", 5, 0, 0), later).grants[0].requests,
            2
        );
        // Tokens are unlimited here: granted as asked.
        assert_eq!(
            b.lease(1, q, &ask("b", 0, 500, 0), later).grants[0].tokens,
            500
        );
    }

    #[test]
    fn returned_budget_is_there_for_others_and_a_new_term_starts_full() {
        let b = Budgets::default();
        let q = |_: &str| Some(quota(0, 1000, 0));
        let t0 = Instant::now();
        assert_eq!(
            b.lease(1, q, &ask("a", 0, 1000, 0), t0).grants[0].tokens,
            1000
        );
        let g = b.lease(1, q, &ask("b", 0, 10, 0), t0).grants[0].clone();
        assert_eq!((g.tokens, g.tokens_left), (0, 0.0));
        assert_eq!(g.tokens_retry_ms, 600, "10 tokens at 1000/min");
        let mut back = ask("a", 0, 0, 0);
        back.asks[0].return_tokens = 400;
        b.lease(1, q, &back, t0);
        assert_eq!(
            b.lease(1, q, &ask("b", 0, 500, 0), t0).grants[0].tokens,
            400
        );
        assert_eq!(
            b.lease(2, q, &ask("b", 0, 5000, 0), t0).grants[0].tokens,
            1000
        );
    }

    #[test]
    fn slots_are_shared_and_a_silent_gateways_lapse() {
        let b = Budgets::default();
        let q = |_: &str| Some(quota(0, 0, 4));
        let t0 = Instant::now();
        assert_eq!(
            b.lease(1, q, &ask("a", 0, 0, 3), t0).grants[0].concurrent,
            3
        );
        assert_eq!(
            b.lease(1, q, &ask("b", 0, 0, 3), t0).grants[0].concurrent,
            1
        );
        // a gives one back; b may take it.
        b.lease(1, q, &ask("a", 0, 0, 2), t0);
        assert_eq!(
            b.lease(1, q, &ask("b", 0, 0, 3), t0).grants[0].concurrent,
            2
        );
        let later = t0 + LEASE + Duration::from_millis(1);
        let r = b.lease(1, q, &ask("b", 0, 0, 4), later);
        assert_eq!(r.grants[0].concurrent, 4, "a's slots lapsed");
        assert_eq!(r.gateways, 1);
    }

    #[test]
    fn a_gateway_that_needs_a_slot_gets_anothers_spare() {
        let b = Budgets::default();
        let q = |_: &str| Some(quota(0, 0, 2));
        let t0 = Instant::now();
        let mut spare = ask("a", 0, 0, 2);
        spare.asks[0].concurrent_needed = 1;
        assert_eq!(b.lease(1, q, &spare, t0).grants[0].concurrent, 2);
        let mut need = ask("b", 0, 0, 2);
        need.asks[0].concurrent_needed = 1;
        assert_eq!(
            b.lease(1, q, &need, t0).grants[0].concurrent,
            1,
            "a's spare"
        );
        // a renews: its spare is gone.
        assert_eq!(b.lease(1, q, &spare, t0).grants[0].concurrent, 1);
    }

    #[test]
    fn unknown_tenants_get_nothing_and_changed_limits_resize_the_bucket() {
        let b = Budgets::default();
        let t0 = Instant::now();
        let r = b.lease(1, |_| None, &ask("a", 5, 5, 5), t0);
        assert_eq!(
            (
                r.grants[0].requests,
                r.grants[0].tokens,
                r.grants[0].concurrent
            ),
            (0, 0, 0)
        );
        assert_eq!(
            b.lease(1, |_| Some(quota(100, 0, 0)), &ask("a", 10, 0, 0), t0)
                .grants[0]
                .requests,
            10
        );
        // Lowered to 5 per minute: at most what is left, within the new size.
        let g = b
            .lease(1, |_| Some(quota(5, 0, 0)), &ask("a", 10, 0, 0), t0)
            .grants[0]
            .clone();
        assert_eq!(g.requests, 5);
    }
}
