//! Load-time repacking of Q4_0, Q4_1 and Q8_0 rows for the 512-bit kernels. Whole groups of four
//! blocks are rearranged so one 64-byte load yields 128 (4-bit) or 64 (8-bit) weights in element
//! order; two of a row's trailing blocks (when two or three are left) form a pair laid out the
//! same way at half the width, and a last odd block stays as stored. Sizes never change.
//!
//! Group layouts (`e[k]` = integer weight `k` of the group, in element order; `n` = 4 blocks in a
//! group, 2 in a pair):
//! - Q4_0: `d[n]` (f16) then `16n` bytes, byte `j` = `e[j] | e[16n + j] << 4`.
//! - Q4_1: `d[n]`, `m[n]` (f16) then the same `16n` bytes.
//! - Q8_0: `d[n]` (f16) then `32n` bytes `e[k] + 128` (unsigned).

use crate::tensor::DType;

/// Blocks per packed group.
pub const GROUP: usize = 4;

/// Repacks one stored row (`src`) into `dst` (same length).
pub fn pack_row(dtype: DType, src: &[u8], dst: &mut [u8]) {
    let bb = dtype.block_bytes();
    let nb = src.len() / bb;
    let groups = nb / GROUP;
    let pair = nb - groups * GROUP >= 2;
    let packed = groups * GROUP + if pair { 2 } else { 0 };
    dst[packed * bb..].copy_from_slice(&src[packed * bb..]);
    for g in 0..groups {
        let at = g * GROUP * bb..(g + 1) * GROUP * bb;
        pack_blocks(dtype, &src[at.clone()], &mut dst[at]);
    }
    if pair {
        let at = groups * GROUP * bb..packed * bb;
        pack_blocks(dtype, &src[at.clone()], &mut dst[at]);
    }
}

/// Lays out `n` stored blocks (4 or 2) as one group.
fn pack_blocks(dtype: DType, blocks: &[u8], out: &mut [u8]) {
    let bb = dtype.block_bytes();
    let n = blocks.len() / bb;
    let mut e = [0u8; 32 * GROUP];
    for (b, blk) in blocks.chunks_exact(bb).enumerate() {
        out[2 * b..2 * b + 2].copy_from_slice(&blk[..2]);
        let e = &mut e[32 * b..32 * b + 32];
        match dtype {
            DType::Q4_1 => {
                out[2 * n + 2 * b..2 * n + 2 * b + 2].copy_from_slice(&blk[2..4]);
                unpack_nibbles(&blk[4..20], e);
            }
            DType::Q4_0 => unpack_nibbles(&blk[2..18], e),
            _ => {
                for (o, &q) in e.iter_mut().zip(&blk[2..34]) {
                    *o = (q as i8 as i16 + 128) as u8;
                }
            }
        }
    }
    let e = &e[..32 * n];
    match dtype {
        DType::Q8_0 => out[2 * n..].copy_from_slice(e),
        _ => {
            let head = if dtype == DType::Q4_1 { 4 * n } else { 2 * n };
            let half = 16 * n;
            for (j, q) in out[head..].iter_mut().enumerate() {
                *q = e[j] | (e[half + j] << 4);
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
