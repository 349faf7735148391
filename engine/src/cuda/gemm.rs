//! Matrix products for steps with many rows (prefill chunks, large decode batches) through
//! cuBLAS: weights dequantized, a tile of rows at a time, into the card's compute type (see
//! [`super::arch`]), then one `cublasGemmEx` per tile with f32 accumulation and f32 output.
//!
//! - Float weights already in the compute type (F16 on f16 cards, BF16 on bf16 cards, F32 on
//!   any) go to cuBLAS as stored: no tile.
//! - F32 weights, and every weight on sm_61 (P40: fp16 at 1/64 rate), multiply in f32 (SGEMM,
//!   no TF32), which loses nothing.
//! - With 16-bit inputs the activations are split into two halves, hi = round(x) and
//!   lo = round(x - hi), and multiplied as one product over twice the columns, then summed:
//!   about 22 bits of each activation survive (for |x| above 2^-3; below, lo is subnormal and
//!   the absolute error is about 3e-8), so only the weights' own rounding is lost. Known
//!   limit: an activation of 65520 or more overflows f16 (a per-row power-of-two scale would
//!   remove it; not done yet).
//!   Products with many rows are bound by reading the weights, so the extra columns cost little.
//!
//! A tile holds at most [`TILE_ELEMS`] values (16 MiB in f16), small enough to stay in L2 on
//! Ampere and Hopper between the dequantizing kernel and the product that reads it.

use std::ffi::c_void;

use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::arch::ComputeType;
use super::runtime::{Gpu, GpuWeight, grid, suffix};
use crate::tensor::DType;

/// The most values one dequantized tile holds.
pub const TILE_ELEMS: usize = 8 << 20;

/// What a product's inputs are converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    F32 = 0,
    F16 = 1,
    Bf16 = 2,
}

impl Kind {
    fn bytes(self) -> usize {
        if self == Kind::F32 { 4 } else { 2 }
    }
    fn cuda(self) -> cudaDataType {
        match self {
            Kind::F32 => cudaDataType::CUDA_R_32F,
            Kind::F16 => cudaDataType::CUDA_R_16F,
            Kind::Bf16 => cudaDataType::CUDA_R_16BF,
        }
    }
    /// The type a weight of `dtype` is multiplied in on a card computing in `compute`.
    pub fn for_weight(compute: ComputeType, dtype: DType) -> Kind {
        match (compute, dtype) {
            (ComputeType::F32, _) | (_, DType::F32) => Kind::F32,
            (ComputeType::F16OrBf16, DType::BF16) => Kind::Bf16,
            _ => Kind::F16,
        }
    }
    /// Whether a weight of `dtype` is already in this type (no tile needed).
    pub(crate) fn stored_as(self, dtype: DType) -> bool {
        matches!(
            (self, dtype),
            (Kind::F32, DType::F32) | (Kind::F16, DType::F16) | (Kind::Bf16, DType::BF16)
        )
    }
}

/// cuBLAS on the GPU's stream, when libcublas could be loaded.
pub fn open_blas(
    gpu_stream: &std::sync::Arc<cudarc::driver::CudaStream>,
) -> Result<CudaBlas, String> {
    // SAFETY: only tries to open the library; cudarc would panic on first use otherwise.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(
            "libcublas was not found (install the CUDA toolkit's cuBLAS, or the pip \
                    wheel nvidia-cublas-cu12, and put its lib folder on LD_LIBRARY_PATH)"
                .into(),
        );
    }
    CudaBlas::new(gpu_stream.clone()).map_err(|e| format!("cuBLAS: {e}"))
}

impl Gpu {
    /// out[t * rows + r] = dot(w row r, x row t) for t < ntok, through cuBLAS (see the module
    /// doc). Errors when cuBLAS is not loaded; callers check [`Gpu::blas`] first.
    pub fn gemm(
        &self,
        w: &GpuWeight,
        x: &CudaSlice<f32>,
        ntok: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), String> {
        self.gemm_tiled(w, x, ntok, out, TILE_ELEMS)
    }

    /// [`Gpu::gemm`] with tiles of at most `tile_elems` values (tests use small ones).
    pub fn gemm_tiled(
        &self,
        w: &GpuWeight,
        x: &CudaSlice<f32>,
        ntok: usize,
        out: &mut CudaSlice<f32>,
        tile_elems: usize,
    ) -> Result<(), String> {
        let blas = self.blas().ok_or("cuBLAS is not loaded")?;
        // cuBLAS calls run in the calling thread's current context (kernel launches bind it
        // themselves; these do not).
        self.stream()
            .context()
            .bind_to_thread()
            .map_err(super::runtime::err)?;
        let (rows, cols) = (w.rows, w.cols);
        if out.len() < ntok * rows || x.len() < ntok * cols || ntok == 0 || rows == 0 || cols == 0 {
            return Err(format!(
                "gemm {rows}x{cols} over {ntok} tokens: buffers of {} and {} values are too small",
                x.len(),
                out.len()
            ));
        }
        let kind = Kind::for_weight(self.compute, w.dtype);
        // The activations: f32 as they are, or split into 16-bit hi and lo halves.
        let split = kind != Kind::F32;
        let ncols = if split { 2 * ntok } else { ntok };
        let halves = if split {
            let mut h = self.zeros::<u16>(2 * ntok * cols)?;
            let (n, k) = ((ntok * cols) as i64, kind as i32);
            let mut b = self.stream().launch_builder(self.f("split_acts"));
            b.arg(x).arg(&n).arg(&mut h).arg(&k);
            // SAFETY: h holds 2n values, x at least n (checked above).
            unsafe { b.launch(LaunchConfig::for_num_elems((ntok * cols) as u32)) }
                .map_err(super::runtime::err)?;
            Some(h)
        } else {
            None
        };
        let mut sums = if split {
            Some(self.zeros::<f32>(ncols * rows)?)
        } else {
            None
        };

        let stream = self.stream();
        let (b_ptr, _b) = match &halves {
            Some(h) => h.device_ptr(stream),
            None => x.device_ptr(stream),
        };
        let (c_ptr, _c) = match &mut sums {
            Some(s) => s.device_ptr_mut(stream),
            None => out.device_ptr_mut(stream),
        };
        let product = |a: u64, r0: usize, m: usize| -> Result<(), String> {
            let (alpha, beta) = (1.0f32, 0.0f32);
            // Row-major W (rows x cols) is column-major cols x rows: C = W^T-as-stored * B.
            // SAFETY: a holds m rows of cols values of `kind`; B ncols rows of cols values;
            // C has ldc = rows and ncols columns, and r0 + m <= rows.
            unsafe {
                cudarc::cublas::result::gemm_ex(
                    *blas.handle(),
                    cublasOperation_t::CUBLAS_OP_T,
                    cublasOperation_t::CUBLAS_OP_N,
                    m as i32,
                    ncols as i32,
                    cols as i32,
                    (&alpha as *const f32).cast::<c_void>(),
                    a as *const c_void,
                    kind.cuda(),
                    cols as i32,
                    b_ptr as *const c_void,
                    kind.cuda(),
                    cols as i32,
                    (&beta as *const f32).cast::<c_void>(),
                    (c_ptr + (r0 * 4) as u64) as *mut c_void,
                    cudaDataType::CUDA_R_32F,
                    rows as i32,
                    cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| format!("cuBLAS gemm {m}x{cols} by {ncols}: {e}"))
        };

        if kind.stored_as(w.dtype) {
            let (a, _a) = w.data().device_ptr(stream);
            product(a, 0, rows)?;
        } else {
            // A launch has at most 65535 blocks in y: one per tile row.
            let per = (tile_elems / cols).clamp(1, rows.min(65535));
            let mut tile = self.zeros::<u8>(per * cols * kind.bytes())?;
            let row_bytes = (cols / w.dtype.block_len() * w.dtype.block_bytes()) as i64;
            let name = format!("tile_{}", suffix(w.dtype));
            for r0 in (0..rows).step_by(per) {
                let m = per.min(rows - r0);
                let (first, n, c, k) = (r0 as i32, m as i32, cols as i32, kind as i32);
                let cfg = LaunchConfig {
                    grid_dim: (grid(cols, 256), m as u32, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                let mut b = stream.launch_builder(self.f(&name));
                b.arg(w.data())
                    .arg(&row_bytes)
                    .arg(&first)
                    .arg(&n)
                    .arg(&c)
                    .arg(&mut tile)
                    .arg(&k);
                // SAFETY: rows first..first + m exist in w; the tile holds m * cols values.
                unsafe { b.launch(cfg) }.map_err(super::runtime::err)?;
                let (a, _a) = tile.device_ptr(stream);
                product(a, r0, m)?;
            }
        }
        drop((_b, _c));

        if let Some(s) = &sums {
            let n = (ntok * rows) as i64;
            let lo = s.slice(ntok * rows..);
            let mut b = stream.launch_builder(self.f("add2"));
            b.arg(s).arg(&lo).arg(out).arg(&n);
            // SAFETY: s holds 2n values, out at least n (checked above).
            unsafe { b.launch(LaunchConfig::for_num_elems((ntok * rows) as u32)) }
                .map_err(super::runtime::err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_multiply_in_the_cards_type_and_float_weights_skip_the_tile() {
        use ComputeType::*;
        assert_eq!(Kind::for_weight(F32, DType::Q4_0), Kind::F32, "P40");
        assert_eq!(Kind::for_weight(F32, DType::F16), Kind::F32, "P40");
        assert_eq!(Kind::for_weight(F16, DType::Q4K), Kind::F16);
        assert_eq!(
            Kind::for_weight(F16, DType::BF16),
            Kind::F16,
            "V100 has no bf16"
        );
        assert_eq!(Kind::for_weight(F16OrBf16, DType::BF16), Kind::Bf16);
        assert_eq!(Kind::for_weight(F16OrBf16, DType::Q8_0), Kind::F16);
        assert_eq!(Kind::for_weight(F16OrBf16, DType::F32), Kind::F32);
        assert!(Kind::F16.stored_as(DType::F16) && Kind::Bf16.stored_as(DType::BF16));
        assert!(!Kind::F16.stored_as(DType::Q8_0) && !Kind::F16.stored_as(DType::BF16));
    }
}
