//! The leader's control loop: it runs placement ([`crate::placement::place`]) whenever the
//! inputs may have changed (and every `--placement-interval-ms`), and commits what changed
//! through the state machine's `SetPlacements` rules. Workers learn their assignment from the
//! heartbeat reply and report each placement's progress the same way.
//!
//! - [`inputs`]: the replicated state and the leader's liveness records → the placement
//!   function's input (nodes silent past `--reschedule-after` count as unreachable; failed
//!   placements back off).
//! - [`decide`]: the plan and the state → the commands to commit: make-before-break for a
//!   drain (the old placement is kept, retiring, until its replacement serves), failed
//!   placements kept on record while backing off, nothing when nothing changed.
//!
//! Only the leader acts; every replica runs the loop, so a new leader carries on an unfinished
//! rollout from the replicated state. It never talks to workers itself.

pub mod decide;
pub mod inputs;

use std::sync::Arc;
use std::time::Duration;

use crate::liveness::Liveness;
use crate::placement::{self, Options};
use crate::state::commands;
use crate::store::Store;

/// The share of a deployment's ITL target that placement plans for: a node a little slower
/// than its profile (noise, a neighbour, thermals) still meets the target.
pub const LATENCY_HEADROOM: f64 = 0.85;

/// How the loop runs (from the daemon's flags).
#[derive(Debug, Clone)]
pub struct Settings {
    pub reschedule_after: Duration,
    pub interval: Duration,
    pub kv_reserve_bytes: u64,
    pub churn_threshold: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            reschedule_after: Duration::from_secs(10),
            interval: Duration::from_secs(1),
            kv_reserve_bytes: 512 << 20,
            churn_threshold: 0.25,
        }
    }
}

/// Runs on every replica until the store stops; acts only while this replica leads.
pub async fn run<S: Store>(store: S, live: Arc<Liveness>, s: Settings) {
    let mut tick = crate::liveness::leader_ticks(s.interval);
    let opts = Options {
        churn_threshold: s.churn_threshold,
        latency_headroom: LATENCY_HEADROOM,
        ..Options::default()
    };
    while let Some(l) = crate::liveness::next_leading(&mut tick, &store).await {
        // A new leader first applies what its predecessor committed.
        if let Err(e) = crate::liveness::synced(&store, &live).await {
            tracing::debug!(error = %e, "not yet caught up with the log; placement waits");
            continue;
        }
        // Every tick: liveness and backoffs change with time alone, and a run is cheap.
        let now = commands::now_ms();
        let silence = live.silence(l.term);
        let loads = live.loads();
        // The input is built under the state's read lock; placement itself runs outside it,
        // so that applying committed entries never waits for it. The commands are checked
        // again by the state machine (generation, nodes) when they apply.
        let (input, health) = store.read_local(|sm| {
            inputs::build(&inputs::View {
                state: sm.state(),
                silence: &silence,
                loads: &loads,
                now_ms: now,
                settings: &s,
            })
        });
        let plan = placement::place(&input, &opts);
        let cmds = store.read_local(|sm| decide::commands(sm.state(), &plan, &health));
        for cmd in cmds {
            match store.propose(cmd).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "placement not committed; the next run retries");
                    break;
                }
            }
        }
    }
}
