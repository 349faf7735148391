//! `joulectl bench`: the load generator's flags, their checks (each refusal one line naming the
//! flag, before anything is sent) and the [`Plan`] they make. The measuring is in
//! [`crate::bench`]; this file must never send a request itself.

use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::bench::load::Load;
use crate::bench::workload::{self, Workload};
use crate::bench::{self, Endpoint, GrpcApi, Plan, Sampling, TargetSpec};
use crate::render::Format;

/// Requests per target when neither --requests nor --duration says.
const DEFAULT_REQUESTS: u64 = 64;
/// Requests in flight when neither --concurrency nor --rate says.
const DEFAULT_CONCURRENCY: usize = 8;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// The OpenAI-compatible base URL to load, e.g. http://127.0.0.1:8080/v1 (a URL without a
    /// path gets /v1).
    #[arg(long, env = "JOULE_GATEWAY_URL")]
    pub url: Option<String>,
    /// Load Joule's gRPC API at HOST:PORT instead of --url (a gateway; a worker with
    /// --grpc-api worker). Wins over --url.
    #[arg(long, value_name = "ADDR")]
    pub grpc: Option<String>,
    /// Which gRPC service --grpc names.
    #[arg(long, value_enum, default_value = "inference")]
    pub grpc_api: GrpcApi,
    /// The target's key, sent as `Authorization: Bearer KEY` (gRPC: the same metadata; a
    /// worker takes the cluster's join token).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The model to ask for (default: the first the target lists).
    #[arg(long)]
    pub model: Option<String>,
    /// Where a raw prompt goes: completions (gRPC Generate) or chat (as one user message;
    /// gRPC Chat). Messages from a file always go to chat.
    #[arg(long, value_enum, default_value = "completions")]
    pub endpoint: Endpoint,
    /// fixed, sharegpt, or a JSONL file: one {"prompt": "...", "max_tokens": N} or
    /// {"messages": [...], "max_tokens": N} a line.
    #[arg(long, default_value = "fixed", value_name = "fixed|sharegpt|FILE")]
    pub workload: String,
    /// fixed: about this many prompt tokens (as many common words; each request its own).
    #[arg(long, default_value_t = 128)]
    pub input_tokens: u32,
    /// fixed: output tokens per request (and a file's default for lines without max_tokens).
    #[arg(long, default_value_t = 128)]
    pub output_tokens: u32,
    /// sharegpt: the longest prompt, in tokens.
    #[arg(long, default_value_t = 1024)]
    pub max_input_tokens: u32,
    /// sharegpt: the most output tokens of a request.
    #[arg(long, default_value_t = 1024)]
    pub max_output_tokens: u32,
    /// Seeds the workload and the arrivals: the same seed, the same requests.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep N requests in flight (a closed loop; default 8).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Send R requests per second, Poisson arrivals (an open loop).
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// With --rate: the most requests in flight (an arrival waits for a free one).
    #[arg(long, default_value_t = 256)]
    pub max_inflight: usize,
    /// Requests per target (default 64, or unlimited with --duration).
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Stop sending after this long (60s, 5m, 500ms); requests in flight finish.
    #[arg(long)]
    pub duration: Option<String>,
    /// Requests sent to each target first, and not counted.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub warmup: u64,
    /// The most one request may take, connect to last token.
    #[arg(long, default_value = "120s")]
    pub timeout: String,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Ask the server to ignore end-of-sequence, so every request makes its max_tokens
    /// (Joule, llama-server and vLLM take it).
    #[arg(long)]
    pub ignore_eos: bool,
    /// A second OpenAI-compatible base URL: the same requests, in the same run, then the
    /// ratios target/compare.
    #[arg(long, value_name = "URL")]
    pub compare: Option<String>,
    /// The key of --compare.
    #[arg(long, env = "COMPARE_API_KEY", hide_env_values = true)]
    pub compare_api_key: Option<String>,
    /// The model of --compare (default: the first it lists).
    #[arg(long)]
    pub compare_model: Option<String>,
}

/// `60s`, `5m`, `1h`, `500ms`, or seconds alone (`90`, `1.5`).
pub fn parse_duration(flag: &str, s: &str) -> anyhow::Result<Duration> {
    let bad = || anyhow!("{flag} {s:?}: expected a duration such as 60s, 5m, 1h or 500ms");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

fn at_least_one(flag: &str, n: u64) -> anyhow::Result<()> {
    if n == 0 {
        bail!("{flag} must be at least 1");
    }
    Ok(())
}

/// The checked plan of `a` (`context`: the `--context` to take the gateway from when there is
/// no --url): every refusal names its flag.
pub fn plan(a: &BenchArgs, context: Option<&str>) -> anyhow::Result<Plan> {
    let load = match (a.rate, a.concurrency) {
        (Some(_), Some(_)) => bail!(
            "--rate and --concurrency cannot be used together: --rate sends Poisson arrivals (an \
             open loop), --concurrency keeps N requests in flight (a closed loop)"
        ),
        (Some(rate), None) => {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("--rate {rate}: must be requests per second, more than 0");
            }
            at_least_one("--max-inflight", a.max_inflight as u64)?;
            Load::Open {
                rate,
                max_inflight: a.max_inflight,
                seed: a.seed,
            }
        }
        (None, c) => {
            let concurrency = c.unwrap_or(DEFAULT_CONCURRENCY);
            at_least_one("--concurrency", concurrency as u64)?;
            Load::Closed { concurrency }
        }
    };
    let duration = a
        .duration
        .as_deref()
        .map(|d| parse_duration("--duration", d))
        .transpose()?;
    if duration.is_some_and(|d| d.is_zero()) {
        bail!("--duration must be more than 0");
    }
    let requests = match (a.requests, duration) {
        (Some(n), _) => {
            at_least_one("--requests", n)?;
            Some(n)
        }
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_REQUESTS),
    };
    let timeout = parse_duration("--timeout", &a.timeout)?;
    if timeout.is_zero() {
        bail!("--timeout must be more than 0");
    }
    at_least_one("--input-tokens", a.input_tokens.into())?;
    at_least_one("--output-tokens", a.output_tokens.into())?;
    at_least_one("--max-input-tokens", a.max_input_tokens.into())?;
    at_least_one("--max-output-tokens", a.max_output_tokens.into())?;
    if !(a.temperature.is_finite() && a.temperature >= 0.0) {
        bail!("--temperature {}: must be 0 or more", a.temperature);
    }
    let workload = match a.workload.as_str() {
        "fixed" => Workload::Fixed {
            input_tokens: a.input_tokens,
            output_tokens: a.output_tokens,
            seed: a.seed,
        },
        "sharegpt" => Workload::ShareGpt {
            seed: a.seed,
            max_input: a.max_input_tokens,
            max_output: a.max_output_tokens,
        },
        path => workload::from_file(path, a.output_tokens)?,
    };
    let target = if let Some(addr) = &a.grpc {
        joule_client::normalize(addr).map_err(|e| anyhow!("--grpc: {e}"))?;
        TargetSpec::Grpc {
            addr: addr.clone(),
            api: a.grpc_api,
            key: a.api_key.clone(),
            model: a.model.clone(),
        }
    } else {
        // --url (or JOULE_GATEWAY_URL), else the context's gateway (and its key, for it only).
        let (url, key) =
            crate::context::gateway_target(a.url.as_deref(), a.api_key.as_deref(), context)?;
        bench::http::base_url("--url", &url)?;
        TargetSpec::Http {
            flag: "--url",
            url,
            key: Some(key).filter(|k| !k.is_empty()),
            model: a.model.clone(),
            model_flag: "--model",
        }
    };
    let compare = match &a.compare {
        Some(url) => {
            bench::http::base_url("--compare", url)?;
            Some(TargetSpec::Http {
                flag: "--compare",
                url: url.clone(),
                key: a.compare_api_key.clone(),
                model: a.compare_model.clone(),
                model_flag: "--compare-model",
            })
        }
        None => None,
    };
    Ok(Plan {
        target,
        compare,
        workload,
        load,
        requests,
        duration,
        warmup: a.warmup,
        timeout,
        sampling: Sampling {
            temperature: a.temperature,
            ignore_eos: a.ignore_eos,
            endpoint: a.endpoint,
        },
    })
}

/// Runs `joulectl bench`: checks the flags, then loads the target(s) and prints the report.
/// A refused flag exits 2 (usage), like clap's own.
pub fn bench(a: &BenchArgs, context: Option<&str>, f: Format) -> anyhow::Result<()> {
    let plan = plan(a, context).map_err(|e| crate::exit::usage(format!("{e:#}")))?;
    // On a thread of its own, off the CLI's async runtime: the load blocks, and the gRPC
    // target runs (and drops) a runtime of its own.
    std::thread::spawn(move || bench::run(plan, f))
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        a: BenchArgs,
    }

    fn args(flags: &[&str]) -> BenchArgs {
        let mut v = vec!["bench", "--url", "http://127.0.0.1:1/v1"];
        v.extend_from_slice(flags);
        Cli::try_parse_from(v).unwrap().a
    }

    fn refused(flags: &[&str]) -> String {
        plan(&args(flags), None).unwrap_err().to_string()
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let d = |s| parse_duration("--duration", s).unwrap();
        assert_eq!(d("60s"), Duration::from_secs(60));
        assert_eq!(d("5m"), Duration::from_secs(300));
        assert_eq!(d("1h"), Duration::from_secs(3600));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("90"), Duration::from_secs(90));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        for bad in ["", "s", "10x", "-5s", "soon"] {
            let e = parse_duration("--duration", bad).unwrap_err().to_string();
            assert!(e.starts_with("--duration"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn bad_flags_are_one_line_naming_the_flag() {
        let e = refused(&["--rate", "5", "--concurrency", "4"]);
        assert!(e.contains("--rate") && e.contains("--concurrency"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let names = |flags: &[&str], name: &str| {
            let e = refused(flags);
            assert!(e.contains(name), "{flags:?}: {e}");
            assert!(!e.contains('\n'), "{flags:?}: {e}");
        };
        names(&["--requests", "0"], "--requests");
        names(&["--concurrency", "0"], "--concurrency");
        names(&["--rate", "0"], "--rate");
        names(&["--rate", "inf"], "--rate");
        names(&["--output-tokens", "0"], "--output-tokens");
        names(&["--timeout", "forever"], "--timeout");
        names(&["--duration", "0s"], "--duration");
        names(&["--workload", "/nonexistent/w.jsonl"], "--workload");
        names(&["--compare", "localhost:8080"], "--compare");
        names(&["--grpc", "127.0.0.1"], "--grpc");
        // No target at all: see cli/tests/process.rs (it needs an empty JOULE_HOME).
    }

    #[test]
    fn defaults_are_a_closed_loop_of_64_and_a_duration_alone_is_unbounded() {
        let p = plan(&args(&[]), None).unwrap();
        assert_eq!(p.requests, Some(DEFAULT_REQUESTS));
        assert_eq!(
            p.load,
            Load::Closed {
                concurrency: DEFAULT_CONCURRENCY
            }
        );
        assert_eq!(p.sampling.temperature, 0.0);
        let p = plan(&args(&["--duration", "2s", "--rate", "3"]), None).unwrap();
        assert_eq!(
            (p.requests, p.duration),
            (None, Some(Duration::from_secs(2)))
        );
        assert!(matches!(p.load, Load::Open { rate, .. } if rate == 3.0));
    }
}
