//! What the gRPC service, the metrics endpoint and the signal handler share: the models, the
//! power monitor, metrics, and the drain state (whether new requests are admitted, how many
//! streams are open, and the token that cancels them at the drain deadline).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use joule_proto::v1::EnergySource;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::calibrate;
use crate::metrics::Metrics;
use crate::power::{PowerMonitor, Source};
use crate::registry::Registry;

/// The worker's shared state.
pub struct State {
    pub models: Arc<Registry>,
    pub power: Arc<PowerMonitor>,
    pub metrics: Metrics,
    pub health: HealthReporter,
    pub calibration: Option<calibrate::Settings>,
    /// Hardware fingerprint (keys calibration profiles).
    pub hardware: String,
    pub drain_timeout: Duration,
    draining: AtomicBool,
    streams: AtomicUsize,
    cancelled: AtomicU32,
    /// Fired at the drain deadline: every open stream cancels its request.
    pub cancel_all: CancellationToken,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

/// One open stream, counted until dropped.
#[derive(Debug)]
pub struct StreamGuard(Arc<State>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

impl State {
    pub fn new(
        models: Arc<Registry>,
        power: Arc<PowerMonitor>,
        health: HealthReporter,
        calibration: Option<calibrate::Settings>,
        hardware: String,
        drain_timeout: Duration,
    ) -> Self {
        Self {
            metrics: Metrics::new(models.clone(), power.clone()),
            models,
            power,
            health,
            calibration,
            hardware,
            drain_timeout,
            draining: AtomicBool::new(false),
            streams: AtomicUsize::new(0),
            cancelled: AtomicU32::new(0),
            cancel_all: CancellationToken::new(),
        }
    }

    pub fn energy_source(&self) -> EnergySource {
        match self.power.source() {
            Source::Measured => EnergySource::Measured,
            Source::Estimated => EnergySource::Estimated,
        }
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// A stream slot, or UNAVAILABLE while draining.
    pub fn open_stream(self: &Arc<Self>) -> Result<StreamGuard, Status> {
        self.streams.fetch_add(1, Ordering::AcqRel);
        let g = StreamGuard(self.clone());
        if self.draining() {
            return Err(Status::unavailable(
                "this worker is draining and admits no new requests; send it to another worker",
            ));
        }
        Ok(g)
    }

    pub fn open_streams(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    /// Counts a stream cut at the drain deadline.
    pub fn note_cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::AcqRel);
    }

    /// Stops admitting, waits up to `deadline` for open streams to finish, then cancels the
    /// rest. Returns (finished on their own, cancelled).
    pub async fn drain(&self, deadline: Duration) -> (u32, u32) {
        let first = !self.draining.swap(true, Ordering::AcqRel);
        if first {
            tracing::info!(
                streams = self.open_streams(),
                deadline_s = deadline.as_secs_f64(),
                "draining"
            );
            self.health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for m in self.models.ready() {
                self.health
                    .set_service_status(&m.name, ServingStatus::NotServing)
                    .await;
            }
        }
        let open = self.open_streams() as u32;
        let until = Instant::now() + deadline;
        while self.open_streams() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = self.cancelled.load(Ordering::Acquire);
        if self.open_streams() > 0 {
            tracing::warn!(
                streams = self.open_streams(),
                "drain deadline passed; cancelling open streams"
            );
            self.cancel_all.cancel();
            let grace = Instant::now() + Duration::from_secs(5);
            while self.open_streams() > 0 && Instant::now() < grace {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let cancelled = self.cancelled.load(Ordering::Acquire) - before;
        (open.saturating_sub(cancelled), cancelled)
    }
}
