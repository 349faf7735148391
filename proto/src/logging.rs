//! How every daemon logs (feature `server`): one `tracing` subscriber writing to stderr, as
//! plain text (`--log-format text`, with colour only when stderr is a terminal) or one JSON
//! object per line (`--log-format json`, for log shippers), filtered by `RUST_LOG` or the
//! daemon's default. A daemon that serves its own log lines (the worker's `Logs`) also keeps
//! the most recent ones in memory ([`RecentLines`]), exactly as written but without colour
//! codes.
//!
//! This module owns the process's log sink and nothing else: it never decides what is logged,
//! and keeps no more than [`KEEP_LINES`] lines or [`KEEP_BYTES`] bytes.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;

/// The most lines a process keeps.
pub const KEEP_LINES: usize = 2000;
/// The most bytes of lines a process keeps.
pub const KEEP_BYTES: usize = 1 << 20;
/// A longer line is cut here (at a character boundary).
pub const MAX_LINE_BYTES: usize = 8 << 10;

/// `--log-format`: how lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, never coloured.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("{other:?} is not a log format: text or json")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// The lines the process keeps, when [`init`] was asked to keep them. One per process, as the
/// subscriber it belongs to is.
static RECENT: OnceLock<RecentLines> = OnceLock::new();

/// Installs the process's subscriber: `RUST_LOG` if it parses, else `default_filter`, else
/// `info`; lines in `format` on stderr; with `keep`, the recent lines in memory too (see
/// [`recent`]). Fails when a subscriber is already installed.
pub fn init(default_filter: &str, format: LogFormat, keep: bool) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ring = keep.then(|| {
        RECENT
            .get_or_init(|| RecentLines::new(KEEP_LINES, KEEP_BYTES))
            .clone()
    });
    let writer = Tee { ring, stderr: true };
    let ansi = std::io::stderr().is_terminal();
    tracing::subscriber::set_global_default(subscriber(filter, format, ansi, writer))
        .map_err(|e| format!("cannot install the log subscriber: {e}"))
}

/// The lines this process keeps; `None` unless [`init`] was asked to keep them.
pub fn recent() -> Option<RecentLines> {
    RECENT.get().cloned()
}

fn subscriber(
    filter: EnvFilter,
    format: LogFormat,
    ansi: bool,
    writer: Tee,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    let base = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer();
    match format {
        LogFormat::Text => Box::new(base.with(layer.with_ansi(ansi).with_writer(writer))),
        LogFormat::Json => Box::new(base.with(layer.json().with_writer(writer))),
    }
}

/// A bounded ring of formatted log lines, oldest first, each numbered in the order written.
/// Cheap to clone (one shared ring).
#[derive(Debug, Clone)]
pub struct RecentLines {
    inner: Arc<Mutex<Ring>>,
}

#[derive(Debug)]
struct Ring {
    lines: VecDeque<String>,
    bytes: usize,
    /// The number the next line gets; the first kept line is `next - lines.len()`.
    next: u64,
    max_lines: usize,
    max_bytes: usize,
}

/// Lines read from a [`RecentLines`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines {
    pub lines: Vec<String>,
    /// Lines asked for that the ring no longer holds (a reader that fell behind).
    pub missed: u64,
    /// The number of the next line to be written: where the next read starts.
    pub next: u64,
}

impl RecentLines {
    /// A ring holding at most `max_lines` lines and `max_bytes` bytes of them.
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Ring {
                lines: VecDeque::new(),
                bytes: 0,
                next: 0,
                max_lines,
                max_bytes,
            })),
        }
    }

    /// The ring; a panic elsewhere while it was held leaves it usable (every change is whole).
    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one line (without its newline), cut at [`MAX_LINE_BYTES`]; the oldest lines go
    /// while the ring holds too many lines or bytes.
    pub fn push(&self, line: &str) {
        let mut end = line.len().min(MAX_LINE_BYTES);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let line = line[..end].to_string();
        let mut r = self.lock();
        r.bytes += line.len();
        r.lines.push_back(line);
        r.next += 1;
        while r.lines.len() > r.max_lines || (r.bytes > r.max_bytes && r.lines.len() > 1) {
            match r.lines.pop_front() {
                Some(old) => r.bytes -= old.len(),
                None => break,
            }
        }
    }

    /// The last `n` lines (every line kept when `None`).
    pub fn tail(&self, n: Option<usize>) -> Lines {
        let r = self.lock();
        let skip = n.map_or(0, |n| r.lines.len().saturating_sub(n));
        Lines {
            lines: r.lines.iter().skip(skip).cloned().collect(),
            missed: 0,
            next: r.next,
        }
    }

    /// The lines numbered `from` on (a previous read's `next`).
    pub fn since(&self, from: u64) -> Lines {
        let r = self.lock();
        let first = r.next - r.lines.len() as u64;
        let start = from.saturating_sub(first).min(r.lines.len() as u64);
        Lines {
            lines: r.lines.iter().skip(start as usize).cloned().collect(),
            missed: first.saturating_sub(from),
            next: r.next,
        }
    }
}

/// Where formatted events go: stderr, and the ring (if any) line by line without colour codes.
#[derive(Debug, Clone)]
struct Tee {
    ring: Option<RecentLines>,
    stderr: bool,
}

impl<'a> MakeWriter<'a> for Tee {
    type Writer = TeeWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        TeeWriter {
            tee: self,
            buf: Vec::new(),
        }
    }
}

/// One event's bytes, written out whole when dropped (the formatter writes an event at once).
struct TeeWriter<'a> {
    tee: &'a Tee,
    buf: Vec<u8>,
}

impl std::io::Write for TeeWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for TeeWriter<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if self.tee.stderr {
            // Nowhere to report a failed write of the log itself.
            let _ = std::io::stderr().lock().write_all(&self.buf);
        }
        if let Some(ring) = &self.tee.ring {
            let text = String::from_utf8_lossy(&self.buf);
            for line in text.lines().filter(|l| !l.is_empty()) {
                ring.push(&strip_ansi(line));
            }
        }
    }
}

/// `s` without ANSI escape sequences (colours, `ESC [ ... letter`).
pub fn strip_ansi(s: &str) -> Cow<'_, str> {
    if !s.contains('\x1b') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&c) {
                    break;
                }
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_within_its_bounds() {
        let r = RecentLines::new(3, 1 << 20);
        for i in 0..5 {
            r.push(&format!("line {i}"));
        }
        let all = r.tail(None);
        assert_eq!(all.lines, ["line 2", "line 3", "line 4"]);
        assert_eq!(all.next, 5);
        assert_eq!(r.tail(Some(1)).lines, ["line 4"]);
        assert!(r.tail(Some(0)).lines.is_empty());
        assert_eq!(r.tail(Some(10)).lines.len(), 3);

        let bytes = RecentLines::new(100, 10);
        for l in ["aaaa", "bbbb", "cccc"] {
            bytes.push(l);
        }
        assert_eq!(bytes.tail(None).lines, ["bbbb", "cccc"], "at most 10 bytes");
        let long = "é".repeat(MAX_LINE_BYTES);
        bytes.push(&long);
        let kept = bytes.tail(Some(1)).lines.remove(0);
        assert!(kept.len() <= MAX_LINE_BYTES && kept.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_follower_reads_what_came_after_and_learns_what_it_missed() {
        let r = RecentLines::new(3, 1 << 20);
        r.push("a");
        let start = r.tail(None);
        assert_eq!((start.lines.len(), start.next), (1, 1));
        assert!(r.since(start.next).lines.is_empty());
        r.push("b");
        r.push("c");
        let more = r.since(start.next);
        assert_eq!(
            (more.lines, more.missed, more.next),
            (vec!["b".into(), "c".into()], 0, 3)
        );
        for l in ["d", "e", "f", "g"] {
            r.push(l);
        }
        let late = r.since(3);
        assert_eq!(late.lines, ["e", "f", "g"]);
        assert_eq!(late.missed, 1, "d was dropped before it was read");
    }

    #[test]
    fn colour_codes_are_stripped() {
        assert_eq!(
            strip_ansi("\x1b[2m2024\x1b[0m \x1b[32m INFO\x1b[0m hi"),
            "2024  INFO hi"
        );
        assert!(matches!(strip_ansi("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn log_formats_parse_by_name() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!(
            "xml"
                .parse::<LogFormat>()
                .unwrap_err()
                .contains("text or json")
        );
        assert_eq!(LogFormat::Json.to_string(), "json");
    }

    fn logged(format: LogFormat, ansi: bool) -> Vec<String> {
        let ring = RecentLines::new(10, 1 << 20);
        let tee = Tee {
            ring: Some(ring.clone()),
            stderr: false,
        };
        let s = subscriber(EnvFilter::new("info"), format, ansi, tee);
        tracing::subscriber::with_default(s, || {
            tracing::info!(port = 50061, "worker listening");
            tracing::debug!("filtered out");
        });
        ring.tail(None).lines
    }

    #[test]
    fn kept_lines_are_the_written_format_without_colour() {
        let text = logged(LogFormat::Text, true);
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(!text[0].contains('\x1b'), "{text:?}");
        assert!(
            text[0].contains("INFO") && text[0].contains("worker listening port=50061"),
            "{text:?}"
        );
        let json = logged(LogFormat::Json, false);
        assert_eq!(json.len(), 1, "{json:?}");
        assert!(
            json[0].starts_with('{') && json[0].contains(r#""message":"worker listening""#),
            "{json:?}"
        );
    }
}
