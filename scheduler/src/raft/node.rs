//! The thread that drives one replica's `RawNode`: it ticks the Raft clock, steps messages in,
//! and handles each `Ready` in the order Raft's safety needs: the leader's messages go out at
//! once; then the snapshot, new entries and hard state are made durable with one fsync; only
//! then go the messages that promise something about them (votes, append acknowledgements);
//! then committed entries are applied, the callers waiting on them answered, and the log
//! compacted behind a fresh snapshot every `snapshot_entries`.
//!
//! A disk write that fails stops the node (fail-stop): a replica that cannot persist must not
//! acknowledge anything.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use joule_proto::internal::v1 as pb;
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType};
use raft::{Config, RawNode, ReadOnlyOption, StateRole};
use tokio::sync::{mpsc, oneshot, watch};

use super::storage::{DiskStorage, LogError};
use super::{Input, Membership, NodeConfig, RaftError, RaftNode, Status, Transport};
use crate::state::StateMachine;

type Reply = oneshot::Sender<Result<u64, RaftError>>;

struct Waiting {
    reply: Reply,
    deadline: Instant,
    what: &'static str,
}

struct Driver {
    cfg: NodeConfig,
    rn: RawNode<DiskStorage>,
    transport: Arc<dyn Transport>,
    state: Arc<RwLock<StateMachine>>,
    status: watch::Sender<Status>,
    seq: u64,
    /// Proposals and membership changes made here, by sequence number (their entry's context).
    proposals: HashMap<u64, Waiting>,
    /// ReadIndex requests made here, by sequence number (their request context).
    reads: HashMap<u64, Waiting>,
    /// The leader as of the last step.
    leader: u64,
}

/// Opens the replica's log (refusing a damaged one), restores its state from the latest
/// snapshot, and starts its thread. Log entries after the snapshot are applied again as Raft
/// hands them back as committed.
pub fn start(cfg: NodeConfig, transport: Arc<dyn Transport>) -> Result<RaftNode, LogError> {
    let mut store = DiskStorage::open(&cfg.data_dir, &cfg.voters)?;
    let mut sm = StateMachine::default();
    let snap = store.latest_snapshot();
    let applied = snap.get_metadata().index;
    if applied > 0 {
        sm.restore(snap.get_data(), applied)
            .map_err(|e| LogError::Corrupt {
                path: cfg.data_dir.join("raft.redb"),
                reason: format!("snapshot at index {applied} does not decode: {e}"),
            })?;
    }
    let rc = Config {
        id: cfg.id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        applied,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        read_only_option: ReadOnlyOption::Safe,
        ..Default::default()
    };
    let state = Arc::new(RwLock::new(sm));
    store.serve_snapshots_of(state.clone());
    let rn =
        RawNode::new(&rc, store, &super::logger::logger(cfg.id)).map_err(|e| LogError::Io {
            path: cfg.data_dir.clone(),
            reason: format!("cannot start Raft: {e}"),
        })?;
    let (tx, rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(Status::default());
    let handle = RaftNode {
        id: cfg.id,
        tx,
        status: status_rx,
        state: state.clone(),
    };
    let d = Driver {
        cfg,
        rn,
        transport,
        state,
        status: status_tx,
        seq: 0,
        proposals: HashMap::new(),
        reads: HashMap::new(),
        leader: 0,
    };
    d.publish();
    let id = d.cfg.id;
    let dir = d.cfg.data_dir.clone();
    let thread_error = |e: std::io::Error| LogError::Io {
        path: dir.clone(),
        reason: format!("cannot start the Raft thread: {e}"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(thread_error)?;
    std::thread::Builder::new()
        .name(format!("joule-raft-{id}"))
        .spawn(move || rt.block_on(d.run(rx)))
        .map_err(thread_error)?;
    Ok(handle)
}

fn context(id: u64, seq: u64) -> Vec<u8> {
    let mut c = id.to_be_bytes().to_vec();
    c.extend_from_slice(&seq.to_be_bytes());
    c
}

/// (replica, sequence) of a context made by [`context`].
fn parse_context(c: &[u8]) -> Option<(u64, u64)> {
    let c: &[u8; 16] = c.try_into().ok()?;
    let (a, b) = c.split_at(8);
    Some((
        u64::from_be_bytes(a.try_into().ok()?),
        u64::from_be_bytes(b.try_into().ok()?),
    ))
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.rn.tick();
                    self.expire();
                }
                input = rx.recv() => match input {
                    Some(Input::Stop) | None => break,
                    Some(i) => self.input(i),
                }
            }
            // Take whatever else is queued, so one fsync covers many inputs.
            let mut stop = false;
            for _ in 0..4096 {
                match rx.try_recv() {
                    Ok(Input::Stop) => {
                        stop = true;
                        break;
                    }
                    Ok(i) => self.input(i),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.on_ready() {
                tracing::error!(replica = self.cfg.id, error = %e, "cannot persist the Raft log; stopping this replica");
                break;
            }
            self.leader_changed();
            self.publish();
            if stop {
                break;
            }
        }
        for (_, w) in self.proposals.drain().chain(self.reads.drain()) {
            let _ = w.reply.send(Err(RaftError::Stopped(self.cfg.id)));
        }
        tracing::info!(replica = self.cfg.id, "Raft node stopped");
    }

    fn leader(&self) -> u64 {
        self.rn.raft.leader_id
    }

    /// The next sequence number for a request made here, and its context bytes.
    fn next(&mut self) -> (u64, Vec<u8>) {
        self.seq += 1;
        (self.seq, context(self.cfg.id, self.seq))
    }

    fn waiting(&self, reply: Reply, what: &'static str) -> Waiting {
        Waiting {
            reply,
            deadline: Instant::now() + self.cfg.request_timeout,
            what,
        }
    }

    fn input(&mut self, i: Input) {
        let no_leader = RaftError::NoLeader {
            replica: self.cfg.id,
        };
        match i {
            Input::Raft(m) => {
                if let Err(e) = self.rn.step(*m) {
                    tracing::debug!(replica = self.cfg.id, error = %e, "Raft message ignored");
                }
            }
            Input::Propose { data, reply } => {
                if self.leader() == 0 {
                    let _ = reply.send(Err(no_leader));
                    return;
                }
                let (seq, ctx) = self.next();
                match self.rn.propose(ctx, data) {
                    Ok(()) => {
                        let w = self.waiting(reply, "write");
                        self.proposals.insert(seq, w);
                    }
                    Err(_) => {
                        let _ = reply.send(Err(no_leader));
                    }
                }
            }
            Input::Read { reply } => {
                if self.leader() == 0 {
                    let _ = reply.send(Err(no_leader));
                    return;
                }
                let (seq, ctx) = self.next();
                self.rn.read_index(ctx);
                let w = self.waiting(reply, "read");
                self.reads.insert(seq, w);
            }
            Input::Membership { change, reply } => {
                if let Err(e) = self.check_change(change) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let (ty, id) = match change {
                    Membership::AddVoter(id) => (ConfChangeType::AddNode, id),
                    Membership::AddLearner(id) => (ConfChangeType::AddLearnerNode, id),
                    Membership::Remove(id) => (ConfChangeType::RemoveNode, id),
                };
                let mut single = ConfChangeSingle::default();
                single.set_change_type(ty);
                single.node_id = id;
                let mut cc = ConfChangeV2::default();
                cc.set_changes(vec![single].into());
                let (seq, ctx) = self.next();
                match self.rn.propose_conf_change(ctx, cc) {
                    Ok(()) => {
                        let w = self.waiting(reply, "membership change");
                        self.proposals.insert(seq, w);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(RaftError::InvalidChange(e.to_string())));
                    }
                }
            }
            Input::Unreachable(id) => self.rn.report_unreachable(id),
            Input::SnapshotFailed(id) => self.rn.report_snapshot(id, raft::SnapshotStatus::Failure),
            Input::Campaign => {
                let _ = self.rn.campaign();
            }
            Input::Stop => {}
        }
    }

    /// Refuses what Raft would silently drop or what would break the cluster.
    fn check_change(&self, change: Membership) -> Result<(), RaftError> {
        let r = &self.rn.raft;
        if r.state != StateRole::Leader {
            return Err(match self.leader() {
                0 => RaftError::NoLeader {
                    replica: self.cfg.id,
                },
                l => RaftError::InvalidChange(format!(
                    "membership changes go to the leader, replica {l}"
                )),
            });
        }
        if r.pending_conf_index > r.raft_log.applied {
            return Err(RaftError::InvalidChange(
                "another membership change is still in progress; retry when it is applied".into(),
            ));
        }
        let cs = self.rn.store().conf_state();
        let is_voter = |id| cs.voters.contains(&id);
        match change {
            Membership::AddVoter(0) | Membership::AddLearner(0) | Membership::Remove(0) => {
                Err(RaftError::InvalidChange("replica ids start at 1".into()))
            }
            Membership::AddVoter(id) if is_voter(id) => Err(RaftError::InvalidChange(format!(
                "replica {id} is already a voter"
            ))),
            Membership::Remove(id) if !is_voter(id) && !cs.learners.contains(&id) => Err(
                RaftError::InvalidChange(format!("replica {id} is not a member")),
            ),
            Membership::Remove(id) if cs.voters == [id] => Err(RaftError::InvalidChange(
                "cannot remove the last voter".into(),
            )),
            _ => Ok(()),
        }
    }

    /// A request forwarded to a leader that is gone will never be answered by it: tell its
    /// caller now (the outcome is unknown), so it can retry with the new leader at once.
    fn leader_changed(&mut self) {
        let now = self.leader();
        if now == self.leader {
            return;
        }
        let from = std::mem::replace(&mut self.leader, now);
        if from == 0 {
            return;
        }
        for (_, w) in self.proposals.drain().chain(self.reads.drain()) {
            let _ = w.reply.send(Err(RaftError::LeaderChanged {
                what: w.what,
                from,
                to: now,
            }));
        }
    }

    /// Answers the callers whose time ran out; their outcome is unknown.
    fn expire(&mut self) {
        let now = Instant::now();
        let leader = self.leader();
        let ms = self.cfg.request_timeout.as_millis() as u64;
        for map in [&mut self.proposals, &mut self.reads] {
            for (_, w) in map.extract_if(|_, w| w.deadline <= now) {
                let _ = w.reply.send(Err(RaftError::Timeout {
                    what: w.what,
                    timeout_ms: ms,
                    leader,
                }));
            }
        }
    }

    fn send(&self, msgs: Vec<raft::eraftpb::Message>) {
        if !msgs.is_empty() {
            self.transport.send(msgs);
        }
    }

    fn on_ready(&mut self) -> Result<(), LogError> {
        if !self.rn.has_ready() {
            return Ok(());
        }
        let mut rd = self.rn.ready();
        // A leader may send before its own write is durable (Raft counts its own vote only
        // once it is).
        self.send(rd.take_messages());
        let snap = (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone());
        if let Some(s) = &snap {
            let index = s.get_metadata().index;
            self.state
                .write()
                .expect("state lock")
                .restore(s.get_data(), index)
                .map_err(|e| LogError::Corrupt {
                    path: self.cfg.data_dir.clone(),
                    reason: format!("the leader's snapshot at {index} does not decode: {e}"),
                })?;
            tracing::info!(
                replica = self.cfg.id,
                index,
                "restored from the leader's snapshot"
            );
        }
        self.rn
            .mut_store()
            .persist(snap.as_ref(), rd.entries(), rd.hs())?;
        for rs in rd.take_read_states() {
            if let Some((id, seq)) = parse_context(&rs.request_ctx)
                && id == self.cfg.id
                && let Some(w) = self.reads.remove(&seq)
            {
                let _ = w.reply.send(Ok(rs.index));
            }
        }
        self.send(rd.take_persisted_messages());
        let committed = rd.take_committed_entries();
        self.apply(committed)?;
        // A new commit index from `advance` is written with the next hard state (a lower commit
        // index after a crash is safe: the leader tells it again).
        let mut light = self.rn.advance(rd);
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.rn.advance_apply();
        self.maybe_compact()
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), LogError> {
        for e in entries {
            let index = e.index;
            let mine = parse_context(e.get_context())
                .filter(|(id, _)| *id == self.cfg.id)
                .map(|(_, seq)| seq);
            let result = match e.get_entry_type() {
                EntryType::EntryNormal if e.get_data().is_empty() => {
                    self.state.write().expect("state lock").skip(index);
                    continue;
                }
                EntryType::EntryNormal => {
                    let mut sm = self.state.write().expect("state lock");
                    match pb::Command::decode(e.get_data()) {
                        Ok(c) => sm.apply(index, &c).map_err(RaftError::Rejected),
                        Err(err) => {
                            sm.skip(index);
                            Err(RaftError::Rejected(format!("undecodable command: {err}")))
                        }
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.state.write().expect("state lock").skip(index);
                    let r = if e.get_entry_type() == EntryType::EntryConfChange {
                        ConfChange::parse_from_bytes(e.get_data())
                            .map_err(|x| x.to_string())
                            .and_then(|cc| {
                                self.rn.apply_conf_change(&cc).map_err(|x| x.to_string())
                            })
                    } else {
                        ConfChangeV2::parse_from_bytes(e.get_data())
                            .map_err(|x| x.to_string())
                            .and_then(|cc| {
                                self.rn.apply_conf_change(&cc).map_err(|x| x.to_string())
                            })
                    };
                    match r {
                        Ok(cs) => {
                            self.rn.mut_store().set_conf_state(&cs)?;
                            tracing::info!(replica = self.cfg.id, index, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
                            Ok(())
                        }
                        Err(x) => Err(RaftError::InvalidChange(x)),
                    }
                }
            };
            if let Some(seq) = mine
                && let Some(w) = self.proposals.remove(&seq)
            {
                let _ = w.reply.send(result.map(|()| index));
            }
        }
        Ok(())
    }

    fn maybe_compact(&mut self) -> Result<(), LogError> {
        let applied = self.state.read().expect("state lock").applied();
        let snap_index = self.rn.store().latest_snapshot().get_metadata().index;
        if applied >= snap_index + self.cfg.snapshot_entries.max(1) {
            let data = self.state.read().expect("state lock").snapshot();
            self.rn.mut_store().compact(applied, data)?;
            tracing::debug!(
                replica = self.cfg.id,
                index = applied,
                "log compacted behind a snapshot"
            );
        }
        Ok(())
    }

    fn publish(&self) {
        let r = &self.rn.raft;
        let store = self.rn.store();
        let cs = store.conf_state();
        let sorted = |v: &[u64]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v
        };
        let s = Status {
            id: self.cfg.id,
            leader: r.leader_id,
            term: r.term,
            is_leader: r.state == StateRole::Leader,
            commit: r.raft_log.committed,
            applied: self.state.read().expect("state lock").applied(),
            last_index: r.raft_log.last_index(),
            first_index: store.latest_snapshot().get_metadata().index + 1,
            voters: sorted(&cs.voters),
            learners: sorted(&cs.learners),
            progress: if r.state == StateRole::Leader {
                let mut p: Vec<_> = r
                    .prs()
                    .iter()
                    .map(|(id, pr)| (*id, pr.matched, *id == self.cfg.id || pr.recent_active))
                    .collect();
                p.sort_unstable();
                p
            } else {
                Vec::new()
            },
        };
        self.status.send_if_modified(|old| {
            let changed = *old != s;
            *old = s;
            changed
        });
    }
}
