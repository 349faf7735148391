//! The block allocator: reference counts, the free lists, and the prefix cache index.
//!
//! Every block is in exactly one state: referenced by at least one [`super::BlockTable`]; free
//! and anonymous (reused first); or free but still named by its hash in the prefix cache, kept
//! in least-recently-released order and evicted only when anonymous blocks run out.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::table::BlockHash;

/// Counts a caller can read at any time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub total: usize,
    /// Referenced by a sequence.
    pub used: usize,
    /// Not referenced (anonymous or cached): what can be handed out.
    pub free: usize,
    /// Not referenced but findable by hash.
    pub cached: usize,
    /// Prompt blocks looked up in / found in the prefix cache.
    pub lookups: u64,
    pub hits: u64,
}

#[derive(Debug)]
struct Inner {
    refs: Vec<u32>,
    hash: Vec<Option<BlockHash>>,
    index: HashMap<BlockHash, u32>,
    anonymous: Vec<u32>,
    lru: BTreeMap<u64, u32>,
    stamp: Vec<u64>,
    clock: u64,
    lookups: u64,
    hits: u64,
}

/// A shared handle to the block allocator of one KV store.
#[derive(Debug, Clone)]
pub struct BlockPool {
    inner: Arc<Mutex<Inner>>,
    block_size: usize,
    prefix_caching: bool,
}

impl BlockPool {
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        let inner = Inner {
            refs: vec![0; num_blocks],
            hash: vec![None; num_blocks],
            index: HashMap::new(),
            // Reversed so block 0 is handed out first (easier to read in traces).
            anonymous: (0..num_blocks as u32).rev().collect(),
            lru: BTreeMap::new(),
            stamp: vec![0; num_blocks],
            clock: 0,
            lookups: 0,
            hits: 0,
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            block_size,
            prefix_caching,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The pool's state is updated without panicking paths, so a poisoned lock still holds
        // consistent counts: keep going rather than take the engine down.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }
    pub fn num_blocks(&self) -> usize {
        self.lock().refs.len()
    }
    pub fn prefix_caching(&self) -> bool {
        self.prefix_caching
    }

    /// Blocks that can be handed out now.
    pub fn free(&self) -> usize {
        let g = self.lock();
        g.anonymous.len() + g.lru.len()
    }

    /// `n` blocks with one reference each, or `None` (and nothing taken) if fewer are free.
    pub(super) fn allocate(&self, n: usize) -> Option<Vec<u32>> {
        let mut g = self.lock();
        if g.anonymous.len() + g.lru.len() < n {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let b = match g.anonymous.pop() {
                Some(b) => b,
                None => {
                    let (_, b) = g.lru.pop_first()?;
                    if let Some(h) = g.hash[b as usize].take() {
                        g.index.remove(&h);
                    }
                    b
                }
            };
            g.refs[b as usize] = 1;
            out.push(b);
        }
        Some(out)
    }

    /// Takes a reference on the cached blocks matching the longest prefix of `hashes`.
    pub(super) fn lookup(&self, hashes: &[BlockHash]) -> Vec<u32> {
        let mut g = self.lock();
        g.lookups += hashes.len() as u64;
        if !self.prefix_caching {
            return Vec::new();
        }
        let mut out = Vec::new();
        for h in hashes {
            let Some(&b) = g.index.get(h) else { break };
            if g.refs[b as usize] == 0 {
                let stamp = g.stamp[b as usize];
                g.lru.remove(&stamp);
            }
            g.refs[b as usize] += 1;
            out.push(b);
        }
        g.hits += out.len() as u64;
        out
    }

    /// Names a full block by its hash so later prompts can find it. A hash already naming
    /// another block keeps that one.
    pub(super) fn register(&self, block: u32, hash: BlockHash) {
        if !self.prefix_caching {
            return;
        }
        let mut g = self.lock();
        if g.hash[block as usize].is_some() || g.index.contains_key(&hash) {
            return;
        }
        g.hash[block as usize] = Some(hash);
        g.index.insert(hash, block);
    }

    /// Drops one reference on each block; unreferenced blocks become free (the last ones first,
    /// so a sequence's tail is evicted before the prefix others are likelier to share).
    pub(super) fn release(&self, blocks: &[u32]) {
        let mut g = self.lock();
        for &b in blocks.iter().rev() {
            let r = &mut g.refs[b as usize];
            assert!(*r > 0, "block {b} released more often than taken");
            *r -= 1;
            if *r == 0 {
                if g.hash[b as usize].is_some() {
                    g.clock += 1;
                    let c = g.clock;
                    g.stamp[b as usize] = c;
                    g.lru.insert(c, b);
                } else {
                    g.anonymous.push(b);
                }
            }
        }
    }

    pub fn stats(&self) -> PoolStats {
        let g = self.lock();
        PoolStats {
            total: g.refs.len(),
            used: g.refs.iter().filter(|&&r| r > 0).count(),
            free: g.anonymous.len() + g.lru.len(),
            cached: g.lru.len(),
            lookups: g.lookups,
            hits: g.hits,
        }
    }

    /// Checks that every block is in exactly one state and the hash index agrees with the
    /// blocks; describes the first inconsistency found.
    pub fn check(&self) -> Result<(), String> {
        let g = self.lock();
        let n = g.refs.len();
        let mut seen = vec![0u8; n];
        for &b in &g.anonymous {
            if g.refs[b as usize] != 0 || g.hash[b as usize].is_some() {
                return Err(format!("anonymous free block {b} is referenced or named"));
            }
            seen[b as usize] += 1;
        }
        for (&stamp, &b) in &g.lru {
            if g.refs[b as usize] != 0
                || g.hash[b as usize].is_none()
                || g.stamp[b as usize] != stamp
            {
                return Err(format!("cached free block {b} is referenced or unnamed"));
            }
            seen[b as usize] += 1;
        }
        for (b, (&on, &refs)) in seen.iter().zip(&g.refs).enumerate() {
            if on != u8::from(refs == 0) {
                return Err(format!("block {b} is on {on} free lists with {refs} refs"));
            }
        }
        for (h, &b) in &g.index {
            if g.hash[b as usize] != Some(*h) {
                return Err(format!(
                    "hash index points at block {b}, which has another name"
                ));
            }
        }
        if g.hash.iter().filter(|h| h.is_some()).count() != g.index.len() {
            return Err("a named block is missing from the hash index".into());
        }
        Ok(())
    }
}
