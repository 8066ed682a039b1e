//! The encoder: latest governed schema per event, JSON or view in, framed Avro out.

use std::{collections::HashMap, fmt};

use apache_avro::schema::Schema;
use serde_json::Value as Json;

use crate::{
    plan::Plan,
    resolver::{ResolveError, SchemaResolver},
};

use super::*;

/// A framed, validated event ready for Kafka.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub schema_id: u32,
    pub bytes: Vec<u8>,
}

pub(super) struct WriterSchema {
    pub(super) id: u32,
    pub(super) schema: Schema,
}

/// Encodes events with the latest governed version of their schema. Built
/// once at start-up; `encode` does no lookups beyond a hash map.
pub struct Encoder {
    writers: HashMap<String, WriterSchema>,
    layouts: Layouts,
    /// Records the pipeline produces (`avro/derived`), kept apart so an SDK
    /// can never send one as an event.
    derived: HashMap<String, WriterSchema>,
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
        frame(writer_of(&self.derived, name)?, record)
    }

    /// [`Encoder::encode_derived`] for a record given as a [`FieldView`]:
    /// the same bytes and errors as for the JSON object it stands for.
    pub fn encode_derived_view(
        &self,
        name: &str,
        record: &dyn FieldView,
    ) -> Result<Encoded, EncodeError> {
        self.frame_view(writer_of(&self.derived, name)?, record)
    }

    /// Validates and frames the event `name` given as a [`FieldView`].
    pub fn encode_view(&self, name: &str, event: &dyn FieldView) -> Result<Encoded, EncodeError> {
        self.frame_view(writer_of(&self.writers, name)?, event)
    }

    fn frame_view(
        &self,
        writer: &WriterSchema,
        view: &dyn FieldView,
    ) -> Result<Encoded, EncodeError> {
        frame_with(writer, |out| {
            write_view_as(&self.layouts, &writer.schema, view, &Path::Root, out)
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
        frame(writer_of(&self.writers, name)?, event)
    }
}

/// The writer schema of `name`, or the error for a name the plan lacks.
fn writer_of<'a>(
    writers: &'a HashMap<String, WriterSchema>,
    name: &str,
) -> Result<&'a WriterSchema, EncodeError> {
    writers
        .get(name)
        .ok_or_else(|| EncodeError::UnplannedEvent {
            event: name.to_owned(),
        })
}

async fn latest_writers(
    subjects: impl Iterator<Item = &crate::plan::Subject>,
    resolver: &dyn SchemaResolver,
) -> Result<HashMap<String, WriterSchema>, ResolveError> {
    let mut writers = HashMap::new();
    for subject in subjects {
        let latest = subject.latest();
        let id = resolver.id_for(&latest.subject, &latest.text).await?;
        writers.insert(
            subject.event.clone(),
            WriterSchema {
                id,
                schema: latest.schema.clone(),
            },
        );
    }
    Ok(writers)
}
