//! Quantized block formats and the dot products the matrix kernels are built from.
//!
//! Weights stay in their stored blocks: a row is never expanded to f32 to multiply it. Activations
//! feeding a quantized weight are quantized once per row to [`BlockQ8`] (32 int8 values with an f32
//! scale, like GGML's Q8_1) and the dot product runs on the integer blocks; float weights
//! (F32/F16/BF16) are dotted with the f32 activations directly. The SIMD level is chosen once at
//! run time ([`Kernels::detect`]): AVX-512 VNNI, AVX2+FMA+F16C, or the portable scalar code, which
//! is also the reference the SIMD paths are tested against.

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

use crate::tensor::DType;

/// Elements per activation block.
pub const QK: usize = 32;

/// One block of 32 activations quantized to int8: `x[i] ≈ d * qs[i]`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(8))]
pub struct BlockQ8 {
    /// Scale.
    pub d: f32,
    /// `d * sum(qs)`: folds the offsets of Q4_0/Q4_1/Q4_K into one multiply.
    pub s: f32,
    /// Sums of the two halves of `qs` (Q6_K's 16-element groups need them).
    pub half_sums: [i16; 2],
    pub qs: [i8; QK],
}

/// Quantizes one row of activations (`x.len()` a multiple of 32) into `out`.
pub fn quantize_row_q8(x: &[f32], out: &mut [BlockQ8]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (chunk, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sums = [0i32; 2];
        for (i, (q, v)) in b.qs.iter_mut().zip(chunk).enumerate() {
            *q = (v * id).round() as i8;
            sums[i / 16] += i32::from(*q);
        }
        b.d = d;
        b.s = d * (sums[0] + sums[1]) as f32;
        b.half_sums = [sums[0] as i16, sums[1] as i16];
    }
}

/// One activation row in both forms a dot product may want.
#[derive(Debug, Clone, Copy)]
pub struct ActRow<'a> {
    pub f: &'a [f32],
    pub q8: &'a [BlockQ8],
}

/// A dot product of one stored weight row with one activation row.
pub type DotFn = fn(&[u8], ActRow<'_>) -> f32;

/// The dot products for each stored type at the SIMD level of this CPU.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    pub level: &'static str,
    q4_0: DotFn,
    q4_1: DotFn,
    q8_0: DotFn,
    q4k: DotFn,
    q6k: DotFn,
    f32: DotFn,
    f16: DotFn,
    bf16: DotFn,
}

impl Kernels {
    /// The portable kernels.
    pub fn scalar() -> Self {
        Self {
            level: "scalar",
            q4_0: scalar::dot_q4_0,
            q4_1: scalar::dot_q4_1,
            q8_0: scalar::dot_q8_0,
            q4k: scalar::dot_q4k,
            q6k: scalar::dot_q6k,
            f32: scalar::dot_f32,
            f16: scalar::dot_f16,
            bf16: scalar::dot_bf16,
        }
    }

    /// The fastest kernels this CPU runs, detected once. `JOULE_SIMD=scalar|avx2` caps the level.
    pub fn detect() -> &'static Self {
        static K: OnceLock<Kernels> = OnceLock::new();
        K.get_or_init(|| {
            let cap = std::env::var("JOULE_SIMD").unwrap_or_default();
            #[cfg(target_arch = "x86_64")]
            if cap != "scalar" {
                if let Some(k) = x86::kernels(cap != "avx2") {
                    return k;
                }
            }
            let _ = cap;
            Self::scalar()
        })
    }

    /// The dot product for weights of `dtype`.
    pub fn dot(&self, dtype: DType) -> DotFn {
        match dtype {
            DType::Q4_0 => self.q4_0,
            DType::Q4_1 => self.q4_1,
            DType::Q8_0 => self.q8_0,
            DType::Q4K => self.q4k,
            DType::Q6K => self.q6k,
            DType::F32 => self.f32,
            DType::F16 => self.f16,
            DType::BF16 => self.bf16,
        }
    }
}

/// Whether weights of `dtype` are dotted with int8-quantized activations.
pub fn wants_q8(dtype: DType) -> bool {
    !matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// Expands one stored row to f32 (embedding lookups and tests; never the matmul path).
pub fn dequantize_row(dtype: DType, row: &[u8], out: &mut [f32]) {
    scalar::dequantize_row(dtype, row, out)
}

#[cfg(test)]
mod tests;
