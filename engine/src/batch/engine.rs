//! The step loop's thread and the handle that feeds it. The loop owns the backend that runs its
//! steps (it holds the weights and the KV cache) and the scheduler; handles talk to it by
//! message only (submit, cancel, shut down), and read [`EngineStats`] from a snapshot the loop
//! refreshes after every step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::unbounded_channel;

use super::config::EngineConfig;
use super::energy::{Attribution, EnergyMeter};
use super::request::{Event, FinishReason, Request, RequestStream};
use super::scheduler::Scheduler;
use super::sequence::Sequence;
use crate::backend::{Backend, CpuBackend};
use crate::error::{EngineError, Result};
use crate::kv::{BlockPool, KvLayout, KvStore, PoolStats, mem_available};
use crate::model::{Config, Logits, Model, SeqChunk};
use crate::rng::fresh_seed;
use crate::sample::Sampler;
use crate::tokenizer::Tokenizer;

enum Command {
    Submit(Box<Sequence>, f64),
    Cancel(u64),
    Shutdown,
}

/// A snapshot of the engine's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    pub running: usize,
    pub waiting: usize,
    /// Waiting because they were preempted (to be recomputed).
    pub preempted: usize,
    pub preemptions_total: u64,
    pub kv: PoolStats,
    pub block_size: usize,
    /// Prompt blocks found in the prefix cache over those looked up, since start.
    pub prefix_hit_rate: f64,
    /// Generated tokens per second over the last few seconds.
    pub tokens_per_s: f64,
    pub generated_tokens_total: u64,
    pub prompt_tokens_total: u64,
    pub steps_total: u64,
    /// Allocated but unused KV slots over allocated slots, now.
    pub kv_waste: f64,
    /// Sums over all steps of allocated and of unused slots (their ratio: the mean waste).
    pub kv_slots_allocated_sum: u64,
    pub kv_slots_unused_sum: u64,
    /// Joules attributed to requests since start (0 without a meter).
    pub joules_total: f64,
    /// Whether the joules come from a hardware sensor; `None` without a meter.
    pub energy_measured: Option<bool>,
}

struct Shared {
    /// `None` once shut down: every submit after that is refused, none is lost in between.
    tx: Mutex<Option<Sender<Command>>>,
    stats: Mutex<EngineStats>,
    next_id: AtomicU64,
    config: Arc<Config>,
    tokenizer: Arc<Tokenizer>,
    pool: BlockPool,
    pool_blocks: usize,
    block_size: usize,
}

/// Feeds the engine; cheap to clone. The loop stops when every handle and stream is gone, or
/// on [`EngineHandle::shutdown`].
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle").finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// Sizes the KV pool from the budget, then starts the step loop on its own thread.
    pub fn start(model: Model, tokenizer: Tokenizer, cfg: EngineConfig) -> Result<Self> {
        Self::start_metered(model, tokenizer, cfg, None)
    }

    /// [`Self::start`], charging every step's energy (read from `meter`) to the requests in it.
    pub fn start_metered(
        model: Model,
        tokenizer: Tokenizer,
        cfg: EngineConfig,
        meter: Option<Arc<dyn EnergyMeter>>,
    ) -> Result<Self> {
        cfg.validate()?;
        let layout = KvLayout::for_model(&model.config, cfg.block_size, cfg.kv_dtype);
        let budget = cfg.kv_budget.bytes(mem_available());
        let blocks = usize::try_from(budget / layout.block_bytes() as u64).unwrap_or(usize::MAX);
        if blocks == 0 {
            return Err(EngineError::InvalidRequest(format!(
                "a KV budget of {} ({budget} bytes) holds no block; one block of {} tokens takes {} bytes",
                cfg.kv_budget,
                cfg.block_size,
                layout.block_bytes()
            )));
        }
        let blocks = blocks.min(u32::MAX as usize);
        tracing::info!(
            blocks,
            block_size = cfg.block_size,
            tokens = blocks * cfg.block_size,
            mib = (blocks * layout.block_bytes()) as f64 / (1 << 20) as f64,
            dtype = ?cfg.kv_dtype,
            budget = %cfg.kv_budget,
            "KV pool sized"
        );
        let backend = Box::new(CpuBackend::new(model, KvStore::new(layout, blocks)));
        Self::start_on(tokenizer, cfg, meter, backend)
    }

    /// Starts the step loop on `backend` (a GPU, say): its model, and its KV cache sets the
    /// pool's size.
    pub fn start_on(
        tokenizer: Tokenizer,
        cfg: EngineConfig,
        meter: Option<Arc<dyn EnergyMeter>>,
        backend: Box<dyn Backend>,
    ) -> Result<Self> {
        cfg.validate()?;
        let blocks = backend.num_blocks().min(u32::MAX as usize);
        if blocks == 0 {
            return Err(EngineError::InvalidRequest(
                "the backend holds no KV block".into(),
            ));
        }
        let want = KvLayout::for_model(backend.config(), cfg.block_size, cfg.kv_dtype);
        if backend.kv_layout() != want {
            return Err(EngineError::InvalidRequest(format!(
                "the backend's KV cache ({:?}) does not fit this model and configuration ({want:?})",
                backend.kv_layout()
            )));
        }
        tracing::info!(backend = %backend.describe(), blocks, "engine starting");
        let pool = BlockPool::new(blocks, cfg.block_size, cfg.prefix_caching);
        let (tx, rx) = channel();
        let config = Arc::new(backend.config().clone());
        let tokenizer = Arc::new(tokenizer);
        let shared = Arc::new(Shared {
            tx: Mutex::new(Some(tx)),
            stats: Mutex::new(EngineStats {
                kv: pool.stats(),
                block_size: cfg.block_size,
                ..Default::default()
            }),
            next_id: AtomicU64::new(1),
            config: config.clone(),
            tokenizer: tokenizer.clone(),
            pool: pool.clone(),
            pool_blocks: blocks,
            block_size: cfg.block_size,
        });
        let weak = Arc::downgrade(&shared);
        let mut step = StepLoop {
            sched: Scheduler::new(cfg.max_batched_tokens, cfg.max_seqs, pool.clone()),
            pool,
            backend,
            config,
            tokenizer,
            rx,
            publish: Box::new(move |s| {
                if let Some(sh) = weak.upgrade() {
                    *sh.stats.lock().unwrap_or_else(|e| e.into_inner()) = s;
                }
            }),
            stats: EngineStats {
                block_size: cfg.block_size,
                energy_measured: meter.as_ref().map(|m| m.measured()),
                ..Default::default()
            },
            recent: Vec::new(),
            meter,
            energy: Attribution::default(),
        };
        std::thread::Builder::new()
            .name("joule-step".into())
            .spawn(move || step.run())
            .map_err(|e| EngineError::Device(format!("cannot start the step thread: {e}")))?;
        Ok(Self { shared })
    }

    /// The served model's hyperparameters.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.shared.tokenizer
    }
    /// Blocks in the KV pool.
    pub fn kv_blocks(&self) -> usize {
        self.shared.pool_blocks
    }
    /// Checks the KV pool's bookkeeping (every block in exactly one state); for tests and
    /// debugging endpoints.
    pub fn check_kv(&self) -> std::result::Result<(), String> {
        self.shared.pool.check()
    }

    pub fn stats(&self) -> EngineStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Checks `req` and queues it. Every refusal happens here, before the request takes a block.
    pub fn submit(&self, req: Request) -> Result<RequestStream> {
        let config = &self.shared.config;
        let bad = |m: String| Err(EngineError::InvalidRequest(m));
        let ctx = config.context_len;
        let vocab = config.vocab;
        let p = &req.params;
        p.validate()?;
        if req.prompt.is_empty() {
            return bad("the prompt is empty".into());
        }
        if let Some(&t) = req
            .prompt
            .iter()
            .chain(&p.stop_token_ids)
            .find(|&&t| t as usize >= vocab)
        {
            return bad(format!("token id {t} is outside the vocabulary of {vocab}"));
        }
        if !(1e-3..=1e6).contains(&req.weight) {
            return bad(format!(
                "tenant weight must be from 0.001 to 1e6, got {}",
                req.weight
            ));
        }
        if req.tenant.is_empty() || req.tenant.len() > 256 {
            return bad("the tenant id must be 1 to 256 bytes".into());
        }
        let (n, max) = (req.prompt.len(), p.max_tokens as usize);
        if req.resumed >= n {
            return bad(format!(
                "resumed_tokens ({}) must be fewer than the prompt's {n} tokens",
                req.resumed
            ));
        }
        if n >= ctx {
            return Err(EngineError::ContextExceeded(format!(
                "the prompt is {n} tokens but the model's context is {ctx}; shorten the prompt"
            )));
        }
        if n + max > ctx {
            return bad(format!(
                "prompt ({n} tokens) plus max_tokens ({max}) exceed the model's context of {ctx} \
                 tokens; set max_tokens to at most {}",
                ctx - n
            ));
        }
        let bs = self.shared.block_size;
        let need = (n + max).div_ceil(bs);
        if need > self.shared.pool_blocks {
            return bad(format!(
                "prompt ({n} tokens) plus max_tokens ({max}) need {need} KV blocks but the whole \
                 pool has {} ({} tokens); lower max_tokens or give the engine a larger KV budget",
                self.shared.pool_blocks,
                self.shared.pool_blocks * bs
            ));
        }
        let seed = p.seed.unwrap_or_else(fresh_seed);
        let mut sampler = Sampler::new(req.params.clone(), seed, &req.prompt[..n - req.resumed])?;
        sampler.resume(&req.prompt[n - req.resumed..]);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (etx, erx) = unbounded_channel();
        let seq = Sequence::new(
            id,
            req.tenant.clone(),
            req.prompt,
            req.resumed,
            max,
            sampler,
            &self.shared.pool,
            etx,
        );
        self.send(Command::Submit(Box::new(seq), req.weight))?;
        Ok(RequestStream {
            id,
            rx: erx,
            engine: self.clone(),
        })
    }

    /// Stops request `id`; its stream ends with `Cancelled`.
    pub fn cancel(&self, id: u64) {
        let _ = self.send(Command::Cancel(id));
    }

    /// Ends every request (`Cancelled`) and stops the loop.
    pub fn shutdown(&self) {
        let mut tx = self.shared.tx.lock().unwrap_or_else(|e| e.into_inner());
        // Submissions queued before this are ahead of it and get cancelled by the loop.
        if let Some(tx) = tx.take() {
            let _ = tx.send(Command::Shutdown);
        }
    }

    fn send(&self, c: Command) -> Result<()> {
        let down = || EngineError::InvalidRequest("the engine has shut down".into());
        self.shared
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .ok_or_else(down)?
            .send(c)
            .map_err(|_| down())
    }
}

struct StepLoop {
    sched: Scheduler,
    pool: BlockPool,
    backend: Box<dyn Backend>,
    config: Arc<Config>,
    tokenizer: Arc<Tokenizer>,
    rx: Receiver<Command>,
    publish: Box<dyn Fn(EngineStats) + Send>,
    stats: EngineStats,
    /// (when, tokens generated) of recent steps, for the rate.
    recent: Vec<(Instant, usize)>,
    meter: Option<Arc<dyn EnergyMeter>>,
    energy: Attribution,
}

impl StepLoop {
    fn run(&mut self) {
        tracing::debug!("step loop started");
        loop {
            let cmd = if self.sched.is_idle() {
                self.energy.idle();
                self.refresh_stats(0);
                match self.rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => break,
                }
            } else {
                match self.rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => None,
                }
            };
            if let Some(c) = cmd {
                if !self.command(c) {
                    break;
                }
                while let Ok(c) = self.rx.try_recv() {
                    if !self.command(c) {
                        return self.stop_all();
                    }
                }
            }
            self.sched.remove_where(Sequence::is_abandoned);
            if !self.sched.is_idle() {
                self.step();
            }
        }
        self.stop_all();
    }

    /// Applies a command; `false` means shut down.
    fn command(&mut self, c: Command) -> bool {
        match c {
            Command::Submit(s, weight) => {
                self.stats.prompt_tokens_total += s.prompt_len as u64;
                self.sched.enqueue(*s, weight);
            }
            Command::Cancel(id) => {
                let gone: Vec<_> = self
                    .sched
                    .remove_where(|s| s.id == id)
                    .into_iter()
                    .map(|s| {
                        let f = s.finish(FinishReason::Cancelled, None);
                        (s.into_sender(), f)
                    })
                    .collect();
                if !gone.is_empty() {
                    // Blocks are back in the pool, and the stats say so, before the last event.
                    self.refresh_stats(0);
                }
                for (tx, f) in gone {
                    let _ = tx.send(Event {
                        finish: Some(f),
                        ..Default::default()
                    });
                }
            }
            Command::Shutdown => return false,
        }
        true
    }

    fn stop_all(&mut self) {
        for s in self.sched.remove_where(|_| true) {
            s.send(Event {
                finish: Some(s.finish(
                    FinishReason::Cancelled,
                    Some("the engine is shutting down".into()),
                )),
                ..Default::default()
            });
        }
        self.refresh_stats(0);
        tracing::debug!("step loop stopped");
    }

    fn step(&mut self) {
        let plan = self.sched.schedule();
        if plan.is_empty() {
            // Nothing fits right now (cannot happen with validated requests); avoid spinning.
            std::thread::sleep(Duration::from_millis(1));
            return;
        }
        if let Some(m) = &self.meter {
            self.energy.begin(m.as_ref());
        }
        let bs = self.pool.block_size();
        let chunks: Vec<SeqChunk<'_>> = plan
            .iter()
            .map(|p| {
                let s = &self.sched.running[p.idx];
                let end = s.computed + p.tokens;
                SeqChunk {
                    tokens: &s.tokens[s.computed..end],
                    start: s.computed,
                    blocks: s.table.blocks(),
                    logits: if end == s.tokens.len() {
                        Logits::Last
                    } else {
                        Logits::None
                    },
                }
            })
            .collect();
        let result = self.backend.forward(&chunks);
        let sampling: Vec<bool> = chunks.iter().map(|c| c.logits == Logits::Last).collect();
        drop(chunks);
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "forward pass failed; failing its requests");
                let ids: Vec<u64> = plan.iter().map(|p| self.sched.running[p.idx].id).collect();
                for s in self.sched.remove_where(|s| ids.contains(&s.id)) {
                    s.send(Event {
                        finish: Some(s.finish(FinishReason::Error, Some(e.to_string()))),
                        ..Default::default()
                    });
                }
                return;
            }
        };
        if let Some(m) = &self.meter {
            let tokens: Vec<usize> = plan.iter().map(|p| p.tokens).collect();
            for (p, j) in plan.iter().zip(self.energy.end(m.as_ref(), &tokens)) {
                self.sched.running[p.idx].joules += j;
            }
            self.stats.joules_total = self.energy.total;
        }
        let vocab = self.config.vocab;
        let mut done = Vec::new();
        let mut generated = 0;
        let mut row = 0;
        for (p, samples) in plan.iter().zip(sampling) {
            let s = &mut self.sched.running[p.idx];
            s.computed(p.tokens, bs);
            if !samples {
                continue;
            }
            let sampled = s.sampler.sample(&logits[row * vocab..(row + 1) * vocab]);
            row += 1;
            generated += 1;
            let (ev, finished) = s.accept(sampled, &self.tokenizer);
            if finished {
                done.push((p.idx, ev));
            } else {
                s.send(ev);
            }
        }
        self.measure_waste();
        done.sort_unstable_by_key(|d| d.0);
        // Finished sequences free their blocks and the stats say so before their last event
        // goes out: a caller that reads the stats after a finish sees it counted.
        let mut last = Vec::with_capacity(done.len());
        for (idx, ev) in done.into_iter().rev() {
            last.push((self.sched.remove_running(idx).into_sender(), ev));
        }
        self.sched.forget_idle_tenants();
        self.stats.steps_total += 1;
        self.refresh_stats(generated);
        for (tx, ev) in last {
            let _ = tx.send(ev);
        }
    }

    fn measure_waste(&mut self) {
        let bs = self.pool.block_size() as u64;
        let allocated = self.pool.stats().used as u64 * bs;
        let unused: u64 = self
            .sched
            .running
            .iter()
            .map(|s| (s.table.slots() - s.computed) as u64)
            .sum();
        self.stats.kv_slots_allocated_sum += allocated;
        self.stats.kv_slots_unused_sum += unused;
        self.stats.kv_waste = if allocated == 0 {
            0.0
        } else {
            unused as f64 / allocated as f64
        };
    }

    fn refresh_stats(&mut self, generated: usize) {
        let now = Instant::now();
        self.recent.push((now, generated));
        self.recent
            .retain(|(t, _)| now.duration_since(*t) < Duration::from_secs(5));
        let st = &mut self.stats;
        st.generated_tokens_total += generated as u64;
        let span = self
            .recent
            .first()
            .map_or(0.0, |(t, _)| now.duration_since(*t).as_secs_f64());
        let toks: usize = self.recent.iter().skip(1).map(|r| r.1).sum();
        st.tokens_per_s = if span > 0.0 { toks as f64 / span } else { 0.0 };
        st.running = self.sched.running.len();
        st.waiting = self.sched.waiting();
        st.preempted = self.sched.preempted();
        st.preemptions_total = self.sched.preemptions_total;
        st.kv = self.pool.stats();
        st.prefix_hit_rate = if st.kv.lookups == 0 {
            0.0
        } else {
            st.kv.hits as f64 / st.kv.lookups as f64
        };
        (self.publish)(st.clone());
    }
}
