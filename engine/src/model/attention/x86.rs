//! AVX2/FMA/F16C inner loops of attention: each key or value row is loaded (and converted from
//! f16) once and used for every query head of the group.

use std::arch::x86_64::*;

use super::{Kernels, scalar_scores, scalar_values, slots_of};
use crate::model::elementwise::x86::exp8;
use crate::quant::x86::hsum;

/// The kernels if this CPU has AVX2, FMA and F16C.
pub(super) fn kernels() -> Option<Kernels> {
    if !(is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c"))
    {
        return None;
    }
    // SAFETY (both closures): the features the functions enable were detected above.
    Some(Kernels {
        scores: |k, f16, hd, q, out, stride| {
            if hd % 8 != 0 {
                return scalar_scores(k, f16, hd, q, out, stride);
            }
            unsafe { scores(k, f16, hd, q, out, stride) }
        },
        values: |v, f16, hd, p, stride, o| {
            if hd % 8 != 0 {
                return scalar_values(v, f16, hd, p, stride, o);
            }
            unsafe { values(v, f16, hd, p, stride, o) }
        },
        softmax: |x, scale| unsafe { softmax(x, scale) },
    })
}

/// Eight values of row data at element `i`, from f16 or f32 storage.
#[inline(always)]
unsafe fn load8(data: &[u8], f16: bool, i: usize) -> __m256 {
    unsafe {
        if f16 {
            debug_assert!(2 * i + 16 <= data.len());
            _mm256_cvtph_ps(_mm_loadu_si128(data.as_ptr().add(2 * i).cast()))
        } else {
            debug_assert!(4 * i + 32 <= data.len());
            _mm256_loadu_ps(data.as_ptr().add(4 * i).cast())
        }
    }
}

/// Query heads handled per pass over a key row (their accumulators stay in registers).
const HEADS: usize = 4;

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores(keys: &[u8], f16: bool, hd: usize, q: &[f32], out: &mut [f32], stride: usize) {
    let heads = q.len() / hd;
    assert!(q.len() == heads * hd && out.len() >= (heads - 1) * stride);
    for s in 0..slots_of(keys, f16, hd) {
        assert!((heads - 1) * stride + s < out.len());
        for h0 in (0..heads).step_by(HEADS) {
            let n = HEADS.min(heads - h0);
            let mut acc = [_mm256_setzero_ps(); HEADS];
            for i in (0..hd).step_by(8) {
                // SAFETY: row `s` has `hd` elements (i + 8 <= hd), q has `heads * hd`.
                unsafe {
                    let k = load8(keys, f16, s * hd + i);
                    for (j, a) in acc.iter_mut().enumerate().take(n) {
                        let qv = _mm256_loadu_ps(q.as_ptr().add((h0 + j) * hd + i));
                        *a = _mm256_fmadd_ps(qv, k, *a);
                    }
                }
            }
            for (j, a) in acc.iter().enumerate().take(n) {
                out[(h0 + j) * stride + s] = unsafe { hsum(*a) };
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn values(vals: &[u8], f16: bool, hd: usize, p: &[f32], stride: usize, o: &mut [f32]) {
    let heads = o.len() / hd;
    let slots = slots_of(vals, f16, hd);
    assert!(o.len() == heads * hd && (heads == 0 || p.len() >= (heads - 1) * stride + slots));
    for s in 0..slots {
        for i in (0..hd).step_by(8) {
            // SAFETY: row `s` has `hd` elements (i + 8 <= hd), o has `heads * hd`.
            unsafe {
                let v = load8(vals, f16, s * hd + i);
                for h in 0..heads {
                    let w = _mm256_set1_ps(*p.get_unchecked(h * stride + s));
                    let at = o.as_mut_ptr().add(h * hd + i);
                    _mm256_storeu_ps(at, _mm256_fmadd_ps(w, v, _mm256_loadu_ps(at)));
                }
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn softmax(x: &mut [f32], scale: f32) {
    let n = x.len();
    let full = n - n % 8;
    // SAFETY: vector loads and stores cover [0, full), full <= n.
    unsafe {
        let p = x.as_mut_ptr();
        let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..full).step_by(8) {
            mv = _mm256_max_ps(mv, _mm256_loadu_ps(p.add(i)));
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), mv);
        let max = lanes
            .iter()
            .chain(&x[full..])
            .fold(f32::NEG_INFINITY, |m, &s| m.max(s))
            * scale;
        let (sv, mxv) = (_mm256_set1_ps(scale), _mm256_set1_ps(max));
        let mut acc = _mm256_setzero_ps();
        for i in (0..full).step_by(8) {
            let e = exp8(_mm256_fmsub_ps(_mm256_loadu_ps(p.add(i)), sv, mxv));
            _mm256_storeu_ps(p.add(i), e);
            acc = _mm256_add_ps(acc, e);
        }
        let mut sum = hsum(acc);
        if full < n {
            let mut tail = [f32::NEG_INFINITY; 8];
            tail[..n - full].copy_from_slice(&x[full..]);
            let e = exp8(_mm256_fmsub_ps(_mm256_loadu_ps(tail.as_ptr()), sv, mxv));
            _mm256_storeu_ps(tail.as_mut_ptr(), e);
            for (o, &v) in x[full..].iter_mut().zip(&tail) {
                *o = v;
                sum += v;
            }
        }
        let inv = _mm256_set1_ps(1.0 / sum);
        for i in (0..full).step_by(8) {
            _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), inv));
        }
        let inv = 1.0 / sum;
        x[full..].iter_mut().for_each(|v| *v *= inv);
    }
}
