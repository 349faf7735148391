//! One request inside the step loop: its tokens (prompt then output), how many have their keys
//! and values in the KV store, its block table, its sampler and its text decoders. Preempting a
//! sequence drops its blocks and keeps everything else, so recomputing it reaches the same state.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc::UnboundedSender;

use super::request::{Event, Finish, FinishReason, Usage};
use crate::kv::{BlockHash, BlockPool, BlockTable, block_hashes};
use crate::sample::{Sampled, Sampler, StopMatcher};
use crate::tokenizer::{StreamDecoder, Tokenizer};

#[derive(Debug)]
pub(super) struct Sequence {
    pub id: u64,
    pub tenant: Arc<str>,
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    pub max_tokens: usize,
    /// Tokens whose keys and values are in `table`'s blocks.
    pub computed: usize,
    pub table: BlockTable,
    /// Names of the full blocks of `tokens` computed so far (or looked up).
    pub hashes: Vec<BlockHash>,
    pub sampler: Sampler,
    decoder: StreamDecoder,
    stop: StopMatcher,
    tx: UnboundedSender<Event>,
    arrived: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    /// Set at first admission.
    pub cached_prompt_tokens: Option<usize>,
    pub preemptions: u32,
    /// Generated tokens, stop tokens included (they are not in `tokens`).
    generated: usize,
    /// Energy charged to this sequence's steps so far.
    pub joules: f64,
    /// Tokens at the end of the prompt that an earlier attempt generated, not yet replayed
    /// through the decoders (done at the first sample, which has the tokenizer).
    resumed: usize,
}

impl Sequence {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        tenant: Arc<str>,
        prompt: Vec<u32>,
        resumed: usize,
        max_tokens: usize,
        sampler: Sampler,
        pool: &BlockPool,
        tx: UnboundedSender<Event>,
    ) -> Self {
        let stop = StopMatcher::new(&sampler.params().stop);
        Self {
            id,
            tenant,
            prompt_len: prompt.len(),
            tokens: prompt,
            max_tokens,
            computed: 0,
            table: BlockTable::new(pool),
            hashes: Vec::new(),
            sampler,
            decoder: StreamDecoder::new(),
            stop,
            tx,
            arrived: Instant::now(),
            first_token: None,
            last_token: None,
            cached_prompt_tokens: None,
            preemptions: 0,
            generated: 0,
            joules: 0.0,
            resumed,
        }
    }

    /// Replays an earlier attempt's tokens through the text decoder and the stop matcher (their
    /// text was already sent), so held-back bytes and partial stop strings carry over.
    fn replay_resumed(&mut self, tk: &Tokenizer) {
        let from = self.prompt_len - std::mem::take(&mut self.resumed);
        for i in from..self.prompt_len {
            let delta = self.decoder.push(tk, self.tokens[i]).unwrap_or_default();
            let _ = self.stop.push(&delta);
        }
    }

    /// Tokens still to run before the next sample.
    pub fn remaining(&self) -> usize {
        self.tokens.len() - self.computed
    }

    /// Whether nobody listens any more (the stream was dropped).
    pub fn is_abandoned(&self) -> bool {
        self.tx.is_closed()
    }

    /// Takes the cached blocks of the longest known prefix (at least one token is always left to
    /// compute, for the logits) and returns the tokens they cover.
    pub fn adopt_prefix(&mut self, block_size: usize) -> usize {
        block_hashes(&self.tokens, block_size, &mut self.hashes);
        let usable = (self.tokens.len() - 1) / block_size;
        let n = self
            .table
            .adopt_prefix(&self.hashes[..usable.min(self.hashes.len())]);
        self.computed = n * block_size;
        self.cached_prompt_tokens.get_or_insert(self.computed);
        self.computed
    }

    /// Gives up the blocks (to be recomputed when readmitted).
    pub fn preempt(&mut self, pool: &BlockPool) {
        self.table = BlockTable::new(pool);
        self.computed = 0;
        self.preemptions += 1;
    }

    /// Records that `n` more tokens are in the store and names the blocks they filled.
    pub fn computed(&mut self, n: usize, block_size: usize) {
        self.computed += n;
        block_hashes(&self.tokens[..self.computed], block_size, &mut self.hashes);
        let full = (self.computed / block_size).min(self.hashes.len());
        self.table.publish(&self.hashes[..full]);
    }

    /// Takes a sampled token: returns the event to send and whether the sequence is done.
    pub fn accept(&mut self, s: Sampled, tk: &Tokenizer) -> (Event, bool) {
        if self.resumed > 0 {
            self.replay_resumed(tk);
        }
        let now = Instant::now();
        self.first_token.get_or_insert(now);
        self.last_token = Some(now);
        self.generated += 1;
        let p = self.sampler.params();
        let mut ev = Event {
            logprobs: s.logprobs.into_iter().collect(),
            produced: Some(SystemTime::now()),
            ..Default::default()
        };
        let stop_token =
            p.stop_token_ids.contains(&s.token) || (!p.ignore_eos && tk.is_stop(s.token));
        let mut reason = None;
        let mut stop_string = false;
        if stop_token {
            reason = Some(FinishReason::Stop);
            // The stop token is not output: it has no text, so no logprob either (as OpenAI).
            ev.logprobs.clear();
        } else {
            self.tokens.push(s.token);
            ev.token_ids.push(s.token);
            // A token the vocabulary cannot render still counts; its text is simply empty.
            let delta = self.decoder.push(tk, s.token).unwrap_or_default();
            let (text, hit) = self.stop.push(&delta);
            ev.text = text;
            if hit {
                reason = Some(FinishReason::Stop);
                stop_string = true;
            }
        }
        if reason.is_none() && self.generated >= self.max_tokens {
            reason = Some(FinishReason::Length);
        }
        if let Some(r) = reason {
            if !stop_string {
                let rest = self.decoder.finish(tk).unwrap_or_default();
                ev.text.push_str(&self.stop.push(&rest).0);
                ev.text.push_str(&self.stop.finish());
            }
            ev.finish = Some(self.finish(r, None));
        }
        (ev, reason.is_some())
    }

    /// The closing record for `reason`.
    pub fn finish(&self, reason: FinishReason, message: Option<String>) -> Finish {
        let ttft = self
            .first_token
            .map(|t| t - self.arrived)
            .unwrap_or_default();
        let tpot = match (self.first_token, self.last_token) {
            (Some(a), Some(b)) if self.generated > 1 => (b - a) / (self.generated as u32 - 1),
            _ => Default::default(),
        };
        Finish {
            reason,
            message,
            usage: Usage {
                prompt_tokens: self.prompt_len,
                cached_prompt_tokens: self.cached_prompt_tokens.unwrap_or(0),
                completion_tokens: self.generated,
                time_to_first_token: ttft,
                time_per_output_token: tpot,
                preemptions: self.preemptions,
                joules: self.joules,
            },
        }
    }

    /// Drops everything but the event channel (the blocks go back to the pool now).
    pub fn into_sender(self) -> UnboundedSender<Event> {
        self.tx.clone()
    }

    /// Sends an event; a closed stream is noticed at the next step.
    pub fn send(&self, ev: Event) {
        let _ = self.tx.send(ev);
    }
}
