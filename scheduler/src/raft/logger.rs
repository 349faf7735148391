//! raft-rs logs through `slog`; this drain hands its records to `tracing` (target `raft`), with
//! the replica id, so one subscriber and one `RUST_LOG` govern everything.

use std::fmt::Write as _;

struct Fields(String);

impl slog::Serializer for Fields {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

struct ToTracing;

impl slog::Drain for ToTracing {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, r: &slog::Record<'_>, kv: &slog::OwnedKVList) -> Result<(), slog::Never> {
        use slog::KV as _;
        let mut f = Fields(String::new());
        let _ = r.kv().serialize(r, &mut f);
        let _ = kv.serialize(r, &mut f);
        let (msg, fields) = (r.msg(), f.0);
        match r.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{msg}{fields}")
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}{fields}"),
            slog::Level::Info => tracing::info!(target: "raft", "{msg}{fields}"),
            slog::Level::Debug => tracing::debug!(target: "raft", "{msg}{fields}"),
            slog::Level::Trace => tracing::trace!(target: "raft", "{msg}{fields}"),
        }
        Ok(())
    }
}

/// The logger raft-rs gets for replica `id`.
pub fn logger(id: u64) -> slog::Logger {
    slog::Logger::root(ToTracing, slog::o!("replica" => id))
}
