//! `joule-worker`: one per machine. It serves models from the engine over gRPC
//! (`joule.internal.v1.Worker`), and knows what its work costs: it reads power from the
//! hardware, charges joules to each request, and measures each model's tokens per joule at
//! several batch sizes.
//!
//! - [`config`]: flags, environment and the optional TOML file.
//! - [`power`]: the `PowerSensor` trait (NVML, RAPL, estimate) and the sampling monitor.
//! - [`registry`]: loaded models, their engines, memory budget and queue limits.
//! - [`calibrate`]: the batch-size sweep and its on-disk cache; [`hardware`]: the fingerprint.
//! - [`service`]: the gRPC service; [`stream`]: one response stream; [`state`]: what they
//!   share, including drain.
//! - [`metrics`]: Prometheus `/metrics`; [`server`]: wiring, start-up, shutdown.
//! - [`agent`]: with `--scheduler`, registration with the cluster and heartbeats.

pub mod agent;
pub mod calibrate;
pub mod config;
pub mod convert;
pub mod fetch;
pub mod follow;
pub mod hardware;
pub mod metrics;
pub mod power;
pub mod registry;
pub mod server;
pub mod service;
pub mod state;
pub mod stream;

pub use config::Args;
pub use server::Worker;
