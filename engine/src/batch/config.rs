//! Engine settings, with `Default` values for a CPU box and `validate()`.

use crate::error::{EngineError, Result};
use crate::kv::{DEFAULT_BLOCK_SIZE, KvBudget, KvDType};

/// How the step loop batches and how much memory the KV pool takes.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Most tokens (decodes plus prefill chunks) in one forward pass.
    pub max_batched_tokens: usize,
    /// Most sequences running at once.
    pub max_seqs: usize,
    /// Token slots per KV block.
    pub block_size: usize,
    pub kv_dtype: KvDType,
    pub kv_budget: KvBudget,
    /// Share full KV blocks between requests with the same prefix.
    pub prefix_caching: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batched_tokens: 512,
            max_seqs: 64,
            block_size: DEFAULT_BLOCK_SIZE,
            kv_dtype: KvDType::F16,
            kv_budget: KvBudget::default(),
            prefix_caching: true,
        }
    }
}

impl EngineConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EngineError::InvalidRequest(m));
        if self.max_batched_tokens == 0 {
            return bad("max_batched_tokens must be at least 1".into());
        }
        if !(1..=4096).contains(&self.max_seqs) {
            return bad(format!(
                "max_seqs must be in 1..=4096, got {}",
                self.max_seqs
            ));
        }
        if !(1..=1024).contains(&self.block_size) {
            return bad(format!(
                "block_size must be in 1..=1024, got {}",
                self.block_size
            ));
        }
        Ok(())
    }
}
