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
    /// Output format: table (default), wide (more columns), json or yaml.
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

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List cluster resources: nodes (no), models (mo), deployments (deploy), placements (pl;
    /// NAME filters by deployment).
    Get {
        resource: String,
        name: Option<String>,
        /// Placements of this node only.
        #[arg(long)]
        node: Option<String>,
    },
    /// Create or update the Models and Deployments in a YAML or JSON file (`-` for stdin).
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Delete a model or a deployment.
    Delete { resource: String, name: String },
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
