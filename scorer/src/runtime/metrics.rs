//! Metric names for the scorer. Labels are bounded (reason codes).

pub const EVENTS_ROUTED: &str = "scorer_events_routed_total";
pub const LINKS_WRITTEN: &str = "scorer_identity_links_written_total";
pub const STITCH_SKIPPED: &str = "scorer_stitch_skipped_total";
pub const IDENTITY_APPLIED: &str = "scorer_identity_log_applied_offset";
pub const RECORDS: &str = "scorer_records_total";
pub const SKIPPED: &str = "scorer_records_skipped_total";
pub const SCORES: &str = "scorer_scores_emitted_total";
/// Scores emitted because time alone changed a lead (label `reason`:
/// decayed, went_dormant, went_nurture, became_retained, stage_changed,
/// reactivation_expired, churn_risk).
pub const TIME_SCORES: &str = "scorer_scores_time_driven_total";
/// Live and stale entries in the schedules of the owned partitions.
pub const SCHEDULED: &str = "scorer_schedule_entries";
pub const MERGES: &str = "scorer_merges_folded_total";
pub const RESTORED: &str = "scorer_changelog_records_restored_total";
pub const LEADS: &str = "scorer_leads";
/// Anonymous leads dropped after the anonymous TTL (changelog tombstones).
pub const LEADS_EXPIRED: &str = "scorer_leads_expired_total";
/// The `reason` labels of [`SKIPPED`] (the score loop's closed set).
pub const SKIP_REASONS: [&str; 7] = [
    "empty",
    "unreadable",
    "replayed",
    "duplicate",
    "late",
    "bot",
    "unscorable",
];
pub const CONSUMER_LAG: &str = "scorer_consumer_lag";

/// Puts the role's series on /metrics at 0 from the start (see ingest's).
pub fn register() {
    // The recorder first: series registered before it exists are lost.
    leadstream_common::ops::prometheus();
    for name in [
        EVENTS_ROUTED,
        LINKS_WRITTEN,
        RECORDS,
        SCORES,
        MERGES,
        RESTORED,
        LEADS_EXPIRED,
    ] {
        metrics::counter!(name).increment(0);
    }
    // Every reason a record is skipped, so a reason that never happened
    // reads 0 rather than missing.
    for reason in SKIP_REASONS {
        metrics::counter!(SKIPPED, "reason" => reason).increment(0);
    }
    for reason in ["empty", "undecodable", "no_identity"] {
        metrics::counter!(STITCH_SKIPPED, "reason" => reason).increment(0);
    }
    for reason in crate::score::ChangeReason::ALL {
        if !matches!(
            reason,
            crate::score::ChangeReason::Event | crate::score::ChangeReason::Merged
        ) {
            metrics::counter!(TIME_SCORES, "reason" => reason.as_str()).increment(0);
        }
    }
    for stage in ["stitch", "score"] {
        metrics::gauge!(CONSUMER_LAG, "stage" => stage).increment(0.0);
    }
}
