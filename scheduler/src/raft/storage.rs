//! The durable Raft log of one replica, in its data dir:
//! - `wal-<generation>.log` ([`super::wal`]): entries and hard state, appended with one write and
//!   one `fdatasync` per `Ready`, before the driver sends the messages that depend on them;
//! - `raft.redb`: the format marker, the membership (conf state), the latest snapshot and which
//!   WAL generation goes with it, each value with a CRC32, each change one fsynced transaction.
//!
//! Compaction writes the hard state and the entries after the new snapshot to a new WAL
//! generation, then commits the snapshot and the generation in redb, then deletes the old file;
//! a crash between any two steps leaves one consistent pair (leftover files are deleted at
//! open). Opening checks everything for consistency: a replica whose disk state is damaged
//! refuses to start instead of joining with bad data.
//!
//! Reads (raft-rs's [`Storage`] trait) are served from an in-memory mirror of the log, which
//! snapshots keep short.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use super::wal::{self, Wal, WalError};
use crate::state::StateMachine;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const FORMAT: &[u8] = b"joule-raft-2";

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

impl LogError {
    fn io(path: &Path, e: &dyn std::fmt::Display) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

/// A replica's Raft log on disk, with its in-memory mirror.
pub struct DiskStorage {
    dir: PathBuf,
    db: Database,
    wal: Wal,
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

/// What the metadata in redb says.
struct Meta {
    cs: ConfState,
    snap: Snapshot,
    generation: u64,
}

impl DiskStorage {
    /// Opens (or creates) the log in `dir`. A new log of a founding replica starts with `voters`
    /// as its membership; a replica that joins later starts with none (`voters` empty) and
    /// learns it from the leader. An existing log keeps the membership it recorded.
    pub fn open(dir: &Path, voters: &[u64]) -> Result<Self, LogError> {
        let path = dir.join("raft.redb");
        let io = |e: &dyn std::fmt::Display| LogError::io(dir, e);
        let corrupt = |reason: String| LogError::Corrupt {
            path: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
        let fresh = !path.exists();
        let mut founding_hs = HardState::default();
        let founding = fresh.then(|| {
            let cs = ConfState::from((voters.to_vec(), Vec::<u64>::new()));
            let mut snap = Snapshot::default();
            if !voters.is_empty() {
                // Every founding replica starts from the same snapshot at index 1 holding the
                // initial membership, so a replica added later learns it from a snapshot
                // instead of replaying a log that never recorded it.
                let m = snap.mut_metadata();
                m.index = 1;
                m.term = 1;
                m.set_conf_state(cs.clone());
                founding_hs.term = 1;
                founding_hs.commit = 1;
            }
            Meta {
                cs,
                snap,
                generation: 1,
            }
        });
        if founding.is_some() {
            // The WAL first: raft.redb existing is what marks the log as created.
            Wal::create(dir, 1, &founding_hs, &[]).map_err(|e| io(&e))?;
        }
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(r)) => {
                corrupt(format!("raft.redb: {r}"))
            }
            redb::DatabaseError::Storage(redb::StorageError::Io(e))
                if e.kind() == std::io::ErrorKind::InvalidData =>
            {
                corrupt(format!("raft.redb: {e}"))
            }
            e => io(&e),
        })?;
        let meta = match founding {
            Some(m) => {
                write_meta(&db, dir, |t| {
                    t.insert("format", FORMAT)?;
                    t.insert("conf_state", seal(&m.cs).as_slice())?;
                    t.insert("snapshot", seal(&m.snap).as_slice())?;
                    t.insert("wal", m.generation.to_le_bytes().as_slice())?;
                    Ok(())
                })?;
                m
            }
            None => load_meta(&db).map_err(|r| corrupt(format!("raft.redb: {r}")))?,
        };
        let after = meta.snap.get_metadata().index;
        let (wal, replayed) = Wal::open(dir, meta.generation, after).map_err(|e| match e {
            WalError::Io(e) => io(&e),
            WalError::Corrupt(r) => corrupt(r),
        })?;
        if replayed.torn_bytes > 0 {
            tracing::warn!(
                dir = %dir.display(),
                bytes = replayed.torn_bytes,
                "cut off the end of the Raft WAL: a write torn by a crash (never acknowledged)"
            );
        }
        wal::remove_stale(dir, meta.generation).map_err(|e| io(&e))?;
        let s = Self {
            dir: dir.to_path_buf(),
            db,
            wal,
            hs: replayed.hard_state.unwrap_or(founding_hs),
            cs: meta.cs,
            snap: meta.snap,
            entries: replayed.entries,
            state: None,
        };
        s.check().map_err(corrupt)?;
        Ok(s)
    }

    fn check(&self) -> Result<(), String> {
        let last = self.last();
        if self.hs.commit > last {
            return Err(format!(
                "commit index {} is past the last entry {last}",
                self.hs.commit
            ));
        }
        let term = self.term_of(last).unwrap_or(0);
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
        f: impl FnOnce(&mut redb::Table<'_, &str, &[u8]>) -> Result<(), redb::StorageError>,
    ) -> Result<(), LogError> {
        write_meta(&self.db, &self.dir, f)
    }

    fn io(&self, e: &dyn std::fmt::Display) -> LogError {
        LogError::io(&self.dir, e)
    }

    /// Starts a new WAL generation holding the hard state and `entries`, commits `snap` (and
    /// `cs`) with it in redb, and deletes the old generation.
    fn rotate(
        &mut self,
        snap: &Snapshot,
        hs: &HardState,
        entries: &[Entry],
    ) -> Result<(), LogError> {
        let old = self.wal.generation();
        let generation = old + 1;
        let wal = Wal::create(&self.dir, generation, hs, entries).map_err(|e| self.io(&e))?;
        let cs = snap.get_metadata().get_conf_state().clone();
        self.write(|t| {
            t.insert("snapshot", seal(snap).as_slice())?;
            t.insert("conf_state", seal(&cs).as_slice())?;
            t.insert("wal", generation.to_le_bytes().as_slice())?;
            Ok(())
        })?;
        self.wal = wal;
        if let Err(e) = std::fs::remove_file(wal::path(&self.dir, old)) {
            tracing::warn!(error = %e, "cannot delete an old Raft WAL file; it goes at the next start");
        }
        Ok(())
    }

    /// Makes one `Ready` durable: a snapshot received from the leader (which replaces the whole
    /// log), new entries (replacing any conflicting suffix) and the hard state. New entries, a
    /// snapshot or a new term or vote are synced before this returns (one `fdatasync`); a hard
    /// state that only moves the commit index is written but not waited for, as in etcd (a lower
    /// commit index after a crash is safe: the leader tells it again).
    pub fn persist(
        &mut self,
        snap: Option<&Snapshot>,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<(), LogError> {
        if let Some(s) = snap {
            let index = s.get_metadata().index;
            let mut new_hs = hs.cloned().unwrap_or_else(|| self.hs.clone());
            new_hs.commit = new_hs.commit.max(index);
            let after: Vec<Entry> = entries
                .iter()
                .filter(|e| e.index > index)
                .cloned()
                .collect();
            self.rotate(s, &new_hs, &after)?;
            self.snap = s.clone();
            self.cs = s.get_metadata().get_conf_state().clone();
            self.entries = after;
            self.hs = new_hs;
            return Ok(());
        }
        if entries.is_empty() && hs.is_none() {
            return Ok(());
        }
        let sync = !entries.is_empty()
            || hs.is_some_and(|h| h.term != self.hs.term || h.vote != self.hs.vote);
        self.wal
            .append(entries, hs, sync)
            .map_err(|e| self.io(&e))?;
        if let Some(first) = entries.first() {
            let keep = (first.index - self.first()) as usize;
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
        self.write(|t| {
            t.insert("conf_state", seal(cs).as_slice())?;
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
        let keep = (index - self.first() + 1) as usize;
        let tail = self.entries[keep.min(self.entries.len())..].to_vec();
        self.rotate(&snap, &hs, &tail)?;
        self.hs = hs;
        self.entries = tail;
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

fn write_meta(
    db: &Database,
    dir: &Path,
    f: impl FnOnce(&mut redb::Table<'_, &str, &[u8]>) -> Result<(), redb::StorageError>,
) -> Result<(), LogError> {
    let io = |e: &dyn std::fmt::Display| LogError::io(dir, e);
    let mut tx = db.begin_write().map_err(|e| io(&e))?;
    // One fsync per commit. With one-phase commit, redb detects a torn commit by checksum and
    // falls back to the previous one; a commit is torn only if its fsync never returned.
    tx.set_durability(Durability::Immediate)
        .map_err(|e| io(&e))?;
    {
        let mut meta = tx.open_table(META).map_err(|e| io(&e))?;
        f(&mut meta).map_err(|e| io(&e))?;
    }
    tx.commit().map_err(|e| io(&e))
}

fn load_meta(db: &Database) -> Result<Meta, String> {
    let r = db.begin_read().map_err(|e| e.to_string())?;
    let meta = r
        .open_table(META)
        .map_err(|e| format!("no metadata table: {e}"))?;
    let get = |k: &str| -> Result<Option<Vec<u8>>, String> {
        Ok(meta
            .get(k)
            .map_err(|e| e.to_string())?
            .map(|v| v.value().to_vec()))
    };
    match get("format")? {
        Some(f) if f == FORMAT => {}
        Some(f) => {
            return Err(format!(
                "written in format {:?}, this build reads {:?}",
                String::from_utf8_lossy(&f),
                String::from_utf8_lossy(FORMAT)
            ));
        }
        None => return Err("not a Joule Raft log (format marker missing)".into()),
    }
    let generation = get("wal")?
        .and_then(|v| v.try_into().ok().map(u64::from_le_bytes))
        .ok_or("the WAL generation is missing")?;
    Ok(Meta {
        cs: unseal(
            "conf state",
            &get("conf_state")?.ok_or("conf state missing")?,
        )?,
        snap: unseal("snapshot", &get("snapshot")?.ok_or("snapshot missing")?)?,
        generation,
    })
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
    fn a_damaged_log_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = DiskStorage::open(dir.path(), &[1]).unwrap();
            for i in 2..=4 {
                s.persist(None, &[entry(i, 1, &[7; 64])], Some(&hs(1, 1, i)))
                    .unwrap();
            }
        }
        // Flip a byte of entry 3 behind the log's back.
        let p = wal::path(dir.path(), 1);
        let mut data = std::fs::read(&p).unwrap();
        let at = data.len() / 2;
        data[at] ^= 0xff;
        std::fs::write(&p, &data).unwrap();
        let e = DiskStorage::open(dir.path(), &[1]).err().expect("refused");
        let msg = e.to_string();
        assert!(matches!(e, LogError::Corrupt { .. }), "{msg}");
        assert!(msg.contains("checksum mismatch"), "{msg}");
        assert!(msg.contains("refuses to start"), "{msg}");
        std::fs::remove_file(&p).unwrap();
        let msg = DiskStorage::open(dir.path(), &[1])
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("is missing"), "{msg}");
    }

    #[test]
    fn a_commit_past_the_log_is_refused() {
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
    fn compaction_leaves_one_wal_generation_and_a_stale_one_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = DiskStorage::open(dir.path(), &[1]).unwrap();
            let es: Vec<Entry> = (2..=6).map(|i| entry(i, 1, b"x")).collect();
            s.persist(None, &es, Some(&hs(1, 1, 6))).unwrap();
            s.compact(4, b"at 4".to_vec()).unwrap();
            s.compact(5, b"at 5".to_vec()).unwrap();
        }
        assert_eq!(wal::generations(dir.path()).unwrap(), vec![3]);
        // A crash after writing the next generation, before redb named it; and one before the
        // next generation was complete.
        Wal::create(dir.path(), 4, &hs(9, 9, 9), &[]).unwrap();
        std::fs::write(dir.path().join("wal-0000000000000005.tmp"), b"half").unwrap();
        let s = DiskStorage::open(dir.path(), &[1]).unwrap();
        assert_eq!(s.hard_state(), &hs(1, 1, 6));
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (6, 6));
        assert_eq!(wal::generations(dir.path()).unwrap(), vec![3]);
        assert!(!dir.path().join("wal-0000000000000005.tmp").exists());
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
