//! Rows → the bytes a store takes, pure: ClickHouse's RowBinary for inserts,
//! JSONEachRow for export files.
//!
//! Rows are encoded where they are built, on the conversion threads, so a
//! batch is a few compact buffers rather than a vector of row structs that
//! the single insert task then serializes (the struct vector was moved,
//! page-faulted and freed once per batch, and serializing it took the
//! insert task's time). The insert sends the buffers as they are.

use bytes::Bytes;
use serde::{Serialize, ser};

/// The encoding a store takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// ClickHouse's RowBinary: the columns in the row's field order, no
    /// names or types on the wire (`INSERT INTO t (cols) FORMAT RowBinary`).
    RowBinary,
    /// One JSON object per line, for `INSERT ... FORMAT JSONEachRow` later.
    JsonEachRow,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowEncodeError {
    #[error("RowBinary cannot encode {0}")]
    Unsupported(&'static str),
    #[error("a sequence of unknown length cannot be encoded as a RowBinary array")]
    UnknownLength,
    #[error("row is not a struct, so it has no column names")]
    NotAStruct,
    #[error("row has columns {found:?}, earlier rows of this table had {expected:?}")]
    ColumnsDiffer {
        expected: Vec<&'static str>,
        found: Vec<&'static str>,
    },
    #[error("JSON: {0}")]
    Json(String),
}

impl ser::Error for RowEncodeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        RowEncodeError::Json(msg.to_string())
    }
}

/// Rows of one table, encoded: the column names (the row struct's fields,
/// in order) and the bytes, in one or more chunks (one per conversion
/// thread; each holds whole rows).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedRows {
    pub columns: Vec<&'static str>,
    pub rows: usize,
    pub chunks: Vec<Bytes>,
}

impl EncodedRows {
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends another encoding of the same table's rows.
    pub fn append(&mut self, other: EncodedRows) -> Result<(), RowEncodeError> {
        if other.rows == 0 {
            return Ok(());
        }
        if self.rows == 0 {
            self.columns = other.columns;
        } else if self.columns != other.columns {
            return Err(RowEncodeError::ColumnsDiffer {
                expected: self.columns.clone(),
                found: other.columns,
            });
        }
        self.rows += other.rows;
        self.chunks.extend(other.chunks);
        Ok(())
    }

    /// The encoded bytes, all chunks in order.
    pub fn bytes(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks.iter().map(|c| c.as_ref())
    }
}

/// Builds one [`EncodedRows`] chunk row by row.
#[derive(Debug)]
pub struct RowEncoder {
    format: Format,
    columns: Option<Vec<&'static str>>,
    rows: usize,
    out: Vec<u8>,
}

impl RowEncoder {
    /// `capacity` is a guess of the bytes to come; reserving it up front
    /// spares copying a growing buffer (untouched pages cost nothing).
    pub fn new(format: Format, capacity: usize) -> Self {
        Self::with_buffer(format, Vec::with_capacity(capacity))
    }

    /// Encodes into `out` (cleared first), e.g. a buffer from [`Buffers`].
    pub fn with_buffer(format: Format, mut out: Vec<u8>) -> Self {
        out.clear();
        Self {
            format,
            columns: None,
            rows: 0,
            out,
        }
    }

    /// Appends one row. A row that fails leaves nothing behind.
    pub fn push<T: Serialize>(&mut self, row: &T) -> Result<(), RowEncodeError> {
        let start = self.out.len();
        let result = self.encode(row);
        if result.is_err() {
            self.out.truncate(start);
        }
        result
    }

    fn encode<T: Serialize>(&mut self, row: &T) -> Result<(), RowEncodeError> {
        match self.format {
            Format::RowBinary => {
                // The first row names the columns; later rows are not
                // checked (an encoder serves one row type).
                let mut names = Vec::new();
                let record = self.columns.is_none();
                row.serialize(&mut RowBinary {
                    out: &mut self.out,
                    names: record.then_some(&mut names),
                    depth: 0,
                })?;
                if record {
                    if names.is_empty() {
                        return Err(RowEncodeError::NotAStruct);
                    }
                    self.columns = Some(names);
                }
            }
            Format::JsonEachRow => {
                serde_json::to_writer(&mut self.out, row)
                    .map_err(|e| RowEncodeError::Json(e.to_string()))?;
                self.out.push(b'\n');
                if self.columns.is_none() {
                    self.columns = Some(Vec::new());
                }
            }
        }
        self.rows += 1;
        Ok(())
    }

    pub fn finish(self) -> EncodedRows {
        if self.rows == 0 {
            return EncodedRows::default();
        }
        EncodedRows {
            columns: self.columns.unwrap_or_default(),
            rows: self.rows,
            chunks: vec![Bytes::from(self.out)],
        }
    }
}

/// Spare encoding buffers, kept from batch to batch. A fresh buffer of
/// megabytes per batch is a page fault per 4 KB written, and perf put the
/// kernel's page clearing at a quarter of the sink's conversion time.
#[derive(Debug, Default)]
pub struct Buffers(std::sync::Mutex<Vec<Vec<u8>>>);

impl Buffers {
    /// Enough for two batches in flight (one inserting, one converting) on
    /// a few threads; more are let go.
    const KEEP: usize = 16;

    /// A spare buffer with room for `capacity` bytes, or a new one.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let spare = self.0.lock().expect("buffer pool poisoned").pop();
        let mut buf = spare.unwrap_or_default();
        buf.clear();
        buf.reserve(capacity);
        buf
    }

    /// Keeps the buffers of rows that were written (those no one else
    /// still holds).
    pub fn give_back(&self, rows: EncodedRows) {
        let mut spare = self.0.lock().expect("buffer pool poisoned");
        for chunk in rows.chunks {
            if spare.len() >= Self::KEEP {
                break;
            }
            if let Ok(buf) = chunk.try_into_mut() {
                spare.push(buf.into());
            }
        }
    }

    #[cfg(test)]
    fn spare(&self) -> usize {
        self.0.lock().expect("buffer pool poisoned").len()
    }
}

/// `rows` encoded in `format`, one chunk.
pub fn encode_all<T: Serialize>(format: Format, rows: &[T]) -> Result<EncodedRows, RowEncodeError> {
    let mut e = RowEncoder::new(format, rows.len() * 256);
    for row in rows {
        e.push(row)?;
    }
    Ok(e.finish())
}

/// The RowBinary serializer: integers and floats little-endian, strings and
/// arrays prefixed with their LEB128 length, `Option` as Nullable (a null
/// byte first), structs as their fields in order.
struct RowBinary<'a> {
    out: &'a mut Vec<u8>,
    /// Collects the top-level struct's field names (the first row only).
    names: Option<&'a mut Vec<&'static str>>,
    depth: u32,
}

fn leb128(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Fixed-width numbers: their little-endian bytes.
macro_rules! little_endian {
    ($($method:ident: $ty:ty),* $(,)?) => {$(
        fn $method(self, v: $ty) -> Result<(), RowEncodeError> {
            self.out.extend_from_slice(&v.to_le_bytes());
            Ok(())
        }
    )*};
}

impl ser::Serializer for &mut RowBinary<'_> {
    type Ok = ();
    type Error = RowEncodeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = ser::Impossible<(), RowEncodeError>;
    type SerializeMap = ser::Impossible<(), RowEncodeError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = ser::Impossible<(), RowEncodeError>;

    fn serialize_bool(self, v: bool) -> Result<(), RowEncodeError> {
        self.out.push(u8::from(v));
        Ok(())
    }
    little_endian! {
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64,
        serialize_f32: f32, serialize_f64: f64,
    }
    fn serialize_char(self, v: char) -> Result<(), RowEncodeError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), RowEncodeError> {
        self.serialize_bytes(v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), RowEncodeError> {
        leb128(v.len() as u64, self.out);
        self.out.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), RowEncodeError> {
        self.out.push(1);
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), RowEncodeError> {
        self.out.push(0);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), RowEncodeError> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), RowEncodeError> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), RowEncodeError> {
        Err(RowEncodeError::Unsupported("an enum"))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), RowEncodeError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), RowEncodeError> {
        Err(RowEncodeError::Unsupported("an enum"))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, RowEncodeError> {
        leb128(len.ok_or(RowEncodeError::UnknownLength)? as u64, self.out);
        self.depth += 1;
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, RowEncodeError> {
        self.depth += 1;
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, RowEncodeError> {
        self.depth += 1;
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, RowEncodeError> {
        Err(RowEncodeError::Unsupported("an enum"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, RowEncodeError> {
        Err(RowEncodeError::Unsupported("a map"))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, RowEncodeError> {
        self.depth += 1;
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, RowEncodeError> {
        Err(RowEncodeError::Unsupported("an enum"))
    }
}

/// Sequences, tuples and tuple structs: their elements in order (a
/// sequence's length was written when it began).
macro_rules! elements {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl ser::$trait for &mut RowBinary<'_> {
            type Ok = ();
            type Error = RowEncodeError;
            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), RowEncodeError> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), RowEncodeError> {
                self.depth -= 1;
                Ok(())
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
);

impl ser::SerializeStruct for &mut RowBinary<'_> {
    type Ok = ();
    type Error = RowEncodeError;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), RowEncodeError> {
        if self.depth == 1
            && let Some(names) = self.names.as_mut()
        {
            names.push(key);
        }
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), RowEncodeError> {
        self.depth -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        id: String,
        r#type: &'static str,
        n: u32,
        ms: u64,
        delta: i64,
        flag: u8,
        score: f64,
        tags: Vec<String>,
        points: Vec<f64>,
        maybe: Option<u16>,
    }

    fn row(id: &str) -> Row {
        Row {
            id: id.to_owned(),
            r#type: "page",
            n: 258,
            ms: 1,
            delta: -2,
            flag: 1,
            score: 0.5,
            tags: vec!["a".into(), "bc".into()],
            points: vec![1.0],
            maybe: None,
        }
    }

    #[test]
    fn row_binary_is_clickhouses_layout_and_names_the_columns() {
        let mut e = RowEncoder::new(Format::RowBinary, 0);
        e.push(&row("m1")).unwrap();
        let enc = e.finish();
        assert_eq!(
            enc.columns,
            [
                "id", "type", "n", "ms", "delta", "flag", "score", "tags", "points", "maybe"
            ]
        );
        let mut want = vec![2, b'm', b'1', 4, b'p', b'a', b'g', b'e'];
        want.extend(258u32.to_le_bytes());
        want.extend(1u64.to_le_bytes());
        want.extend((-2i64).to_le_bytes());
        want.push(1);
        want.extend(0.5f64.to_le_bytes());
        want.extend([2, 1, b'a', 2, b'b', b'c']);
        want.push(1);
        want.extend(1.0f64.to_le_bytes());
        want.push(1); // Nullable: null
        assert_eq!(enc.chunks, [Bytes::from(want)]);
        assert_eq!(enc.rows, 1);
    }

    #[test]
    fn long_strings_take_a_multi_byte_length() {
        let mut out = Vec::new();
        leb128(300, &mut out);
        assert_eq!(out, [0xac, 0x02]);
        let mut e = RowEncoder::new(Format::RowBinary, 0);
        e.push(&row(&"x".repeat(300))).unwrap();
        assert_eq!(&e.finish().chunks[0][..3], &[0xac, 0x02, b'x']);
    }

    #[test]
    fn json_each_row_is_one_object_per_line() {
        let enc = encode_all(Format::JsonEachRow, &[row("m1"), row("m2")]).unwrap();
        let text = String::from_utf8(enc.chunks[0].to_vec()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!((lines.len(), enc.rows), (2, 2));
        assert_eq!(lines[1]["id"], "m2");
        assert_eq!(lines[0]["type"], "page");
    }

    #[test]
    fn unencodable_rows_leave_nothing_behind_and_say_why() {
        let mut e = RowEncoder::new(Format::RowBinary, 0);
        e.push(&row("m1")).unwrap();
        let len = e.out.len();
        let mut map = std::collections::BTreeMap::new();
        map.insert("k", 1);
        assert_eq!(
            e.push(&(1u8, map)).unwrap_err(),
            RowEncodeError::Unsupported("a map")
        );
        assert_eq!((e.out.len(), e.rows), (len, 1));
        assert_eq!(
            RowEncoder::new(Format::RowBinary, 0)
                .push(&7u32)
                .unwrap_err(),
            RowEncodeError::NotAStruct
        );
    }

    #[test]
    fn buffers_come_back_only_when_no_one_else_holds_them() {
        let pool = Buffers::default();
        let mut e = RowEncoder::with_buffer(Format::RowBinary, pool.take(1 << 16));
        e.push(&row("m1")).unwrap();
        let written = e.finish();
        let held = written.chunks[0].clone();
        pool.give_back(written.clone());
        assert_eq!(
            pool.spare(),
            0,
            "a chunk still referenced elsewhere is not reused"
        );
        drop(held);
        pool.give_back(written);
        assert_eq!(pool.spare(), 1);
        let buf = pool.take(10);
        assert!(
            buf.is_empty() && buf.capacity() >= 1 << 16,
            "the same buffer, cleared"
        );
        assert_eq!(pool.spare(), 0);
    }

    #[test]
    fn appending_keeps_chunks_and_refuses_other_columns() {
        let mut all = encode_all(Format::RowBinary, &[row("a")]).unwrap();
        all.append(encode_all(Format::RowBinary, &[row("b"), row("c")]).unwrap())
            .unwrap();
        all.append(EncodedRows::default()).unwrap();
        assert_eq!((all.rows, all.chunks.len()), (3, 2));
        #[derive(Serialize)]
        struct Other {
            x: u8,
        }
        let err = all
            .append(encode_all(Format::RowBinary, &[Other { x: 1 }]).unwrap())
            .unwrap_err();
        assert!(matches!(err, RowEncodeError::ColumnsDiffer { .. }), "{err}");
    }
}
