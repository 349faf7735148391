//! Kernels over matrices tiled by [`super::pack`]: one tile (16 rows) against every activation
//! row, a few rows per pass, at every SIMD level, plus the portable definition they are tested
//! against bit for bit.
//!
//! Each lane (one row of the tile) computes, block by block, the exact integer dot product of
//! its weights with the 16-bit activations (`255 * hi + lo`, offsets taken off exactly), then
//! `acc = fma(float(x), scale * d_act, acc)`, plus `acc = fma(min, s_act, acc)` where the format
//! has a minimum. The same IEEE operations run in the same order whatever the level, the lane,
//! or the number of activation rows, so an output never depends on the batch around it nor on
//! the SIMD level: [`portable`] is that definition in plain Rust.
//!
//! This module never reads stored (untiled) layouts; the row-at-a-time kernels do.

#[cfg(target_arch = "x86_64")]
mod isa;
#[cfg(target_arch = "x86_64")]
mod simd;

#[cfg(target_arch = "x86_64")]
pub(super) use simd::{avx2, avx512, vnni};

use super::pack::{TILE, layout::*, tile_block_bytes};
use super::{ActRow, QK, TileFn};
use crate::tensor::DType;

pub(crate) const Q4_0: u8 = 0;
pub(crate) const Q4_1: u8 = 1;
pub(crate) const Q8_0: u8 = 2;
pub(crate) const Q4K: u8 = 3;
pub(crate) const Q6K: u8 = 4;

pub(crate) const fn dtype_of(t: u8) -> DType {
    match t {
        Q4_0 => DType::Q4_0,
        Q4_1 => DType::Q4_1,
        Q8_0 => DType::Q8_0,
        Q4K => DType::Q4K,
        _ => DType::Q6K,
    }
}

/// Activation blocks (of 32) per stored block of `t`.
pub(crate) const fn subs(t: u8) -> usize {
    dtype_of(t).block_len() / QK
}

/// Checks what every tiled kernel relies on; returns the stored blocks per row.
pub(crate) fn check(t: u8, tile: &[u8], lanes: usize, acts: &[ActRow<'_>]) -> usize {
    let nb = acts.first().map_or(0, |a| a.d.len());
    assert!((1..=TILE).contains(&lanes));
    assert_eq!(nb % subs(t), 0);
    let nk = nb / subs(t);
    assert!(tile.len() >= nk * tile_block_bytes(dtype_of(t)));
    for a in acts {
        assert!(a.d.len() == nb && a.s.len() >= nb && a.h16.len() >= 2 * nb);
        assert!(a.hi.len() >= nb * QK && a.lo.len() >= nb * QK);
    }
    nk
}

/// The portable tiled kernel for `dtype` (the definition; slow where `f32::mul_add` is a
/// library call).
pub fn portable(dtype: DType) -> Option<TileFn> {
    Some(match dtype {
        DType::Q4_0 => portable_rows::<Q4_0>,
        DType::Q4_1 => portable_rows::<Q4_1>,
        DType::Q8_0 => portable_rows::<Q8_0>,
        DType::Q4K => portable_rows::<Q4K>,
        DType::Q6K => portable_rows::<Q6K>,
        _ => return None,
    })
}

/// Weight `k` (0..32) of lane `j` in the nibble group at `g`.
fn nibble(g: &[u8], j: usize, k: usize) -> i32 {
    let (c, i) = ((k % 16) / 4, k % 4);
    let byte = g[64 * c + 4 * j + i];
    i32::from(if k < 16 { byte & 0xF } else { byte >> 4 })
}

fn f16(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// `sum(w(k) * q(k))` over the 32 (or fewer) weights of one activation block.
fn idot(w: impl Fn(usize) -> i32, a: &ActRow<'_>, at: usize, ks: std::ops::Range<usize>) -> i32 {
    ks.map(|k| w(k) * a.q(at + k)).sum()
}

/// See [`TileFn`].
///
/// # Safety
/// As [`TileFn`].
unsafe fn portable_rows<const T: u8>(
    tile: &[u8],
    lanes: usize,
    acts: &[ActRow<'_>],
    out: *mut f32,
    stride: usize,
) {
    let nk = check(T, tile, lanes, acts);
    let tb = tile_block_bytes(dtype_of(T));
    for (t, a) in acts.iter().enumerate() {
        for j in 0..lanes {
            let mut acc = 0f32;
            for k in 0..nk {
                let blk = &tile[k * tb..(k + 1) * tb];
                let d = f16(blk, 2 * j);
                let b0 = k * subs(T);
                match T {
                    Q4_0 | Q4_1 => {
                        let g = &blk[if T == Q4_0 { Q4_0_Q } else { Q4_1_Q }..];
                        let mut x = idot(|k| nibble(g, j, k), a, QK * b0, 0..QK);
                        if T == Q4_0 {
                            x -= 8 * (a.h16[2 * b0] + a.h16[2 * b0 + 1]);
                        }
                        acc = (x as f32).mul_add(d * a.d[b0], acc);
                        if T == Q4_1 {
                            acc = f16(blk, Q4_1_M + 2 * j).mul_add(a.s[b0], acc);
                        }
                    }
                    Q8_0 => {
                        let w =
                            |k: usize| i32::from(blk[Q8_0_Q + 64 * (k / 4) + 4 * j + k % 4] as i8);
                        let x = idot(w, a, QK * b0, 0..QK);
                        acc = (x as f32).mul_add(d * a.d[b0], acc);
                    }
                    Q4K => {
                        let dmin = f16(blk, Q4K_DMIN + 2 * j);
                        for s in 0..8 {
                            let b = b0 + s;
                            let g = &blk[Q4K_Q + GROUP * s..];
                            let x = idot(|k| nibble(g, j, k), a, QK * b, 0..QK);
                            let sc = d * f32::from(blk[Q4K_SC + TILE * s + j]);
                            let m = -(dmin * f32::from(blk[Q4K_MIN + TILE * s + j]));
                            acc = (x as f32).mul_add(sc * a.d[b], acc);
                            acc = m.mul_add(a.s[b], acc);
                        }
                    }
                    _ => {
                        for s in 0..8 {
                            let b = b0 + s;
                            let sub = &blk[Q6K_Q + Q6K_SUB * s..][..Q6K_SUB];
                            let w = |k: usize| {
                                let (c, i) = (k / 4, k % 4);
                                let high =
                                    (sub[GROUP + 64 * (c / 4) + 4 * j + i] >> (2 * (c % 4))) & 3;
                                nibble(sub, j, k) | i32::from(high) << 4
                            };
                            for h in 0..2 {
                                let ks = 16 * h..16 * h + 16;
                                let x = idot(w, a, QK * b, ks) - 32 * a.h16[2 * b + h];
                                let sc = d * f32::from(blk[Q6K_SC + TILE * (2 * s + h) + j] as i8);
                                acc = (x as f32).mul_add(sc * a.d[b], acc);
                            }
                        }
                    }
                }
            }
            // SAFETY: the caller vouches for out[t * stride + j] (see TileFn).
            unsafe { *out.add(t * stride + j) = acc };
        }
    }
}
