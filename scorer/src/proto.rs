//! The scorer's internal messages (`schemas/proto/scorer.proto`), derived by
//! hand with prost so the build needs no protoc. Field numbers match the
//! .proto file.

#[derive(Clone, PartialEq, prost::Message)]
pub struct Link {
    #[prost(string, repeated, tag = "1")]
    pub ids: Vec<String>,
}

/// One lead's identifiers as a compaction of the identity log wrote them
/// (key `\0component:<root>#<chunk>`, see `identity_compaction`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Component {
    #[prost(string, tag = "1")]
    pub root: String,
    #[prost(string, repeated, tag = "2")]
    pub members: Vec<String>,
    /// Identifiers that were the root of a lead that merged into this one.
    #[prost(string, repeated, tag = "3")]
    pub former_roots: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Routed {
    #[prost(string, tag = "1")]
    pub lead_id: String,
    #[prost(uint64, tag = "2")]
    pub graph_offset: u64,
    #[prost(oneof = "Body", tags = "3, 4, 5, 6")]
    pub body: Option<Body>,
}

/// A batch's routed records for one `by_lead` partition, in order, as one
/// Kafka record (see `routing`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RoutedBatch {
    #[prost(message, repeated, tag = "1")]
    pub routed: Vec<Routed>,
}

// Records are decoded one at a time and moved on; boxing the snapshot would
// only add an allocation per merge.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Body {
    #[prost(bytes, tag = "3")]
    Event(Vec<u8>),
    #[prost(message, tag = "4")]
    MergeRequest(MergeRequest),
    #[prost(message, tag = "5")]
    MergeState(MergeState),
    #[prost(message, tag = "6")]
    Facts(EventFacts),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EventFacts {
    #[prost(bool, tag = "1")]
    pub unscorable: bool,
    #[prost(string, tag = "2")]
    pub message_id: String,
    #[prost(string, tag = "3")]
    pub event: String,
    #[prost(int64, tag = "4")]
    pub ts_ms: i64,
    #[prost(uint32, optional, tag = "5")]
    pub platform: Option<u32>,
    #[prost(uint32, repeated, tag = "6")]
    pub signals: Vec<u32>,
    #[prost(string, optional, tag = "7")]
    pub model_id: Option<String>,
    #[prost(double, optional, tag = "8")]
    pub price: Option<f64>,
    #[prost(string, optional, tag = "9")]
    pub channel: Option<String>,
    #[prost(string, optional, tag = "10")]
    pub session_id: Option<String>,
    #[prost(bool, tag = "11")]
    pub is_bot: bool,
    #[prost(bool, tag = "12")]
    pub order: bool,
    #[prost(bool, tag = "13")]
    pub lost: bool,
    #[prost(int64, optional, tag = "14")]
    pub purchase_ms: Option<i64>,
    #[prost(int64, optional, tag = "15")]
    pub duration_ms: Option<i64>,
    #[prost(double, optional, tag = "16")]
    pub page_value: Option<f64>,
    #[prost(fixed32, repeated, tag = "17")]
    pub categories: Vec<u32>,
    /// The event's only identifier is an anonymous id the identity graph
    /// has never linked (set by the stitcher).
    #[prost(bool, tag = "18")]
    pub anonymous: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MergeRequest {
    #[prost(string, tag = "1")]
    pub into: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MergeState {
    #[prost(string, tag = "1")]
    pub from: String,
    #[prost(message, optional, tag = "2")]
    pub state: Option<LeadSnapshot>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeadSnapshot {
    #[prost(bytes, tag = "1")]
    pub windows: Vec<u8>,
    #[prost(float, repeated, tag = "2")]
    pub decayed: Vec<f32>,
    #[prost(int64, tag = "3")]
    pub decayed_at_ms: i64,
    #[prost(int64, tag = "4")]
    pub first_seen_ms: i64,
    #[prost(int64, tag = "5")]
    pub last_event_ms: i64,
    #[prost(int64, optional, tag = "6")]
    pub last_high_intent_ms: Option<i64>,
    #[prost(int64, optional, tag = "7")]
    pub woke_at_ms: Option<i64>,
    #[prost(int64, optional, tag = "8")]
    pub reactivated_at_ms: Option<i64>,
    #[prost(uint32, tag = "9")]
    pub events: u32,
    #[prost(uint32, tag = "10")]
    pub sessions: u32,
    #[prost(uint32, repeated, tag = "11")]
    pub models: Vec<u32>,
    #[prost(uint32, tag = "12")]
    pub distinct_models: u32,
    #[prost(float, tag = "13")]
    pub max_price: f32,
    #[prost(float, tag = "14")]
    pub max_page_value: f32,
    #[prost(float, tag = "15")]
    pub duration_s: f32,
    #[prost(uint32, tag = "16")]
    pub platforms: u32,
    #[prost(string, optional, tag = "17")]
    pub first_channel: Option<String>,
    #[prost(bool, tag = "18")]
    pub test_drive_booked: bool,
    #[prost(bool, tag = "19")]
    pub lead_form_submitted: bool,
    #[prost(int64, optional, tag = "20")]
    pub last_purchase_ms: Option<i64>,
    #[prost(uint64, tag = "21")]
    pub version: u64,
    #[prost(int64, tag = "22")]
    pub applied_offset: i64,
    #[prost(fixed64, repeated, tag = "23")]
    pub recent: Vec<u64>,
    #[prost(string, repeated, tag = "24")]
    pub absorbed: Vec<String>,
    #[prost(string, repeated, tag = "25")]
    pub requested: Vec<String>,
    #[prost(string, optional, tag = "26")]
    pub merged_into: Option<String>,
    #[prost(uint64, tag = "27")]
    pub late_events: u64,
    #[prost(uint32, optional, tag = "28")]
    pub first_platform: Option<u32>,
    #[prost(int64, optional, tag = "29")]
    pub last_lost_ms: Option<i64>,
    #[prost(message, optional, tag = "30")]
    pub emitted: Option<EmittedClass>,
    #[prost(int64, tag = "31")]
    pub evaluated_ms: i64,
    #[prost(float, tag = "32")]
    pub model_page_s: f32,
    #[prost(fixed32, repeated, tag = "33")]
    pub category_values: Vec<u32>,
    #[prost(fixed32, repeated, tag = "34")]
    pub category_seen_s: Vec<u32>,
    /// Event time of each id in `recent` (same order); absent in snapshots
    /// from before the exact dedupe.
    #[prost(int64, repeated, tag = "35")]
    pub recent_ts_ms: Vec<i64>,
    /// Event times below this were let go from `recent`.
    #[prost(int64, optional, tag = "36")]
    pub seen_floor_ms: Option<i64>,
    /// Position (offset << 16 | index in its batch record) of the last
    /// routed record applied; absent in snapshots from before batch
    /// records, whose `applied_offset` covers the whole record.
    #[prost(int64, optional, tag = "37")]
    pub applied_position: Option<i64>,
    /// Every event so far carried only an unlinked anonymous id, and no
    /// lead merged in: the lead expires after the anonymous TTL. False in
    /// snapshots from before expiry, which therefore never expire.
    #[prost(bool, tag = "38")]
    pub anonymous: bool,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct EmittedClass {
    #[prost(uint32, tag = "1")]
    pub grade: u32,
    #[prost(uint32, tag = "2")]
    pub stage: u32,
    #[prost(bool, tag = "3")]
    pub reactivated: bool,
    #[prost(bool, tag = "4")]
    pub churn_risk: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamTime {
    #[prost(int64, tag = "1")]
    pub ms: i64,
    #[prost(int64, tag = "2")]
    pub watermark_ms: i64,
}
