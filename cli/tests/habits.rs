//! kubectl's habits as a script meets them in the real `joulectl` binary, without a cluster:
//! exit codes by cause, one-line errors, "did you mean", `explain`, `completion`, and a closed
//! pipe (`joulectl ... | head -1`) that ends it quietly with 0.

use std::process::{Command, Output, Stdio};

fn command(args: &[&str], home: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_joulectl"));
    c.args(args)
        .env("JOULE_HOME", home)
        .env_remove("JOULE_SERVER")
        .env_remove("JOULE_TOKEN")
        .env_remove("JOULE_CONTEXT");
    c
}

fn joulectl(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    command(args, home.path()).output().expect("run joulectl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// No server listens on port 1.
const NOWHERE: [&str; 4] = ["--server", "127.0.0.1:1", "--token", "t"];

fn with_nowhere(args: &[&str]) -> Vec<String> {
    NOWHERE.iter().chain(args).map(|s| s.to_string()).collect()
}

fn run(args: &[&str]) -> Output {
    let args = with_nowhere(args);
    joulectl(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn a_mistyped_kind_is_a_usage_error_that_suggests_the_closest() {
    let o = run(&["get", "nods"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "error: unknown resource type \"nods\"; did you mean \"nodes\"?\n"
    );
    let o = run(&["explain", "tenat"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("did you mean \"tenants\"?"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_flags_are_usage_errors() {
    // clap's own.
    let o = run(&["get", "nodes", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = run(&["get", "nodes", "-l", "a=b=c"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("a=b=c"), "{}", stderr(&o));
    // Ours: a selector on a kind without labels, found before anything is sent.
    let o = run(&["get", "deployments", "-l", "gpu=h100"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.starts_with("error: -l gpu=h100: only nodes") && e.lines().count() == 1,
        "{e}"
    );
    assert!(!e.contains("127.0.0.1:1"), "it tried the server: {e}");
}

#[test]
fn an_unreachable_server_exits_4_with_one_line_that_says_what_to_do() {
    let o = run(&["get", "nodes"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("error: ") && e.contains("127.0.0.1:1"), "{e}");
    assert!(e.contains("--server"), "{e}");
    assert!(!e.contains("panicked") && !e.contains("backtrace"), "{e}");
}

#[test]
fn explain_and_completion_need_no_cluster() {
    let o = joulectl(&["explain", "tenant.limits"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("requestsPerMinute"), "{}", stdout(&o));
    let o = joulectl(&["explain", "deployment", "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["kind"], "Deployment");
    let o = joulectl(&["completion", "bash"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = stdout(&o);
    assert!(
        script.contains("joulectl") && script.contains("describe"),
        "{script}"
    );
    let o = joulectl(&["--help"]);
    assert!(stdout(&o).contains("Exit codes:") && stdout(&o).contains("5  unauthorized"));
}

#[test]
fn a_reader_that_leaves_early_is_no_error() {
    let home = tempfile::tempdir().unwrap();
    let mut child = command(&["completion", "bash"], home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run joulectl");
    // Close our end before it writes (as `head -1` does after one line).
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "it should exit quietly");
}
