//! Encodes f32 rows into the stored GGML block formats ([`quantize_row`]), for tools (the
//! `requantize` example, [`crate::testkit::requantize`]) and tests. Every [`DType`] is covered,
//! and [`super::dequantize_row`] reads the result back.
//!
//! Deterministic: the same input always gives the same bytes. No threads, no randomness, and
//! only plain f32 arithmetic in a fixed order (no fused multiply-adds). The quantized formats
//! follow GGML's reference quantizers (`quantize_row_*_ref`): Q8_0, Q4_0 and Q4_1 per block of
//! 32 from the block's extremes; Q4_K and Q6_K with GGML's small searches for each sub-block's
//! scale (`make_qkx2_quants`, `make_qx_quants`), then the sub-scales quantized against the
//! super-block scale and the values encoded again with the scales as stored. Block scales that
//! would overflow f16 saturate at ±65504 instead of becoming infinite. Floats (F16, BF16) round
//! to nearest, ties to even.
//!
//! Never on the inference path: the engine reads weights as stored and quantizes activations
//! with [`super::QActs`]. Nothing here is tuned for speed.

use half::{bf16, f16};

use super::QK;
use super::scalar::scale_min_k4;
use crate::tensor::DType;

/// Groups whose largest |x| is below this are all zero (GGML's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;
/// f16's largest finite value.
const F16_MAX: f32 = 65504.0;

/// Encodes `x` as consecutive blocks of `dtype`: `x.len() / block_len * block_bytes` bytes.
///
/// # Panics
/// If `x.len()` is not a multiple of `dtype.block_len()`.
pub fn quantize_row(dtype: DType, x: &[f32]) -> Vec<u8> {
    let bl = dtype.block_len();
    assert!(
        x.len().is_multiple_of(bl),
        "quantize_row: {} values are not whole {dtype} blocks of {bl}",
        x.len()
    );
    let mut out = Vec::with_capacity(x.len() / bl * dtype.block_bytes());
    match dtype {
        DType::F32 => {
            for v in x {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        DType::F16 => {
            for &v in x {
                put_f16(&mut out, f16::from_f32(v));
            }
        }
        DType::BF16 => {
            for &v in x {
                out.extend_from_slice(&bf16::from_f32(v).to_bits().to_le_bytes());
            }
        }
        DType::Q8_0 => {
            for b in x.chunks_exact(QK) {
                q8_0_block(b, &mut out);
            }
        }
        DType::Q4_0 => {
            for b in x.chunks_exact(QK) {
                q4_0_block(b, &mut out);
            }
        }
        DType::Q4_1 => {
            for b in x.chunks_exact(QK) {
                q4_1_block(b, &mut out);
            }
        }
        DType::Q4K => {
            for b in x.chunks_exact(256) {
                q4k_block(b, &mut out);
            }
        }
        DType::Q6K => {
            for b in x.chunks_exact(256) {
                q6k_block(b, &mut out);
            }
        }
    }
    debug_assert_eq!(out.len(), x.len() / bl * dtype.block_bytes());
    out
}

/// `v` as a stored f16 scale: rounded to nearest, saturating at f16's largest finite value.
fn scale_f16(v: f32) -> f16 {
    f16::from_f32(v.clamp(-F16_MAX, F16_MAX))
}

fn put_f16(out: &mut Vec<u8>, v: f16) {
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

/// GGML's `nearest_int`: rounds half to even (NaN gives 0).
#[inline]
fn nearest(v: f32) -> i32 {
    v.round_ties_even() as i32
}

/// The value of largest magnitude, sign kept (the first one on ties; 0 for an empty slice).
fn signed_amax(x: &[f32]) -> f32 {
    x.iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
}

/// Q8_0: `d = amax / 127`, `q = round(x / d)`.
fn q8_0_block(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(out, scale_f16(d));
    out.extend(
        x.iter()
            .map(|&v| (v * id).round().clamp(-127.0, 127.0) as i8 as u8),
    );
}

/// Q4_0: the value of largest magnitude maps to -8 (the end with the extra step),
/// `d = max / -8`, `q = min(15, trunc(x / d + 8.5))`.
fn q4_0_block(x: &[f32], out: &mut Vec<u8>) {
    let max = signed_amax(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(out, scale_f16(d));
    let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
    out.extend((0..QK / 2).map(|j| q(x[j]) | (q(x[j + QK / 2]) << 4)));
}

/// Q4_1: `d = (max - min) / 15`, `m = min`, `q = min(15, trunc((x - min) / d + 0.5))`.
fn q4_1_block(x: &[f32], out: &mut Vec<u8>) {
    let (min, max) = x
        .iter()
        .fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(out, scale_f16(d));
    put_f16(out, scale_f16(min));
    let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
    out.extend((0..QK / 2).map(|j| q(x[j]) | (q(x[j + QK / 2]) << 4)));
}

/// Packs the 6-bit scales and mins of Q4_K's 8 sub-blocks into 12 bytes: the inverse of
/// [`scale_min_k4`].
fn pack_scales_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut sc = [0u8; 12];
    for j in 0..8 {
        let (s, m) = (ls[j] & 63, lm[j] & 63);
        if j < 4 {
            sc[j] = s;
            sc[j + 4] = m;
        } else {
            sc[j + 4] = (s & 0xF) | ((m & 0xF) << 4);
            sc[j - 4] |= (s >> 4) << 6;
            sc[j] |= (m >> 4) << 6;
        }
    }
    sc
}

/// Q4_K (GGML's `quantize_row_q4_K_ref`): 8 sub-blocks of 32, each `x ≈ d*sc * q - dmin*m` with
/// `q` in 0..16 and 6-bit `sc`, `m`.
fn q4k_block(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0u8; 256];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    for (j, (xs, lj)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let av_x = (xs.iter().map(|v| v * v).sum::<f32>() / 32.0).sqrt();
        let mut w = [0f32; 32];
        for (w, v) in w.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) = make_qkx2_quants(xs, &w, lj);
    }
    // Scales are positive (the min is taken out) and mins are stored negated (>= 0).
    let max_scale = scales.iter().fold(0f32, |m, &s| if s > m { s } else { m });
    let max_min = mins.iter().fold(0f32, |m, &v| if v > m { v } else { m });
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        ls[j] = nearest(inv_scale * scales[j]).clamp(0, 63) as u8;
        lm[j] = nearest(inv_min * mins[j]).clamp(0, 63) as u8;
    }
    let sc = pack_scales_k4(&ls, &lm);
    let dh = scale_f16(max_scale / 63.0);
    let dminh = scale_f16(max_min / 63.0);
    let (df, dminf) = (dh.to_f32(), dminh.to_f32());
    // The values again, against the scales as stored.
    for (j, (xs, lj)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let (s, m) = scale_min_k4(j, &sc);
        let d = df * f32::from(s);
        if d == 0.0 {
            continue;
        }
        let dm = dminf * f32::from(m);
        for (q, &v) in lj.iter_mut().zip(xs) {
            *q = nearest((v + dm) / d).clamp(0, 15) as u8;
        }
    }
    put_f16(out, dh);
    put_f16(out, dminh);
    out.extend_from_slice(&sc);
    // Sub-blocks 2c and 2c+1 share bytes c*32..c*32+32: low nibble, high nibble.
    for c in l.chunks_exact(64) {
        out.extend(
            c[..32]
                .iter()
                .zip(&c[32..])
                .map(|(&lo, &hi)| lo | (hi << 4)),
        );
    }
}

/// GGML's `make_qkx2_quants` as Q4_K calls it (nmax 15, rmin -1, rdelta 0.1, 20 steps,
/// weighted squared error): the scale and the negated min of `x ≈ scale * l + min`, `min <= 0`,
/// with the levels `l` (0..=15) written to `l`. Returns `(scale, -min)`.
fn make_qkx2_quants(x: &[f32], w: &[f32], l: &mut [u8]) -> (f32, f32) {
    const NMAX: f32 = 15.0;
    const RMIN: f32 = -1.0;
    const RDELTA: f32 = 0.1;
    const NSTEP: u8 = 20;
    let quant = |t: f32| nearest(t).clamp(0, 15) as u8;
    let (mut min, mut max) = (x[0], x[0]);
    let (mut sum_w, mut sum_x) = (w[0], w[0] * x[0]);
    for (&v, &wi) in x.iter().zip(w).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += wi;
        sum_x += wi * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let iscale = NMAX / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for ((q, &v), &wi) in l.iter_mut().zip(x).zip(w) {
        *q = quant(iscale * (v - min));
        let diff = scale * f32::from(*q) + min - v;
        best_error += wi * (diff * diff);
    }
    let mut laux = [0u8; 32];
    let laux = &mut laux[..x.len()];
    // As in GGML, a better candidate's min shifts the candidates after it.
    for is in 0..=NSTEP {
        let iscale = (RMIN + RDELTA * f32::from(is) + NMAX) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for ((q, &v), &wi) in laux.iter_mut().zip(x).zip(w) {
            *q = quant(iscale * (v - min));
            let lf = f32::from(*q);
            sum_l += wi * lf;
            sum_l2 += wi * lf * lf;
            sum_xl += wi * lf * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let cur_error: f32 = laux
                .iter()
                .zip(x)
                .zip(w)
                .map(|((&q, &v), &wi)| {
                    let diff = this_scale * f32::from(q) + this_min - v;
                    wi * (diff * diff)
                })
                .sum();
            if cur_error < best_error {
                l.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// GGML's `make_qx_quants` as Q6_K calls it (nmax 32, weights `x²`): a signed scale with
/// `x ≈ scale * (l - 32)`, the value of largest magnitude near level 0 (-32), the levels `l`
/// (0..64) written to `l`.
fn make_qx_quants(x: &[f32], l: &mut [u8]) -> f32 {
    const NMAX: i32 = 32;
    let max = signed_amax(x);
    if max.abs() < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest(iscale * v).clamp(-NMAX, NMAX - 1);
    let sums = |iscale: f32| {
        x.iter().fold((0f32, 0f32), |(slx, sl2), &v| {
            let q = quant(iscale, v) as f32;
            let w = v * v;
            (slx + w * v * q, sl2 + w * q * q)
        })
    };
    let fill = |iscale: f32, l: &mut [u8]| {
        for (q, &v) in l.iter_mut().zip(x) {
            *q = (quant(iscale, v) + NMAX) as u8;
        }
    };
    let iscale = -(NMAX as f32) / max;
    fill(iscale, &mut *l);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(NMAX as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            fill(iscale, &mut *l);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q6_K (GGML's `quantize_row_q6_K_ref`): 16 groups of 16, `x ≈ d * sc * (q - 32)` with int8
/// `sc` and 6-bit `q`; the group scale of largest magnitude is stored as -128.
fn q6k_block(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0u8; 256];
    let mut scales = [0f32; 16];
    for ((s, xs), lg) in scales
        .iter_mut()
        .zip(x.chunks_exact(16))
        .zip(l.chunks_exact_mut(16))
    {
        *s = make_qx_quants(xs, lg);
    }
    let max_scale = signed_amax(&scales);
    let start = out.len();
    out.resize(start + DType::Q6K.block_bytes(), 0);
    if max_scale.abs() < GROUP_MAX_EPS {
        // All zero: zero bytes decode to zeros (d = 0).
        return;
    }
    let b = &mut out[start..];
    let iscale = -128.0 / max_scale;
    let dh = scale_f16(1.0 / iscale);
    b[208..210].copy_from_slice(&dh.to_bits().to_le_bytes());
    for (q, &s) in b[192..208].iter_mut().zip(&scales) {
        // Two's complement int8.
        *q = nearest(iscale * s).clamp(-128, 127) as u8;
    }
    // The values again, against the scales as stored.
    let df = dh.to_f32();
    for (j, (xs, lg)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let d = df * f32::from(b[192 + j] as i8);
        if d == 0.0 {
            continue;
        }
        for (q, &v) in lg.iter_mut().zip(xs) {
            *q = (nearest(v / d).clamp(-32, 31) + 32) as u8;
        }
    }
    // The inverse of `scalar::q6k_values`: per half of 128, low nibbles of elements l and l+64
    // in ql[l], of l+32 and l+96 in ql[l+32]; the top two bits of all four in qh[l].
    let (ql, rest) = b.split_at_mut(128);
    let qh = &mut rest[..64];
    for half in 0..2 {
        let lh = &l[128 * half..128 * half + 128];
        let ql = &mut ql[64 * half..64 * half + 64];
        let qh = &mut qh[32 * half..32 * half + 32];
        for i in 0..32 {
            let (q1, q2, q3, q4) = (lh[i], lh[i + 32], lh[i + 64], lh[i + 96]);
            ql[i] = (q1 & 0xF) | ((q3 & 0xF) << 4);
            ql[i + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
            qh[i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize_row;
    use crate::rng::Rng;

    const ALL: [DType; 8] = DType::ALL;

    /// Three super-blocks.
    const N: usize = 256 * 3;

    fn decode(dtype: DType, bytes: &[u8], n: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; n];
        dequantize_row(dtype, bytes, &mut out);
        out
    }

    use crate::testkit::rel_rms;

    /// A uniform row, and a row of rounder noise whose magnitude changes every 32 values (so
    /// the K-quants' sub-block scales differ).
    fn rows(seed: u64) -> [Vec<f32>; 2] {
        let mut rng = Rng::new(seed);
        let uniform: Vec<f32> = (0..N).map(|_| rng.symmetric(1.0)).collect();
        let mut mixed = Vec::with_capacity(N);
        for _ in 0..N / 32 {
            let m = 0.2 + rng.next_f32();
            for _ in 0..32 {
                let v = rng.symmetric(1.0) + rng.symmetric(1.0) + rng.symmetric(1.0);
                mixed.push(m * v);
            }
        }
        [uniform, mixed]
    }

    /// Relative RMS error a correct encoder stays under on [`rows`]. Expected: f16 ~2e-4,
    /// bf16 ~2e-3, Q8_0 ~5e-3 (step amax/127), Q6_K ~0.015 (step ~amax/32 per 16), Q4_K ~0.06,
    /// Q4_0/Q4_1 ~0.07 (16 levels per 32); a wrong layout gives errors near 1.
    fn bound(dtype: DType) -> f64 {
        match dtype {
            DType::F32 => 0.0,
            DType::F16 => 1e-3,
            DType::BF16 => 1e-2,
            DType::Q8_0 => 0.01,
            DType::Q6K => 0.025,
            DType::Q4K => 0.1,
            DType::Q4_0 | DType::Q4_1 => 0.12,
        }
    }

    #[test]
    fn decoded_rows_are_within_the_format_error_and_encoding_is_deterministic() {
        for seed in 1..4u64 {
            for (kind, x) in rows(seed).iter().enumerate() {
                for dtype in ALL {
                    let q = quantize_row(dtype, x);
                    assert_eq!(q.len(), N / dtype.block_len() * dtype.block_bytes());
                    assert_eq!(q, quantize_row(dtype, x), "{dtype} is not deterministic");
                    let y = decode(dtype, &q, N);
                    let err = rel_rms(&y, x);
                    assert!(
                        err <= bound(dtype),
                        "{dtype} row {kind} seed {seed}: relative RMS error {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn encoding_a_decoded_row_again_gives_the_same_bytes() {
        // Q8_0, Q4_0 and Q4_1 recover the stored scale exactly from the decoded extremes; the
        // K-quants' searches may settle elsewhere, so they are not checked.
        for (kind, x) in rows(9).iter().enumerate() {
            for dtype in [
                DType::F32,
                DType::F16,
                DType::BF16,
                DType::Q8_0,
                DType::Q4_0,
                DType::Q4_1,
            ] {
                let q = quantize_row(dtype, x);
                let again = quantize_row(dtype, &decode(dtype, &q, N));
                assert!(
                    q == again,
                    "{dtype} row {kind}: re-encoding changed the bytes"
                );
            }
        }
    }

    #[test]
    fn zeros_encode_to_zeros() {
        let x = vec![0f32; N];
        for dtype in ALL {
            let y = decode(dtype, &quantize_row(dtype, &x), N);
            assert!(y.iter().all(|&v| v == 0.0), "{dtype}: {y:?}");
        }
    }

    #[test]
    fn one_huge_value_stays_finite_and_close() {
        let [mut x, _] = rows(5);
        x[300] = 1e4;
        for dtype in ALL {
            let y = decode(dtype, &quantize_row(dtype, &x), N);
            assert!(y.iter().all(|v| v.is_finite()), "{dtype}: not finite");
            assert!(
                (y[300] - 1e4).abs() < 100.0,
                "{dtype}: the huge value decoded as {}",
                y[300]
            );
            // The last super-block, away from it, keeps its precision.
            let err = rel_rms(&y[512..], &x[512..]);
            assert!(err <= bound(dtype), "{dtype}: far block error {err}");
        }
    }

    #[test]
    fn q4_k_scale_packing_inverts_scale_min_k4() {
        let mut rng = Rng::new(3);
        for _ in 0..200 {
            let mut ls = [0u8; 8];
            let mut lm = [0u8; 8];
            rng.fill_bytes(&mut ls);
            rng.fill_bytes(&mut lm);
            let (ls, lm) = (ls.map(|v| v & 63), lm.map(|v| v & 63));
            let sc = pack_scales_k4(&ls, &lm);
            for j in 0..8 {
                assert_eq!(scale_min_k4(j, &sc), (ls[j], lm[j]), "sub-block {j}");
            }
        }
    }
}
