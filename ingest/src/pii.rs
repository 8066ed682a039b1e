//! PII handling driven by the tracking plan's `pii` tags: hash (HMAC-SHA256
//! with a secret pepper), drop, or truncate (IP addresses), applied before
//! anything leaves the process.

use std::collections::HashMap;

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use leadstream_schemas::{Plan, lint::nested_records};
use serde_json::Value as Json;
use sha2::Sha256;

use crate::segment::PlanEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Hash,
    Drop,
    Truncate,
}

/// Tagged field paths per event, from the latest version of each schema.
#[derive(Clone)]
pub struct PiiRules {
    by_event: HashMap<String, Vec<(Vec<String>, Action)>>,
    mac: Hmac<Sha256>,
}

impl PiiRules {
    pub fn new(plan: &Plan, pepper: &[u8]) -> Self {
        let mut by_event = HashMap::new();
        for subject in plan.subjects.values() {
            let mut rules = Vec::new();
            if let apache_avro::Schema::Record(r) = &subject.latest().schema {
                collect(r, &mut Vec::new(), &mut rules);
            }
            by_event.insert(subject.event.clone(), rules);
        }
        let mac = Hmac::<Sha256>::new_from_slice(pepper).expect("HMAC accepts any key length");
        Self { by_event, mac }
    }

    /// Hashes one value as ingest does (normalised first), e.g. to look a
    /// phone number up in Kafka or ClickHouse.
    pub fn hash(&self, field: &str, value: &str) -> String {
        let normalised = normalise(field, value);
        let mut mac = self.mac.clone();
        mac.update(normalised.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Applies the event's rules in place, and copies a hashed phone into
    /// the envelope's `phone_hash` for identity stitching.
    pub fn apply(&self, event: &mut PlanEvent<'_>) {
        let Some(rules) = self.by_event.get(&event.event) else {
            return;
        };
        for (path, action) in rules {
            let field = path.last().map_or("", String::as_str);
            let slot = match path.as_slice() {
                [top] => event.text_slot(top),
                [ctx, key] if ctx == "context" => event.context.text_slot(key),
                [props, rest @ ..] if props == "properties" => {
                    let present = rest
                        .iter()
                        .try_fold(&*event.properties, |v, k| v.get(k))
                        .is_some_and(|v| v.is_string() || v.is_number());
                    if present && let Some(slot) = lookup_mut(event.properties.to_mut(), rest) {
                        self.apply_json(slot, field, *action);
                    }
                    continue;
                }
                _ => None,
            };
            if let Some(slot) = slot
                && let Some(text) = slot.as_deref()
            {
                *slot = self.transform(field, text, *action).map(Cow::Owned);
            }
        }
        if event.phone_hash.is_none() {
            let phone = ["phone", "contact_phone"]
                .iter()
                .find_map(|k| event.properties.get(*k)?.as_str().map(str::to_owned));
            event.phone_hash = phone.map(Cow::Owned);
        }
    }

    /// None when the value is dropped.
    fn transform(&self, field: &str, text: &str, action: Action) -> Option<String> {
        match action {
            Action::Hash => Some(self.hash(field, text)),
            Action::Drop => None,
            Action::Truncate => Some(truncate_ip(text)),
        }
    }

    fn apply_json(&self, slot: &mut Json, field: &str, action: Action) {
        let text = match slot {
            Json::String(s) => s.clone(),
            Json::Number(n) => n.to_string(),
            _ => return,
        };
        *slot = self
            .transform(field, &text, action)
            .map_or(Json::Null, Json::String);
    }
}

fn collect(
    r: &apache_avro::schema::RecordSchema,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Action)>,
) {
    for f in &r.fields {
        prefix.push(f.name.clone());
        let action = match f.custom_attributes.get("pii").and_then(Json::as_str) {
            Some("hash") => Some(Action::Hash),
            Some("drop") => Some(Action::Drop),
            Some("truncate") => Some(Action::Truncate),
            _ => None,
        };
        if let Some(a) = action {
            out.push((prefix.clone(), a));
        }
        for nested in nested_records(&f.schema) {
            collect(nested, prefix, out);
        }
        prefix.pop();
    }
}

fn lookup_mut<'a>(v: &'a mut Json, path: &[String]) -> Option<&'a mut Json> {
    path.iter().try_fold(v, |v, k| v.get_mut(k))
}

/// The same person must hash the same from every source: phone numbers to
/// digits without the +86/0086 country prefix, emails trimmed and lower-cased.
fn normalise(field: &str, value: &str) -> String {
    if field.contains("phone") {
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        let digits = digits.strip_prefix("0086").unwrap_or(&digits);
        match digits.strip_prefix("86") {
            Some(rest) if rest.len() == 11 => rest.to_owned(),
            _ => digits.to_owned(),
        }
    } else if field.contains("email") {
        value.trim().to_lowercase()
    } else {
        value.trim().to_owned()
    }
}

/// IPv4 → /24, IPv6 → /48; anything unparseable is dropped to "".
pub fn truncate_ip(ip: &str) -> String {
    match ip.trim().parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let o = v4.octets();
            format!("{}.{}.{}.0", o[0], o[1], o[2])
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string()
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hashes_drops_truncates_and_links_the_phone() {
        let plan = Plan::embedded().unwrap();
        let rules = PiiRules::new(&plan, b"pepper");
        let raw = json!({
            "type": "track", "event": "Lead Form Submitted", "messageId": "m", "anonymousId": "a",
            "context": {"ip": "203.0.113.77", "wechat": {"unionId": "wx-union"}},
            "properties": {"form_id": "f", "phone": "+86 138-0013-8000", "name": "Wang Wei"}
        });
        let source = crate::segment::tests::source();
        let inc = crate::segment::tests::incoming(&source);
        let parsed = crate::wire::SegmentEvent::from_json(&raw).unwrap();
        let mut event = crate::segment::to_plan(&parsed, &inc).unwrap();
        rules.apply(&mut event);
        let e = event.to_json();
        let hashed = rules.hash("phone", "13800138000");
        assert_eq!(e["properties"]["phone"], json!(hashed));
        assert_eq!(e["phone_hash"], json!(hashed));
        assert_eq!(e["properties"]["name"], Json::Null);
        assert_eq!(e["context"]["ip"], "203.0.113.0");
        assert_eq!(e["union_id"], json!(rules.hash("union_id", "wx-union")));
        assert!(!e.to_string().contains("13800138000") && !e.to_string().contains("Wang"));
        assert_ne!(
            PiiRules::new(&plan, b"other").hash("phone", "13800138000"),
            hashed,
            "the pepper matters"
        );
    }

    #[test]
    fn ip_truncation() {
        assert_eq!(
            truncate_ip("2001:db8:85a3:8d3:1319:8a2e:370:7348"),
            "2001:db8:85a3::"
        );
        assert_eq!(truncate_ip("not an ip"), "");
    }
}
