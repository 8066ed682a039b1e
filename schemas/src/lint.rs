//! Naming, documentation and PII rules for the tracking plan.

use apache_avro::schema::{RecordSchema, Schema};

use crate::{plan::Plan, plan::SchemaVersion, problem::Problem};

pub const NAMESPACE: &str = "leadstream.events";
pub const PLATFORMS: [&str; 5] = ["app", "mini_program", "web", "server", "offline"];
/// `pii` tag values: hashed with the ingest pepper, dropped at ingest,
/// truncated (IP addresses), or explicitly declared not personal.
pub const PII_TAGS: [&str; 4] = ["hash", "drop", "truncate", "none"];
/// Envelope fields every event carries, in order.
pub const ENVELOPE: [&str; 16] = [
    "message_id",
    "event",
    "type",
    "platform",
    "source_id",
    "tenant",
    "anonymous_id",
    "user_id",
    "union_id",
    "phone_hash",
    "timestamp",
    "original_timestamp",
    "sent_at",
    "received_at",
    "context",
    "properties",
];

pub fn lint(plan: &Plan) -> Vec<Problem> {
    let mut problems = Vec::new();
    for subject in plan.subjects.values() {
        if !is_snake_case(&subject.event) {
            problems.push(Problem::new(
                &subject.versions[0].file,
                "event_name",
                format!("event name {:?} must be snake_case", subject.event),
            ));
        }
        for v in &subject.versions {
            lint_version(v, &mut problems);
        }
    }
    // Derived records carry no envelope or platforms, but their fields are
    // governed the same way: names, docs, PII tags.
    for subject in plan.derived.values() {
        for v in &subject.versions {
            if let Schema::Record(record) = &v.schema {
                lint_fields(&v.file, "", record, &mut problems);
            }
        }
    }
    problems.extend(near_duplicates(plan));
    problems
}

fn lint_version(v: &SchemaVersion, problems: &mut Vec<Problem>) {
    let Schema::Record(record) = &v.schema else {
        return;
    };
    let expected = pascal_case(&v.event);
    if record.name.name() != expected || record.name.namespace() != Some(NAMESPACE) {
        problems.push(Problem::new(
            &v.file,
            "record_name",
            format!(
                "record must be named {NAMESPACE}.{expected} for event {}, found {}",
                v.event,
                record.name.fullname(None)
            ),
        ));
    }
    if record.doc.as_deref().is_none_or(str::is_empty) {
        problems.push(Problem::new(
            &v.file,
            "missing_doc",
            "the event record needs a doc saying what happened",
        ));
    }
    for attr in ["owner", "since"] {
        let present = record
            .attributes
            .get(attr)
            .and_then(|a| a.as_str())
            .is_some_and(|s| !s.is_empty());
        if !present {
            problems.push(Problem::new(
                &v.file,
                "missing_attribute",
                format!("the event record needs a non-empty \"{attr}\""),
            ));
        }
    }
    if let Some(since) = record.attributes.get("since").and_then(|a| a.as_str())
        && !is_iso_date(since)
    {
        problems.push(Problem::new(
            &v.file,
            "invalid_attribute",
            format!("\"since\" must be a date YYYY-MM-DD, found {since:?}"),
        ));
    }
    match record.attributes.get("platforms").and_then(|p| p.as_array()) {
        Some(list) if !list.is_empty() => {
            for p in list {
                if !p.as_str().is_some_and(|p| PLATFORMS.contains(&p)) {
                    problems.push(Problem::new(
                        &v.file,
                        "invalid_attribute",
                        format!("unknown platform {p}; known: {}", PLATFORMS.join(", ")),
                    ));
                }
            }
        }
        _ => problems.push(Problem::new(
            &v.file,
            "missing_attribute",
            "the event record needs \"platforms\": a non-empty list of app, mini_program, web, server, offline",
        )),
    }
    let names: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
    for required in ENVELOPE {
        if !names.contains(&required) {
            problems.push(
                Problem::new(
                    &v.file,
                    "envelope",
                    format!("every event carries the envelope field {required:?}"),
                )
                .at(required),
            );
        }
    }
    lint_fields(&v.file, "", record, problems);
}

fn lint_fields(file: &str, prefix: &str, record: &RecordSchema, problems: &mut Vec<Problem>) {
    for field in &record.fields {
        let path = format!("{prefix}{}", field.name);
        if !is_snake_case(&field.name) {
            problems
                .push(Problem::new(file, "field_name", "field names must be snake_case").at(&path));
        }
        if field.doc.as_deref().is_none_or(str::is_empty) {
            problems.push(Problem::new(file, "missing_doc", "every field needs a doc").at(&path));
        }
        match field.custom_attributes.get("pii") {
            Some(tag) => {
                let tag = tag.as_str().unwrap_or_default();
                if !PII_TAGS.contains(&tag) {
                    problems.push(
                        Problem::new(file, "pii_invalid", format!("pii must be one of {}", PII_TAGS.join(", "))).at(&path),
                    );
                } else if matches!(tag, "hash" | "truncate") && !is_string_like(&field.schema) {
                    problems.push(Problem::new(file, "pii_invalid", format!("pii \"{tag}\" needs a string (or nullable string) field")).at(&path));
                }
            }
            None if suggests_personal_data(&field.name) => problems.push(
                Problem::new(
                    file,
                    "pii_untagged",
                    "name suggests personal data: tag it \"pii\": \"hash\" or \"drop\" (or \"none\" if it is not personal)",
                )
                .at(&path),
            ),
            None => {}
        }
        for nested in nested_records(&field.schema) {
            lint_fields(file, &format!("{path}."), nested, problems);
        }
    }
}

/// Records reachable from a field type without crossing another record.
pub fn nested_records(schema: &Schema) -> Vec<&RecordSchema> {
    match schema {
        Schema::Record(r) => vec![r],
        Schema::Union(u) => u.variants().iter().flat_map(nested_records).collect(),
        Schema::Array(a) => nested_records(&a.items),
        Schema::Map(m) => nested_records(&m.types),
        _ => Vec::new(),
    }
}

fn is_string_like(schema: &Schema) -> bool {
    match schema {
        Schema::String => true,
        Schema::Union(u) => u
            .variants()
            .iter()
            .all(|v| matches!(v, Schema::Null | Schema::String)),
        _ => false,
    }
}

/// Name tokens that mark personal data in Chinese and global CRMs.
pub fn suggests_personal_data(name: &str) -> bool {
    const TOKENS: [&str; 12] = [
        "phone", "mobile", "tel", "email", "wechat", "openid", "unionid", "idcard", "passport",
        "address", "vin", "ip",
    ];
    const PAIRS: [(&str, &str); 3] = [("id", "card"), ("open", "id"), ("union", "id")];
    const NAME_OWNERS: [&str; 7] = [
        "first", "last", "full", "real", "nick", "contact", "customer",
    ];
    let tokens = words(name);
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    tokens.iter().any(|t| TOKENS.contains(t))
        || tokens.windows(2).any(|w| PAIRS.contains(&(w[0], w[1])))
        || name == "name"
        || tokens
            .windows(2)
            .any(|w| w[1] == "name" && NAME_OWNERS.contains(&w[0]))
}

/// Lower-case words of a snake_case or camelCase name.
fn words(name: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for c in name.chars() {
        if c == '_' || c == '-' {
            out.push(String::new());
        } else if c.is_uppercase() && !out.last().is_some_and(String::is_empty) {
            out.push(c.to_lowercase().collect());
        } else {
            out.last_mut().expect("non-empty").extend(c.to_lowercase());
        }
    }
    out.retain(|w| !w.is_empty());
    out
}

fn near_duplicates(plan: &Plan) -> Vec<Problem> {
    let events: Vec<(&str, &str)> = plan
        .subjects
        .values()
        .map(|s| (s.event.as_str(), s.versions[0].file.as_str()))
        .collect();
    let mut problems = Vec::new();
    for (i, (a, _)) in events.iter().enumerate() {
        for (b, file) in &events[i + 1..] {
            let (na, nb) = (a.replace('_', ""), b.replace('_', ""));
            if na == nb || levenshtein(&na, &nb) <= 2 {
                problems.push(Problem::new(
                    *file,
                    "near_duplicate_event",
                    format!("event {b:?} is nearly the same name as {a:?}; reuse the existing event or pick a distinct name"),
                ));
            }
        }
    }
    problems
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            row.push((prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

pub fn is_snake_case(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.contains("__")
        && !s.ends_with('_')
}

pub fn pascal_case(snake: &str) -> String {
    snake
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_data_names() {
        for name in [
            "phone",
            "contact_phone",
            "email",
            "wechat_open_id",
            "id_card_no",
            "name",
            "contact_name",
            "vin",
            "ip",
            "union_id",
            "home_address",
            "customerPhone",
            "contactName",
        ] {
            assert!(suggests_personal_data(name), "{name}");
        }
        for name in [
            "page_name",
            "model_id",
            "dealer_id",
            "form_id",
            "duration_ms",
            "trim",
            "previous_id",
            "shipping",
        ] {
            assert!(!suggests_personal_data(name), "{name}");
        }
    }

    #[test]
    fn case_rules() {
        assert!(is_snake_case("page_viewed"));
        for bad in [
            "PageViewed",
            "page-viewed",
            "page__viewed",
            "_page",
            "page_",
            "1page",
            "",
        ] {
            assert!(!is_snake_case(bad), "{bad}");
        }
        assert_eq!(pascal_case("lead_form_submitted"), "LeadFormSubmitted");
    }

    #[test]
    fn edit_distance() {
        assert_eq!(levenshtein("pageviewed", "pageview"), 2);
        assert_eq!(levenshtein("orderplaced", "orderplaced"), 0);
        assert!(levenshtein("orderplaced", "storevisited") > 2);
    }

    #[test]
    fn shipped_plan_is_clean() {
        let plan = Plan::embedded().unwrap();
        let problems = lint(&plan);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
