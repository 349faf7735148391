//! x86-64 SIMD dot products over stored (GGML) rows, and which CPU features each level needs.
//! Stored layouts run block by block on 256-bit registers, with AVX2's `vpmaddubsw` or, at the
//! AVX-512 VNNI level, `vpdpbusd` (`VNNI` picks; the AVX-512 F/BW level uses the AVX2 bodies).
//! Quantized matrices are tiled at load and run in `super::tiled` at every level; these row
//! kernels serve float weights, single rows and the tests.
//! Every integer product is done twice, once per activation plane, and recombined as
//! `255 * hi + lo` before it is scaled.

use std::arch::x86_64::*;

use super::{ActRow, Kernels};

/// The CPU features each x86 level needs, by the names `is_x86_feature_detected!` takes.
pub(super) fn missing(level: super::Level) -> Vec<&'static str> {
    use super::Level;
    let want: &[&'static str] = match level {
        Level::Scalar => &[],
        Level::Avx2 => &["avx2", "fma", "f16c"],
        Level::Avx512 => &["avx2", "fma", "f16c", "avx512f", "avx512bw"],
        Level::Avx512Vnni => &[
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni",
        ],
    };
    want.iter().copied().filter(|f| !has(f)).collect()
}

fn has(feature: &str) -> bool {
    match feature {
        "avx2" => is_x86_feature_detected!("avx2"),
        "fma" => is_x86_feature_detected!("fma"),
        "f16c" => is_x86_feature_detected!("f16c"),
        "avx512f" => is_x86_feature_detected!("avx512f"),
        "avx512bw" => is_x86_feature_detected!("avx512bw"),
        "avx512vl" => is_x86_feature_detected!("avx512vl"),
        "avx512vnni" => is_x86_feature_detected!("avx512vnni"),
        _ => false,
    }
}

/// The x86 kernels of `level`; the caller checked [`missing`] is empty.
pub(super) fn kernels(level: super::Level) -> Kernels {
    use super::Level;
    // SAFETY (every closure below): the features each function enables were detected.
    match level {
        Level::Avx512Vnni => Kernels {
            q4_0: |w, rb, a, o| unsafe { q4_0_vnni(w, rb, a, o) },
            q4_1: |w, rb, a, o| unsafe { q4_1_vnni(w, rb, a, o) },
            q8_0: |w, rb, a, o| unsafe { q8_0_vnni(w, rb, a, o) },
            q4k: |w, rb, a, o| unsafe { q4k_vnni(w, rb, a, o) },
            q6k: |w, rb, a, o| unsafe { q6k_vnni(w, rb, a, o) },
            tiled: super::tiled::vnni,
            ..float_kernels(level)
        },
        _ => Kernels {
            q4_0: |w, rb, a, o| unsafe { q4_0_avx2(w, rb, a, o) },
            q4_1: |w, rb, a, o| unsafe { q4_1_avx2(w, rb, a, o) },
            q8_0: |w, rb, a, o| unsafe { q8_0_avx2(w, rb, a, o) },
            q4k: |w, rb, a, o| unsafe { q4k_avx2(w, rb, a, o) },
            q6k: |w, rb, a, o| unsafe { q6k_avx2(w, rb, a, o) },
            tiled: if level == Level::Avx512 {
                super::tiled::avx512
            } else {
                super::tiled::avx2
            },
            ..float_kernels(level)
        },
    }
}

fn float_kernels(level: super::Level) -> Kernels {
    Kernels {
        level: level.name(),
        simd: level,
        f32: |w, rb, a, o| unsafe { float_rows::<0>(w, rb, a.f, o) },
        f16: |w, rb, a, o| unsafe { float_rows::<1>(w, rb, a.f, o) },
        bf16: |w, rb, a, o| unsafe { float_rows::<2>(w, rb, a.f, o) },
        ..Kernels::scalar()
    }
}

/// `out[r] = dot(row r of w, a)`: the row loop lives inside the feature-enabled function so the
/// body inlines into it.
macro_rules! variants {
    ($body:ident, $avx2:ident, $vnni:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $avx2(w: &[u8], rb: usize, a: ActRow<'_>, out: &mut [f32]) {
            for (r, o) in out.iter_mut().enumerate() {
                *o = unsafe { $body::<false>(&w[r * rb..(r + 1) * rb], a) };
            }
        }
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn $vnni(w: &[u8], rb: usize, a: ActRow<'_>, out: &mut [f32]) {
            for (r, o) in out.iter_mut().enumerate() {
                *o = unsafe { $body::<true>(&w[r * rb..(r + 1) * rb], a) };
            }
        }
    };
}
variants!(q4_0_body, q4_0_avx2, q4_0_vnni);
variants!(q4_1_body, q4_1_avx2, q4_1_vnni);
variants!(q8_0_body, q8_0_avx2, q8_0_vnni);
variants!(q4k_body, q4k_avx2, q4k_vnni);
variants!(q6k_body, q6k_avx2, q6k_vnni);

/// Sums of 4 adjacent u8*i8 products into 8 i32 lanes.
#[inline(always)]
unsafe fn dot_us8<const VNNI: bool>(u: __m256i, s: __m256i) -> __m256i {
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
        }
    }
}

#[inline(always)]
unsafe fn load32(p: &[i8], at: usize) -> __m256i {
    debug_assert!(at + 32 <= p.len());
    unsafe { _mm256_loadu_si256(p.as_ptr().add(at).cast()) }
}

/// `sum(u * q)` over 32 elements from element `at`, in 8 lanes: unsigned weights.
#[inline(always)]
unsafe fn dot_planes<const VNNI: bool>(u: __m256i, a: &ActRow<'_>, at: usize) -> __m256i {
    unsafe {
        let h = dot_us8::<VNNI>(u, load32(a.hi, at));
        let l = dot_us8::<VNNI>(u, load32(a.lo, at));
        _mm256_add_epi32(_mm256_sub_epi32(_mm256_slli_epi32(h, 8), h), l)
    }
}

/// The same for signed weights (planes stay within ±127, so the sign trick is exact).
#[inline(always)]
unsafe fn dot_planes_signed<const VNNI: bool>(x: __m256i, a: &ActRow<'_>, at: usize) -> __m256i {
    unsafe {
        let ax = _mm256_sign_epi8(x, x);
        let h = dot_us8::<VNNI>(ax, _mm256_sign_epi8(load32(a.hi, at), x));
        let l = dot_us8::<VNNI>(ax, _mm256_sign_epi8(load32(a.lo, at), x));
        _mm256_add_epi32(_mm256_sub_epi32(_mm256_slli_epi32(h, 8), h), l)
    }
}

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    unsafe {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
            p.cast::<u16>().read_unaligned(),
        ))))
    }
}

/// The sum of eight lanes (also used by attention's kernels).
#[inline(always)]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    unsafe {
        hsum128(_mm_add_ps(
            _mm256_castps256_ps128(v),
            _mm256_extractf128_ps(v, 1),
        ))
    }
}

#[inline(always)]
unsafe fn hsum128(s: __m128) -> f32 {
    unsafe {
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

/// The 32 nibbles of a stored Q4_0/Q4_1 block as bytes, in element order.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    unsafe {
        let q = _mm_loadu_si128(p.cast());
        _mm256_and_si256(
            _mm256_set_m128i(_mm_srli_epi16(q, 4), q),
            _mm256_set1_epi8(0x0F),
        )
    }
}

/// Stored Q4_0 / Q4_1 blocks: `OFFSET_MIN` selects Q4_1's per-block minimum over Q4_0's -8.
#[inline(always)]
unsafe fn q4_blocks<const VNNI: bool, const Q4_1: bool>(w: &[u8], a: ActRow<'_>) -> f32 {
    let bb = if Q4_1 { 20 } else { 18 };
    debug_assert!(w.len() >= a.d.len() * bb);
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut off = 0f32;
        for b in 0..a.d.len() {
            let blk = w.as_ptr().add(b * bb);
            let d = f16_at(blk);
            let p = dot_planes::<VNNI>(nibbles(blk.add(bb - 16)), &a, b * 32);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * a.d[b]), acc);
            off += if Q4_1 { f16_at(blk.add(2)) } else { -8.0 * d } * a.s[b];
        }
        hsum(acc) + off
    }
}

#[inline(always)]
unsafe fn q4_0_body<const VNNI: bool>(w: &[u8], a: ActRow<'_>) -> f32 {
    unsafe { q4_blocks::<VNNI, false>(w, a) }
}

#[inline(always)]
unsafe fn q4_1_body<const VNNI: bool>(w: &[u8], a: ActRow<'_>) -> f32 {
    unsafe { q4_blocks::<VNNI, true>(w, a) }
}

#[inline(always)]
unsafe fn q8_0_body<const VNNI: bool>(w: &[u8], a: ActRow<'_>) -> f32 {
    debug_assert!(w.len() >= a.d.len() * 34);
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for b in 0..a.d.len() {
            let blk = w.as_ptr().add(b * 34);
            let p = dot_planes_signed::<VNNI>(_mm256_loadu_si256(blk.add(2).cast()), &a, b * 32);
            acc = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(p),
                _mm256_set1_ps(f16_at(blk) * a.d[b]),
                acc,
            );
        }
        hsum(acc)
    }
}

#[inline(always)]
unsafe fn q4k_body<const VNNI: bool>(w: &[u8], a: ActRow<'_>) -> f32 {
    debug_assert!(w.len() * 8 >= a.d.len() * 144);
    unsafe {
        let mask = _mm256_set1_epi8(0x0F);
        let mut acc = _mm256_setzero_ps();
        let mut off = 0f32;
        for k in 0..a.d.len() / 8 {
            let blk = w.as_ptr().add(k * 144);
            let (d, dmin) = (f16_at(blk), f16_at(blk.add(2)));
            let sc = std::slice::from_raw_parts(blk.add(4), 12);
            for j in 0..4 {
                let q = _mm256_loadu_si256(blk.add(16 + 32 * j).cast());
                let halves = [
                    _mm256_and_si256(q, mask),
                    _mm256_and_si256(_mm256_srli_epi16(q, 4), mask),
                ];
                for (h, u) in halves.into_iter().enumerate() {
                    let sub = 2 * j + h;
                    let b = 8 * k + sub;
                    let (s, m) = super::scalar::scale_min_k4(sub, sc);
                    let p = _mm256_cvtepi32_ps(dot_planes::<VNNI>(u, &a, b * 32));
                    acc = _mm256_fmadd_ps(p, _mm256_set1_ps(d * f32::from(s) * a.d[b]), acc);
                    off += dmin * f32::from(m) * a.s[b];
                }
            }
        }
        hsum(acc) - off
    }
}

#[inline(always)]
unsafe fn q6k_body<const VNNI: bool>(w: &[u8], a: ActRow<'_>) -> f32 {
    debug_assert!(w.len() * 8 >= a.d.len() * 210);
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let m3 = _mm256_set1_epi8(3);
        let mut acc = _mm256_setzero_ps();
        let mut off = 0f32;
        for k in 0..a.d.len() / 8 {
            let blk = w.as_ptr().add(k * 210);
            let d = f16_at(blk.add(208));
            let scales = blk.add(192).cast::<i8>();
            for half in 0..2 {
                let ql0 = _mm256_loadu_si256(blk.add(64 * half).cast());
                let ql1 = _mm256_loadu_si256(blk.add(64 * half + 32).cast());
                let qh = _mm256_loadu_si256(blk.add(128 + 32 * half).cast());
                let high = |h: __m256i| _mm256_slli_epi16(_mm256_and_si256(h, m3), 4);
                let qs = [
                    _mm256_or_si256(_mm256_and_si256(ql0, m4), high(qh)),
                    _mm256_or_si256(_mm256_and_si256(ql1, m4), high(_mm256_srli_epi16(qh, 2))),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                        high(_mm256_srli_epi16(qh, 4)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                        high(_mm256_srli_epi16(qh, 6)),
                    ),
                ];
                for (j, q) in qs.into_iter().enumerate() {
                    let sub = 4 * half + j;
                    let b = 8 * k + sub;
                    let (s0, s1) = (
                        f32::from(*scales.add(2 * sub)),
                        f32::from(*scales.add(2 * sub + 1)),
                    );
                    let sv = _mm256_set_ps(s1, s1, s1, s1, s0, s0, s0, s0);
                    let p =
                        _mm256_mul_ps(_mm256_cvtepi32_ps(dot_planes::<VNNI>(q, &a, b * 32)), sv);
                    let dd = d * a.d[b];
                    acc = _mm256_fmadd_ps(p, _mm256_set1_ps(dd), acc);
                    off += dd * 32.0 * (s0 * a.h16[2 * b] as f32 + s1 * a.h16[2 * b + 1] as f32);
                }
            }
        }
        hsum(acc) - off
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_rows<const T: u8>(w: &[u8], rb: usize, a: &[f32], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * rb..(r + 1) * rb];
        *o = unsafe {
            match T {
                0 => dot_f32(row, a),
                1 => dot_f16(row, a),
                _ => dot_bf16(row, a),
            }
        };
    }
}

#[inline(always)]
unsafe fn dot_f32(w: &[u8], a: &[f32]) -> f32 {
    let one = |i: usize| f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]]);
    unsafe { dot_wide(a, |i| _mm256_loadu_ps(w.as_ptr().add(4 * i).cast()), one) }
}

#[inline(always)]
unsafe fn dot_f16(w: &[u8], a: &[f32]) -> f32 {
    unsafe {
        dot_wide(
            a,
            |i| _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(2 * i).cast())),
            |i| f16_at(w.as_ptr().add(2 * i)),
        )
    }
}

#[inline(always)]
unsafe fn dot_bf16(w: &[u8], a: &[f32]) -> f32 {
    let load = |i: usize| unsafe {
        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(w.as_ptr().add(2 * i).cast()));
        _mm256_castsi256_ps(_mm256_slli_epi32(h, 16))
    };
    let one =
        |i: usize| f32::from_bits(u32::from(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])) << 16);
    unsafe { dot_wide(a, load, one) }
}

/// Float dot product, 8 lanes at a time with two accumulators; `load(i)` gives weights i..i+8.
#[inline(always)]
unsafe fn dot_wide(a: &[f32], load: impl Fn(usize) -> __m256, one: impl Fn(usize) -> f32) -> f32 {
    unsafe {
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let n16 = a.len() / 16 * 16;
        let mut i = 0;
        while i < n16 {
            s0 = _mm256_fmadd_ps(load(i), _mm256_loadu_ps(a.as_ptr().add(i)), s0);
            s1 = _mm256_fmadd_ps(load(i + 8), _mm256_loadu_ps(a.as_ptr().add(i + 8)), s1);
            i += 16;
        }
        let mut tail = 0f32;
        for (j, x) in a.iter().enumerate().skip(n16) {
            tail += one(j) * x;
        }
        hsum(_mm256_add_ps(s0, s1)) + tail
    }
}
