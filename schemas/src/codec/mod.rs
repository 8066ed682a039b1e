//! JSON event → Avro datum (checked field by field against the event's
//! schema) → Confluent-framed bytes, and back.

mod avro_write;
mod decoder;
mod encoder;
mod error;
mod frame;
mod json;
#[cfg(test)]
mod tests;
mod view;

pub use decoder::{Decoded, Decoder};
pub use encoder::{Encoded, Encoder};
pub use error::{DecodeError, EncodeError, FrameError};
pub use frame::split_frame;
pub use json::to_json;
pub(crate) use json::write_str;
pub use view::{Field, FieldView, ListView};

use avro_write::*;
use encoder::*;
use frame::*;
use view::*;
