//! Quantized block formats and the dot products the matrix kernels are built from.
//!
//! Weights stay in their stored blocks: a row is never expanded to f32 to multiply it. Activations
//! feeding a quantized weight are quantized once per row, per block of 32, to 16-bit integers
//! split in two int8 planes (`q = 255 * hi + lo`, [`QActs`]), so the products run on the int8
//! dot instructions (VNNI `vpdpbusd`, AVX2 `vpmaddubsw`) twice while the activation rounding error
//! stays 256 times below plain int8 (GGML's Q8_1): logits stay within 1e-3 of the top logit of
//! an f64 reference ([`ActBits::Int8`] opts into GGML's precision instead).
//! Float weights (F32/F16/BF16) are dotted with the f32 activations directly.
//!
//! The SIMD level ([`Level`]) is chosen once per process ([`Kernels::detect`]): the best this
//! CPU runs, or a lower one forced with `JOULE_SIMD=scalar|avx2|avx512|avx512-vnni`. At every
//! x86 level, quantized matrices (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K) are tiled at load time by
//! [`pack`] and run 16 rows per tile against several tokens per pass ([`tiled`]); the portable
//! scalar code runs stored rows and is the reference the SIMD paths are tested against.

mod actq;
mod level;
pub mod pack;
pub mod quantize;
mod scalar;
pub mod tiled;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

pub use level::Level;

use std::sync::OnceLock;

use crate::tensor::DType;

/// Elements per activation block.
pub const QK: usize = 32;
/// Largest |q| of a quantized activation: both planes stay within ±127.
pub const QMAX: f32 = 127.0 * 255.0;

/// How finely activations feeding quantized weights are rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActBits {
    /// 16-bit (`255 * hi + lo`): logits within 1e-3 of the top logit of an f64 reference.
    #[default]
    Int16,
    /// 8-bit, GGML's precision (the `lo` plane is zero): the tiled kernels skip half their
    /// integer work, and logits move by up to ~0.15 of the top logit (SmolLM2-135M).
    Int8,
}

impl ActBits {
    pub const ALL: [ActBits; 2] = [ActBits::Int16, ActBits::Int8];

    pub fn name(self) -> &'static str {
        match self {
            ActBits::Int16 => "int16",
            ActBits::Int8 => "int8",
        }
    }

    /// `int16` or `int8`; anything else is an error that says what to write instead.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("{s:?} is not an activation precision: use int16 or int8"))
    }
}

impl std::fmt::Display for ActBits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `n` rows of activations quantized per block of 32: `x ≈ d * (255 * hi + lo)`.
#[derive(Debug, Default, Clone)]
pub struct QActs {
    /// The precision [`QActs::quantize`] rounds to; at [`ActBits::Int8`] `lo` is all zeros
    /// and `q = 255 * hi`.
    pub bits: ActBits,
    /// The last `quantize` ran at [`ActBits::Int8`]: `lo` is zero (what rows report as
    /// `coarse`, so changing `bits` afterwards cannot make a kernel skip a non-zero plane).
    lo_zero: bool,
    pub hi: Vec<i8>,
    pub lo: Vec<i8>,
    /// Scale per block.
    pub d: Vec<f32>,
    /// `d * sum(q)` per block: folds the offsets of Q4_0/Q4_1/Q4_K/Q8_0 into one multiply.
    pub s: Vec<f32>,
    /// `sum(q)` of each half block (Q6_K's 16-element groups need them).
    pub h16: Vec<i32>,
}

impl QActs {
    /// Quantizes `x` (rows of `cols`, a multiple of 32) into `self`, reusing its buffers.
    /// Large inputs are split over the current rayon pool; each block's result is the same
    /// however the work is split.
    pub fn quantize(&mut self, x: &[f32], cols: usize) {
        use rayon::prelude::*;
        let nb = x.len() / QK;
        self.hi.resize(x.len(), 0);
        self.lo.resize(x.len(), 0);
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
        self.h16.resize(2 * nb, 0);
        debug_assert_eq!(cols % QK, 0);
        // 64 blocks (2048 values) per task.
        const B: usize = 64;
        static BLOCKS: OnceLock<actq::BlocksFn> = OnceLock::new();
        let blocks = *BLOCKS.get_or_init(actq::blocks_fn);
        let int8 = self.bits == ActBits::Int8;
        self.lo_zero = int8;
        (
            x.par_chunks(QK * B),
            self.hi.par_chunks_mut(QK * B),
            self.lo.par_chunks_mut(QK * B),
            self.d.par_chunks_mut(B),
            self.s.par_chunks_mut(B),
            self.h16.par_chunks_mut(2 * B),
        )
            .into_par_iter()
            .with_min_len(4)
            .for_each(|(x, hi, lo, d, s, h16)| {
                blocks(x, hi, lo, d, s, h16);
                if int8 {
                    actq::drop_lo(hi, lo, d, s, h16);
                }
            });
    }

    /// Row `t` of rows `cols` wide, with its f32 form `f`.
    pub fn row<'a>(&'a self, f: &'a [f32], t: usize, cols: usize) -> ActRow<'a> {
        let nb = cols / QK;
        if self.d.len() < (t + 1) * nb {
            return ActRow {
                f,
                hi: &[],
                lo: &[],
                d: &[],
                s: &[],
                h16: &[],
                coarse: false,
            };
        }
        ActRow {
            f,
            hi: &self.hi[t * cols..(t + 1) * cols],
            lo: &self.lo[t * cols..(t + 1) * cols],
            d: &self.d[t * nb..(t + 1) * nb],
            s: &self.s[t * nb..(t + 1) * nb],
            h16: &self.h16[2 * t * nb..2 * (t + 1) * nb],
            coarse: self.lo_zero,
        }
    }
}

/// One activation row in both forms a dot product may want.
#[derive(Debug, Clone, Copy)]
pub struct ActRow<'a> {
    pub f: &'a [f32],
    pub hi: &'a [i8],
    pub lo: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [f32],
    pub h16: &'a [i32],
    /// `lo` is all zeros ([`ActBits::Int8`]): a kernel may skip it. Set only by
    /// [`QActs::row`], from how the rows were quantized.
    pub(crate) coarse: bool,
}

impl<'a> ActRow<'a> {
    /// The row without its first `n` blocks (a kernel's tail).
    #[inline]
    pub fn skip_blocks(&self, n: usize) -> ActRow<'a> {
        ActRow {
            f: self.f.get(n * QK..).unwrap_or_default(),
            hi: &self.hi[n * QK..],
            lo: &self.lo[n * QK..],
            d: &self.d[n..],
            s: &self.s[n..],
            h16: &self.h16[2 * n..],
            coarse: self.coarse,
        }
    }

    /// The 16-bit value of element `i`.
    #[inline]
    pub fn q(&self, i: usize) -> i32 {
        255 * i32::from(self.hi[i]) + i32::from(self.lo[i])
    }
}

/// Dot products of consecutive stored weight rows (`rows`, each `row_bytes` long) with one
/// activation row: `out[r] = dot(rows[r], act)` for `r < out.len()`.
pub type DotFn = fn(rows: &[u8], row_bytes: usize, act: ActRow<'_>, out: &mut [f32]);

/// One tile of a matrix tiled by [`pack::tile_matrix`] (16 rows, every block) against every
/// activation row: `out[t * stride + j] = dot(row j, acts[t])` for the tile's first `lanes` rows.
///
/// # Safety
/// `out` must be valid for writes at `t * stride + j` for every `t < acts.len()`, `j < lanes`.
pub type TileFn =
    unsafe fn(tile: &[u8], lanes: usize, acts: &[ActRow<'_>], out: *mut f32, stride: usize);

/// The dot products for each stored type at the SIMD level of this CPU.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    /// [`Level::name`] of `simd`.
    pub level: &'static str,
    pub simd: Level,
    q4_0: DotFn,
    q4_1: DotFn,
    q8_0: DotFn,
    q4k: DotFn,
    q6k: DotFn,
    f32: DotFn,
    f16: DotFn,
    bf16: DotFn,
    /// Kernels over matrices tiled by [`pack::tile_matrix`], where this level has them.
    tiled: fn(DType) -> Option<TileFn>,
}

impl Kernels {
    /// The portable kernels.
    pub fn scalar() -> Self {
        Self {
            level: "scalar",
            simd: Level::Scalar,
            q4_0: |w, rb, a, o| scalar::rows(scalar::dot_q4_0, w, rb, a, o),
            q4_1: |w, rb, a, o| scalar::rows(scalar::dot_q4_1, w, rb, a, o),
            q8_0: |w, rb, a, o| scalar::rows(scalar::dot_q8_0, w, rb, a, o),
            q4k: |w, rb, a, o| scalar::rows(scalar::dot_q4k, w, rb, a, o),
            q6k: |w, rb, a, o| scalar::rows(scalar::dot_q6k, w, rb, a, o),
            f32: |w, rb, a, o| scalar::rows(scalar::dot_f32, w, rb, a, o),
            f16: |w, rb, a, o| scalar::rows(scalar::dot_f16, w, rb, a, o),
            bf16: |w, rb, a, o| scalar::rows(scalar::dot_bf16, w, rb, a, o),
            tiled: |_| None,
        }
    }

    /// The kernels of `level`, or why this CPU cannot run them.
    pub fn at(level: Level) -> Result<Self, String> {
        Level::choose(level.name())?;
        #[cfg(target_arch = "x86_64")]
        if level != Level::Scalar {
            return Ok(x86::kernels(level));
        }
        Ok(Self::scalar())
    }

    /// The kernels `JOULE_SIMD` asks for (the best this CPU runs when unset), chosen once per
    /// process; an unknown or unsupported level is an error naming what to set instead.
    pub fn select() -> Result<&'static Self, String> {
        static K: OnceLock<Result<Kernels, String>> = OnceLock::new();
        K.get_or_init(|| Level::from_env().and_then(Self::at))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The kernels of this process: [`Kernels::select`]'s, or the best this CPU runs where
    /// `JOULE_SIMD` is bad (whatever loads a model has refused it already, through `select`).
    pub fn detect() -> &'static Self {
        static BEST: OnceLock<Kernels> = OnceLock::new();
        Self::select().unwrap_or_else(|_| {
            BEST.get_or_init(|| Self::at(Level::best()).unwrap_or_else(|_| Self::scalar()))
        })
    }

    /// The dot product for weights of `dtype` stored as in the file.
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

    /// The kernel over tiled matrices of `dtype`, where this level tiles them.
    pub fn tile(&self, dtype: DType) -> Option<TileFn> {
        (self.tiled)(dtype)
    }
}

/// Whether weights of `dtype` are dotted with integer-quantized activations.
pub fn wants_q(dtype: DType) -> bool {
    !matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// Expands one stored row to f32 (embedding lookups and tests; never the matmul path).
pub fn dequantize_row(dtype: DType, row: &[u8], out: &mut [f32]) {
    scalar::dequantize_row(dtype, row, out)
}

#[cfg(test)]
mod tests;
