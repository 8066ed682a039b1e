//! The changelog: each changed lead's snapshot (or a tombstone once it
//! expired) and the partition's stream time, written after every batch and
//! read back on restore.

use std::collections::BTreeMap;

use prost::Message;

use super::Processor;
use crate::{
    lead::{Lead, SnapshotError},
    proto::{self, LeadSnapshot},
};

/// Changelog key holding a partition's stream time.
pub const STREAM_TIME_KEY: &str = "\u{0}stream_time";

/// A changelog record: the key and the encoded value, `None` for a tombstone.
pub type ChangelogRecord = (String, Option<Vec<u8>>);

impl Processor {
    /// Restores one changelog record of `partition` (latest wins; a
    /// tombstone, `None`, removes the lead).
    pub fn restore(
        &mut self,
        partition: i32,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), RestoreError> {
        let part = self.partitions.entry(partition).or_default();
        if key == STREAM_TIME_KEY {
            let value = value.unwrap_or_default();
            let t = proto::StreamTime::decode(value)
                .map_err(|e| RestoreError::Decode(e.to_string()))?;
            part.stream_time_ms = part.stream_time_ms.max(t.ms);
            part.watermark_ms = part.watermark_ms.max(t.watermark_ms);
            return Ok(());
        }
        let Some(value) = value else {
            // A tombstone: the lead expired.
            part.leads.remove(key);
            return Ok(());
        };
        let snap = LeadSnapshot::decode(value).map_err(|e| RestoreError::Decode(e.to_string()))?;
        part.leads
            .insert(key.to_owned(), Box::new(Lead::from_snapshot(snap)?));
        part.schedule_built_with_model = None;
        Ok(())
    }

    /// Changelog records (key, encoded value; `None` for a tombstone) for
    /// what changed since the last call, per partition.
    pub fn take_changelog(&mut self) -> BTreeMap<i32, Vec<ChangelogRecord>> {
        let mut out = BTreeMap::new();
        for (&p, part) in &mut self.partitions {
            // An expired lead that came back in the meantime is dirty and
            // gets its new snapshot instead.
            let mut records: Vec<ChangelogRecord> = std::mem::take(&mut part.expired)
                .into_iter()
                .filter(|k| !part.leads.contains_key(k))
                .map(|k| (k, None))
                .collect();
            records.extend(std::mem::take(&mut part.dirty).into_iter().filter_map(|k| {
                // A lead that expired and came back within the batch is
                // listed twice; its flag lets only the first through.
                let lead = part.leads.get_mut(&k).filter(|l| l.dirty)?;
                lead.dirty = false;
                Some((k, Some(lead.to_snapshot().encode_to_vec())))
            }));
            if std::mem::take(&mut part.stream_time_dirty) {
                let t = proto::StreamTime {
                    ms: part.stream_time_ms,
                    watermark_ms: part.watermark_ms,
                };
                records.push((STREAM_TIME_KEY.to_owned(), Some(t.encode_to_vec())));
            }
            if !records.is_empty() {
                out.insert(p, records);
            }
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("changelog record does not decode: {0}")]
    Decode(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}
