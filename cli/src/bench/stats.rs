//! From outcomes to figures: percentiles (linear interpolation between the closest ranks, as
//! numpy's default: p of n sorted values is x[h] with h = (n-1)·p/100, interpolated), a
//! target's [`Summary`] (requests ok and failed, errors by kind with one example each, TTFT,
//! ITL, TPOT and end-to-end latency, throughput over the wall time, joules per output token
//! with their source), and the ratios of two summaries.
//!
//! It owns arithmetic only: no I/O, no clock.

use std::collections::BTreeMap;

use serde::Serialize;

use super::load::Segment;
use super::{Counted, ErrorKind, Source, TargetInfo};

/// The `p`th percentile (0-100) of `sorted` (ascending, not empty), linearly interpolated.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let Some(&last) = sorted.last() else {
        return f64::NAN;
    };
    let h = (sorted.len() - 1) as f64 * (p.clamp(0.0, 100.0) / 100.0);
    let lo = h.floor() as usize;
    match sorted.get(lo + 1) {
        Some(&hi) => sorted[lo] + (h - lo as f64) * (hi - sorted[lo]),
        None => last,
    }
}

/// p50, p90, p99 and the mean of a set of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pcts {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
    /// How many values.
    pub n: usize,
}

impl Pcts {
    /// `None` for no values.
    pub fn of(mut v: Vec<f64>) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Self {
            p50: percentile(&v, 50.0),
            p90: percentile(&v, 90.0),
            p99: percentile(&v, 99.0),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            n: v.len(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Requests {
    pub ok: u64,
    pub failed: u64,
}

/// One kind of error: how many, and the first one's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    pub kind: String,
    pub count: u64,
    pub example: String,
}

/// Energy of the successful requests that reported it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EnergyStats {
    /// Their joules; `None` when no request reported energy.
    pub joules: Option<f64>,
    /// Their joules over their output tokens.
    pub joules_per_output_token: Option<f64>,
    /// `measured`, `estimated`, `mixed` (both, or some without a source), or `unknown` (the
    /// server reports no energy).
    pub source: &'static str,
    /// Successful requests that reported energy.
    pub requests: u64,
}

/// One target's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// `openai-http`, `grpc-inference` or `grpc-worker`.
    pub api: &'static str,
    pub address: String,
    pub model: String,
    pub requests: Requests,
    pub errors: Vec<ErrorCount>,
    /// Seconds its rounds took, added up.
    pub wall_s: f64,
    pub output_tokens: u64,
    /// Where the counts come from: `usage` (the server's), `chunks` (streamed chunks with
    /// text), `mixed`, or `none`.
    pub output_tokens_counted_by: &'static str,
    pub output_tokens_per_s: f64,
    /// Successful requests per second.
    pub requests_per_s: f64,
    /// Time to first token (first chunk with output), ms.
    pub ttft_ms: Option<Pcts>,
    /// Inter-token latency: every gap between successive chunks with output, ms.
    pub itl_ms: Option<Pcts>,
    /// Time per output token after the first, per request: (e2e - ttft) / (tokens - 1), ms.
    pub tpot_ms: Option<Pcts>,
    /// Send to the stream's end, ms.
    pub e2e_ms: Option<Pcts>,
    pub energy: EnergyStats,
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Summary {
    /// The summary of `info`'s rounds.
    pub fn of(info: TargetInfo, segments: &[Segment]) -> Self {
        let wall_s: f64 = segments.iter().map(|s| s.wall.as_secs_f64()).sum();
        let (mut ok, mut failed, mut tokens) = (0u64, 0u64, 0u64);
        let (mut ttft, mut itl, mut tpot, mut e2e) = (vec![], vec![], vec![], vec![]);
        let mut errors: BTreeMap<ErrorKind, (u64, String)> = BTreeMap::new();
        let (mut by_usage, mut by_chunks) = (false, false);
        let (mut joules, mut energy_tokens, mut energy_requests) = (0.0f64, 0u64, 0u64);
        let mut sources: Vec<Source> = Vec::new();
        for o in segments.iter().flat_map(|s| &s.outcomes) {
            let d = match o {
                Ok(d) => d,
                Err(f) => {
                    failed += 1;
                    errors
                        .entry(f.kind.clone())
                        .or_insert_with(|| (0, f.message.clone()))
                        .0 += 1;
                    continue;
                }
            };
            ok += 1;
            tokens += d.output_tokens;
            match d.counted {
                Counted::Usage => by_usage = true,
                Counted::Chunks => by_chunks = true,
            }
            e2e.push(ms(d.e2e));
            itl.extend(d.itl.iter().copied().map(ms));
            if let Some(t) = d.ttft {
                ttft.push(ms(t));
                if d.output_tokens > 1 {
                    tpot.push(ms(d.e2e.saturating_sub(t)) / (d.output_tokens - 1) as f64);
                }
            }
            if let Some(e) = d.energy {
                joules += e.joules;
                energy_tokens += d.output_tokens;
                energy_requests += 1;
                if !sources.contains(&e.source) {
                    sources.push(e.source);
                }
            }
        }
        let per_s = |n: u64| if wall_s > 0.0 { n as f64 / wall_s } else { 0.0 };
        let source = match sources.as_slice() {
            [] => "unknown",
            [Source::Measured] => "measured",
            [Source::Estimated] => "estimated",
            [Source::Unknown] => "unknown",
            _ => "mixed",
        };
        Self {
            api: info.api,
            address: info.address,
            model: info.model,
            requests: Requests { ok, failed },
            errors: errors
                .into_iter()
                .map(|(kind, (count, example))| ErrorCount {
                    kind: kind.to_string(),
                    count,
                    example,
                })
                .collect(),
            wall_s,
            output_tokens: tokens,
            output_tokens_counted_by: match (by_usage, by_chunks) {
                (true, false) => "usage",
                (false, true) => "chunks",
                (true, true) => "mixed",
                (false, false) => "none",
            },
            output_tokens_per_s: per_s(tokens),
            requests_per_s: per_s(ok),
            ttft_ms: Pcts::of(ttft),
            itl_ms: Pcts::of(itl),
            tpot_ms: Pcts::of(tpot),
            e2e_ms: Pcts::of(e2e),
            energy: EnergyStats {
                joules: (energy_requests > 0).then_some(joules),
                joules_per_output_token: (energy_tokens > 0)
                    .then_some(joules / energy_tokens as f64),
                source,
                requests: energy_requests,
            },
        }
    }
}

/// Target over compare, for the figures people compare; `None` where either is missing or the
/// compare's is 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratios {
    pub output_tokens_per_s: Option<f64>,
    pub requests_per_s: Option<f64>,
    pub ttft_p50: Option<f64>,
    pub ttft_p99: Option<f64>,
    pub itl_p50: Option<f64>,
    pub itl_p99: Option<f64>,
    pub e2e_p50: Option<f64>,
    pub joules_per_output_token: Option<f64>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if a.is_finite() && b.is_finite() && b > 0.0 => Some(a / b),
        _ => None,
    }
}

impl Ratios {
    pub fn of(a: &Summary, b: &Summary) -> Self {
        let p =
            |s: &Summary, f: fn(&Summary) -> Option<Pcts>, q: fn(&Pcts) -> f64| f(s).map(|x| q(&x));
        let both =
            |f: fn(&Summary) -> Option<Pcts>, q: fn(&Pcts) -> f64| ratio(p(a, f, q), p(b, f, q));
        Self {
            output_tokens_per_s: ratio(Some(a.output_tokens_per_s), Some(b.output_tokens_per_s)),
            requests_per_s: ratio(Some(a.requests_per_s), Some(b.requests_per_s)),
            ttft_p50: both(|s| s.ttft_ms, |x| x.p50),
            ttft_p99: both(|s| s.ttft_ms, |x| x.p99),
            itl_p50: both(|s| s.itl_ms, |x| x.p50),
            itl_p99: both(|s| s.itl_ms, |x| x.p99),
            e2e_p50: both(|s| s.e2e_ms, |x| x.p50),
            joules_per_output_token: ratio(
                a.energy.joules_per_output_token,
                b.energy.joules_per_output_token,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::{Done, Energy, Failure};

    #[test]
    fn percentiles_interpolate_between_the_closest_ranks() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 10.0);
        assert!((percentile(&v, 50.0) - 5.5).abs() < 1e-12);
        assert!((percentile(&v, 90.0) - 9.1).abs() < 1e-12);
        assert!((percentile(&v, 99.0) - 9.91).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
        let p = Pcts::of(vec![3.0, 1.0, 2.0, 100.0]).unwrap();
        assert!(p.p50 <= p.p90 && p.p90 <= p.p99, "{p:?}");
        assert_eq!((p.p50, p.mean, p.n), (2.5, 26.5, 4));
        assert!(Pcts::of(vec![]).is_none());
    }

    fn done(ttft_ms: u64, e2e_ms: u64, tokens: u64, energy: Option<Energy>) -> Done {
        Done {
            ttft: Some(Duration::from_millis(ttft_ms)),
            itl: vec![Duration::from_millis(10); tokens.saturating_sub(1) as usize],
            e2e: Duration::from_millis(e2e_ms),
            output_tokens: tokens,
            counted: Counted::Usage,
            energy,
        }
    }

    fn info() -> TargetInfo {
        TargetInfo {
            api: "openai-http",
            address: "http://a/v1".into(),
            model: "m".into(),
        }
    }

    #[test]
    fn a_summary_counts_errors_by_kind_throughput_over_wall_time_and_energy_sources() {
        let est = |j| {
            Some(Energy {
                joules: j,
                source: Source::Estimated,
            })
        };
        let seg = |outcomes, ms| Segment {
            wall: Duration::from_millis(ms),
            outcomes,
        };
        let segs = vec![
            seg(
                vec![
                    Ok(done(100, 200, 11, est(1.1))),
                    Err(Failure::new(ErrorKind::Http(503), "no replica")),
                    Err(Failure::new(ErrorKind::Http(503), "later")),
                ],
                1000,
            ),
            seg(
                vec![
                    Ok(done(300, 400, 11, est(2.2))),
                    Err(Failure::new(ErrorKind::Timeout, "slow")),
                ],
                1000,
            ),
        ];
        let s = Summary::of(info(), &segs);
        assert_eq!(s.requests, Requests { ok: 2, failed: 3 });
        assert_eq!(
            s.errors,
            vec![
                ErrorCount {
                    kind: "http 503".into(),
                    count: 2,
                    example: "no replica".into()
                },
                ErrorCount {
                    kind: "timeout".into(),
                    count: 1,
                    example: "slow".into()
                },
            ]
        );
        assert_eq!(s.wall_s, 2.0);
        assert_eq!(
            (s.output_tokens, s.output_tokens_per_s, s.requests_per_s),
            (22, 11.0, 1.0)
        );
        assert_eq!(s.ttft_ms.unwrap().p50, 200.0);
        assert_eq!(s.itl_ms.unwrap().n, 20);
        assert!((s.tpot_ms.unwrap().p50 - 10.0).abs() < 1e-9);
        assert_eq!(s.energy.source, "estimated");
        assert!((s.energy.joules_per_output_token.unwrap() - 0.15).abs() < 1e-12);

        // Measured and estimated together are "mixed"; no energy at all is "unknown".
        let measured = Some(Energy {
            joules: 1.0,
            source: Source::Measured,
        });
        let mixed = vec![seg(
            vec![Ok(done(1, 2, 2, est(1.0))), Ok(done(1, 2, 2, measured))],
            10,
        )];
        assert_eq!(Summary::of(info(), &mixed).energy.source, "mixed");
        let none = vec![seg(vec![Ok(done(1, 2, 2, None))], 10)];
        let n = Summary::of(info(), &none);
        assert_eq!(
            (n.energy.source, n.energy.joules_per_output_token),
            ("unknown", None)
        );
    }

    #[test]
    fn ratios_are_target_over_compare_and_missing_where_undefined() {
        let a = vec![Segment {
            wall: Duration::from_secs(1),
            outcomes: vec![Ok(done(100, 300, 21, None))],
        }];
        let b = vec![Segment {
            wall: Duration::from_secs(2),
            outcomes: vec![Ok(done(50, 300, 21, None))],
        }];
        let (a, b) = (Summary::of(info(), &a), Summary::of(info(), &b));
        let r = Ratios::of(&a, &b);
        assert_eq!(r.output_tokens_per_s, Some(2.0));
        assert_eq!(r.ttft_p50, Some(2.0));
        assert_eq!(r.e2e_p50, Some(1.0));
        assert_eq!(r.itl_p50, Some(1.0));
        assert_eq!(r.joules_per_output_token, None);
        let failed = Summary::of(
            info(),
            &[Segment {
                wall: Duration::from_secs(1),
                outcomes: vec![Err(Failure::new(ErrorKind::Connect, "refused"))],
            }],
        );
        let r = Ratios::of(&a, &failed);
        assert_eq!((r.output_tokens_per_s, r.ttft_p50), (None, None));
    }
}
