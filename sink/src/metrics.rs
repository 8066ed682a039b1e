//! Metric names for the sink. Labels are bounded (table names).

pub const ROWS: &str = "sink_rows_written_total";
pub const BATCHES: &str = "sink_batches_committed_total";
pub const DEAD_LETTERS: &str = "sink_dead_letters_total";
/// Rows ClickHouse refused for their data, kept as dead letters.
pub const REJECTED_ROWS: &str = "sink_rows_refused_total";
pub const INSERT_RETRIES: &str = "sink_insert_retries_total";
pub const INSERT_SECONDS: &str = "sink_insert_seconds";
pub const CONSUMER_LAG: &str = "sink_consumer_lag";

/// Puts the role's series on /metrics at 0 from the start (see ingest's).
pub fn register() {
    // The recorder first: series registered before it exists are lost.
    leadstream_common::ops::prometheus();
    for name in [BATCHES, DEAD_LETTERS, REJECTED_ROWS, INSERT_RETRIES] {
        metrics::counter!(name).increment(0);
    }
}
