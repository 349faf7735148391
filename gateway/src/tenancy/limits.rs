//! Per-tenant admission at this gateway: requests and tokens per minute and concurrent requests,
//! held across every gateway by leasing from the leader's buckets (`Registry/Lease`, see the
//! scheduler's `limits`). A request is admitted from what this gateway holds: one request, its
//! token reservation (`max_tokens` plus the prompt's estimate) and a concurrency slot. The
//! reservation is settled on the final usage; what was not used goes back into the stock, and
//! an overrun is a debt the next lease pays.
//!
//! A lease round runs every [`ROUND`], and at once when a request finds the stock short: it
//! asks for what the waiting and recent requests need (at most the limit divided among the
//! gateways), gives back stock nobody needs, and renews the slots held. Cut off from every
//! scheduler for [`OFFLINE_AFTER`], the gateway admits from buckets of its own holding the limit
//! divided by the number of gateways last seen, so the cluster stays near its limits.
//!
//! It never blocks the hot path on the network when stock is there; it never logs a key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use joule_proto::internal::v1 as pb;
use tokio::sync::{Notify, watch};

use super::keys::Tenant;
use super::link::Link;
use crate::error::Error;

/// How often held budgets are topped up, returned and renewed.
pub const ROUND: Duration = Duration::from_millis(250);
/// How long a request waits for a lease round to fill the stock before it is refused.
const WAIT: Duration = Duration::from_millis(1500);
/// Without an answer from any scheduler for this long, the gateway admits on its own.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(3);
/// Stock (and the spare slot) unused this long is handed back.
const IDLE: Duration = Duration::from_secs(10);
/// Held slots are renewed at least this often (they lapse at the leader after 3 s).
const RENEW: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Clone, Copy)]
struct Grant {
    requests_left: f64,
    tokens_left: f64,
    requests_retry_ms: u32,
    tokens_retry_ms: u32,
    requests_reset_ms: u32,
    tokens_reset_ms: u32,
}

/// A bucket of the gateway's own, used only while cut off.
#[derive(Debug, Clone, Copy)]
struct Own {
    level: f64,
    at: Instant,
}

impl Own {
    fn take(&mut self, cap: f64, want: u64, now: Instant) -> u64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * cap / 60.0).min(cap);
        self.at = now;
        let got = (want as f64).min(self.level.floor().max(0.0));
        self.level -= got;
        got as u64
    }
}

#[derive(Debug)]
struct Local {
    quota: pb::Quota,
    /// Leased stock; tokens may be negative (a settled overrun).
    requests: i64,
    tokens: i64,
    slots: u32,
    in_flight: u32,
    /// What waiting requests need.
    wait_requests: u64,
    wait_tokens: u64,
    wait_largest: u64,
    wait_slots: u32,
    /// Admitted since the last round.
    served_requests: u64,
    served_tokens: u64,
    last_used: Instant,
    /// The largest reservation admitted since the tenant was last idle.
    recent_reserve: u64,
    /// When the slots were last renewed, and what was asked then.
    renewed: Instant,
    asked_slots: u32,
    grant: Grant,
    own_requests: Own,
    own_tokens: Own,
}

impl Local {
    fn new(quota: pb::Quota, now: Instant) -> Self {
        Self {
            quota,
            requests: 0,
            tokens: 0,
            slots: 0,
            in_flight: 0,
            wait_requests: 0,
            wait_tokens: 0,
            wait_largest: 0,
            wait_slots: 0,
            served_requests: 0,
            served_tokens: 0,
            last_used: now,
            renewed: now,
            asked_slots: 0,
            recent_reserve: 0,
            grant: Grant {
                requests_left: f64::from(quota.requests_per_minute),
                tokens_left: quota.tokens_per_minute as f64,
                ..Default::default()
            },
            own_requests: Own {
                level: 0.0,
                at: now,
            },
            own_tokens: Own {
                level: 0.0,
                at: now,
            },
        }
    }

    /// What is short for a request reserving `reserve` tokens (`None`: nothing).
    fn short(&self, reserve: u64) -> Option<&'static str> {
        let q = &self.quota;
        if q.requests_per_minute > 0 && self.requests < 1 {
            Some("requests")
        } else if q.tokens_per_minute > 0 && self.tokens < reserve as i64 {
            Some("tokens")
        } else if q.max_concurrent > 0 && self.in_flight >= self.slots {
            Some("concurrent")
        } else {
            None
        }
    }

    fn unwait(&mut self, reserve: u64) {
        self.wait_requests = self.wait_requests.saturating_sub(1);
        self.wait_tokens = self.wait_tokens.saturating_sub(reserve);
        self.wait_slots = self.wait_slots.saturating_sub(1);
    }

    /// Takes one request's share; returns the tokens taken from the stock (0 without a
    /// token limit), which is what its permit gives back.
    fn take(&mut self, reserve: u64, now: Instant) -> u64 {
        if self.quota.requests_per_minute > 0 {
            self.requests -= 1;
        }
        let took = if self.quota.tokens_per_minute > 0 {
            self.tokens -= reserve as i64;
            reserve
        } else {
            0
        };
        self.in_flight += 1;
        self.served_requests += 1;
        self.served_tokens += reserve;
        self.recent_reserve = self.recent_reserve.max(reserve);
        self.last_used = now;
        took
    }
}

/// Whether a tenant's quota has any per-minute or concurrency limit.
pub fn limited(q: &pb::Quota) -> bool {
    q.requests_per_minute > 0 || q.tokens_per_minute > 0 || q.max_concurrent > 0
}

#[derive(Debug)]
struct LinkState {
    last_ok: Instant,
    gateways: u32,
}

pub struct Limiter {
    locals: Mutex<HashMap<Arc<str>, Local>>,
    link_state: Mutex<LinkState>,
    wake: Notify,
    rounds: watch::Sender<u64>,
    gateway: String,
    /// Lease calls made and tenant asks sent (for the benchmark and logs).
    calls: std::sync::atomic::AtomicU64,
    asks_sent: std::sync::atomic::AtomicU64,
}

/// An admitted request's hold on its tenant's budget; settle it with the final usage (an
/// unsettled permit gives its whole reservation back: nothing was generated).
pub struct Permit {
    limiter: Arc<Limiter>,
    tenant: Arc<str>,
    reserved: u64,
    settled: bool,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("tenant", &self.tenant)
            .field("reserved", &self.reserved)
            .finish()
    }
}

impl Permit {
    /// Settles on `used` tokens (prompt plus completion); an overrun is a debt.
    pub fn settle(mut self, used: u64) {
        self.release(used);
    }

    fn release(&mut self, used: u64) {
        if self.settled {
            return;
        }
        self.settled = true;
        let mut l = self.limiter.lock();
        if let Some(t) = l.get_mut(&self.tenant) {
            // Exactly what was taken comes back, less what was used (a limit set meanwhile
            // does not mint stock).
            if self.reserved > 0 {
                t.tokens += self.reserved as i64 - used as i64;
            }
            t.in_flight = t.in_flight.saturating_sub(1);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.release(0);
    }
}

/// A request waiting for a lease round; a request dropped while waiting (its client gone)
/// takes its demand back.
struct Waiter {
    limiter: Arc<Limiter>,
    tenant: Arc<str>,
    reserve: u64,
    armed: bool,
}

impl Waiter {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.armed
            && let Some(t) = self.limiter.lock().get_mut(&self.tenant)
        {
            t.unwait(self.reserve);
        }
    }
}

/// The `x-ratelimit-*` headers for a tenant (empty for limits it does not have).
pub type Headers = Vec<(&'static str, String)>;

/// OpenAI's duration format: "250ms", "1s", "6m0s".
pub fn duration_text(ms: u32) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = f64::from(ms) / 1000.0;
        if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{s:.1}s")
        }
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

impl Limiter {
    pub fn new(gateway: String) -> Arc<Self> {
        Arc::new(Self {
            locals: Mutex::new(HashMap::new()),
            link_state: Mutex::new(LinkState {
                last_ok: Instant::now(),
                gateways: 1,
            }),
            wake: Notify::new(),
            rounds: watch::channel(0).0,
            gateway,
            calls: Default::default(),
            asks_sent: Default::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Local>> {
        self.locals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one request of `tenant` reserving `reserve` tokens, or says which limit it is
    /// over and when to retry. Waits (at most [`WAIT`]) only when the stock is short.
    pub async fn admit(
        self: &Arc<Self>,
        tenant: &Tenant,
        reserve: u64,
    ) -> Result<(Option<Permit>, Headers), Error> {
        let q = tenant.quota;
        if !limited(&q) {
            return Ok((None, Vec::new()));
        }
        if q.tokens_per_minute > 0 && reserve > q.tokens_per_minute {
            // It could never run: not a 429 to retry, a request to change.
            return Err(Error::bad(
                "max_tokens",
                format!(
                    "this request may use up to {reserve} tokens (its prompt and max_tokens), more \
                     than tenant {:?}'s limit of {} tokens per minute: lower max_tokens",
                    &*tenant.name, q.tokens_per_minute
                ),
            ));
        }
        let deadline = Instant::now() + WAIT;
        let mut rounds = self.rounds.subscribe();
        let mut waiting: Option<Waiter> = None;
        let mut waited = false;
        loop {
            let now = Instant::now();
            let was_waiting = waiting.take().map(Waiter::disarm).is_some();
            {
                let mut l = self.lock();
                let t = l
                    .entry(tenant.name.clone())
                    .or_insert_with(|| Local::new(q, now));
                t.quota = q;
                if was_waiting {
                    t.unwait(reserve);
                }
                if let Some(kind) = t.short(reserve) {
                    // After a lease round, a budget that is spent (not just short here) or a
                    // slot still missing is a refusal; otherwise wait for the next round.
                    let spent = match kind {
                        "requests" => t.grant.requests_left < 1.0,
                        "tokens" => t.grant.tokens_left < reserve as f64,
                        // Every slot is here and in use: none can come from elsewhere.
                        _ => t.slots >= q.max_concurrent,
                    };
                    if (waited && spent) || now >= deadline {
                        return Err(refusal(&tenant.name, kind, t));
                    }
                    t.wait_requests += 1;
                    t.wait_tokens += reserve;
                    t.wait_largest = t.wait_largest.max(reserve);
                    t.wait_slots += 1;
                    waiting = Some(Waiter {
                        limiter: self.clone(),
                        tenant: tenant.name.clone(),
                        reserve,
                        armed: true,
                    });
                } else {
                    let took = t.take(reserve, now);
                    let headers = headers(t);
                    drop(l);
                    let permit = Permit {
                        limiter: self.clone(),
                        tenant: tenant.name.clone(),
                        reserved: took,
                        settled: false,
                    };
                    return Ok((Some(permit), headers));
                }
            }
            rounds.borrow_and_update();
            self.wake.notify_one();
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(left, rounds.changed()).await;
            waited = true;
        }
    }

    /// Lease calls made and tenant asks sent so far.
    pub fn sent(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.calls.load(Relaxed), self.asks_sent.load(Relaxed))
    }

    /// The headers for `tenant` now (for a refused request).
    pub fn headers_for(&self, tenant: &str) -> Headers {
        self.lock().get(tenant).map(headers).unwrap_or_default()
    }

    /// Runs lease rounds until the process ends.
    pub async fn run(self: Arc<Self>, link: Arc<Link>) {
        loop {
            let _ = tokio::time::timeout(ROUND, self.wake.notified()).await;
            self.round(&link).await;
            self.rounds.send_modify(|n| *n += 1);
        }
    }

    /// One lease round.
    pub async fn round(&self, link: &Link) {
        let now = Instant::now();
        let gateways = self
            .link_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .gateways
            .max(1);
        let asks = self.asks(now, gateways);
        if asks.is_empty() {
            // Nothing to ask is not being cut off.
            self.link_state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .last_ok = now;
            return;
        }
        let req = pb::LeaseRequest {
            gateway: self.gateway.clone(),
            asks: asks.clone(),
        };
        {
            use std::sync::atomic::Ordering::Relaxed;
            self.calls.fetch_add(1, Relaxed);
            self.asks_sent.fetch_add(asks.len() as u64, Relaxed);
        }
        let resp = link
            .call(|mut c| {
                let req = req.clone();
                async move { c.lease(req).await }
            })
            .await;
        match resp {
            Ok(r) => {
                {
                    let mut s = self.link_state.lock().unwrap_or_else(|e| e.into_inner());
                    s.last_ok = Instant::now();
                    s.gateways = r.gateways.max(1);
                }
                // Back from being cut off: the own buckets start empty next time.
                for t in self.lock().values_mut() {
                    t.own_requests = Own {
                        level: 0.0,
                        at: now,
                    };
                    t.own_tokens = t.own_requests;
                }
                self.apply(&r.grants, now);
            }
            Err(e) => {
                let offline = {
                    let s = self.link_state.lock().unwrap_or_else(|e| e.into_inner());
                    s.last_ok.elapsed() >= OFFLINE_AFTER
                };
                tracing::debug!(error = %e.message(), offline, "lease round failed");
                // What was asked back stays given back (the leader may have it); what was
                // wanted comes from the gateway's own buckets once it is cut off.
                let grants: Vec<pb::TenantGrant> = if offline {
                    self.own_grants(&asks, gateways, now)
                } else {
                    Vec::new()
                };
                self.apply(&grants, now);
            }
        }
    }

    /// What to ask this round, tenant by tenant; returned stock leaves the stock at once.
    fn asks(&self, now: Instant, gateways: u32) -> Vec<pb::TenantAsk> {
        let mut l = self.lock();
        let mut asks = Vec::new();
        l.retain(|_, t| {
            !(t.in_flight == 0
                && t.wait_requests == 0
                && t.requests <= 0
                && t.tokens == 0
                && t.slots == 0
                && now.saturating_duration_since(t.last_used) > IDLE)
        });
        for (name, t) in l.iter_mut() {
            let q = t.quota;
            let idle = now.saturating_duration_since(t.last_used) > IDLE && t.wait_requests == 0;
            if idle {
                t.recent_reserve = 0;
            }
            let mut a = pb::TenantAsk {
                tenant: name.to_string(),
                ..Default::default()
            };
            if q.requests_per_minute > 0 {
                let share = (u64::from(q.requests_per_minute) / u64::from(gateways)).max(1);
                let target = if idle {
                    0
                } else {
                    (t.wait_requests + t.served_requests).clamp(1, share)
                } as i64;
                (a.requests, a.return_requests) = top_up(&mut t.requests, target, t.wait_requests);
            } else if t.requests != 0 {
                t.requests = 0;
            }
            if q.tokens_per_minute > 0 {
                let share = (q.tokens_per_minute / u64::from(gateways))
                    .max(t.wait_largest)
                    .min(q.tokens_per_minute);
                let target = if idle {
                    0
                } else {
                    // Enough for the next request like the recent ones, so a steady tenant's
                    // requests find their tokens here.
                    (t.wait_tokens + t.served_tokens)
                        .max(t.recent_reserve)
                        .min(share)
                } as i64;
                (a.tokens, a.return_tokens) = top_up(&mut t.tokens, target, t.wait_requests);
            } else if t.tokens != 0 {
                t.tokens = 0;
            }
            if q.max_concurrent > 0 {
                let need = (t.in_flight + t.wait_slots).min(q.max_concurrent);
                a.concurrent_needed = need;
                a.concurrent = (need + u32::from(!idle)).min(q.max_concurrent);
            } else {
                t.slots = 0;
            }
            t.served_requests = 0;
            t.served_tokens = 0;
            t.wait_largest = 0;
            // Slots are asked for when the need changes, and renewed every RENEW.
            let slots_due = (a.concurrent != t.asked_slots && (a.concurrent > 0 || t.slots > 0))
                || (t.slots > 0 && now.saturating_duration_since(t.renewed) >= RENEW);
            let says = a.requests + a.tokens + a.return_requests + a.return_tokens > 0 || slots_due;
            if says {
                t.renewed = now;
                t.asked_slots = a.concurrent;
                asks.push(a);
            }
        }
        asks
    }

    fn apply(&self, grants: &[pb::TenantGrant], _now: Instant) {
        let mut l = self.lock();
        for g in grants {
            let Some(t) = l.get_mut(g.tenant.as_str()) else {
                continue;
            };
            t.requests += g.requests as i64;
            t.tokens += g.tokens as i64;
            if t.quota.max_concurrent > 0 {
                t.slots = g.concurrent;
            }
            t.grant = Grant {
                requests_left: g.requests_left,
                tokens_left: g.tokens_left,
                requests_retry_ms: g.requests_retry_ms,
                tokens_retry_ms: g.tokens_retry_ms,
                requests_reset_ms: g.requests_reset_ms,
                tokens_reset_ms: g.tokens_reset_ms,
            };
        }
    }

    /// Grants from the gateway's own buckets (cut off): the limits divided among `gateways`.
    fn own_grants(
        &self,
        asks: &[pb::TenantAsk],
        gateways: u32,
        now: Instant,
    ) -> Vec<pb::TenantGrant> {
        let mut l = self.lock();
        let n = f64::from(gateways.max(1));
        asks.iter()
            .filter_map(|a| {
                let t = l.get_mut(a.tenant.as_str())?;
                let q = t.quota;
                let rcap = f64::from(q.requests_per_minute) / n;
                let tcap = q.tokens_per_minute as f64 / n;
                let requests = t.own_requests.take(rcap, a.requests, now);
                let tokens = t.own_tokens.take(tcap, a.tokens, now);
                let per = |cap: f64| if cap > 0.0 { 60_000.0 / cap } else { 0.0 };
                Some(pb::TenantGrant {
                    tenant: a.tenant.clone(),
                    requests,
                    tokens,
                    concurrent: a
                        .concurrent
                        .min((f64::from(q.max_concurrent) / n).ceil() as u32),
                    requests_left: t.own_requests.level,
                    tokens_left: t.own_tokens.level,
                    requests_retry_ms: per(rcap).ceil() as u32,
                    tokens_retry_ms: (per(tcap) * a.tokens.max(1) as f64).ceil().min(60_000.0)
                        as u32,
                    requests_reset_ms: 60_000,
                    tokens_reset_ms: 60_000,
                })
            })
            .collect()
    }
}

/// What to ask for to bring `stock` up to `target`, or to give back above it (only while no
/// request waits); what is given back leaves the stock at once.
fn top_up(stock: &mut i64, target: i64, waiting: u64) -> (u64, u64) {
    if *stock < target {
        ((target - *stock) as u64, 0)
    } else if *stock > target && waiting == 0 {
        let back = (*stock - target) as u64;
        *stock = target;
        (0, back)
    } else {
        (0, 0)
    }
}

fn headers(t: &Local) -> Headers {
    let q = &t.quota;
    let mut h = Vec::new();
    if q.requests_per_minute > 0 {
        let left = (t.grant.requests_left.max(0.0) as i64 + t.requests.max(0)) as u64;
        h.push((
            "x-ratelimit-limit-requests",
            q.requests_per_minute.to_string(),
        ));
        h.push((
            "x-ratelimit-remaining-requests",
            left.min(u64::from(q.requests_per_minute)).to_string(),
        ));
        h.push((
            "x-ratelimit-reset-requests",
            duration_text(t.grant.requests_reset_ms),
        ));
    }
    if q.tokens_per_minute > 0 {
        let left = (t.grant.tokens_left.max(0.0) as i64 + t.tokens.max(0)) as u64;
        h.push(("x-ratelimit-limit-tokens", q.tokens_per_minute.to_string()));
        h.push((
            "x-ratelimit-remaining-tokens",
            left.min(q.tokens_per_minute).to_string(),
        ));
        h.push((
            "x-ratelimit-reset-tokens",
            duration_text(t.grant.tokens_reset_ms),
        ));
    }
    h
}

fn refusal(tenant: &str, kind: &'static str, t: &Local) -> Error {
    let q = &t.quota;
    match kind {
        "requests" => Error::RateLimited {
            message: format!(
                "rate limit reached for tenant {tenant:?}: {} requests per minute; retry after \
                 {}",
                q.requests_per_minute,
                duration_text(t.grant.requests_retry_ms.max(1))
            ),
            kind: "requests",
            retry_ms: u64::from(t.grant.requests_retry_ms.max(1)),
        },
        "tokens" => Error::RateLimited {
            message: format!(
                "rate limit reached for tenant {tenant:?}: {} tokens per minute; retry after {}",
                q.tokens_per_minute,
                duration_text(t.grant.tokens_retry_ms.max(1))
            ),
            kind: "tokens",
            retry_ms: u64::from(t.grant.tokens_retry_ms.max(1)),
        },
        _ => Error::RateLimited {
            message: format!(
                "tenant {tenant:?} already has {} requests running, its limit; retry when one \
                 finishes",
                q.max_concurrent
            ),
            kind: "requests",
            retry_ms: 1000,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_openai_writes_them() {
        assert_eq!(duration_text(250), "250ms");
        assert_eq!(duration_text(1000), "1s");
        assert_eq!(duration_text(1500), "1.5s");
        assert_eq!(duration_text(360_000), "6m0s");
    }

    fn tenant(rpm: u32, tpm: u64, conc: u32) -> Tenant {
        Tenant {
            name: Arc::from("acme"),
            weight: 1.0,
            quota: pb::Quota {
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
                max_concurrent: conc,
                ..Default::default()
            },
            deployments: vec![],
            month_tokens: 0,
            month_mj: 0,
        }
    }

    #[tokio::test]
    async fn an_unlimited_tenant_passes_without_a_permit() {
        let l = Limiter::new("g".into());
        let (p, h) = l.admit(&tenant(0, 0, 0), 100).await.unwrap();
        assert!(p.is_none() && h.is_empty());
    }

    #[tokio::test]
    async fn admission_takes_stock_and_a_settled_permit_returns_the_unused_tokens() {
        let l = Limiter::new("g".into());
        let t = tenant(10, 1000, 2);
        // Stock as a lease round would have granted it.
        l.lock()
            .insert(t.name.clone(), Local::new(t.quota, Instant::now()));
        l.apply(
            &[pb::TenantGrant {
                tenant: "acme".into(),
                requests: 2,
                tokens: 500,
                concurrent: 2,
                requests_left: 8.0,
                tokens_left: 500.0,
                requests_reset_ms: 12_000,
                ..Default::default()
            }],
            Instant::now(),
        );
        let (p, h) = l.admit(&t, 200).await.unwrap();
        let p = p.unwrap();
        assert!(
            h.contains(&("x-ratelimit-remaining-requests", "9".into())),
            "{h:?}"
        );
        assert!(h.contains(&("x-ratelimit-reset-requests", "12s".into())));
        assert!(
            h.contains(&("x-ratelimit-remaining-tokens", "800".into())),
            "{h:?}"
        );
        p.settle(50);
        let g = l.lock();
        let s = &g["acme"];
        assert_eq!((s.requests, s.tokens, s.in_flight), (1, 450, 0));
    }

    #[tokio::test]
    async fn a_spent_budget_is_refused_with_its_retry_time() {
        let l = Limiter::new("g".into());
        let t = tenant(10, 0, 0);
        l.lock()
            .insert(t.name.clone(), Local::new(t.quota, Instant::now()));
        l.apply(
            &[pb::TenantGrant {
                tenant: "acme".into(),
                requests_left: 0.0,
                requests_retry_ms: 6000,
                ..Default::default()
            }],
            Instant::now(),
        );
        let e = l.admit(&t, 1).await.unwrap_err();
        assert_eq!(e.retry_ms(), Some(6000));
        assert_eq!(e.http().0.as_u16(), 429);
        // More tokens than a minute's limit can never be admitted.
        let e = l.admit(&tenant(0, 100, 0), 101).await.unwrap_err();
        assert!(e.message().contains("lower max_tokens"), "{e}");
    }

    #[test]
    fn rounds_ask_for_the_demand_within_a_share_and_give_back_idle_stock() {
        let l = Limiter::new("g".into());
        let now = Instant::now();
        let t = tenant(60, 0, 4);
        let mut local = Local::new(t.quota, now);
        local.wait_requests = 100;
        local.wait_slots = 100;
        local.in_flight = 1;
        l.lock().insert(t.name.clone(), local);
        let a = l.asks(now, 2);
        assert_eq!(a[0].requests, 30, "half the limit with two gateways");
        assert_eq!(a[0].concurrent, 4, "at most the limit");
        {
            let mut g = l.lock();
            let s = g.get_mut("acme").unwrap();
            s.wait_requests = 0;
            s.in_flight = 0;
            s.requests = 20;
            s.last_used = now - IDLE - Duration::from_millis(1);
        }
        let a = l.asks(now, 2);
        assert_eq!(a[0].return_requests, 20);
        assert_eq!(l.lock()["acme"].requests, 0);
    }
}
