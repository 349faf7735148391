//! One scheduler replica's Raft node: raft-rs's `RawNode` driven by one thread ([`node`]), its
//! durable log ([`storage`] over [`wal`] and redb), the way its messages travel ([`Transport`]: gRPC between processes,
//! [`sim`] inside tests), and [`RaftNode`], the handle the rest of the scheduler uses to
//! propose commands, read linearizably and watch who leads.
//!
//! raft-rs's own protobuf types (rust-protobuf 2) stay inside this module: outside it, messages
//! are bytes and commands are Joule's prost types.

mod logger;
pub mod node;
pub mod sim;
pub mod storage;
pub mod wal;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use joule_proto::internal::v1 as pb;
use tokio::sync::{mpsc, oneshot, watch};

pub use raft::eraftpb::Message as RaftMessage;

use crate::state::StateMachine;

/// How a replica's Raft node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    /// The initial members, this replica included; used only when the data dir is new.
    pub voters: Vec<u64>,
    pub data_dir: std::path::PathBuf,
    /// One Raft clock tick.
    pub tick: Duration,
    /// Ticks without a leader before a follower campaigns (randomised up to twice this).
    pub election_ticks: usize,
    /// Ticks between the leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Applied entries between snapshots (the log is compacted up to each).
    pub snapshot_entries: u64,
    /// How long a proposal or read may wait for its commit before the caller is told the
    /// outcome is unknown.
    pub request_timeout: Duration,
}

impl NodeConfig {
    pub fn new(id: u64, voters: Vec<u64>, data_dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            id,
            voters,
            data_dir: data_dir.into(),
            tick: Duration::from_millis(50),
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_entries: 10_000,
            request_timeout: Duration::from_secs(3),
        }
    }
}

/// Carries Raft messages to other replicas. Sending never blocks and may lose messages (Raft
/// retries); a transport that cannot reach a replica says so with
/// [`RaftNode::report_unreachable`].
pub trait Transport: Send + Sync + 'static {
    fn send(&self, msgs: Vec<RaftMessage>);
}

/// Why a proposal or read did not (knowingly) succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RaftError {
    /// Nothing was written: no leader is known to this replica (it may be in a minority).
    #[error("no leader is known to replica {replica}; it may be cut off from the majority")]
    NoLeader { replica: u64 },
    /// The commit did not come in time: the write may or may not be applied.
    #[error(
        "the {what} was not confirmed within {timeout_ms} ms (leader: {leader}); it may or may \
         not have been applied"
    )]
    Timeout {
        what: &'static str,
        timeout_ms: u64,
        /// 0 when none is known.
        leader: u64,
    },
    /// The leader changed while the request waited: a write may or may not be applied.
    #[error(
        "the leader changed (from replica {from} to {to}) before the {what} was confirmed; it \
         may or may not have been applied; retry"
    )]
    LeaderChanged {
        what: &'static str,
        from: u64,
        /// 0 while an election runs.
        to: u64,
    },
    /// Committed, but the state machine refused it (deterministically, on every replica).
    #[error("{0}")]
    Rejected(String),
    /// The change is not valid for the current membership.
    #[error("{0}")]
    InvalidChange(String),
    /// The replica stopped; a write handed to it before may or may not have been applied.
    #[error("replica {0} has stopped; a write it was given may or may not have been applied")]
    Stopped(u64),
}

/// A replica's role and log positions, as of its last step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub id: u64,
    /// 0 when none is known.
    pub leader: u64,
    pub term: u64,
    pub is_leader: bool,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    /// First index still in the log (entries before it are in the snapshot).
    pub first_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// On the leader: per replica, (id, highest index it is known to hold, heard from within
    /// an election timeout).
    pub progress: Vec<(u64, u64, bool)>,
}

/// A change of membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    AddVoter(u64),
    AddLearner(u64),
    Remove(u64),
}

pub(crate) enum Input {
    Raft(Box<RaftMessage>),
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<u64, RaftError>>,
    },
    Read {
        reply: oneshot::Sender<Result<u64, RaftError>>,
    },
    Membership {
        change: Membership,
        reply: oneshot::Sender<Result<u64, RaftError>>,
    },
    Unreachable(u64),
    SnapshotFailed(u64),
    Campaign,
    Stop,
}

/// The handle of a running replica's Raft node. Cheap to clone.
#[derive(Clone)]
pub struct RaftNode {
    id: u64,
    tx: mpsc::UnboundedSender<Input>,
    status: watch::Receiver<Status>,
    state: Arc<RwLock<StateMachine>>,
}

impl RaftNode {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Proposes a command; returns the log index it was applied at, once applied here.
    pub async fn propose(&self, cmd: &pb::Command) -> Result<u64, RaftError> {
        use prost::Message as _;
        let (reply, rx) = oneshot::channel();
        self.send(Input::Propose {
            data: cmd.encode_to_vec(),
            reply,
        })?;
        rx.await.map_err(|_| RaftError::Stopped(self.id))?
    }

    /// Waits until this replica has applied everything committed before the call (Raft's
    /// ReadIndex, confirmed by a quorum), then reads the state: a linearizable read.
    pub async fn read<T>(&self, f: impl FnOnce(&StateMachine) -> T) -> Result<T, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Read { reply })?;
        let index = rx.await.map_err(|_| RaftError::Stopped(self.id))??;
        let mut st = self.status.clone();
        st.wait_for(|s| s.applied >= index)
            .await
            .map_err(|_| RaftError::Stopped(self.id))?;
        Ok(f(&self.state.read().expect("state lock")))
    }

    /// Reads this replica's state as applied so far, without asking anyone (may be stale).
    pub fn read_local<T>(&self, f: impl FnOnce(&StateMachine) -> T) -> T {
        f(&self.state.read().expect("state lock"))
    }

    /// Adds or removes a replica; returns once the change is applied here.
    pub async fn change_membership(&self, change: Membership) -> Result<u64, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Membership { change, reply })?;
        rx.await.map_err(|_| RaftError::Stopped(self.id))?
    }

    /// Hands a message from another replica to this one.
    pub fn step(&self, msg: RaftMessage) {
        let _ = self.tx.send(Input::Raft(Box::new(msg)));
    }

    /// Tells Raft a replica could not be reached (it stops pipelining to it until it answers).
    pub fn report_unreachable(&self, id: u64) {
        let _ = self.tx.send(Input::Unreachable(id));
    }

    /// Tells Raft a snapshot sent to `id` was lost (it sends a new one later).
    pub fn report_snapshot_failure(&self, id: u64) {
        let _ = self.tx.send(Input::SnapshotFailed(id));
    }

    /// Starts an election now (tests, and leadership transfer by an admin).
    pub fn campaign(&self) {
        let _ = self.tx.send(Input::Campaign);
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Changes of [`Status`], for waiting on a leader or an index.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Stops the node (its thread exits after the current step); the log stays on disk.
    pub fn stop(&self) {
        let _ = self.tx.send(Input::Stop);
    }

    /// Whether the node's thread has exited.
    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
    }

    fn send(&self, i: Input) -> Result<(), RaftError> {
        self.tx.send(i).map_err(|_| RaftError::Stopped(self.id))
    }
}
