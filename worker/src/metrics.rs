//! Prometheus `/metrics` (OpenMetrics text) on its own port. Request outcomes, TTFT and ITL
//! histograms and per-model energy are recorded as streams end; engine, power and calibration
//! figures are read at scrape time. Every series carries a `model` label except the machine's
//! power ones, which carry `sensor` and `source` (measured or estimated).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::power::PowerMonitor;
use crate::registry::Registry;

type Labels = Vec<(String, String)>;
/// One metric family read at scrape time: name, help, rows.
type Rows = (&'static str, &'static str, Vec<(Labels, f64)>);

fn model(m: &str) -> Labels {
    vec![("model".into(), m.into())]
}

/// Metrics updated by the request path.
#[derive(Debug)]
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    requests: Family<Labels, Counter>,
    ttft: Family<Labels, Histogram>,
    itl: Family<Labels, Histogram>,
    output_tokens: Family<Labels, Counter>,
    prompt_tokens: Family<Labels, Counter>,
    joules: Family<Labels, Counter<f64>>,
}

impl Metrics {
    pub fn new(models: Arc<Registry>, power: Arc<PowerMonitor>) -> Self {
        let mut registry = prometheus_client::registry::Registry::with_prefix("joule");
        let requests = Family::<Labels, Counter>::default();
        let ttft = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 14))) as fn() -> Histogram,
        );
        let itl = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 14))) as fn() -> Histogram,
        );
        let output_tokens = Family::<Labels, Counter>::default();
        let prompt_tokens = Family::<Labels, Counter>::default();
        let joules = Family::<Labels, Counter<f64>>::default();
        registry.register(
            "requests",
            "Finished requests by model and gRPC status (ok, cancelled, invalid_argument, ...)",
            requests.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time from admission to the first generated token",
            ttft.clone(),
        );
        registry.register(
            "inter_token_latency_seconds",
            "Time between successive streamed token events of a request",
            itl.clone(),
        );
        registry.register("output_tokens", "Generated tokens", output_tokens.clone());
        registry.register(
            "prompt_tokens",
            "Prompt tokens of finished requests",
            prompt_tokens.clone(),
        );
        registry.register(
            "request_energy_joules",
            "Energy attributed to finished requests (see joule_energy_source for measured or estimated)",
            joules.clone(),
        );
        registry.register_collector(Box::new(Live { models, power }));
        // The family handles above share their storage with the registered copies.
        Self {
            registry,
            requests,
            ttft,
            itl,
            output_tokens,
            prompt_tokens,
            joules,
        }
    }

    pub fn request_done(&self, m: &str, status: &str) {
        let mut l = model(m);
        l.push(("status".into(), status.into()));
        self.requests.get_or_create(&l).inc();
    }

    pub fn usage(&self, m: &str, prompt: u32, output: u32, joules: f64, ttft_s: Option<f64>) {
        let l = model(m);
        self.prompt_tokens.get_or_create(&l).inc_by(prompt as u64);
        self.output_tokens.get_or_create(&l).inc_by(output as u64);
        self.joules.get_or_create(&l).inc_by(joules.max(0.0));
        if let Some(t) = ttft_s {
            self.ttft.get_or_create(&l).observe(t);
        }
    }

    /// The inter-token histogram of model `m`, to observe without a lookup per token.
    pub fn inter_token(&self, m: &str) -> Histogram {
        self.itl.get_or_create(&model(m)).clone()
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

/// Figures read at scrape time.
#[derive(Debug)]
struct Live {
    models: Arc<Registry>,
    power: Arc<PowerMonitor>,
}

/// One family of values read at scrape time, as gauges or counters.
fn family(
    enc: &mut DescriptorEncoder<'_>,
    kind: MetricType,
    name: &str,
    help: &str,
    rows: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut me = enc.encode_descriptor(name, help, None, kind)?;
    for (l, v) in rows {
        let m = me.encode_family(l)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*v).encode(m)?,
            _ => ConstGauge::new(*v).encode(m)?,
        }
    }
    Ok(())
}

impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let models = self.models.ready();
        let mut rows: Vec<Rows> = vec![
            (
                "output_tokens_per_second",
                "Generated tokens per second over the last seconds",
                vec![],
            ),
            (
                "queue_depth",
                "Requests admitted and waiting for their first step",
                vec![],
            ),
            (
                "running_sequences",
                "Sequences in the running batch",
                vec![],
            ),
            (
                "kv_blocks",
                "KV cache blocks by state (used, free, cached)",
                vec![],
            ),
            (
                "prefix_cache_hit_ratio",
                "Prompt blocks found in the prefix cache over those looked up",
                vec![],
            ),
            (
                "kv_waste_ratio",
                "Allocated but unused KV slots over allocated slots",
                vec![],
            ),
            (
                "tokens_per_joule",
                "Output tokens per joule attributed to the model since load",
                vec![],
            ),
            (
                "calibration_tokens_per_joule",
                "Calibrated output tokens per joule by batch size",
                vec![],
            ),
            (
                "calibration_watts",
                "Calibrated power draw by batch size",
                vec![],
            ),
            (
                "calibration_output_tokens_per_second",
                "Calibrated output tokens/s by batch size",
                vec![],
            ),
        ];
        let mut energy = Vec::new();
        let source = self.power.source().as_str();
        for m in &models {
            let st = m.engine.stats();
            let l = model(&m.name);
            rows[0].2.push((l.clone(), st.tokens_per_s));
            rows[1].2.push((l.clone(), st.waiting as f64));
            rows[2].2.push((l.clone(), st.running as f64));
            for (state, n) in [
                ("used", st.kv.used),
                ("free", st.kv.free),
                ("cached", st.kv.cached),
            ] {
                let mut k = l.clone();
                k.push(("state".into(), state.into()));
                rows[3].2.push((k, n as f64));
            }
            rows[4].2.push((l.clone(), st.prefix_hit_rate));
            rows[5].2.push((l.clone(), st.kv_waste));
            if st.joules_total > 0.0 {
                rows[6].2.push((
                    l.clone(),
                    st.generated_tokens_total as f64 / st.joules_total,
                ));
            }
            let mut el = l.clone();
            el.push(("source".into(), source.into()));
            energy.push((el, st.joules_total));
            if let Some(p) = m
                .calibration
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                for pt in &p.points {
                    let mut k = l.clone();
                    k.push(("batch_size".into(), pt.batch_size.to_string()));
                    k.push(("source".into(), p.source.as_str().into()));
                    rows[7].2.push((k.clone(), pt.tokens_per_joule));
                    rows[8].2.push((k.clone(), pt.watts));
                    rows[9].2.push((k, pt.output_tokens_per_s));
                }
            }
        }
        for (name, help, r) in &rows {
            family(&mut enc, MetricType::Gauge, name, help, r)?;
        }
        family(
            &mut enc,
            MetricType::Counter,
            "model_energy_joules",
            "Energy of the engine steps of each model since load",
            &energy,
        )?;
        let readings = self.power.readings();
        let watts: Vec<(Labels, f64)> = readings
            .iter()
            .map(|r| {
                (
                    vec![
                        ("sensor".into(), r.sensor.clone()),
                        ("source".into(), r.source.as_str().into()),
                    ],
                    r.watts,
                )
            })
            .collect();
        family(
            &mut enc,
            MetricType::Gauge,
            "power_watts",
            "Power draw by sensor",
            &watts,
        )?;
        family(
            &mut enc,
            MetricType::Counter,
            "energy_joules",
            "Energy of the whole worker (all sensors) since start",
            &[(
                vec![("source".into(), source.into())],
                self.power.total_joules(),
            )],
        )?;
        Ok(())
    }
}
