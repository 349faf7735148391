//! x86-64 SIMD dot products: AVX2+FMA+F16C, and the same code with AVX-512 VNNI's `vpdpbusd`
//! for the int8 products. One generic body per type; `VNNI` picks the int8 instruction.

use std::arch::x86_64::*;

use super::{ActRow, BlockQ8, Kernels};

/// The x86 kernels if this CPU has AVX2+FMA+F16C (`allow_vnni`: may use AVX-512 VNNI).
pub(super) fn kernels(allow_vnni: bool) -> Option<Kernels> {
    if !(is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c"))
    {
        return None;
    }
    let vnni = allow_vnni
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vl");
    // SAFETY (all closures below): the features each function enables were detected above.
    Some(if vnni {
        Kernels {
            level: "avx512-vnni",
            q4_0: |w, a| unsafe { q4_0_vnni(w, a.q8) },
            q4_1: |w, a| unsafe { q4_1_vnni(w, a.q8) },
            q8_0: |w, a| unsafe { q8_0_vnni(w, a.q8) },
            q4k: |w, a| unsafe { q4k_vnni(w, a.q8) },
            q6k: |w, a| unsafe { q6k_vnni(w, a.q8) },
            ..float_kernels("avx512-vnni")
        }
    } else {
        Kernels {
            level: "avx2",
            q4_0: |w, a| unsafe { q4_0_avx2(w, a.q8) },
            q4_1: |w, a| unsafe { q4_1_avx2(w, a.q8) },
            q8_0: |w, a| unsafe { q8_0_avx2(w, a.q8) },
            q4k: |w, a| unsafe { q4k_avx2(w, a.q8) },
            q6k: |w, a| unsafe { q6k_avx2(w, a.q8) },
            ..float_kernels("avx2")
        }
    })
}

fn float_kernels(level: &'static str) -> Kernels {
    Kernels {
        level,
        f32: |w, a: ActRow<'_>| unsafe { dot_f32(w, a.f) },
        f16: |w, a: ActRow<'_>| unsafe { dot_f16(w, a.f) },
        bf16: |w, a: ActRow<'_>| unsafe { dot_bf16(w, a.f) },
        ..Kernels::scalar()
    }
}

macro_rules! variants {
    ($body:ident, $avx2:ident, $vnni:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $avx2(w: &[u8], a: &[BlockQ8]) -> f32 {
            unsafe { $body::<false>(w, a) }
        }
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
        unsafe fn $vnni(w: &[u8], a: &[BlockQ8]) -> f32 {
            unsafe { $body::<true>(w, a) }
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

/// The same for two signed operands.
#[inline(always)]
unsafe fn dot_ss8<const VNNI: bool>(x: __m256i, y: __m256i) -> __m256i {
    unsafe { dot_us8::<VNNI>(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x)) }
}

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    unsafe {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
            p.cast::<u16>().read_unaligned(),
        ))))
    }
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

/// The 32 nibbles of a Q4_0/Q4_1 block as bytes, in element order.
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

#[inline(always)]
unsafe fn load_q(b: &BlockQ8) -> __m256i {
    unsafe { _mm256_loadu_si256(b.qs.as_ptr().cast()) }
}

#[inline(always)]
unsafe fn q4_0_body<const VNNI: bool>(w: &[u8], a: &[BlockQ8]) -> f32 {
    debug_assert!(w.len() >= a.len() * 18);
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut off = 0f32;
        for (i, q) in a.iter().enumerate() {
            let b = w.as_ptr().add(i * 18);
            let d = f16_at(b);
            let p = dot_us8::<VNNI>(nibbles(b.add(2)), load_q(q));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * q.d), acc);
            off += d * q.s;
        }
        hsum(acc) - 8.0 * off
    }
}

#[inline(always)]
unsafe fn q4_1_body<const VNNI: bool>(w: &[u8], a: &[BlockQ8]) -> f32 {
    debug_assert!(w.len() >= a.len() * 20);
    unsafe {
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut off = 0f32;
        let pairs = a.len() / 2;
        for i in 0..pairs {
            let (q0, q1) = (&a[2 * i], &a[2 * i + 1]);
            let b0 = w.as_ptr().add(2 * i * 20);
            let b1 = b0.add(20);
            let p0 = dot_us8::<VNNI>(nibbles(b0.add(4)), load_q(q0));
            let p1 = dot_us8::<VNNI>(nibbles(b1.add(4)), load_q(q1));
            acc0 = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(p0),
                _mm256_set1_ps(f16_at(b0) * q0.d),
                acc0,
            );
            acc1 = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(p1),
                _mm256_set1_ps(f16_at(b1) * q1.d),
                acc1,
            );
            off += f16_at(b0.add(2)) * q0.s + f16_at(b1.add(2)) * q1.s;
        }
        if a.len() % 2 == 1 {
            let q = &a[a.len() - 1];
            let b = w.as_ptr().add((a.len() - 1) * 20);
            let p = dot_us8::<VNNI>(nibbles(b.add(4)), load_q(q));
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(f16_at(b) * q.d), acc0);
            off += f16_at(b.add(2)) * q.s;
        }
        hsum(_mm256_add_ps(acc0, acc1)) + off
    }
}

#[inline(always)]
unsafe fn q8_0_body<const VNNI: bool>(w: &[u8], a: &[BlockQ8]) -> f32 {
    debug_assert!(w.len() >= a.len() * 34);
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (i, q) in a.iter().enumerate() {
            let b = w.as_ptr().add(i * 34);
            let x = _mm256_loadu_si256(b.add(2).cast());
            let p = dot_ss8::<VNNI>(x, load_q(q));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(f16_at(b) * q.d), acc);
        }
        hsum(acc)
    }
}

#[inline(always)]
unsafe fn q4k_body<const VNNI: bool>(w: &[u8], a: &[BlockQ8]) -> f32 {
    debug_assert!(w.len() * 8 >= a.len() * 144);
    unsafe {
        let mask = _mm256_set1_epi8(0x0F);
        let mut acc = _mm256_setzero_ps();
        let mut off = 0f32;
        for (k, qa) in a.chunks_exact(8).enumerate() {
            let b = w.as_ptr().add(k * 144);
            let (d, dmin) = (f16_at(b), f16_at(b.add(2)));
            let sc = std::slice::from_raw_parts(b.add(4), 12);
            for j in 0..4 {
                let q = _mm256_loadu_si256(b.add(16 + 32 * j).cast());
                let lo = _mm256_and_si256(q, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
                let (s0, m0) = super::scalar::scale_min_k4(2 * j, sc);
                let (s1, m1) = super::scalar::scale_min_k4(2 * j + 1, sc);
                let (a0, a1) = (&qa[2 * j], &qa[2 * j + 1]);
                let p0 = _mm256_cvtepi32_ps(dot_us8::<VNNI>(lo, load_q(a0)));
                let p1 = _mm256_cvtepi32_ps(dot_us8::<VNNI>(hi, load_q(a1)));
                acc = _mm256_fmadd_ps(p0, _mm256_set1_ps(d * f32::from(s0) * a0.d), acc);
                acc = _mm256_fmadd_ps(p1, _mm256_set1_ps(d * f32::from(s1) * a1.d), acc);
                off += dmin * (f32::from(m0) * a0.s + f32::from(m1) * a1.s);
            }
        }
        hsum(acc) - off
    }
}

#[inline(always)]
unsafe fn q6k_body<const VNNI: bool>(w: &[u8], a: &[BlockQ8]) -> f32 {
    debug_assert!(w.len() * 8 >= a.len() * 210);
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let m3 = _mm256_set1_epi8(3);
        let mut acc = _mm256_setzero_ps();
        let mut off = 0f32;
        for (k, qa) in a.chunks_exact(8).enumerate() {
            let b = w.as_ptr().add(k * 210);
            let d = f16_at(b.add(208));
            let scales = b.add(192).cast::<i8>();
            for half in 0..2 {
                let ql0 = _mm256_loadu_si256(b.add(64 * half).cast());
                let ql1 = _mm256_loadu_si256(b.add(64 * half + 32).cast());
                let qh = _mm256_loadu_si256(b.add(128 + 32 * half).cast());
                let high = |shift: i32| -> __m256i {
                    let h = match shift {
                        0 => qh,
                        2 => _mm256_srli_epi16(qh, 2),
                        4 => _mm256_srli_epi16(qh, 4),
                        _ => _mm256_srli_epi16(qh, 6),
                    };
                    _mm256_slli_epi16(_mm256_and_si256(h, m3), 4)
                };
                let qs = [
                    _mm256_or_si256(_mm256_and_si256(ql0, m4), high(0)),
                    _mm256_or_si256(_mm256_and_si256(ql1, m4), high(2)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), high(4)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), high(6)),
                ];
                for (j, q) in qs.into_iter().enumerate() {
                    let blk = 4 * half + j;
                    let y = &qa[blk];
                    let (s0, s1) = (
                        f32::from(*scales.add(2 * blk)),
                        f32::from(*scales.add(2 * blk + 1)),
                    );
                    let sv = _mm256_set_ps(s1, s1, s1, s1, s0, s0, s0, s0);
                    let p = _mm256_mul_ps(_mm256_cvtepi32_ps(dot_us8::<VNNI>(q, load_q(y))), sv);
                    let dd = d * y.d;
                    acc = _mm256_fmadd_ps(p, _mm256_set1_ps(dd), acc);
                    off += dd
                        * 32.0
                        * (s0 * f32::from(y.half_sums[0]) + s1 * f32::from(y.half_sums[1]));
                }
            }
        }
        hsum(acc) - off
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32(w: &[u8], a: &[f32]) -> f32 {
    unsafe {
        dot_wide(
            a,
            |i| _mm256_loadu_ps(w.as_ptr().add(4 * i).cast()),
            |i| f32::from_le_bytes(w[4 * i..4 * i + 4].try_into().unwrap_or_default()),
        )
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16(w: &[u8], a: &[f32]) -> f32 {
    unsafe {
        dot_wide(
            a,
            |i| _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(2 * i).cast())),
            |i| f16_at(w.as_ptr().add(2 * i)),
        )
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
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
