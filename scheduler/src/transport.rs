//! Raft messages between replica processes, over gRPC (`joule.internal.v1.Raft/Step`). Each
//! peer has one sender task with a bounded queue: messages are batched, encoded as raft-rs
//! bytes, and sent in order on one HTTP/2 connection that reconnects by itself. A full queue
//! drops (Raft retransmits); a failed send tells Raft the peer is unreachable, so it stops
//! pipelining to it until it answers again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use joule_proto::internal::v1::RaftBatch;
use protobuf::Message as _;
use tokio::sync::mpsc;

use crate::raft::{RaftMessage, RaftNode, Transport};

const QUEUE: usize = 4096;
const BATCH: usize = 256;

/// The gRPC transport of one replica.
pub struct GrpcTransport {
    id: u64,
    /// Founding replicas (from `--peers`); replicas added later come from the replicated state.
    founders: BTreeMap<u64, String>,
    /// Sent with every batch; replicas refuse messages without it.
    peer_token: String,
    rt: tokio::runtime::Handle,
    node: OnceLock<RaftNode>,
    links: Mutex<HashMap<u64, (String, mpsc::Sender<RaftMessage>)>>,
}

impl GrpcTransport {
    /// Sender tasks run on `rt` (the process's main runtime, not the Raft thread's).
    pub fn new(
        id: u64,
        founders: BTreeMap<u64, String>,
        peer_token: String,
        rt: tokio::runtime::Handle,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            founders,
            peer_token,
            rt,
            node: OnceLock::new(),
            links: Mutex::new(HashMap::new()),
        })
    }

    /// Connects the transport to the node it serves (for addresses and unreachable reports).
    pub fn attach(&self, node: RaftNode) {
        let _ = self.node.set(node);
    }

    /// Where replica `id` listens, as far as this replica knows.
    pub fn address(&self, id: u64) -> Option<String> {
        self.founders.get(&id).cloned().or_else(|| {
            self.node
                .get()?
                .read_local(|sm| sm.state().replicas.get(&id).cloned())
        })
    }

    fn link(&self, to: u64) -> Option<mpsc::Sender<RaftMessage>> {
        let addr = self.address(to)?;
        let mut links = self.links.lock().expect("links lock");
        if let Some((a, tx)) = links.get(&to)
            && *a == addr
            && !tx.is_closed()
        {
            return Some(tx.clone());
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        // The channel's connection task belongs on the main runtime, not the Raft thread's.
        let _rt = self.rt.enter();
        let client = joule_client::Connect::internal()
            .raft(&addr, &self.peer_token)
            .ok()?;
        let node = self.node.get().cloned();
        self.rt.spawn(pump(self.id, to, client, rx, node));
        links.insert(to, (addr, tx.clone()));
        Some(tx)
    }
}

impl Transport for GrpcTransport {
    fn send(&self, msgs: Vec<RaftMessage>) {
        // One address lookup per peer per batch, not per message.
        let mut links: Vec<(u64, Option<mpsc::Sender<RaftMessage>>)> = Vec::new();
        for m in msgs {
            let to = m.to;
            let link = match links.iter().find(|l| l.0 == to) {
                Some(l) => l.1.clone(),
                None => {
                    let l = self.link(to);
                    links.push((to, l.clone()));
                    l
                }
            };
            match link {
                Some(tx) => {
                    if tx.try_send(m).is_err() {
                        tracing::debug!(to, "Raft queue full; message dropped");
                    }
                }
                None => {
                    tracing::debug!(to, "no address known for replica");
                    if let Some(n) = self.node.get() {
                        n.report_unreachable(to);
                    }
                }
            }
        }
    }
}

async fn pump(
    from: u64,
    to: u64,
    mut client: joule_client::Raft,
    mut rx: mpsc::Receiver<RaftMessage>,
    node: Option<RaftNode>,
) {
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let messages = batch
            .iter()
            .filter_map(|m| m.write_to_bytes().ok())
            .collect();
        match client.step(RaftBatch { from, to, messages }).await {
            Ok(_) => {
                if failing {
                    tracing::info!(to, "replica reachable again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(to, error = %e.message(), "cannot reach replica");
                    failing = true;
                }
                if let Some(n) = &node {
                    n.report_unreachable(to);
                    if batch
                        .iter()
                        .any(|m| m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot)
                    {
                        n.report_snapshot_failure(to);
                    }
                }
            }
        }
    }
}
