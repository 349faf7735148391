//! [`PowerMonitor`]: samples the power sensors on a background thread ("joule-power") and
//! keeps, per sensor, the latest reading and the joules since start (from the sensor's energy
//! counter where it has one, else by integrating watts), exposing whole-machine totals.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use joule_engine::batch::EnergyMeter;

use super::{PowerSensor, Reading, Source};

/// Per-sensor state.
#[derive(Debug, Default)]
struct Track {
    latest: Option<Reading>,
    /// When `latest` was taken.
    at: Option<Instant>,
    /// Joules from the first reading to `at`.
    joules: f64,
    /// The last read failed (logged once per run of failures).
    failing: bool,
}

impl Track {
    /// Adds the energy between the previous reading and `new`, taken at `now`.
    fn update(&mut self, new: Reading, now: Instant) {
        if let (Some(prev), Some(at)) = (&self.latest, self.at) {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            let added = match (prev.energy_j, new.energy_j) {
                (Some(before), Some(after)) if after >= before => after - before,
                _ => (prev.watts + new.watts) / 2.0 * dt,
            };
            self.joules += added.max(0.0);
        }
        self.latest = Some(new);
        self.at = Some(now);
    }

    /// Joules to `now`, extrapolating the latest watts past the latest reading.
    fn joules_at(&self, now: Instant) -> f64 {
        match (&self.latest, self.at) {
            (Some(r), Some(at)) => {
                self.joules + r.watts.max(0.0) * now.saturating_duration_since(at).as_secs_f64()
            }
            _ => self.joules,
        }
    }
}

#[derive(Debug)]
struct State {
    tracks: Vec<Track>,
    /// The largest total ever returned: totals never go down.
    floor: f64,
}

/// Tells the sampling thread to stop; shared apart from the monitor so the thread can wait on
/// it without keeping the monitor alive.
#[derive(Debug, Default)]
struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Waits up to `timeout`; true when stopped.
    fn wait(&self, timeout: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, timeout, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// Samples power sensors in the background; see the module docs.
#[derive(Debug)]
pub struct PowerMonitor {
    names: Vec<String>,
    sources: Vec<Source>,
    state: Mutex<State>,
    signal: Arc<StopSignal>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl PowerMonitor {
    /// Starts sampling `sensors` every `interval`. Takes one reading before returning, so
    /// [`watts`](Self::watts) is meaningful at once.
    pub fn start(mut sensors: Vec<Box<dyn PowerSensor>>, interval: Duration) -> Arc<PowerMonitor> {
        let interval = interval.max(Duration::from_millis(1));
        let names: Vec<String> = sensors.iter().map(|s| s.name()).collect();
        let sources = sensors.iter().map(|s| s.source()).collect();
        let monitor = Arc::new(PowerMonitor {
            state: Mutex::new(State {
                tracks: names.iter().map(|_| Track::default()).collect(),
                floor: 0.0,
            }),
            names,
            sources,
            signal: Arc::new(StopSignal::default()),
            thread: Mutex::new(None),
        });
        monitor.record(read_all(&mut sensors), Instant::now());
        tracing::debug!(
            sensors = ?monitor.names,
            source = monitor.source().as_str(),
            watts = monitor.watts(),
            "power monitor started"
        );

        let weak = Arc::downgrade(&monitor);
        let signal = Arc::clone(&monitor.signal);
        let spawned = thread::Builder::new()
            .name("joule-power".to_string())
            .spawn(move || sample_loop(sensors, interval, &weak, &signal));
        match spawned {
            Ok(handle) => *monitor.thread() = Some(handle),
            Err(e) => tracing::error!("power monitor: cannot start the sampling thread: {e}"),
        }
        monitor
    }

    /// Sum of the latest watts over all sensors.
    pub fn watts(&self) -> f64 {
        self.state()
            .tracks
            .iter()
            .filter_map(|t| t.latest.as_ref())
            .map(|r| r.watts)
            .sum()
    }

    /// Joules since start over all sensors, extrapolated to now. Never decreases.
    pub fn total_joules(&self) -> f64 {
        let now = Instant::now();
        let mut state = self.state();
        let computed: f64 = state.tracks.iter().map(|t| t.joules_at(now)).sum();
        state.floor = state.floor.max(computed);
        state.floor
    }

    /// Estimated if any sensor is estimated (or there is none), else Measured.
    pub fn source(&self) -> Source {
        if self.sources.is_empty() || self.sources.contains(&Source::Estimated) {
            Source::Estimated
        } else {
            Source::Measured
        }
    }

    /// The sensors' labels.
    pub fn sensors(&self) -> Vec<String> {
        self.names.clone()
    }

    /// The latest reading of each sensor that has produced one.
    pub fn readings(&self) -> Vec<Reading> {
        self.state()
            .tracks
            .iter()
            .filter_map(|t| t.latest.clone())
            .collect()
    }

    /// Ends the sampling thread (waits for it unless called from it).
    pub fn stop(&self) {
        self.signal.stop();
        let Some(handle) = self.thread().take() else {
            return;
        };
        // The last `Arc` can be dropped on the sampling thread itself: it exits on its own.
        if handle.thread().id() != thread::current().id() && handle.join().is_err() {
            tracing::warn!("power monitor: the sampling thread panicked");
        }
    }

    fn record(&self, results: Vec<Result<Reading, String>>, now: Instant) {
        let mut state = self.state();
        for ((track, result), name) in state.tracks.iter_mut().zip(results).zip(&self.names) {
            match result {
                Ok(reading) => {
                    if track.failing {
                        tracing::info!("power sensor {name} is readable again");
                        track.failing = false;
                    }
                    track.update(reading, now);
                }
                Err(e) => {
                    if !track.failing {
                        tracing::warn!("power sensor {name}: {e}; keeping its last reading");
                        track.failing = true;
                    }
                }
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn thread(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.thread.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for PowerMonitor {
    fn drop(&mut self) {
        self.stop();
    }
}

impl EnergyMeter for PowerMonitor {
    fn total_joules(&self) -> f64 {
        PowerMonitor::total_joules(self)
    }

    fn measured(&self) -> bool {
        self.source() == Source::Measured
    }
}

fn read_all(sensors: &mut [Box<dyn PowerSensor>]) -> Vec<Result<Reading, String>> {
    sensors.iter_mut().map(|s| s.read()).collect()
}

/// The sampling thread: reads without holding the monitor, so callers are never blocked by a
/// slow sensor, and exits when stopped or when the monitor is gone.
fn sample_loop(
    mut sensors: Vec<Box<dyn PowerSensor>>,
    interval: Duration,
    weak: &Weak<PowerMonitor>,
    signal: &StopSignal,
) {
    while !signal.wait(interval) {
        let results = read_all(&mut sensors);
        let now = Instant::now();
        let Some(monitor) = weak.upgrade() else {
            break;
        };
        monitor.record(results, now);
    }
    tracing::debug!("power monitor stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A fake sensor at constant watts with no counter.
    struct FakeConstant(f64);

    impl PowerSensor for FakeConstant {
        fn name(&self) -> String {
            "fake:constant".to_string()
        }
        fn source(&self) -> Source {
            Source::Measured
        }
        fn read(&mut self) -> Result<Reading, String> {
            Ok(reading("fake:constant", self.0, None))
        }
    }

    /// A fake counter sensor: +1 J per read, and watts that would integrate to nothing.
    struct FakeCounter {
        reads: Arc<AtomicUsize>,
    }

    impl PowerSensor for FakeCounter {
        fn name(&self) -> String {
            "fake:counter".to_string()
        }
        fn source(&self) -> Source {
            Source::Measured
        }
        fn read(&mut self) -> Result<Reading, String> {
            let n = self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(reading("fake:counter", 0.0, Some(n as f64)))
        }
    }

    /// A fake sensor that works once, then fails; flags its own drop.
    struct FakeFlaky {
        reads: usize,
        dropped: Arc<AtomicBool>,
    }

    impl PowerSensor for FakeFlaky {
        fn name(&self) -> String {
            "fake:flaky".to_string()
        }
        fn source(&self) -> Source {
            Source::Estimated
        }
        fn read(&mut self) -> Result<Reading, String> {
            self.reads += 1;
            if self.reads == 1 {
                Ok(reading("fake:flaky", 7.0, None))
            } else {
                Err("fake failure".to_string())
            }
        }
    }

    impl Drop for FakeFlaky {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    fn reading(sensor: &str, watts: f64, energy_j: Option<f64>) -> Reading {
        Reading {
            sensor: sensor.to_string(),
            watts,
            energy_j,
            source: Source::Measured,
            gpu: None,
        }
    }

    #[test]
    fn constant_watts_integrate_to_watts_times_time() {
        let t0 = Instant::now();
        let monitor = PowerMonitor::start(
            vec![Box::new(FakeConstant(50.0))],
            Duration::from_millis(20),
        );
        assert_eq!(monitor.watts(), 50.0);
        thread::sleep(Duration::from_millis(200));
        let joules = monitor.total_joules();
        let expected = 50.0 * t0.elapsed().as_secs_f64();
        assert!(
            (joules - expected).abs() < 0.1 * expected,
            "{joules} vs {expected}"
        );
        assert_eq!(monitor.source(), Source::Measured);
        assert!(<PowerMonitor as EnergyMeter>::measured(&monitor));
        assert_eq!(monitor.sensors(), ["fake:constant"]);
        monitor.stop();
    }

    #[test]
    fn totals_never_decrease() {
        let monitor = PowerMonitor::start(
            vec![Box::new(FakeConstant(50.0)), Box::new(FakeConstant(3.0))],
            Duration::from_millis(1),
        );
        let mut last = 0.0;
        for _ in 0..2000 {
            let now = monitor.total_joules();
            assert!(now >= last, "{now} < {last}");
            last = now;
        }
        assert_eq!(monitor.watts(), 53.0);
    }

    #[test]
    fn counter_deltas_are_used_instead_of_integration() {
        let reads = Arc::new(AtomicUsize::new(0));
        let sensor = FakeCounter {
            reads: Arc::clone(&reads),
        };
        let monitor = PowerMonitor::start(vec![Box::new(sensor)], Duration::from_millis(10));
        thread::sleep(Duration::from_millis(100));
        monitor.stop();
        let n = reads.load(Ordering::SeqCst);
        assert!(n >= 2, "{n} reads");
        // Counter went 0, 1, ..., n-1: n-1 joules, though watts were 0 throughout.
        assert_eq!(monitor.total_joules(), (n - 1) as f64);
    }

    #[test]
    fn track_prefers_counter_and_falls_back_to_trapezoid() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let t2 = t1 + Duration::from_secs(2);
        let mut track = Track::default();
        track.update(reading("x", 100.0, Some(10.0)), t0);
        track.update(reading("x", 1000.0, Some(25.0)), t1);
        assert_eq!(track.joules, 15.0);
        // No counter on the new reading: trapezoid (1000 + 0) / 2 W over 2 s.
        track.update(reading("x", 0.0, None), t2);
        assert_eq!(track.joules, 1015.0);
        assert_eq!(track.joules_at(t2 + Duration::from_secs(5)), 1015.0);
    }

    #[test]
    fn failing_reads_keep_the_last_reading_and_drop_ends_the_thread() {
        let dropped = Arc::new(AtomicBool::new(false));
        let sensor = FakeFlaky {
            reads: 0,
            dropped: Arc::clone(&dropped),
        };
        let monitor = PowerMonitor::start(vec![Box::new(sensor)], Duration::from_millis(5));
        thread::sleep(Duration::from_millis(50));
        assert_eq!(monitor.watts(), 7.0);
        let readings = monitor.readings();
        assert_eq!(readings.len(), 1);
        assert_eq!(readings[0].sensor, "fake:flaky");
        assert_eq!(monitor.source(), Source::Estimated);
        assert!(!<PowerMonitor as EnergyMeter>::measured(&monitor));

        drop(monitor);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !dropped.load(Ordering::SeqCst) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert!(
            dropped.load(Ordering::SeqCst),
            "sampling thread still holds the sensor"
        );
    }

    #[test]
    fn no_sensors_is_estimated_zero() {
        let monitor = PowerMonitor::start(Vec::new(), Duration::from_millis(10));
        assert_eq!(monitor.watts(), 0.0);
        assert_eq!(monitor.total_joules(), 0.0);
        assert_eq!(monitor.source(), Source::Estimated);
    }
}
