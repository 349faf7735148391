//! The paged KV cache. Keys and values live in fixed-size blocks (16 token slots by default) of
//! one preallocated [`KvStore`]; a [`BlockPool`] hands blocks out with reference counts, and each
//! sequence holds its blocks in a [`BlockTable`] that gives them back on `Drop`, so a sequence
//! that ends, is cancelled or is preempted can never leak one.
//!
//! Prefix caching: once a block is full its contents are named by a chained hash (the hash of
//! the previous block and this block's tokens), and the pool keeps the block findable by that
//! hash after its last user lets go, until the space is needed again (least recently released
//! first). A new sequence whose prompt starts with the same tokens takes those blocks instead of
//! computing them. Shared blocks are always full, so they are never written again.
//!
//! This module owns memory and bookkeeping only; what to run and when is `batch`'s business.

mod budget;
mod pool;
mod store;
mod table;

pub use budget::{KvBudget, mem_available};
pub use pool::{BlockPool, PoolStats};
pub use store::{KvDType, KvLayout, KvStore};
pub use table::{BlockHash, BlockTable, block_hashes};

/// Token slots per block unless configured otherwise.
pub const DEFAULT_BLOCK_SIZE: usize = 16;
