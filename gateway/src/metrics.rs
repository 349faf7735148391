//! Prometheus `/metrics` of the gateway: requests by model and status, TTFT and ITL as the
//! client sees them, routing decisions by worker and reason, retries before the first token and
//! stream migrations after it. Recorded by the request path; nothing here decides anything.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[derive(Debug)]
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    requests: Family<Labels, Counter>,
    ttft: Family<Labels, Histogram>,
    itl: Family<Labels, Histogram>,
    routed: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    migrations: Family<Labels, Counter>,
    tokens: Family<Labels, Counter>,
    joules: Family<Labels, Counter<f64>>,
    tenant_tokens: Family<Labels, Counter>,
    tenant_joules: Family<Labels, Counter<f64>>,
    refused: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = prometheus_client::registry::Registry::with_prefix("joule_gateway");
        let requests = Family::<Labels, Counter>::default();
        let ttft = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 14))) as fn() -> Histogram,
        );
        let itl = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 14))) as fn() -> Histogram,
        );
        let routed = Family::<Labels, Counter>::default();
        let retries = Family::<Labels, Counter>::default();
        let migrations = Family::<Labels, Counter>::default();
        let tokens = Family::<Labels, Counter>::default();
        let joules = Family::<Labels, Counter<f64>>::default();
        let tenant_tokens = Family::<Labels, Counter>::default();
        let tenant_joules = Family::<Labels, Counter<f64>>::default();
        let refused = Family::<Labels, Counter>::default();
        registry.register(
            "tenant_tokens",
            "Tokens billed per tenant, by kind (prompt, cached_prompt, completion)",
            tenant_tokens.clone(),
        );
        registry.register(
            "tenant_energy_joules",
            "Energy billed per tenant, by source (measured from NVML or RAPL, or estimated)",
            tenant_joules.clone(),
        );
        registry.register(
            "tenant_refusals",
            "Requests refused before routing, by reason (unauthenticated, permission_denied, \
             rate_limited, quota_exceeded); by tenant where it is known",
            refused.clone(),
        );
        registry.register(
            "requests",
            "Finished requests by model and status (ok, cancelled, invalid_request, unavailable, ...)",
            requests.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "From the request's arrival at the gateway to its first token leaving it",
            ttft.clone(),
        );
        registry.register(
            "inter_token_latency_seconds",
            "Between successive token events of a stream, as relayed",
            itl.clone(),
        );
        registry.register(
            "routing_decisions",
            "Replicas chosen, by model, node, policy and why",
            routed.clone(),
        );
        registry.register(
            "retries",
            "Requests moved to another replica before their first token, by model and reason",
            retries.clone(),
        );
        registry.register(
            "migrations",
            "Streams moved to another replica after their first token, by model and outcome",
            migrations.clone(),
        );
        registry.register("output_tokens", "Tokens relayed to clients", tokens.clone());
        registry.register(
            "request_energy_joules",
            "Energy of finished requests as their workers reported it (measured or estimated \
             per worker; moved streams are estimated)",
            joules.clone(),
        );
        Self {
            registry,
            requests,
            ttft,
            itl,
            routed,
            retries,
            migrations,
            tokens,
            joules,
            tenant_tokens,
            tenant_joules,
            refused,
        }
    }

    /// A finished request's bill, per tenant.
    pub fn billed(&self, tenant: &str, u: &crate::tenancy::usage::Used) {
        for (kind, n) in [
            ("prompt", u.prompt_tokens),
            ("cached_prompt", u.cached_prompt_tokens),
            ("completion", u.completion_tokens),
        ] {
            self.tenant_tokens
                .get_or_create(&labels(&[("tenant", tenant), ("kind", kind)]))
                .inc_by(n);
        }
        let source = if u.measured { "measured" } else { "estimated" };
        self.tenant_joules
            .get_or_create(&labels(&[("tenant", tenant), ("source", source)]))
            .inc_by(u.joules.max(0.0));
    }

    /// A request refused before routing; `tenant` is empty when no key named one.
    pub fn refused(&self, tenant: &str, reason: &str) {
        self.refused
            .get_or_create(&labels(&[("tenant", tenant), ("reason", reason)]))
            .inc();
    }

    pub fn done(&self, model: &str, status: &str) {
        self.requests
            .get_or_create(&labels(&[("model", model), ("status", status)]))
            .inc();
    }

    pub fn usage(&self, model: &str, tokens: u32, joules: f64) {
        let l = labels(&[("model", model)]);
        self.tokens.get_or_create(&l).inc_by(u64::from(tokens));
        self.joules.get_or_create(&l).inc_by(joules.max(0.0));
    }

    pub fn ttft(&self, model: &str, seconds: f64) {
        self.ttft
            .get_or_create(&labels(&[("model", model)]))
            .observe(seconds);
    }

    /// The ITL histogram of `model`, to observe without a lookup per token.
    pub fn itl(&self, model: &str) -> Histogram {
        self.itl.get_or_create(&labels(&[("model", model)])).clone()
    }

    pub fn routed(&self, model: &str, node: &str, policy: &str, why: &str) {
        self.routed
            .get_or_create(&labels(&[
                ("model", model),
                ("node", node),
                ("policy", policy),
                ("why", why),
            ]))
            .inc();
    }

    pub fn retry(&self, model: &str, reason: &str) {
        self.retries
            .get_or_create(&labels(&[("model", model), ("reason", reason)]))
            .inc();
    }

    pub fn migration(&self, model: &str, outcome: &str) {
        self.migrations
            .get_or_create(&labels(&[("model", model), ("outcome", outcome)]))
            .inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut s, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        s
    }
}
