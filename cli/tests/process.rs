//! The `joulectl` binary as a user meets it without a cluster: bad files and flags are refused
//! before anything is sent, naming the file, line or flag, and an unreachable server is an error
//! naming it. (The cluster tests in `tests/tests/` drive it against real schedulers; this file
//! also makes `cargo test --workspace` build the binary they run.)

use std::io::Write as _;
use std::process::{Command, Output};

fn joulectl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_joulectl"))
        .args(args)
        .env_remove("JOULE_SERVER")
        .env_remove("JOULE_TOKEN")
        .output()
        .expect("run joulectl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_bad_tenant_file_is_refused_naming_the_field_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.yaml");
    std::fs::File::create(&f)
        .unwrap()
        .write_all(
            b"apiVersion: joule/v1\nkind: Tenant\nmetadata: {name: acme}\nspec:\n  limits: {requestsPerMinute: -5}\n",
        )
        .unwrap();
    // No server listens on port 1: a refusal before connecting is the file's.
    let o = joulectl(&[
        "--server",
        "127.0.0.1:1",
        "--token",
        "t",
        "apply",
        "-f",
        f.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("requestsPerMinute"), "{e}");
    assert!(!e.contains("127.0.0.1:1"), "it tried the server first: {e}");
}

#[test]
fn bad_flags_name_the_flag_and_an_unreachable_server_is_named() {
    let o = joulectl(&[
        "--server",
        "127.0.0.1:1",
        "--token",
        "t",
        "bill",
        "--tenant",
        "acme",
        "--month",
        "2026-13",
        "--price-per-mtok",
        "1",
        "--price-per-kwh",
        "0.3",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--month"), "{}", stderr(&o));
    let o = joulectl(&[
        "--server",
        "127.0.0.1:1",
        "--token",
        "t",
        "create",
        "apikey",
        "--tenant",
        "acme",
        "--expires",
        "soon",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--expires"), "{}", stderr(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("jk-"));
    let o = joulectl(&["--server", "127.0.0.1:1", "--token", "t", "get", "tenants"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("127.0.0.1:1"), "{}", stderr(&o));
}

/// `joulectl bench ARGS` with an empty `JOULE_HOME` and none of bench's variables set.
fn bench(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_joulectl"))
        .arg("bench")
        .args(args)
        .env("JOULE_HOME", home.path())
        .env_remove("JOULE_CONTEXT")
        .env_remove("JOULE_GATEWAY_URL")
        .env_remove("OPENAI_API_KEY")
        .env_remove("COMPARE_API_KEY")
        .output()
        .expect("run joulectl bench")
}

#[test]
fn bench_refuses_bad_flags_in_one_line_naming_them_with_exit_code_2() {
    let nowhere = "http://127.0.0.1:1/v1";
    let refused = |args: &[&str], names: &[&str]| {
        let o = bench(args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{args:?}: {e}");
        for n in names {
            assert!(e.contains(n), "{args:?} does not name {n}: {e}");
        }
        assert!(o.stdout.is_empty(), "{args:?} printed a report");
    };
    refused(
        &["--url", nowhere, "--rate", "5", "--concurrency", "4"],
        &["--rate", "--concurrency"],
    );
    refused(&["--url", nowhere, "--requests", "0"], &["--requests"]);
    refused(&["--url", "127.0.0.1:8080"], &["--url"]);
    refused(&[], &["pass --url", "joulectl cluster up"]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("w.jsonl");
    std::fs::write(
        &f,
        "{\"prompt\": \"hi\", \"max_tokens\": 4}\n{\"prompt\": 5}\n",
    )
    .unwrap();
    refused(
        &["--url", nowhere, "--workload", f.to_str().unwrap()],
        &["w.jsonl:2", "prompt"],
    );
    refused(
        &["--url", nowhere, "--workload", "/nonexistent/w.jsonl"],
        &["--workload"],
    );
}

#[test]
fn bench_against_no_server_reports_each_failure_by_kind_and_exits_non_zero() {
    let o = bench(&[
        "--url",
        "http://127.0.0.1:1/v1",
        "--model",
        "m",
        "--requests",
        "3",
        "--concurrency",
        "2",
        "--timeout",
        "5s",
        "-o",
        "json",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("every request"), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    let t = &v["target"];
    assert_eq!(t["requests"]["ok"], 0, "{t}");
    assert_eq!(t["requests"]["failed"], 3, "{t}");
    assert_eq!(t["errors"][0]["kind"], "connect", "{t}");
    assert_eq!(t["errors"][0]["count"], 3, "{t}");
    assert!(t["ttft_ms"].is_null(), "{t}");
    assert_eq!(t["energy"]["source"], "unknown", "{t}");
    assert!(v["compare"].is_null() && v["ratios"].is_null(), "{v}");
}
