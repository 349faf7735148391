//! A sequence's block table, and the chained hashes that name full blocks of tokens.

use std::hash::{DefaultHasher, Hash, Hasher};

use super::pool::BlockPool;

/// The name of a full block: 128 bits of a hash chained over every token before it, so equal
/// names mean equal prefixes (a collision is ~2^-64 even over billions of blocks).
pub type BlockHash = u128;

fn chain(parent: BlockHash, tokens: &[u32]) -> BlockHash {
    let half = |salt: u64| {
        let mut h = DefaultHasher::new();
        (salt, parent, tokens).hash(&mut h);
        h.finish()
    };
    (u128::from(half(0x9e37_79b9_7f4a_7c15)) << 64) | u128::from(half(0xc2b2_ae3d_27d4_eb4f))
}

/// Extends `hashes` to name every full block of `tokens` (blocks already named are kept).
pub fn block_hashes(tokens: &[u32], block_size: usize, hashes: &mut Vec<BlockHash>) {
    let full = tokens.len() / block_size;
    for i in hashes.len()..full {
        let parent = if i == 0 { 0 } else { hashes[i - 1] };
        hashes.push(chain(parent, &tokens[i * block_size..(i + 1) * block_size]));
    }
}

/// The blocks holding one sequence's keys and values, in order. Dropping the table gives every
/// block back to the pool.
#[derive(Debug)]
pub struct BlockTable {
    pool: BlockPool,
    blocks: Vec<u32>,
    /// Leading blocks already registered in the prefix cache.
    named: usize,
}

impl BlockTable {
    pub fn new(pool: &BlockPool) -> Self {
        Self {
            pool: pool.clone(),
            blocks: Vec::new(),
            named: 0,
        }
    }

    pub fn blocks(&self) -> &[u32] {
        &self.blocks
    }

    /// Token slots the table covers.
    pub fn slots(&self) -> usize {
        self.blocks.len() * self.pool.block_size()
    }

    /// Blocks still to take for the table to cover `tokens` slots.
    pub fn blocks_needed(&self, tokens: usize) -> usize {
        tokens
            .div_ceil(self.pool.block_size())
            .saturating_sub(self.blocks.len())
    }

    /// Grows the table to cover `tokens` slots; `false` (and nothing taken) if the pool is short.
    pub fn reserve(&mut self, tokens: usize) -> bool {
        let n = self.blocks_needed(tokens);
        if n == 0 {
            return true;
        }
        match self.pool.allocate(n) {
            Some(b) => {
                self.blocks.extend(b);
                true
            }
            None => false,
        }
    }

    /// On an empty table: takes the cached blocks matching the longest prefix of `hashes` and
    /// returns how many there were.
    pub fn adopt_prefix(&mut self, hashes: &[BlockHash]) -> usize {
        debug_assert!(self.blocks.is_empty());
        self.blocks = self.pool.lookup(hashes);
        self.named = self.blocks.len();
        self.blocks.len()
    }

    /// Registers the table's full blocks named by `hashes` in the prefix cache.
    pub fn publish(&mut self, hashes: &[BlockHash]) {
        let upto = hashes.len().min(self.blocks.len());
        let from = self.named.min(upto);
        for (&b, &h) in self.blocks[from..upto].iter().zip(&hashes[from..upto]) {
            self.pool.register(b, h);
        }
        self.named = self.named.max(upto);
    }
}

impl Drop for BlockTable {
    fn drop(&mut self) {
        self.pool.release(&self.blocks);
    }
}
