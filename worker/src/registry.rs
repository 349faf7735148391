//! The models this worker serves: loading (sha256 check, parse, memory budget), the engine of
//! each, admission limits, and unloading. A load that fails leaves every other model serving.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use joule_engine::batch::{EnergyMeter, EngineConfig, EngineHandle};
use joule_engine::gguf::GgufFile;
use joule_engine::kv::{KvBudget, KvLayout, mem_available};
use joule_engine::model::{Config, LoadOptions};
use joule_engine::tokenizer::Tokenizer;
use joule_engine::{EngineError, Model};
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::calibrate::Profile;

/// A model name, by the rule the cluster uses too ([`joule_proto::names::model`]).
pub fn check_name(n: &str) -> Result<(), String> {
    joule_proto::names::model(n)
}

/// How engines are built.
#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_budget: u64,
    pub kv_budget: KvBudget,
    pub max_batched_tokens: usize,
    pub max_seqs: usize,
    pub max_queued: usize,
    pub threads: usize,
    /// The CPU kernels' activation precision.
    pub activations: joule_engine::quant::ActBits,
    /// Where models run, and (on a GPU) the KV cache's share of free memory and where the
    /// compiled kernels are cached.
    pub device: joule_engine::cuda::Device,
    pub gpu_memory_fraction: f64,
    pub cache_dir: PathBuf,
}

/// A model being served.
pub struct Served {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub engine: EngineHandle,
    pub memory_bytes: u64,
    pub parameters: u64,
    /// Requests admitted and not yet finished.
    pub in_flight: AtomicUsize,
    pub max_in_flight: usize,
    pub calibration: RwLock<Option<Profile>>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Counts one admitted request until dropped.
#[derive(Debug)]
pub struct Admission(Arc<Served>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Served {
    /// Takes a place in this model's queue, or RESOURCE_EXHAUSTED when it is full.
    pub fn admit(self: &Arc<Self>) -> Result<Admission, Status> {
        let n = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if n >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(Status::resource_exhausted(format!(
                "model {:?} already holds {n} requests (running plus queued, limit {}); retry \
                 later or send it to another worker",
                self.name, self.max_in_flight
            )));
        }
        Ok(Admission(self.clone()))
    }
}

#[derive(Debug)]
enum Slot {
    /// Reserved bytes while the file is read.
    Loading(u64),
    Ready(Arc<Served>),
}

/// Every model, by name.
pub struct Registry {
    limits: Limits,
    meter: Arc<dyn EnergyMeter>,
    models: Mutex<BTreeMap<String, Slot>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(limits: Limits, meter: Arc<dyn EnergyMeter>) -> Self {
        Self {
            limits,
            meter,
            models: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Slot>> {
        self.models.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The model `name`, or NOT_FOUND naming the loaded ones (UNAVAILABLE while it loads).
    pub fn get(&self, name: &str) -> Result<Arc<Served>, Status> {
        let m = self.lock();
        match m.get(name) {
            Some(Slot::Ready(s)) => Ok(s.clone()),
            Some(Slot::Loading(_)) => Err(Status::unavailable(format!(
                "model {name:?} is still loading on this worker; retry shortly"
            ))),
            None => {
                let names: Vec<&str> = m
                    .iter()
                    .filter(|(_, s)| matches!(s, Slot::Ready(_)))
                    .map(|(n, _)| n.as_str())
                    .collect();
                Err(Status::not_found(if names.is_empty() {
                    format!("model {name:?} is not loaded; this worker serves no model yet")
                } else {
                    format!(
                        "model {name:?} is not loaded; this worker serves: {}",
                        names.join(", ")
                    )
                }))
            }
        }
    }

    pub fn ready(&self) -> Vec<Arc<Served>> {
        self.lock()
            .values()
            .filter_map(|s| match s {
                Slot::Ready(s) => Some(s.clone()),
                Slot::Loading(_) => None,
            })
            .collect()
    }

    /// Bytes held or reserved by every model.
    pub fn memory_used(&self) -> u64 {
        held(&self.lock())
    }

    pub fn memory_budget(&self) -> u64 {
        self.limits.memory_budget
    }

    /// Loads `path` as `name` (blocking: call from a blocking thread), runs `prepare` on it
    /// (calibration) before any request can reach it, then serves it. Fails with
    /// ALREADY_EXISTS, NOT_FOUND (file), INVALID_ARGUMENT (sha256, parse) or
    /// RESOURCE_EXHAUSTED (memory budget); nothing is left behind on failure.
    pub fn load(
        &self,
        name: Option<&str>,
        path: &Path,
        expect_sha256: Option<&str>,
        prepare: &dyn Fn(&Arc<Served>) -> Result<(), Status>,
    ) -> Result<Arc<Served>, Status> {
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => stem(path)?,
        };
        check_name(&name).map_err(Status::invalid_argument)?;
        let meta = std::fs::metadata(path).map_err(|e| {
            let msg = format!("cannot read model file {}: {e}", path.display());
            if e.kind() == std::io::ErrorKind::NotFound {
                Status::not_found(msg)
            } else {
                Status::failed_precondition(msg)
            }
        })?;
        let file_bytes = if meta.is_dir() {
            dir_size(path)
        } else {
            meta.len()
        };
        let kv_bytes = self.limits.kv_budget.bytes(mem_available());
        let reserve = file_bytes + kv_bytes;
        {
            let mut m = self.lock();
            if m.contains_key(&name) {
                return Err(Status::already_exists(format!(
                    "a model named {name:?} is already loaded (or loading); unload it first or \
                     pick another name"
                )));
            }
            let used = held(&m);
            if used + reserve > self.limits.memory_budget {
                return Err(Status::resource_exhausted(format!(
                    "loading {name:?} needs about {} (weights {} + KV {}) but only {} of the \
                     worker's memory budget of {} is free; unload a model or raise \
                     --memory-budget",
                    mib(reserve),
                    mib(file_bytes),
                    mib(kv_bytes),
                    mib(self.limits.memory_budget.saturating_sub(used)),
                    mib(self.limits.memory_budget)
                )));
            }
            m.insert(name.clone(), Slot::Loading(reserve));
        }
        let result = self
            .build(&name, path, expect_sha256, file_bytes, kv_bytes)
            .and_then(|s| match prepare(&s) {
                Ok(()) => Ok(s),
                Err(e) => {
                    s.engine.shutdown();
                    Err(e)
                }
            });
        let mut m = self.lock();
        match result {
            Ok(s) => {
                m.insert(name, Slot::Ready(s.clone()));
                Ok(s)
            }
            Err(e) => {
                m.remove(&name);
                tracing::warn!(model = %name, path = %path.display(), error = %e.message(), "model load failed");
                Err(e)
            }
        }
    }

    fn build(
        &self,
        name: &str,
        path: &Path,
        expect: Option<&str>,
        file_bytes: u64,
        kv_bytes: u64,
    ) -> Result<Arc<Served>, Status> {
        let sha256 = if path.is_dir() {
            String::new()
        } else {
            sha256_file(path).map_err(|e| {
                Status::failed_precondition(format!("cannot read {}: {e}", path.display()))
            })?
        };
        if let Some(want) = expect.filter(|w| !w.is_empty())
            && !want.eq_ignore_ascii_case(&sha256)
        {
            return Err(Status::invalid_argument(format!(
                "{} has sha256 {sha256} but {want} was expected; the file is corrupt or not the \
                 one meant",
                path.display()
            )));
        }
        let opts = LoadOptions {
            threads: self.limits.threads,
            activations: self.limits.activations,
        };
        let bad = |e: EngineError| {
            let s = crate::convert::status(&e);
            Status::new(
                s.code(),
                format!("cannot load {}: {}", path.display(), s.message()),
            )
        };
        let cfg = EngineConfig {
            max_batched_tokens: self.limits.max_batched_tokens,
            max_seqs: self.limits.max_seqs,
            kv_budget: KvBudget::Bytes(kv_bytes),
            ..Default::default()
        };
        let meter = Some(self.meter.clone());
        let (block_size, kv_dtype) = (cfg.block_size, cfg.kv_dtype);
        // A GGUF file is opened once: its header holds the weights' layout, the tokenizer and
        // the exact parameter count.
        let gguf = if path.is_dir() {
            None
        } else {
            Some(GgufFile::open(path).map_err(bad)?)
        };
        let tokenizer = || match &gguf {
            Some(f) => Tokenizer::from_gguf(f),
            None => Tokenizer::from_dir(path),
        };
        // A GPU backend reads the weights itself: the CPU's copy is never loaded.
        let engine = match self.limits.device {
            joule_engine::cuda::Device::Cpu => {
                let model = match &gguf {
                    Some(f) => Model::from_gguf(f, &opts),
                    None => Model::load(path, &opts),
                }
                .map_err(bad)?;
                EngineHandle::start_metered(model, tokenizer().map_err(bad)?, cfg, meter)
            }
            joule_engine::cuda::Device::Cuda(ordinal) => {
                let tokenizer = tokenizer().map_err(bad)?;
                let gpu = self.gpu_backend(path, ordinal, &cfg).map_err(bad)?;
                EngineHandle::start_on(tokenizer, cfg, meter, gpu)
            }
        }
        .map_err(bad)?;
        // An HF directory's count follows from its config.
        let parameters = match &gguf {
            Some(f) => f
                .header
                .tensors
                .iter()
                .map(|t| t.dims.iter().product::<u64>())
                .sum(),
            None => estimate_parameters(engine.config()),
        };
        let layout = KvLayout::for_model(engine.config(), block_size, kv_dtype);
        let kv = engine.kv_blocks() as u64 * layout.block_bytes() as u64;
        tracing::info!(model = name, path = %path.display(), sha256 = %sha256, parameters, mib_weights = file_bytes >> 20, mib_kv = kv >> 20, "model ready");
        Ok(Arc::new(Served {
            name: name.to_string(),
            path: path.to_path_buf(),
            sha256,
            engine,
            memory_bytes: file_bytes + kv,
            parameters,
            in_flight: AtomicUsize::new(0),
            max_in_flight: self.limits.max_seqs + self.limits.max_queued,
            calibration: RwLock::new(None),
        }))
    }

    /// The model at `path` on GPU `ordinal`, its KV cache taking the configured share of the
    /// memory left free.
    #[cfg(feature = "cuda")]
    fn gpu_backend(
        &self,
        path: &Path,
        ordinal: usize,
        cfg: &EngineConfig,
    ) -> Result<Box<dyn joule_engine::backend::Backend>, EngineError> {
        use joule_engine::cuda::forward::{CudaModel, KvSize};
        let m = CudaModel::load(
            path,
            ordinal,
            &self.limits.cache_dir.join("kernels"),
            cfg.block_size,
            cfg.kv_dtype,
            KvSize::FreeFraction(self.limits.gpu_memory_fraction),
        )?;
        Ok(Box::new(m))
    }

    #[cfg(not(feature = "cuda"))]
    fn gpu_backend(
        &self,
        _path: &Path,
        _ordinal: usize,
        _cfg: &EngineConfig,
    ) -> Result<Box<dyn joule_engine::backend::Backend>, EngineError> {
        Err(EngineError::InvalidRequest(
            joule_engine::cuda::CudaUnavailable::BuiltWithout.to_string(),
        ))
    }

    /// Stops `name`: new requests get NOT_FOUND at once, its streams end `Cancelled`, and its
    /// memory is freed when the last of them is gone.
    pub fn unload(&self, name: &str) -> Result<(), Status> {
        let mut m = self.lock();
        match m.get(name) {
            Some(Slot::Ready(_)) => {
                if let Some(Slot::Ready(s)) = m.remove(name) {
                    s.engine.shutdown();
                    tracing::info!(model = name, "model unloaded");
                }
                Ok(())
            }
            Some(Slot::Loading(_)) => Err(Status::failed_precondition(format!(
                "model {name:?} is still loading; unload it once it is ready"
            ))),
            None => {
                drop(m);
                self.get(name).map(|_| ())
            }
        }
    }
}

/// Bytes held or reserved by the models in `m`.
fn held(m: &BTreeMap<String, Slot>) -> u64 {
    m.values()
        .map(|s| match s {
            Slot::Loading(b) => *b,
            Slot::Ready(s) => s.memory_bytes,
        })
        .sum()
}

fn stem(path: &Path) -> Result<String, Status> {
    let s = path.file_stem().and_then(|s| s.to_str()).ok_or_else(|| {
        Status::invalid_argument(format!("cannot name a model after {}", path.display()))
    })?;
    // File stems often carry characters a name may not; keep the allowed ones.
    let n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    Ok(n.trim_start_matches('.').to_string())
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
}

/// Hex sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Parameter count of an HF directory's model from its hyperparameters (embedding,
/// attention, MLP, norms; a separate output matrix is not counted).
fn estimate_parameters(c: &Config) -> u64 {
    let (d, q, kv, f) = (
        c.dim as u64,
        c.q_dim() as u64,
        c.kv_dim() as u64,
        c.ffn_dim as u64,
    );
    let layer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d;
    c.vocab as u64 * d + c.n_layers as u64 * layer + d
}
