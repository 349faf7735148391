//! `--device`: a GPU that cannot be used is refused at start, with the reason, before anything
//! loads.

use std::process::Command;

#[test]
fn a_gpu_that_cannot_be_used_is_refused_at_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let gpu_machine = std::path::Path::new("/dev/nvidiactl").exists();
    // Here: no driver (or no CUDA in this build). On a GPU machine: an ordinal it lacks.
    let device = if gpu_machine { "cuda:99" } else { "cuda:0" };
    let out = Command::new(env!("CARGO_BIN_EXE_joule-worker"))
        .args(["--device", device])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--power-sensor", "estimate", "--calibrate", "false"])
        .arg("--cache-dir")
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let want = if gpu_machine {
        "--device cuda:99: this machine has"
    } else if cfg!(feature = "cuda") {
        "--device cuda:0: no NVIDIA driver"
    } else {
        "--device cuda:0: built without CUDA"
    };
    assert!(log.contains(want), "wanted {want:?} in: {log}");
}
