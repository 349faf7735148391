//! The seam between the state machine and the backend that replicates its commands: an ordered,
//! replicated command log with leadership and linearizable reads. The embedded Raft log
//! ([`raft`]) implements it; an etcd backend can implement it later. The APIs and the control
//! loops are generic over [`Store`] and never name a backend; the backend never interprets a
//! command (that is `state/`'s job).

pub mod raft;

use std::future::Future;

use joule_proto::internal::v1 as pb;

pub use crate::raft::RaftError as StoreError;
use crate::state::StateMachine;

pub use self::raft::RaftStore;

/// Who leads, as this replica knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leadership {
    /// This replica's id.
    pub me: u64,
    /// 0 when no leader is known.
    pub leader: u64,
    pub term: u64,
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.me
    }
}

/// A replica's view of the members that replicate the log.
#[derive(Debug, Clone, Default)]
pub struct Members {
    pub commit_index: u64,
    pub applied_index: u64,
    pub replicas: Vec<Member>,
}

#[derive(Debug, Clone, Default)]
pub struct Member {
    pub id: u64,
    pub address: String,
    pub voter: bool,
    pub healthy: bool,
    pub matched_index: u64,
}

/// A change to who replicates the log.
pub use crate::raft::Membership;

/// An ordered, replicated command log with leadership and linearizable reads.
pub trait Store: Clone + Send + Sync + 'static {
    /// Appends `cmd`; resolves with the index it was applied at on this replica, or the
    /// state machine's refusal ([`StoreError::Rejected`]).
    fn propose(&self, cmd: pb::Command) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Reads the state once it reflects every write acknowledged before the call.
    fn read<T, F>(&self, f: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&StateMachine) -> T + Send + 'static;

    /// Reads this replica's state as applied so far, asking no one (may be stale).
    fn read_local<T>(&self, f: impl FnOnce(&StateMachine) -> T) -> T;

    fn leadership(&self) -> Leadership;

    /// Changes of leadership; closed once the store has stopped.
    fn watch(&self) -> tokio::sync::watch::Receiver<Leadership>;

    /// Where to reach replica `id`'s gRPC port, if known.
    fn address(&self, id: u64) -> Option<String>;

    /// The replicating members and their progress.
    fn members(&self) -> Members;

    /// Adds or removes a member; resolves once applied here.
    fn change_membership(
        &self,
        change: Membership,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Whether the store has stopped (its replica exits).
    fn is_stopped(&self) -> bool;

    /// "the leader is replica 2 at 127.0.0.1:7002": where a refused client should go.
    fn leader_hint(&self) -> String {
        match self.leadership().leader {
            0 => "no leader is known".to_string(),
            l => match self.address(l) {
                Some(a) => format!("the leader is replica {l} at {a}"),
                None => format!("the leader is replica {l}"),
            },
        }
    }

    /// A store error as the API's, with the leader hint.
    fn error(&self, err: StoreError) -> crate::error::Error {
        crate::error::Error::Store {
            err,
            hint: self.leader_hint(),
        }
    }
}
