//! Progress bars on stderr (indicatif) for long work: downloads, hashing, waiting for a
//! cluster to serve. Hidden when stderr is not a terminal, so logs and pipes get no control
//! characters; the work itself never depends on them.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A bar over `len` bytes (a spinner when the length is unknown).
pub fn bytes(len: u64, msg: String) -> ProgressBar {
    let b = if len > 0 {
        ProgressBar::with_draw_target(Some(len), target()).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        )
    } else {
        spinner()
    };
    b.set_message(msg);
    b
}

/// A spinner with a message, for work whose length is not known.
pub fn spinner() -> ProgressBar {
    let b = ProgressBar::with_draw_target(None, target()).with_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"),
    );
    b.enable_steady_tick(std::time::Duration::from_millis(120));
    b
}

/// A bar over `len` steps.
pub fn steps(len: u64, msg: String) -> ProgressBar {
    let b = ProgressBar::with_draw_target(Some(len), target()).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    b.set_message(msg);
    b
}
