//! The embedded backend: the replica's own Raft node ([`crate::raft`]) and its gRPC transport.
//! It adapts them to [`Store`] and adds nothing else.

use std::sync::Arc;

use joule_proto::internal::v1 as pb;
use tokio::sync::watch;

use super::{Leadership, Member, Members, Membership, Store, StoreError};
use crate::raft::RaftNode;
use crate::state::StateMachine;
use crate::transport::GrpcTransport;

#[derive(Clone)]
pub struct RaftStore {
    pub node: RaftNode,
    pub transport: Arc<GrpcTransport>,
    leadership: watch::Receiver<Leadership>,
}

fn leadership(st: &crate::raft::Status) -> Leadership {
    Leadership {
        me: st.id,
        leader: st.leader,
        term: st.term,
    }
}

impl RaftStore {
    /// Needs a Tokio runtime: a task follows the node's status for [`Store::watch`].
    pub fn new(node: RaftNode, transport: Arc<GrpcTransport>) -> Self {
        let mut status = node.watch();
        let (tx, rx) = watch::channel(leadership(&status.borrow()));
        tokio::spawn(async move {
            while status.changed().await.is_ok() {
                let l = leadership(&status.borrow_and_update());
                tx.send_if_modified(|old| std::mem::replace(old, l) != l);
            }
        });
        Self {
            node,
            transport,
            leadership: rx,
        }
    }
}

impl Store for RaftStore {
    async fn propose(&self, cmd: pb::Command) -> Result<u64, StoreError> {
        self.node.propose(&cmd).await
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&StateMachine) -> T + Send + 'static,
    {
        self.node.read(f).await
    }

    fn read_local<T>(&self, f: impl FnOnce(&StateMachine) -> T) -> T {
        self.node.read_local(f)
    }

    fn leadership(&self) -> Leadership {
        leadership(&self.node.status())
    }

    fn watch(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    fn address(&self, id: u64) -> Option<String> {
        self.transport.address(id)
    }

    fn members(&self) -> Members {
        let st = self.node.status();
        let mut ids: Vec<(u64, bool)> = st.voters.iter().map(|i| (*i, true)).collect();
        ids.extend(st.learners.iter().map(|i| (*i, false)));
        let replicas = ids
            .into_iter()
            .map(|(id, voter)| {
                let p = st.progress.iter().find(|p| p.0 == id);
                Member {
                    id,
                    address: self.transport.address(id).unwrap_or_default(),
                    voter,
                    healthy: match p {
                        Some(p) => p.2,
                        None => id == st.id || (id == st.leader && st.leader != 0),
                    },
                    matched_index: p.map_or(0, |p| p.1),
                }
            })
            .collect();
        Members {
            commit_index: st.commit,
            applied_index: st.applied,
            replicas,
        }
    }

    async fn change_membership(&self, change: Membership) -> Result<u64, StoreError> {
        self.node.change_membership(change).await
    }

    fn is_stopped(&self) -> bool {
        self.node.is_stopped()
    }
}
