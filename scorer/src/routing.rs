//! The `by_lead` wire format: a batch's routed records for one partition
//! travel as one Kafka record ([`RoutedBatch`], key [`ROUTED_BATCH_KEY`]),
//! not one record each. The broker and both clients then handle one record
//! per batch and partition instead of one per event; order within a
//! partition is kept, and a batch record is applied whole or not at all.
//!
//! Records written before batching (key = lead id, value = one [`Routed`])
//! are still read.

use prost::Message as _;

use crate::proto::{Routed, RoutedBatch};

/// Key of a [`RoutedBatch`] record. Lead ids never start with NUL.
pub const ROUTED_BATCH_KEY: &str = "\u{0}routed_batch";

/// Bits of a [`position`] that hold the index within a batch record.
const INDEX_BITS: u32 = 16;

/// Most routed records in one batch record: the index must fit its bits.
pub const MAX_ROUTED_PER_RECORD: usize = (1 << INDEX_BITS) - 1;

/// Encoded size at which a batch record is closed, well under the 1 MB
/// `message.max.bytes` that brokers and librdkafka default to.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

/// Most bytes of record buffers a [`BatchRecords`] keeps between batches.
const MAX_SPARE_BYTES: usize = 32 * MAX_RECORD_BYTES;

/// Where a routed record sits in its `by_lead` partition: the offset of the
/// Kafka record that carries it and its index there, packed so positions
/// order as (offset, index) do. Offsets up to 2^47 fit.
pub fn position(offset: i64, index: usize) -> i64 {
    debug_assert!(index <= MAX_ROUTED_PER_RECORD);
    (offset << INDEX_BITS) | index as i64
}

/// The position of the last record a lead applied, from a snapshot written
/// before positions: the whole record at `offset` (a legacy record held one
/// routed record, at index 0).
pub fn legacy_position(offset: i64) -> i64 {
    if offset < 0 {
        offset
    } else {
        position(offset, MAX_ROUTED_PER_RECORD)
    }
}

/// The Kafka offset of a position.
pub fn offset_of(position: i64) -> i64 {
    position >> INDEX_BITS
}

/// Routed records grouped by partition, in order, into encoded batch
/// records of at most [`MAX_ROUTED_PER_RECORD`] records and about
/// [`MAX_RECORD_BYTES`] bytes each. Each record is encoded as it is pushed,
/// so a batch holds bytes, not records.
pub struct BatchRecords {
    open: Vec<(Vec<u8>, usize)>,
    closed: Vec<(i32, Vec<u8>)>,
    /// Buffers of records already sent, given back by [`Self::recycle`]: a
    /// record grows to hundreds of KiB, and a fresh buffer for each grows
    /// through copies and fresh pages the kernel must zero.
    spare: Vec<Vec<u8>>,
}

impl BatchRecords {
    pub fn new(partitions: i32) -> Self {
        Self {
            open: (0..partitions.max(1)).map(|_| Default::default()).collect(),
            closed: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Takes the (partition, value) pairs pushed so far, as [`Self::finish`]
    /// does, leaving the batch empty and ready for more.
    pub fn take(&mut self) -> Vec<(i32, Vec<u8>)> {
        for (p, (bytes, n)) in self.open.iter_mut().enumerate() {
            if *n > 0 {
                self.closed.push((p as i32, std::mem::take(bytes)));
                *n = 0;
            }
        }
        std::mem::take(&mut self.closed)
    }

    /// Gives back a record's buffer once its bytes are sent (the producer
    /// copies them), to be filled again.
    pub fn recycle(&mut self, mut bytes: Vec<u8>) {
        // A busy batch closes records at the size limit, so it needs as
        // many buffers as it has records; past that, spares are memory
        // held for nothing (at most MAX_SPARE_BYTES).
        if (self.spare.len() + 1) * MAX_RECORD_BYTES <= MAX_SPARE_BYTES
            && bytes.capacity() >= MAX_RECORD_BYTES
        {
            bytes.clear();
            self.spare.push(bytes);
        }
    }

    /// Appends `routed` to the open record of `partition`.
    pub fn push(&mut self, partition: i32, routed: &Routed) {
        let (bytes, n) = &mut self.open[partition as usize];
        let len = routed.encoded_len();
        // The field's tag and length prefix.
        let framed = 1 + prost::length_delimiter_len(len) + len;
        if *n > 0 && (*n >= MAX_ROUTED_PER_RECORD || bytes.len() + framed > MAX_RECORD_BYTES) {
            self.closed.push((partition, std::mem::take(bytes)));
            *n = 0;
        }
        if bytes.capacity() == 0 {
            match self.spare.pop() {
                Some(spare) => *bytes = spare,
                // The size a record closes at plus the one routed record
                // that may take it over: a buffer is filled once, not grown
                // through copies. Pages untouched cost nothing.
                None => bytes.reserve_exact(MAX_RECORD_BYTES + framed),
            }
        }
        prost::encoding::message::encode(1, routed, bytes);
        *n += 1;
    }

    /// The (partition, value) pairs; records of one partition in the order
    /// they were pushed.
    pub fn finish(mut self) -> Vec<(i32, Vec<u8>)> {
        self.take()
    }
}

/// [`BatchRecords`] over (partition, record) pairs.
pub fn batch_records(
    routed: impl IntoIterator<Item = (i32, Routed)>,
    partitions: i32,
) -> Vec<(i32, Vec<u8>)> {
    let mut records = BatchRecords::new(partitions);
    for (p, r) in routed {
        records.push(p, &r);
    }
    records.finish()
}

/// Why a `by_lead` record could not be read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable by_lead record: {0}")]
pub struct ReadError(#[from] prost::DecodeError);

/// The routed records of one `by_lead` record, with the lead each is for.
pub fn read_record(key: &[u8], value: &[u8]) -> Result<Vec<Routed>, ReadError> {
    let mut out = Vec::new();
    read_record_into(key, value, &mut out)?;
    Ok(out)
}

/// [`read_record`] into `out`, which is cleared first and keeps its
/// capacity: a batch record holds thousands of routed records, and a
/// fresh vector for each grows through fresh pages the kernel must zero.
pub fn read_record_into(key: &[u8], value: &[u8], out: &mut Vec<Routed>) -> Result<(), ReadError> {
    out.clear();
    if key == ROUTED_BATCH_KEY.as_bytes() {
        let mut batch = RoutedBatch {
            routed: std::mem::take(out),
        };
        let read = batch.merge(value);
        *out = batch.routed;
        if read.is_err() {
            out.clear();
        }
        return Ok(read?);
    }
    let mut routed = Routed::decode(value)?;
    // Before batching the key named the lead.
    routed.lead_id = String::from_utf8_lossy(key).into_owned();
    out.push(routed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Body, MergeRequest};

    fn routed(lead: &str, n: usize) -> Routed {
        Routed {
            lead_id: lead.to_owned(),
            graph_offset: n as u64,
            body: Some(Body::MergeRequest(MergeRequest {
                into: "x".repeat(n % 50),
            })),
        }
    }

    #[test]
    fn batches_keep_each_partitions_order_and_split_at_their_limits() {
        let input: Vec<(i32, Routed)> = (0..200_000)
            .map(|i| ((i % 3) as i32, routed(&format!("L{i}"), i)))
            .collect();
        let records = batch_records(input.clone(), 3);
        assert!(records.len() > 3, "large batches split");
        let mut read: Vec<Vec<Routed>> = vec![Vec::new(); 3];
        for (p, value) in &records {
            assert!(value.len() <= MAX_RECORD_BYTES, "{}", value.len());
            let batch = read_record(ROUTED_BATCH_KEY.as_bytes(), value).unwrap();
            assert!(batch.len() <= MAX_ROUTED_PER_RECORD);
            read[*p as usize].extend(batch);
        }
        for (p, got) in read.iter().enumerate() {
            let want: Vec<&Routed> = input
                .iter()
                .filter(|(q, _)| *q as usize == p)
                .map(|(_, r)| r)
                .collect();
            assert_eq!(got.iter().collect::<Vec<_>>(), want, "partition {p}");
        }
    }

    #[test]
    fn a_record_from_before_batching_reads_as_one_routed_record_for_its_key() {
        let mut old = routed("", 3);
        let value = old.encode_to_vec();
        old.lead_id = "Labc".into();
        assert_eq!(read_record(b"Labc", &value).unwrap(), vec![old]);
        assert!(read_record(ROUTED_BATCH_KEY.as_bytes(), b"\xff\xff").is_err());
    }

    #[test]
    fn positions_order_as_offset_then_index() {
        assert!(position(7, MAX_ROUTED_PER_RECORD) < position(8, 0));
        assert!(position(8, 0) < position(8, 1));
        assert_eq!(offset_of(position(1 << 40, 99)), 1 << 40);
        assert!(legacy_position(-1) < position(0, 0));
        assert!(position(41, 0) <= legacy_position(41));
        assert!(legacy_position(41) < position(42, 0));
    }
}
