//! A Segment event mapped onto the tracking plan, as typed fields. The
//! encoder reads it through [`FieldView`], so no JSON tree is built for the
//! envelope and context only to be searched again. Each record's fields are
//! listed once, in a table the view and the PII slots are generated from.

use std::borrow::Cow;

// The plan's envelope, in its order: what `PlanEvent::field_at` indexes.
use leadstream_schemas::{
    codec::{Field, FieldView},
    lint::ENVELOPE,
};
use serde_json::{Map, Value as Json};

/// `field_at` and `field` of a [`FieldView`] from one table of
/// `name => value`, in view order.
macro_rules! view_fields {
    ($self:ident; $($name:pat => $value:expr),* $(,)?) => {
        fn field_at(&$self, i: usize) -> Field<'_> {
            let mut position = 0usize;
            $(
                if i == position {
                    return $value;
                }
                position += 1;
            )*
            let _ = position;
            Field::Absent
        }

        fn field(&$self, name: &str) -> Field<'_> {
            match name {
                $($name => $value,)*
                _ => Field::Absent,
            }
        }
    };
}

/// A Segment event mapped onto the tracking plan. Strings borrow from the
/// request where they can.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanEvent<'a> {
    pub message_id: Cow<'a, str>,
    pub event: String,
    pub kind: &'static str,
    pub platform: &'static str,
    pub source_id: &'a str,
    pub tenant: &'a str,
    pub anonymous_id: Option<Cow<'a, str>>,
    pub user_id: Option<Cow<'a, str>>,
    pub union_id: Option<Cow<'a, str>>,
    pub phone_hash: Option<Cow<'a, str>>,
    pub timestamp: i64,
    pub original_timestamp: Option<i64>,
    pub sent_at: Option<i64>,
    pub received_at: i64,
    pub context: PlanContext<'a>,
    pub properties: Cow<'a, Json>,
}

impl FieldView for PlanEvent<'_> {
    // In ENVELOPE's order; a test checks the positions against the names.
    view_fields! { self;
        "message_id" => Field::Text(&self.message_id),
        "event" => Field::Text(&self.event),
        "type" => Field::Text(self.kind),
        "platform" => Field::Text(self.platform),
        "source_id" => Field::Text(self.source_id),
        "tenant" => Field::Text(self.tenant),
        "anonymous_id" => opt_text(&self.anonymous_id),
        "user_id" => opt_text(&self.user_id),
        "union_id" => opt_text(&self.union_id),
        "phone_hash" => opt_text(&self.phone_hash),
        "timestamp" => Field::Long(self.timestamp),
        "original_timestamp" => opt_long(self.original_timestamp),
        "sent_at" => opt_long(self.sent_at),
        "received_at" => Field::Long(self.received_at),
        "context" => Field::Record(&self.context),
        "properties" => Field::Json(&self.properties),
    }

    fn names(&self) -> &'static [&'static str] {
        &ENVELOPE
    }
}

impl<'a> PlanEvent<'a> {
    /// The optional text field `name` of the envelope, for PII handling.
    pub fn text_slot(&mut self, name: &str) -> Option<&mut Option<Cow<'a, str>>> {
        Some(match name {
            "anonymous_id" => &mut self.anonymous_id,
            "user_id" => &mut self.user_id,
            "union_id" => &mut self.union_id,
            "phone_hash" => &mut self.phone_hash,
            _ => return None,
        })
    }

    /// Best identity first so one person's events share a partition.
    pub fn partition_key(&self) -> &str {
        [&self.user_id, &self.union_id, &self.anonymous_id]
            .into_iter()
            .find_map(|v| v.as_deref().filter(|s| !s.is_empty()))
            .unwrap_or_default()
    }

    /// The event as the JSON object it stands for (tests, debugging).
    pub fn to_json(&self) -> Json {
        let mut out = Map::new();
        for name in ENVELOPE {
            out.insert(name.to_owned(), self.field(name).to_json());
        }
        Json::Object(out)
    }
}

/// The plan's flat `Context` record: optional texts, then `is_bot`.
macro_rules! plan_context {
    ($($name:ident),* $(,)?) => {
        /// The plan's flat `Context` record.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct PlanContext<'a> {
            $(pub $name: Option<Cow<'a, str>>,)*
            pub is_bot: bool,
        }

        /// [`PlanContext`]'s fields in view order.
        const CONTEXT: &[&str] = &[$(stringify!($name),)* "is_bot"];

        impl<'a> PlanContext<'a> {
            /// The text field `name`, for PII handling.
            pub fn text_slot(&mut self, name: &str) -> Option<&mut Option<Cow<'a, str>>> {
                match name {
                    $(stringify!($name) => Some(&mut self.$name),)*
                    _ => None,
                }
            }
        }

        impl FieldView for PlanContext<'_> {
            view_fields! { self;
                $(stringify!($name) => opt_text(&self.$name),)*
                "is_bot" => Field::Bool(self.is_bot),
            }

            fn names(&self) -> &'static [&'static str] {
                CONTEXT
            }
        }
    };
}

plan_context!(
    sdk_name,
    sdk_version,
    app_version,
    os,
    locale,
    page_url,
    page_path,
    page_referrer,
    page_title,
    utm_source,
    utm_medium,
    utm_campaign,
    utm_term,
    utm_content,
    lead_channel,
    session_id,
    user_agent,
    ip,
);

fn opt_text<'v>(v: &'v Option<Cow<'_, str>>) -> Field<'v> {
    v.as_deref().map_or(Field::Null, Field::Text)
}

fn opt_long(v: Option<i64>) -> Field<'static> {
    v.map_or(Field::Null, Field::Long)
}
