//! `joulectl`'s flags: global ones (where to connect, how to print) and shared argument groups.
//! Every global flag has a `JOULE_*` environment variable; the token is never echoed.

use clap::{Parser, Subcommand};
use joule_proto::v1;

use crate::render::Format;

#[derive(Parser, Debug)]
#[command(
    name = "joulectl",
    version,
    about = "Joule's command-line client: the cluster (kubectl-style verbs) and single workers",
    after_help = crate::exit::HELP
)]
pub struct Cli {
    /// Scheduler replicas of the cluster, comma-separated (any replica answers; the next is
    /// tried when one is down). Default: the context's.
    #[arg(long, global = true, env = "JOULE_SERVER")]
    pub server: Option<String>,
    /// The cluster's admin token. Default: the context's (only when --server is not given).
    #[arg(long, global = true, env = "JOULE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The context of `${JOULE_HOME:-~/.config/joule}/config.yaml` to use (default: its
    /// current-context).
    #[arg(long, global = true, env = "JOULE_CONTEXT")]
    pub context: Option<String>,
    /// One worker's gRPC address (generate, chat, models, stats, wait, and drain without a
    /// node).
    #[arg(
        long,
        global = true,
        env = "JOULE_WORKER",
        default_value = "http://127.0.0.1:50061"
    )]
    pub worker: String,
    /// The token a worker in a cluster takes: the cluster's join token.
    #[arg(
        long,
        global = true,
        env = "JOULE_WORKER_TOKEN",
        hide_env_values = true
    )]
    pub worker_token: Option<String>,
    /// PEM CA bundle the scheduler replicas' and workers' certificates must chain to: the
    /// connections are TLS (needed where the cluster runs with --tls-cert).
    #[arg(long, global = true, env = "JOULE_TLS_CA")]
    pub certificate_authority: Option<std::path::PathBuf>,
    /// PEM client certificate, for a cluster that demands one (mutual TLS).
    #[arg(long, global = true, env = "JOULE_TLS_CERT")]
    pub client_certificate: Option<std::path::PathBuf>,
    /// PEM private key of --client-certificate.
    #[arg(long, global = true, env = "JOULE_TLS_KEY")]
    pub client_key: Option<std::path::PathBuf>,
    /// The name to expect in the servers' certificates, when it is not the host in --server.
    #[arg(long, global = true, env = "JOULE_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Output format: table (default), wide (more columns), json, yaml, or csv (`get usage`
    /// only).
    #[arg(short = 'o', long, global = true, default_value = "table")]
    pub output: Format,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(clap::Args, Debug)]
pub struct Sampling {
    /// Model name; empty: the worker's only model.
    #[arg(long, short, default_value = "")]
    pub model: String,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// 0 is greedy.
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long)]
    pub seed: Option<u64>,
}

impl Sampling {
    pub fn params(&self) -> v1::SamplingParams {
        v1::SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            max_tokens: Some(self.max_tokens),
            ..Default::default()
        }
    }
}

/// The filters of `get`.
#[derive(clap::Args, Debug, Default)]
pub struct GetFilters {
    /// Placements of this node only.
    #[arg(long)]
    pub node: Option<String>,
    /// The tenant: whose API keys (required for apikeys), whose usage (default: everyone's).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Usage from this day on, YYYY-MM-DD (UTC; default: the first of --to's month).
    #[arg(long)]
    pub from: Option<String>,
    /// Usage up to this day, inclusive, YYYY-MM-DD (UTC; default: today).
    #[arg(long)]
    pub to: Option<String>,
    /// Nodes whose labels match: key=value, key!=value, key or !key, comma-separated (all
    /// must hold).
    #[arg(short = 'l', long, value_parser = crate::commands::get::Selector::parse)]
    pub selector: Option<crate::commands::get::Selector>,
    /// Print the list, then the rows that change, until Ctrl-C.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// How often -w polls: 2s, 500ms.
    #[arg(
        long,
        hide = true,
        env = "JOULE_WATCH_INTERVAL",
        default_value = "2s",
        value_parser = crate::commands::get::watch::parse_interval
    )]
    pub watch_interval: std::time::Duration,
}

/// What `create` makes.
#[derive(Subcommand, Debug)]
pub enum CreateWhat {
    /// A new API key of a tenant, made here and printed once: the cluster keeps only its
    /// SHA-256.
    #[command(visible_alias = "key")]
    Apikey {
        /// The tenant the key belongs to.
        #[arg(long)]
        tenant: String,
        /// A label for the key (at most 64 characters).
        #[arg(long)]
        name: Option<String>,
        /// When it stops working, from now: 30d, 12h, 90m or 3600s (at most 3650d; default:
        /// never).
        #[arg(long)]
        expires: Option<String>,
    },
}

/// `config` verbs, as kubectl's.
#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// List the contexts (`*` marks the current one; tokens are never shown).
    GetContexts,
    /// Print the current context's name.
    CurrentContext,
    /// Make NAME the current context.
    UseContext { name: String },
    /// Create or change a context (only the settings given change; the first becomes current).
    SetContext {
        name: String,
        /// Scheduler replicas, comma-separated.
        #[arg(long)]
        server: Option<String>,
        /// The admin token; `-` reads it from standard input (kept out of `ps` and the shell
        /// history).
        #[arg(long)]
        token: Option<String>,
        /// The gateway's OpenAI base URL, http://host:port/v1.
        #[arg(long)]
        gateway: Option<String>,
        /// A tenant's API key for the gateway; `-` reads it from standard input.
        #[arg(long)]
        api_key: Option<String>,
        /// Forget the context's TLS settings first (the global --certificate-authority,
        /// --client-certificate, --client-key and --tls-server-name given here set them).
        #[arg(long)]
        no_tls: bool,
    },
    /// Remove a context.
    DeleteContext { name: String },
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// A local cluster on this machine: `cluster up|down|status`.
    Cluster {
        #[command(subcommand)]
        cmd: crate::cluster::ClusterCmd,
    },
    /// Load an OpenAI-compatible server (the gateway by default) or Joule's gRPC API: TTFT,
    /// ITL and end-to-end percentiles, output tokens/s, joules per token, errors by kind;
    /// `--compare URL` runs the same requests against a second server and prints the ratios.
    Bench(crate::commands::bench::BenchArgs),
    /// Contexts (which cluster this client talks to): get-contexts, use-context, set-context,
    /// current-context, delete-context.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// List cluster resources: nodes (no), models (mo), deployments (deploy), placements (pl;
    /// NAME filters by deployment), events (ev; NAME filters by object: node/w1, or a bare
    /// name), tenants (tn), apikeys (keys; --tenant required), usage
    /// (per tenant, day and model; --tenant, --from, --to; -o csv too). `-l` selects nodes by
    /// their labels; `-w` prints the rows that change until Ctrl-C.
    Get {
        resource: String,
        name: Option<String>,
        #[command(flatten)]
        filters: GetFilters,
    },
    /// Create or update the Models, Deployments and Tenants in a YAML or JSON file (`-` for
    /// stdin).
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Make a resource the cluster cannot make itself: `create apikey --tenant NAME`.
    Create {
        #[command(subcommand)]
        what: CreateWhat,
    },
    /// Delete a model, a deployment, a tenant, or an API key (`delete apikey ID --tenant NAME`).
    Delete {
        resource: String,
        name: String,
        /// The tenant of the API key.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// A tenant's bill for one calendar month (UTC): tokens and energy, priced.
    Bill {
        #[arg(long)]
        tenant: String,
        /// The month, YYYY-MM.
        #[arg(long)]
        month: String,
        /// The price of a million tokens (prompt plus completion).
        #[arg(long)]
        price_per_mtok: f64,
        /// The price of a kWh (measured and estimated energy alike).
        #[arg(long)]
        price_per_kwh: f64,
        #[arg(long, default_value = "USD")]
        currency: String,
    },
    /// Show one resource in detail.
    Describe { resource: String, name: String },
    /// The fields of a kind `apply -f` takes (Model, Deployment, Tenant), or of one field:
    /// `explain tenant`, `explain tenant.limits`.
    Explain {
        /// KIND or KIND.FIELD (any of the kind's names; `spec.` may be left out).
        what: String,
    },
    /// Print a shell completion script: `source <(joulectl completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// A worker's recent log lines, through the cluster (`-f` to follow).
    Logs {
        node: String,
        /// Keep printing new lines as the worker writes them.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines (default: every line the worker keeps, up to 2000).
        #[arg(long)]
        tail: Option<u32>,
    },
    /// Live figures per node or deployment: tokens/s, watts, tokens per joule, KV use, queues.
    Top {
        #[command(subcommand)]
        what: TopWhat,
    },
    /// Mark a node unschedulable: no new placements; what runs there stays.
    Cordon { node: String },
    /// Mark a node schedulable again.
    Uncordon { node: String },
    /// With a NODE: move its placements away (make-before-break). Without: drain the worker at
    /// --worker (stop admitting, let streams finish until the deadline).
    Drain {
        node: Option<String>,
        #[arg(long, default_value_t = 0)]
        deadline_ms: u32,
    },
    /// Stream the completion of a raw prompt (from --worker).
    Generate {
        #[command(flatten)]
        s: Sampling,
        prompt: String,
    },
    /// Stream a chat answer, rendered with the model's chat template (from --worker).
    Chat {
        #[command(flatten)]
        s: Sampling,
        /// A system message to start the chat with.
        #[arg(long)]
        system: Option<String>,
        message: String,
    },
    /// The models the worker at --worker serves.
    Models,
    /// Engine, energy and calibration figures of the worker at --worker.
    Stats,
    /// Wait until the worker (or a model) is serving.
    Wait {
        #[arg(long, default_value = "")]
        model: String,
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
}

impl Cmd {
    /// Whether the command talks to the cluster's replicas (`--server`, or the context's).
    pub fn reaches_replicas(&self) -> bool {
        match self {
            Cmd::Get { .. }
            | Cmd::Apply { .. }
            | Cmd::Create { .. }
            | Cmd::Delete { .. }
            | Cmd::Bill { .. }
            | Cmd::Describe { .. }
            | Cmd::Logs { .. }
            | Cmd::Top { .. }
            | Cmd::Cordon { .. }
            | Cmd::Uncordon { .. } => true,
            Cmd::Drain { node, .. } => node.is_some(),
            Cmd::Cluster { .. }
            | Cmd::Bench(_)
            | Cmd::Config { .. }
            | Cmd::Explain { .. }
            | Cmd::Completion { .. }
            | Cmd::Generate { .. }
            | Cmd::Chat { .. }
            | Cmd::Models
            | Cmd::Stats
            | Cmd::Wait { .. } => false,
        }
    }
}

/// What `top` shows.
#[derive(Subcommand, Debug, Clone, Copy)]
pub enum TopWhat {
    /// Per node: tokens/s, watts, tokens per joule, KV use, running and waiting requests, and
    /// whether the watts are measured or estimated.
    #[command(visible_alias = "no", alias = "node")]
    Nodes,
    /// Per deployment, summed over its replicas: tokens/s, its share of watts, tokens per
    /// joule, replicas ready.
    #[command(visible_alias = "deploy", alias = "deployment")]
    Deployments,
}
