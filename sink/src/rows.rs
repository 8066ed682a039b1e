//! Kafka records → ClickHouse rows, pure. Each function names what is wrong
//! with a record it cannot turn into a row; the writer sends those to
//! `dead_letters` with the raw bytes.

use apache_avro::types::Value as AvroValue;
use clickhouse::Row;
use leadstream_schemas::codec::write_json;
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
    pub first_channel: String,
    pub first_seen_at: u32,
    pub last_event_at: u32,
    pub merged_into: String,
    pub version: u64,
    pub updated_at: u32,
    pub updated_ms: u64,
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
/// from the Avro value (one pass over its fields; `context` and
/// `properties` are written as JSON text without an intermediate tree).
pub fn event_row(
    e: &AvroValue,
    schema_id: u32,
    partition: i32,
    offset: i64,
) -> Result<EventRow, RowError> {
    let AvroValue::Record(fields) = e else {
        return Err(RowError("event is not an Avro record".into()));
    };
    let mut row = EventRow {
        schema_id,
        kafka_partition: partition,
        kafka_offset: offset,
        properties: "null".into(),
        ..EventRow::default()
    };
    let (mut ts, mut received) = (None, None);
    for (name, v) in fields {
        let v = unwrap_union(v);
        match name.as_str() {
            "message_id" => row.message_id = avro_text(v),
            "event" => row.event = avro_text(v),
            "type" => row.r#type = avro_text(v),
            "platform" => row.platform = avro_text(v),
            "source_id" => row.source_id = avro_text(v),
            "tenant" => row.tenant = avro_text(v),
            "anonymous_id" => row.anonymous_id = avro_text(v),
            "user_id" => row.user_id = avro_text(v),
            "union_id" => row.union_id = avro_text(v),
            "phone_hash" => row.phone_hash = avro_text(v),
            "timestamp" => ts = avro_millis(v),
            "received_at" => received = avro_millis(v),
            "context" => {
                row.context.clear();
                write_json(v, &mut row.context);
                for (k, cv) in avro_fields(v) {
                    let cv = unwrap_union(cv);
                    match k {
                        "lead_channel" => row.lead_channel = avro_text(cv),
                        "utm_source" => row.utm_source = avro_text(cv),
                        "utm_campaign" => row.utm_campaign = avro_text(cv),
                        "session_id" => row.session_id = avro_text(cv),
                        "sdk_name" => row.sdk_name = avro_text(cv),
                        "sdk_version" => row.sdk_version = avro_text(cv),
                        "is_bot" => row.is_bot = u8::from(matches!(cv, AvroValue::Boolean(true))),
                        _ => {}
                    }
                }
            }
            "properties" => {
                row.properties.clear();
                write_json(v, &mut row.properties);
                for (k, pv) in avro_fields(v) {
                    let pv = unwrap_union(pv);
                    match k {
                        "page_type" => row.page_type = avro_text(pv),
                        "model_id" => row.model_id = avro_text(pv),
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
    Ok(row)
}

fn unwrap_union(v: &AvroValue) -> &AvroValue {
    match v {
        AvroValue::Union(_, inner) => unwrap_union(inner),
        other => other,
    }
}

/// A string field's text; "" for null or a non-string.
fn avro_text(v: &AvroValue) -> String {
    match v {
        AvroValue::String(s) | AvroValue::Enum(_, s) => s.clone(),
        _ => String::new(),
    }
}

fn avro_millis(v: &AvroValue) -> Option<u64> {
    match v {
        AvroValue::Long(t) | AvroValue::TimestampMillis(t) if *t >= 0 => Some(*t as u64),
        _ => None,
    }
}

/// The (name, value) pairs of a record or map; none for anything else.
fn avro_fields(v: &AvroValue) -> Box<dyn Iterator<Item = (&str, &AvroValue)> + '_> {
    match v {
        AvroValue::Record(fields) => Box::new(fields.iter().map(|(k, v)| (k.as_str(), v))),
        AvroValue::Map(m) => Box::new(m.iter().map(|(k, v)| (k.as_str(), v))),
        _ => Box::new(std::iter::empty()),
    }
}

/// A decoded `lead_score` record, read straight from the Avro value.
pub fn score_row(s: &AvroValue) -> Result<ScoreRow, RowError> {
    let AvroValue::Record(fields) = s else {
        return Err(RowError("lead_score is not an Avro record".into()));
    };
    let mut row = ScoreRow::default();
    let (mut first_seen, mut last_event, mut updated, mut version) = (None, None, None, None);
    for (name, v) in fields {
        let v = unwrap_union(v);
        match name.as_str() {
            "lead_id" => row.lead_id = avro_text(v),
            "score" => row.score = avro_f64(v),
            "rule_score" => row.rule_score = avro_f64(v),
            "probability" => row.probability = avro_f64(v),
            "grade" => row.grade = avro_text(v),
            "stage" => row.stage = avro_text(v),
            "reasons" => {
                for r in avro_items(v) {
                    let (mut code, mut points) = (String::new(), 0.0);
                    for (k, rv) in avro_fields(unwrap_union(r)) {
                        match k {
                            "code" => code = avro_text(unwrap_union(rv)),
                            "points" => points = avro_f64(unwrap_union(rv)),
                            _ => {}
                        }
                    }
                    row.reason_codes.push(code);
                    row.reason_points.push(points);
                }
            }
            "reactivated" => row.reactivated = u8::from(matches!(v, AvroValue::Boolean(true))),
            "event_count" => row.event_count = avro_millis(v).unwrap_or(0),
            "platforms" => {
                row.platforms = avro_items(v)
                    .map(|p| avro_text(unwrap_union(p)))
                    .filter(|p| !p.is_empty())
                    .collect();
            }
            "first_channel" => row.first_channel = avro_text(v),
            "first_seen_at" => first_seen = avro_millis(v),
            "last_event_at" => last_event = avro_millis(v),
            "merged_into" => row.merged_into = avro_text(v),
            "version" => version = avro_millis(v),
            "updated_at" => updated = avro_millis(v),
            _ => {}
        }
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

fn avro_f64(v: &AvroValue) -> f64 {
    match v {
        AvroValue::Double(f) => *f,
        AvroValue::Float(f) => f64::from(*f),
        AvroValue::Int(i) => f64::from(*i),
        AvroValue::Long(i) => *i as f64,
        _ => 0.0,
    }
}

fn avro_items(v: &AvroValue) -> impl Iterator<Item = &AvroValue> {
    match v {
        AvroValue::Array(items) => items.iter(),
        _ => [].iter(),
    }
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

    async fn decoded_score(s: &Json) -> AvroValue {
        use leadstream_schemas::{Decoder, EmbeddedResolver, Encoder, Plan};
        let plan = Plan::embedded().unwrap();
        let resolver = std::sync::Arc::new(EmbeddedResolver::new(&plan).unwrap());
        let encoder = Encoder::build(&plan, resolver.as_ref()).await.unwrap();
        let bytes = encoder.encode_derived("lead_score", s).unwrap().bytes;
        Decoder::new(resolver).decode(&bytes).await.unwrap().value
    }

    /// An event as the sink sees it: encoded by the plan, then decoded.
    async fn decoded(e: &Json) -> AvroValue {
        use leadstream_schemas::{Decoder, EmbeddedResolver, Encoder, Plan};
        let plan = Plan::embedded().unwrap();
        let resolver = std::sync::Arc::new(EmbeddedResolver::new(&plan).unwrap());
        let encoder = Encoder::build(&plan, resolver.as_ref()).await.unwrap();
        let bytes = encoder.encode(e).unwrap().bytes;
        Decoder::new(resolver).decode(&bytes).await.unwrap().value
    }

    #[tokio::test]
    async fn events_flatten_the_envelope_and_keep_properties_as_json() {
        let e = json!({"message_id": "m1", "event": "page_viewed", "type": "page", "platform": "web",
            "source_id": "web-main", "tenant": "brand-a",
            "anonymous_id": "a1", "timestamp": 1_795_305_600_123_i64, "received_at": 1_795_305_601_000_i64,
            "context": {"utm_source": "autohome", "is_bot": true, "sdk_name": "analytics-python"},
            "properties": {"page_type": "configurator", "model_id": "x5"}});
        let value = decoded(&e).await;
        let r = event_row(&value, 7, 2, 42).unwrap();
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
        // The JSON columns are the decoded value's JSON, nulls for absent
        // optional fields included.
        let json = leadstream_schemas::codec::to_json(&value);
        assert_eq!(r.properties, json["properties"].to_string());
        assert_eq!(r.context, json["context"].to_string());
        assert_eq!(
            serde_json::from_str::<Json>(&r.properties).unwrap()["model_id"],
            "x5"
        );
        let no_ts = AvroValue::Record(vec![
            ("message_id".into(), AvroValue::String("m".into())),
            ("received_at".into(), AvroValue::Long(1)),
        ]);
        let err = event_row(&no_ts, 7, 0, 0).unwrap_err();
        assert!(err.0.contains("/timestamp"), "{err}");
    }

    #[tokio::test]
    async fn scores_and_violations_map_and_bad_records_say_why() {
        let s = json!({"lead_id": "L1", "score": 81.5, "rule_score": 81.5, "probability": 0.8, "grade": "high",
            "stage": "new", "reasons": [{"code": "test_drive_booked", "points": 50.0}], "reactivated": false,
            "event_count": 9, "platforms": ["app", "web"], "first_channel": null, "first_seen_at": 1000,
            "last_event_at": 2000, "merged_into": null, "version": 3, "updated_at": 2000});
        let r = score_row(&decoded_score(&s).await).unwrap();
        assert_eq!(
            (r.reason_codes.clone(), r.reason_points.clone(), r.version),
            (vec!["test_drive_booked".to_owned()], vec![50.0], 3)
        );
        assert_eq!((r.first_channel.as_str(), r.merged_into.as_str()), ("", ""));
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
