//! What more than one bench binary needs: the clock, measured, and medians. Included by
//! `mod common;`.

use std::time::Instant;

/// Cycles per nanosecond: 100 million dependent one-cycle register adds, timed (register
/// operands: some cores fold chains of immediate adds at rename).
#[cfg(target_arch = "x86_64")]
pub fn clock_ghz() -> f64 {
    let (mut x, y) = (0u64, std::hint::black_box(1u64));
    let t = Instant::now();
    for _ in 0..100_000 {
        // SAFETY: register arithmetic only.
        unsafe {
            std::arch::asm!(".rept 1000", "add {x}, {y}", ".endr", x = inout(reg) x, y = in(reg) y, options(nomem, nostack));
        }
    }
    std::hint::black_box(x);
    1e8 / t.elapsed().as_nanos() as f64
}

#[cfg(not(target_arch = "x86_64"))]
pub fn clock_ghz() -> f64 {
    f64::NAN
}

/// The median (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
