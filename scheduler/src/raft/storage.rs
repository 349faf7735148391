//! The durable Raft log of one replica: entries, hard state, membership (conf state) and the
//! latest snapshot, in one redb file (`<data-dir>/raft.redb`). Every write is one transaction
//! committed with one fsync (redb's `Immediate` durability) before the driver sends the
//! messages that depend on it. Every value carries a CRC32, and opening checks the whole log for consistency: a replica
//! whose disk state is damaged refuses to start instead of joining with bad data.
//!
//! Reads (raft-rs's [`Storage`] trait) are served from an in-memory mirror of the log, which
//! snapshots keep short.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::state::StateMachine;

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const FORMAT: &[u8] = b"joule-raft-1";

/// Why the log cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "the Raft data in {path} is corrupt ({reason}); this replica refuses to start with it. \
         Remove the replica from the cluster, wipe its data dir and add it back so it catches up \
         from the others"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot use the Raft data in {path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// A replica's Raft log on disk, with its in-memory mirror.
pub struct DiskStorage {
    path: PathBuf,
    db: Database,
    hs: HardState,
    cs: ConfState,
    /// The latest snapshot (metadata and data); index 0 when there is none.
    snap: Snapshot,
    /// Entries after the snapshot: `entries[0].index == snap.index + 1`.
    entries: Vec<Entry>,
    /// The applied state, for snapshots made on demand for a replica that needs one.
    state: Option<Arc<RwLock<StateMachine>>>,
}

fn seal(msg: &impl protobuf::Message) -> Vec<u8> {
    let body = msg.write_to_bytes().expect("raft messages always encode");
    let mut v = crc32fast::hash(&body).to_le_bytes().to_vec();
    v.extend_from_slice(&body);
    v
}

fn unseal<M: protobuf::Message>(what: &str, v: &[u8]) -> Result<M, String> {
    if v.len() < 4 {
        return Err(format!("{what}: value of {} bytes is too short", v.len()));
    }
    let (crc, body) = v.split_at(4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(format!("{what}: checksum mismatch"));
    }
    M::parse_from_bytes(body).map_err(|e| format!("{what}: {e}"))
}

impl DiskStorage {
    /// Opens (or creates) the log in `dir`. A new log of a founding replica starts with `voters`
    /// as its membership; a replica that joins later starts with none (`voters` empty) and
    /// learns it from the leader. An existing log keeps the membership it recorded.
    pub fn open(dir: &Path, voters: &[u64]) -> Result<Self, LogError> {
        let path = dir.join("raft.redb");
        let io = |e: &dyn std::fmt::Display| LogError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        let corrupt = |reason: String| LogError::Corrupt {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
        let fresh = !path.exists();
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(r)) => corrupt(r),
            redb::DatabaseError::Storage(redb::StorageError::Io(e))
                if e.kind() == std::io::ErrorKind::InvalidData =>
            {
                corrupt(e.to_string())
            }
            e => io(&e),
        })?;
        let mut s = Self {
            path: path.clone(),
            db,
            hs: HardState::default(),
            cs: ConfState::default(),
            snap: Snapshot::default(),
            entries: Vec::new(),
            state: None,
        };
        if fresh {
            s.cs = ConfState::from((voters.to_vec(), Vec::<u64>::new()));
            if !voters.is_empty() {
                // Every founding replica starts from the same snapshot at index 1 holding the
                // initial membership, so a replica added later learns it from a snapshot
                // instead of replaying a log that never recorded it.
                let m = s.snap.mut_metadata();
                m.index = 1;
                m.term = 1;
                m.set_conf_state(s.cs.clone());
                s.hs.term = 1;
                s.hs.commit = 1;
            }
            let (cs, snap, hs) = (s.cs.clone(), s.snap.clone(), s.hs.clone());
            s.write(|meta, _| {
                meta.insert("format", FORMAT)?;
                meta.insert("conf_state", seal(&cs).as_slice())?;
                meta.insert("snapshot", seal(&snap).as_slice())?;
                meta.insert("hard_state", seal(&hs).as_slice())?;
                Ok(())
            })?;
            return Ok(s);
        }
        s.load().map_err(corrupt)?;
        Ok(s)
    }

    fn load(&mut self) -> Result<(), String> {
        let r = self.db.begin_read().map_err(|e| e.to_string())?;
        let meta = r
            .open_table(META)
            .map_err(|e| format!("no metadata table: {e}"))?;
        let get = |k: &str| -> Result<Option<Vec<u8>>, String> {
            Ok(meta
                .get(k)
                .map_err(|e| e.to_string())?
                .map(|v| v.value().to_vec()))
        };
        if get("format")?.as_deref() != Some(FORMAT) {
            return Err("not a Joule Raft log (format marker missing)".into());
        }
        if let Some(v) = get("hard_state")? {
            self.hs = unseal("hard state", &v)?;
        }
        self.cs = unseal(
            "conf state",
            &get("conf_state")?.ok_or("conf state missing")?,
        )?;
        if let Some(v) = get("snapshot")? {
            self.snap = unseal("snapshot", &v)?;
        }
        let entries = r.open_table(ENTRIES).map_err(|e| e.to_string());
        let mut next = self.snap.get_metadata().index + 1;
        let mut term = self.snap.get_metadata().term;
        if let Ok(t) = entries {
            for row in t.iter().map_err(|e| e.to_string())? {
                let (k, v) = row.map_err(|e| e.to_string())?;
                let e: Entry = unseal("log entry", v.value())?;
                if k.value() != next || e.index != next {
                    return Err(format!(
                        "log entry {} (key {}) where {next} was expected",
                        e.index,
                        k.value()
                    ));
                }
                if e.term < term {
                    return Err(format!(
                        "log entry {} has term {} after term {term}",
                        e.index, e.term
                    ));
                }
                term = e.term;
                next += 1;
                self.entries.push(e);
            }
        }
        let last = next - 1;
        if self.hs.commit > last {
            return Err(format!(
                "commit index {} is past the last entry {last}",
                self.hs.commit
            ));
        }
        if self.hs.term < term {
            return Err(format!(
                "hard state term {} is older than the log's {term}",
                self.hs.term
            ));
        }
        Ok(())
    }

    fn write(
        &self,
        f: impl FnOnce(
            &mut redb::Table<'_, &str, &[u8]>,
            &mut redb::Table<'_, u64, &[u8]>,
        ) -> Result<(), redb::StorageError>,
    ) -> Result<(), LogError> {
        let io = |e: &dyn std::fmt::Display| LogError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let mut tx = self.db.begin_write().map_err(|e| io(&e))?;
        // One fsync per commit. With one-phase commit, redb detects a torn commit by checksum
        // and falls back to the previous one; a commit is torn only if its fsync never
        // returned, so nothing acknowledged is lost.
        tx.set_durability(Durability::Immediate)
            .map_err(|e| io(&e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| io(&e))?;
            let mut entries = tx.open_table(ENTRIES).map_err(|e| io(&e))?;
            f(&mut meta, &mut entries).map_err(|e| io(&e))?;
        }
        tx.commit().map_err(|e| io(&e))
    }

    /// Makes one `Ready` durable: a snapshot received from the leader (which replaces the whole
    /// log), new entries (replacing any conflicting suffix) and the hard state, in one fsync.
    pub fn persist(
        &mut self,
        snap: Option<&Snapshot>,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<(), LogError> {
        if snap.is_none() && entries.is_empty() && hs.is_none() {
            return Ok(());
        }
        let first_new = entries.first().map(|e| e.index);
        self.write(|meta, table| {
            if let Some(s) = snap {
                table.retain(|_, _| false)?;
                meta.insert("snapshot", seal(s).as_slice())?;
                meta.insert(
                    "conf_state",
                    seal(s.get_metadata().get_conf_state()).as_slice(),
                )?;
            }
            if let Some(i) = first_new {
                table.retain_in(i.., |_, _| false)?;
                for e in entries {
                    table.insert(e.index, seal(e).as_slice())?;
                }
            }
            if let Some(hs) = hs {
                meta.insert("hard_state", seal(hs).as_slice())?;
            }
            Ok(())
        })?;
        if let Some(s) = snap {
            self.snap = s.clone();
            self.cs = s.get_metadata().get_conf_state().clone();
            self.entries.clear();
            self.hs.commit = self.hs.commit.max(s.get_metadata().index);
        }
        if let Some(i) = first_new {
            let keep = (i - self.first()) as usize;
            self.entries.truncate(keep.min(self.entries.len()));
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hs {
            self.hs = hs.clone();
        }
        Ok(())
    }

    /// Records the membership after a conf change is applied.
    pub fn set_conf_state(&mut self, cs: &ConfState) -> Result<(), LogError> {
        self.write(|meta, _| {
            meta.insert("conf_state", seal(cs).as_slice())?;
            Ok(())
        })?;
        self.cs = cs.clone();
        Ok(())
    }

    /// Replaces the log up to `index` (applied here) with a snapshot of the state there.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), LogError> {
        if index <= self.snap.get_metadata().index || index > self.last() {
            return Ok(());
        }
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let m = snap.mut_metadata();
        m.index = index;
        m.term = self.term_of(index).unwrap_or(0);
        m.set_conf_state(self.cs.clone());
        let mut hs = self.hs.clone();
        hs.commit = hs.commit.max(index);
        self.write(|meta, table| {
            table.retain_in(..=index, |_, _| false)?;
            meta.insert("snapshot", seal(&snap).as_slice())?;
            meta.insert("hard_state", seal(&hs).as_slice())?;
            Ok(())
        })?;
        self.hs = hs;
        let drop = (index - self.first() + 1) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.snap = snap;
        Ok(())
    }

    /// Lets [`Storage::snapshot`] build snapshots of the applied state on demand.
    pub fn serve_snapshots_of(&mut self, state: Arc<RwLock<StateMachine>>) {
        self.state = Some(state);
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hs
    }
    pub fn conf_state(&self) -> &ConfState {
        &self.cs
    }
    /// The latest snapshot (empty data and index 0 when there is none).
    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snap
    }
    /// Entries held after the snapshot.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn first(&self) -> u64 {
        self.snap.get_metadata().index + 1
    }
    fn last(&self) -> u64 {
        self.snap.get_metadata().index + self.entries.len() as u64
    }
    fn term_of(&self, idx: u64) -> Option<u64> {
        if idx == self.snap.get_metadata().index {
            return Some(self.snap.get_metadata().term);
        }
        if idx < self.first() || idx > self.last() {
            return None;
        }
        Some(self.entries[(idx - self.first()) as usize].term)
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hs.clone(), self.cs.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _ctx: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.first()) as usize;
        let hi = (high - self.first()) as usize;
        let mut out = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        match self.term_of(idx) {
            Some(t) => Ok(t),
            None if idx < self.first() => Err(raft::Error::Store(StorageError::Compacted)),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    /// The applied state now, with the membership as of it: a replica being added is in it,
    /// which it is not in an older stored snapshot (and Raft refuses a snapshot that does not
    /// name the receiver).
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if let Some(sm) = &self.state {
            let sm = sm.read().expect("state lock");
            let index = sm.applied();
            if index > self.snap.get_metadata().index
                && index >= request_index
                && let Some(term) = self.term_of(index)
            {
                let mut snap = Snapshot::default();
                snap.set_data(sm.snapshot().into());
                let m = snap.mut_metadata();
                m.index = index;
                m.term = term;
                m.set_conf_state(self.cs.clone());
                return Ok(snap);
            }
        }
        if self.snap.get_metadata().index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snap.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        let mut e = Entry {
            index,
            term,
            ..Default::default()
        };
        e.set_data(data.to_vec().into());
        e
    }

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    #[test]
    fn a_reopened_log_has_what_was_persisted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = DiskStorage::open(dir.path(), &[1, 2, 3]).unwrap();
            assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (2, 1));
            assert_eq!(s.term(1).unwrap(), 1, "the founding snapshot");
            let es: Vec<Entry> = (2..=5).map(|i| entry(i, 1, b"x")).collect();
            s.persist(None, &es, Some(&hs(1, 2, 3))).unwrap();
            // A new leader's entries replace the uncommitted suffix from index 4.
            s.persist(None, &[entry(4, 2, b"y")], Some(&hs(2, 3, 4)))
                .unwrap();
        }
        let s = DiskStorage::open(dir.path(), &[9]).unwrap();
        assert_eq!(s.conf_state().voters, vec![1, 2, 3], "membership is kept");
        assert_eq!(s.hard_state(), &hs(2, 3, 4));
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (2, 4));
        let es = s
            .entries(2, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(es[2].get_data(), b"y");
        assert_eq!(s.term(4).unwrap(), 2);
        assert!(matches!(
            s.term(5),
            Err(raft::Error::Store(StorageError::Unavailable))
        ));
    }

    #[test]
    fn compaction_keeps_the_snapshot_and_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = DiskStorage::open(dir.path(), &[1]).unwrap();
            let es: Vec<Entry> = (2..=10).map(|i| entry(i, 1 + i / 6, b"x")).collect();
            s.persist(None, &es, Some(&hs(2, 1, 10))).unwrap();
            s.compact(7, b"state at 7".to_vec()).unwrap();
            assert_eq!(s.first_index().unwrap(), 8);
        }
        let s = DiskStorage::open(dir.path(), &[1]).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (8, 10));
        assert_eq!(s.term(7).unwrap(), 2, "the snapshot's term");
        assert!(matches!(
            s.entries(5, 9, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let snap = s.snapshot(0, 2).unwrap();
        assert_eq!(
            (snap.get_metadata().index, snap.get_data()),
            (7, &b"state at 7"[..])
        );
    }

    #[test]
    fn a_snapshot_from_the_leader_replaces_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DiskStorage::open(dir.path(), &[]).unwrap();
        assert_eq!(s.first_index().unwrap(), 1, "a joiner starts empty");
        s.persist(None, &[entry(1, 1, b"a")], Some(&hs(1, 0, 1)))
            .unwrap();
        let mut snap = Snapshot::default();
        snap.set_data(b"leader state".to_vec().into());
        snap.mut_metadata().index = 50;
        snap.mut_metadata().term = 3;
        snap.mut_metadata()
            .set_conf_state(ConfState::from((vec![1, 2, 3, 4], vec![])));
        s.persist(Some(&snap), &[], Some(&hs(3, 0, 50))).unwrap();
        drop(s);
        let s = DiskStorage::open(dir.path(), &[1]).unwrap();
        assert_eq!(
            (s.first_index().unwrap(), s.last_index().unwrap()),
            (51, 50)
        );
        assert_eq!(s.conf_state().voters, vec![1, 2, 3, 4]);
        assert_eq!(s.hard_state().commit, 50);
    }

    #[test]
    fn a_damaged_value_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = DiskStorage::open(dir.path(), &[1]).unwrap();
            let es: Vec<Entry> = (2..=4).map(|i| entry(i, 1, b"x")).collect();
            s.persist(None, &es, Some(&hs(1, 1, 3))).unwrap();
            // Flip a byte of entry 3 behind the log's back.
            let mut v = seal(&es[1]);
            *v.last_mut().unwrap() ^= 0xff;
            s.write(|_, t| {
                t.insert(3, v.as_slice())?;
                Ok(())
            })
            .unwrap();
        }
        let e = DiskStorage::open(dir.path(), &[1]).err().expect("refused");
        let msg = e.to_string();
        assert!(matches!(e, LogError::Corrupt { .. }), "{msg}");
        assert!(msg.contains("log entry: checksum mismatch"), "{msg}");
        assert!(msg.contains("refuses to start"), "{msg}");
    }

    #[test]
    fn a_gap_or_a_commit_past_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = DiskStorage::open(dir.path(), &[1]).unwrap();
            let es: Vec<Entry> = (2..=4).map(|i| entry(i, 1, b"x")).collect();
            s.persist(None, &es, Some(&hs(1, 1, 3))).unwrap();
            s.write(|_, t| {
                t.remove(3)?;
                Ok(())
            })
            .unwrap();
        }
        let msg = DiskStorage::open(dir.path(), &[1])
            .err()
            .unwrap()
            .to_string();
        assert!(
            msg.contains("log entry 4 (key 4) where 3 was expected"),
            "{msg}"
        );

        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = DiskStorage::open(dir.path(), &[1]).unwrap();
            s.persist(None, &[entry(2, 1, b"x")], Some(&hs(1, 1, 9)))
                .unwrap();
        }
        let msg = DiskStorage::open(dir.path(), &[1])
            .err()
            .unwrap()
            .to_string();
        assert!(
            msg.contains("commit index 9 is past the last entry 2"),
            "{msg}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("raft.redb"), vec![0x5a; 8192]).unwrap();
        let e = DiskStorage::open(dir.path(), &[1]).err().expect("refused");
        assert!(
            matches!(e, LogError::Corrupt { .. } | LogError::Io { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("raft.redb"), "{e}");
    }
}
