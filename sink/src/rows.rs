//! Kafka records → ClickHouse rows, pure. Each function names what is wrong
//! with a record it cannot turn into a row; the writer sends those to
//! `dead_letters` with the raw bytes.

use clickhouse::Row;
use leadstream_schemas::datum::Datum;
use serde::Serialize;
use serde_json::Value as Json;

#[derive(Debug, Clone, Default, PartialEq, Row, Serialize)]
pub struct EventRow {
    pub message_id: String,
    pub event: String,
    pub r#type: String,
    pub platform: String,
    pub source_id: String,
    pub tenant: String,
    pub anonymous_id: String,
    pub user_id: String,
    pub union_id: String,
    pub phone_hash: String,
    pub timestamp: u32,
    pub timestamp_ms: u64,
    pub received_at: u32,
    pub received_ms: u64,
    pub page_type: String,
    pub model_id: String,
    pub lead_channel: String,
    pub utm_source: String,
    pub utm_campaign: String,
    pub session_id: String,
    pub sdk_name: String,
    pub sdk_version: String,
    pub is_bot: u8,
    pub context: String,
    pub properties: String,
    pub schema_id: u32,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Row, Serialize)]
pub struct ScoreRow {
    pub lead_id: String,
    pub score: f64,
    pub rule_score: f64,
    pub probability: f64,
    pub grade: String,
    pub stage: String,
    pub reason_codes: Vec<String>,
    pub reason_points: Vec<f64>,
    pub reactivated: u8,
    pub event_count: u64,
    pub platforms: Vec<String>,
    pub first_platform: String,
    pub first_channel: String,
    pub first_seen_at: u32,
    pub last_event_at: u32,
    pub merged_into: String,
    pub version: u64,
    pub updated_at: u32,
    pub updated_ms: u64,
    pub change_reason: String,
    pub previous_stage: String,
    pub churn_risk: u8,
    pub last_intent_at: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Row, Serialize)]
pub struct ViolationRow {
    pub received_at: u32,
    pub received_ms: u64,
    pub message_id: String,
    pub event: String,
    pub reason: String,
    pub field: String,
    pub message: String,
    pub source_id: String,
    pub platform: String,
    pub tenant: String,
    pub sdk_name: String,
    pub sdk_version: String,
    pub raw: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Row, Serialize)]
pub struct DeadLetterRow {
    pub failed_at: u32,
    pub topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub error: String,
    pub raw_base64: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RowError(pub String);

fn text(v: &Json, path: &str) -> String {
    v.pointer(path)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn millis(v: &Json, path: &str) -> Result<u64, RowError> {
    v.pointer(path)
        .and_then(Json::as_i64)
        .filter(|t| *t >= 0)
        .map(|t| t as u64)
        .ok_or_else(|| not_millis(path))
}

fn not_millis(path: &str) -> RowError {
    RowError(format!(
        "{path} is missing or not a non-negative millisecond timestamp"
    ))
}

fn seconds(ms: u64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

/// A decoded tracking-plan event at `partition`/`offset`, read straight
/// from the borrowed datum (one pass over its fields; `context` and
/// `properties` are written as JSON text without an intermediate tree).
pub fn event_row(
    e: &Datum<'_>,
    schema_id: u32,
    partition: i32,
    offset: i64,
) -> Result<EventRow, RowError> {
    let mut row = EventRow::default();
    fill_event_row(&mut row, e, schema_id, partition, offset)?;
    Ok(row)
}

/// [`event_row`] into an existing row, reusing its strings' buffers: the
/// sink fills one row per conversion thread and encodes it, so a backlog
/// costs no allocation per event.
pub fn fill_event_row(
    row: &mut EventRow,
    e: &Datum<'_>,
    schema_id: u32,
    partition: i32,
    offset: i64,
) -> Result<(), RowError> {
    if !matches!(e, Datum::Record(..)) {
        return Err(RowError("event is not an Avro record".into()));
    }
    row.clear();
    row.schema_id = schema_id;
    row.kafka_partition = partition;
    row.kafka_offset = offset;
    row.properties.push_str("null");
    let (mut ts, mut received) = (None, None);
    for (name, v) in e.entries() {
        match name {
            "message_id" => set_text(&mut row.message_id, v),
            "event" => set_text(&mut row.event, v),
            "type" => set_text(&mut row.r#type, v),
            "platform" => set_text(&mut row.platform, v),
            "source_id" => set_text(&mut row.source_id, v),
            "tenant" => set_text(&mut row.tenant, v),
            "anonymous_id" => set_text(&mut row.anonymous_id, v),
            "user_id" => set_text(&mut row.user_id, v),
            "union_id" => set_text(&mut row.union_id, v),
            "phone_hash" => set_text(&mut row.phone_hash, v),
            "timestamp" => ts = millis_of(v),
            "received_at" => received = millis_of(v),
            "context" => {
                row.context.clear();
                v.write_json(&mut row.context);
                for (k, cv) in v.entries() {
                    match k {
                        "lead_channel" => set_text(&mut row.lead_channel, cv),
                        "utm_source" => set_text(&mut row.utm_source, cv),
                        "utm_campaign" => set_text(&mut row.utm_campaign, cv),
                        "session_id" => set_text(&mut row.session_id, cv),
                        "sdk_name" => set_text(&mut row.sdk_name, cv),
                        "sdk_version" => set_text(&mut row.sdk_version, cv),
                        "is_bot" => row.is_bot = u8::from(cv.as_bool() == Some(true)),
                        _ => {}
                    }
                }
            }
            "properties" => {
                row.properties.clear();
                v.write_json(&mut row.properties);
                for (k, pv) in v.entries() {
                    match k {
                        "page_type" => set_text(&mut row.page_type, pv),
                        "model_id" => set_text(&mut row.model_id, pv),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if row.message_id.is_empty() {
        return Err(RowError("event has no message_id".into()));
    }
    let ts = ts.ok_or_else(|| not_millis("/timestamp"))?;
    let received = received.ok_or_else(|| not_millis("/received_at"))?;
    (row.timestamp, row.timestamp_ms) = (seconds(ts), ts);
    (row.received_at, row.received_ms) = (seconds(received), received);
    Ok(())
}

impl EventRow {
    /// Every column back to its default, keeping the strings' buffers.
    pub fn clear(&mut self) {
        // A struct literal without `..`: a new column fails to compile here
        // until it is cleared too.
        *self = EventRow {
            message_id: cleared(&mut self.message_id),
            event: cleared(&mut self.event),
            r#type: cleared(&mut self.r#type),
            platform: cleared(&mut self.platform),
            source_id: cleared(&mut self.source_id),
            tenant: cleared(&mut self.tenant),
            anonymous_id: cleared(&mut self.anonymous_id),
            user_id: cleared(&mut self.user_id),
            union_id: cleared(&mut self.union_id),
            phone_hash: cleared(&mut self.phone_hash),
            timestamp: 0,
            timestamp_ms: 0,
            received_at: 0,
            received_ms: 0,
            page_type: cleared(&mut self.page_type),
            model_id: cleared(&mut self.model_id),
            lead_channel: cleared(&mut self.lead_channel),
            utm_source: cleared(&mut self.utm_source),
            utm_campaign: cleared(&mut self.utm_campaign),
            session_id: cleared(&mut self.session_id),
            sdk_name: cleared(&mut self.sdk_name),
            sdk_version: cleared(&mut self.sdk_version),
            is_bot: 0,
            context: cleared(&mut self.context),
            properties: cleared(&mut self.properties),
            schema_id: 0,
            kafka_partition: 0,
            kafka_offset: 0,
        };
    }
}

/// The string moved out of `s`, emptied, its buffer kept.
fn cleared(s: &mut String) -> String {
    let mut s = std::mem::take(s);
    s.clear();
    s
}

/// Sets `out` to a string field's text; "" for null or a non-string.
fn set_text(out: &mut String, v: &Datum<'_>) {
    out.clear();
    out.push_str(v.as_str().unwrap_or_default());
}

/// A string field's text; "" for null or a non-string.
fn text_of(v: &Datum<'_>) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn millis_of(v: &Datum<'_>) -> Option<u64> {
    v.as_i64().and_then(|t| u64::try_from(t).ok())
}

/// A decoded `lead_score` record, read straight from the borrowed datum.
pub fn score_row(s: &Datum<'_>) -> Result<ScoreRow, RowError> {
    if !matches!(s, Datum::Record(..)) {
        return Err(RowError("lead_score is not an Avro record".into()));
    }
    let mut row = ScoreRow::default();
    let (mut first_seen, mut last_event, mut updated, mut version) = (None, None, None, None);
    let f64_of = |v: &Datum<'_>| v.as_f64().unwrap_or(0.0);
    for (name, v) in s.entries() {
        match name {
            "lead_id" => row.lead_id = text_of(v),
            "score" => row.score = f64_of(v),
            "rule_score" => row.rule_score = f64_of(v),
            "probability" => row.probability = f64_of(v),
            "grade" => row.grade = text_of(v),
            "stage" => row.stage = text_of(v),
            "reasons" => {
                for r in v.items() {
                    row.reason_codes
                        .push(r.field("code").map(text_of).unwrap_or_default());
                    row.reason_points
                        .push(r.field("points").map_or(0.0, f64_of));
                }
            }
            "reactivated" => row.reactivated = u8::from(v.as_bool() == Some(true)),
            "event_count" => row.event_count = millis_of(v).unwrap_or(0),
            "platforms" => {
                row.platforms = v
                    .items()
                    .iter()
                    .map(text_of)
                    .filter(|p| !p.is_empty())
                    .collect();
            }
            "first_platform" => row.first_platform = text_of(v),
            "first_channel" => row.first_channel = text_of(v),
            "first_seen_at" => first_seen = millis_of(v),
            "last_event_at" => last_event = millis_of(v),
            "merged_into" => row.merged_into = text_of(v),
            "version" => version = millis_of(v),
            "updated_at" => updated = millis_of(v),
            "change_reason" => row.change_reason = text_of(v),
            "previous_stage" => row.previous_stage = text_of(v),
            "churn_risk" => row.churn_risk = u8::from(v.as_bool() == Some(true)),
            "last_intent_at" => row.last_intent_at = millis_of(v).map(seconds),
            _ => {}
        }
    }
    if row.change_reason.is_empty() {
        // Written before lead_score v3: every record then came from an event.
        row.change_reason = "event".into();
    }
    if row.lead_id.is_empty() {
        return Err(RowError("lead_score has no lead_id".into()));
    }
    let updated = updated.ok_or_else(|| not_millis("/updated_at"))?;
    row.first_seen_at = seconds(first_seen.ok_or_else(|| not_millis("/first_seen_at"))?);
    row.last_event_at = seconds(last_event.ok_or_else(|| not_millis("/last_event_at"))?);
    row.version = version.ok_or_else(|| RowError("lead_score has no version".into()))?;
    (row.updated_at, row.updated_ms) = (seconds(updated), updated);
    Ok(row)
}

/// A DLQ record (JSON written by ingest).
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
pub struct PipelineMetricRow {
    pub minute: u32,
    pub service: String,
    pub instance: String,
    pub metric: String,
    pub value: f64,
}

/// A role's per-minute metric record (JSON, see
/// `leadstream_common::pipeline_metrics`) → a `pipeline_metrics` row.
pub fn pipeline_metric_row(bytes: &[u8]) -> Result<PipelineMetricRow, RowError> {
    let m: leadstream_common::pipeline_metrics::MetricRow = serde_json::from_slice(bytes)
        .map_err(|e| RowError(format!("pipeline metrics record is not a metric row: {e}")))?;
    if m.service.is_empty() || m.metric.is_empty() {
        return Err(RowError(
            "pipeline metrics record has no service or metric".into(),
        ));
    }
    Ok(PipelineMetricRow {
        minute: m.minute,
        service: m.service,
        instance: m.instance,
        metric: m.metric,
        value: m.value,
    })
}

pub fn violation_row(bytes: &[u8], partition: i32, offset: i64) -> Result<ViolationRow, RowError> {
    let v: Json = serde_json::from_slice(bytes)
        .map_err(|e| RowError(format!("DLQ record is not JSON: {e}")))?;
    let reason = text(&v, "/reason");
    if reason.is_empty() {
        return Err(RowError("DLQ record has no reason".into()));
    }
    let received = millis(&v, "/received_at")?;
    Ok(ViolationRow {
        received_at: seconds(received),
        received_ms: received,
        message_id: text(&v, "/message_id"),
        event: text(&v, "/event"),
        reason,
        field: text(&v, "/field"),
        message: text(&v, "/message"),
        source_id: text(&v, "/source_id"),
        platform: text(&v, "/platform"),
        tenant: text(&v, "/tenant"),
        sdk_name: text(&v, "/sdk_name"),
        sdk_version: text(&v, "/sdk_version"),
        raw: v.get("raw").map(Json::to_string).unwrap_or_default(),
        kafka_partition: partition,
        kafka_offset: offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use leadstream_schemas::{Decoder, EmbeddedResolver, Encoder, Plan};

    async fn codec() -> (Encoder, Decoder) {
        let plan = Plan::embedded().unwrap();
        let resolver = std::sync::Arc::new(EmbeddedResolver::new(&plan).unwrap());
        let encoder = Encoder::build(&plan, resolver.as_ref()).await.unwrap();
        (encoder, Decoder::new(resolver))
    }

    async fn score_of(s: &Json) -> Result<ScoreRow, RowError> {
        let (encoder, decoder) = codec().await;
        let bytes = encoder.encode_derived("lead_score", s).unwrap().bytes;
        decoder.visit(&bytes, |_, d| score_row(d)).await.unwrap()
    }

    #[tokio::test]
    async fn events_flatten_the_envelope_and_keep_properties_as_json() {
        let e = json!({"message_id": "m1", "event": "page_viewed", "type": "page", "platform": "web",
            "source_id": "web-main", "tenant": "brand-a",
            "anonymous_id": "a1", "timestamp": 1_795_305_600_123_i64, "received_at": 1_795_305_601_000_i64,
            "context": {"utm_source": "autohome", "is_bot": true, "sdk_name": "analytics-python"},
            "properties": {"page_type": "configurator", "model_id": "x5"}});
        // An event as the sink sees it: encoded by the plan, then decoded.
        let (encoder, decoder) = codec().await;
        let bytes = encoder.encode(&e).unwrap().bytes;
        let r = decoder
            .visit(&bytes, |_, d| event_row(d, 7, 2, 42))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.timestamp, r.timestamp_ms),
            (1_795_305_600, 1_795_305_600_123)
        );
        assert_eq!(
            (
                r.page_type.as_str(),
                r.model_id.as_str(),
                r.utm_source.as_str()
            ),
            ("configurator", "x5", "autohome")
        );
        assert_eq!(
            (r.is_bot, r.schema_id, r.kafka_partition, r.kafka_offset),
            (1, 7, 2, 42)
        );
        // The JSON columns are apache-avro's decoded value as JSON, nulls
        // for absent optional fields included.
        let value = decoder.decode(&bytes).await.unwrap().value;
        let json = leadstream_schemas::codec::to_json(&value);
        assert_eq!(r.properties, json["properties"].to_string());
        assert_eq!(r.context, json["context"].to_string());
        assert_eq!(
            serde_json::from_str::<Json>(&r.properties).unwrap()["model_id"],
            "x5"
        );
        let schema = apache_avro::Schema::parse_str(
            r#"{"type": "record", "name": "NoTs", "fields": [
                {"name": "message_id", "type": "string"}, {"name": "received_at", "type": "long"}]}"#,
        )
        .unwrap();
        let apache_avro::Schema::Record(record) = &schema else {
            unreachable!()
        };
        let no_ts = Datum::Record(
            leadstream_schemas::datum::Fields(record),
            vec![Datum::Str("m"), Datum::Long(1)],
        );
        let err = event_row(&no_ts, 7, 0, 0).unwrap_err();
        assert!(err.0.contains("/timestamp"), "{err}");
    }

    #[tokio::test]
    async fn a_reused_row_holds_nothing_of_the_previous_event() {
        let full = json!({"message_id": "m1", "event": "page_viewed", "type": "page", "platform": "web",
            "source_id": "web-main", "tenant": "brand-a", "anonymous_id": "a1", "user_id": "u1",
            "timestamp": 1_795_305_600_123_i64, "received_at": 1_795_305_601_000_i64,
            "context": {"utm_source": "autohome", "is_bot": true, "lead_channel": "dealer_site"},
            "properties": {"page_type": "configurator", "model_id": "x5"}});
        let sparse = json!({"message_id": "m2", "event": "page_viewed", "type": "page", "platform": "app",
            "source_id": "app-main", "tenant": "brand-a", "anonymous_id": "a2",
            "timestamp": 1_795_305_700_000_i64, "received_at": 1_795_305_700_000_i64,
            "context": {"sdk_name": "analytics-ios"}, "properties": {"page_type": "home"}});
        let (encoder, decoder) = codec().await;
        let mut reused = EventRow::default();
        for (e, offset) in [(&full, 1), (&sparse, 2)] {
            let bytes = encoder.encode(e).unwrap().bytes;
            let fresh = decoder
                .visit(&bytes, |id, d| {
                    fill_event_row(&mut reused, d, id, 0, offset).unwrap();
                    event_row(d, id, 0, offset).unwrap()
                })
                .await
                .unwrap();
            assert_eq!(reused, fresh);
        }
        assert_eq!((reused.user_id.as_str(), reused.is_bot), ("", 0));
    }

    #[tokio::test]
    async fn scores_and_violations_map_and_bad_records_say_why() {
        let s = json!({"lead_id": "L1", "score": 81.5, "rule_score": 81.5, "probability": 0.8, "grade": "high",
            "stage": "new", "reasons": [{"code": "test_drive_booked", "points": 50.0}], "reactivated": false,
            "event_count": 9, "platforms": ["app", "web"], "first_platform": "web", "first_channel": null, "first_seen_at": 1000,
            "last_event_at": 2000, "merged_into": null, "version": 3, "updated_at": 2000});
        let r = score_of(&s).await.unwrap();
        assert_eq!(
            (r.reason_codes.clone(), r.reason_points.clone(), r.version),
            (vec!["test_drive_booked".to_owned()], vec![50.0], 3)
        );
        assert_eq!(
            (
                r.change_reason.as_str(),
                r.previous_stage.as_str(),
                r.churn_risk,
                r.last_intent_at
            ),
            ("event", "", 0, None)
        );
        let mut timed = s.clone();
        timed["change_reason"] = json!("went_dormant");
        timed["previous_stage"] = json!("new");
        timed["churn_risk"] = json!(true);
        timed["last_intent_at"] = json!(1_500_000);
        let t = score_of(&timed).await.unwrap();
        assert_eq!(
            (
                t.change_reason.as_str(),
                t.previous_stage.as_str(),
                t.churn_risk,
                t.last_intent_at
            ),
            ("went_dormant", "new", 1, Some(1_500))
        );
        assert_eq!(
            (
                r.first_platform.as_str(),
                r.first_channel.as_str(),
                r.merged_into.as_str()
            ),
            ("web", "", "")
        );
        assert_eq!(
            (
                r.platforms.clone(),
                r.event_count,
                r.score,
                r.updated_at,
                r.updated_ms
            ),
            (vec!["app".to_owned(), "web".to_owned()], 9, 81.5, 2, 2000)
        );
        let dlq = json!({"message_id": "m9", "event": "lead_form_submitted", "reason": "missing_required",
            "field": "properties.form_id", "message": "required", "source_id": "web-main", "platform": "web",
            "received_at": 5000, "raw": {"event": "Lead Form Submitted"}});
        let v = violation_row(dlq.to_string().as_bytes(), 1, 9).unwrap();
        assert_eq!(
            (v.reason.as_str(), v.field.as_str(), v.received_at),
            ("missing_required", "properties.form_id", 5)
        );
        assert!(
            violation_row(b"not json", 0, 0)
                .unwrap_err()
                .0
                .contains("not JSON")
        );
    }
}
