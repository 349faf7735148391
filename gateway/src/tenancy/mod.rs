//! Tenancy at the gateway: who a request is for ([`keys`]), whether it may run now
//! ([`limits`]: per-minute and concurrency limits leased from the leader; monthly quotas here),
//! and what it cost ([`usage`]: metered and committed to the replicated usage records).
//! [`Tenancy::admit`] runs before routing and gives the request a [`Ticket`]; the relay tells
//! the ticket what was relayed and the final usage, and the ticket settles the budget and bills
//! the tenant when the request ends, however it ends.
//!
//! Nothing here routes or parses HTTP, and no API key is ever stored, logged or echoed.

pub mod keys;
pub mod limits;
pub mod link;
pub mod usage;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use joule_proto::v1;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::view::View;
use keys::{Caller, Tenant};
use limits::{Headers, Limiter, Permit};
use usage::{Meter, Used};

pub struct Tenancy {
    /// `false` with `--no-auth`: every request is the `default` tenant's, unlimited.
    pub auth: bool,
    pub limiter: Arc<Limiter>,
    pub meter: Arc<Meter>,
    pub metrics: Arc<Metrics>,
    anonymous: Arc<Tenant>,
    /// Tokens reserved by this gateway's running requests, per tenant with a monthly quota.
    in_flight: Mutex<std::collections::HashMap<Arc<str>, u64>>,
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds from `now_ms` to the start of the next calendar month (UTC).
fn to_next_month(now_ms: i64) -> u64 {
    let day = (now_ms.max(0) / 86_400_000) as u32;
    let (_, last) = joule_client::calendar::month_of(day);
    let next = i64::from(last + 1) * 86_400_000;
    (next - now_ms).max(1000) as u64
}

impl Tenancy {
    pub fn new(
        auth: bool,
        limiter: Arc<Limiter>,
        meter: Arc<Meter>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            auth,
            limiter,
            meter,
            metrics,
            anonymous: Tenant::anonymous(),
            in_flight: Mutex::new(Default::default()),
        }
    }

    /// Who an `Authorization` header value stands for (anyone, with `--no-auth`).
    pub fn caller(&self, view: &View, authorization: Option<&[u8]>) -> Result<Caller, Error> {
        if !self.auth {
            return Ok(Caller {
                tenant: self.anonymous.clone(),
                key_id: String::new(),
            });
        }
        if !view.synced {
            return Err(Error::Unavailable(
                "the gateway has not heard from a scheduler yet, so it cannot check API keys; \
                 retry in a moment"
                    .into(),
            ));
        }
        view.tenants
            .authenticate(authorization, now_ms())
            .inspect_err(|_| self.metrics.refused("", "unauthenticated"))
    }

    /// Admits `caller`'s request for `deployment` that may use up to `reserve` tokens: its
    /// ticket and the rate-limit headers, or the refusal (with its headers).
    pub async fn admit(
        self: &Arc<Self>,
        caller: Caller,
        deployment: &str,
        reserve: u64,
    ) -> Result<(Arc<Ticket>, Headers), (Error, Headers)> {
        let t = caller.tenant.clone();
        if !t.may_use(deployment) {
            self.metrics.refused(&t.name, "permission_denied");
            return Err((
                Error::PermissionDenied(format!(
                    "tenant {:?} may not use the model {deployment:?}; it may use: {}",
                    &*t.name,
                    t.deployments.join(", ")
                )),
                Vec::new(),
            ));
        }
        if let Err(e) = self.quota(&t, reserve) {
            self.metrics.refused(&t.name, "quota_exceeded");
            return Err((e, Vec::new()));
        }
        match self.limiter.admit(&t, reserve).await {
            Ok((permit, headers)) => {
                let monthly = t.quota.tokens_per_month > 0;
                if monthly {
                    *self
                        .in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(t.name.clone())
                        .or_default() += reserve;
                }
                Ok((
                    Arc::new(Ticket {
                        tenancy: self.clone(),
                        caller,
                        model: deployment.to_string(),
                        permit: Mutex::new(permit),
                        relayed: AtomicU64::new(0),
                        finished: AtomicBool::new(false),
                        dispatched: AtomicBool::new(false),
                        reserve,
                        prompt_estimate: AtomicU64::new(0),
                        monthly,
                    }),
                    headers,
                ))
            }
            Err(e) => {
                self.metrics.refused(&t.name, "rate_limited");
                Err((e, self.limiter.headers_for(&t.name)))
            }
        }
    }

    /// The monthly token and energy quotas: committed usage plus what this gateway has not
    /// committed yet and what its running requests may still use.
    fn quota(&self, t: &Tenant, reserve: u64) -> Result<(), Error> {
        let q = &t.quota;
        if q.tokens_per_month == 0 && q.joules_per_month == 0 {
            return Ok(());
        }
        let (tok, mj) = self.meter.uncommitted(&t.name);
        let running = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&t.name)
            .copied()
            .unwrap_or(0);
        let now = now_ms();
        if q.tokens_per_month > 0 && t.month_tokens + tok + running + reserve > q.tokens_per_month {
            return Err(Error::QuotaExceeded {
                message: format!(
                    "tenant {:?} has used its {} tokens for this month (with what runs now and \
                     this request's {reserve})",
                    &*t.name, q.tokens_per_month
                ),
                retry_ms: to_next_month(now),
            });
        }
        if q.joules_per_month > 0 && (t.month_mj + mj) / 1000 >= q.joules_per_month {
            return Err(Error::QuotaExceeded {
                message: format!(
                    "tenant {:?} has used its {} J ({:.3} kWh) of energy for this month",
                    &*t.name,
                    q.joules_per_month,
                    q.joules_per_month as f64 / 3.6e6
                ),
                retry_ms: to_next_month(now),
            });
        }
        Ok(())
    }
}

/// An admitted request's account: settled and billed once, when the request ends.
pub struct Ticket {
    tenancy: Arc<Tenancy>,
    caller: Caller,
    model: String,
    permit: Mutex<Option<Permit>>,
    relayed: AtomicU64,
    finished: AtomicBool,
    /// Sent to a worker at least once (its prompt ran, or may have).
    dispatched: AtomicBool,
    /// The tokens admitted for (max_tokens and the prompt's estimate).
    reserve: u64,
    prompt_estimate: AtomicU64,
    /// Counted in the tenancy's in-flight tokens (a monthly quota).
    monthly: bool,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("tenant", &self.caller.tenant.name)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// Who the worker's fair share counts the request against.
    pub fn tenant(&self) -> v1::Tenant {
        v1::Tenant {
            id: self.caller.tenant.name.to_string(),
            weight: Some(self.caller.tenant.weight),
        }
    }

    pub fn tenant_name(&self) -> &str {
        &self.caller.tenant.name
    }

    /// The request goes to a worker, whose prompt is about `prompt_tokens` long.
    pub fn dispatched(&self, prompt_tokens: u32) {
        self.prompt_estimate
            .store(prompt_tokens.into(), Ordering::Relaxed);
        self.dispatched.store(true, Ordering::Release);
    }

    /// `n` more tokens went to the client.
    pub fn relayed(&self, n: usize) {
        self.relayed.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The request finished with this usage (as the client was told it).
    pub fn finish(&self, u: &v1::Usage) {
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        self.bill(Used::from_usage(u));
    }

    fn bill(&self, used: Used) {
        let t = &self.tenancy;
        self.release_in_flight();
        if let Some(p) = self.permit.lock().unwrap_or_else(|e| e.into_inner()).take() {
            p.settle(used.tokens());
        }
        t.meter.add(
            &self.caller.tenant.name,
            &self.caller.key_id,
            &self.model,
            used,
            now_ms(),
        );
        t.metrics.billed(&self.caller.tenant.name, &used);
    }
}

impl Drop for Ticket {
    /// A request that ended without its finish (client gone, no replica left): once it was
    /// sent to a worker, its prompt (as estimated) and the tokens relayed are billed, their
    /// energy unknown. One that never reached a worker costs nothing.
    fn drop(&mut self) {
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        if !self.dispatched.load(Ordering::Acquire) {
            // The permit's drop gives the whole reservation back.
            self.release_in_flight();
            return;
        }
        self.bill(Used {
            prompt_tokens: self.prompt_estimate.load(Ordering::Relaxed),
            completion_tokens: self.relayed.load(Ordering::Relaxed),
            ..Default::default()
        });
    }
}

impl Ticket {
    /// Takes this request's reservation out of the tenant's running tokens (monthly quota).
    fn release_in_flight(&self) {
        if self.monthly {
            let t = &self.tenancy;
            let mut m = t.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = m.get_mut(&self.caller.tenant.name) {
                *n = n.saturating_sub(self.reserve);
                if *n == 0 {
                    m.remove(&self.caller.tenant.name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_frees_up_at_the_next_month() {
        // 2026-12-31T23:00:00Z → one hour to 2027-01-01.
        let day = joule_client::calendar::parse_date("2026-12-31").unwrap();
        let now = i64::from(day) * 86_400_000 + 23 * 3_600_000;
        assert_eq!(to_next_month(now), 3_600_000);
    }
}
