//! Load-time tiling of quantized matrices for the batched kernels of every SIMD level: rows are
//! taken 16 at a time (a tile; the last one padded with zero rows) and interleaved block by
//! block, so one 64-byte load holds four consecutive weights of each of the 16 rows, one row per
//! 32-bit lane (a 256-bit level reads it as two halves of eight lanes). A dot-product instruction
//! against four activation bytes broadcast to every lane then advances 16 (or 8) row dot
//! products at once: each lane of the result is one output, and no horizontal sums are needed.
//!
//! Per tile and stored block (`e_j[k]` = integer weight `k` of row `j` in a 32-weight
//! sub-block, `0 <= k < 32`), "a nibble group" is four 64-byte vectors where vector `c`, lane
//! `j`, byte `i` is `e_j[4c + i] | e_j[16 + 4c + i] << 4` (low nibbles: weights 0..16, high:
//! 16..32):
//! - Q4_0: `d[16]` (f16), one nibble group;
//! - Q4_1: `d[16]`, `m[16]` (f16), one nibble group;
//! - Q8_0: `d[16]`, then eight 64-byte vectors; vector `c`, lane `j`, byte `i` is the signed
//!   `e_j[4c + i]`;
//! - Q4_K (256 weights): `d[16]`, `dmin[16]` (f16), `scale[8][16]`, `min[8][16]` (u8, the
//!   6-bit values unpacked), then eight nibble groups (one per sub-block of 32);
//! - Q6_K (256 weights): `d[16]` (f16), `scale[16][16]` (i8, per group of 16), then per
//!   sub-block of 32 a nibble group of the low four bits and two 64-byte vectors of the high
//!   two bits: vector `h`, lane `j`, byte `i`, bits `2s..2s + 2` are the high bits of weight
//!   `4(4h + s) + i` (stored unsigned, 0..63: the kernel takes off 32).
//!
//! Q4_0, Q4_1, Q8_0 and Q6_K tiles take exactly their 16 stored blocks' bytes; Q4_K's take 64
//! bytes more (unpacked scales), 2.8%.

use crate::tensor::DType;

/// Rows per tile: the 32-bit lanes of a 512-bit register.
pub const TILE: usize = 16;

/// Whether matrices of `dtype` have a tiled layout.
pub fn tiles(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::Q4_0 | DType::Q4_1 | DType::Q8_0 | DType::Q4K | DType::Q6K
    )
}

/// Bytes of one tile-block: 16 rows of one stored block.
pub const fn tile_block_bytes(dtype: DType) -> usize {
    match dtype {
        DType::Q4K => TILE * 148,
        _ => TILE * dtype.block_bytes(),
    }
}

/// Bytes per row of a tiled matrix `cols` wide (padding rows count as rows).
pub fn tiled_row_bytes(dtype: DType, cols: usize) -> usize {
    cols / dtype.block_len() * tile_block_bytes(dtype) / TILE
}

/// Byte offsets inside a tile-block (see the module doc).
pub mod layout {
    use super::TILE;
    /// Q4_0 / Q4_1 / Q8_0: integer weights after the scales (and mins).
    pub const Q4_0_Q: usize = 2 * TILE;
    pub const Q4_1_M: usize = 2 * TILE;
    pub const Q4_1_Q: usize = 4 * TILE;
    pub const Q8_0_Q: usize = 2 * TILE;
    /// Q4_K.
    pub const Q4K_DMIN: usize = 2 * TILE;
    pub const Q4K_SC: usize = 4 * TILE;
    pub const Q4K_MIN: usize = Q4K_SC + 8 * TILE;
    pub const Q4K_Q: usize = Q4K_MIN + 8 * TILE;
    /// Q6_K: each sub-block is a nibble group then the high bits.
    pub const Q6K_SC: usize = 2 * TILE;
    pub const Q6K_Q: usize = Q6K_SC + 16 * TILE;
    pub const Q6K_SUB: usize = 6 * 64;
    /// A nibble group.
    pub const GROUP: usize = 4 * 64;
}

/// Bytes of `rows` stored rows of `row_bytes` once tiled (padding rows included).
pub fn tiled_len(dtype: DType, rows: usize, row_bytes: usize) -> usize {
    rows.div_ceil(TILE) * (row_bytes / dtype.block_bytes()) * tile_block_bytes(dtype)
}

/// Tiles `rows` stored rows (`src`, `rows * row_bytes` bytes, blocks of `dtype`).
pub fn tile_matrix(dtype: DType, rows: usize, row_bytes: usize, src: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; tiled_len(dtype, rows, row_bytes)];
    tile_into(dtype, rows, row_bytes, src, &mut out);
    out
}

/// [`tile_matrix`] into `out` (zeroed, [`tiled_len`] bytes).
pub fn tile_into(dtype: DType, rows: usize, row_bytes: usize, src: &[u8], out: &mut [u8]) {
    assert!(tiles(dtype) && src.len() == rows * row_bytes);
    assert_eq!(out.len(), tiled_len(dtype, rows, row_bytes));
    let bb = dtype.block_bytes();
    let nb = row_bytes / bb;
    let tb = tile_block_bytes(dtype);
    let zero = vec![0u8; bb];
    for (t, tile) in out.chunks_exact_mut(nb * tb).enumerate() {
        for (b, dst) in tile.chunks_exact_mut(tb).enumerate() {
            for j in 0..TILE {
                let r = t * TILE + j;
                let blk = if r < rows {
                    &src[r * row_bytes + b * bb..][..bb]
                } else {
                    &zero[..]
                };
                put_lane(dtype, blk, j, dst);
            }
        }
    }
}

/// Writes stored block `blk` as lane `j` of a tile-block.
fn put_lane(dtype: DType, blk: &[u8], j: usize, dst: &mut [u8]) {
    use layout::*;
    dst[2 * j..2 * j + 2].copy_from_slice(&blk[..2]);
    let mut e = [0u8; 32];
    match dtype {
        DType::Q4_1 => {
            dst[Q4_1_M + 2 * j..][..2].copy_from_slice(&blk[2..4]);
            unpack_nibbles(&blk[4..20], &mut e);
            put_group(&e, j, &mut dst[Q4_1_Q..]);
        }
        DType::Q4_0 => {
            unpack_nibbles(&blk[2..18], &mut e);
            put_group(&e, j, &mut dst[Q4_0_Q..]);
        }
        DType::Q8_0 => {
            let q = &mut dst[Q8_0_Q..];
            for c in 0..8 {
                q[64 * c + 4 * j..][..4].copy_from_slice(&blk[2 + 4 * c..][..4]);
            }
        }
        DType::Q4K => {
            dst[Q4K_DMIN + 2 * j..][..2].copy_from_slice(&blk[2..4]);
            for s in 0..8 {
                let (sc, m) = super::scalar::scale_min_k4(s, &blk[4..16]);
                dst[Q4K_SC + TILE * s + j] = sc;
                dst[Q4K_MIN + TILE * s + j] = m;
                let q = &blk[16 + (s / 2) * 32..][..32];
                for (o, &x) in e.iter_mut().zip(q) {
                    *o = if s % 2 == 0 { x & 0xF } else { x >> 4 };
                }
                put_group(&e, j, &mut dst[Q4K_Q + GROUP * s..]);
            }
        }
        DType::Q6K => {
            dst[2 * j..2 * j + 2].copy_from_slice(&blk[208..210]);
            for g in 0..16 {
                dst[Q6K_SC + TILE * g + j] = blk[192 + g];
            }
            let mut v = [0i8; 256];
            super::scalar::q6k_values(blk, &mut v);
            for s in 0..8 {
                let sub = &mut dst[Q6K_Q + Q6K_SUB * s..][..Q6K_SUB];
                for (k, o) in e.iter_mut().enumerate() {
                    *o = (v[32 * s + k] + 32) as u8;
                }
                let low = e.map(|x| x & 0xF);
                put_group(&low, j, sub);
                for (k, &v) in e.iter().enumerate() {
                    let (c, i) = (k / 4, k % 4);
                    let (h, sh) = (c / 4, 2 * (c % 4));
                    sub[GROUP + 64 * h + 4 * j + i] |= (v >> 4) << sh;
                }
            }
        }
        _ => unreachable!("tiles() checked"),
    }
}

/// 32 values below 16 as lane `j` of a nibble group.
fn put_group(e: &[u8; 32], j: usize, q: &mut [u8]) {
    for c in 0..4 {
        for i in 0..4 {
            q[64 * c + 4 * j + i] = e[4 * c + i] | (e[16 + 4 * c + i] << 4);
        }
    }
}

/// A stored Q4 block's 16 bytes to its 32 nibbles in element order.
fn unpack_nibbles(qs: &[u8], out: &mut [u8]) {
    for j in 0..16 {
        out[j] = qs[j] & 0xF;
        out[j + 16] = qs[j] >> 4;
    }
}
