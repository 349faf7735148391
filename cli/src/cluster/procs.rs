//! The local cluster's processes: each daemon started detached (its own session, stdin
//! closed, stdout and stderr to `NAME.log`), its pid and start time in `NAME.pid`, found again
//! by them (checked against `/proc/PID/stat` and `cmdline`, so a reused pid is not taken for
//! ours), and stopped
//! by SIGTERM (workers drain) and, past a deadline, SIGKILL.
//!
//! It never signals a process it cannot prove is the one it started, and never passes a token
//! on a command line (they go in the environment, which other users cannot read).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// A daemon binary: in `$JOULE_BIN_DIR`, else next to `joulectl` (where cargo builds them),
/// else on `PATH`.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("JOULE_BIN_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(d);
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{name} not found next to joulectl, in JOULE_BIN_DIR or on PATH: build it with \
                 `cargo build --release -p {name}` (or set JOULE_BIN_DIR)"
            )
        })
}

/// What is known about one process of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alive {
    /// Its pid file names a live process running our binary.
    Running(u32),
    /// A pid file whose process is gone (or is something else now).
    Stale(u32),
    /// No pid file.
    Stopped,
}

pub fn pid_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pid"))
}

pub fn log_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// The fields of `/proc/PID/stat` after the command name: state first, start time 20th.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    stat.rfind(')')
        .map(|i| {
            stat[i + 1..]
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// When `pid` started, in clock ticks since boot (0: no such process).
pub fn start_time(pid: u32) -> u64 {
    stat_fields(pid)
        .get(19)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Whether `pid` is a live (not zombie) process whose command line starts with `binary`'s
/// file name.
pub fn is_ours(pid: u32, binary: &str) -> bool {
    let fields = stat_fields(pid);
    if matches!(
        fields.first().map(String::as_str),
        None | Some("Z") | Some("X")
    ) {
        return false;
    }
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv0 = cmd.split(|b| *b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    Path::new(argv0.as_ref())
        .file_name()
        .and_then(|n| n.to_str())
        == Some(binary)
}

/// The state of process `name` (running `binary`) in `dir`: its pid file holds the pid and
/// the process's start time, so a pid the kernel gave to another process is not ours.
pub fn alive(dir: &Path, name: &str, binary: &str) -> Alive {
    let Ok(text) = std::fs::read_to_string(pid_file(dir, name)) else {
        return Alive::Stopped;
    };
    let mut it = text.split_whitespace();
    let pid = it.next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    let started = it.next().and_then(|t| t.parse::<u64>().ok());
    if pid != 0 && is_ours(pid, binary) && started.is_none_or(|t| t == start_time(pid)) {
        Alive::Running(pid)
    } else {
        Alive::Stale(pid)
    }
}

/// Starts `bin args` detached with only `env` from the `JOULE_*` family (the caller's own
/// `JOULE_*` settings are meant for joulectl, not for the daemons), logging to `NAME.log`,
/// and writes `NAME.pid`.
pub fn spawn(
    dir: &Path,
    name: &str,
    bin: &Path,
    args: &[String],
    env: &[(&str, &str)],
) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt as _;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file(dir, name))
        .with_context(|| format!("cannot open {}", log_file(dir, name).display()))?;
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid(2) is async-signal-safe; the child only calls it before exec. Its own
    // session: no terminal's Ctrl-C or hang-up reaches it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("JOULE_")) {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let pid = child.id();
    // Not waited for: the process outlives joulectl, and init reaps it.
    drop(child);
    let tmp = dir.join(format!(".{name}.pid.new"));
    let written = std::fs::write(&tmp, format!("{pid} {}\n", start_time(pid)))
        .and_then(|()| std::fs::rename(&tmp, pid_file(dir, name)));
    if let Err(e) = written {
        // Without its pid file nothing could stop it later.
        signal(pid, libc::SIGKILL);
        anyhow::bail!("cannot write {}: {e}", pid_file(dir, name).display());
    }
    Ok(pid)
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Stops the processes (name, pid, binary) in order: SIGTERM to all, then waits up to
/// `grace` for each to exit, then SIGKILL. Returns the names that needed SIGKILL.
pub fn stop(dir: &Path, procs: &[(String, u32, &str)], grace: Duration) -> Vec<String> {
    for (_, pid, bin) in procs {
        if is_ours(*pid, bin) {
            signal(*pid, libc::SIGTERM);
        }
    }
    let until = Instant::now() + grace;
    let mut killed = Vec::new();
    for (name, pid, bin) in procs {
        while is_ours(*pid, bin) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
        if is_ours(*pid, bin) {
            signal(*pid, libc::SIGKILL);
            killed.push(name.clone());
            let hard = Instant::now() + Duration::from_secs(5);
            while is_ours(*pid, bin) && Instant::now() < hard {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if !is_ours(*pid, bin) {
            let _ = std::fs::remove_file(pid_file(dir, name));
        }
    }
    killed
}

/// The last `n` lines of a process's log, for an error message.
pub fn log_tail(dir: &Path, name: &str, n: usize) -> String {
    let text = std::fs::read_to_string(log_file(dir, name)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_stops_and_forgets_a_process_by_its_pid() {
        let d = tempfile::tempdir().unwrap();
        let sleep = binary("sleep").unwrap();
        let pid = spawn(d.path(), "s", &sleep, &["30".into()], &[]).unwrap();
        assert_eq!(alive(d.path(), "s", "sleep"), Alive::Running(pid));
        // Another binary's name under the same pid is not ours.
        assert_eq!(alive(d.path(), "s", "joule-worker"), Alive::Stale(pid));
        let killed = stop(
            d.path(),
            &[("s".into(), pid, "sleep")],
            Duration::from_secs(5),
        );
        assert!(killed.is_empty(), "sleep exits on SIGTERM");
        assert!(!is_ours(pid, "sleep"));
        assert_eq!(alive(d.path(), "s", "sleep"), Alive::Stopped);
        std::fs::write(pid_file(d.path(), "gone"), format!("{pid}\n")).unwrap();
        assert_eq!(alive(d.path(), "gone", "sleep"), Alive::Stale(pid));
        // A live process of the same binary that started at another time is not ours.
        let other = spawn(d.path(), "o", &sleep, &["30".into()], &[]).unwrap();
        assert_eq!(alive(d.path(), "o", "sleep"), Alive::Running(other));
        let real = start_time(other);
        std::fs::write(pid_file(d.path(), "o"), format!("{other} {}\n", real + 1)).unwrap();
        assert_eq!(alive(d.path(), "o", "sleep"), Alive::Stale(other));
        stop(
            d.path(),
            &[("o".into(), other, "sleep")],
            Duration::from_secs(5),
        );
    }

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let e = binary("joule-nosuch").unwrap_err().to_string();
        assert!(e.contains("cargo build --release -p joule-nosuch"), "{e}");
    }
}
