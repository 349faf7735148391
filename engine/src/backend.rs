//! Where a step of the batch engine runs. The engine schedules, samples and streams the same
//! way whatever runs the forward pass; a [`Backend`] owns the model's weights and the KV cache's
//! memory and runs [`SeqChunk`]s over them:
//! - [`CpuBackend`]: the model's own forward pass ([`Model::forward_batch`]) over a KV store in
//!   host memory;
//! - `cuda::forward::CudaModel` (with the `cuda` feature): weights and KV cache in an NVIDIA
//!   GPU's memory.

use crate::error::Result;
use crate::kv::{KvLayout, KvStore};
use crate::model::{Config, Model, SeqChunk};

/// Runs forward passes over its own KV cache.
pub trait Backend: Send {
    /// For logs: "cpu (avx512-vnni)" or "cuda:0 (NVIDIA H100 ..., sm_90, ...)".
    fn describe(&self) -> String;
    /// The model it runs.
    fn config(&self) -> &Config;
    /// KV blocks it holds, and their layout.
    fn num_blocks(&self) -> usize;
    fn kv_layout(&self) -> KvLayout;
    /// One step over every chunk (see [`Model::forward_batch`]): the logits the chunks asked
    /// for, `vocab` values per row, in chunk order.
    fn forward(&mut self, seqs: &[SeqChunk<'_>]) -> Result<Vec<f32>>;
}

/// The CPU: the model's kernels over a KV store in host memory.
pub struct CpuBackend {
    model: Model,
    store: KvStore,
}

impl CpuBackend {
    pub fn new(model: Model, store: KvStore) -> Self {
        Self { model, store }
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        format!("cpu ({})", crate::quant::Kernels::detect().level)
    }
    fn config(&self) -> &Config {
        &self.model.config
    }
    fn num_blocks(&self) -> usize {
        self.store.num_blocks()
    }
    fn kv_layout(&self) -> KvLayout {
        *self.store.layout()
    }
    fn forward(&mut self, seqs: &[SeqChunk<'_>]) -> Result<Vec<f32>> {
        self.model.forward_batch(seqs, &mut self.store)
    }
}

#[cfg(feature = "cuda")]
impl Backend for crate::cuda::forward::CudaModel {
    fn describe(&self) -> String {
        format!(
            "cuda:{} ({})",
            self.gpu().info.ordinal,
            self.gpu().info.describe()
        )
    }
    fn config(&self) -> &Config {
        &self.config
    }
    fn num_blocks(&self) -> usize {
        CudaModel::num_blocks(self)
    }
    fn kv_layout(&self) -> KvLayout {
        *self.layout()
    }
    fn forward(&mut self, seqs: &[SeqChunk<'_>]) -> Result<Vec<f32>> {
        self.forward_batch(seqs)
    }
}

#[cfg(feature = "cuda")]
use crate::cuda::forward::CudaModel;
