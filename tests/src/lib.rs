//! Joule's test kit: real `joule-scheduler`, `joule-worker` and `joule-gateway` processes on
//! 127.0.0.1 ports ([`cluster`], [`workers`], [`gateway`]), killed with SIGKILL where a test needs it, and a checker of
//! linearizable histories ([`linearizable`]). The end-to-end tests in `tests/` use it.
//!
//! It never starts a component in the test's own process (a kill -9 must kill it) and never
//! talks to anything but 127.0.0.1. It depends on no daemon crate: the binaries are found next
//! to the test executable ([`bin`]), where `cargo test --workspace` builds them.

pub mod cluster;
pub mod gateway;
pub mod http;
pub mod linearizable;
pub mod python;
pub mod reflection;
pub mod tenants;
pub mod tls;
pub mod workers;

use std::path::PathBuf;

/// The path of a workspace binary (`joule-scheduler`, `joule-worker`, `joulectl`): `$JOULE_BIN_DIR`
/// if set, else the target directory the test executable runs from.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("JOULE_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("the test executable's path");
            // target/<profile>/deps/<test> → target/<profile>
            let deps = exe.parent().expect("the test executable's directory");
            deps.parent().unwrap_or(deps).to_path_buf()
        }
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace` (or `cargo test --workspace`) first",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}

/// Opens `log` for appending (a restarted process adds to its predecessor's log).
pub fn append_log(log: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()))
}

/// SIGKILLs `child` (if running) and reaps it.
pub fn kill9(child: &mut Option<std::process::Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The last 40 lines of a log, for a failing test's message.
pub fn log_tail(log: &std::path::Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
