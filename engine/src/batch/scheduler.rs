//! Per step, which sequences run and how many tokens each (vLLM v1 style): one token budget
//! shared first by the running sequences, oldest first (one token for a decode, the next chunk
//! for a prefill), then by waiting sequences admitted while the budget, `max_seqs` and the KV
//! blocks last. When a running sequence needs a block and none is free, the youngest running
//! sequence is preempted: its blocks go back and it waits, first in its tenant's queue, to be
//! recomputed (often from the prefix cache).
//!
//! Fairness: each tenant has a virtual time that grows by tokens / weight; admission picks the
//! waiting tenant with the smallest one, so under contention the tokens admitted follow the
//! weights. A sequence is charged at admission for what it may still run (its prompt left and
//! its whole `max_tokens`), so the several admissions of one step already see each other (a
//! wave of finishes does not all go to one tenant); what it did not run is given back when it
//! finishes or is preempted, and tokens past the reservation are charged as they run. A tenant
//! that was idle starts at the smallest active virtual time (no banked credit).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::sequence::Sequence;
use crate::kv::BlockPool;

#[derive(Debug, Default)]
struct Tenant {
    weight: f64,
    vtime: f64,
    waiting: VecDeque<Sequence>,
    running: usize,
}

/// A sequence of `running` and how many of its tokens run this step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Planned {
    pub idx: usize,
    pub tokens: usize,
}

#[derive(Debug)]
pub(super) struct Scheduler {
    max_batched_tokens: usize,
    max_seqs: usize,
    block_size: usize,
    pool: BlockPool,
    /// Oldest admission first.
    pub running: Vec<Sequence>,
    tenants: BTreeMap<Arc<str>, Tenant>,
    /// Per running sequence: the tokens charged at admission, those run since, and the weight
    /// they were charged at (so the refund is exactly what was charged).
    charges: HashMap<u64, (usize, usize, f64)>,
    pub preemptions_total: u64,
}

impl Scheduler {
    pub fn new(max_batched_tokens: usize, max_seqs: usize, pool: BlockPool) -> Self {
        Self {
            max_batched_tokens,
            max_seqs,
            block_size: pool.block_size(),
            pool,
            running: Vec::new(),
            tenants: BTreeMap::new(),
            charges: HashMap::new(),
            preemptions_total: 0,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.tenants.values().all(|t| t.waiting.is_empty())
    }

    pub fn waiting(&self) -> usize {
        self.tenants.values().map(|t| t.waiting.len()).sum()
    }

    /// Waiting sequences that were preempted.
    pub fn preempted(&self) -> usize {
        self.tenants
            .values()
            .flat_map(|t| &t.waiting)
            .filter(|s| s.preemptions > 0)
            .count()
    }

    pub fn enqueue(&mut self, seq: Sequence, weight: f64) {
        let floor = self
            .tenants
            .values()
            .filter(|t| t.running > 0 || !t.waiting.is_empty())
            .map(|t| t.vtime)
            .fold(f64::INFINITY, f64::min);
        let t = self.tenants.entry(seq.tenant.clone()).or_default();
        if t.running == 0 && t.waiting.is_empty() && floor.is_finite() {
            t.vtime = t.vtime.max(floor);
        }
        t.weight = weight;
        t.waiting.push_back(seq);
    }

    /// Removes every sequence (running or waiting) that `gone` picks.
    pub fn remove_where(&mut self, mut gone: impl FnMut(&Sequence) -> bool) -> Vec<Sequence> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            if gone(&self.running[i]) {
                out.push(self.remove_running(i));
            } else {
                i += 1;
            }
        }
        for t in self.tenants.values_mut() {
            let (keep, drop): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut t.waiting)
                .into_iter()
                .partition(|s| !gone(s));
            t.waiting = keep;
            out.extend(drop);
        }
        self.forget_idle_tenants();
        out
    }

    /// Takes running sequence `idx` out (finished or failed).
    pub fn remove_running(&mut self, idx: usize) -> Sequence {
        let s = self.running.remove(idx);
        let charged = self.charges.remove(&s.id);
        if let Some(t) = self.tenants.get_mut(&s.tenant) {
            t.running -= 1;
            // What it reserved and did not run is given back, at the weight it was charged at.
            if let Some((reserved, run, w)) = charged {
                t.vtime -= reserved.saturating_sub(run) as f64 / w;
            }
        }
        s
    }

    pub fn forget_idle_tenants(&mut self) {
        self.tenants
            .retain(|_, t| t.running > 0 || !t.waiting.is_empty());
    }

    /// Plans the next step.
    pub fn schedule(&mut self) -> Vec<Planned> {
        let mut budget = self.max_batched_tokens;
        let mut plan = Vec::new();
        let mut preempted = false;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let n = self.running[i].remaining().min(budget);
            let need = self.running[i].computed + n;
            loop {
                if self.running[i].table.reserve(need) {
                    plan.push(Planned { idx: i, tokens: n });
                    budget -= n;
                    i += 1;
                    break;
                }
                let victim = self.running.len() - 1;
                self.preempt(victim);
                preempted = true;
                if victim == i {
                    break;
                }
            }
        }
        if preempted {
            // Room is short: let the running ones finish before admitting more.
            self.charge(&plan);
            return plan;
        }
        while budget > 0 && self.running.len() < self.max_seqs {
            let Some(name) = self.next_tenant() else {
                break;
            };
            let t = self.tenants.get_mut(&name).expect("tenant just picked");
            let seq = t.waiting.front_mut().expect("tenant has waiting");
            if seq.table.blocks().is_empty() {
                seq.adopt_prefix(self.block_size);
            }
            let n = seq.remaining().min(budget);
            if !seq.table.reserve(seq.computed + n) {
                // Give the prefix hits back; they stay cached for the next try.
                seq.preempt(&self.pool);
                seq.preemptions -= 1;
                break;
            }
            let seq = t.waiting.pop_front().expect("front exists");
            t.running += 1;
            let reserve = seq.remaining() + seq.max_tokens;
            t.vtime += reserve as f64 / t.weight;
            self.charges.insert(seq.id, (reserve, 0, t.weight));
            self.running.push(seq);
            plan.push(Planned {
                idx: self.running.len() - 1,
                tokens: n,
            });
            budget -= n;
        }
        self.charge(&plan);
        plan
    }

    fn preempt(&mut self, idx: usize) {
        let mut s = self.remove_running(idx);
        s.preempt(&self.pool);
        self.preemptions_total += 1;
        tracing::debug!(seq = s.id, "preempted: out of KV blocks");
        let t = self.tenants.entry(s.tenant.clone()).or_default();
        t.waiting.push_front(s);
    }

    fn next_tenant(&self) -> Option<Arc<str>> {
        self.tenants
            .iter()
            .filter(|(_, t)| !t.waiting.is_empty())
            .min_by(|a, b| a.1.vtime.total_cmp(&b.1.vtime))
            .map(|(k, _)| k.clone())
    }

    /// Counts the tokens of this step against each sequence's reservation; tokens beyond it
    /// are charged now.
    fn charge(&mut self, plan: &[Planned]) {
        for p in plan {
            let s = &self.running[p.idx];
            let Some(c) = self.charges.get_mut(&s.id) else {
                continue;
            };
            let over_before = c.1.saturating_sub(c.0);
            c.1 += p.tokens;
            let over = c.1.saturating_sub(c.0) - over_before;
            if over > 0 {
                let w = c.2;
                if let Some(t) = self.tenants.get_mut(&s.tenant) {
                    t.vtime += over as f64 / w;
                }
            }
        }
    }
}
