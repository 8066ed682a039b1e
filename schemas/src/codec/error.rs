//! Why an event does not fit, a frame does not parse, a datum does not decode.

use crate::resolver::ResolveError;

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

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("schema {id}: {source}")]
    Resolve { id: u32, source: ResolveError },
    #[error("schema {id}: datum does not decode: {message}")]
    Datum { id: u32, message: String },
}
