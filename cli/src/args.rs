//! `joulectl`'s flags: global ones (where to connect, how to print) and shared argument groups.
//! Every global flag has a `JOULE_*` environment variable; the token is never echoed.

use clap::{Parser, Subcommand};
use joule_proto::v1;

use crate::render::Format;

#[derive(Parser, Debug)]
#[command(
    name = "joulectl",
    version,
    about = "Joule's command-line client: the cluster (kubectl-style verbs) and single workers"
)]
pub struct Cli {
    /// Scheduler replicas of the cluster, comma-separated (any replica answers; the next is
    /// tried when one is down).
    #[arg(
        long,
        global = true,
        env = "JOULE_SERVER",
        default_value = "127.0.0.1:7001"
    )]
    pub server: String,
    /// The cluster's admin token.
    #[arg(long, global = true, env = "JOULE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
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

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List cluster resources: nodes (no), models (mo), deployments (deploy), placements (pl;
    /// NAME filters by deployment), tenants (tn), apikeys (keys; --tenant required), usage
    /// (per tenant, day and model; --tenant, --from, --to; -o csv too).
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
