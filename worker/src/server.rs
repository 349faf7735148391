//! Wiring: opens the power sensors, binds the gRPC and metrics ports, loads the start-up
//! models in the background (each calibrated before it serves), and on SIGTERM or SIGINT drains
//! then stops. [`Worker::start`] is also how tests and benches run a worker in-process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State as AxState;
use axum::http::header;
use axum::response::IntoResponse;
use joule_proto::internal::v1 as pb;
use joule_proto::internal::v1::worker_server::WorkerServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic_health::ServingStatus;

use crate::calibrate::{self, Profile};
use crate::config::Args;
use crate::hardware::Hardware;
use crate::power::{self, EstimateConfig, PowerMonitor};
use crate::registry::{Limits, Registry, Served};
use crate::service::WorkerService;
use crate::state::State;

/// A running worker.
#[derive(Debug)]
pub struct Worker {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub state: Arc<State>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The plain health port (`--health-listen`): closed when the worker is dropped.
    _health_port: Option<joule_client::tls::HealthPort>,
}

/// Loads a model and calibrates it (from cache when possible) before it serves. Blocking.
pub fn load(
    state: &State,
    name: Option<&str>,
    path: &Path,
    sha256: Option<&str>,
) -> Result<Arc<Served>, Status> {
    load_with(state, name, path, sha256, &|| {})
}

/// [`load`], calling `calibrating` when the weights are in and calibration starts.
pub fn load_with(
    state: &State,
    name: Option<&str>,
    path: &Path,
    sha256: Option<&str>,
    calibrating: &(dyn Fn() + Sync),
) -> Result<Arc<Served>, Status> {
    let prepare = |s: &Arc<Served>| -> Result<(), Status> {
        if let Some(cal) = &state.calibration {
            calibrating();
            match calibrate::profile(s, state.power.as_ref(), &state.hardware, cal) {
                Ok(p) => {
                    *s.calibration.write().unwrap_or_else(|e| e.into_inner()) = Some(p);
                }
                Err(e) => {
                    tracing::warn!(model = %s.name, error = %e, "serving without a calibration profile")
                }
            }
        }
        Ok(())
    };
    state.models.load(name, path, sha256, &prepare)
}

pub fn calibration_message(p: &Profile) -> pb::Calibration {
    pb::Calibration {
        points: p
            .points
            .iter()
            .map(|x| pb::CalibrationPoint {
                batch_size: u32::try_from(x.batch_size).unwrap_or(u32::MAX),
                output_tokens_per_s: x.output_tokens_per_s,
                watts: x.watts,
                tokens_per_joule: x.tokens_per_joule,
            })
            .collect(),
        source: match p.source {
            power::Source::Measured => joule_proto::v1::EnergySource::Measured,
            power::Source::Estimated => joule_proto::v1::EnergySource::Estimated,
        } as i32,
        hardware: p.hardware.clone(),
        measured_at: p.measured_at,
    }
}

async fn metrics(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

impl Worker {
    /// Binds both ports and starts serving; start-up models load in the background.
    pub async fn start(args: &Args) -> anyhow::Result<Self> {
        // Bad TLS files are refused before anything loads.
        let tls = args.tls.load()?;
        tls.install_client();
        let est = EstimateConfig {
            idle_watts: args.idle_watts,
            busy_watts: args.busy_watts,
        };
        let mut gpu_names = Vec::new();
        for mut g in power::gpus() {
            match g.read() {
                Ok(r) => {
                    tracing::info!(sensor = %r.sensor, watts = r.watts, energy_j = ?r.energy_j, gpu = ?r.gpu, "NVML reading");
                    if let Some(gpu) = r.gpu {
                        gpu_names.push(gpu.name);
                    }
                }
                Err(e) => tracing::warn!(sensor = %g.name(), error = %e, "NVML read failed"),
            }
        }
        let threads = if args.threads == 0 {
            joule_engine::model::physical_cores()
        } else {
            args.threads
        };
        // The driver's description (name, compute capability, memory, driver) where CUDA is
        // usable; NVML's names otherwise.
        let probed = joule_engine::cuda::probe();
        match &probed {
            Ok(gpus) => {
                for g in gpus {
                    tracing::info!(gpu = %g.describe(), ordinal = g.ordinal, "CUDA device");
                }
                gpu_names = gpus.iter().map(|g| g.describe()).collect();
            }
            Err(why) => tracing::info!(reason = %why, "no CUDA device"),
        }
        // A GPU asked for must be there, and new enough, before anything loads.
        let mut serving_gpu = None;
        if let joule_engine::cuda::Device::Cuda(n) = args.device {
            if args.activations != joule_engine::quant::ActBits::Int16 {
                anyhow::bail!(
                    "--activations {} applies to the CPU kernels; --device {} quantises \
                     activations at 16 bits (leave --activations at int16)",
                    args.activations,
                    args.device
                );
            }
            let gpu = match &probed {
                Err(why) => anyhow::bail!("--device {}: {why}", args.device),
                Ok(gpus) => gpus.iter().find(|g| g.ordinal == n).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--device {}: this machine has {} GPU(s): {}",
                        args.device,
                        gpus.len(),
                        gpus.iter()
                            .map(|g| format!("cuda:{} ({})", g.ordinal, g.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?,
            };
            joule_engine::cuda::arch::compute_type(gpu.compute_capability)
                .map_err(|e| anyhow::anyhow!("--device {}: {e}", args.device))?;
            serving_gpu = Some(gpu.pci);
        }
        // Energy is metered where the work runs: the serving GPU, or the CPU.
        let sensors =
            power::open(args.power_sensor, &est, serving_gpu).map_err(anyhow::Error::msg)?;
        let monitor = PowerMonitor::start(sensors, Duration::from_millis(args.power_interval_ms));
        tracing::info!(sensors = ?monitor.sensors(), source = monitor.source().as_str(), watts = monitor.watts(), "power sensors open");
        let kernels = joule_engine::quant::Kernels::select().map_err(anyhow::Error::msg)?;
        let hw = Hardware::detect(kernels.level, gpu_names);
        let fingerprint = hw.fingerprint(&format!(
            "threads={threads},activations={}",
            args.activations
        ));
        tracing::info!(cpu = %hw.cpu_model, cores = hw.physical_cores, simd = %hw.simd, gpus = ?hw.gpus, fingerprint = %fingerprint, "hardware");
        let budget = args.memory_budget.bytes(joule_engine::kv::mem_available());
        let limits = Limits {
            memory_budget: budget,
            kv_budget: args.kv_budget,
            max_batched_tokens: args.max_batched_tokens,
            max_seqs: args.max_seqs,
            max_queued: args.max_queued,
            threads: args.threads,
            activations: args.activations,
            device: args.device,
            gpu_memory_fraction: args.gpu_memory_fraction,
            cache_dir: args.cache_dir(),
        };
        let models = Arc::new(Registry::new(limits, monitor.clone()));
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health
            .set_service_status("joule.internal.v1.Worker", ServingStatus::NotServing)
            .await;
        let calibration = args.calibrate.then(|| calibrate::Settings {
            batches: args.calibration_batches.clone(),
            tokens: args.calibration_tokens,
            cache_dir: args.cache_dir(),
            recalibrate: args.recalibrate,
        });
        let state = Arc::new(State::new(
            models,
            monitor,
            health.clone(),
            calibration,
            fingerprint,
            args.drain_timeout(),
        ));

        let grpc = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
        let mlis = TcpListener::bind(args.metrics_listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (--metrics-listen)",
                    args.metrics_listen
                )
            })?;
        health
            .set_service_status(joule_client::tls::LIVENESS, ServingStatus::Serving)
            .await;
        let stop = CancellationToken::new();
        let health_port = joule_client::tls::health_port(
            args.health_listen.map(|a| a.to_string()).as_deref(),
            health_service.clone(),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        let grpc_addr = grpc.local_addr()?;
        let metrics_addr = mlis.local_addr()?;

        let reflection =
            joule_proto::reflection::v1().context("building the reflection service")?;
        let reflection_v1alpha =
            joule_proto::reflection::v1alpha().context("building the reflection service")?;
        let svc = WorkerService {
            state: state.clone(),
        };
        let auth = joule_client::RequireBearer::new(args.join_token.as_deref(), "--join-token");
        let s = stop.clone();
        let incoming = joule_client::tls::listener::incoming(grpc, tls.grpc_internal())?;
        let grpc_task = tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(reflection)
                .add_service(reflection_v1alpha)
                // In a cluster every call needs the join token (the gateways send it).
                .add_service(WorkerServer::with_interceptor(svc, auth))
                .serve_with_incoming_shutdown(incoming, s.cancelled())
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics))
            .with_state(state.clone());
        let s = stop.clone();
        let metrics_server =
            joule_client::tls::listener::spawn_http(mlis, tls.http(), app, false, async move {
                s.cancelled().await
            })?;
        let metrics_task = tokio::spawn(async move {
            // Aborting this task (shutdown) stops the server task too.
            let _stop = AbortOnDrop(metrics_server.abort_handle());
            match metrics_server.await {
                Ok(Err(e)) => tracing::error!(error = %e, "metrics server failed"),
                Err(e) => tracing::error!(error = %e, "metrics task failed"),
                Ok(Ok(())) => {}
            }
        });
        tracing::info!(%grpc_addr, %metrics_addr, tls = ?tls, "joule-worker listening");

        let st = state.clone();
        let specs = args.models.clone();
        let loader = tokio::spawn(async move {
            for spec in specs {
                let st2 = st.clone();
                let r = tokio::task::spawn_blocking(move || {
                    load(
                        &st2,
                        spec.name.as_deref(),
                        &spec.path,
                        spec.sha256.as_deref(),
                    )
                })
                .await;
                match r {
                    Ok(Ok(m)) => {
                        st.health
                            .set_service_status(&m.name, ServingStatus::Serving)
                            .await
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e.message(), "a start-up model failed to load; serving the others")
                    }
                    Err(e) => tracing::error!(error = %e, "the load task failed"),
                }
            }
            if !st.draining() {
                st.health
                    .set_service_status("", ServingStatus::Serving)
                    .await;
                st.health
                    .set_service_status("joule.internal.v1.Worker", ServingStatus::Serving)
                    .await;
                tracing::info!(models = st.models.ready().len(), "ready");
            }
        });
        let mut tasks = vec![grpc_task, metrics_task, loader];
        if !args.schedulers.is_empty() {
            let address = args.advertise.clone().unwrap_or_else(|| {
                if grpc_addr.ip().is_unspecified() {
                    format!("{}:{}", crate::config::host_name(), grpc_addr.port())
                } else {
                    grpc_addr.to_string()
                }
            });
            let cache =
                Arc::new(crate::fetch::Cache::new(args.fetch()).map_err(anyhow::Error::msg)?);
            let follower = crate::follow::Follower::new(
                state.clone(),
                cache,
                args.cache_dir().join("assignment.json"),
            );
            let agent = crate::agent::Agent {
                schedulers: args.schedulers.clone(),
                join_token: args.join_token.clone().unwrap_or_default(),
                name: args
                    .node_name
                    .clone()
                    .unwrap_or_else(crate::config::host_name),
                address,
                hardware: hw.clone(),
                fingerprint: state.hardware.clone(),
                state: state.clone(),
                labels: args.labels(),
                idle_watts: args.idle_watts,
                busy_watts: args.busy_watts,
                device: args.device.to_string(),
                follower,
            };
            tasks.push(tokio::spawn(agent.run()));
        }
        Ok(Self {
            grpc_addr,
            metrics_addr,
            state,
            stop,
            tasks,
            _health_port: health_port,
        })
    }

    /// Drains (up to the configured deadline), stops both servers and every engine.
    pub async fn shutdown(self) {
        let (finished, cancelled) = self.state.drain(self.state.drain_timeout).await;
        tracing::info!(finished, cancelled, "drained");
        self.stop.cancel();
        for m in self.state.models.ready() {
            m.engine.shutdown();
        }
        self.state.power.stop();
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
