//! Segment HTTP Tracking API payloads → tracking-plan events. Pure: the
//! caller passes the source, the receive time and the batch's shared context.

use std::borrow::Cow;

use serde_json::{Map, Value as Json, json};

pub use crate::plan_event::{PlanContext, PlanEvent};
use crate::{
    sources::Source,
    wire::{Lenient, Loose, Page, SegmentContext, SegmentEvent},
};

/// Segment call types and the route that implies each.
pub const TYPES: [&str; 6] = ["track", "page", "screen", "identify", "alias", "group"];

/// What went wrong mapping a Segment payload, before schema validation.
#[derive(Debug, Clone, PartialEq)]
pub struct MapError {
    pub reason: &'static str,
    pub field: Option<String>,
    pub message: String,
}

impl MapError {
    fn new(reason: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self {
            reason,
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }
}

/// Per-request facts the mapping needs.
pub struct Incoming<'a> {
    pub source: &'a Source,
    pub received_at_ms: i64,
    /// Cap on the device clock correction (|receivedAt − sentAt|).
    pub max_skew_ms: i64,
    /// `context` of the enclosing batch, merged under each event's own.
    pub batch_context: Option<&'a SegmentContext<'a>>,
    pub batch_sent_at: Option<&'a Loose<'a>>,
}

/// Track event names as sent by SDKs ("Test Drive Booked") → plan names (`test_drive_booked`).
pub fn event_name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut prev_us = true;
    let mut prev_lower = false;
    for c in raw.trim().chars() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() && prev_lower && !prev_us {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            prev_us = false;
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        } else if !prev_us {
            out.push('_');
            prev_us = true;
            prev_lower = false;
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// A non-empty string, or a number as text; borrowed when it can be.
fn text(v: Option<&Json>) -> Option<Cow<'_, str>> {
    match v? {
        Json::String(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
        Json::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// Maps one Segment event (already merged with its route's `type`).
pub fn to_plan<'a>(
    raw: &'a SegmentEvent<'a>,
    inc: &Incoming<'a>,
) -> Result<PlanEvent<'a>, MapError> {
    let given = raw.kind.as_str().unwrap_or("track");
    let Some(kind) = TYPES.iter().copied().find(|t| *t == given) else {
        return Err(MapError::new(
            "invalid_value",
            "type",
            format!("{given:?} is not one of {}", TYPES.join(", ")),
        ));
    };
    let context = Context {
        own: raw.context.0.as_ref(),
        batch: inc.batch_context,
    };
    static EMPTY: std::sync::LazyLock<Json> = std::sync::LazyLock::new(|| Json::Object(Map::new()));
    let empty_json: &'a Json = &EMPTY;
    let empty = empty_json.as_object().expect("an object");
    // Borrowed as sent where the plan keeps them as they are (PII handling
    // copies them only when it changes a value).
    let props_json = Some(&raw.properties)
        .filter(|p| p.is_object())
        .unwrap_or(empty_json);
    let props = props_json.as_object().unwrap_or(empty);
    let traits = raw
        .traits
        .as_object()
        .or_else(|| context.traits())
        .unwrap_or(empty);

    let (event, properties) = match kind {
        "track" => {
            let name = raw.event.text().ok_or_else(|| {
                MapError::new(
                    "missing_required",
                    "event",
                    "a track call needs an event name",
                )
            })?;
            (event_name(&name), Cow::Borrowed(props_json))
        }
        "page" | "screen" => (
            "page_viewed".to_owned(),
            Cow::Owned(page_properties(raw, props)),
        ),
        "identify" => (
            "identify".to_owned(),
            Cow::Owned(Json::Object(identify_traits(traits))),
        ),
        "alias" => {
            let previous = raw.previous_id.text().ok_or_else(|| {
                MapError::new(
                    "missing_required",
                    "previousId",
                    "an alias call needs previousId",
                )
            })?;
            (
                "alias".to_owned(),
                Cow::Owned(json!({ "previous_id": previous })),
            )
        }
        _ => ("group".to_owned(), Cow::Borrowed(props_json)),
    };

    let received = inc.received_at_ms;
    let given_ts = if raw.timestamp.is_absent() {
        &raw.original_timestamp
    } else {
        &raw.timestamp
    };
    let original = (!given_ts.is_absent())
        .then(|| {
            loose_millis(given_ts).ok_or_else(|| {
                MapError::new(
                    "invalid_value",
                    "timestamp",
                    "timestamp must be RFC 3339 or epoch milliseconds",
                )
            })
        })
        .transpose()?;
    let sent_given = if raw.sent_at.is_absent() {
        inc.batch_sent_at
    } else {
        Some(&raw.sent_at)
    };
    let sent_at = sent_given
        .filter(|v| !v.is_absent())
        .map(|v| {
            loose_millis(v).ok_or_else(|| {
                MapError::new(
                    "invalid_value",
                    "sentAt",
                    "sentAt must be RFC 3339 or epoch milliseconds",
                )
            })
        })
        .transpose()?;
    let timestamp = corrected_timestamp(original, sent_at, received, inc.max_skew_ms);

    let union_id = context
        .group(|c| &c.wechat)
        .and_then(|w| w.union_id.text())
        .or_else(|| raw.union_id.text())
        .or_else(|| text(traits.get("union_id").or_else(|| traits.get("unionId"))));
    let message_id = raw.message_id.text().ok_or_else(|| {
        MapError::new(
            "missing_required",
            "messageId",
            "every event needs a messageId (Segment SDKs set one)",
        )
    })?;
    let anonymous_id = raw.anonymous_id.text();
    let user_id = raw.user_id.text();
    if anonymous_id.is_none() && user_id.is_none() {
        return Err(MapError::new(
            "missing_required",
            "anonymousId",
            "an event needs userId or anonymousId",
        ));
    }

    Ok(PlanEvent {
        message_id,
        event,
        kind,
        platform: inc.source.platform.as_str(),
        source_id: &inc.source.id,
        tenant: &inc.source.tenant,
        anonymous_id,
        user_id,
        union_id,
        phone_hash: None,
        timestamp,
        original_timestamp: original,
        sent_at,
        received_at: received,
        context: plan_context(context, props),
        properties,
    })
}

/// Milliseconds since the epoch from an RFC 3339 string or an integer.
fn loose_millis(v: &Loose<'_>) -> Option<i64> {
    match v {
        Loose::Num(n) => n.parse().ok(),
        Loose::Str(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis()),
        _ => None,
    }
}

/// Segment's correction: the device clock is off by (receivedAt − sentAt),
/// so shift the event's own timestamp by that, capped, and never into the
/// future of receipt.
pub fn corrected_timestamp(
    original: Option<i64>,
    sent_at: Option<i64>,
    received: i64,
    max_skew_ms: i64,
) -> i64 {
    match (original, sent_at) {
        (Some(ts), Some(sent)) => {
            let offset = (received - sent).clamp(-max_skew_ms, max_skew_ms);
            (ts + offset).min(received)
        }
        (Some(ts), None) => ts.min(received),
        (None, _) => received,
    }
}

/// The event's context over the batch's, merged per top-level key as
/// Segment does, read in place rather than copied.
#[derive(Clone, Copy)]
struct Context<'a> {
    own: Option<&'a SegmentContext<'a>>,
    batch: Option<&'a SegmentContext<'a>>,
}

impl<'a> Context<'a> {
    /// A text key: the event's own when it has the key, else the batch's.
    fn text(&self, key: impl Fn(&'a SegmentContext<'a>) -> &'a Loose<'a>) -> Option<Cow<'a, str>> {
        let own = self.own.map(&key).filter(|v| !v.is_absent());
        own.or_else(|| self.batch.map(&key)).and_then(Loose::text)
    }

    /// An object key (library, page, campaign, ...), merged the same way.
    fn group<T>(&self, key: impl Fn(&'a SegmentContext<'a>) -> &'a Lenient<T>) -> Option<&'a T> {
        self.own
            .and_then(|c| key(c).0.as_ref())
            .or_else(|| self.batch.and_then(|c| key(c).0.as_ref()))
    }

    fn traits(&self) -> Option<&'a Map<String, Json>> {
        self.own
            .and_then(|c| c.traits.as_object())
            .or_else(|| self.batch.and_then(|c| c.traits.as_object()))
    }
}

/// Known Segment context keys → the plan's flat `Context`.
fn plan_context<'a>(ctx: Context<'a>, props: &'a Map<String, Json>) -> PlanContext<'a> {
    let library = ctx.group(|c| &c.library);
    let os_group = ctx.group(|c| &c.os);
    let page = ctx.group(|c| &c.page);
    let campaign = ctx.group(|c| &c.campaign);
    let page_field = |f: fn(&'a Page<'a>) -> &'a Loose<'a>, key: &str| {
        page.and_then(|p| f(p).text())
            .or_else(|| text(props.get(key)))
    };
    let os = match (
        os_group.and_then(|o| o.name.text()),
        os_group.and_then(|o| o.version.text()),
    ) {
        (Some(n), Some(v)) => Some(Cow::Owned(format!("{n} {v}"))),
        (n, _) => n,
    };
    PlanContext {
        sdk_name: library.and_then(|l| l.name.text()),
        sdk_version: library.and_then(|l| l.version.text()),
        app_version: ctx.group(|c| &c.app).and_then(|a| a.version.text()),
        os,
        locale: ctx.text(|c| &c.locale),
        page_url: page_field(|p| &p.url, "url"),
        page_path: page_field(|p| &p.path, "path"),
        page_referrer: page_field(|p| &p.referrer, "referrer"),
        page_title: page_field(|p| &p.title, "title"),
        utm_source: campaign.and_then(|c| c.source.text()),
        utm_medium: campaign.and_then(|c| c.medium.text()),
        utm_campaign: campaign.and_then(|c| c.name.text()),
        utm_term: campaign.and_then(|c| c.term.text()),
        utm_content: campaign.and_then(|c| c.content.text()),
        lead_channel: ctx
            .text(|c| &c.lead_channel_camel)
            .or_else(|| ctx.text(|c| &c.lead_channel)),
        session_id: ctx
            .text(|c| &c.session_id_camel)
            .or_else(|| ctx.text(|c| &c.session_id)),
        user_agent: ctx.text(|c| &c.user_agent),
        ip: ctx.text(|c| &c.ip),
        is_bot: false,
    }
}

/// Page keys Segment SDKs add on their own; they belong to context.
const PAGE_AUTO_KEYS: [&str; 7] = [
    "url", "path", "referrer", "title", "search", "keywords", "name",
];

fn page_properties(raw: &SegmentEvent<'_>, props: &Map<String, Json>) -> Json {
    let mut out = Map::new();
    for (k, v) in props {
        if !PAGE_AUTO_KEYS.contains(&k.as_str()) && k != "category" {
            out.insert(k.clone(), v.clone());
        }
    }
    let name = raw.name.text().or_else(|| text(props.get("name")));
    let category = raw.category.text().or_else(|| text(props.get("category")));
    if !out.contains_key("page_type") {
        let guess = category
            .as_deref()
            .or(name.as_deref())
            .map_or("other", page_type_of);
        out.insert("page_type".into(), json!(guess));
    }
    if let Some(name) = name {
        out.insert("page_name".into(), Json::String(name.into_owned()));
    }
    Json::Object(out)
}

/// The plan's page types, matched from a page category or name.
pub fn page_type_of(label: &str) -> &'static str {
    const TYPES: [&str; 11] = [
        "home",
        "model_detail",
        "configurator",
        "price",
        "finance",
        "dealer_locator",
        "test_drive",
        "article",
        "video",
        "promotion",
        "owner_service",
    ];
    let key = event_name(label);
    TYPES.iter().copied().find(|t| *t == key).unwrap_or("other")
}

/// Identify traits → the plan's `identify` properties (snake_case keys).
fn identify_traits(traits: &Map<String, Json>) -> Map<String, Json> {
    traits
        .iter()
        .filter(|(k, _)| k.as_str() != "union_id" && k.as_str() != "unionId")
        .map(|(k, v)| (event_name(k), v.clone()))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sources::{Platform, Source, UnplannedPolicy};
    use leadstream_schemas::codec::{Field, FieldView};

    /// A web source, for tests across the crate.
    pub(crate) fn source() -> Source {
        Source {
            id: "web-main".into(),
            platform: Platform::Web,
            tenant: "brand-a".into(),
            unplanned: UnplannedPolicy::Block,
            rate_limit_per_sec: 0,
            write_key_sha256: String::new(),
        }
    }

    pub(crate) fn incoming(src: &Source) -> Incoming<'_> {
        Incoming {
            source: src,
            received_at_ms: 1_000_000,
            max_skew_ms: 86_400_000,
            batch_context: None,
            batch_sent_at: None,
        }
    }

    #[test]
    fn fields_by_position_match_fields_by_name() {
        let src = source();
        // Every envelope and context field distinct, so a swapped position shows.
        let raw = json!({"type": "track", "event": "Price Checked", "messageId": "m", "anonymousId": "a", "userId": "u",
            "unionId": "wx", "timestamp": 5, "sentAt": 6,
            "context": {"library": {"name": "n", "version": "v"}, "app": {"version": "av"}, "os": {"name": "o"},
                "locale": "l", "page": {"url": "pu", "path": "pp", "referrer": "pr", "title": "pt"},
                "campaign": {"source": "cs", "medium": "cm", "name": "cn", "term": "ct", "content": "cc"},
                "leadChannel": "lc", "sessionId": "si", "userAgent": "ua", "ip": "ip"},
            "properties": {"p": 1}});
        let parsed = SegmentEvent::from_json(&raw).unwrap();
        let mut e = to_plan(&parsed, &incoming(&src)).unwrap();
        e.phone_hash = Some("ph".into());
        e.context.is_bot = true;
        for (i, name) in e.names().iter().enumerate() {
            assert_eq!(e.field_at(i).to_json(), e.field(name).to_json(), "{name}");
        }
        for (i, name) in e.context.names().iter().enumerate() {
            let c = &e.context;
            assert_eq!(
                c.field_at(i).to_json(),
                c.field(name).to_json(),
                "context.{name}"
            );
            assert_ne!(c.field(name).to_json(), Json::Null, "context.{name} is set");
        }
        assert!(matches!(e.field("nope"), Field::Absent));
    }

    #[test]
    fn names_become_snake_case() {
        assert_eq!(event_name("Test Drive Booked"), "test_drive_booked");
        assert_eq!(event_name("leadFormSubmitted"), "lead_form_submitted");
        assert_eq!(event_name("order_placed"), "order_placed");
        assert_eq!(event_name("  Coupon -- Claimed! "), "coupon_claimed");
    }

    #[test]
    fn skew_correction_is_capped_and_never_in_the_future() {
        // Device clock 10 s slow: event at device 100, sent at device 200, received at 10_200.
        assert_eq!(
            corrected_timestamp(Some(100), Some(200), 10_200, 60_000),
            10_100
        );
        // Bogus sentAt a year off: correction clamped to the cap.
        assert_eq!(
            corrected_timestamp(Some(100), Some(-31_536_000_000), 100_000, 60_000),
            60_100
        );
        assert_eq!(
            corrected_timestamp(Some(50_000), None, 10_000, 60_000),
            10_000
        );
        assert_eq!(corrected_timestamp(None, None, 10_000, 60_000), 10_000);
    }

    #[test]
    fn page_calls_become_page_viewed_with_context_from_properties() {
        let src = source();
        let raw = json!({
            "type": "page", "messageId": "m1", "anonymousId": "a1", "name": "Configurator",
            "timestamp": "1970-01-01T00:16:40Z",
            "properties": {"url": "https://x/cfg", "path": "/cfg", "title": "Build yours", "model_id": "x5"},
            "context": {"library": {"name": "analytics.js", "version": "5"}, "campaign": {"source": "autohome"}}
        });
        let parsed = SegmentEvent::from_json(&raw).unwrap();
        let out = to_plan(&parsed, &incoming(&src)).unwrap().to_json();
        assert_eq!(out["event"], "page_viewed");
        assert_eq!(
            out["properties"],
            json!({"page_type": "configurator", "page_name": "Configurator", "model_id": "x5"})
        );
        assert_eq!(out["context"]["page_path"], "/cfg");
        assert_eq!(out["context"]["utm_source"], "autohome");
        assert_eq!(out["context"]["sdk_name"], "analytics.js");
        assert_eq!(out["timestamp"], 1_000_000);
        assert_eq!(out["platform"], "web");
    }

    #[test]
    fn mapping_errors_name_the_field() {
        let src = source();
        let no_id = json!({"type": "track", "event": "x", "anonymousId": "a"});
        assert_eq!(
            to_plan(&SegmentEvent::from_json(&no_id).unwrap(), &incoming(&src))
                .unwrap_err()
                .field
                .as_deref(),
            Some("messageId")
        );
        let no_person = json!({"type": "track", "event": "x", "messageId": "m"});
        assert_eq!(
            to_plan(
                &SegmentEvent::from_json(&no_person).unwrap(),
                &incoming(&src)
            )
            .unwrap_err()
            .reason,
            "missing_required"
        );
        let bad_ts = json!({"type": "track", "event": "x", "messageId": "m", "userId": 7, "timestamp": "soon"});
        assert_eq!(
            to_plan(&SegmentEvent::from_json(&bad_ts).unwrap(), &incoming(&src))
                .unwrap_err()
                .field
                .as_deref(),
            Some("timestamp")
        );
    }

    #[test]
    fn batch_context_is_merged_under_the_events_own() {
        let src = source();
        let batch_ctx = json!({"library": {"name": "batch-sdk"}, "locale": "zh-CN"});
        let batch_ctx = <SegmentContext as serde::Deserialize>::deserialize(&batch_ctx).unwrap();
        let inc = Incoming {
            batch_context: Some(&batch_ctx),
            ..incoming(&src)
        };
        let raw = json!({"type": "identify", "messageId": "m", "userId": "u1", "traits": {"email": "A@b.c", "unionId": "wx"}, "context": {"locale": "en-US"}});
        let parsed = SegmentEvent::from_json(&raw).unwrap();
        let out = to_plan(&parsed, &inc).unwrap().to_json();
        assert_eq!(out["context"]["sdk_name"], "batch-sdk");
        assert_eq!(out["context"]["locale"], "en-US");
        assert_eq!(out["properties"], json!({"email": "A@b.c"}));
    }
}
