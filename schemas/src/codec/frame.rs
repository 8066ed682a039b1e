//! Confluent framing: magic byte, schema id, datum.

use serde_json::Value as Json;

use crate::{FRAME_HEADER_LEN, MAGIC_BYTE};

use super::*;

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

pub(super) fn frame(writer: &WriterSchema, value: &Json) -> Result<Encoded, EncodeError> {
    frame_with(writer, |out| {
        write_avro(&writer.schema, Some(value), &Path::Root, out)
    })
}

/// Confluent framing around the datum `write` appends.
pub(super) fn frame_with(
    writer: &WriterSchema,
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
