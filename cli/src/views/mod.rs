//! What each resource shows in a table row, in `describe`, and in JSON/YAML. Views are plain
//! serialisable structs built from API messages; they never call the API themselves.

pub mod apikey;
pub mod bill;
pub mod deployment;
pub mod model;
pub mod node;
pub mod placement;
pub mod tenant;
pub mod usage;
pub mod worker;

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
