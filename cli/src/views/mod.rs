//! What each resource shows in a table row, in `describe`, and in JSON/YAML. Views are plain
//! serialisable structs built from API messages; they never call the API themselves.

pub mod apikey;
pub mod bill;
pub mod deployment;
pub mod events;
pub mod model;
pub mod node;
pub mod placement;
pub mod tenant;
pub mod top;
pub mod usage;
pub mod worker;

#[cfg(test)]
mod golden_tests;

/// Unix milliseconds now (in tests, the clock a test froze, so that ages are fixed).
pub fn now_ms() -> i64 {
    frozen_now().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    })
}

#[cfg(test)]
fn frozen_now() -> Option<i64> {
    golden_tests::FROZEN_NOW.with(std::cell::Cell::get)
}

#[cfg(not(test))]
fn frozen_now() -> Option<i64> {
    None
}
