//! Avro binary → the values at chosen paths only. A consumer that reads a
//! few dozen fields of a wide event (the scorer's stitcher) would otherwise
//! build every record, map and string of it and then find each field by
//! name. A [`Projection`] is compiled once per writer schema: every field
//! off the chosen paths is skipped over in the bytes, and each chosen value
//! lands in its slot, found by index.

use std::collections::HashMap;

use apache_avro::schema::{Name, Schema};

use super::{
    Datum, DatumError, DatumReader, read_block_len, read_bytes, read_long, take, union_branch,
};

/// Paths into a record datum: record fields and map keys by name, unions
/// unwrapped (as [`Datum`] reads them).
pub type Paths = [&'static [&'static str]];

/// The compiled reader of one writer schema for one list of paths.
pub struct Projection {
    reader: DatumReader,
    root: Node,
    slots: usize,
}

enum Node {
    /// Off every path: read over.
    Skip(&'static Schema),
    /// The end of a path: its value goes to the slot.
    Leaf(usize, &'static Schema),
    /// A record on a path: a node per field, in the writer's order.
    Record(Vec<Node>),
    /// A map on a path: nodes for the keys on a path; other keys skipped.
    Map {
        keys: Vec<(&'static str, Node)>,
        values: &'static Schema,
    },
    /// A union on a path: a node per branch.
    Union(Vec<Node>),
}

impl Projection {
    /// Compiles `paths` against the schema `reader` reads. A path the
    /// schema does not have reads as [`Datum::Null`].
    pub fn new(reader: &DatumReader, paths: &'static Paths) -> Self {
        let reader = reader.clone();
        let all: Vec<(usize, &'static [&'static str])> =
            paths.iter().copied().enumerate().collect();
        let root = compile(&reader.names, reader.schema, &all);
        Self {
            reader,
            root,
            slots: paths.len(),
        }
    }

    /// Reads one datum that must span all of `bytes`; the value at each
    /// path in its slot of the returned vector (path order).
    pub fn read<'a>(&'a self, bytes: &'a [u8]) -> Result<Vec<Datum<'a>>, DatumError> {
        let mut out = vec![Datum::Null; self.slots];
        let mut input = bytes;
        self.walk(&self.root, &mut input, &mut out)?;
        if !input.is_empty() {
            return Err(DatumError::Trailing(input.len()));
        }
        Ok(out)
    }

    fn walk<'a>(
        &'a self,
        node: &'a Node,
        input: &mut &'a [u8],
        out: &mut [Datum<'a>],
    ) -> Result<(), DatumError> {
        match node {
            Node::Skip(schema) => self.skip(schema, input)?,
            Node::Leaf(slot, schema) => out[*slot] = self.reader.read_schema(schema, input)?,
            Node::Record(fields) => {
                for f in fields {
                    self.walk(f, input, out)?;
                }
            }
            Node::Map { keys, values } => {
                while let Some(n) = read_block_len(input)? {
                    for _ in 0..n {
                        let key = read_bytes(input)?;
                        match keys.iter().find(|(k, _)| k.as_bytes() == key) {
                            Some((_, node)) => self.walk(node, input, out)?,
                            None => self.skip(values, input)?,
                        }
                    }
                }
            }
            Node::Union(branches) => self.walk(union_branch(input, branches)?, input, out)?,
        }
        Ok(())
    }

    /// Advances past one datum of `schema` without reading it into values.
    fn skip(&self, schema: &Schema, input: &mut &[u8]) -> Result<(), DatumError> {
        match schema {
            Schema::Null => {}
            Schema::Boolean => {
                take(input, 1, "boolean")?;
            }
            Schema::Int
            | Schema::Date
            | Schema::TimeMillis
            | Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos
            | Schema::Enum(_) => {
                read_long(input)?;
            }
            Schema::Float => {
                take(input, 4, "float")?;
            }
            Schema::Double => {
                take(input, 8, "double")?;
            }
            Schema::String
            | Schema::Uuid(apache_avro::schema::UuidSchema::String)
            | Schema::Bytes
            | Schema::BigDecimal
            | Schema::Uuid(apache_avro::schema::UuidSchema::Bytes)
            | Schema::Decimal(_) => {
                read_bytes(input)?;
            }
            Schema::Fixed(f)
            | Schema::Duration(f)
            | Schema::Uuid(apache_avro::schema::UuidSchema::Fixed(f)) => {
                take(input, f.size, "fixed")?;
            }
            Schema::Union(u) => self.skip(union_branch(input, u.variants())?, input)?,
            Schema::Record(r) => {
                for f in &r.fields {
                    self.skip(&f.schema, input)?;
                }
            }
            Schema::Array(a) => self.skip_blocks(input, |p, input| p.skip(&a.items, input))?,
            Schema::Map(m) => self.skip_blocks(input, |p, input| {
                read_bytes(input)?;
                p.skip(&m.types, input)
            })?,
            Schema::Ref { name } => self.skip(self.named(name)?, input)?,
        }
        Ok(())
    }

    /// Array or map blocks: a block that states its size in bytes is
    /// jumped over whole, any other item by item.
    fn skip_blocks(
        &self,
        input: &mut &[u8],
        item: impl Fn(&Self, &mut &[u8]) -> Result<(), DatumError>,
    ) -> Result<(), DatumError> {
        loop {
            let n = read_long(input)?;
            if n == 0 {
                return Ok(());
            }
            if n < 0 {
                let size = read_long(input)?;
                let size = usize::try_from(size).map_err(|_| DatumError::NegativeLength(size))?;
                take(input, size, "block")?;
                continue;
            }
            for _ in 0..n {
                item(self, input)?;
            }
        }
    }

    fn named(&self, name: &Name) -> Result<&'static Schema, DatumError> {
        self.reader
            .names
            .get(name)
            .copied()
            .ok_or_else(|| DatumError::UnknownName(name.to_string()))
    }
}

/// The node reading `schema` for the (slot, rest of path) pairs that reach it.
fn compile(
    names: &HashMap<Name, &'static Schema>,
    schema: &'static Schema,
    paths: &[(usize, &'static [&'static str])],
) -> Node {
    if paths.is_empty() {
        return Node::Skip(schema);
    }
    if let Some(&(slot, _)) = paths.iter().find(|(_, rest)| rest.is_empty()) {
        // A path ends here (a container at a path's end is read whole).
        return Node::Leaf(slot, schema);
    }
    // Paths that go on below this node, with their first step taken.
    let below = |name: &str| -> Vec<(usize, &'static [&'static str])> {
        paths
            .iter()
            .filter(|(_, rest)| rest[0] == name)
            .map(|&(slot, rest)| (slot, &rest[1..]))
            .collect()
    };
    match schema {
        Schema::Record(r) => Node::Record(
            r.fields
                .iter()
                .map(|f| compile(names, &f.schema, &below(&f.name)))
                .collect(),
        ),
        Schema::Map(m) => {
            let mut keys: Vec<(&'static str, Node)> = Vec::new();
            for &(_, rest) in paths {
                if !keys.iter().any(|(k, _)| *k == rest[0]) {
                    keys.push((rest[0], compile(names, &m.types, &below(rest[0]))));
                }
            }
            Node::Map {
                keys,
                values: &m.types,
            }
        }
        Schema::Union(u) => Node::Union(
            u.variants()
                .iter()
                .map(|v| compile(names, v, paths))
                .collect(),
        ),
        Schema::Ref { name } => match names.get(name) {
            Some(named) => compile(names, named, paths),
            // Read (and fail) as the datum reader would.
            None => Node::Skip(schema),
        },
        // A path that goes on below a value with no fields is not there.
        _ => Node::Skip(schema),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    fn leak(text: &str) -> &'static Schema {
        Box::leak(Box::new(Schema::parse_str(text).unwrap()))
    }

    const SCHEMA: &str = r#"{"type": "record", "name": "E", "fields": [
        {"name": "id", "type": "string"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "ctx", "type": ["null", {"type": "record", "name": "Ctx", "fields": [
            {"name": "os", "type": ["null", "string"]},
            {"name": "n", "type": "long"},
            {"name": "deep", "type": {"type": "map", "values": {"type": "map", "values": "double"}}}
        ]}]},
        {"name": "props", "type": {"type": "map", "values": ["null", "string", "long"]}},
        {"name": "again", "type": ["null", "Ctx"]},
        {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["a", "b"]}},
        {"name": "f", "type": "float"},
        {"name": "fx", "type": {"type": "fixed", "name": "F", "size": 3}},
        {"name": "last", "type": "boolean"}
    ]}"#;

    static PATHS: &Paths = &[
        &["id"],
        &["ctx", "os"],
        &["ctx", "deep", "k", "x"],
        &["props", "b"],
        &["props", "missing"],
        &["again", "n"],
        &["nowhere"],
        &["id", "below_a_string"],
        &["kind"],
        &["last"],
    ];

    fn ctx(os: Option<&str>, n: i64) -> Value {
        Value::Record(vec![
            (
                "os".into(),
                match os {
                    Some(s) => Value::Union(1, Box::new(Value::String(s.into()))),
                    None => Value::Union(0, Box::new(Value::Null)),
                },
            ),
            ("n".into(), Value::Long(n)),
            (
                "deep".into(),
                Value::Map(
                    [(
                        "k".to_owned(),
                        Value::Map(
                            [
                                ("w".to_owned(), Value::Double(1.0)),
                                ("x".to_owned(), Value::Double(2.5)),
                            ]
                            .into(),
                        ),
                    )]
                    .into(),
                ),
            ),
        ])
    }

    fn encoded(schema: &Schema) -> Vec<u8> {
        let value = Value::Record(vec![
            ("id".into(), Value::String("e1".into())),
            (
                "tags".into(),
                Value::Array(vec![Value::String("t1".into()), Value::String("t2".into())]),
            ),
            ("ctx".into(), Value::Union(1, Box::new(ctx(Some("iOS"), 7)))),
            (
                "props".into(),
                Value::Map(
                    [
                        ("a".to_owned(), Value::Union(2, Box::new(Value::Long(3)))),
                        (
                            "b".to_owned(),
                            Value::Union(1, Box::new(Value::String("bee".into()))),
                        ),
                    ]
                    .into(),
                ),
            ),
            ("again".into(), Value::Union(1, Box::new(ctx(None, 9)))),
            ("kind".into(), Value::Enum(1, "b".into())),
            ("f".into(), Value::Float(1.5)),
            ("fx".into(), Value::Fixed(3, vec![1, 2, 3])),
            ("last".into(), Value::Boolean(true)),
        ]);
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap()
    }

    #[test]
    fn each_path_reads_what_the_whole_datum_holds_there() {
        let schema = leak(SCHEMA);
        let reader = DatumReader::new(schema);
        let bytes = encoded(schema);
        let whole = reader.read(&bytes).unwrap();
        let at = |path: &[&str]| -> Datum<'_> {
            let mut d = &whole;
            for step in path {
                let next = match d {
                    Datum::Record(..) => d.field(step),
                    Datum::Map(entries) => entries.iter().find(|(k, _)| k == step).map(|(_, v)| v),
                    _ => None,
                };
                match next {
                    Some(n) => d = n,
                    None => return Datum::Null,
                }
            }
            d.clone()
        };
        let projection = Projection::new(&reader, PATHS);
        let slots = projection.read(&bytes).unwrap();
        for (path, got) in PATHS.iter().zip(&slots) {
            assert_eq!(*got, at(path), "{path:?}");
        }
        assert_eq!(slots[1], Datum::Str("iOS"));
        assert_eq!(slots[2], Datum::Double(2.5));
        assert_eq!(slots[3], Datum::Str("bee"));
        assert_eq!(slots[5], Datum::Long(9));
        assert_eq!(slots[8], Datum::Enum("b"));
        assert_eq!(slots[9], Datum::Boolean(true));
    }

    #[test]
    fn bad_bytes_are_refused_as_the_datum_reader_refuses_them() {
        let schema = leak(SCHEMA);
        let reader = DatumReader::new(schema);
        let projection = Projection::new(&reader, PATHS);
        let bytes = encoded(schema);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            projection.read(&trailing).unwrap_err(),
            DatumError::Trailing(1)
        );
        for cut in 0..bytes.len() {
            assert!(projection.read(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
