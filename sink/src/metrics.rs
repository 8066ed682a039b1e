//! Metric names for the sink. Labels are bounded (table names).

pub const ROWS: &str = "sink_rows_written_total";
pub const BATCHES: &str = "sink_batches_committed_total";
pub const DEAD_LETTERS: &str = "sink_dead_letters_total";
pub const INSERT_RETRIES: &str = "sink_insert_retries_total";
pub const INSERT_SECONDS: &str = "sink_insert_seconds";
