//! Whether each worker is alive, as the leader sees it. The leader alone keeps when it last
//! heard from each worker (in memory: heartbeats are not replicated) and what load it reported,
//! and commits the transitions: Unreachable after `--unreachable-after` without a heartbeat,
//! Ready again at the next one. A new leader gives every worker a full grace period before
//! judging it, so a failover marks nobody Unreachable.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use joule_proto::internal::v1 as pb;

use crate::state::commands;
use crate::store::Store;

/// When the leader last heard from each worker, and what it said.
#[derive(Default)]
pub struct Liveness {
    inner: Mutex<LiveInner>,
}

#[derive(Default)]
struct LiveInner {
    /// The term this replica's records belong to (records from an older leadership are void).
    term: u64,
    seen: HashMap<String, (Instant, pb::WorkerLoad)>,
    /// The term in which this replica, leading, has applied everything committed before it
    /// (see [`synced`]).
    synced: u64,
}

impl LiveInner {
    /// A new leadership: everyone starts with a full grace period.
    fn sync(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.seen.clear();
        }
    }
}

impl Liveness {
    /// The records; a panic elsewhere while they were held leaves them usable (they are only
    /// ever replaced whole, entry by entry).
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest load each worker reported (on the leader).
    pub fn loads(&self) -> HashMap<String, pb::WorkerLoad> {
        let l = self.lock();
        l.seen
            .iter()
            .map(|(k, v)| (k.clone(), v.1.clone()))
            .collect()
    }

    /// How long ago each worker was last heard from in leadership `term`.
    pub fn silence(&self, term: u64) -> HashMap<String, Duration> {
        let mut l = self.lock();
        l.sync(term);
        let now = Instant::now();
        l.seen
            .iter()
            .map(|(k, v)| (k.clone(), now.saturating_duration_since(v.0)))
            .collect()
    }

    /// Notes a sign of life from `name`, heard by the leader of `term`.
    pub fn touch(&self, term: u64, name: &str, load: pb::WorkerLoad) {
        let mut l = self.lock();
        l.sync(term);
        l.seen.insert(name.to_string(), (Instant::now(), load));
    }

    /// The workers not heard from within `after` (a new term first resets every record).
    fn late(&self, term: u64, nodes: Vec<(String, i32)>, after: Duration) -> Vec<String> {
        let now = Instant::now();
        let mut l = self.lock();
        l.sync(term);
        let mut late = Vec::new();
        for (name, status) in nodes {
            let seen = l
                .seen
                .entry(name.clone())
                .or_insert((now, pb::WorkerLoad::default()))
                .0;
            if status == pb::NodeStatus::Ready as i32 && now - seen > after {
                late.push(name);
            }
        }
        late
    }
}

/// Resolves once this replica, leading in its current term, has applied every entry committed
/// before that term (a linearizable read does it): before that its state may lag the log, and
/// neither an assignment nor a placement decision may be made from it.
pub async fn synced<S: Store>(store: &S, live: &Liveness) -> Result<(), crate::store::StoreError> {
    let term = store.leadership().term;
    if live.lock().synced == term {
        return Ok(());
    }
    store.read(|_| ()).await?;
    live.lock().synced = term;
    Ok(())
}

/// A tick every `every` that skips missed ones (a slow step never causes a burst).
pub fn leader_ticks(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Waits for the next tick at which this replica leads; `None` once the store has stopped.
pub async fn next_leading<S: Store>(
    tick: &mut tokio::time::Interval,
    store: &S,
) -> Option<crate::store::Leadership> {
    loop {
        tick.tick().await;
        if store.is_stopped() {
            return None;
        }
        let l = store.leadership();
        if l.is_leader() {
            return Some(l);
        }
    }
}

/// On the leader, every `every`: commits Unreachable for each Ready worker not heard from
/// within `after`. Runs on every replica; does nothing while it does not lead.
pub async fn watch_workers<S: Store>(
    store: S,
    live: std::sync::Arc<Liveness>,
    every: Duration,
    after: Duration,
) {
    let mut tick = leader_ticks(every);
    while let Some(l) = next_leading(&mut tick, &store).await {
        let nodes: Vec<(String, i32)> = store.read_local(|sm| {
            sm.state()
                .nodes
                .values()
                .map(|n| (n.name.clone(), n.status))
                .collect()
        });
        for name in live.late(l.term, nodes, after) {
            let cmd = commands::set_node_status(&name, pb::NodeStatus::Unreachable);
            match store.propose(cmd).await {
                Ok(_) => {
                    tracing::warn!(node = %name, after_ms = after.as_millis() as u64, "worker missed its heartbeats: Unreachable")
                }
                Err(e) => {
                    tracing::debug!(node = %name, error = %e, "could not mark the worker Unreachable")
                }
            }
        }
    }
}
