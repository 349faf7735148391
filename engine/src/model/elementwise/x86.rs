//! AVX2/FMA vector math shared by the forward pass: `exp` of eight lanes and SwiGLU on it.

use std::arch::x86_64::*;

/// The SwiGLU kernel if this CPU has AVX2 and FMA.
pub(in crate::model) fn swiglu() -> Option<super::SwigluFn> {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        return None;
    }
    // SAFETY: the features `swiglu8` enables were detected above.
    Some(|g, u, o| unsafe { swiglu8(g, u, o) })
}

#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu8(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = out.len().min(gate.len()).min(up.len());
    let full = n - n % 8;
    for i in (0..full).step_by(8) {
        // SAFETY: i + 8 <= full <= every slice's length.
        unsafe {
            swiglu_at(
                gate.as_ptr().add(i),
                up.as_ptr().add(i),
                out.as_mut_ptr().add(i),
            )
        };
    }
    if full < n {
        // The tail runs through the same vector arithmetic, so an element's result never
        // depends on where a task or the buffer ends.
        let (mut g, mut u, mut o) = ([0f32; 8], [0f32; 8], [0f32; 8]);
        g[..n - full].copy_from_slice(&gate[full..n]);
        u[..n - full].copy_from_slice(&up[full..n]);
        // SAFETY: the three buffers hold 8 values each.
        unsafe { swiglu_at(g.as_ptr(), u.as_ptr(), o.as_mut_ptr()) };
        out[full..n].copy_from_slice(&o[..n - full]);
    }
}

/// Eight lanes of `silu(g) * u`.
#[inline(always)]
unsafe fn swiglu_at(g: *const f32, u: *const f32, o: *mut f32) {
    unsafe {
        let g = _mm256_loadu_ps(g);
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        let s = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0), e));
        _mm256_storeu_ps(o, _mm256_mul_ps(s, _mm256_loadu_ps(u)));
    }
}

/// `exp(x)` of eight lanes (Cephes' single-precision method: `x = n ln2 + r`, a degree-6
/// polynomial in `r`, then `2^n` through the exponent bits); within 2 ulp of libm's `expf` for
/// `x` in [-87, 88], clamped (tiny but positive, or ~1.65e38) outside.
#[inline(always)]
pub(in crate::model) unsafe fn exp8(x: __m256) -> __m256 {
    unsafe {
        let x = _mm256_max_ps(
            _mm256_min_ps(x, _mm256_set1_ps(88.0)),
            _mm256_set1_ps(-87.0),
        );
        let n = _mm256_round_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let e = _mm256_fmadd_ps(
            _mm256_mul_ps(p, r),
            r,
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let pow2 = _mm256_slli_epi32(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
            23,
        );
        _mm256_mul_ps(e, _mm256_castsi256_ps(pow2))
    }
}
