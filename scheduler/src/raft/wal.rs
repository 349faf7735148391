//! The write-ahead log file that makes Raft entries and hard state durable: an append-only file
//! of checksummed records, written with one `write` and one `fdatasync` per `Ready`, the way
//! etcd's WAL is. An append costs what the disk's flush costs and nothing more (no B-tree pages,
//! no second header write), which is what bounds commit latency.
//!
//! File `wal-<generation>.log`: an 16-byte header (magic, generation), then records
//! `[length u32][crc32 u32][kind u8][protobuf body]`, little-endian, the CRC over kind and body.
//! An entry record at index `i` replaces every entry from `i` on (a new leader overwrote an
//! uncommitted suffix); the last hard-state record wins. A new generation is written whole
//! (hard state and the entries after a snapshot) when the log is compacted, so old files are
//! simply deleted.
//!
//! Replay tells a crash from damage: a bad record with nothing but zeros after it (or one that
//! runs past the end of the file) is a write torn by a crash; its `fdatasync` never returned, so
//! nobody was told it was stored, and it is cut off. A bad record followed by more data is damage,
//! and the replica refuses to start.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use raft::eraftpb::{Entry, HardState};

const MAGIC: &[u8; 8] = b"JOULWAL1";
const HEADER: usize = 16;
const RECORD_HEADER: usize = 9;
const ENTRY: u8 = 1;
const HARD_STATE: u8 = 2;

/// Why a WAL file could not be used.
#[derive(Debug)]
pub enum WalError {
    Io(std::io::Error),
    Corrupt(String),
}

impl From<std::io::Error> for WalError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// What a replay found.
pub struct Replayed {
    pub hard_state: Option<HardState>,
    /// Entries after `after` in index order.
    pub entries: Vec<Entry>,
    /// Bytes cut off as a torn tail (0 when the file ended cleanly).
    pub torn_bytes: u64,
}

/// An open WAL file, positioned at its end.
pub struct Wal {
    file: File,
    generation: u64,
    buf: Vec<u8>,
}

pub fn path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("wal-{generation:016x}.log"))
}

/// The generations of the WAL files in `dir`.
pub fn generations(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(g) = name
            .strip_prefix("wal-")
            .and_then(|s| s.strip_suffix(".log"))
            .and_then(|s| u64::from_str_radix(s, 16).ok())
        {
            out.push(g);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Deletes every WAL file in `dir` but generation `keep`'s, and unfinished new generations
/// (`.tmp`): what a crash during compaction can leave behind.
pub fn remove_stale(dir: &Path, keep: u64) -> std::io::Result<()> {
    for g in generations(dir)? {
        if g != keep {
            std::fs::remove_file(path(dir, g))?;
        }
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with("wal-") && n.ends_with(".tmp")) {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

fn encode(buf: &mut Vec<u8>, kind: u8, msg: &impl protobuf::Message) {
    let start = buf.len();
    buf.extend_from_slice(&[0; RECORD_HEADER]);
    buf[start + 8] = kind;
    msg.write_to_vec(buf).expect("raft messages always encode");
    let len = (buf.len() - start - RECORD_HEADER) as u32;
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {
    /// Writes a new generation holding `hs` and `entries`, durably (file and directory), and
    /// opens it for appending. An existing file of that generation is replaced.
    pub fn create(
        dir: &Path,
        generation: u64,
        hs: &HardState,
        entries: &[Entry],
    ) -> std::io::Result<Self> {
        let p = path(dir, generation);
        let tmp = p.with_extension("tmp");
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&generation.to_le_bytes());
        encode(&mut buf, HARD_STATE, hs);
        for e in entries {
            encode(&mut buf, ENTRY, e);
        }
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &p)?;
        sync_dir(dir)?;
        let mut file = OpenOptions::new().write(true).open(&p)?;
        file.seek(SeekFrom::End(0))?;
        Ok(Self {
            file,
            generation,
            buf: Vec::new(),
        })
    }

    /// Opens generation `generation` and replays it: entries at or below `after` (covered by
    /// the snapshot) are skipped. A torn tail is cut off the file before it is appended to.
    pub fn open(dir: &Path, generation: u64, after: u64) -> Result<(Self, Replayed), WalError> {
        let p = path(dir, generation);
        let data = std::fs::read(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                WalError::Corrupt(format!("the log file {} is missing", p.display()))
            }
            _ => WalError::Io(e),
        })?;
        if data.len() < HEADER || &data[..8] != MAGIC {
            return Err(WalError::Corrupt(format!(
                "{} is not a Joule WAL file",
                p.display()
            )));
        }
        let g = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
        if g != generation {
            return Err(WalError::Corrupt(format!(
                "{} says it is generation {g}",
                p.display()
            )));
        }
        let mut r = Replayed {
            hard_state: None,
            entries: Vec::new(),
            torn_bytes: 0,
        };
        let mut off = HEADER;
        while off < data.len() {
            let rest = &data[off..];
            let zeros_after =
                |end: usize| rest.get(end..).is_none_or(|t| t.iter().all(|b| *b == 0));
            let len = rest
                .get(..4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
            let end = len.map(|l| RECORD_HEADER + l);
            let whole = end.filter(|e| *e <= rest.len());
            let Some(end) = whole else {
                // Runs past the end of the file: the last write did not finish.
                r.torn_bytes = rest.len() as u64;
                break;
            };
            let rec = &rest[..end];
            let crc = u32::from_le_bytes(rec[4..8].try_into().expect("4 bytes"));
            if crc32fast::hash(&rec[8..]) != crc {
                if zeros_after(end) {
                    r.torn_bytes = rest.len() as u64;
                    break;
                }
                return Err(WalError::Corrupt(format!(
                    "record at byte {off} of {}: checksum mismatch, with more records after it",
                    p.display()
                )));
            }
            let body = &rec[RECORD_HEADER..];
            let bad = |what: &str, e: protobuf::ProtobufError| {
                WalError::Corrupt(format!("{what} at byte {off} of {}: {e}", p.display()))
            };
            match rec[8] {
                HARD_STATE => {
                    r.hard_state = Some(
                        protobuf::Message::parse_from_bytes(body)
                            .map_err(|e| bad("hard state", e))?,
                    );
                }
                ENTRY => {
                    let e: Entry =
                        protobuf::Message::parse_from_bytes(body).map_err(|e| bad("entry", e))?;
                    if e.index > after {
                        let first = r.entries.first().map_or(e.index, |f| f.index);
                        let next = after + 1 + r.entries.len() as u64;
                        if e.index > next || (r.entries.is_empty() && e.index != after + 1) {
                            return Err(WalError::Corrupt(format!(
                                "log entry {} where {next} was expected",
                                e.index
                            )));
                        }
                        r.entries.truncate((e.index - first) as usize);
                        if let Some(prev) = r.entries.last()
                            && e.term < prev.term
                        {
                            return Err(WalError::Corrupt(format!(
                                "log entry {} has term {} after term {}",
                                e.index, e.term, prev.term
                            )));
                        }
                        r.entries.push(e);
                    }
                }
                k => {
                    return Err(WalError::Corrupt(format!(
                        "record of unknown kind {k} at byte {off} of {}",
                        p.display()
                    )));
                }
            }
            off += end;
        }
        let mut file = OpenOptions::new().write(true).open(&p)?;
        if r.torn_bytes > 0 {
            file.set_len(off as u64)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::Start(off as u64))?;
        Ok((
            Self {
                file,
                generation,
                buf: Vec::new(),
            },
            r,
        ))
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Appends entries and a hard state in one write; `sync` makes them durable before it
    /// returns (one `fdatasync`).
    pub fn append(
        &mut self,
        entries: &[Entry],
        hs: Option<&HardState>,
        sync: bool,
    ) -> std::io::Result<()> {
        self.buf.clear();
        for e in entries {
            encode(&mut self.buf, ENTRY, e);
        }
        if let Some(hs) = hs {
            encode(&mut self.buf, HARD_STATE, hs);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buf)?;
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry {
            index,
            term,
            ..Default::default()
        };
        e.set_data(vec![index as u8; 40].into());
        e
    }

    fn hs(term: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote: 1,
            commit,
            ..Default::default()
        }
    }

    #[test]
    fn replay_applies_overwrites_and_skips_what_the_snapshot_covers() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::create(dir.path(), 3, &hs(1, 0), &[entry(5, 1)]).unwrap();
        w.append(&[entry(6, 1), entry(7, 1)], Some(&hs(1, 6)), true)
            .unwrap();
        w.append(&[entry(7, 2), entry(8, 2)], Some(&hs(2, 7)), false)
            .unwrap();
        drop(w);
        let (_, r) = Wal::open(dir.path(), 3, 5).unwrap();
        let got: Vec<(u64, u64)> = r.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(got, vec![(6, 1), (7, 2), (8, 2)]);
        assert_eq!(r.hard_state, Some(hs(2, 7)));
        assert_eq!(r.torn_bytes, 0);
        assert_eq!(generations(dir.path()).unwrap(), vec![3]);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_appending_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::create(dir.path(), 1, &hs(1, 0), &[]).unwrap();
        w.append(&[entry(1, 1), entry(2, 1)], Some(&hs(1, 1)), true)
            .unwrap();
        w.append(&[entry(3, 1)], None, true).unwrap();
        drop(w);
        let p = path(dir.path(), 1);
        let len = std::fs::metadata(&p).unwrap().len();
        // The crash tore the last write: half of it reached the disk.
        OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len - 20)
            .unwrap();
        let (mut w, r) = Wal::open(dir.path(), 1, 0).unwrap();
        assert_eq!(r.entries.len(), 2);
        assert!(r.torn_bytes > 0);
        w.append(&[entry(3, 2)], None, true).unwrap();
        drop(w);
        // Zeros where the last record's body should be: also torn.
        let mut data = std::fs::read(&p).unwrap();
        let n = data.len();
        data[n - 30..].fill(0);
        std::fs::write(&p, &data).unwrap();
        let (_, r) = Wal::open(dir.path(), 1, 0).unwrap();
        assert_eq!(r.entries.len(), 2, "entry 3 was torn");
        let (_, r) = Wal::open(dir.path(), 1, 0).unwrap();
        assert_eq!(
            (r.entries.len(), r.torn_bytes),
            (2, 0),
            "the cut is durable"
        );
    }

    #[test]
    fn damage_with_records_after_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::create(dir.path(), 1, &hs(1, 0), &[]).unwrap();
        for i in 1..=3 {
            w.append(&[entry(i, 1)], Some(&hs(1, i)), true).unwrap();
        }
        drop(w);
        let p = path(dir.path(), 1);
        let mut data = std::fs::read(&p).unwrap();
        data[HEADER + 40] ^= 0x10;
        std::fs::write(&p, &data).unwrap();
        let Err(WalError::Corrupt(m)) = Wal::open(dir.path(), 1, 0) else {
            panic!("a flipped bit in the middle must be refused");
        };
        assert!(
            m.contains("checksum mismatch, with more records after it"),
            "{m}"
        );
        std::fs::write(&p, b"something else entirely").unwrap();
        assert!(
            matches!(Wal::open(dir.path(), 1, 0), Err(WalError::Corrupt(m)) if m.contains("not a Joule WAL"))
        );
        std::fs::remove_file(&p).unwrap();
        assert!(
            matches!(Wal::open(dir.path(), 1, 0), Err(WalError::Corrupt(m)) if m.contains("missing"))
        );
    }

    #[test]
    fn a_gap_or_a_term_going_back_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::create(dir.path(), 1, &hs(1, 0), &[entry(1, 2)]).unwrap();
        w.append(&[entry(3, 2)], None, true).unwrap();
        drop(w);
        let Err(WalError::Corrupt(m)) = Wal::open(dir.path(), 1, 0) else {
            panic!("gap")
        };
        assert!(m.contains("log entry 3 where 2 was expected"), "{m}");
        let mut w = Wal::create(dir.path(), 1, &hs(1, 0), &[entry(1, 2)]).unwrap();
        w.append(&[entry(2, 1)], None, true).unwrap();
        drop(w);
        let Err(WalError::Corrupt(m)) = Wal::open(dir.path(), 1, 0) else {
            panic!("term")
        };
        assert!(m.contains("log entry 2 has term 1 after term 2"), "{m}");
    }
}
