//! Avro datum and strings as JSON.

use apache_avro::types::Value;
use serde_json::Value as Json;

/// A JSON string literal, escaped as serde_json escapes it.
pub(crate) fn write_str(s: &str, out: &mut String) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&Json::String(s.to_owned()).to_string());
    }
}

/// Avro datum → JSON in the tracking plan's shape (unions unwrapped, enums as
/// symbols, timestamps as epoch milliseconds).
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => Json::from(*i),
        Value::Long(i)
        | Value::TimeMicros(i)
        | Value::TimestampMillis(i)
        | Value::TimestampMicros(i) => Json::from(*i),
        Value::Float(f) => Json::from(f64::from(*f)),
        Value::Double(f) => Json::from(*f),
        Value::Bytes(b) | Value::Fixed(_, b) => {
            Json::String(String::from_utf8_lossy(b).into_owned())
        }
        Value::String(s) | Value::Enum(_, s) => Json::String(s.clone()),
        Value::Union(_, inner) => to_json(inner),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Value::Record(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
        other => Json::String(format!("{other:?}")),
    }
}
