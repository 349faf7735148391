//! Portable reference kernels: dequantization of every stored type and the dot products with
//! [`super::QActs`] activations. The SIMD kernels must agree with these.

use half::{bf16, f16};

use super::{ActRow, QK};
use crate::tensor::DType;

#[inline]
pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Scale and min of Q4_K sub-block `j` (6-bit values packed into 12 bytes).
#[inline]
pub(super) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q6_K: the 256 6-bit values of one block, minus 32, in element order.
#[inline]
pub(super) fn q6k_values(b: &[u8], out: &mut [i8; 256]) {
    let (ql, qh) = (&b[..128], &b[128..192]);
    for half in 0..2 {
        let (ql, qh) = (&ql[half * 64..], &qh[half * 32..]);
        let o = &mut out[half * 128..];
        for l in 0..32 {
            o[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            o[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            o[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            o[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
}

/// Applies a one-row dot product to each of `out.len()` rows.
pub(super) fn rows(
    dot: fn(&[u8], ActRow<'_>) -> f32,
    w: &[u8],
    rb: usize,
    a: ActRow<'_>,
    out: &mut [f32],
) {
    for (r, o) in out.iter_mut().enumerate() {
        *o = dot(&w[r * rb..(r + 1) * rb], a);
    }
}

pub(super) fn dequantize_row(dtype: DType, row: &[u8], out: &mut [f32]) {
    let bb = dtype.block_bytes();
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        DType::Q4_0 | DType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(row.chunks_exact(bb)) {
                let d = f16_at(b, 0);
                let (m, qs) = if dtype == DType::Q4_1 {
                    (f16_at(b, 2), &b[4..20])
                } else {
                    (-8.0 * d, &b[2..18])
                };
                for j in 0..16 {
                    o[j] = d * f32::from(qs[j] & 0xF) + m;
                    o[j + 16] = d * f32::from(qs[j] >> 4) + m;
                }
            }
        }
        DType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(row.chunks_exact(bb)) {
                let d = f16_at(b, 0);
                for j in 0..QK {
                    o[j] = d * f32::from(b[2 + j] as i8);
                }
            }
        }
        DType::Q4K => {
            for (o, b) in out.chunks_exact_mut(256).zip(row.chunks_exact(bb)) {
                let (d, dmin, sc, qs) = (f16_at(b, 0), f16_at(b, 2), &b[4..16], &b[16..144]);
                for j in 0..8 {
                    let (s, m) = scale_min_k4(j, sc);
                    let (d, m) = (d * f32::from(s), dmin * f32::from(m));
                    let q = &qs[(j / 2) * 32..(j / 2) * 32 + 32];
                    for l in 0..32 {
                        let n = if j % 2 == 0 { q[l] & 0xF } else { q[l] >> 4 };
                        o[j * 32 + l] = d * f32::from(n) - m;
                    }
                }
            }
        }
        DType::Q6K => {
            let mut v = [0i8; 256];
            for (o, b) in out.chunks_exact_mut(256).zip(row.chunks_exact(bb)) {
                q6k_values(b, &mut v);
                let d = f16_at(b, 208);
                for (i, x) in o.iter_mut().enumerate() {
                    *x = d * f32::from(b[192 + i / 16] as i8) * f32::from(v[i]);
                }
            }
        }
    }
}

/// `sum(w[i] * q[i])` over one activation block starting at element `at`.
#[inline]
fn idot(w: impl Iterator<Item = i32>, a: &ActRow<'_>, at: usize) -> i32 {
    w.enumerate().map(|(i, w)| w * a.q(at + i)).sum()
}

pub(super) fn dot_q4_0(w: &[u8], a: ActRow<'_>) -> f32 {
    w.chunks_exact(18)
        .enumerate()
        .map(|(b, blk)| {
            let qs = &blk[2..18];
            let nib = qs
                .iter()
                .map(|&x| i32::from(x & 0xF))
                .chain(qs.iter().map(|&x| i32::from(x >> 4)));
            let d = f16_at(blk, 0);
            d * a.d[b] * idot(nib, &a, b * QK) as f32 - 8.0 * d * a.s[b]
        })
        .sum()
}

pub(super) fn dot_q4_1(w: &[u8], a: ActRow<'_>) -> f32 {
    w.chunks_exact(20)
        .enumerate()
        .map(|(b, blk)| {
            let qs = &blk[4..20];
            let nib = qs
                .iter()
                .map(|&x| i32::from(x & 0xF))
                .chain(qs.iter().map(|&x| i32::from(x >> 4)));
            f16_at(blk, 0) * a.d[b] * idot(nib, &a, b * QK) as f32 + f16_at(blk, 2) * a.s[b]
        })
        .sum()
}

pub(super) fn dot_q8_0(w: &[u8], a: ActRow<'_>) -> f32 {
    w.chunks_exact(34)
        .enumerate()
        .map(|(b, blk)| {
            f16_at(blk, 0)
                * a.d[b]
                * idot(blk[2..34].iter().map(|&x| i32::from(x as i8)), &a, b * QK) as f32
        })
        .sum()
}

pub(super) fn dot_q4k(w: &[u8], a: ActRow<'_>) -> f32 {
    w.chunks_exact(144)
        .enumerate()
        .map(|(k, blk)| {
            let (d, dmin, sc, qs) = (f16_at(blk, 0), f16_at(blk, 2), &blk[4..16], &blk[16..144]);
            let mut acc = 0f32;
            for j in 0..8 {
                let b = 8 * k + j;
                let (s, m) = scale_min_k4(j, sc);
                let bytes = &qs[(j / 2) * 32..(j / 2) * 32 + 32];
                let shift = if j % 2 == 0 { 0 } else { 4 };
                let dot = idot(
                    bytes.iter().map(|&x| i32::from((x >> shift) & 0xF)),
                    &a,
                    b * QK,
                );
                acc += d * f32::from(s) * a.d[b] * dot as f32 - dmin * f32::from(m) * a.s[b];
            }
            acc
        })
        .sum()
}

pub(super) fn dot_q6k(w: &[u8], a: ActRow<'_>) -> f32 {
    let mut v = [0i8; 256];
    w.chunks_exact(210)
        .enumerate()
        .map(|(k, blk)| {
            q6k_values(blk, &mut v);
            let d = f16_at(blk, 208);
            let mut acc = 0f32;
            for g in 0..16 {
                let b = 8 * k + g / 2;
                let dot = idot(
                    v[g * 16..g * 16 + 16].iter().map(|&x| i32::from(x)),
                    &a,
                    256 * k + 16 * g,
                );
                acc += d * f32::from(blk[192 + g] as i8) * a.d[b] * dot as f32;
            }
            acc
        })
        .sum()
}

fn dot_float(w: &[u8], a: &[f32], dtype: DType) -> f32 {
    let mut buf = [0f32; 64];
    let step = 64 * dtype.block_bytes();
    w.chunks(step)
        .zip(a.chunks(64))
        .map(|(wc, ac)| {
            let n = ac.len();
            dequantize_row(dtype, wc, &mut buf[..n]);
            buf[..n].iter().zip(ac).map(|(x, y)| x * y).sum::<f32>()
        })
        .sum()
}

pub(super) fn dot_f32(w: &[u8], a: ActRow<'_>) -> f32 {
    dot_float(w, a.f, DType::F32)
}
pub(super) fn dot_f16(w: &[u8], a: ActRow<'_>) -> f32 {
    dot_float(w, a.f, DType::F16)
}
pub(super) fn dot_bf16(w: &[u8], a: ActRow<'_>) -> f32 {
    dot_float(w, a.f, DType::BF16)
}
