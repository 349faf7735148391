//! The worker follows its assignment: the cluster's leader says, in each heartbeat reply,
//! which deployments this worker serves and from which model file. For each new one the
//! follower fetches the file ([`crate::fetch`]), loads it under the deployment's name (the
//! name clients ask for), calibrates it, and serves it; it unloads what is no longer assigned.
//! Each placement's progress (Pending, Fetching with progress, Loading, Calibrating, Ready,
//! Failed with the reason) goes back with the next heartbeat.
//!
//! The last assignment is kept on disk, so a restarted worker loads it again before it
//! registers, and the leader sees no gap. A failed load is reported and left alone: the leader
//! decides when to ask again (a higher `attempt`). It never unloads a model it did not load
//! (a `--model` given at start stays).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use joule_proto::internal::v1 as pb;
use serde::{Deserialize, Serialize};
use tonic_health::ServingStatus;

use crate::fetch::{Cache, Pinned, Source};
use crate::state::State;

/// One assigned deployment, as this worker handles it.
#[derive(Debug)]
struct Local {
    a: Saved,
    /// Which bring-up this is: a task started for an earlier one never touches it.
    epoch: u64,
    state: pb::PlacementState,
    message: String,
    progress: f64,
    /// The model file, kept from eviction while it serves.
    file: Option<Pinned>,
}

/// An assignment as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    deployment: String,
    model: String,
    source: String,
    sha256: String,
    size_bytes: u64,
    attempt: u32,
}

impl From<&pb::Assignment> for Saved {
    fn from(a: &pb::Assignment) -> Self {
        Self {
            deployment: a.deployment.clone(),
            model: a.model.clone(),
            source: a.source.clone(),
            sha256: a.sha256.clone(),
            size_bytes: a.size_bytes,
            attempt: a.attempt,
        }
    }
}

impl Saved {
    fn same_file(&self, o: &Saved) -> bool {
        self.sha256 == o.sha256 && self.source == o.source
    }
}

pub struct Follower {
    state: Arc<State>,
    cache: Arc<Cache>,
    /// Where the last assignment is kept.
    path: PathBuf,
    rt: tokio::runtime::Handle,
    locals: Mutex<BTreeMap<String, Local>>,
    epochs: std::sync::atomic::AtomicU64,
    /// The names of the models this follower loaded: the only ones it may unload or adopt.
    mine: Mutex<std::collections::BTreeSet<String>>,
    /// The assignment last written to `path` (written again only when it changes).
    saved: Mutex<Option<Vec<Saved>>>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").finish_non_exhaustive()
    }
}

impl Follower {
    /// Needs a Tokio runtime.
    pub fn new(state: Arc<State>, cache: Arc<Cache>, path: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            state,
            cache,
            path,
            rt: tokio::runtime::Handle::current(),
            locals: Mutex::new(BTreeMap::new()),
            epochs: std::sync::atomic::AtomicU64::new(1),
            mine: Mutex::new(std::collections::BTreeSet::new()),
            saved: Mutex::new(None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Local>> {
        self.locals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts on the assignment kept from the last run; waits (up to `within`, which should
    /// stay under the cluster's unreachable timeout) until each is served or failed, so that
    /// the first heartbeat already reports them Ready. What takes longer reports Loading.
    pub async fn restore(self: &Arc<Self>, within: Duration) {
        let saved: Vec<Saved> = match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(file = %self.path.display(), error = %e, "ignoring a damaged saved assignment");
                Vec::new()
            }),
            Err(_) => return,
        };
        if saved.is_empty() {
            return;
        }
        tracing::info!(
            deployments = saved.len(),
            "serving the assignment kept from the last run"
        );
        self.apply_saved(saved);
        let end = Instant::now() + within;
        while Instant::now() < end && self.busy() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn busy(&self) -> bool {
        self.lock().values().any(|l| {
            !matches!(
                l.state,
                pb::PlacementState::Serving | pb::PlacementState::Failed
            )
        })
    }

    /// Follows the assignment from a heartbeat reply.
    pub fn apply(self: &Arc<Self>, assignments: &[pb::Assignment]) {
        self.apply_saved(assignments.iter().map(Saved::from).collect());
    }

    fn apply_saved(self: &Arc<Self>, want: Vec<Saved>) {
        let mut start = Vec::new();
        let mut stop = Vec::new();
        {
            let mut locals = self.lock();
            let wanted: BTreeMap<&str, &Saved> =
                want.iter().map(|a| (a.deployment.as_str(), a)).collect();
            locals.retain(|name, _| {
                let keep = wanted.contains_key(name.as_str());
                if !keep {
                    stop.push(name.clone());
                }
                keep
            });
            for a in &want {
                let fresh = match locals.get(&a.deployment) {
                    None => true,
                    Some(l) if !l.a.same_file(a) => true,
                    // The leader asks again after a failure.
                    Some(l) => l.state == pb::PlacementState::Failed && a.attempt != l.a.attempt,
                };
                if fresh {
                    let epoch = self
                        .epochs
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    locals.insert(
                        a.deployment.clone(),
                        Local {
                            a: a.clone(),
                            epoch,
                            state: pb::PlacementState::Pending,
                            message: String::new(),
                            progress: 0.0,
                            file: None,
                        },
                    );
                    start.push((a.clone(), epoch));
                } else if let Some(l) = locals.get_mut(&a.deployment) {
                    l.a.attempt = a.attempt;
                }
            }
        }
        for name in stop {
            self.unload(&name);
        }
        for (a, epoch) in start {
            let me = Arc::clone(self);
            self.rt.spawn_blocking(move || me.bring_up(a, epoch));
        }
        self.save(&want);
    }

    /// Keeps `want` on disk for the next start, when it differs from what is there.
    fn save(&self, want: &[Saved]) {
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        if saved.as_deref() == Some(want) {
            return;
        }
        let write = serde_json::to_vec_pretty(want)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                let tmp = self.path.with_extension("tmp");
                std::fs::write(&tmp, b)
                    .and_then(|()| std::fs::rename(&tmp, &self.path))
                    .map_err(|e| e.to_string())
            });
        match write {
            Ok(()) => *saved = Some(want.to_vec()),
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot keep the assignment on disk")
            }
        }
    }

    fn is_mine(&self, name: &str) -> bool {
        self.mine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    fn unload(&self, name: &str) {
        let was_mine = self
            .mine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if !was_mine {
            return;
        }
        if self.state.models.get(name).is_ok() {
            match self.state.models.unload(name) {
                Ok(()) => tracing::info!(deployment = name, "no longer assigned: unloaded"),
                Err(e) => tracing::warn!(deployment = name, error = %e.message(), "cannot unload"),
            }
            let health = self.state.health.clone();
            let name = name.to_string();
            self.rt.spawn(async move {
                health
                    .set_service_status(&name, ServingStatus::NotServing)
                    .await;
            });
        }
    }

    /// Updates a local placement if it is still bring-up `epoch` of `name` (not unassigned
    /// or replaced meanwhile).
    fn set(&self, name: &str, epoch: u64, f: impl FnOnce(&mut Local)) -> bool {
        let mut locals = self.lock();
        match locals.get_mut(name) {
            Some(l) if l.epoch == epoch => {
                f(l);
                true
            }
            _ => false,
        }
    }

    fn current(&self, name: &str, epoch: u64) -> bool {
        self.set(name, epoch, |_| {})
    }

    /// Fetches, loads and calibrates one assignment (blocking).
    fn bring_up(self: Arc<Self>, a: Saved, epoch: u64) {
        let name = a.deployment.clone();
        let r = self.try_bring_up(&a, epoch);
        match r {
            Ok(None) => {}
            Ok(Some(file)) => {
                let current = self.set(&name, epoch, |l| {
                    l.state = pb::PlacementState::Serving;
                    l.message.clear();
                    l.progress = 1.0;
                    l.file = Some(file);
                });
                if current {
                    tracing::info!(deployment = %name, model = %a.model, "assigned deployment serving");
                    let health = self.state.health.clone();
                    self.rt.spawn(async move {
                        health
                            .set_service_status(&name, ServingStatus::Serving)
                            .await;
                    });
                } else if !self.lock().contains_key(&name) {
                    // Unassigned while it loaded. (Reassigned meanwhile: the newer bring-up
                    // adopts this model, or replaces it if the file differs.)
                    self.unload(&name);
                }
            }
            Err(e) => {
                tracing::error!(deployment = %name, model = %a.model, error = %e, "assigned deployment failed");
                self.set(&name, epoch, |l| {
                    l.state = pb::PlacementState::Failed;
                    l.message = e;
                });
            }
        }
    }

    /// `Ok(None)`: unassigned (or replaced) meanwhile: it stops before loading.
    fn try_bring_up(&self, a: &Saved, epoch: u64) -> Result<Option<Pinned>, String> {
        let name = a.deployment.as_str();
        let source = Source::parse(&a.source)?;
        if matches!(source, Source::Http(_)) {
            self.set(name, epoch, |l| l.state = pb::PlacementState::Fetching);
        }
        let mut last = -1.0;
        let file = self
            .cache
            .fetch(&source, &a.sha256, a.size_bytes, &mut |p| {
                if p - last >= 0.05 || p >= 1.0 {
                    last = p;
                    self.set(name, epoch, |l| l.progress = p);
                }
            })?;
        // An earlier bring-up of this name may still be loading: wait for it, then serve
        // what it loaded if it is this file.
        let until = Instant::now() + Duration::from_secs(600);
        loop {
            if !self.current(name, epoch) {
                return Ok(None);
            }
            let mine = self.is_mine(name);
            match self.state.models.get(name) {
                Ok(_) if !mine => {
                    return Err(format!(
                        "this worker already serves a model named {name:?} that the cluster \
                         did not assign (a --model at start); rename one of them"
                    ));
                }
                Ok(m) if m.sha256 == a.sha256 => return Ok(Some(file)),
                Ok(_) => {
                    self.unload(name);
                    break;
                }
                Err(e) if e.code() == tonic::Code::Unavailable && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(_) => break,
            }
        }
        self.set(name, epoch, |l| l.state = pb::PlacementState::Loading);
        self.mine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        crate::server::load_with(
            &self.state,
            Some(name),
            &file.path,
            Some(&a.sha256),
            &|| {
                self.set(name, epoch, |l| l.state = pb::PlacementState::Calibrating);
            },
        )
        .map_err(|e| e.message().to_string())?;
        Ok(Some(file))
    }

    /// Each placement's progress, for the next heartbeat.
    pub fn reports(&self) -> Vec<pb::PlacementReport> {
        self.lock()
            .values()
            .map(|l| pb::PlacementReport {
                deployment: l.a.deployment.clone(),
                state: l.state as i32,
                message: l.message.clone(),
                progress: l.progress,
                attempt: l.a.attempt,
                sha256: l.a.sha256.clone(),
            })
            .collect()
    }
}
