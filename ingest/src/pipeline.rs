//! The pure per-event stage: Segment payload → tracking-plan event → PII
//! handling → validation and encoding → a routed Kafka record (events or
//! DLQ). Policy is decided here and stamped on the record; the Kafka shell
//! only sends.

use leadstream_schemas::{Encoder, lint::suggests_personal_data};
use serde_json::{Value as Json, json};

use crate::{
    pii::PiiRules,
    segment::{self, Incoming},
    sources::UnplannedPolicy,
    wire::SegmentEvent,
};

/// Closed set of reason codes for rejected events.
pub const REASONS: [&str; 9] = [
    "bad_json",
    "too_large",
    "unauthorized_source",
    "unplanned_event",
    "missing_required",
    "type_mismatch",
    "additional_property",
    "invalid_value",
    "duplicate",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Events,
    Dlq,
}

/// One message for Kafka, fully decided: topic, key, bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: Topic,
    pub key: String,
    pub payload: Vec<u8>,
    pub message_id: String,
}

/// A rejected event, as reported to the client and written to the DLQ.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub index: usize,
    pub message_id: Option<String>,
    pub reason: &'static str,
    pub field: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Goes to Kafka; a flagged violation (unplanned event under the `flag`
    /// policy) also carries its DLQ record.
    Accepted {
        records: Vec<Record>,
        flagged: bool,
    },
    Rejected {
        rejection: Rejection,
        dlq: Record,
    },
}

pub struct Pipeline {
    pub encoder: Encoder,
    pub pii: PiiRules,
    /// Lower-case user-agent fragments of known bots and crawlers.
    pub bot_agents: Vec<String>,
}

/// An event as received, rebuilt as JSON only when a DLQ record needs it.
pub struct Raw<'a> {
    pub text: &'a str,
    /// The route's call type, which a single-event call's body leaves out.
    pub route_type: Option<&'a str>,
}

impl Raw<'_> {
    pub fn to_json(&self) -> Json {
        let mut v = serde_json::from_str(self.text)
            .unwrap_or_else(|_| Json::String(mask_unparseable(self.text.as_bytes(), 4096)));
        if let (Some(t), Some(obj)) = (self.route_type, v.as_object_mut()) {
            obj.insert("type".into(), Json::String(t.to_owned()));
        }
        v
    }
}

impl Pipeline {
    pub fn process(
        &self,
        segment_event: &SegmentEvent<'_>,
        raw: &Raw<'_>,
        index: usize,
        inc: &Incoming<'_>,
    ) -> Verdict {
        let message_id = segment_event.message_id.as_str().map(str::to_owned);
        let reject = |reason: &'static str, field: Option<String>, message: String| {
            let rejection = Rejection {
                index,
                message_id: message_id.clone(),
                reason,
                field,
                message,
            };
            let dlq = self.dlq_record(&raw.to_json(), &rejection, inc);
            Verdict::Rejected { rejection, dlq }
        };
        let mut event = match segment::to_plan(segment_event, inc) {
            Ok(e) => e,
            Err(e) => return reject(e.reason, e.field, e.message),
        };
        self.flag_bot(&mut event);
        self.pii.apply(&mut event);
        match self.encoder.encode_view(&event.event, &event) {
            Ok(encoded) => Verdict::Accepted {
                records: vec![Record {
                    topic: Topic::Events,
                    key: event.partition_key().to_owned(),
                    payload: encoded.bytes,
                    message_id: event.message_id.into_owned(),
                }],
                flagged: false,
            },
            Err(e)
                if e.reason() == "unplanned_event"
                    && inc.source.unplanned == UnplannedPolicy::Flag =>
            {
                let rejection = Rejection {
                    index,
                    message_id: message_id.clone(),
                    reason: "unplanned_event",
                    field: Some("event".into()),
                    message: format!("{e} (accepted: the source's policy is flag)"),
                };
                Verdict::Accepted {
                    records: vec![self.dlq_record(&raw.to_json(), &rejection, inc)],
                    flagged: true,
                }
            }
            Err(e) => reject(e.reason(), e.field().map(str::to_owned), e.to_string()),
        }
    }

    fn flag_bot(&self, event: &mut segment::PlanEvent<'_>) {
        if let Some(ua) = event.context.user_agent.as_deref() {
            // One lower-cased copy, then substring search (memchr-based):
            // far cheaper than a case-insensitive scan per bot pattern.
            let ua = ua.to_ascii_lowercase();
            event.context.is_bot = self.bot_agents.iter().any(|b| ua.contains(b.as_str()));
        }
    }

    /// The tracking-plan event (as JSON) that accepting `call` from `source`
    /// at `received_at_ms` publishes, validated against the plan: the same
    /// mapping, bot flag and PII handling for offline uses, such as training
    /// a model on simulated history. The error says why it would be rejected.
    pub fn plan_json(
        &self,
        call: &Json,
        source: &crate::sources::Source,
        received_at_ms: i64,
        max_skew_ms: i64,
    ) -> Result<Json, String> {
        let parsed = SegmentEvent::from_json(call).map_err(|e| format!("bad_json: {e}"))?;
        let inc = Incoming {
            source,
            received_at_ms,
            max_skew_ms,
            batch_context: None,
            batch_sent_at: None,
        };
        let mut event =
            segment::to_plan(&parsed, &inc).map_err(|e| format!("{}: {}", e.reason, e.message))?;
        self.flag_bot(&mut event);
        self.pii.apply(&mut event);
        self.encoder
            .encode_view(&event.event, &event)
            .map_err(|e| format!("{}: {e}", e.reason()))?;
        Ok(event.to_json())
    }

    /// The DLQ keeps the raw event, with values under personal-looking keys
    /// hashed so clear-text PII never reaches Kafka even for bad events.
    pub fn dlq_record(&self, raw: &Json, r: &Rejection, inc: &Incoming<'_>) -> Record {
        let mut scrubbed = raw.clone();
        self.scrub(&mut scrubbed);
        let event = raw
            .get("event")
            .and_then(Json::as_str)
            .map(segment::event_name);
        let sdk = raw.pointer("/context/library/name").and_then(Json::as_str);
        let sdk_version = raw
            .pointer("/context/library/version")
            .and_then(Json::as_str);
        let body = json!({
            "message_id": r.message_id,
            "event": event,
            "reason": r.reason,
            "field": r.field,
            "message": r.message,
            "source_id": inc.source.id,
            "platform": inc.source.platform.as_str(),
            "tenant": inc.source.tenant,
            "sdk_name": sdk,
            "sdk_version": sdk_version,
            "received_at": inc.received_at_ms,
            "raw": scrubbed,
        });
        Record {
            topic: Topic::Dlq,
            key: inc.source.id.clone(),
            payload: body.to_string().into_bytes(),
            message_id: r.message_id.clone().unwrap_or_default(),
        }
    }

    fn scrub(&self, v: &mut Json) {
        match v {
            Json::Object(map) => {
                for (k, v) in map.iter_mut() {
                    let key = segment::event_name(k);
                    if suggests_personal_data(&key) && (v.is_string() || v.is_number()) {
                        let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                        *v = Json::String(self.pii.hash(&key, &text));
                    } else {
                        self.scrub(v);
                    }
                }
            }
            Json::Array(items) => items.iter_mut().for_each(|i| self.scrub(i)),
            _ => {}
        }
    }
}

/// Masks what may be personal in a body that is not even JSON: long digit
/// runs (phones, ids) and anything around an `@`.
pub fn mask_unparseable(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(max)]);
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        out.push_str(&if digits.len() >= 6 {
            "#".repeat(digits.len())
        } else {
            std::mem::take(&mut digits)
        });
        digits.clear();
        out.push(c);
    }
    out.push_str(&if digits.len() >= 6 {
        "#".repeat(digits.len())
    } else {
        digits
    });
    out.split(' ')
        .map(|w| if w.contains('@') { "***" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{Platform, Source};
    use leadstream_schemas::{EmbeddedResolver, Plan};

    fn pipeline() -> Pipeline {
        let plan = Plan::embedded().unwrap();
        let resolver = EmbeddedResolver::new(&plan).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        Pipeline {
            encoder: rt.block_on(Encoder::build(&plan, &resolver)).unwrap(),
            pii: PiiRules::new(&plan, b"pepper"),
            bot_agents: vec!["bot".into(), "spider".into()],
        }
    }

    /// An event through the pipeline as the server passes it: parsed from
    /// its JSON text.
    fn run(p: &Pipeline, raw: &Json, index: usize, inc: &Incoming<'_>) -> Verdict {
        let text = raw.to_string();
        let event = SegmentEvent::parse(&text).unwrap();
        let raw = Raw {
            text: &text,
            route_type: None,
        };
        p.process(&event, &raw, index, inc)
    }

    fn source(unplanned: UnplannedPolicy) -> Source {
        Source {
            id: "mp".into(),
            platform: Platform::MiniProgram,
            tenant: "t".into(),
            write_key_sha256: String::new(),
            unplanned,
            rate_limit_per_sec: 0,
        }
    }

    fn inc(src: &Source) -> Incoming<'_> {
        Incoming {
            source: src,
            received_at_ms: 1_795_305_600_000,
            max_skew_ms: 86_400_000,
            batch_context: None,
            batch_sent_at: None,
        }
    }

    #[test]
    fn routes_valid_events_keyed_by_best_identity() {
        let p = pipeline();
        let src = source(UnplannedPolicy::Block);
        let raw = json!({"type": "track", "event": "Lead Form Submitted", "messageId": "m1", "anonymousId": "a1",
            "context": {"wechat": {"unionId": "wx-1"}, "userAgent": "Baiduspider/2.0"},
            "properties": {"form_id": "quote", "phone": "13800138000", "name": "Li Lei"}});
        let Verdict::Accepted {
            records,
            flagged: false,
        } = run(&p, &raw, 0, &inc(&src))
        else {
            panic!("rejected")
        };
        assert_eq!(records[0].topic, Topic::Events);
        assert_eq!(
            records[0].key,
            p.pii.hash("union_id", "wx-1"),
            "union id beats anonymous id, hashed"
        );
        let bytes = String::from_utf8_lossy(&records[0].payload);
        assert!(!bytes.contains("13800138000") && !bytes.contains("Li Lei"));
    }

    #[test]
    fn rejects_to_the_dlq_with_reason_and_scrubbed_raw() {
        let p = pipeline();
        let src = source(UnplannedPolicy::Block);
        let raw = json!({"type": "track", "event": "Lead Form Submitted", "messageId": "m2", "userId": "u",
            "properties": {"form_id": 7, "phone": "13800138000"}});
        let Verdict::Rejected { rejection, dlq } = run(&p, &raw, 3, &inc(&src)) else {
            panic!("accepted")
        };
        assert_eq!(
            (
                rejection.index,
                rejection.reason,
                rejection.field.as_deref()
            ),
            (3, "type_mismatch", Some("properties.form_id"))
        );
        assert_eq!(dlq.topic, Topic::Dlq);
        let body: Json = serde_json::from_slice(&dlq.payload).unwrap();
        assert_eq!(body["reason"], "type_mismatch");
        assert_eq!(body["raw"]["properties"]["form_id"], 7);
        assert!(!body.to_string().contains("13800138000"));
    }

    #[test]
    fn unplanned_events_follow_the_source_policy() {
        let p = pipeline();
        let raw =
            json!({"type": "track", "event": "Wishlist Added", "messageId": "m3", "userId": "u"});
        let block = source(UnplannedPolicy::Block);
        assert!(matches!(
            run(&p, &raw, 0, &inc(&block)),
            Verdict::Rejected {
                rejection: Rejection {
                    reason: "unplanned_event",
                    ..
                },
                ..
            }
        ));
        let flag = source(UnplannedPolicy::Flag);
        let Verdict::Accepted {
            records,
            flagged: true,
        } = run(&p, &raw, 0, &inc(&flag))
        else {
            panic!()
        };
        assert_eq!(records[0].topic, Topic::Dlq);
    }

    #[test]
    fn the_typed_plan_event_encodes_as_its_json_does() {
        let p = pipeline();
        let src = source(UnplannedPolicy::Block);
        let inc = inc(&src);
        for raw in [
            json!({"type": "page", "messageId": "m1", "anonymousId": "a1", "name": "Price", "userId": 42,
                "context": {"library": {"name": "analytics.js", "version": "5"}, "os": {"name": "iOS", "version": "17"},
                    "campaign": {"source": "autohome", "medium": "cpc"}, "ip": "203.0.113.9", "leadChannel": "dealer"},
                "properties": {"url": "https://x/p", "model_id": "x5"}}),
            json!({"type": "track", "event": "Lead Form Submitted", "messageId": "m2", "anonymousId": "a",
                "timestamp": "2026-11-22T08:00:00Z", "sentAt": "2026-11-22T08:00:01Z",
                "properties": {"form_id": "quote", "phone": "13800138000", "name": "Li Lei"}}),
            json!({"type": "track", "event": "Lead Form Submitted", "messageId": "m3", "anonymousId": "a",
                "properties": {"form_id": 7}}),
            json!({"type": "identify", "messageId": "m4", "userId": "u", "traits": {"email": "A@b.c"}}),
        ] {
            let parsed = SegmentEvent::from_json(&raw).unwrap();
            let mut event = segment::to_plan(&parsed, &inc).unwrap();
            p.pii.apply(&mut event);
            let by_view = p.encoder.encode_view(&event.event, &event).map(|e| e.bytes);
            let by_json = p.encoder.encode(&event.to_json()).map(|e| e.bytes);
            assert_eq!(by_view, by_json, "{raw}");
        }
    }

    #[test]
    fn masks_unparseable_bodies() {
        assert_eq!(
            mask_unparseable(b"{phone: 13800138000, mail a@b.cn, n 42", 100),
            "{phone: ###########, mail *** n 42"
        );
    }
}
