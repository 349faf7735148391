//! Quantizing activation rows into the two int8 planes of [`super::QActs`]: the portable
//! definition, and an AVX2 version that gives the same bits (the same IEEE operations, lane-wise).

use super::{QK, QMAX};

/// Quantizes whole blocks of 32 values into their planes, scales and half-block sums.
pub(super) type BlocksFn =
    fn(x: &[f32], hi: &mut [i8], lo: &mut [i8], d: &mut [f32], s: &mut [f32], h16: &mut [i32]);

/// The fastest [`BlocksFn`] for this CPU.
pub(super) fn blocks_fn() -> BlocksFn {
    #[cfg(target_arch = "x86_64")]
    if super::Kernels::detect().level != "scalar" && is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected just above.
        return |x, hi, lo, d, s, h16| unsafe { x86::blocks(x, hi, lo, d, s, h16) };
    }
    blocks_scalar
}

/// The definition: per block, `d = max|x| / QMAX`, `q = round(x / d)`, `hi = round(q / 255)`,
/// `lo = q - 255 * hi`.
pub(super) fn blocks_scalar(
    x: &[f32],
    hi: &mut [i8],
    lo: &mut [i8],
    d: &mut [f32],
    s: &mut [f32],
    h16: &mut [i32],
) {
    for (b, chunk) in x.chunks_exact(QK).enumerate() {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let db = flush(amax / QMAX);
        let id = if db > 0.0 { 1.0 / db } else { 0.0 };
        let mut sums = [0i32; 2];
        for (i, v) in chunk.iter().enumerate() {
            let q = round(v * id);
            let h = round(q as f32 * (1.0 / 255.0));
            hi[b * QK + i] = h as i8;
            lo[b * QK + i] = (q - 255 * h) as i8;
            sums[i / 16] += q;
        }
        d[b] = db;
        s[b] = db * (sums[0] + sums[1]) as f32;
        h16[2 * b] = sums[0];
        h16[2 * b + 1] = sums[1];
    }
}

/// Rounds quantized blocks on to the 8-bit grid ([`super::ActBits::Int8`]): `q = 255 * hi`,
/// `lo = 0`, and the block and half-block sums follow. `hi = round(q / 255)` already, so this
/// is `x` rounded to 8 bits (twice: to 16, then to 8).
pub(super) fn drop_lo(hi: &[i8], lo: &mut [i8], d: &[f32], s: &mut [f32], h16: &mut [i32]) {
    for (b, hi) in hi.chunks_exact(QK).enumerate() {
        let half = |r: &[i8]| 255 * r.iter().map(|&v| i32::from(v)).sum::<i32>();
        let sums = [half(&hi[..QK / 2]), half(&hi[QK / 2..])];
        h16[2 * b] = sums[0];
        h16[2 * b + 1] = sums[1];
        s[b] = d[b] * (sums[0] + sums[1]) as f32;
    }
    lo.fill(0);
}

/// A block scale below the smallest normal f32 is taken as zero (the block quantizes to zeros):
/// its reciprocal would overflow to infinity and the planes leave their ±127 range.
#[inline(always)]
fn flush(db: f32) -> f32 {
    if db >= f32::MIN_POSITIVE { db } else { 0.0 }
}

/// Rounds half away from zero, with a truncating conversion (no libm call on baseline x86-64).
#[inline(always)]
fn round(x: f32) -> i32 {
    (x + 0.5f32.copysign(x)) as i32
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{QK, QMAX};

    /// [`super::round`] on eight lanes: add ±0.5 by the sign, then truncate.
    #[inline(always)]
    unsafe fn round8(x: __m256) -> __m256i {
        unsafe {
            let half = _mm256_or_ps(_mm256_set1_ps(0.5), _mm256_and_ps(x, _mm256_set1_ps(-0.0)));
            _mm256_cvttps_epi32(_mm256_add_ps(x, half))
        }
    }

    #[inline(always)]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        unsafe {
            let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            _mm_cvtsi128_si32(s)
        }
    }

    /// Four vectors of i32 (each within ±127) as 32 bytes in element order.
    #[inline(always)]
    unsafe fn pack_bytes(v: [__m256i; 4]) -> __m256i {
        unsafe {
            let a = _mm256_packs_epi32(v[0], v[1]);
            let b = _mm256_packs_epi32(v[2], v[3]);
            let bytes = _mm256_packs_epi16(a, b);
            _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn blocks(
        x: &[f32],
        hi: &mut [i8],
        lo: &mut [i8],
        d: &mut [f32],
        s: &mut [f32],
        h16: &mut [i32],
    ) {
        let nb = x.len() / QK;
        assert!(hi.len() >= nb * QK && lo.len() >= nb * QK);
        assert!(d.len() >= nb && s.len() >= nb && h16.len() >= 2 * nb);
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let inv255 = _mm256_set1_ps(1.0 / 255.0);
        let c255 = _mm256_set1_epi32(255);
        for b in 0..nb {
            // SAFETY: block b covers x[32b..32b + 32] and the same range of hi and lo,
            // all within the lengths asserted above.
            unsafe {
                let p = x.as_ptr().add(b * QK);
                let v = [0, 8, 16, 24].map(|i| _mm256_loadu_ps(p.add(i)));
                let m = v.iter().fold(_mm256_setzero_ps(), |m, &v| {
                    _mm256_max_ps(m, _mm256_and_ps(v, abs_mask))
                });
                let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
                let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
                let db = super::flush(amax / QMAX);
                let id = _mm256_set1_ps(if db > 0.0 { 1.0 / db } else { 0.0 });
                let q = v.map(|v| round8(_mm256_mul_ps(v, id)));
                let h = q.map(|q| round8(_mm256_mul_ps(_mm256_cvtepi32_ps(q), inv255)));
                let l =
                    [0, 1, 2, 3].map(|i| _mm256_sub_epi32(q[i], _mm256_mullo_epi32(h[i], c255)));
                _mm256_storeu_si256(hi.as_mut_ptr().add(b * QK).cast(), pack_bytes(h));
                _mm256_storeu_si256(lo.as_mut_ptr().add(b * QK).cast(), pack_bytes(l));
                let s0 = hsum_i32(_mm256_add_epi32(q[0], q[1]));
                let s1 = hsum_i32(_mm256_add_epi32(q[2], q[3]));
                d[b] = db;
                s[b] = db * (s0 + s1) as f32;
                h16[2 * b] = s0;
                h16[2 * b + 1] = s1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The CPU's quantizer gives exactly the portable one's bits, zero and tiny blocks included.
    #[test]
    fn the_simd_quantizer_gives_the_portable_bits() {
        let mut r = Rng::new(17);
        let nb = 64;
        let mut x: Vec<f32> = (0..nb * QK)
            .map(|i| r.symmetric([1e-3, 1.0, 300.0, 1e6][(i / QK) % 4]))
            .collect();
        x[..QK].fill(0.0);
        x[QK..2 * QK].fill(-0.0);
        x[2 * QK + 3] = 1e-38;
        // A whole block of values so small that its scale is subnormal.
        x[5 * QK..6 * QK].iter_mut().for_each(|v| *v *= 1e-36);
        x[3 * QK..4 * QK]
            .iter_mut()
            .for_each(|v| *v = v.round() + 0.5);
        let run = |f: BlocksFn| {
            let (mut hi, mut lo) = (vec![0i8; x.len()], vec![0i8; x.len()]);
            let (mut d, mut s, mut h) = (vec![0f32; nb], vec![0f32; nb], vec![0i32; 2 * nb]);
            f(&x, &mut hi, &mut lo, &mut d, &mut s, &mut h);
            (
                hi,
                lo,
                d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                s.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                h,
            )
        };
        let (a, b) = (run(blocks_fn()), run(blocks_scalar));
        assert!(
            a == b,
            "the quantizer for this CPU differs from the portable one"
        );
    }
}
