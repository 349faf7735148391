//! A simulated network for in-process test clusters (in the style of raft-rs's test harness and
//! TiKV's `transport_simulate`): messages between replicas go through filters that isolate a
//! replica, split the cluster into partitions, drop a fraction of messages (from a seeded
//! generator, so a run can be repeated) or delay them. It is a fake network, named as one; the
//! Raft nodes, their logs on disk and their threads are the real ones.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{RaftMessage, RaftNode, Transport};

#[derive(Default)]
struct Net {
    nodes: HashMap<u64, RaftNode>,
    isolated: HashSet<u64>,
    /// When set, only replicas in the same group talk.
    groups: Option<Vec<HashSet<u64>>>,
    drop_rate: f64,
    delay: Duration,
    rng: u64,
    delivered: u64,
    dropped: u64,
}

impl Net {
    fn blocked(&self, from: u64, to: u64) -> bool {
        if self.isolated.contains(&from) || self.isolated.contains(&to) {
            return true;
        }
        match &self.groups {
            Some(g) => !g.iter().any(|g| g.contains(&from) && g.contains(&to)),
            None => false,
        }
    }

    /// xorshift64*: a repeatable coin for the drop filter.
    fn coin(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The network of one test cluster. Cheap to clone.
#[derive(Clone)]
pub struct SimNet {
    net: Arc<Mutex<Net>>,
}

impl SimNet {
    pub fn new(seed: u64) -> Self {
        Self {
            net: Arc::new(Mutex::new(Net {
                rng: seed | 1,
                ..Default::default()
            })),
        }
    }

    /// What replica `from` sends through.
    pub fn transport(&self, from: u64) -> Arc<dyn Transport> {
        Arc::new(Endpoint {
            from,
            net: self.clone(),
        })
    }

    /// Connects a (re)started replica.
    pub fn attach(&self, node: RaftNode) {
        self.lock().nodes.insert(node.id(), node);
    }

    /// Disconnects a replica (as if its process died).
    pub fn detach(&self, id: u64) {
        self.lock().nodes.remove(&id);
    }

    /// Cuts a replica off from every other.
    pub fn isolate(&self, id: u64) {
        self.lock().isolated.insert(id);
    }

    /// Splits the cluster: replicas talk only within their group.
    pub fn partition(&self, groups: &[&[u64]]) {
        self.lock().groups = Some(groups.iter().map(|g| g.iter().copied().collect()).collect());
    }

    /// Removes isolation, partitions, drops and delays.
    pub fn heal(&self) {
        let mut n = self.lock();
        n.isolated.clear();
        n.groups = None;
        n.drop_rate = 0.0;
        n.delay = Duration::ZERO;
    }

    /// Drops each message with probability `p`.
    pub fn drop_rate(&self, p: f64) {
        self.lock().drop_rate = p;
    }

    /// Delivers every message `d` late.
    pub fn delay(&self, d: Duration) {
        self.lock().delay = d;
    }

    /// (delivered, dropped) so far.
    pub fn counts(&self) -> (u64, u64) {
        let n = self.lock();
        (n.delivered, n.dropped)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Net> {
        self.net.lock().expect("network lock")
    }
}

struct Endpoint {
    from: u64,
    net: SimNet,
}

impl Transport for Endpoint {
    fn send(&self, msgs: Vec<RaftMessage>) {
        let mut unreachable = Vec::new();
        let mut out = Vec::new();
        let (me, delay) = {
            let mut n = self.net.lock();
            for m in msgs {
                let to = m.to;
                if n.blocked(self.from, to) {
                    n.dropped += 1;
                    unreachable.push(to);
                    continue;
                }
                if n.drop_rate > 0.0 && n.coin() < n.drop_rate {
                    n.dropped += 1;
                    continue;
                }
                match n.nodes.get(&to).cloned() {
                    Some(node) => {
                        n.delivered += 1;
                        out.push((node, m));
                    }
                    None => {
                        n.dropped += 1;
                        unreachable.push(to);
                    }
                }
            }
            (n.nodes.get(&self.from).cloned(), n.delay)
        };
        if let Some(me) = me {
            unreachable.sort_unstable();
            unreachable.dedup();
            for id in unreachable {
                me.report_unreachable(id);
            }
        }
        if delay.is_zero() {
            for (node, m) in out {
                node.step(m);
            }
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                for (node, m) in out {
                    node.step(m);
                }
            });
        }
    }
}
