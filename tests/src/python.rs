//! The Python the end-to-end tests drive the official `openai` client with, and running the
//! scripts under `tests/python/` against a live gateway.

use std::path::{Path, PathBuf};

/// A Python with the official `openai` package: the system one if it has it, else a venv
/// under the target directory (created once, from PyPI).
pub fn python_with_openai() -> PathBuf {
    let has = |py: &Path| {
        std::process::Command::new(py)
            .args(["-c", "import openai"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let system = PathBuf::from("python3");
    if has(&system) {
        return system;
    }
    let venv = crate::bin("joule-gateway")
        .parent()
        .expect("the binaries' directory")
        .join("py-openai");
    let py = venv.join("bin/python");
    if !has(&py) {
        let reqs = concat!(env!("CARGO_MANIFEST_DIR"), "/python/requirements.txt");
        let ok = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new(&py)
                .args(["-m", "pip", "install", "-q", "-r", reqs])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot set up a Python with the openai package in {} (needs python3 -m venv and PyPI)",
            venv.display()
        );
    }
    py
}

/// The path of `tests/python/NAME`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// Runs `py script args...` off the async runtime; returns whether it exited 0, and its
/// stdout then stderr.
pub async fn run(py: &Path, script: &Path, args: Vec<String>) -> (bool, String) {
    let (py, script) = (py.to_path_buf(), script.to_path_buf());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&py)
            .arg(&script)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", py.display(), script.display()))
    })
    .await
    .expect("the script's thread");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
