//! The few vector operations the tiled kernels are written in, for each x86 level: AVX2 (eight
//! 32-bit lanes, `vpmaddubsw` + `vpmaddwd`), AVX-512 F/BW (sixteen lanes, the same two
//! instructions) and AVX-512 VNNI (sixteen lanes, `vpdpbusd`). Every method is `inline(always)`
//! and only ever runs inside a function that enabled the level's features.

// Each method is one or two intrinsics; their safety condition (the level's features are
// enabled) is the caller's, stated once here rather than in an `unsafe` block per method.
#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

/// One SIMD level's registers and operations; see the module doc.
pub(super) trait Isa {
    /// 32-bit integer lanes (also read as bytes and 16-bit words).
    type I: Copy;
    /// f32 lanes.
    type F: Copy;
    /// Lanes per register.
    const L: usize;
    /// `dpbusd` exists (otherwise products go through 16-bit sums).
    const VNNI: bool;
    /// Activation rows per pass.
    const MAXN: usize;

    unsafe fn zero_i() -> Self::I;
    unsafe fn zero_f() -> Self::F;
    /// `4 * L` bytes.
    unsafe fn load(p: *const u8) -> Self::I;
    /// `L` f16 values.
    unsafe fn f16s(p: *const u8) -> Self::F;
    /// `L` u8 values as f32.
    unsafe fn u8s(p: *const u8) -> Self::F;
    /// `L` i8 values as f32.
    unsafe fn i8s(p: *const u8) -> Self::F;
    /// Four bytes at `p` in every lane.
    unsafe fn bcast(p: *const i8) -> Self::I;
    unsafe fn and(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn or(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn xor(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn set1_8(v: i8) -> Self::I;
    unsafe fn set1_32(v: i32) -> Self::I;
    /// 16-bit lanes shifted by `n` (a constant once inlined).
    unsafe fn srli16(a: Self::I, n: i32) -> Self::I;
    unsafe fn slli16(a: Self::I, n: i32) -> Self::I;
    /// `a * 255 + b` on 32-bit lanes.
    unsafe fn combine(a: Self::I, b: Self::I) -> Self::I;
    /// `a * 32` on 32-bit lanes.
    unsafe fn times32(a: Self::I) -> Self::I;
    unsafe fn add32(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn sub32(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn add16(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn abs8(a: Self::I) -> Self::I;
    /// `a` negated where `b < 0`, zeroed where `b == 0` (bytes).
    unsafe fn sign8(a: Self::I, b: Self::I) -> Self::I;
    /// Adjacent u8 * i8 pairs summed into 16-bit lanes (saturating: callers keep within range).
    unsafe fn maddubs(u: Self::I, s: Self::I) -> Self::I;
    /// Adjacent 16-bit products `a * b` summed into 32-bit lanes.
    unsafe fn madd(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn set1_16(v: i16) -> Self::I;
    /// `acc + sum of four u8 * i8` per 32-bit lane (VNNI only).
    unsafe fn dpbusd(acc: Self::I, u: Self::I, s: Self::I) -> Self::I;
    unsafe fn cvt(a: Self::I) -> Self::F;
    unsafe fn set1_f(v: f32) -> Self::F;
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn neg(a: Self::F) -> Self::F;
    /// `a * b + c`, one rounding.
    unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// The first `n` lanes to `out`.
    unsafe fn store(out: *mut f32, n: usize, v: Self::F);
}

#[derive(Clone, Copy)]
pub(super) struct Avx2;
#[derive(Clone, Copy)]
pub(super) struct Avx512;
#[derive(Clone, Copy)]
pub(super) struct Vnni;

impl Isa for Avx2 {
    type I = __m256i;
    type F = __m256;
    const L: usize = 8;
    const VNNI: bool = false;
    const MAXN: usize = 4;

    #[inline(always)]
    unsafe fn zero_i() -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline(always)]
    unsafe fn zero_f() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        unsafe { _mm256_loadu_si256(p.cast()) }
    }
    #[inline(always)]
    unsafe fn f16s(p: *const u8) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
    #[inline(always)]
    unsafe fn u8s(p: *const u8) -> __m256 {
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()))) }
    }
    #[inline(always)]
    unsafe fn i8s(p: *const u8) -> __m256 {
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))) }
    }
    #[inline(always)]
    unsafe fn bcast(p: *const i8) -> __m256i {
        unsafe { _mm256_set1_epi32(p.cast::<i32>().read_unaligned()) }
    }
    #[inline(always)]
    unsafe fn and(a: __m256i, b: __m256i) -> __m256i {
        _mm256_and_si256(a, b)
    }
    #[inline(always)]
    unsafe fn or(a: __m256i, b: __m256i) -> __m256i {
        _mm256_or_si256(a, b)
    }
    #[inline(always)]
    unsafe fn xor(a: __m256i, b: __m256i) -> __m256i {
        _mm256_xor_si256(a, b)
    }
    #[inline(always)]
    unsafe fn set1_8(v: i8) -> __m256i {
        _mm256_set1_epi8(v)
    }
    #[inline(always)]
    unsafe fn set1_32(v: i32) -> __m256i {
        _mm256_set1_epi32(v)
    }
    #[inline(always)]
    unsafe fn srli16(a: __m256i, n: i32) -> __m256i {
        _mm256_srl_epi16(a, _mm_cvtsi32_si128(n))
    }
    #[inline(always)]
    unsafe fn slli16(a: __m256i, n: i32) -> __m256i {
        _mm256_sll_epi16(a, _mm_cvtsi32_si128(n))
    }
    #[inline(always)]
    unsafe fn combine(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(_mm256_sub_epi32(_mm256_slli_epi32(a, 8), a), b)
    }
    #[inline(always)]
    unsafe fn times32(a: __m256i) -> __m256i {
        _mm256_slli_epi32(a, 5)
    }
    #[inline(always)]
    unsafe fn add32(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn sub32(a: __m256i, b: __m256i) -> __m256i {
        _mm256_sub_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn add16(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi16(a, b)
    }
    #[inline(always)]
    unsafe fn abs8(a: __m256i) -> __m256i {
        _mm256_abs_epi8(a)
    }
    #[inline(always)]
    unsafe fn sign8(a: __m256i, b: __m256i) -> __m256i {
        _mm256_sign_epi8(a, b)
    }
    #[inline(always)]
    unsafe fn maddubs(u: __m256i, s: __m256i) -> __m256i {
        _mm256_maddubs_epi16(u, s)
    }
    #[inline(always)]
    unsafe fn madd(a: __m256i, b: __m256i) -> __m256i {
        _mm256_madd_epi16(a, b)
    }
    #[inline(always)]
    unsafe fn set1_16(v: i16) -> __m256i {
        _mm256_set1_epi16(v)
    }
    #[inline(always)]
    unsafe fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        unsafe { Self::add32(acc, Self::madd(Self::maddubs(u, s), Self::set1_16(1))) }
    }
    #[inline(always)]
    unsafe fn cvt(a: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(a)
    }
    #[inline(always)]
    unsafe fn set1_f(v: f32) -> __m256 {
        _mm256_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn neg(a: __m256) -> __m256 {
        _mm256_xor_ps(a, _mm256_set1_ps(-0.0))
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn store(out: *mut f32, n: usize, v: __m256) {
        unsafe {
            if n >= 8 {
                _mm256_storeu_ps(out, v);
            } else {
                let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx);
                _mm256_maskstore_ps(out, mask, v);
            }
        }
    }
}

/// The 512-bit operations shared by [`Avx512`] and [`Vnni`].
macro_rules! isa512 {
    ($t:ty, $vnni:expr) => {
        impl Isa for $t {
            type I = __m512i;
            type F = __m512;
            const L: usize = 16;
            const VNNI: bool = $vnni;
            const MAXN: usize = 8;

            #[inline(always)]
            unsafe fn zero_i() -> __m512i {
                _mm512_setzero_si512()
            }
            #[inline(always)]
            unsafe fn zero_f() -> __m512 {
                _mm512_setzero_ps()
            }
            #[inline(always)]
            unsafe fn load(p: *const u8) -> __m512i {
                unsafe { _mm512_loadu_si512(p.cast()) }
            }
            #[inline(always)]
            unsafe fn f16s(p: *const u8) -> __m512 {
                unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
            }
            #[inline(always)]
            unsafe fn u8s(p: *const u8) -> __m512 {
                unsafe { _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast()))) }
            }
            #[inline(always)]
            unsafe fn i8s(p: *const u8) -> __m512 {
                unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast()))) }
            }
            #[inline(always)]
            unsafe fn bcast(p: *const i8) -> __m512i {
                unsafe { _mm512_set1_epi32(p.cast::<i32>().read_unaligned()) }
            }
            #[inline(always)]
            unsafe fn and(a: __m512i, b: __m512i) -> __m512i {
                _mm512_and_si512(a, b)
            }
            #[inline(always)]
            unsafe fn or(a: __m512i, b: __m512i) -> __m512i {
                _mm512_or_si512(a, b)
            }
            #[inline(always)]
            unsafe fn xor(a: __m512i, b: __m512i) -> __m512i {
                _mm512_xor_si512(a, b)
            }
            #[inline(always)]
            unsafe fn set1_8(v: i8) -> __m512i {
                _mm512_set1_epi8(v)
            }
            #[inline(always)]
            unsafe fn set1_32(v: i32) -> __m512i {
                _mm512_set1_epi32(v)
            }
            #[inline(always)]
            unsafe fn srli16(a: __m512i, n: i32) -> __m512i {
                _mm512_srl_epi16(a, _mm_cvtsi32_si128(n))
            }
            #[inline(always)]
            unsafe fn slli16(a: __m512i, n: i32) -> __m512i {
                _mm512_sll_epi16(a, _mm_cvtsi32_si128(n))
            }
            #[inline(always)]
            unsafe fn combine(a: __m512i, b: __m512i) -> __m512i {
                _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32::<8>(a), a), b)
            }
            #[inline(always)]
            unsafe fn times32(a: __m512i) -> __m512i {
                _mm512_slli_epi32::<5>(a)
            }
            #[inline(always)]
            unsafe fn add32(a: __m512i, b: __m512i) -> __m512i {
                _mm512_add_epi32(a, b)
            }
            #[inline(always)]
            unsafe fn sub32(a: __m512i, b: __m512i) -> __m512i {
                _mm512_sub_epi32(a, b)
            }
            #[inline(always)]
            unsafe fn add16(a: __m512i, b: __m512i) -> __m512i {
                _mm512_add_epi16(a, b)
            }
            #[inline(always)]
            unsafe fn abs8(a: __m512i) -> __m512i {
                _mm512_abs_epi8(a)
            }
            #[inline(always)]
            unsafe fn sign8(a: __m512i, b: __m512i) -> __m512i {
                // No vpsignb at 512 bits: negate where b < 0, zero where b == 0.
                let neg = _mm512_movepi8_mask(b);
                let zero = _mm512_cmpeq_epi8_mask(b, _mm512_setzero_si512());
                let a = _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a);
                _mm512_maskz_mov_epi8(!zero, a)
            }
            #[inline(always)]
            unsafe fn maddubs(u: __m512i, s: __m512i) -> __m512i {
                _mm512_maddubs_epi16(u, s)
            }
            #[inline(always)]
            unsafe fn madd(a: __m512i, b: __m512i) -> __m512i {
                _mm512_madd_epi16(a, b)
            }
            #[inline(always)]
            unsafe fn set1_16(v: i16) -> __m512i {
                _mm512_set1_epi16(v)
            }
            #[inline(always)]
            unsafe fn dpbusd(acc: __m512i, u: __m512i, s: __m512i) -> __m512i {
                if $vnni {
                    _mm512_dpbusd_epi32(acc, u, s)
                } else {
                    _mm512_add_epi32(
                        acc,
                        _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)),
                    )
                }
            }
            #[inline(always)]
            unsafe fn cvt(a: __m512i) -> __m512 {
                _mm512_cvtepi32_ps(a)
            }
            #[inline(always)]
            unsafe fn set1_f(v: f32) -> __m512 {
                _mm512_set1_ps(v)
            }
            #[inline(always)]
            unsafe fn mul(a: __m512, b: __m512) -> __m512 {
                _mm512_mul_ps(a, b)
            }
            #[inline(always)]
            unsafe fn neg(a: __m512) -> __m512 {
                _mm512_castsi512_ps(_mm512_xor_si512(
                    _mm512_castps_si512(a),
                    _mm512_set1_epi32(i32::MIN),
                ))
            }
            #[inline(always)]
            unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
                _mm512_fmadd_ps(a, b, c)
            }
            #[inline(always)]
            unsafe fn store(out: *mut f32, n: usize, v: __m512) {
                let mask: __mmask16 = if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 };
                unsafe { _mm512_mask_storeu_ps(out, mask, v) }
            }
        }
    };
}
isa512!(Avx512, false);
isa512!(Vnni, true);
