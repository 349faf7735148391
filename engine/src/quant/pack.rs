//! Load-time tiling of Q4_0, Q4_1 and Q8_0 matrices for the 512-bit kernels: rows are taken 16
//! at a time (a tile; the last one padded with zero rows) and interleaved block by block, so one
//! 64-byte load holds four consecutive weights of each of the 16 rows, one row per 32-bit lane.
//! A `vpdpbusd` against four activation bytes broadcast to every lane then advances 16 row dot
//! products at once: each lane of the result is one output, and no horizontal sums are needed.
//!
//! Per tile and block (`e_j[k]` = integer weight `k` of row `j`, `0 <= k < 32`):
//! - `d[16]` (f16), then for Q4_1 `m[16]` (f16);
//! - Q4_0, Q4_1: four 64-byte vectors; vector `c`, lane `j`, byte `i` is
//!   `e_j[4c + i] | e_j[16 + 4c + i] << 4` (low nibbles: weights 0..16, high: 16..32);
//! - Q8_0: eight 64-byte vectors; vector `c`, lane `j`, byte `i` is `e_j[4c + i] + 128`.
//!
//! A tile of a block takes exactly 16 stored blocks' bytes, so a tiled matrix is the stored size
//! rounded up to whole tiles.

use crate::tensor::DType;

/// Rows per tile: the 32-bit lanes of a 512-bit register.
pub const TILE: usize = 16;

/// Whether matrices of `dtype` have a tiled layout.
pub fn tiles(dtype: DType) -> bool {
    matches!(dtype, DType::Q4_0 | DType::Q4_1 | DType::Q8_0)
}

/// Bytes of the integer weights' header (scales, and mins for Q4_1) of one tile-block.
pub fn header_bytes(dtype: DType) -> usize {
    if dtype == DType::Q4_1 {
        4 * TILE
    } else {
        2 * TILE
    }
}

/// Tiles `rows` stored rows (`src`, `rows * row_bytes` bytes, blocks of `dtype`).
pub fn tile_matrix(dtype: DType, rows: usize, row_bytes: usize, src: &[u8]) -> Vec<u8> {
    assert!(tiles(dtype) && src.len() == rows * row_bytes);
    let bb = dtype.block_bytes();
    let nb = row_bytes / bb;
    let mut out = vec![0u8; rows.div_ceil(TILE) * TILE * row_bytes];
    let zero = vec![0u8; bb];
    for (t, tile) in out.chunks_exact_mut(TILE * row_bytes).enumerate() {
        for (b, dst) in tile.chunks_exact_mut(TILE * bb).enumerate() {
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
        debug_assert_eq!(tile.len(), nb * TILE * bb);
    }
    out
}

/// Writes stored block `blk` as lane `j` of a tile-block.
fn put_lane(dtype: DType, blk: &[u8], j: usize, dst: &mut [u8]) {
    dst[2 * j..2 * j + 2].copy_from_slice(&blk[..2]);
    let mut e = [0u8; 32];
    match dtype {
        DType::Q4_1 => {
            dst[2 * TILE + 2 * j..2 * TILE + 2 * j + 2].copy_from_slice(&blk[2..4]);
            unpack_nibbles(&blk[4..20], &mut e);
        }
        DType::Q4_0 => unpack_nibbles(&blk[2..18], &mut e),
        _ => {
            for (o, &q) in e.iter_mut().zip(&blk[2..34]) {
                *o = (q as i8 as i16 + 128) as u8;
            }
        }
    }
    let q = &mut dst[header_bytes(dtype)..];
    if dtype == DType::Q8_0 {
        for c in 0..8 {
            q[64 * c + 4 * j..64 * c + 4 * j + 4].copy_from_slice(&e[4 * c..4 * c + 4]);
        }
    } else {
        for c in 0..4 {
            for i in 0..4 {
                q[64 * c + 4 * j + i] = e[4 * c + i] | (e[16 + 4 * c + i] << 4);
            }
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
