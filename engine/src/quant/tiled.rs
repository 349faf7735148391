//! The 512-bit VNNI kernels over matrices tiled by [`super::pack`]: one tile (16 rows) against
//! up to eight activation rows per pass. Each 32-bit lane holds one output, so a block costs one
//! `vpdpbusd` per four weights per activation plane for all 16 rows, its scale is applied once
//! per lane, and nothing is summed horizontally.
//!
//! A block's integer dot product is exact (`255 * hi + lo` planes, and for Q4_0 / Q8_0 the
//! stored offset taken off as `8` or `128` times the block's sum of activations), and each
//! lane's float arithmetic is the same sequence of operations whatever the number of activation
//! rows or the lane it runs in, so an output never depends on the batch around it.

use std::arch::x86_64::*;

use super::pack::{TILE, header_bytes};
use super::{ActRow, QK, TileFn};
use crate::tensor::DType;

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

/// The tiled kernel for `dtype` (the caller detected AVX-512 F/BW/VL and VNNI).
pub(super) fn kernel(dtype: DType) -> Option<TileFn> {
    match dtype {
        DType::Q4_0 => Some(rows::<Q4_0>),
        DType::Q4_1 => Some(rows::<Q4_1>),
        DType::Q8_0 => Some(rows::<Q8_0>),
        _ => None,
    }
}

const fn dtype_of(t: u8) -> DType {
    match t {
        Q4_0 => DType::Q4_0,
        Q4_1 => DType::Q4_1,
        _ => DType::Q8_0,
    }
}

/// See [`TileFn`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows<const T: u8>(
    tile: &[u8],
    lanes: usize,
    acts: &[ActRow<'_>],
    out: *mut f32,
    stride: usize,
) {
    let Some(first) = acts.first() else {
        return;
    };
    let nb = first.d.len();
    assert!((1..=TILE).contains(&lanes));
    assert!(tile.len() >= nb * TILE * dtype_of(T).block_bytes());
    for a in acts {
        assert!(a.d.len() == nb && a.s.len() >= nb && a.h16.len() >= 2 * nb);
        assert!(a.hi.len() >= nb * QK && a.lo.len() >= nb * QK);
    }
    let mut t = 0;
    while t < acts.len() {
        let a = &acts[t..];
        // SAFETY: bounds asserted above; the caller vouches for `out` (see TileFn).
        unsafe {
            let o = out.add(t * stride);
            t += match a.len() {
                1 => pass::<T, 1>(tile, nb, lanes, a, o, stride),
                2 => pass::<T, 2>(tile, nb, lanes, a, o, stride),
                3 => pass::<T, 3>(tile, nb, lanes, a, o, stride),
                4 => pass::<T, 4>(tile, nb, lanes, a, o, stride),
                5 => pass::<T, 5>(tile, nb, lanes, a, o, stride),
                6 => pass::<T, 6>(tile, nb, lanes, a, o, stride),
                7 => pass::<T, 7>(tile, nb, lanes, a, o, stride),
                _ => pass::<T, 8>(tile, nb, lanes, a, o, stride),
            };
        }
    }
}

/// The tile against the first `N` activation rows; returns `N`.
#[inline(always)]
unsafe fn pass<const T: u8, const N: usize>(
    tile: &[u8],
    nb: usize,
    lanes: usize,
    acts: &[ActRow<'_>],
    out: *mut f32,
    stride: usize,
) -> usize {
    let tb = TILE * dtype_of(T).block_bytes();
    let hdr = header_bytes(dtype_of(T));
    let mask: __mmask16 = if lanes >= TILE {
        0xFFFF
    } else {
        (1u16 << lanes) - 1
    };
    // SAFETY (all loads and stores): block b of the tile is tile[b * tb ..][..tb] (length
    // checked by the caller); activation block b is hi/lo[32b..32b + 32], d/s[b], h16[2b..2b+2]
    // (checked); outputs are the caller's.
    unsafe {
        let m4 = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); N];
        for b in 0..nb {
            let base = tile.as_ptr().add(b * tb);
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(base.cast()));
            let mw = if T == Q4_1 {
                _mm512_cvtph_ps(_mm256_loadu_si256(base.add(2 * TILE).cast()))
            } else {
                dw
            };
            // w[c]: weights 4c..4c + 4 of each row, one row per lane.
            let q = base.add(hdr);
            let mut w = [_mm512_setzero_si512(); 8];
            if T == Q8_0 {
                for (c, w) in w.iter_mut().enumerate() {
                    *w = _mm512_loadu_si512(q.add(64 * c).cast());
                }
            } else {
                for c in 0..4 {
                    let v = _mm512_loadu_si512(q.add(64 * c).cast());
                    w[c] = _mm512_and_si512(v, m4);
                    w[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                }
            }
            for (acc, a) in acc.iter_mut().zip(acts) {
                let (hp, lp) = (a.hi.as_ptr().add(QK * b), a.lo.as_ptr().add(QK * b));
                let four = |p: *const i8, c: usize| {
                    _mm512_set1_epi32(p.add(4 * c).cast::<i32>().read_unaligned())
                };
                let (mut h, mut l) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for (c, &w) in w.iter().enumerate() {
                    h = _mm512_dpbusd_epi32(h, w, four(hp, c));
                    l = _mm512_dpbusd_epi32(l, w, four(lp, c));
                }
                // 255 * hi + lo, exact: no lane can overflow.
                let mut x = _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(h, 8), h), l);
                if T != Q4_1 {
                    let sum = a.h16[2 * b] + a.h16[2 * b + 1];
                    let bias = if T == Q4_0 { 8 } else { 128 };
                    x = _mm512_sub_epi32(x, _mm512_set1_epi32(bias * sum));
                }
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(a.d[b]));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(x), scale, *acc);
                if T == Q4_1 {
                    *acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(a.s[b]), *acc);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(out.add(i * stride), mask, *acc);
        }
    }
    N
}
