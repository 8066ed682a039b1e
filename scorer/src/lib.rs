//! leadstream scorer, the pure stages: what an event means for a lead
//! (`event`), bucketed per-lead windows (`window`), the lead's feature state
//! (`features`), weighted rules with decay (`rules`), and the scored output
//! with grade, lifecycle stage, reasons and reactivation (`score`), plus
//! identity stitching (`identity`). All time comes from event timestamps.

pub mod clock;
pub mod context;
pub mod event;
pub mod features;
pub mod identity;
pub mod lead;
pub mod processor;
pub mod proto;
pub mod rules;
pub mod runtime;
pub mod score;
pub mod train;
pub mod trees;
pub mod window;

pub const HOUR_MS: i64 = 3_600_000;

/// FNV-1a (64 bit): a hash that is the same in every process and release,
/// so ids derived from it survive restarts and replays.
pub fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
pub const DAY_MS: i64 = 24 * HOUR_MS;
