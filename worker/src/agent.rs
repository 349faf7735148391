//! The worker's side of the cluster: with `--scheduler`, it registers with whichever scheduler
//! replica answers (name, address, labels, hardware, memory and power figures, calibration
//! profiles), then heartbeats its load and its placements' progress every interval the
//! scheduler asked for, and hands the assignment in each reply to the [`Follower`]. A replica that does not answer is left for the next
//! one in the list; a scheduler that no longer knows the worker (NOT_FOUND) gets a fresh
//! registration, as do changed calibration profiles. It never gives up: a worker outlives
//! scheduler failovers and restarts.

use std::sync::Arc;
use std::time::Duration;

use joule_proto::internal::v1 as pb;

use crate::follow::Follower;
use crate::hardware::Hardware;
use crate::state::State;

/// What the agent needs to describe this worker.
pub struct Agent {
    pub schedulers: Vec<String>,
    pub join_token: String,
    pub name: String,
    /// Where the scheduler and clients reach this worker's gRPC.
    pub address: String,
    pub hardware: Hardware,
    pub fingerprint: String,
    pub state: Arc<State>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The power figures placement weighs (from --idle-watts/--busy-watts).
    pub idle_watts: f64,
    pub busy_watts: f64,
    /// "cpu" or "cuda:N".
    pub device: String,
    pub follower: Arc<Follower>,
}

impl Agent {
    fn node(&self) -> pb::Node {
        let hw = &self.hardware;
        pb::Node {
            name: self.name.clone(),
            address: self.address.clone(),
            hardware: Some(pb::NodeHardware {
                cpu_model: hw.cpu_model.clone(),
                logical_cpus: hw.logical_cpus as u32,
                physical_cores: hw.physical_cores as u32,
                memory_bytes: hw.memory_bytes,
                simd: hw.simd.clone(),
                gpus: hw.gpus.clone(),
                fingerprint: self.fingerprint.clone(),
                model_memory_bytes: self.state.models.memory_budget(),
                idle_watts: self.idle_watts,
                busy_watts: self.busy_watts,
                mem_bandwidth_gbs: 0.0,
                device: self.device.clone(),
            }),
            profiles: self.profiles(),
            labels: self.labels.clone(),
            ..Default::default()
        }
    }

    fn profiles(&self) -> Vec<pb::ModelProfile> {
        self.state
            .models
            .ready()
            .iter()
            .filter_map(|m| {
                let p = m.calibration.read().ok()?.clone()?;
                Some(pb::ModelProfile {
                    model: m.name.clone(),
                    sha256: m.sha256.clone(),
                    calibration: Some(crate::server::calibration_message(&p)),
                })
            })
            .collect()
    }

    fn load(&self) -> pb::WorkerLoad {
        let mut l = pb::WorkerLoad {
            watts: self.state.power.watts(),
            energy_source: self.state.energy_source() as i32,
            ..Default::default()
        };
        for m in self.state.models.ready() {
            let s = m.engine.stats();
            l.running += s.running as u32;
            l.waiting += s.waiting as u32;
            l.output_tokens_per_s += s.tokens_per_s;
            l.kv_blocks_used += s.kv.used as u64;
            l.kv_blocks_total += s.kv.total as u64;
            l.models.push(pb::ModelLoad {
                model: m.name.clone(),
                running: s.running as u32,
                waiting: s.waiting as u32,
                output_tokens_per_s: s.tokens_per_s,
                kv_blocks_used: s.kv.used as u64,
                kv_blocks_total: s.kv.total as u64,
            });
        }
        l
    }

    /// Runs until the process ends.
    pub async fn run(self) {
        let connect = joule_client::Connect {
            connect_timeout: Duration::from_millis(500),
            timeout: Some(Duration::from_secs(3)),
        };
        let clients: Vec<Option<joule_client::Registry>> = self
            .schedulers
            .iter()
            .map(|a| match connect.registry(a, &self.join_token) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!("--scheduler: {e}");
                    None
                }
            })
            .collect();
        if clients.iter().all(Option::is_none) {
            tracing::error!("no usable --scheduler address; this worker stays out of the cluster");
            return;
        }
        // Serve the last assignment again before registering, so that the leader sees no gap;
        // a load that takes longer than this goes on while the heartbeats start.
        self.follower.restore(Duration::from_secs(3)).await;
        let mut at = 0usize;
        let mut registered_profiles: Option<Vec<pb::ModelProfile>> = None;
        let mut interval = Duration::from_secs(1);
        let mut failures = 0u32;
        loop {
            let Some(mut c) = clients[at % clients.len()].clone() else {
                at += 1;
                continue;
            };
            let replica = &self.schedulers[at % clients.len()];
            let profiles = self.profiles();
            if registered_profiles.as_ref() != Some(&profiles) {
                match c
                    .register(pb::RegisterRequest {
                        node: Some(self.node()),
                    })
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        interval =
                            Duration::from_millis(u64::from(r.heartbeat_interval_ms.max(100)));
                        tracing::info!(scheduler = %replica, name = %self.name, "registered with the cluster");
                        registered_profiles = Some(profiles);
                        failures = 0;
                    }
                    Err(e) => {
                        if e.code() == tonic::Code::Unauthenticated {
                            tracing::error!(scheduler = %replica, "{}", e.message());
                        } else if failures.is_multiple_of(10) {
                            tracing::warn!(scheduler = %replica, error = %e.message(), "cannot register; trying the next scheduler");
                        }
                        failures += 1;
                        at += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            tokio::time::sleep(interval).await;
            let hb = pb::HeartbeatRequest {
                name: self.name.clone(),
                load: Some(self.load()),
                placements: self.follower.reports(),
            };
            match c.heartbeat(hb).await {
                Ok(r) => {
                    failures = 0;
                    self.follower.apply(&r.into_inner().assignments);
                }
                Err(e) if e.code() == tonic::Code::NotFound => {
                    tracing::info!(scheduler = %replica, "the cluster does not know this worker; registering again");
                    registered_profiles = None;
                }
                Err(e) => {
                    if failures.is_multiple_of(10) {
                        tracing::warn!(scheduler = %replica, error = %e.message(), "heartbeat failed; trying the next scheduler");
                    }
                    failures += 1;
                    at += 1;
                }
            }
        }
    }
}
