//! Helpers shared by the scheduler's integration tests.

pub mod cluster;
pub mod linearizable;
