//! Avro binary → a borrowed [`Datum`], by walking the writer schema.
//!
//! apache-avro's generic reader builds an owned `Value`, cloning every field
//! name and string; for the sink and the scorer, which only read a few
//! columns and copy `context`/`properties` out as JSON text, that was most
//! of the per-event cost. A `Datum` borrows strings from the record bytes
//! and field names from the schema: one allocation per record, array or map.

mod projection;

use std::collections::HashMap;

use apache_avro::schema::{Name, RecordSchema, Schema, UuidSchema};

pub use projection::{Paths, Projection};

/// One decoded value. Unions are transparent (the chosen branch's value);
/// logical types appear as their underlying type.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum<'a> {
    Null,
    Boolean(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Bytes(&'a [u8]),
    Str(&'a str),
    Enum(&'a str),
    Array(Vec<Datum<'a>>),
    Map(Vec<(&'a str, Datum<'a>)>),
    Record(Fields<'a>, Vec<Datum<'a>>),
}

/// The schema of a record datum: its field names and their order.
#[derive(Clone, Copy)]
pub struct Fields<'a>(pub &'a RecordSchema);

impl PartialEq for Fields<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl std::fmt::Debug for Fields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.name)
    }
}

impl<'a> Datum<'a> {
    /// A record's field by name; None for a missing field or a non-record.
    pub fn field(&self, name: &str) -> Option<&Datum<'a>> {
        match self {
            // A scan that compares lengths first beats the schema's
            // BTreeMap (a string comparison per step) on records of tens
            // of fields, and the scorer looks up about twenty per event.
            Datum::Record(Fields(schema), values) => {
                let i = if schema.fields.len() <= 64 {
                    schema
                        .fields
                        .iter()
                        .position(|f| f.name.len() == name.len() && f.name == name)?
                } else {
                    *schema.lookup.get(name)?
                };
                values.get(i)
            }
            _ => None,
        }
    }

    /// The (name, value) pairs of a record or map; none for anything else.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Datum<'a>)> {
        let (record, map) = match self {
            Datum::Record(Fields(schema), values) => (Some(schema.fields.iter().zip(values)), None),
            Datum::Map(entries) => (None, Some(entries.iter())),
            _ => (None, None),
        };
        let record = record
            .into_iter()
            .flatten()
            .map(|(f, v)| (f.name.as_str(), v));
        record.chain(map.into_iter().flatten().map(|(k, v)| (*k, v)))
    }

    /// The items of an array; none for anything else.
    pub fn items(&self) -> &[Datum<'a>] {
        match self {
            Datum::Array(items) => items,
            _ => &[],
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Datum::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The text of a string or enum symbol.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            Datum::Str(s) | Datum::Enum(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Datum::Int(i) => Some(i64::from(*i)),
            Datum::Long(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Datum::Int(i) => Some(f64::from(*i)),
            Datum::Long(i) => Some(*i as f64),
            Datum::Float(f) => Some(f64::from(*f)),
            Datum::Double(f) => Some(*f),
            _ => None,
        }
    }

    /// Appends the datum as JSON text, record fields and map keys sorted:
    /// the same text as [`crate::codec::to_json`] of apache-avro's value for
    /// the same bytes, without building either tree.
    pub fn write_json(&self, out: &mut String) {
        use std::fmt::Write as _;
        match self {
            Datum::Null => out.push_str("null"),
            Datum::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
            Datum::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Datum::Long(i) => {
                let _ = write!(out, "{i}");
            }
            Datum::Float(f) => write_number(f64::from(*f), out),
            Datum::Double(f) => write_number(*f, out),
            Datum::Bytes(b) => crate::codec::write_str(&String::from_utf8_lossy(b), out),
            Datum::Str(s) | Datum::Enum(s) => crate::codec::write_str(s, out),
            Datum::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            Datum::Map(entries) => {
                let mut sorted: Vec<&(&str, Datum<'_>)> = entries.iter().collect();
                // Stable, so of a repeated key the last value stays, as in a JSON
                // object built from the entries.
                sorted.sort_by(|a, b| a.0.cmp(b.0));
                sorted.dedup_by(|later, earlier| {
                    let same = later.0 == earlier.0;
                    if same {
                        std::mem::swap(later, earlier);
                    }
                    same
                });
                write_object(sorted.into_iter().map(|(k, v)| (*k, v)), out);
            }
            // The lookup table is a BTreeMap: its order is the sorted order.
            Datum::Record(Fields(schema), values) => write_object(
                schema
                    .lookup
                    .iter()
                    .filter_map(|(k, &i)| Some((k.as_str(), values.get(i)?))),
                out,
            ),
        }
    }
}

fn write_number(f: f64, out: &mut String) {
    match serde_json::Number::from_f64(f) {
        Some(n) => out.push_str(&n.to_string()),
        None => out.push_str("null"),
    }
}

fn write_object<'d, 'a: 'd>(
    entries: impl Iterator<Item = (&'d str, &'d Datum<'a>)>,
    out: &mut String,
) {
    out.push('{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push(',');
        }
        crate::codec::write_str(k, out);
        out.push(':');
        v.write_json(out);
    }
    out.push('}');
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatumError {
    #[error("datum ends early: {0} needs more bytes")]
    Truncated(&'static str),
    #[error("variable-length integer is longer than 10 bytes")]
    BadVarint,
    #[error("negative length {0}")]
    NegativeLength(i64),
    #[error("{0} does not fit an Avro int")]
    IntOverflow(i64),
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("union branch {index} of {branches}")]
    BadUnionIndex { index: i64, branches: usize },
    #[error("enum symbol {index} of {symbols}")]
    BadEnumIndex { index: i64, symbols: usize },
    #[error("schema refers to {0}, which it does not define")]
    UnknownName(String),
    #[error("{0} trailing bytes after the datum")]
    Trailing(usize),
}

/// A writer schema prepared for reading: named types indexed so references
/// resolve without a search.
#[derive(Clone)]
pub struct DatumReader {
    schema: &'static Schema,
    names: HashMap<Name, &'static Schema>,
}

impl DatumReader {
    pub fn new(schema: &'static Schema) -> Self {
        let mut names = HashMap::new();
        collect_names(schema, &mut names);
        Self { schema, names }
    }

    /// Reads one datum that must span all of `bytes`.
    pub fn read<'a>(&'a self, bytes: &'a [u8]) -> Result<Datum<'a>, DatumError> {
        let mut input = bytes;
        let datum = self.read_schema(self.schema, &mut input)?;
        if !input.is_empty() {
            return Err(DatumError::Trailing(input.len()));
        }
        Ok(datum)
    }

    fn read_schema<'a>(
        &'a self,
        schema: &'a Schema,
        input: &mut &'a [u8],
    ) -> Result<Datum<'a>, DatumError> {
        Ok(match schema {
            Schema::Null => Datum::Null,
            Schema::Boolean => Datum::Boolean(take(input, 1, "boolean")?[0] != 0),
            Schema::Int | Schema::Date | Schema::TimeMillis => {
                let n = read_long(input)?;
                Datum::Int(i32::try_from(n).map_err(|_| DatumError::IntOverflow(n))?)
            }
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Datum::Long(read_long(input)?),
            Schema::Float => Datum::Float(f32::from_le_bytes(
                take(input, 4, "float")?.try_into().expect("4 bytes"),
            )),
            Schema::Double => Datum::Double(f64::from_le_bytes(
                take(input, 8, "double")?.try_into().expect("8 bytes"),
            )),
            Schema::String | Schema::Uuid(UuidSchema::String) => Datum::Str(read_str(input)?),
            Schema::Bytes
            | Schema::BigDecimal
            | Schema::Uuid(UuidSchema::Bytes)
            | Schema::Decimal(_) => Datum::Bytes(read_bytes(input)?),
            Schema::Fixed(f) | Schema::Duration(f) | Schema::Uuid(UuidSchema::Fixed(f)) => {
                Datum::Bytes(take(input, f.size, "fixed")?)
            }
            Schema::Enum(e) => {
                let index = read_long(input)?;
                let symbol = usize::try_from(index)
                    .ok()
                    .and_then(|i| e.symbols.get(i))
                    .ok_or(DatumError::BadEnumIndex {
                        index,
                        symbols: e.symbols.len(),
                    })?;
                Datum::Enum(symbol)
            }
            Schema::Union(u) => self.read_schema(union_branch(input, u.variants())?, input)?,
            Schema::Record(r) => {
                let mut values = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    values.push(self.read_schema(&f.schema, input)?);
                }
                Datum::Record(Fields(r), values)
            }
            Schema::Array(a) => {
                let mut items = Vec::new();
                while let Some(n) = read_block_len(input)? {
                    items.reserve(n.min(input.len()));
                    for _ in 0..n {
                        items.push(self.read_schema(&a.items, input)?);
                    }
                }
                Datum::Array(items)
            }
            Schema::Map(m) => {
                let mut entries = Vec::new();
                while let Some(n) = read_block_len(input)? {
                    entries.reserve(n.min(input.len()));
                    for _ in 0..n {
                        let key = read_str(input)?;
                        entries.push((key, self.read_schema(&m.types, input)?));
                    }
                }
                Datum::Map(entries)
            }
            Schema::Ref { name } => {
                let named = self
                    .names
                    .get(name)
                    .ok_or_else(|| DatumError::UnknownName(name.to_string()))?;
                self.read_schema(named, input)?
            }
        })
    }
}

fn collect_names(schema: &'static Schema, names: &mut HashMap<Name, &'static Schema>) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.clone(), schema);
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.clone(), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.clone(), schema);
        }
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        _ => {}
    }
}

/// The branch a union datum takes (its index comes first).
fn union_branch<'s, T>(input: &mut &[u8], branches: &'s [T]) -> Result<&'s T, DatumError> {
    let index = read_long(input)?;
    usize::try_from(index)
        .ok()
        .and_then(|i| branches.get(i))
        .ok_or(DatumError::BadUnionIndex {
            index,
            branches: branches.len(),
        })
}

fn take<'a>(input: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], DatumError> {
    if input.len() < n {
        return Err(DatumError::Truncated(what));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

/// Zig-zag varint, as Avro writes `int` and `long`.
fn read_long(input: &mut &[u8]) -> Result<i64, DatumError> {
    let mut z: u64 = 0;
    for (i, &b) in input.iter().enumerate().take(10) {
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *input = &input[i + 1..];
            return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    Err(if input.len() < 10 {
        DatumError::Truncated("long")
    } else {
        DatumError::BadVarint
    })
}

fn read_bytes<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], DatumError> {
    let len = read_long(input)?;
    let len = usize::try_from(len).map_err(|_| DatumError::NegativeLength(len))?;
    take(input, len, "bytes")
}

fn read_str<'a>(input: &mut &'a [u8]) -> Result<&'a str, DatumError> {
    std::str::from_utf8(read_bytes(input)?).map_err(|_| DatumError::NotUtf8)
}

/// The item count of the next array or map block; None at the end. A
/// negative count is followed by the block's size in bytes.
fn read_block_len(input: &mut &[u8]) -> Result<Option<usize>, DatumError> {
    let n = read_long(input)?;
    if n == 0 {
        return Ok(None);
    }
    if n < 0 {
        read_long(input)?;
    }
    // Callers reserve at most the bytes left, so a corrupt count cannot ask
    // for gigabytes up front; it runs out of input instead.
    Ok(Some(n.unsigned_abs() as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    fn leak(text: &str) -> &'static Schema {
        Box::leak(Box::new(Schema::parse_str(text).unwrap()))
    }

    fn encode(schema: &Schema, value: Value) -> Vec<u8> {
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap()
    }

    fn json_of(value: &Value) -> String {
        crate::codec::to_json(value).to_string()
    }

    const SCHEMA: &str = r#"{"type": "record", "name": "R", "namespace": "t", "fields": [
        {"name": "s", "type": "string"},
        {"name": "n", "type": ["null", "long"]},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["a", "b"]}},
        {"name": "e2", "type": "E"},
        {"name": "d", "type": "double"},
        {"name": "f", "type": "float"},
        {"name": "i", "type": "int"},
        {"name": "b", "type": "boolean"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "m", "type": {"type": "map", "values": "int"}},
        {"name": "inner", "type": {"type": "record", "name": "In", "fields": [
            {"name": "z", "type": "string"}, {"name": "a", "type": ["null", "boolean"]}]}}
    ]}"#;

    fn sample() -> Value {
        Value::Record(vec![
            ("s".into(), Value::String("q\"uote\n".into())),
            ("n".into(), Value::Union(1, Box::new(Value::Long(-42)))),
            ("ts".into(), Value::TimestampMillis(1_795_000_000_123)),
            ("e".into(), Value::Enum(1, "b".into())),
            ("e2".into(), Value::Enum(0, "a".into())),
            ("d".into(), Value::Double(12.5)),
            ("f".into(), Value::Float(0.1)),
            ("i".into(), Value::Int(-7)),
            ("b".into(), Value::Boolean(true)),
            (
                "tags".into(),
                Value::Array(vec![Value::String("x".into()), Value::String("y".into())]),
            ),
            (
                "m".into(),
                Value::Map(
                    [
                        ("k2".to_owned(), Value::Int(2)),
                        ("k1".to_owned(), Value::Int(1)),
                    ]
                    .into(),
                ),
            ),
            (
                "inner".into(),
                Value::Record(vec![
                    ("z".into(), Value::String("é".into())),
                    ("a".into(), Value::Union(0, Box::new(Value::Null))),
                ]),
            ),
        ])
    }

    #[test]
    fn reads_what_apache_avro_writes_and_renders_the_same_json() {
        let schema = leak(SCHEMA);
        let bytes = encode(schema, sample());
        let reader = DatumReader::new(schema);
        let datum = reader.read(&bytes).unwrap();
        assert_eq!(datum.field("s").and_then(Datum::as_str), Some("q\"uote\n"));
        assert_eq!(datum.field("n").and_then(Datum::as_i64), Some(-42));
        assert_eq!(datum.field("e2").and_then(Datum::as_str), Some("a"));
        assert_eq!(
            datum.field("inner").and_then(|i| i.field("a")),
            Some(&Datum::Null)
        );
        assert_eq!(datum.field("missing"), None);
        let mut json = String::new();
        datum.write_json(&mut json);
        assert_eq!(json, json_of(&sample()));
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["m"]["k1"], 1);
    }

    #[test]
    fn names_what_is_wrong_with_bad_bytes() {
        let schema = leak(SCHEMA);
        let bytes = encode(schema, sample());
        let reader = DatumReader::new(schema);
        for cut in [0, 1, 5, bytes.len() - 1] {
            assert!(
                matches!(reader.read(&bytes[..cut]), Err(DatumError::Truncated(_))),
                "cut at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(reader.read(&long), Err(DatumError::Trailing(1)));
        let mut bad_union = bytes.clone();
        // After "s" (length 1 byte + 7 bytes) comes the union index of "n".
        bad_union[8] = 6;
        assert!(matches!(
            reader.read(&bad_union),
            Err(DatumError::BadUnionIndex {
                index: 3,
                branches: 2
            })
        ));
        assert_eq!(read_long(&mut &[0xff; 11][..]), Err(DatumError::BadVarint));
    }

    #[test]
    fn reads_negative_block_counts() {
        let schema = leak(r#"{"type": "array", "items": "long"}"#);
        // Block of -2 items (zig-zag 3) with its byte size 2, then end.
        let bytes = [3u8, 4, 2, 4, 0];
        let reader = DatumReader::new(schema);
        assert_eq!(
            reader.read(&bytes).unwrap(),
            Datum::Array(vec![Datum::Long(1), Datum::Long(2)])
        );
    }
}
