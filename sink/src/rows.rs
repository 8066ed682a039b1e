//! Kafka records → ClickHouse rows, pure. Each function names what is wrong
//! with a record it cannot turn into a row; the writer sends those to
//! `dead_letters` with the raw bytes.

use clickhouse::Row;
use serde::Serialize;
use serde_json::Value as Json;

#[derive(Debug, Clone, PartialEq, Row, Serialize)]
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

#[derive(Debug, Clone, PartialEq, Row, Serialize)]
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
        .ok_or_else(|| {
            RowError(format!(
                "{path} is missing or not a non-negative millisecond timestamp"
            ))
        })
}

fn seconds(ms: u64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

/// A decoded tracking-plan event (as JSON) at `partition`/`offset`.
pub fn event_row(
    e: &Json,
    schema_id: u32,
    partition: i32,
    offset: i64,
) -> Result<EventRow, RowError> {
    let message_id = text(e, "/message_id");
    if message_id.is_empty() {
        return Err(RowError("event has no message_id".into()));
    }
    let ts = millis(e, "/timestamp")?;
    let received = millis(e, "/received_at")?;
    let props = e.get("properties").cloned().unwrap_or(Json::Null);
    Ok(EventRow {
        message_id,
        event: text(e, "/event"),
        r#type: text(e, "/type"),
        platform: text(e, "/platform"),
        source_id: text(e, "/source_id"),
        tenant: text(e, "/tenant"),
        anonymous_id: text(e, "/anonymous_id"),
        user_id: text(e, "/user_id"),
        union_id: text(e, "/union_id"),
        phone_hash: text(e, "/phone_hash"),
        timestamp: seconds(ts),
        timestamp_ms: ts,
        received_at: seconds(received),
        received_ms: received,
        page_type: text(&props, "/page_type"),
        model_id: text(&props, "/model_id"),
        lead_channel: text(e, "/context/lead_channel"),
        utm_source: text(e, "/context/utm_source"),
        utm_campaign: text(e, "/context/utm_campaign"),
        session_id: text(e, "/context/session_id"),
        sdk_name: text(e, "/context/sdk_name"),
        sdk_version: text(e, "/context/sdk_version"),
        is_bot: u8::from(
            e.pointer("/context/is_bot")
                .and_then(Json::as_bool)
                .unwrap_or(false),
        ),
        context: e.get("context").map(Json::to_string).unwrap_or_default(),
        properties: props.to_string(),
        schema_id,
        kafka_partition: partition,
        kafka_offset: offset,
    })
}

/// A decoded `lead_score` record.
pub fn score_row(s: &Json) -> Result<ScoreRow, RowError> {
    let lead_id = text(s, "/lead_id");
    if lead_id.is_empty() {
        return Err(RowError("lead_score has no lead_id".into()));
    }
    let num = |path: &str| s.pointer(path).and_then(Json::as_f64).unwrap_or(0.0);
    let reasons = s
        .get("reasons")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let updated = millis(s, "/updated_at")?;
    Ok(ScoreRow {
        lead_id,
        score: num("/score"),
        rule_score: num("/rule_score"),
        probability: num("/probability"),
        grade: text(s, "/grade"),
        stage: text(s, "/stage"),
        reason_codes: reasons.iter().map(|r| text(r, "/code")).collect(),
        reason_points: reasons
            .iter()
            .map(|r| r.get("points").and_then(Json::as_f64).unwrap_or(0.0))
            .collect(),
        reactivated: u8::from(
            s.get("reactivated")
                .and_then(Json::as_bool)
                .unwrap_or(false),
        ),
        event_count: s.get("event_count").and_then(Json::as_u64).unwrap_or(0),
        platforms: s
            .get("platforms")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Json::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        first_channel: text(s, "/first_channel"),
        first_seen_at: seconds(millis(s, "/first_seen_at")?),
        last_event_at: seconds(millis(s, "/last_event_at")?),
        merged_into: text(s, "/merged_into"),
        version: s
            .get("version")
            .and_then(Json::as_u64)
            .ok_or_else(|| RowError("lead_score has no version".into()))?,
        updated_at: seconds(updated),
        updated_ms: updated,
    })
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

    #[test]
    fn events_flatten_the_envelope_and_keep_properties_as_json() {
        let e = json!({"message_id": "m1", "event": "page_viewed", "type": "page", "platform": "web",
            "anonymous_id": "a1", "timestamp": 1_795_305_600_123_i64, "received_at": 1_795_305_601_000_i64,
            "context": {"utm_source": "autohome", "is_bot": true, "sdk_name": "analytics-python"},
            "properties": {"page_type": "configurator", "model_id": "x5"}});
        let r = event_row(&e, 7, 2, 42).unwrap();
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
        assert_eq!(
            serde_json::from_str::<Json>(&r.properties).unwrap(),
            e["properties"]
        );
        let err = event_row(&json!({"message_id": "m", "received_at": 1}), 7, 0, 0).unwrap_err();
        assert!(err.0.contains("/timestamp"), "{err}");
    }

    #[test]
    fn scores_and_violations_map_and_bad_records_say_why() {
        let s = json!({"lead_id": "L1", "score": 81.5, "rule_score": 81.5, "probability": 0.8, "grade": "high",
            "stage": "new", "reasons": [{"code": "test_drive_booked", "points": 50.0}], "reactivated": false,
            "event_count": 9, "platforms": ["app", "web"], "first_channel": null, "first_seen_at": 1000,
            "last_event_at": 2000, "merged_into": null, "version": 3, "updated_at": 2000});
        let r = score_row(&s).unwrap();
        assert_eq!(
            (r.reason_codes.clone(), r.reason_points.clone(), r.version),
            (vec!["test_drive_booked".to_owned()], vec![50.0], 3)
        );
        assert_eq!((r.first_channel.as_str(), r.merged_into.as_str()), ("", ""));
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
