//! JSON event → Avro datum (checked field by field against the event's
//! schema) → Confluent-framed bytes, and back.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, RwLock},
};

use apache_avro::{
    reader::datum::GenericDatumReader,
    schema::{EnumSchema, RecordField, RecordSchema, Schema, UnionSchema},
    types::Value,
};
use serde_json::{Map, Value as Json};

use crate::{
    FRAME_HEADER_LEN, MAGIC_BYTE,
    datum::{Datum, DatumReader},
    plan::Plan,
    resolver::{ResolveError, ResolvedSchema, SchemaResolver},
};

/// Why an event does not fit the tracking plan. `reason()` is the bounded
/// code ingest reports and counts; `field()` names the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("event must be a JSON object")]
    NotAnObject,
    #[error("event {event:?} is not in the tracking plan")]
    UnplannedEvent { event: String },
    #[error("{field}: required field is missing")]
    MissingRequired { field: String },
    #[error("{field}: expected {expected}, found {found}")]
    TypeMismatch {
        field: String,
        expected: String,
        found: &'static str,
    },
    #[error("{field}: not in the tracking plan for this event")]
    AdditionalProperty { field: String },
    #[error("{field}: {message}")]
    InvalidValue { field: String, message: String },
}

impl EncodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAnObject => "bad_json",
            Self::UnplannedEvent { .. } => "unplanned_event",
            Self::MissingRequired { .. } => "missing_required",
            Self::TypeMismatch { .. } => "type_mismatch",
            Self::AdditionalProperty { .. } => "additional_property",
            Self::InvalidValue { .. } => "invalid_value",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            Self::MissingRequired { field }
            | Self::TypeMismatch { field, .. }
            | Self::AdditionalProperty { field }
            | Self::InvalidValue { field, .. } => Some(field),
            Self::UnplannedEvent { .. } => Some("event"),
            Self::NotAnObject => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message of {0} bytes is shorter than the 5-byte Confluent header")]
    TooShort(usize),
    #[error("unknown magic byte {0} (Confluent framing starts with 0)")]
    BadMagic(u8),
}

/// Splits Confluent framing into (schema id, Avro datum).
pub fn split_frame(bytes: &[u8]) -> Result<(u32, &[u8]), FrameError> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(FrameError::TooShort(bytes.len()));
    }
    if bytes[0] != MAGIC_BYTE {
        return Err(FrameError::BadMagic(bytes[0]));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[FRAME_HEADER_LEN..]))
}

/// One field of an event handed to the encoder as typed fields rather than
/// a JSON tree ([`FieldView`]).
#[derive(Clone, Copy)]
pub enum Field<'a> {
    Absent,
    Null,
    Text(&'a str),
    Long(i64),
    Bool(bool),
    Json(&'a Json),
    Record(&'a dyn FieldView),
}

/// A record whose fields the encoder reads by position: what ingest builds,
/// so the envelope and context are never a map to fill and then search.
/// Encoding a view gives the same bytes and errors as encoding the JSON
/// object it stands for.
pub trait FieldView {
    /// Every name the view has a value (null included) for, as the keys of
    /// the JSON object would be: a name the schema lacks is an additional
    /// property. The same slice for every value of a type.
    fn names(&self) -> &'static [&'static str];
    /// The value of `names()[i]`.
    fn field_at(&self, i: usize) -> Field<'_>;
    /// The value of the field `name`, Absent when the view has none.
    fn field(&self, name: &str) -> Field<'_> {
        self.names()
            .iter()
            .position(|n| *n == name)
            .map_or(Field::Absent, |i| self.field_at(i))
    }
}

/// Which view position fills each field of a record schema, and the first
/// view name the schema lacks: worked out once per (schema, view type)
/// rather than by name for every event.
struct Layout {
    extra: Option<&'static str>,
    slots: Vec<Option<usize>>,
}

#[derive(Default)]
struct Layouts(RwLock<HashMap<(usize, usize), Arc<Layout>>>);

impl Layouts {
    fn get(&self, record: &RecordSchema, names: &'static [&'static str]) -> Arc<Layout> {
        // Schemas live in the encoder and names are 'static: their
        // addresses identify them for the encoder's lifetime.
        let key = (std::ptr::from_ref(record) as usize, names.as_ptr() as usize);
        if let Some(l) = self.0.read().expect("lock poisoned").get(&key) {
            return Arc::clone(l);
        }
        let layout = Arc::new(Layout {
            extra: names
                .iter()
                .copied()
                .find(|n| !record.lookup.contains_key(*n)),
            slots: record
                .fields
                .iter()
                .map(|f| names.iter().position(|n| *n == f.name))
                .collect(),
        });
        self.0
            .write()
            .expect("lock poisoned")
            .insert(key, Arc::clone(&layout));
        layout
    }
}

/// A framed, validated event ready for Kafka.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub schema_id: u32,
    pub bytes: Vec<u8>,
}

struct Writer {
    id: u32,
    schema: Schema,
}

/// Encodes events with the latest governed version of their schema. Built
/// once at start-up; `encode` does no lookups beyond a hash map.
pub struct Encoder {
    writers: HashMap<String, Writer>,
    layouts: Layouts,
    /// Records the pipeline produces (`avro/derived`), kept apart so an SDK
    /// can never send one as an event.
    derived: HashMap<String, Writer>,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("events", &self.writers.len())
            .finish()
    }
}

impl Encoder {
    /// Uses the latest version of every event; ids come from `resolver`
    /// (the lock file when embedded, the registry's answer when external).
    pub async fn build(plan: &Plan, resolver: &dyn SchemaResolver) -> Result<Self, ResolveError> {
        Ok(Self {
            layouts: Layouts::default(),
            writers: latest_writers(plan.subjects.values(), resolver).await?,
            derived: latest_writers(plan.derived.values(), resolver).await?,
        })
    }

    /// Validates and frames a record the pipeline produces, e.g. `lead_score`.
    pub fn encode_derived(&self, name: &str, record: &Json) -> Result<Encoded, EncodeError> {
        let writer = self
            .derived
            .get(name)
            .ok_or_else(|| EncodeError::UnplannedEvent {
                event: name.to_owned(),
            })?;
        frame(writer, record)
    }

    /// Validates and frames the event `name` given as a [`FieldView`].
    pub fn encode_view(&self, name: &str, event: &dyn FieldView) -> Result<Encoded, EncodeError> {
        let writer = self
            .writers
            .get(name)
            .ok_or_else(|| EncodeError::UnplannedEvent {
                event: name.to_owned(),
            })?;
        frame_with(writer, |out| {
            write_view_as(&self.layouts, &writer.schema, event, &Path::Root, out)
        })
    }

    pub fn events(&self) -> impl Iterator<Item = &str> {
        self.writers.keys().map(String::as_str)
    }

    /// Validates `event` (a tracking-plan JSON object whose `event` names its
    /// schema) and returns it framed.
    pub fn encode(&self, event: &Json) -> Result<Encoded, EncodeError> {
        let obj = event.as_object().ok_or(EncodeError::NotAnObject)?;
        let name = match obj.get("event") {
            Some(Json::String(s)) => s,
            Some(other) => {
                return Err(EncodeError::TypeMismatch {
                    field: "event".into(),
                    expected: "string".into(),
                    found: json_kind(other),
                });
            }
            None => {
                return Err(EncodeError::MissingRequired {
                    field: "event".into(),
                });
            }
        };
        let writer =
            self.writers
                .get(name.as_str())
                .ok_or_else(|| EncodeError::UnplannedEvent {
                    event: name.clone(),
                })?;
        frame(writer, event)
    }
}

async fn latest_writers(
    subjects: impl Iterator<Item = &crate::plan::Subject>,
    resolver: &dyn SchemaResolver,
) -> Result<HashMap<String, Writer>, ResolveError> {
    let mut writers = HashMap::new();
    for subject in subjects {
        let latest = subject.latest();
        let id = resolver.id_for(&latest.subject, &latest.text).await?;
        writers.insert(
            subject.event.clone(),
            Writer {
                id,
                schema: latest.schema.clone(),
            },
        );
    }
    Ok(writers)
}

fn frame(writer: &Writer, value: &Json) -> Result<Encoded, EncodeError> {
    frame_with(writer, |out| {
        write_avro(&writer.schema, Some(value), &Path::Root, out)
    })
}

/// Confluent framing around the datum `write` appends.
fn frame_with(
    writer: &Writer,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<Encoded, EncodeError> {
    let mut bytes = Vec::with_capacity(512);
    bytes.push(MAGIC_BYTE);
    bytes.extend_from_slice(&writer.id.to_be_bytes());
    write(&mut bytes)?;
    Ok(Encoded {
        schema_id: writer.id,
        bytes,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("schema {id}: {source}")]
    Resolve { id: u32, source: ResolveError },
    #[error("schema {id}: datum does not decode: {message}")]
    Datum { id: u32, message: String },
}

struct Reader {
    schema: Arc<ResolvedSchema>,
    datum: GenericDatumReader<'static>,
    borrowed: DatumReader,
}

/// Decodes framed bytes with the writer schema named by the frame, fetched
/// from the resolver once per id.
pub struct Decoder {
    resolver: Arc<dyn SchemaResolver>,
    readers: RwLock<HashMap<u32, Arc<Reader>>>,
}

/// A decoded event: which schema wrote it and the datum.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub schema: Arc<ResolvedSchema>,
    pub value: Value,
}

impl Decoder {
    pub fn new(resolver: Arc<dyn SchemaResolver>) -> Self {
        Self {
            resolver,
            readers: RwLock::new(HashMap::new()),
        }
    }

    pub async fn decode(&self, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let (id, _) = split_frame(bytes)?;
        let reader = self.reader(id).await?;
        Self::read(&reader, bytes)
    }

    /// Decodes without waiting: None when the frame names a schema this
    /// decoder has not fetched yet (then use [`Decoder::decode`]). For
    /// decoding a batch on several threads.
    pub fn decode_cached(&self, bytes: &[u8]) -> Option<Result<Decoded, DecodeError>> {
        Some(
            self.cached_reader(bytes)?
                .and_then(|r| Self::read(&r, bytes)),
        )
    }

    /// The reader for the frame's schema id if already fetched (None if
    /// not), or why the frame is bad.
    fn cached_reader(&self, bytes: &[u8]) -> Option<Result<Arc<Reader>, DecodeError>> {
        let id = match split_frame(bytes) {
            Ok((id, _)) => id,
            Err(e) => return Some(Err(e.into())),
        };
        let reader = self
            .readers
            .read()
            .expect("lock poisoned")
            .get(&id)
            .cloned()?;
        Some(Ok(reader))
    }

    /// Reads the datum borrowed ([`Datum`]: no owned copy of its strings)
    /// and hands it to `f` with the writer schema's id. None when the frame
    /// names a schema this decoder has not fetched yet (then use
    /// [`Decoder::visit`]).
    pub fn visit_cached<R>(
        &self,
        bytes: &[u8],
        f: impl FnOnce(u32, &Datum<'_>) -> R,
    ) -> Option<Result<R, DecodeError>> {
        Some(
            self.cached_reader(bytes)?
                .and_then(|r| Self::visit_with(&r, bytes, f)),
        )
    }

    /// [`Decoder::visit_cached`], fetching the writer schema when needed.
    pub async fn visit<R>(
        &self,
        bytes: &[u8],
        f: impl FnOnce(u32, &Datum<'_>) -> R,
    ) -> Result<R, DecodeError> {
        let (id, _) = split_frame(bytes)?;
        let reader = self.reader(id).await?;
        Self::visit_with(&reader, bytes, f)
    }

    fn visit_with<R>(
        reader: &Reader,
        bytes: &[u8],
        f: impl FnOnce(u32, &Datum<'_>) -> R,
    ) -> Result<R, DecodeError> {
        let (id, datum) = split_frame(bytes)?;
        let datum = reader
            .borrowed
            .read(datum)
            .map_err(|e| DecodeError::Datum {
                id,
                message: e.to_string(),
            })?;
        Ok(f(id, &datum))
    }

    fn read(reader: &Reader, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let (id, mut datum) = split_frame(bytes)?;
        let value = reader
            .datum
            .read_value(&mut datum)
            .map_err(|e| DecodeError::Datum {
                id,
                message: e.to_string(),
            })?;
        if !datum.is_empty() {
            return Err(DecodeError::Datum {
                id,
                message: format!("{} trailing bytes after the datum", datum.len()),
            });
        }
        Ok(Decoded {
            schema: Arc::clone(&reader.schema),
            value,
        })
    }

    async fn reader(&self, id: u32) -> Result<Arc<Reader>, DecodeError> {
        if let Some(r) = self.readers.read().expect("lock poisoned").get(&id) {
            return Ok(Arc::clone(r));
        }
        let schema = self
            .resolver
            .schema_by_id(id)
            .await
            .map_err(|source| DecodeError::Resolve { id, source })?;
        let datum = GenericDatumReader::builder(schema.schema)
            .build()
            .map_err(|e| DecodeError::Datum {
                id,
                message: e.to_string(),
            })?;
        let borrowed = DatumReader::new(schema.schema);
        let reader = Arc::new(Reader {
            schema,
            datum,
            borrowed,
        });
        self.readers
            .write()
            .expect("lock poisoned")
            .insert(id, Arc::clone(&reader));
        Ok(reader)
    }
}

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

/// Where in the event a value sits, rendered only when reporting an error.
enum Path<'a> {
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

fn mismatch(path: &Path<'_>, expected: impl Into<String>, found: &Json) -> EncodeError {
    EncodeError::TypeMismatch {
        field: path.to_string(),
        expected: expected.into(),
        found: json_kind(found),
    }
}

fn json_kind(v: &Json) -> &'static str {
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

fn write_long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn write_bytes(b: &[u8], out: &mut Vec<u8>) {
    write_long(b.len() as i64, out);
    out.extend_from_slice(b);
}

fn write_avro(
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

fn write_record(
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
fn write_field(
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
fn write_record_view(
    layouts: &Layouts,
    record: &RecordSchema,
    view: &dyn FieldView,
    path: &Path<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let layout = layouts.get(record, view.names());
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
            Field::Json(j) => write_field(field, Some(j), &field_path, out)?,
            Field::Long(n) => write_field(field, Some(&Json::from(n)), &field_path, out)?,
            Field::Bool(b) => write_field(field, Some(&Json::Bool(b)), &field_path, out)?,
            Field::Text(t) => write_text(&field.schema, t, &field_path, out)?,
            Field::Record(r) => write_view_as(layouts, &field.schema, r, &field_path, out)?,
        }
    }
    Ok(())
}

/// A string where `schema` expects one: strings, enum symbols and the
/// first union branch that takes it; anything else goes the JSON way for
/// the same error.
fn write_text(
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
fn write_view_as(
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
fn write_symbol(
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
fn write_branch(
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

fn is_nullable(schema: &Schema) -> bool {
    matches!(schema, Schema::Union(u) if u.variants().iter().any(|v| matches!(v, Schema::Null)))
}

/// Accepts epoch milliseconds or an RFC 3339 string (what Segment SDKs send).
fn timestamp_millis(json: &Json, path: &Path<'_>) -> Result<i64, EncodeError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::EmbeddedResolver;
    use serde_json::json;

    pub(crate) fn page_view() -> Json {
        json!({
            "message_id": "m-1", "event": "page_viewed", "type": "page", "platform": "web",
            "source_id": "web-main", "tenant": "brand-a", "anonymous_id": "anon-1",
            "timestamp": "2026-11-22T08:00:00.123+08:00", "received_at": 1_795_000_000_000_i64,
            "context": {"page_path": "/models/x5/configure", "utm_source": "autohome"},
            "properties": {"page_type": "configurator", "model_id": "x5", "page_value": 12.5}
        })
    }

    #[tokio::test]
    async fn the_borrowed_datum_renders_what_apache_avro_decodes() {
        let (encoder, decoder) = codec().await;
        let mut e = page_view();
        e["context"]["page_title"] = json!("Quote \" back\\slash \n newline \u{1} ctl 中文");
        let bytes = encoder.encode(&e).unwrap().bytes;
        let reference = decoder.decode(&bytes).await.unwrap();
        let (id, text) = decoder
            .visit_cached(&bytes, |id, d| {
                let mut text = String::new();
                d.write_json(&mut text);
                (id, text)
            })
            .expect("schema fetched by decode")
            .unwrap();
        assert_eq!(id, reference.schema.id);
        assert_eq!(text, to_json(&reference.value).to_string());
        let err = decoder
            .visit(&bytes[..bytes.len() - 3], |_, _| ())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("ends early"), "{err}");
    }

    /// A JSON object seen as a [`FieldView`]: strings, integers and
    /// booleans as typed fields, objects as nested views.
    struct JsonView {
        map: Map<String, Json>,
        names: &'static [&'static str],
        nested: HashMap<String, JsonView>,
    }

    impl JsonView {
        fn new(v: &Json) -> Self {
            let map = v.as_object().unwrap().clone();
            let names: Vec<&'static str> = map
                .keys()
                .map(|k| &*Box::leak(k.clone().into_boxed_str()))
                .collect();
            let nested = map
                .iter()
                .filter(|(_, v)| v.is_object())
                .map(|(k, v)| (k.clone(), JsonView::new(v)))
                .collect();
            Self {
                map,
                names: Box::leak(names.into_boxed_slice()),
                nested,
            }
        }
    }

    impl FieldView for JsonView {
        fn field_at(&self, i: usize) -> Field<'_> {
            let name = self.names[i];
            if let Some(n) = self.nested.get(name) {
                return Field::Record(n);
            }
            match self.map.get(name) {
                None => Field::Absent,
                Some(Json::Null) => Field::Null,
                Some(Json::String(s)) => Field::Text(s),
                Some(Json::Bool(b)) => Field::Bool(*b),
                Some(j) if j.is_i64() => Field::Long(j.as_i64().unwrap()),
                Some(j) => Field::Json(j),
            }
        }
        fn names(&self) -> &'static [&'static str] {
            self.names
        }
    }

    #[tokio::test]
    async fn a_view_encodes_as_its_json_object_does() {
        let (encoder, _) = codec().await;
        let mut bad_enum = page_view();
        bad_enum["platform"] = json!("tv");
        let mut extra = page_view();
        extra["context"]["nope"] = json!(1);
        let mut bad_ts = page_view();
        bad_ts["timestamp"] = json!("soon");
        let mut wrong_type = page_view();
        wrong_type["properties"]["duration_ms"] = json!("long");
        for e in [page_view(), bad_enum, extra, bad_ts, wrong_type] {
            let by_json = encoder.encode(&e).map(|x| x.bytes);
            let by_view = encoder
                .encode_view(e["event"].as_str().unwrap(), &JsonView::new(&e))
                .map(|x| x.bytes);
            assert_eq!(by_view, by_json, "{e}");
        }
        assert!(matches!(
            encoder.encode_view("nope", &JsonView::new(&page_view())),
            Err(EncodeError::UnplannedEvent { .. })
        ));
    }

    async fn codec() -> (Encoder, Decoder) {
        let plan = Plan::embedded().unwrap();
        let resolver = Arc::new(EmbeddedResolver::new(&plan).unwrap());
        (
            Encoder::build(&plan, resolver.as_ref()).await.unwrap(),
            Decoder::new(resolver),
        )
    }

    #[tokio::test]
    async fn round_trips_through_confluent_framing() {
        let (enc, dec) = codec().await;
        let encoded = enc.encode(&page_view()).unwrap();
        assert_eq!(encoded.bytes[0], 0);
        let decoded = dec.decode(&encoded.bytes).await.unwrap();
        assert_eq!(decoded.schema.id, encoded.schema_id);
        let back = to_json(&decoded.value);
        assert_eq!(back["properties"]["page_type"], "configurator");
        assert_eq!(back["properties"]["page_value"], 12.5);
        assert_eq!(back["timestamp"], 1_795_305_600_123_i64);
        assert_eq!(back["context"]["is_bot"], false);
        assert_eq!(back["user_id"], Json::Null);
    }

    #[tokio::test]
    async fn errors_name_the_field_and_reason() {
        let (enc, _) = codec().await;
        type Mutation = Box<dyn Fn(&mut Json)>;
        let cases: Vec<(Mutation, &str, Option<&str>)> = vec![
            (
                Box::new(|e| e["event"] = json!("page_veiwed")),
                "unplanned_event",
                Some("event"),
            ),
            (
                Box::new(|e| {
                    e.as_object_mut().unwrap().remove("message_id");
                }),
                "missing_required",
                Some("message_id"),
            ),
            (
                Box::new(|e| e["properties"]["model_id"] = json!(5)),
                "type_mismatch",
                Some("properties.model_id"),
            ),
            (
                Box::new(|e| e["properties"]["colour"] = json!("red")),
                "additional_property",
                Some("properties.colour"),
            ),
            (
                Box::new(|e| e["properties"]["page_type"] = json!("checkout")),
                "invalid_value",
                Some("properties.page_type"),
            ),
            (
                Box::new(|e| e["platform"] = json!("tv")),
                "invalid_value",
                Some("platform"),
            ),
            (
                Box::new(|e| e["timestamp"] = json!("yesterday")),
                "invalid_value",
                Some("timestamp"),
            ),
            (Box::new(|e| *e = json!([1, 2])), "bad_json", None),
        ];
        for (mutate, reason, field) in cases {
            let mut event = page_view();
            mutate(&mut event);
            let err = enc.encode(&event).unwrap_err();
            assert_eq!((err.reason(), err.field()), (reason, field), "{err}");
        }
    }

    #[tokio::test]
    async fn arrays_enums_ints_and_booleans_round_trip_through_apache_avro() {
        let (enc, dec) = codec().await;
        let mut visit = page_view();
        visit["event"] = json!("store_visited");
        visit["type"] = json!("track");
        visit["platform"] = json!("offline");
        visit["context"]["is_bot"] = json!(true);
        visit["properties"] = json!({"dealer_id": "d-9", "visit_type": "walk_in", "duration_minutes": -45, "models_seen": ["x5", "x3", "i4"]});
        let back = to_json(
            &dec.decode(&enc.encode(&visit).unwrap().bytes)
                .await
                .unwrap()
                .value,
        );
        assert_eq!(back["properties"], visit["properties"]);
        assert_eq!(back["context"]["is_bot"], true);
        assert_eq!(back["platform"], "offline");
        visit["properties"]["models_seen"] = json!([]);
        let back = to_json(
            &dec.decode(&enc.encode(&visit).unwrap().bytes)
                .await
                .unwrap()
                .value,
        );
        assert_eq!(back["properties"]["models_seen"], json!([]));
        let mut call = page_view();
        call["event"] = json!("call_completed");
        call["properties"] = json!({"direction": "outbound", "outcome": "appointment_set", "duration_seconds": 184, "agent_id": null});
        let back = to_json(
            &dec.decode(&enc.encode(&call).unwrap().bytes)
                .await
                .unwrap()
                .value,
        );
        assert_eq!(
            back["properties"],
            json!({"dealer_id": null, "direction": "outbound", "outcome": "appointment_set", "duration_seconds": 184, "agent_id": null})
        );
    }

    #[test]
    fn framing_is_length_checked() {
        assert_eq!(split_frame(&[0, 0, 0]), Err(FrameError::TooShort(3)));
        assert_eq!(split_frame(&[1, 0, 0, 0, 7]), Err(FrameError::BadMagic(1)));
        assert_eq!(split_frame(&[0, 0, 0, 1, 2, 9]), Ok((258, &[9][..])));
    }

    #[tokio::test]
    async fn unknown_schema_id_is_a_typed_error() {
        let (_, dec) = codec().await;
        let err = dec.decode(&[0, 0, 0, 0x7f, 0xff, 2]).await.unwrap_err();
        assert!(
            matches!(err, DecodeError::Resolve { id: 32767, .. }),
            "{err}"
        );
    }
}
