//! Resuming a fetch from inside a record batch.
//!
//! Tansu 0.6's memory storage (`dynostore`) answers a fetch with the stored
//! batches whose *base* offset is at or after the requested offset, so a
//! consumer resuming from an offset inside a multi-record batch (a committed
//! offset after a rebalance, a rewind, a restart) silently skips the rest of
//! that batch. Kafka returns the batch containing the offset and lets the
//! client skip the records before it. [`super::storage::DevStorage`]
//! remembers where each produced batch starts and ends, fetches from the
//! start of the batch that contains the requested offset, and trims that
//! first batch so it begins at the requested offset. Trimming (rather than
//! returning the whole batch as Kafka does) keeps Tansu's fetch loop right:
//! it advances its next offset by the record counts it got back.

use tansu_sans_io::record::{self, Record, deflated, inflated};
use tansu_storage::Result;

/// The part of `batch` from `offset` on, as a batch of its own whose base
/// offset is `offset`. `None` when the batch ends before `offset`.
pub fn trim_front(batch: &deflated::Batch, offset: i64) -> Result<Option<deflated::Batch>> {
    let skip = offset - batch.base_offset;
    if skip <= 0 {
        return Ok(Some(batch.clone()));
    }
    if batch.max_offset() < offset {
        return Ok(None);
    }
    let skip = i32::try_from(skip)?;
    let mut inflated = inflated::Batch::try_from(batch)?;
    // Rebuilt rather than edited: a record's length prefix covers its
    // varint offset delta, which may shrink.
    inflated.records = std::mem::take(&mut inflated.records)
        .into_iter()
        .filter(|r| r.offset_delta >= skip)
        .map(|r| {
            let delta = r.offset_delta - skip;
            Record::try_from(record::Builder::from(r).offset_delta(delta))
        })
        .collect::<Result<_, _>>()?;
    inflated.base_offset = offset;
    inflated.last_offset_delta -= skip;
    if inflated.base_sequence >= 0 {
        inflated.base_sequence = inflated.base_sequence.wrapping_add(skip);
    }
    Ok(Some(deflated::Batch::try_from(inflated)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn batch_of(base: i64, n: i32, attributes: i16) -> deflated::Batch {
        let mut builder = inflated::Batch::builder()
            .base_offset(base)
            .attributes(attributes)
            .last_offset_delta(n - 1)
            .producer_id(7)
            .base_sequence(100);
        for i in 0..n {
            builder = builder.record(
                Record::builder()
                    .offset_delta(i)
                    .timestamp_delta(i64::from(i))
                    .value(Some(Bytes::from(format!("v{}", base + i64::from(i))))),
            );
        }
        deflated::Batch::try_from(builder.build().unwrap()).unwrap()
    }

    fn values(batch: &deflated::Batch) -> Vec<(i64, String)> {
        let inflated = inflated::Batch::try_from(batch).unwrap();
        inflated
            .records
            .iter()
            .map(|r| {
                let value = r.value.clone().unwrap();
                (
                    inflated.base_offset + i64::from(r.offset_delta),
                    String::from_utf8(value.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn trimming_keeps_the_records_from_the_offset_on_with_their_offsets() {
        // 0 = uncompressed, 3 = lz4 (what the pipeline's producers use).
        for attributes in [0, 3] {
            // 100 records: deltas from 64 on take two varint bytes, and
            // one once trimmed.
            let batch = batch_of(40, 100, attributes);
            let trimmed = trim_front(&batch, 77).unwrap().unwrap();
            assert_eq!(trimmed.base_offset, 77);
            assert_eq!(trimmed.record_count, 63);
            assert_eq!(trimmed.last_offset_delta, 62);
            assert_eq!(trimmed.base_sequence, 137);
            let expected: Vec<_> = (77..140).map(|o| (o, format!("v{o}"))).collect();
            assert_eq!(values(&trimmed), expected);
            // The header checksum is recomputed: the wire form round-trips.
            let wire = Bytes::from(trimmed.clone());
            assert_eq!(deflated::Batch::try_from(wire).unwrap(), trimmed);

            assert_eq!(trim_front(&batch, 40).unwrap().unwrap(), batch);
            assert_eq!(trim_front(&batch, 139).unwrap().unwrap().record_count, 1);
            assert!(trim_front(&batch, 140).unwrap().is_none());
        }
    }
}
