//! Segment's wire format as typed, borrowed structs: the fields the mapping
//! reads, parsed straight from the request text. Strings borrow from the
//! body; `properties` and `traits` stay JSON values (the tracking plan
//! validates them); unknown keys are skipped without being built.
//!
//! The types are lenient the way reading a `serde_json::Value` was: a field
//! of an unexpected JSON type reads as absent (or, for text, is told apart
//! as "other") instead of failing the event.

use std::{borrow::Cow, fmt, marker::PhantomData};

use serde::{
    Deserialize, Deserializer,
    de::{IgnoredAny, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer},
};
use serde_json::Value as Json;

/// A field SDKs send as text.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Loose<'a> {
    #[default]
    Absent,
    Null,
    Str(Cow<'a, str>),
    /// A number, as its JSON text.
    Num(String),
    /// A boolean, array or object, by kind.
    Other(&'static str),
}

impl<'a> Loose<'a> {
    /// A non-empty string, or a number as text.
    pub fn text(&self) -> Option<Cow<'a, str>> {
        match self {
            Loose::Str(s) if !s.is_empty() => Some(s.clone()),
            Loose::Num(n) => Some(Cow::Owned(n.clone())),
            _ => None,
        }
    }

    /// A string (empty included); None for anything else.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Loose::Absent)
    }

    /// The value as JSON, for reports.
    pub fn to_json(&self) -> Json {
        match self {
            Loose::Absent | Loose::Null | Loose::Other(_) => Json::Null,
            Loose::Str(s) => Json::String(s.to_string()),
            Loose::Num(n) => serde_json::from_str(n).unwrap_or(Json::Null),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Loose<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Owned(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Loose::Num(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Loose::Num(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                // The text serde_json gives the same number.
                Ok(serde_json::Number::from_f64(v)
                    .map_or(Loose::Null, |n| Loose::Num(n.to_string())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Loose::Other("boolean"))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Loose::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Loose::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                Loose::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose::Other("array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::Other("object"))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An object of type `T`, or None when the JSON value is not an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Lenient<T>(pub Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Lenient<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|t| Lenient(Some(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// One event as an SDK sends it (the Segment fields leadstream reads).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SegmentEvent<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Loose<'a>,
    #[serde(borrow)]
    pub event: Loose<'a>,
    #[serde(rename = "messageId", borrow)]
    pub message_id: Loose<'a>,
    #[serde(rename = "anonymousId", borrow)]
    pub anonymous_id: Loose<'a>,
    #[serde(rename = "userId", borrow)]
    pub user_id: Loose<'a>,
    #[serde(rename = "unionId", borrow)]
    pub union_id: Loose<'a>,
    #[serde(rename = "previousId", borrow)]
    pub previous_id: Loose<'a>,
    #[serde(borrow)]
    pub name: Loose<'a>,
    #[serde(borrow)]
    pub category: Loose<'a>,
    #[serde(borrow)]
    pub timestamp: Loose<'a>,
    #[serde(rename = "originalTimestamp", borrow)]
    pub original_timestamp: Loose<'a>,
    #[serde(rename = "sentAt", borrow)]
    pub sent_at: Loose<'a>,
    #[serde(rename = "writeKey", borrow)]
    pub write_key: Loose<'a>,
    #[serde(borrow)]
    pub context: Lenient<SegmentContext<'a>>,
    pub properties: Json,
    pub traits: Json,
}

/// The Segment `context` keys the plan keeps. Other keys (device, screen,
/// network, ...) are skipped.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SegmentContext<'a> {
    #[serde(borrow)]
    pub library: Lenient<NameVersion<'a>>,
    #[serde(borrow)]
    pub app: Lenient<NameVersion<'a>>,
    #[serde(borrow)]
    pub os: Lenient<NameVersion<'a>>,
    #[serde(borrow)]
    pub page: Lenient<Page<'a>>,
    #[serde(borrow)]
    pub campaign: Lenient<Campaign<'a>>,
    #[serde(borrow)]
    pub wechat: Lenient<Wechat<'a>>,
    #[serde(borrow)]
    pub locale: Loose<'a>,
    #[serde(rename = "leadChannel", borrow)]
    pub lead_channel_camel: Loose<'a>,
    #[serde(rename = "lead_channel", borrow)]
    pub lead_channel: Loose<'a>,
    #[serde(rename = "sessionId", borrow)]
    pub session_id_camel: Loose<'a>,
    #[serde(rename = "session_id", borrow)]
    pub session_id: Loose<'a>,
    #[serde(rename = "userAgent", borrow)]
    pub user_agent: Loose<'a>,
    #[serde(borrow)]
    pub ip: Loose<'a>,
    pub traits: Json,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct NameVersion<'a> {
    #[serde(borrow)]
    pub name: Loose<'a>,
    #[serde(borrow)]
    pub version: Loose<'a>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Page<'a> {
    #[serde(borrow)]
    pub url: Loose<'a>,
    #[serde(borrow)]
    pub path: Loose<'a>,
    #[serde(borrow)]
    pub referrer: Loose<'a>,
    #[serde(borrow)]
    pub title: Loose<'a>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Campaign<'a> {
    #[serde(borrow)]
    pub source: Loose<'a>,
    #[serde(borrow)]
    pub medium: Loose<'a>,
    #[serde(borrow)]
    pub name: Loose<'a>,
    #[serde(borrow)]
    pub term: Loose<'a>,
    #[serde(borrow)]
    pub content: Loose<'a>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Wechat<'a> {
    #[serde(rename = "unionId", borrow)]
    pub union_id: Loose<'a>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Valid JSON, but not an object (derived structs would otherwise read
    /// an array positionally).
    #[error("an event must be a JSON object")]
    NotAnObject,
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl<'a> SegmentEvent<'a> {
    /// Parses one event's JSON text.
    pub fn parse(text: &'a str) -> Result<Self, WireError> {
        if !text.trim_start().starts_with('{') {
            serde_json::from_str::<IgnoredAny>(text)?;
            return Err(WireError::NotAnObject);
        }
        Ok(serde_json::from_str(text)?)
    }

    /// Reads an event from a JSON value (tests, tools).
    pub fn from_json(v: &'a Json) -> Result<Self, WireError> {
        if !v.is_object() {
            return Err(WireError::NotAnObject);
        }
        Ok(Self::deserialize(v)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_known_fields_borrowed_and_skips_the_rest() {
        let text = r#"{"type": "track", "event": "Lead Form Submitted", "messageId": 42, "userId": "",
            "anonymousId": "a\"1", "integrations": {"All": true}, "properties": {"form_id": "q"},
            "context": {"library": {"name": "analytics.js", "version": "5"}, "device": {"id": "d"},
                        "page": "not an object", "campaign": {"source": "autohome", "extra": [1]}, "ip": true}}"#;
        let e = SegmentEvent::parse(text).unwrap();
        assert!(matches!(
            e.event,
            Loose::Str(Cow::Borrowed("Lead Form Submitted"))
        ));
        assert_eq!(e.message_id.text().as_deref(), Some("42"));
        assert_eq!(e.message_id.as_str(), None, "a number is not a string");
        assert_eq!(e.user_id.text(), None, "empty reads as absent");
        assert_eq!(e.anonymous_id.text().as_deref(), Some("a\"1"));
        let ctx = e.context.0.unwrap();
        assert_eq!(
            ctx.library.0.unwrap().name.text().as_deref(),
            Some("analytics.js")
        );
        assert_eq!(ctx.page, Lenient(None));
        assert_eq!(
            ctx.campaign.0.unwrap().source.text().as_deref(),
            Some("autohome")
        );
        assert_eq!(ctx.ip, Loose::Other("boolean"));
        assert_eq!(e.properties, json!({"form_id": "q"}));
        assert_eq!(e.traits, Json::Null);
        assert!(e.timestamp.is_absent());
    }

    #[test]
    fn null_is_told_apart_from_absent_and_numbers_keep_their_text() {
        let e = SegmentEvent::parse(r#"{"timestamp": null, "sentAt": 1.5e3, "name": 7}"#).unwrap();
        assert_eq!(e.timestamp, Loose::Null);
        assert_eq!(e.sent_at, Loose::Num("1500.0".into()));
        assert_eq!(e.name.text().as_deref(), Some("7"));
        let v = json!({"timestamp": null, "userId": 9});
        let from_value = SegmentEvent::from_json(&v).unwrap();
        assert_eq!(from_value.timestamp, Loose::Null);
        assert_eq!(from_value.user_id.text().as_deref(), Some("9"));
    }

    #[test]
    fn a_non_object_event_is_told_apart_from_bad_json() {
        for text in ["[1, 2]", " 7", "\"x\""] {
            assert!(
                matches!(SegmentEvent::parse(text), Err(WireError::NotAnObject)),
                "{text}"
            );
        }
        // A repeated known key is an error (a JSON tree kept the last).
        for text in [
            "{",
            "[1,",
            "nope",
            r#"{"messageId": "a", "messageId": "b"}"#,
        ] {
            assert!(
                matches!(SegmentEvent::parse(text), Err(WireError::Json(_))),
                "{text}"
            );
        }
    }
}
