//! Decoder-only transformers (`llama`, `qwen2`): hyperparameters ([`config`]), weights
//! ([`weights`]) and the forward pass ([`forward`]). A [`Model`] is immutable once loaded and
//! runs on its own thread pool; per-sequence state lives in a [`KvCache`].

mod attention;
pub mod config;
mod elementwise;
pub mod forward;
pub mod weights;

use std::path::Path;
use std::sync::Arc;

pub use config::{Arch, Config, RopeLayout, RopeScaling};
pub use forward::{KvCache, Logits, SeqChunk};
use weights::{Source, Weights};

use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;
use crate::quant::{ActBits, Kernels};
use crate::safetensors::SafetensorsDir;

/// Options for [`Model::load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Worker threads; 0 means one per physical core.
    pub threads: usize,
    /// How finely activations feeding quantized weights are rounded (CPU kernels).
    pub activations: ActBits,
}

impl LoadOptions {
    /// `threads` compute threads, every other option at its default.
    pub fn with_threads(threads: usize) -> Self {
        Self {
            threads,
            ..Self::default()
        }
    }
}

/// A loaded model, ready to run forward passes.
pub struct Model {
    pub config: Config,
    pub weights: Weights,
    kernels: &'static Kernels,
    pool: Arc<rayon::ThreadPool>,
    inv_freq: Vec<f32>,
    activations: ActBits,
}

/// A model file's hyperparameters and weights as stored (not repacked for the CPU kernels): what
/// [`Model::load`] starts from, and what a GPU backend uploads.
pub fn load_parts(path: &Path) -> Result<(Config, Weights)> {
    if path.is_dir() {
        let dir = SafetensorsDir::open(path)?;
        let config = Config::from_hf_json(&path.join("config.json"), &dir.config)?;
        let weights = Weights::load(&Source::Hf(&dir), &config)?;
        Ok((config, weights))
    } else {
        gguf_parts(&GgufFile::open(path)?)
    }
}

fn gguf_parts(file: &GgufFile) -> Result<(Config, Weights)> {
    let mut config = Config::from_gguf(file)?;
    if file.tensor_info("rope_freqs.weight").is_some() {
        let w = file.weight("rope_freqs.weight")?;
        let mut f = vec![0f32; w.cols];
        crate::quant::dequantize_row(w.dtype, w.row(0), &mut f);
        config.rope_scaling = RopeScaling::Factors(f);
    }
    let weights = Weights::load(&Source::Gguf(file), &config)?;
    Ok((config, weights))
}

/// The number of physical cores (logical CPUs when that cannot be told).
pub fn physical_cores() -> usize {
    num_cpus::get_physical().max(1)
}

impl Model {
    /// Loads a GGUF file, or an HF directory with `config.json` and safetensors.
    pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let (config, weights) = load_parts(path.as_ref())?;
        Self::new(config, weights, opts)
    }

    pub fn from_gguf(file: &GgufFile, opts: &LoadOptions) -> Result<Self> {
        let (config, weights) = gguf_parts(file)?;
        Self::new(config, weights, opts)
    }

    fn new(config: Config, weights: Weights, opts: &LoadOptions) -> Result<Self> {
        let threads = if opts.threads == 0 {
            physical_cores()
        } else {
            opts.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("joule-engine-{i}"))
            .build()
            .map_err(|e| {
                EngineError::InvalidRequest(format!("cannot start {threads} threads: {e}"))
            })?;
        let inv_freq = config.rope_inv_freq();
        let kernels = Kernels::select().map_err(EngineError::InvalidRequest)?;
        // Repacking copies the matrices into memory in the SIMD layout (same size as stored).
        let weights = weights.for_kernels(kernels);
        tracing::info!(
            arch = ?config.arch,
            layers = config.n_layers,
            dim = config.dim,
            vocab = config.vocab,
            simd = kernels.level,
            activations = %opts.activations,
            threads,
            "model loaded"
        );
        Ok(Self {
            config,
            weights,
            kernels,
            pool: Arc::new(pool),
            inv_freq,
            activations: opts.activations,
        })
    }

    /// Threads this model computes with.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The SIMD level of the kernels in use.
    pub fn simd_level(&self) -> &'static str {
        self.kernels.level
    }

    /// The precision activations are rounded to before quantized weights.
    pub fn activations(&self) -> ActBits {
        self.activations
    }

    /// A cache for one sequence of up to `capacity` tokens (capped at the context length).
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(&self.config, capacity.min(self.config.context_len))
    }
}
