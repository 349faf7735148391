//! Load-time repacking of Q4_0, Q4_1 and Q8_0 rows for the 512-bit kernels. Whole groups of four
//! blocks are rearranged so one 64-byte load yields 128 (4-bit) or 64 (8-bit) weights in element
//! order; a row's trailing blocks (fewer than four) stay as stored. Sizes never change.
//!
//! Group layouts (`e[k]` = integer weight `k` of the group, in element order):
//! - Q4_0: `d[4]` (f16) then 64 bytes, byte `j` = `e[j] | e[64 + j] << 4`.
//! - Q4_1: `d[4]`, `m[4]` (f16) then the same 64 bytes.
//! - Q8_0: `d[4]` (f16) then 128 bytes `e[k] + 128` (unsigned).

use crate::tensor::DType;

/// Blocks per packed group.
pub const GROUP: usize = 4;

/// Repacks one stored row (`src`) into `dst` (same length).
pub fn pack_row(dtype: DType, src: &[u8], dst: &mut [u8]) {
    let bb = dtype.block_bytes();
    let nb = src.len() / bb;
    let groups = nb / GROUP;
    dst[groups * GROUP * bb..].copy_from_slice(&src[groups * GROUP * bb..]);
    for g in 0..groups {
        let blocks = &src[g * GROUP * bb..(g + 1) * GROUP * bb];
        let out = &mut dst[g * GROUP * bb..(g + 1) * GROUP * bb];
        let mut e = [0u8; 128];
        for (b, blk) in blocks.chunks_exact(bb).enumerate() {
            out[2 * b..2 * b + 2].copy_from_slice(&blk[..2]);
            match dtype {
                DType::Q4_1 => {
                    out[8 + 2 * b..10 + 2 * b].copy_from_slice(&blk[2..4]);
                    unpack_nibbles(&blk[4..20], &mut e[32 * b..32 * b + 32]);
                }
                DType::Q4_0 => unpack_nibbles(&blk[2..18], &mut e[32 * b..32 * b + 32]),
                _ => {
                    for (o, &q) in e[32 * b..32 * b + 32].iter_mut().zip(&blk[2..34]) {
                        *o = (q as i8 as i16 + 128) as u8;
                    }
                }
            }
        }
        match dtype {
            DType::Q8_0 => out[8..].copy_from_slice(&e),
            _ => {
                let qs = if dtype == DType::Q4_1 {
                    &mut out[16..]
                } else {
                    &mut out[8..]
                };
                for j in 0..64 {
                    qs[j] = e[j] | (e[64 + j] << 4);
                }
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
