//! Avro binary written straight from JSON or a view while validating it.

use std::{fmt, sync::Arc};

use apache_avro::schema::{EnumSchema, RecordField, RecordSchema, Schema, UnionSchema};
use serde_json::{Map, Value as Json};

use super::*;

/// Where in the event a value sits, rendered only when reporting an error.
pub(super) enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => write!(f, "{name}"),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

pub(super) fn mismatch(path: &Path<'_>, expected: impl Into<String>, found: &Json) -> EncodeError {
    EncodeError::TypeMismatch {
        field: path.to_string(),
        expected: expected.into(),
        found: json_kind(found),
    }
}

pub(super) fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_f64() => "number",
        Json::Number(_) => "integer",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

// Avro binary encoding written straight from JSON while validating it:
// no intermediate `Value`, one pass, one output buffer. Decoding uses
// apache-avro, so the round-trip tests check this against the reference.

pub(super) fn write_long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub(super) fn write_bytes(b: &[u8], out: &mut Vec<u8>) {
    write_long(b.len() as i64, out);
    out.extend_from_slice(b);
}

pub(super) fn write_avro(
    schema: &Schema,
    json: Option<&Json>,
    path: &Path<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let Some(json) = json else {
        return Err(EncodeError::MissingRequired {
            field: path.to_string(),
        });
    };
    match schema {
        Schema::Record(record) => write_record(record, json, path, out),
        Schema::Union(union) => {
            let variants = union.variants();
            if json.is_null() {
                let i = variants
                    .iter()
                    .position(|v| matches!(v, Schema::Null))
                    .ok_or_else(|| mismatch(path, "a non-null value", json))?;
                write_long(i as i64, out);
                return Ok(());
            }
            write_branch(
                union,
                out,
                |variant, out| write_avro(variant, Some(json), path, out),
                || mismatch(path, "null", json),
            )
        }
        Schema::Null => match json {
            Json::Null => Ok(()),
            other => Err(mismatch(path, "null", other)),
        },
        Schema::Boolean => {
            let b = json
                .as_bool()
                .ok_or_else(|| mismatch(path, "boolean", json))?;
            out.push(u8::from(b));
            Ok(())
        }
        Schema::String | Schema::Bytes => {
            let s = json
                .as_str()
                .ok_or_else(|| mismatch(path, "string", json))?;
            write_bytes(s.as_bytes(), out);
            Ok(())
        }
        Schema::Int => {
            let n = json
                .as_i64()
                .ok_or_else(|| mismatch(path, "integer", json))?;
            let n = i32::try_from(n).map_err(|_| EncodeError::InvalidValue {
                field: path.to_string(),
                message: format!("{n} does not fit a 32-bit int"),
            })?;
            write_long(i64::from(n), out);
            Ok(())
        }
        Schema::Long => {
            let n = json
                .as_i64()
                .ok_or_else(|| mismatch(path, "integer", json))?;
            write_long(n, out);
            Ok(())
        }
        Schema::Float => {
            let f = json
                .as_f64()
                .ok_or_else(|| mismatch(path, "number", json))?;
            out.extend_from_slice(&(f as f32).to_le_bytes());
            Ok(())
        }
        Schema::Double => {
            let f = json
                .as_f64()
                .ok_or_else(|| mismatch(path, "number", json))?;
            out.extend_from_slice(&f.to_le_bytes());
            Ok(())
        }
        Schema::TimestampMillis => {
            write_long(timestamp_millis(json, path)?, out);
            Ok(())
        }
        Schema::Enum(e) => {
            let s = json
                .as_str()
                .ok_or_else(|| mismatch(path, "string", json))?;
            write_symbol(e, s, path, out)
        }
        Schema::Array(a) => {
            let items = json
                .as_array()
                .ok_or_else(|| mismatch(path, "array", json))?;
            if !items.is_empty() {
                write_long(items.len() as i64, out);
                for (i, item) in items.iter().enumerate() {
                    write_avro(&a.items, Some(item), &Path::Index(path, i), out)?;
                }
            }
            out.push(0);
            Ok(())
        }
        Schema::Map(m) => {
            let obj = json
                .as_object()
                .ok_or_else(|| mismatch(path, "object", json))?;
            if !obj.is_empty() {
                write_long(obj.len() as i64, out);
                for (k, v) in obj {
                    write_bytes(k.as_bytes(), out);
                    write_avro(&m.types, Some(v), &Path::Field(path, k), out)?;
                }
            }
            out.push(0);
            Ok(())
        }
        other => Err(EncodeError::InvalidValue {
            field: path.to_string(),
            message: format!("schema type {other:?} is not supported in the tracking plan"),
        }),
    }
}

pub(super) fn write_record(
    record: &RecordSchema,
    json: &Json,
    path: &Path<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let obj = json
        .as_object()
        .ok_or_else(|| mismatch(path, "object", json))?;
    if let Some(extra) = obj.keys().find(|k| !record.lookup.contains_key(*k)) {
        return Err(EncodeError::AdditionalProperty {
            field: Path::Field(path, extra).to_string(),
        });
    }
    for field in &record.fields {
        write_field(
            field,
            obj.get(&field.name),
            &Path::Field(path, &field.name),
            out,
        )?;
    }
    Ok(())
}

/// A record field from its given JSON value: null or missing takes the
/// field's default, or null when the field is nullable.
pub(super) fn write_field(
    field: &RecordField,
    given: Option<&Json>,
    path: &Path<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match (given, &field.default) {
        (Some(Json::Null) | None, Some(default))
            if !default.is_null() || is_nullable(&field.schema) =>
        {
            write_avro(&field.schema, Some(default), path, out)
        }
        (None, None) if is_nullable(&field.schema) => {
            write_avro(&field.schema, Some(&Json::Null), path, out)
        }
        (given, _) => write_avro(&field.schema, given, path, out),
    }
}

/// A record from a [`FieldView`]: the same checks and bytes as
/// [`write_record`] on the JSON object the view stands for.
pub(super) fn write_record_view(
    layouts: &Layouts,
    record: &RecordSchema,
    view: &dyn FieldView,
    path: &Path<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let layout = layouts.get(record, view.names());
    write_record_laid_out(layouts, record, &layout, view, path, out)
}

/// [`write_record_view`] with the view's layout for `record` already found.
fn write_record_laid_out(
    layouts: &Layouts,
    record: &RecordSchema,
    layout: &Layout,
    view: &dyn FieldView,
    path: &Path<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if let Some(extra) = layout.extra {
        return Err(EncodeError::AdditionalProperty {
            field: Path::Field(path, extra).to_string(),
        });
    }
    for (field, slot) in record.fields.iter().zip(&layout.slots) {
        let field_path = Path::Field(path, &field.name);
        match slot.map_or(Field::Absent, |i| view.field_at(i)) {
            Field::Absent => write_field(field, None, &field_path, out)?,
            Field::Null => write_field(field, Some(&Json::Null), &field_path, out)?,
            given => write_value(layouts, &field.schema, given, &field_path, out)?,
        }
    }
    Ok(())
}

/// One value of a view where `schema` expects it: the bytes and errors of
/// the JSON value it stands for. A record field's default applies only to
/// Absent and Null, which [`write_record_view`] handles before this.
fn write_value(
    layouts: &Layouts,
    schema: &Schema,
    value: Field<'_>,
    path: &Path<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match value {
        Field::Absent => Err(EncodeError::MissingRequired {
            field: path.to_string(),
        }),
        Field::Null => write_avro(schema, Some(&Json::Null), path, out),
        Field::Json(j) => write_avro(schema, Some(j), path, out),
        Field::Long(n) => write_long_as(schema, n, path, out),
        Field::Bool(b) => write_bool(schema, b, path, out),
        Field::Double(x) => write_double(schema, x, path, out),
        Field::Text(t) => write_text(schema, t, path, out),
        Field::Record(r) => write_view_as(layouts, schema, r, path, out),
        Field::List(l) => write_list(layouts, schema, l, path, out),
    }
}

/// An integer where `schema` expects a long or a timestamp (or a union
/// holding one); anything else goes the JSON way for the same bytes or
/// error (an int checks its range there).
fn write_long_as(
    schema: &Schema,
    n: i64,
    path: &Path<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match schema {
        Schema::Long | Schema::TimestampMillis => {
            write_long(n, out);
            Ok(())
        }
        Schema::Union(union) => write_branch(
            union,
            out,
            |variant, out| write_long_as(variant, n, path, out),
            || mismatch(path, "null", &Json::from(n)),
        ),
        other => write_avro(other, Some(&Json::from(n)), path, out),
    }
}

/// A boolean where `schema` expects one, as [`write_long_as`] does.
fn write_bool(
    schema: &Schema,
    b: bool,
    path: &Path<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match schema {
        Schema::Boolean => {
            out.push(u8::from(b));
            Ok(())
        }
        Schema::Union(union) => write_branch(
            union,
            out,
            |variant, out| write_bool(variant, b, path, out),
            || mismatch(path, "null", &Json::Bool(b)),
        ),
        other => write_avro(other, Some(&Json::Bool(b)), path, out),
    }
}

/// A float where `schema` expects one (a double, a float, or a union
/// holding one); anything else goes the JSON way for the same error.
fn write_double(
    schema: &Schema,
    x: f64,
    path: &Path<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match schema {
        Schema::Double => {
            out.extend_from_slice(&x.to_le_bytes());
            Ok(())
        }
        Schema::Float => {
            out.extend_from_slice(&(x as f32).to_le_bytes());
            Ok(())
        }
        Schema::Union(union) => write_branch(
            union,
            out,
            |variant, out| write_double(variant, x, path, out),
            || mismatch(path, "null", &Json::from(x)),
        ),
        other => write_avro(other, Some(&Json::from(x)), path, out),
    }
}

/// A list where `schema` expects an array (or a union holding one).
fn write_list(
    layouts: &Layouts,
    schema: &Schema,
    list: &dyn ListView,
    path: &Path<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match schema {
        Schema::Array(a) => {
            if !list.is_empty() {
                write_long(list.len() as i64, out);
                // Items of one view type share a layout: found once for the
                // list, not once per item.
                let mut laid_out: Option<(*const &str, Arc<Layout>)> = None;
                for i in 0..list.len() {
                    let item_path = Path::Index(path, i);
                    match (a.items.as_ref(), list.item(i)) {
                        (Schema::Record(record), Field::Record(view)) => {
                            let names = view.names();
                            let layout = match &laid_out {
                                Some((key, layout)) if *key == names.as_ptr() => layout,
                                _ => {
                                    &laid_out
                                        .insert((names.as_ptr(), layouts.get(record, names)))
                                        .1
                                }
                            };
                            write_record_laid_out(layouts, record, layout, view, &item_path, out)?
                        }
                        (items, item) => write_value(layouts, items, item, &item_path, out)?,
                    }
                }
            }
            out.push(0);
            Ok(())
        }
        Schema::Union(union) => write_branch(
            union,
            out,
            |variant, out| write_list(layouts, variant, list, path, out),
            || mismatch(path, "null", &Json::Array(Vec::new())),
        ),
        other => write_avro(other, Some(&Json::Array(Vec::new())), path, out),
    }
}

/// A string where `schema` expects one: strings, enum symbols and the
/// first union branch that takes it; anything else goes the JSON way for
/// the same error.
pub(super) fn write_text(
    schema: &Schema,
    text: &str,
    path: &Path<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match schema {
        Schema::String | Schema::Bytes => {
            write_bytes(text.as_bytes(), out);
            Ok(())
        }
        Schema::Enum(e) => write_symbol(e, text, path, out),
        Schema::Union(union) => write_branch(
            union,
            out,
            |variant, out| write_text(variant, text, path, out),
            || mismatch(path, "null", &Json::String(text.to_owned())),
        ),
        other => write_avro(other, Some(&Json::String(text.to_owned())), path, out),
    }
}

/// A nested view where `schema` expects a record (or a union holding one).
pub(super) fn write_view_as(
    layouts: &Layouts,
    schema: &Schema,
    view: &dyn FieldView,
    path: &Path<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let not_a_record = || mismatch(path, "a non-record value", &Json::Object(Map::new()));
    match schema {
        Schema::Record(record) => write_record_view(layouts, record, view, path, out),
        Schema::Union(union) => write_branch(
            union,
            out,
            |variant, out| write_view_as(layouts, variant, view, path, out),
            not_a_record,
        ),
        _ => Err(not_a_record()),
    }
}

/// The enum symbol `s` as its index.
pub(super) fn write_symbol(
    e: &EnumSchema,
    s: &str,
    path: &Path<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let i = e
        .symbols
        .iter()
        .position(|sym| sym == s)
        .ok_or_else(|| EncodeError::InvalidValue {
            field: path.to_string(),
            message: format!("{s:?} is not one of {}", e.symbols.join(", ")),
        })?;
    write_long(i as i64, out);
    Ok(())
}

/// A non-null value in a union: the index and value of the first non-null
/// branch `write` accepts, else the last branch's error (`only_null` when
/// there is no other branch).
pub(super) fn write_branch(
    union: &UnionSchema,
    out: &mut Vec<u8>,
    mut write: impl FnMut(&Schema, &mut Vec<u8>) -> Result<(), EncodeError>,
    only_null: impl FnOnce() -> EncodeError,
) -> Result<(), EncodeError> {
    let mut last = None;
    for (i, variant) in union.variants().iter().enumerate() {
        if matches!(variant, Schema::Null) {
            continue;
        }
        let mark = out.len();
        write_long(i as i64, out);
        match write(variant, out) {
            Ok(()) => return Ok(()),
            Err(e) => {
                out.truncate(mark);
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(only_null))
}

pub(super) fn is_nullable(schema: &Schema) -> bool {
    matches!(schema, Schema::Union(u) if u.variants().iter().any(|v| matches!(v, Schema::Null)))
}

/// Accepts epoch milliseconds or an RFC 3339 string (what Segment SDKs send).
pub(super) fn timestamp_millis(json: &Json, path: &Path<'_>) -> Result<i64, EncodeError> {
    match json {
        Json::Number(n) => n
            .as_i64()
            .ok_or_else(|| mismatch(path, "epoch milliseconds or RFC 3339 string", json)),
        Json::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|e| EncodeError::InvalidValue {
                field: path.to_string(),
                message: format!("{s:?} is not an RFC 3339 timestamp: {e}"),
            }),
        other => Err(mismatch(
            path,
            "epoch milliseconds or RFC 3339 string",
            other,
        )),
    }
}
