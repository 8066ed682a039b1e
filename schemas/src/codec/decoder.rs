//! The decoder: writer schema by frame id, fetched once, owned or borrowed datum out.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use apache_avro::{reader::datum::GenericDatumReader, types::Value};

use crate::{
    datum::{Datum, DatumReader, Paths, Projection},
    resolver::{ResolvedSchema, SchemaResolver},
};

use super::*;

pub(super) struct Reader {
    schema: Arc<ResolvedSchema>,
    datum: GenericDatumReader<'static>,
    borrowed: DatumReader,
    /// Projections compiled for this schema, by the address of their
    /// (static) path list.
    projections: RwLock<Vec<(usize, Arc<Projection>)>>,
}

impl Reader {
    fn projection(&self, paths: &'static Paths) -> Arc<Projection> {
        let key = paths.as_ptr() as usize;
        let found = |list: &[(usize, Arc<Projection>)]| {
            list.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, p)| Arc::clone(p))
        };
        if let Some(p) = found(&self.projections.read().expect("lock poisoned")) {
            return p;
        }
        let mut list = self.projections.write().expect("lock poisoned");
        if let Some(p) = found(&list) {
            return p;
        }
        let p = Arc::new(Projection::new(&self.borrowed, paths));
        list.push((key, Arc::clone(&p)));
        p
    }
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

    /// Reads only the values at `paths` (see [`Projection`]) and hands
    /// them to `f`, in path order, with the writer schema's id: for a
    /// reader of a few fields of a wide datum. The projection is compiled
    /// once per writer schema and path list.
    pub async fn project<R>(
        &self,
        bytes: &[u8],
        paths: &'static Paths,
        f: impl FnOnce(u32, &[Datum<'_>]) -> R,
    ) -> Result<R, DecodeError> {
        let (id, datum) = split_frame(bytes)?;
        let reader = self.reader(id).await?;
        let projection = reader.projection(paths);
        let values = projection.read(datum).map_err(|e| DecodeError::Datum {
            id,
            message: e.to_string(),
        })?;
        Ok(f(id, &values))
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
            projections: Default::default(),
        });
        self.readers
            .write()
            .expect("lock poisoned")
            .insert(id, Arc::clone(&reader));
        Ok(reader)
    }
}
