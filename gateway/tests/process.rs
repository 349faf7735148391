//! The `joule-gateway` binary as an operator meets it: bad flags and a taken port stop it with
//! a message naming what to fix, and the join token never reaches its output. (The serving
//! tests, against a real cluster, are in `tests/tests/gateway.rs`; this file also makes
//! `cargo test --workspace` build the binary they start.)

use std::net::TcpListener;
use std::process::{Command, Output};

fn gateway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_joule-gateway"))
        .args(args)
        .env_remove("JOULE_JOIN_TOKEN")
        .env_remove("JOULE_SCHEDULER")
        .output()
        .expect("run joule-gateway")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_missing_join_token_is_a_usage_error_naming_the_flag_and_variable() {
    let o = gateway(&["--scheduler", "127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("--join-token") && e.contains("JOULE_JOIN_TOKEN"),
        "{e}"
    );
}

#[test]
fn bad_flags_name_the_flag_and_the_token_is_never_printed() {
    let secret = "tok-3f9a1c-do-not-print";
    for (args, names) in [
        (vec!["--http-listen", "localhost"], "--http-listen"),
        (vec!["--routing", "cheapest"], "--routing"),
        (vec!["--max-attempts", "0"], "--max-attempts"),
        (vec!["--scheduler", ""], "--scheduler"),
    ] {
        let mut all = vec!["--scheduler", "127.0.0.1:1", "--join-token", secret];
        all.extend(args.iter().copied());
        let o = gateway(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(names), "{args:?}: {e}");
        assert!(!e.contains(secret), "{args:?} printed the token: {e}");
        assert!(!String::from_utf8_lossy(&o.stdout).contains(secret));
    }
}

#[test]
fn a_port_already_taken_stops_it_with_the_address_and_flag() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = gateway(&[
        "--scheduler",
        "127.0.0.1:1",
        "--join-token",
        "t",
        "--http-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        &addr,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains(&addr) && e.contains("--grpc-listen"), "{e}");
}
