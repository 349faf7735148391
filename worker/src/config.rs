//! The worker's settings: command-line flags, each with an environment variable, and an
//! optional TOML file (`--config`) whose keys are the flags' long names. A flag or variable
//! given explicitly wins over the file; the file wins over the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use joule_engine::cuda::Device;
use joule_engine::kv::KvBudget;

use crate::power::SensorChoice;

/// One model to load at start-up: `PATH`, `NAME=PATH`, optionally `@SHA256` at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: Option<String>,
    pub path: PathBuf,
    pub sha256: Option<String>,
}

impl std::str::FromStr for ModelSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (rest, sha256) = match s.rsplit_once('@') {
            Some((r, h)) if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) => {
                (r, Some(h.to_ascii_lowercase()))
            }
            _ => (s, None),
        };
        let (name, path) = match rest.split_once('=') {
            Some((n, p)) => (Some(n.to_string()), p),
            None => (None, rest),
        };
        if path.is_empty() {
            return Err(format!(
                "--model {s:?}: expected PATH, NAME=PATH or NAME=PATH@SHA256"
            ));
        }
        if let Some(n) = &name {
            crate::registry::check_name(n)?;
        }
        Ok(Self {
            name,
            path: PathBuf::from(path),
            sha256,
        })
    }
}

/// `joule-worker`: serves models over gRPC and reports what each request costs in joules.
#[derive(Debug, Clone, Parser)]
#[command(name = "joule-worker", version, about)]
pub struct Args {
    /// TOML file with any of these settings (keys are the long flag names, e.g. `listen`).
    #[arg(long, env = "JOULE_CONFIG")]
    pub config: Option<PathBuf>,

    /// gRPC address (joule.internal.v1.Worker, grpc.health.v1, reflection).
    #[arg(long, env = "JOULE_LISTEN", default_value = "127.0.0.1:50061")]
    pub listen: SocketAddr,

    /// Prometheus `/metrics` address.
    #[arg(long, env = "JOULE_METRICS_LISTEN", default_value = "127.0.0.1:9461")]
    pub metrics_listen: SocketAddr,

    /// A model to load at start: PATH, NAME=PATH, NAME=PATH@SHA256 (repeatable; in the
    /// variable, comma-separated). The name defaults to the file's stem.
    #[arg(long = "model", env = "JOULE_MODEL", value_delimiter = ',')]
    pub models: Vec<ModelSpec>,

    /// Name of the (single) `--model` given without `NAME=`.
    #[arg(long, env = "JOULE_MODEL_NAME")]
    pub model_name: Option<String>,

    /// Expected sha256 of the (single) `--model`; the load fails on a mismatch.
    #[arg(long, env = "JOULE_MODEL_SHA256")]
    pub model_sha256: Option<String>,

    /// Memory all models together may take (weights plus KV cache): a size (`8GiB`) or a
    /// fraction of the memory available at start (`0.8`, `80%`).
    #[arg(long, env = "JOULE_MEMORY_BUDGET", default_value = "80%")]
    pub memory_budget: KvBudget,

    /// KV cache per model: a size or a fraction of the memory available at its load.
    #[arg(long, env = "JOULE_KV_BUDGET", default_value = "512MiB")]
    pub kv_budget: KvBudget,

    /// Most tokens per engine step.
    #[arg(long, env = "JOULE_MAX_BATCHED_TOKENS", default_value_t = 512)]
    pub max_batched_tokens: usize,

    /// Most sequences running at once per model.
    #[arg(long, env = "JOULE_MAX_SEQS", default_value_t = 64)]
    pub max_seqs: usize,

    /// Requests a model may hold waiting beyond `--max-seqs`; more are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "JOULE_MAX_QUEUED", default_value_t = 256)]
    pub max_queued: usize,

    /// Compute threads per model; 0: one per physical core.
    #[arg(long, env = "JOULE_THREADS", default_value_t = 0)]
    pub threads: usize,

    /// How finely the CPU kernels round activations before quantized weights: `int16` (logits
    /// within 1e-3 of the top logit of an f64 reference) or `int8` (llama.cpp's precision: up to ~0.15 of the top
    /// logit on SmolLM2; the tiled kernels do half the integer work, so prefill and batched
    /// decode run faster).
    #[arg(long, env = "JOULE_ACTIVATIONS", default_value = "int16", value_parser = joule_engine::quant::ActBits::parse)]
    pub activations: joule_engine::quant::ActBits,

    /// Where models run: `cpu`, or `cuda:N` for the NVIDIA GPU with CUDA ordinal N (`cuda` is
    /// `cuda:0`). The GPU's kernels are compiled once for its architecture (needs libnvrtc) and
    /// cached under --cache-dir.
    #[arg(long, env = "JOULE_DEVICE", default_value = "cpu")]
    pub device: Device,

    /// With --device cuda: the share of the GPU memory still free after the weights that the KV
    /// cache takes, in (0, 1].
    #[arg(long, env = "JOULE_GPU_MEMORY_FRACTION", default_value_t = 0.9)]
    pub gpu_memory_fraction: f64,

    /// Power sensor for energy accounting: auto (RAPL if readable, else estimate), nvml,
    /// rapl, estimate.
    #[arg(long, env = "JOULE_POWER_SENSOR", default_value = "auto")]
    pub power_sensor: SensorChoice,

    /// Watts of this machine when idle, for the estimate.
    #[arg(long, env = "JOULE_IDLE_WATTS", default_value_t = 40.0)]
    pub idle_watts: f64,

    /// Watts of this machine with every core busy, for the estimate.
    #[arg(long, env = "JOULE_BUSY_WATTS", default_value_t = 120.0)]
    pub busy_watts: f64,

    /// How often the power sensors are read, in milliseconds.
    #[arg(long, env = "JOULE_POWER_INTERVAL_MS", default_value_t = 100)]
    pub power_interval_ms: u64,

    /// Measure each model's tokens per joule at several batch sizes when first loaded here.
    #[arg(long, env = "JOULE_CALIBRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub calibrate: bool,

    /// Redo the calibration even when a cached profile exists.
    #[arg(long, env = "JOULE_RECALIBRATE")]
    pub recalibrate: bool,

    /// Batch sizes of the calibration sweep (those that do not fit in memory are skipped).
    #[arg(
        long,
        env = "JOULE_CALIBRATION_BATCHES",
        value_delimiter = ',',
        default_value = "1,2,4,8,16,32"
    )]
    pub calibration_batches: Vec<usize>,

    /// Output tokens each sequence generates at each calibration point.
    #[arg(long, env = "JOULE_CALIBRATION_TOKENS", default_value_t = 48)]
    pub calibration_tokens: u32,

    /// Where calibration profiles are cached (default: $XDG_CACHE_HOME/joule or ~/.cache/joule).
    #[arg(long, env = "JOULE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// On SIGTERM or Drain, how long in-flight streams may run before they are cancelled.
    #[arg(long, env = "JOULE_DRAIN_TIMEOUT_S", default_value_t = 30.0)]
    pub drain_timeout_s: f64,

    /// Scheduler replicas to register with and heartbeat to, HOST:PORT (repeatable, or
    /// comma-separated); none: run standalone.
    #[arg(long = "scheduler", env = "JOULE_SCHEDULER", value_delimiter = ',')]
    pub schedulers: Vec<String>,

    /// The cluster's join token (required with --scheduler).
    #[arg(long, env = "JOULE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,

    /// This worker's name in the cluster (default: the host name).
    #[arg(long, env = "JOULE_NODE_NAME")]
    pub node_name: Option<String>,

    /// Where the cluster reaches this worker's gRPC, HOST:PORT (default: --listen, or the host
    /// name and its port when --listen is a wildcard address).
    #[arg(long, env = "JOULE_ADVERTISE")]
    pub advertise: Option<String>,

    /// This worker's labels, `KEY=VALUE,...` (e.g. `gpu=p40,zone=a`): deployments select
    /// workers by them.
    #[arg(long, env = "JOULE_LABELS", default_value = "")]
    pub labels: String,

    /// How much the model cache (downloaded model files, under --cache-dir) may hold, e.g.
    /// `50GiB`; least recently used files are evicted past it. 0: no limit.
    #[arg(long, env = "JOULE_CACHE_BUDGET", default_value = "0")]
    pub cache_budget: String,

    /// A model download that connects, or receives, nothing for this long fails (seconds).
    #[arg(long, env = "JOULE_FETCH_TIMEOUT_S", default_value_t = 30)]
    pub fetch_timeout_s: u64,

    /// Log filter (tracing's EnvFilter syntax); RUST_LOG also works.
    #[arg(long, env = "JOULE_LOG", default_value = "info")]
    pub log: String,

    /// How log lines are written to stderr: text (coloured only on a terminal) or json (one
    /// object per line, for log shippers). The last 2000 are kept for `joulectl logs`.
    #[arg(long, env = "JOULE_LOG_FORMAT", default_value = "text")]
    pub log_format: joule_proto::logging::LogFormat,

    /// A second, plain-TCP port that serves only `grpc.health.v1`, for probes that cannot
    /// speak TLS (Kubernetes' gRPC probes); off when not given.
    #[arg(long, env = "JOULE_HEALTH_LISTEN")]
    pub health_listen: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub tls: joule_client::tls::TlsArgs,
}

/// The machine's host name (`/etc/hostname`, then `$HOSTNAME`, then "worker").
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "worker".into())
}

impl Args {
    /// Parses the command line and the environment, then fills what neither set from the
    /// `--config` file.
    pub fn load() -> Result<Self, String> {
        Self::load_from(std::env::args_os())
    }

    pub fn load_from<I, T>(args: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        let argv: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let cmd = Self::command();
        let m = cmd
            .clone()
            .try_get_matches_from(&argv)
            .map_err(|e| e.to_string())?;
        let Some(path) = m.get_one::<PathBuf>("config").cloned() else {
            return Self::finish(Self::from_arg_matches(&m).map_err(|e| e.to_string())?);
        };
        // Parse again with the file's values in front of the command line, leaving out every
        // setting given explicitly (a flag, or a variable, which clap reads again).
        let mut merged: Vec<std::ffi::OsString> = argv.iter().take(1).cloned().collect();
        for (key, value) in read_config(&path)? {
            if !cmd
                .get_arguments()
                .any(|a| a.get_long() == Some(key.as_str()))
            {
                return Err(format!(
                    "{}: unknown setting {key:?}; the keys are the long flag names, e.g. listen, \
                     model, kv-budget",
                    path.display()
                ));
            }
            if !explicit(&m, &key) {
                merged.extend(value.iter().map(|v| format!("--{key}={v}").into()));
            }
        }
        merged.extend(argv.iter().skip(1).cloned());
        let m = cmd
            .try_get_matches_from(merged)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Self::finish(Self::from_arg_matches(&m).map_err(|e| e.to_string())?)
    }

    fn finish(mut self) -> Result<Self, String> {
        // TLS files are checked now, so a bad one exits 2 before anything loads. In a cluster
        // the worker both serves and dials the internal ports: all three files or none.
        if !self.schedulers.is_empty() {
            self.tls.check_all_or_none().map_err(|e| e.to_string())?;
        }
        self.tls.load().map_err(|e| e.to_string())?;
        if self.model_name.is_some() || self.model_sha256.is_some() {
            let [one] = self.models.as_mut_slice() else {
                return Err(
                    "--model-name and --model-sha256 apply to a single --model; with \
                            several, write NAME=PATH@SHA256"
                        .into(),
                );
            };
            if let Some(n) = &self.model_name {
                crate::registry::check_name(n)?;
                one.name = Some(n.clone());
            }
            if let Some(h) = &self.model_sha256 {
                if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!("--model-sha256 {h:?} is not 64 hex digits"));
                }
                one.sha256 = Some(h.to_ascii_lowercase());
            }
        }
        if !self.schedulers.is_empty() && self.join_token.as_deref().unwrap_or("").is_empty() {
            return Err("--scheduler needs the cluster's --join-token (JOULE_JOIN_TOKEN)".into());
        }
        if !(self.idle_watts >= 0.0 && self.busy_watts >= self.idle_watts) {
            return Err(format!(
                "--idle-watts ({}) must be >= 0 and at most --busy-watts ({})",
                self.idle_watts, self.busy_watts
            ));
        }
        if self.calibration_batches.iter().any(|&b| b == 0 || b > 4096) {
            return Err("--calibration-batches must be sizes in 1..=4096".into());
        }
        if self.calibration_tokens == 0 {
            return Err("--calibration-tokens must be at least 1".into());
        }
        if !(self.drain_timeout_s >= 0.0 && self.drain_timeout_s.is_finite()) {
            return Err("--drain-timeout-s must be a number of seconds >= 0".into());
        }
        if self.power_interval_ms == 0 {
            return Err("--power-interval-ms must be at least 1".into());
        }
        joule_proto::names::parse_labels(&self.labels).map_err(|e| format!("--labels: {e}"))?;
        parse_size(&self.cache_budget).map_err(|e| format!("--cache-budget: {e}"))?;
        if self.fetch_timeout_s == 0 {
            return Err("--fetch-timeout-s must be at least 1".into());
        }
        if !(self.gpu_memory_fraction > 0.0 && self.gpu_memory_fraction <= 1.0) {
            return Err(format!(
                "--gpu-memory-fraction must be in (0, 1], got {}",
                self.gpu_memory_fraction
            ));
        }
        Ok(self)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout_s)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(default_cache_dir)
    }

    /// The labels (checked by `validate`).
    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        joule_proto::names::parse_labels(&self.labels).unwrap_or_default()
    }

    /// The model cache's settings.
    pub fn fetch(&self) -> crate::fetch::Settings {
        crate::fetch::Settings {
            dir: self.cache_dir().join("models"),
            budget: parse_size(&self.cache_budget).unwrap_or(0),
            timeout: Duration::from_secs(self.fetch_timeout_s),
            attempts: 3,
        }
    }
}

/// A size in bytes: `1234`, `512MiB`, `50GiB`, `2TiB` (also `KB`/`MB`/`GB`/`TB` in powers of
/// ten).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 512MiB or 50GiB"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0f64.powi(4),
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use MiB, GiB, TiB)")),
    };
    Ok((n * mult) as u64)
}

fn explicit(m: &ArgMatches, id: &str) -> bool {
    let id = id.replace('-', "_");
    let id = if id == "model" {
        "models".to_string()
    } else {
        id
    };
    matches!(
        m.value_source(&id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// `$XDG_CACHE_HOME/joule`, else `~/.cache/joule`, else `./.joule-cache`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("joule");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache/joule"),
        None => PathBuf::from(".joule-cache"),
    }
}

/// The file's settings as (long flag name, values); arrays become repeated flags.
fn read_config(path: &Path) -> Result<Vec<(String, Vec<String>)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --config {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{} is not valid TOML: {e}", path.display()))?;
    let scalar = |k: &str, v: &toml::Value| -> Result<String, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(format!(
                "{}: {k} must be a string, number, boolean or an array of them",
                path.display()
            )),
        }
    };
    let mut out = Vec::new();
    for (k, v) in &table {
        let key = k.replace('_', "-");
        let values = match v {
            toml::Value::Array(a) => a.iter().map(|x| scalar(k, x)).collect::<Result<_, _>>()?,
            v => vec![scalar(k, v)?],
        };
        out.push((key, values));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_specs_parse() {
        let m: ModelSpec = "a.gguf".parse().unwrap();
        assert_eq!((m.name, m.path, m.sha256), (None, "a.gguf".into(), None));
        let h = "AB".repeat(32);
        let m: ModelSpec = format!("small=/m/a.gguf@{h}").parse().unwrap();
        assert_eq!(m.name.as_deref(), Some("small"));
        assert_eq!(m.path, PathBuf::from("/m/a.gguf"));
        assert_eq!(m.sha256, Some("ab".repeat(32)));
        assert!("bad name=/x".parse::<ModelSpec>().is_err());
        assert!("x=".parse::<ModelSpec>().is_err());
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:7000\"\nmax_seqs = 8\nmodel = [\"a=/x.gguf\", \"b=/y.gguf\"]\n",
        )
        .unwrap();
        let a =
            Args::load_from(["w", "--config", f.to_str().unwrap(), "--max-seqs", "16"]).unwrap();
        assert_eq!(a.listen.port(), 7000);
        assert_eq!(a.max_seqs, 16);
        assert_eq!(a.models.len(), 2);
        assert_eq!(a.max_queued, 256);

        std::fs::write(&f, "lisen = \"x\"\n").unwrap();
        let e = Args::load_from(["w", "--config", f.to_str().unwrap()]).unwrap_err();
        assert!(e.contains("unknown setting \"lisen\""), "{e}");
    }

    #[test]
    fn a_scheduler_needs_the_join_token() {
        let e = Args::load_from(["w", "--scheduler", "10.0.0.1:7000"]).unwrap_err();
        assert!(e.contains("--join-token"), "{e}");
        let a =
            Args::load_from(["w", "--scheduler", "a:7000,b:7000", "--join-token", "t"]).unwrap();
        assert_eq!(a.schedulers, ["a:7000", "b:7000"]);
    }

    #[test]
    fn devices_and_the_gpu_memory_fraction_are_checked() {
        let a = Args::load_from(["w", "--device", "cuda:1"]).unwrap();
        assert_eq!(a.device, Device::Cuda(1));
        assert_eq!(Args::load_from(["w"]).unwrap().device, Device::Cpu);
        let e = Args::load_from(["w", "--device", "gpu0"]).unwrap_err();
        assert!(e.contains("`cpu`, `cuda` or `cuda:N`"), "{e}");
        let e = Args::load_from(["w", "--gpu-memory-fraction", "1.5"]).unwrap_err();
        assert!(e.contains("(0, 1]"), "{e}");
    }

    #[test]
    fn model_name_needs_exactly_one_model() {
        let e = Args::load_from(["w", "--model", "a", "--model", "b", "--model-name", "x"])
            .unwrap_err();
        assert!(e.contains("single --model"), "{e}");
        let a = Args::load_from(["w", "--model", "dir/a.gguf", "--model-name", "x"]).unwrap();
        assert_eq!(a.models[0].name.as_deref(), Some("x"));
    }
}
