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
    root: Op,
    slots: usize,
}

/// One step of the compiled reader. A record's fields, and those of the
/// records on a path below it (which Avro writes inline), are one flat
/// list, and the common shapes off the paths (a primitive, or a union of
/// null and a primitive) are read over without a look at their schema.
enum Op {
    /// Off every path: read over.
    Skip(Skip),
    /// The end of a path: its value goes to the slot.
    Leaf(usize, Leaf),
    /// Fields in the writer's order.
    Seq(Vec<Op>),
    /// A map on a path: a step for each key on a path; other keys skipped.
    Map {
        keys: Vec<(&'static str, Op)>,
        values: &'static Schema,
    },
    /// A union on a path: a step per branch.
    Union(Vec<Op>),
}

/// How a value off the paths is read over.
#[derive(Clone, Copy)]
enum Skip {
    Simple(Simple),
    /// A union of null and a simple value: `present` is the value's branch.
    Optional {
        present: i64,
        value: Simple,
    },
    /// Anything else, by its schema.
    Schema(&'static Schema),
}

/// A value whose size its first bytes give.
#[derive(Clone, Copy)]
enum Simple {
    Nothing,
    Varint,
    /// A length, then that many bytes.
    Sized,
    /// A fixed number of bytes, named for the error when they are missing.
    Fixed(usize, &'static str),
}

/// How a value at a path's end is read.
#[derive(Clone, Copy)]
enum Leaf {
    Value(&'static Schema),
    /// A union of null and one other branch, `present`.
    Optional {
        present: i64,
        value: &'static Schema,
    },
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
        // Not `vec![Datum::Null; n]`, which clones the value into each
        // slot through Datum's Clone, a per-event cost of its own.
        let mut out = Vec::with_capacity(self.slots);
        out.resize_with(self.slots, || Datum::Null);
        let mut input = bytes;
        self.run(&self.root, &mut input, &mut out)?;
        if !input.is_empty() {
            return Err(DatumError::Trailing(input.len()));
        }
        Ok(out)
    }

    fn run<'a>(
        &'a self,
        op: &'a Op,
        input: &mut &'a [u8],
        out: &mut [Datum<'a>],
    ) -> Result<(), DatumError> {
        match op {
            Op::Skip(skip) => self.skip_op(*skip, input)?,
            Op::Leaf(slot, leaf) => out[*slot] = self.leaf(*leaf, input)?,
            Op::Seq(ops) => {
                for op in ops {
                    self.run(op, input, out)?;
                }
            }
            Op::Map { keys, values } => {
                while let Some(n) = read_block_len(input)? {
                    for _ in 0..n {
                        let key = read_bytes(input)?;
                        match keys.iter().find(|(k, _)| k.as_bytes() == key) {
                            Some((_, op)) => self.run(op, input, out)?,
                            None => self.skip(values, input)?,
                        }
                    }
                }
            }
            Op::Union(branches) => self.run(union_branch(input, branches)?, input, out)?,
        }
        Ok(())
    }

    fn leaf<'a>(&'a self, leaf: Leaf, input: &mut &'a [u8]) -> Result<Datum<'a>, DatumError> {
        match leaf {
            Leaf::Value(schema) => self.reader.read_schema(schema, input),
            Leaf::Optional { present, value } => {
                if optional_branch(input, present)? {
                    self.reader.read_schema(value, input)
                } else {
                    Ok(Datum::Null)
                }
            }
        }
    }

    fn skip_op(&self, skip: Skip, input: &mut &[u8]) -> Result<(), DatumError> {
        match skip {
            Skip::Simple(s) => skip_simple(s, input),
            Skip::Optional { present, value } => {
                if optional_branch(input, present)? {
                    skip_simple(value, input)?;
                }
                Ok(())
            }
            Skip::Schema(schema) => self.skip(schema, input),
        }
    }

    /// Advances past one datum of `schema` without reading it into values.
    fn skip(&self, schema: &Schema, input: &mut &[u8]) -> Result<(), DatumError> {
        if let Some(s) = simple(&self.reader.names, schema) {
            return skip_simple(s, input);
        }
        match schema {
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
            // Every other schema is simple.
            _ => unreachable!("a simple schema is skipped above"),
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

fn skip_simple(s: Simple, input: &mut &[u8]) -> Result<(), DatumError> {
    match s {
        Simple::Nothing => {}
        Simple::Varint => {
            read_long(input)?;
        }
        Simple::Sized => {
            read_bytes(input)?;
        }
        Simple::Fixed(n, what) => {
            take(input, n, what)?;
        }
    }
    Ok(())
}

/// Reads a two-branch union's index: whether it is the `present` branch
/// (else the null one), refusing an index out of range as a union does.
fn optional_branch(input: &mut &[u8], present: i64) -> Result<bool, DatumError> {
    match read_long(input)? {
        i if i == present => Ok(true),
        i if i == 1 - present => Ok(false),
        index => Err(DatumError::BadUnionIndex { index, branches: 2 }),
    }
}

/// How a value of `schema` is read over when its bytes alone say how far
/// (None for records, arrays, maps and unions, or an unknown name).
fn simple(names: &HashMap<Name, &'static Schema>, schema: &Schema) -> Option<Simple> {
    Some(match schema {
        Schema::Null => Simple::Nothing,
        Schema::Boolean => Simple::Fixed(1, "boolean"),
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
        | Schema::Enum(_) => Simple::Varint,
        Schema::Float => Simple::Fixed(4, "float"),
        Schema::Double => Simple::Fixed(8, "double"),
        Schema::String
        | Schema::Uuid(apache_avro::schema::UuidSchema::String)
        | Schema::Bytes
        | Schema::BigDecimal
        | Schema::Uuid(apache_avro::schema::UuidSchema::Bytes)
        | Schema::Decimal(_) => Simple::Sized,
        Schema::Fixed(f)
        | Schema::Duration(f)
        | Schema::Uuid(apache_avro::schema::UuidSchema::Fixed(f)) => Simple::Fixed(f.size, "fixed"),
        Schema::Ref { name } => return simple(names, names.get(name)?),
        Schema::Union(_) | Schema::Record(_) | Schema::Array(_) | Schema::Map(_) => return None,
    })
}

/// The branch of a union of null and one other schema that is not null.
fn optional_of(schema: &'static Schema) -> Option<(i64, &'static Schema)> {
    let Schema::Union(u) = schema else {
        return None;
    };
    match u.variants() {
        [Schema::Null, value] if !matches!(value, Schema::Null) => Some((1, value)),
        [value, Schema::Null] if !matches!(value, Schema::Null) => Some((0, value)),
        _ => None,
    }
}

fn skip_of(names: &HashMap<Name, &'static Schema>, schema: &'static Schema) -> Skip {
    if let Some(s) = simple(names, schema) {
        return Skip::Simple(s);
    }
    if let Some((present, value)) = optional_of(schema)
        && let Some(value) = simple(names, value)
    {
        return Skip::Optional { present, value };
    }
    Skip::Schema(schema)
}

/// The step reading `schema` for the (slot, rest of path) pairs that reach it.
fn compile(
    names: &HashMap<Name, &'static Schema>,
    schema: &'static Schema,
    paths: &[(usize, &'static [&'static str])],
) -> Op {
    if paths.is_empty() {
        return Op::Skip(skip_of(names, schema));
    }
    if let Some(&(slot, _)) = paths.iter().find(|(_, rest)| rest.is_empty()) {
        // A path ends here (a container at a path's end is read whole).
        return Op::Leaf(
            slot,
            match optional_of(schema) {
                Some((present, value)) => Leaf::Optional { present, value },
                None => Leaf::Value(schema),
            },
        );
    }
    // Paths that go on below this step, with their first step taken.
    let below = |name: &str| -> Vec<(usize, &'static [&'static str])> {
        paths
            .iter()
            .filter(|(_, rest)| rest[0] == name)
            .map(|&(slot, rest)| (slot, &rest[1..]))
            .collect()
    };
    match schema {
        Schema::Record(r) => {
            let mut ops = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                match compile(names, &f.schema, &below(&f.name)) {
                    // A record's fields follow one another in the bytes.
                    Op::Seq(inner) => ops.extend(inner),
                    op => ops.push(op),
                }
            }
            Op::Seq(ops)
        }
        Schema::Map(m) => {
            let mut keys: Vec<(&'static str, Op)> = Vec::new();
            for &(_, rest) in paths {
                if !keys.iter().any(|(k, _)| *k == rest[0]) {
                    keys.push((rest[0], compile(names, &m.types, &below(rest[0]))));
                }
            }
            Op::Map {
                keys,
                values: &m.types,
            }
        }
        Schema::Union(u) => Op::Union(
            u.variants()
                .iter()
                .map(|v| compile(names, v, paths))
                .collect(),
        ),
        Schema::Ref { name } => match names.get(name) {
            Some(named) => compile(names, named, paths),
            // Read (and fail) as the datum reader would.
            None => Op::Skip(Skip::Schema(schema)),
        },
        // A path that goes on below a value with no fields is not there.
        _ => Op::Skip(skip_of(names, schema)),
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
    fn optional_fields_read_and_fail_as_unions_do() {
        let schema = leak(
            r#"{"type": "record", "name": "O", "fields": [
                {"name": "a", "type": ["null", "string"]},
                {"name": "b", "type": ["string", "null"]},
                {"name": "c", "type": ["null", "long"]},
                {"name": "d", "type": ["null", "string"]}
            ]}"#,
        );
        static OPT: &Paths = &[&["a"], &["b"], &["d"]];
        let reader = DatumReader::new(schema);
        let projection = Projection::new(&reader, OPT);
        // a = "x", b = "y", c = 5 (skipped), d = null.
        let bytes = [2, 2, b'x', 0, 2, b'y', 2, 10, 0];
        assert_eq!(
            projection.read(&bytes).unwrap(),
            [Datum::Str("x"), Datum::Str("y"), Datum::Null]
        );
        // An index past either branch, at a read field and at a skipped one.
        for at in [0, 6] {
            let mut bad = bytes;
            bad[at] = 4;
            let want = reader.read(&bad).unwrap_err();
            assert_eq!(
                want,
                DatumError::BadUnionIndex {
                    index: 2,
                    branches: 2
                }
            );
            assert_eq!(projection.read(&bad).unwrap_err(), want, "index at {at}");
        }
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
