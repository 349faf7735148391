//! Choosing each next token, per sequence: the request's settings ([`SamplingParams`], checked
//! before a request takes any resource), the logits pipeline (penalties, temperature, top-k,
//! top-p, min-p, a seeded draw, top-n logprobs: [`Sampler`]) and stop strings matched across
//! token boundaries ([`StopMatcher`]).
//!
//! A sampler's only state is its own generator and its own token counts, so a sequence draws
//! the same tokens from the same seed whatever else shares its batch.

mod params;
mod sampler;
mod stop;

pub use params::{MAX_LOGPROBS, SamplingParams};
pub use sampler::{Sampled, Sampler, TokenLogprobs, argmax};
pub use stop::StopMatcher;
