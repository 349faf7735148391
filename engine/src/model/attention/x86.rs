//! AVX2/FMA/F16C inner loops of attention: each key or value row is loaded (and converted from
//! f16) once and used for every query head of the group.

use std::arch::x86_64::*;

use super::{Kernels, Span, scalar_scores, scalar_values, slots_of};
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
    // SAFETY (all closures): the features the functions enable were detected above.
    Some(Kernels {
        scores: |k, f16, hd, bs, q, out, span| {
            if bs % 8 != 0 {
                return scalar_scores(k, f16, hd, bs, q, out, span);
            }
            unsafe { scores(k, f16, hd, bs, q, out, span) }
        },
        values: |v, f16, hd, p, stride, o| {
            if hd % 8 != 0 {
                return scalar_values(v, f16, hd, p, stride, o);
            }
            unsafe { values(v, f16, hd, p, stride, o) }
        },
        softmax: |x, scale| unsafe { softmax(x, scale) },
        prefetch,
    })
}

/// Brings every cache line of `data` towards L1 (a hint: it never faults).
fn prefetch(data: &[u8]) {
    for at in (0..data.len()).step_by(64) {
        // SAFETY: prefetching is a hint on an address inside `data`; SSE is baseline on x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(at).cast()) };
    }
}

/// Eight values of stored data at element `i`, from f16 or f32 storage.
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

/// Query heads handled per pass over a block (their accumulators stay in registers).
const HEADS: usize = 3;

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores(
    keys: &[u8],
    f16: bool,
    hd: usize,
    bs: usize,
    q: &[f32],
    out: &mut [f32],
    st: Span,
) {
    let heads = q.len() / hd;
    assert!(q.len() == heads * hd && bs.is_multiple_of(8) && st.slots <= bs);
    assert!(slots_of(keys, f16, hd) == bs && heads > 0);
    assert!((heads - 1) * st.stride + st.slots <= out.len());
    for h0 in (0..heads).step_by(HEADS) {
        let qh = &q[h0 * hd..];
        for s0 in (0..st.slots).step_by(16) {
            let two = s0 + 8 < st.slots;
            // SAFETY: the tile reads keys[d * bs + s0 .. + 8 or 16] with s0 + 16 <= bs when
            // `two` (bs is a multiple of 8 and s0 + 8 < slots <= bs), and q rows h0.. exist.
            let acc = unsafe {
                match (HEADS.min(heads - h0), two) {
                    (1, false) => score_tile::<1, 1>(keys, f16, hd, bs, s0, qh),
                    (1, true) => score_tile::<1, 2>(keys, f16, hd, bs, s0, qh),
                    (2, false) => score_tile::<2, 1>(keys, f16, hd, bs, s0, qh),
                    (2, true) => score_tile::<2, 2>(keys, f16, hd, bs, s0, qh),
                    (_, false) => score_tile::<3, 1>(keys, f16, hd, bs, s0, qh),
                    (_, true) => score_tile::<3, 2>(keys, f16, hd, bs, s0, qh),
                }
            };
            let n = (st.slots - s0).min(16);
            for (j, row) in acc.iter().enumerate().take(HEADS.min(heads - h0)) {
                let at = (h0 + j) * st.stride + s0;
                out[at..at + n].copy_from_slice(&row[..n]);
            }
        }
    }
}

/// Scores of `N` query heads (rows of `q`) against `8 * V` slots from `s0`, as plain arrays.
/// Dims are taken two at a time into separate accumulators to hide the FMA latency.
#[inline(always)]
unsafe fn score_tile<const N: usize, const V: usize>(
    keys: &[u8],
    f16: bool,
    hd: usize,
    bs: usize,
    s0: usize,
    q: &[f32],
) -> [[f32; 16]; HEADS] {
    // SAFETY (all loads): the caller checked the bounds of keys; q has N rows of hd.
    unsafe {
        let mut acc = [[[_mm256_setzero_ps(); V]; N]; 2];
        // A function, not a closure: closures do not inherit the caller's target features, so
        // the intrinsics in one would be calls.
        #[inline(always)]
        unsafe fn step<const N: usize, const V: usize>(
            acc: &mut [[__m256; V]; N],
            (keys, f16, bs, s0, q, hd): (&[u8], bool, usize, usize, &[f32], usize),
            d: usize,
        ) {
            unsafe {
                let mut k = [_mm256_setzero_ps(); V];
                for (v, kv) in k.iter_mut().enumerate() {
                    *kv = load8(keys, f16, d * bs + s0 + 8 * v);
                }
                for (j, a) in acc.iter_mut().enumerate() {
                    let qb = _mm256_broadcast_ss(&*q.as_ptr().add(j * hd + d));
                    for v in 0..V {
                        a[v] = _mm256_fmadd_ps(qb, k[v], a[v]);
                    }
                }
            }
        }
        let ctx = (keys, f16, bs, s0, q, hd);
        let [a0, a1] = &mut acc;
        let mut d = 0;
        while d + 1 < hd {
            step(a0, ctx, d);
            step(a1, ctx, d + 1);
            d += 2;
        }
        if d < hd {
            step(a0, ctx, d);
        }
        let mut res = [[0f32; 16]; HEADS];
        for ((r, a), b) in res.iter_mut().zip(&acc[0]).zip(&acc[1]) {
            for (v, (a, b)) in a.iter().zip(b).enumerate() {
                _mm256_storeu_ps(r.as_mut_ptr().add(8 * v), _mm256_add_ps(*a, *b));
            }
        }
        res
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn values(vals: &[u8], f16: bool, hd: usize, p: &[f32], stride: usize, o: &mut [f32]) {
    let heads = o.len() / hd;
    let slots = slots_of(vals, f16, hd);
    assert!(o.len() == heads * hd && hd.is_multiple_of(8));
    assert!(heads == 0 || p.len() >= (heads - 1) * stride + slots);
    for h0 in (0..heads).step_by(HEADS) {
        let n = HEADS.min(heads - h0);
        for c0 in (0..hd).step_by(32) {
            let (pp, oo) = (&p[h0 * stride..], &mut o[h0 * hd + c0..]);
            // SAFETY: the tile reads value rows' dims c0 .. c0 + 8C < hd + 1 for `slots` rows,
            // weights p[j * stride + s] and outputs o[j * hd + c0 ..] for j < n, all checked.
            unsafe {
                match (n, ((hd - c0) / 8).min(4)) {
                    (1, 1) => value_tile::<1, 1>(vals, f16, hd, slots, c0, pp, stride, oo),
                    (1, 2) => value_tile::<1, 2>(vals, f16, hd, slots, c0, pp, stride, oo),
                    (1, 3) => value_tile::<1, 3>(vals, f16, hd, slots, c0, pp, stride, oo),
                    (1, _) => value_tile::<1, 4>(vals, f16, hd, slots, c0, pp, stride, oo),
                    (2, 1) => value_tile::<2, 1>(vals, f16, hd, slots, c0, pp, stride, oo),
                    (2, 2) => value_tile::<2, 2>(vals, f16, hd, slots, c0, pp, stride, oo),
                    (2, 3) => value_tile::<2, 3>(vals, f16, hd, slots, c0, pp, stride, oo),
                    (2, _) => value_tile::<2, 4>(vals, f16, hd, slots, c0, pp, stride, oo),
                    (_, 1) => value_tile::<3, 1>(vals, f16, hd, slots, c0, pp, stride, oo),
                    (_, 2) => value_tile::<3, 2>(vals, f16, hd, slots, c0, pp, stride, oo),
                    (_, 3) => value_tile::<3, 3>(vals, f16, hd, slots, c0, pp, stride, oo),
                    (_, _) => value_tile::<3, 4>(vals, f16, hd, slots, c0, pp, stride, oo),
                }
            }
        }
    }
}

/// `o[j * hd + 8c ..] += sum_s p[j * stride + s] * v_s[c0 + 8c ..]` for `N` heads and `C`
/// eight-dim chunks, the sums kept in registers over all slots.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn value_tile<const N: usize, const C: usize>(
    vals: &[u8],
    f16: bool,
    hd: usize,
    slots: usize,
    c0: usize,
    p: &[f32],
    stride: usize,
    o: &mut [f32],
) {
    debug_assert!(c0 + 8 * C <= hd && (N - 1) * stride + slots <= p.len());
    debug_assert!((N - 1) * hd + 8 * C <= o.len());
    // SAFETY (all loads and stores): bounds as asserted by the caller.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); C]; N];
        for (j, a) in acc.iter_mut().enumerate() {
            for (c, a) in a.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(o.as_ptr().add(j * hd + 8 * c));
            }
        }
        for s in 0..slots {
            let mut v = [_mm256_setzero_ps(); C];
            for (c, v) in v.iter_mut().enumerate() {
                *v = load8(vals, f16, s * hd + c0 + 8 * c);
            }
            for (j, a) in acc.iter_mut().enumerate() {
                let w = _mm256_broadcast_ss(&*p.as_ptr().add(j * stride + s));
                for c in 0..C {
                    a[c] = _mm256_fmadd_ps(w, v[c], a[c]);
                }
            }
        }
        for (j, a) in acc.iter().enumerate() {
            for (c, a) in a.iter().enumerate() {
                _mm256_storeu_ps(o.as_mut_ptr().add(j * hd + 8 * c), *a);
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
