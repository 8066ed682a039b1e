//! Typed field views: what ingest hands the encoder instead of a JSON tree.

use std::sync::{Arc, RwLock};

use apache_avro::schema::RecordSchema;
use serde_json::Value as Json;

/// One field of an event handed to the encoder as typed fields rather than
/// a JSON tree ([`FieldView`]).
#[derive(Clone, Copy)]
pub enum Field<'a> {
    Absent,
    Null,
    Text(&'a str),
    Long(i64),
    Double(f64),
    Bool(bool),
    Json(&'a Json),
    Record(&'a dyn FieldView),
    List(&'a dyn ListView),
}

impl Field<'_> {
    /// The JSON value this field stands for (Absent as null).
    pub fn to_json(self) -> Json {
        match self {
            Field::Absent | Field::Null => Json::Null,
            Field::Text(t) => Json::String(t.to_owned()),
            Field::Long(n) => Json::from(n),
            Field::Double(x) => Json::from(x),
            Field::Bool(b) => Json::Bool(b),
            Field::Json(j) => j.clone(),
            Field::Record(r) => Json::Object(
                r.names()
                    .iter()
                    .enumerate()
                    .map(|(i, n)| ((*n).to_owned(), r.field_at(i).to_json()))
                    .collect(),
            ),
            Field::List(l) => Json::Array((0..l.len()).map(|i| l.item(i).to_json()).collect()),
        }
    }
}

/// An array field handed to the encoder item by item, as a JSON array of
/// the same items would be.
pub trait ListView {
    fn len(&self) -> usize;
    /// Item `i` (< `len()`); Absent is refused as a missing value.
    fn item(&self, i: usize) -> Field<'_>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ListView for Vec<&str> {
    fn len(&self) -> usize {
        <[&str]>::len(self)
    }
    fn item(&self, i: usize) -> Field<'_> {
        Field::Text(self[i])
    }
}

impl<T: FieldView> ListView for Vec<T> {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn item(&self, i: usize) -> Field<'_> {
        Field::Record(&self[i])
    }
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
pub(super) struct Layout {
    pub(super) extra: Option<&'static str>,
    pub(super) slots: Vec<Option<usize>>,
}

/// Keys are two addresses: a fast hash serves them as well as SipHash,
/// at a fraction of the cost paid for every record encoded.
#[derive(Default)]
pub(super) struct Layouts(RwLock<rustc_hash::FxHashMap<(usize, usize), Arc<Layout>>>);

impl Layouts {
    pub(super) fn get(&self, record: &RecordSchema, names: &'static [&'static str]) -> Arc<Layout> {
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
