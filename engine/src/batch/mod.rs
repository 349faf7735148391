//! The serving core: one step loop, on its own thread, runs every admitted sequence together.
//!
//! - [`config`]: the knobs (token budget per step, sequences per step, KV budget) and checks.
//! - [`request`]: what callers send (a [`Request`]) and get back (a [`RequestStream`] of
//!   [`Event`]s ending in a [`Finish`] with [`Usage`]).
//! - `sequence`: one request's state inside the loop (tokens, blocks, sampler, decoders).
//! - `scheduler`: per step, which sequences run how many tokens: running sequences first (decode
//!   or their next prefill chunk), then new ones while the budget, `max_seqs` and the blocks
//!   last, picked across tenants by weighted fair share; when blocks run out the youngest
//!   running sequence is preempted and later recomputed, to the identical result.
//! - `energy`: each step's joules, read from an [`EnergyMeter`], split over its sequences.
//! - [`engine`]: the thread, the [`EngineHandle`] that feeds it, and [`EngineStats`].
//!
//! Nothing here blocks the caller: submitting validates the request and queues it; events
//! arrive on the stream as steps complete. Dropping a stream cancels its request.

pub mod config;
mod energy;
pub mod engine;
pub mod request;
mod scheduler;
mod sequence;

pub use config::EngineConfig;
pub use energy::EnergyMeter;
pub use engine::{EngineHandle, EngineStats};
pub use request::{Event, Finish, FinishReason, Output, Request, RequestStream, Usage};
