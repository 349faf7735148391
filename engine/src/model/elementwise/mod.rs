//! Element-wise steps of the forward pass (RMSNorm, residual adds, SwiGLU), split across the
//! model's threads in fixed-size tasks so each element's arithmetic never depends on the split.

use std::sync::OnceLock;

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
pub(super) mod x86;

/// Rows or elements per parallel task of the element-wise steps below.
const ELEMS_PER_TASK: usize = 4096;

/// `out = x / rms(x) * w`, row by row (rows split across threads).
pub(super) fn rms_norm_into(x: &[f32], w: &[f32], eps: f32, dim: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(x.len(), 0.0);
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .with_min_len((ELEMS_PER_TASK / dim).max(1))
        .for_each(|(o, r)| {
            let ms = sum_squares(r) / dim as f32;
            let s = 1.0 / (ms + eps).sqrt();
            o.iter_mut()
                .zip(r)
                .zip(w)
                .for_each(|((o, x), w)| *o = x * s * w);
        });
}

/// The sum of squares of `r`, in eight interleaved partial sums (so it runs lane-parallel).
fn sum_squares(r: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = r.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `x += y`, element-wise.
pub(super) fn add_into(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(ELEMS_PER_TASK)
        .zip(y.par_chunks(ELEMS_PER_TASK))
        .for_each(|(x, y)| x.iter_mut().zip(y).for_each(|(x, y)| *x += y));
}

/// `out = silu(gate) * up`, element-wise (AVX2/FMA where present).
pub(super) fn swiglu_into(gate: &[f32], up: &[f32], out: &mut Vec<f32>) {
    out.clear();
    out.resize(gate.len(), 0.0);
    let f = swiglu_kernel();
    out.par_chunks_mut(ELEMS_PER_TASK)
        .zip(
            gate.par_chunks(ELEMS_PER_TASK)
                .zip(up.par_chunks(ELEMS_PER_TASK)),
        )
        .for_each(|(o, (g, u))| f(g, u, o));
}

type SwigluFn = fn(gate: &[f32], up: &[f32], out: &mut [f32]);

fn swiglu_kernel() -> SwigluFn {
    static K: OnceLock<SwigluFn> = OnceLock::new();
    *K.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if crate::quant::Kernels::detect().level != "scalar"
            && let Some(f) = x86::swiglu()
        {
            return f;
        }
        swiglu_scalar
    })
}

fn swiglu_scalar(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn the_simd_swiglu_matches_the_portable_one() {
        let mut r = Rng::new(9);
        for n in [1usize, 7, 8, 9, 100, 4099] {
            let g: Vec<f32> = (0..n).map(|_| r.symmetric(30.0)).collect();
            let u: Vec<f32> = (0..n).map(|_| r.symmetric(3.0)).collect();
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            swiglu_kernel()(&g, &u, &mut a);
            swiglu_scalar(&g, &u, &mut b);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
    }
}
