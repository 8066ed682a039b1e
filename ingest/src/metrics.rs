//! Metric names for ingest. Labels are bounded: platform, reason, route, status.

pub const EVENTS_RECEIVED: &str = "ingest_events_received_total";
pub const EVENTS_ACCEPTED: &str = "ingest_events_accepted_total";
pub const EVENTS_REJECTED: &str = "ingest_events_rejected_total";
pub const EVENTS_DUPLICATE: &str = "ingest_events_duplicate_total";
pub const EVENTS_FLAGGED: &str = "ingest_events_flagged_total";
pub const DLQ_RECORDS: &str = "ingest_dlq_records_total";
pub const EVENTS_SPOOLED: &str = "ingest_events_spooled_total";
pub const SPOOL_REPLAYED: &str = "ingest_spool_replayed_total";
pub const SPOOL_TORN: &str = "ingest_spool_torn_segments_total";
pub const SPOOL_BYTES: &str = "ingest_spool_bytes";
pub const SPOOL_FULL: &str = "ingest_spool_full_total";
pub const PRODUCE_SECONDS: &str = "ingest_produce_seconds";
/// Kafka producers replaced because they stopped getting acks while the
/// broker answered (label `reason`: stalled, fatal).
pub const PRODUCER_REPLACED: &str = "ingest_producer_replaced_total";
pub const HTTP_REQUESTS: &str = "ingest_http_requests_total";
pub const UNAUTHORIZED: &str = "ingest_unauthorized_total";
pub const RATE_LIMITED: &str = "ingest_rate_limited_total";
/// Connections answered 503 and closed because `--max-connections` were open.
pub const CONNECTIONS_REFUSED: &str = "ingest_connections_refused_total";

pub use leadstream_common::ops::prometheus;

/// Puts every series on /metrics at 0 from the start, so dashboards and
/// alerts see "none yet" rather than "no data" (and `rate()` has a start).
pub fn register() {
    // The recorder first: series registered before it exists are lost.
    prometheus();
    for name in [
        EVENTS_DUPLICATE,
        EVENTS_FLAGGED,
        DLQ_RECORDS,
        EVENTS_SPOOLED,
        SPOOL_REPLAYED,
        SPOOL_TORN,
        SPOOL_FULL,
        UNAUTHORIZED,
        RATE_LIMITED,
        CONNECTIONS_REFUSED,
    ] {
        ::metrics::counter!(name).increment(0);
    }
    for reason in crate::pipeline::REASONS {
        if reason != "duplicate" {
            ::metrics::counter!(EVENTS_REJECTED, "reason" => reason).increment(0);
        }
    }
    for reason in ["stalled", "fatal"] {
        ::metrics::counter!(PRODUCER_REPLACED, "reason" => reason).increment(0);
    }
    ::metrics::gauge!(SPOOL_BYTES).increment(0.0);
}
