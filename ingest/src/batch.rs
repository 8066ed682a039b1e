//! One request's events through the pipeline: parse each, cap its size,
//! drop repeats of a message id, map, validate and encode. Pure: the HTTP
//! shell authenticates and rate-limits before, and makes the records
//! durable, remembers the ids and answers after.

use serde_json::{Value as Json, json};

use crate::{
    dedupe::{Dedupe, KeySet},
    metrics as m,
    pipeline::{Pipeline, Raw, Record, Rejection, Topic, Verdict, mask_unparseable},
    segment::Incoming,
    wire::{Loose, SegmentEvent, WireError},
};

/// A request's events, as far as the request was parsed.
pub struct RequestEvents<'a> {
    /// Each event's JSON text: a batch's elements, or a single call's body.
    pub texts: Vec<&'a str>,
    /// A single call's event, parsed already with its body.
    pub single: Option<SegmentEvent<'a>>,
    /// The route's call type, which a single call's body leaves out.
    pub route_type: Option<&'a str>,
}

/// What became of a request's events.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// For Kafka: accepted events and DLQ records, in request order.
    pub records: Vec<Record>,
    pub rejected: Vec<Rejection>,
    pub accepted: usize,
    pub duplicates: usize,
    pub flagged: usize,
    /// How many of `records` go to the DLQ.
    pub dlq_records: usize,
    /// Message ids of this request, remembered once its records are durable.
    pub seen: KeySet,
}

impl Pipeline {
    /// Every event of a request, in order. `dedupe` is only read: ids are
    /// remembered by the caller once the records are durable, so a request
    /// that fails can be retried.
    pub fn process_batch(
        &self,
        events: RequestEvents<'_>,
        inc: &Incoming<'_>,
        max_event_bytes: usize,
        dedupe: &Dedupe,
    ) -> BatchOutcome {
        let RequestEvents {
            texts,
            mut single,
            route_type,
        } = events;
        let mut out = BatchOutcome::default();
        for (index, text) in texts.iter().enumerate() {
            let parsed = match single.take() {
                Some(v) => Ok(v),
                None => SegmentEvent::parse(text),
            };
            let mut event = match parsed {
                Ok(v) => v,
                Err(e) => {
                    // Valid JSON of another type keeps its text on the DLQ.
                    let raw = if matches!(e, WireError::NotAnObject) {
                        serde_json::from_str(text).unwrap_or(Json::Null)
                    } else {
                        Json::String(mask_unparseable(text.as_bytes(), 4096))
                    };
                    let r = Rejection {
                        index,
                        message_id: None,
                        reason: "bad_json",
                        field: None,
                        message: e.to_string(),
                    };
                    out.reject(self.dlq_record(&raw, &r, inc), r);
                    continue;
                }
            };
            if let Some(t) = route_type {
                event.kind = Loose::Str(t.into());
            }
            if text.len() > max_event_bytes {
                let r = Rejection {
                    index,
                    message_id: event.message_id.as_str().map(str::to_owned),
                    reason: "too_large",
                    field: None,
                    message: format!(
                        "event is {} bytes; the limit is {max_event_bytes}",
                        text.len()
                    ),
                };
                let stub = json!({"messageId": r.message_id, "event": event.event.to_json(), "type": event.kind.to_json(), "bytes": text.len()});
                out.reject(self.dlq_record(&stub, &r, inc), r);
                continue;
            }
            if let Some(id) = event.message_id.as_str() {
                let key = dedupe.key(&inc.source.id, id);
                if out.seen.contains(&key) || dedupe.seen(key) {
                    out.duplicates += 1;
                    continue;
                }
                out.seen.insert(key);
            }
            let raw = Raw { text, route_type };
            match self.process(&event, &raw, index, inc) {
                Verdict::Accepted { records, flagged } => {
                    out.accepted += 1;
                    out.flagged += usize::from(flagged);
                    out.records.extend(records);
                }
                Verdict::Rejected { rejection, dlq } => out.reject(dlq, rejection),
            }
        }
        out.dlq_records = out.records.iter().filter(|r| r.topic == Topic::Dlq).count();
        out
    }
}

impl BatchOutcome {
    fn reject(&mut self, dlq: Record, rejection: Rejection) {
        self.records.push(dlq);
        self.rejected.push(rejection);
    }

    /// Counts the outcome once its records are durable.
    pub fn record_metrics(&self, platform: &'static str) {
        metrics::counter!(m::EVENTS_ACCEPTED, "platform" => platform)
            .increment(self.accepted as u64);
        metrics::counter!(m::EVENTS_DUPLICATE).increment(self.duplicates as u64);
        metrics::counter!(m::EVENTS_FLAGGED).increment(self.flagged as u64);
        metrics::counter!(m::DLQ_RECORDS).increment(self.dlq_records as u64);
        for r in &self.rejected {
            metrics::counter!(m::EVENTS_REJECTED, "reason" => r.reason).increment(1);
        }
    }

    /// The answer to the client (Segment's `success`, plus what happened to
    /// each event).
    pub fn response(&self) -> Json {
        let rejected: Vec<Json> = self
            .rejected
            .iter()
            .map(|r| json!({"index": r.index, "messageId": r.message_id, "reason": r.reason, "field": r.field, "message": r.message}))
            .collect();
        json!({
            "success": true,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": rejected,
        })
    }
}
