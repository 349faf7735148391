//! Helpers shared by the scheduler's integration tests.

pub mod linearizable;
