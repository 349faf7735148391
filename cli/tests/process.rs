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
