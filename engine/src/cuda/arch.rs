//! What each NVIDIA architecture computes in, for the matrix products that go through cuBLAS
//! (large batches: weights dequantized to tiles). Quantized matrix-vector kernels always
//! accumulate integers, and norms, softmax and the rest always run in f32.
//!
//! | compute capability | cards | tiles and cuBLAS inputs | why |
//! |---|---|---|---|
//! | 6.0 | P100 | f16 | full-rate fp16 |
//! | 6.1 | P40, P4, GTX 10xx | **f32** | fp16 runs at 1/64 rate on these |
//! | 7.0, 7.2, 7.5 | V100, T4, RTX 20xx | f16 | tensor cores take fp16 |
//! | 8.0 and newer | A100, RTX 30xx/40xx, L4, H100 | f16, bf16 allowed | tensor cores take bf16 too |
//!
//! Accumulation is f32 everywhere (cuBLAS `CUBLAS_COMPUTE_32F`), so f16 inputs lose only their
//! own rounding. Below 6.0 (Maxwell and older) nothing is supported: `dp4a` and fast fp16 are
//! missing and the CUDA 12 toolchain no longer targets them.

use std::fmt;

/// The element type of dequantized weight tiles and of cuBLAS's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeType {
    F32,
    F16,
    /// bf16 inputs are allowed (the weights were stored as BF16); others use f16.
    F16OrBf16,
}

impl fmt::Display for ComputeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::F16OrBf16 => "f16/bf16",
        })
    }
}

/// The compute type for a card, or why the card is not supported.
pub fn compute_type(cc: (u32, u32)) -> Result<ComputeType, String> {
    match cc {
        (major, _) if major < 6 => Err(format!(
            "compute capability {}.{} is older than Pascal (6.0); Joule's CUDA backend needs 6.0 \
             or newer (this card can still serve with --device cpu)",
            cc.0, cc.1
        )),
        (6, 1) => Ok(ComputeType::F32),
        (6, _) | (7, _) => Ok(ComputeType::F16),
        _ => Ok(ComputeType::F16OrBf16),
    }
}

/// Whether the card has `dp4a` (four int8 products in one instruction): 6.1 and newer.
pub fn has_dp4a(cc: (u32, u32)) -> bool {
    cc >= (6, 1)
}

/// NVRTC's name for the card's own architecture, e.g. "sm_61".
pub fn sm(cc: (u32, u32)) -> String {
    format!("sm_{}{}", cc.0, cc.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_architecture_gets_the_type_it_runs_fast() {
        assert_eq!(
            compute_type((6, 1)),
            Ok(ComputeType::F32),
            "P40: fp16 at 1/64 rate"
        );
        assert_eq!(compute_type((6, 0)), Ok(ComputeType::F16), "P100");
        assert_eq!(compute_type((7, 0)), Ok(ComputeType::F16), "V100");
        assert_eq!(compute_type((7, 5)), Ok(ComputeType::F16), "T4");
        assert_eq!(compute_type((8, 6)), Ok(ComputeType::F16OrBf16));
        assert_eq!(compute_type((9, 0)), Ok(ComputeType::F16OrBf16), "H100");
        let e = compute_type((5, 2)).unwrap_err();
        assert!(
            e.contains("older than Pascal") && e.contains("--device cpu"),
            "{e}"
        );
        assert!(!has_dp4a((6, 0)) && has_dp4a((6, 1)) && has_dp4a((9, 0)));
        assert_eq!(sm((8, 9)), "sm_89");
    }
}
