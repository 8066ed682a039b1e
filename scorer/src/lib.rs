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
pub mod identity_compaction;
pub mod lead;
pub mod processor;
pub mod proto;
pub mod routing;
pub mod rules;
pub mod runtime;
pub mod score;
pub mod train;
pub mod trees;
pub mod window;

pub use leadstream_schemas::hash::fnv1a64;

pub const HOUR_MS: i64 = 3_600_000;

pub const DAY_MS: i64 = 24 * HOUR_MS;
