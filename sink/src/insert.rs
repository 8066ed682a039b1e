//! Inserting a batch: every table, retried with backoff through outages;
//! and when ClickHouse refuses rows for their data
//! ([`crate::rejection`]), writing the batch in halves down to those rows,
//! which become dead letters with its reason.

use std::time::Duration;

use leadstream_schemas::Decoder;

use crate::{
    encode::{Buffers, encode_all},
    metrics::{DEAD_LETTERS, INSERT_RETRIES, INSERT_SECONDS, REJECTED_ROWS, ROWS},
    rejection::rejection,
    store::Store,
    writer::{Batch, KafkaRecord, Kind, dead_letter, now_secs, to_batch},
};

/// How many times a batch is refused for its data before it is written in
/// halves: a refusal could be a passing server fault that only looks like one.
pub const REJECTIONS_BEFORE_ISOLATING: u32 = 3;

/// What became of a batch's insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    Written,
    /// Stopped before ClickHouse took it.
    Stopped,
    /// ClickHouse refuses its data (its reason).
    Rejected(String),
}

/// What inserting needs, owned, so an insert runs as its own task.
pub struct Inserter {
    pub store: Store,
    pub kind: Kind,
    pub max_backoff_ms: u64,
}

impl Inserter {
    /// Inserts every table; on failure waits (doubling up to the maximum)
    /// and inserts everything again, until written, stopped, or refused for
    /// its data `give_up_after` times in a row (0: never give up).
    pub async fn insert_with_retry(
        &self,
        batch: &Batch,
        stop: &tokio::sync::watch::Receiver<bool>,
        give_up_after: u32,
    ) -> Inserted {
        let mut backoff = Duration::from_millis(100);
        let mut refusals = 0;
        loop {
            let started = std::time::Instant::now();
            match write_batch(&self.store, batch).await {
                Ok(()) => {
                    let took = started.elapsed();
                    tracing::debug!(
                        stream = self.kind.label(),
                        rows = batch.rows(),
                        ?took,
                        "sink insert"
                    );
                    metrics::histogram!(INSERT_SECONDS).record(took.as_secs_f64());
                    for (table, rows) in batch.tables() {
                        metrics::counter!(ROWS, "table" => table).increment(rows.rows as u64);
                    }
                    metrics::counter!(DEAD_LETTERS).increment(batch.dead.rows as u64);
                    return Inserted::Written;
                }
                Err(e) => {
                    if let Some(reason) = rejection(&e) {
                        refusals += 1;
                        if refusals == give_up_after {
                            return Inserted::Rejected(reason);
                        }
                    } else {
                        refusals = 0;
                    }
                    metrics::counter!(INSERT_RETRIES).increment(1);
                    tracing::warn!(error = %format!("{e:#}"), stream = self.kind.label(), rows = batch.rows(), retry_in_ms = backoff.as_millis() as u64, "insert failed; retrying (offsets not committed)");
                    let mut stop = stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => return Inserted::Stopped,
                    }
                    backoff = (backoff * 2).min(Duration::from_millis(self.max_backoff_ms));
                }
            }
        }
    }
}

/// Writes every table of `batch`. Not atomic across tables: a retry after
/// a partial write inserts the same rows again, which the tables' dedupe
/// keys collapse.
pub async fn write_batch(store: &Store, batch: &Batch) -> anyhow::Result<()> {
    for (table, rows) in batch.tables() {
        store.insert(table, rows).await?;
    }
    Ok(())
}

/// Writes `records` in parts, halving every part ClickHouse refuses for its
/// data, so every row it takes is written and each row it refuses becomes a
/// dead letter with its reason. Outages are retried as usual; Err only when
/// stopped.
pub async fn isolate(
    inserter: &Inserter,
    decoder: &Decoder,
    buffers: &Buffers,
    records: &[KafkaRecord<'_>],
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<usize> {
    let format = inserter.store.format();
    let mut parts = Vec::new();
    parts.push(0..records.len());
    let mut refused = Vec::new();
    while let Some(part) = parts.pop() {
        let now = now_secs();
        let batch = to_batch(
            inserter.kind,
            decoder,
            &records[part.clone()],
            now,
            format,
            buffers,
        )
        .await;
        let outcome = inserter.insert_with_retry(&batch, stop, 1).await;
        batch.recycle(buffers);
        match outcome {
            Inserted::Written => {}
            Inserted::Stopped => anyhow::bail!(
                "stopped while setting refused rows aside; the batch will be read again"
            ),
            Inserted::Rejected(reason) if part.len() == 1 => {
                let r = &records[part.start];
                tracing::warn!(topic = r.topic, partition = r.partition, offset = r.offset, %reason, "ClickHouse refuses the row; kept as a dead letter");
                refused.push(dead_letter(
                    r,
                    format!("ClickHouse refused the row: {reason}"),
                    now,
                ));
            }
            Inserted::Rejected(_) => {
                let mid = part.start + part.len() / 2;
                // Popped first half first: rows keep their order.
                parts.push(mid..part.end);
                parts.push(part.start..mid);
            }
        }
    }
    if refused.is_empty() {
        return Ok(0);
    }
    metrics::counter!(REJECTED_ROWS).increment(refused.len() as u64);
    let batch = Batch {
        dead: encode_all(format, &refused).expect("dead-letter rows always encode"),
        ..Batch::default()
    };
    // Dead letters are never set aside themselves: retried until written.
    match inserter.insert_with_retry(&batch, stop, 0).await {
        Inserted::Written => Ok(refused.len()),
        _ => {
            anyhow::bail!("stopped before the refused rows were kept; the batch will be read again")
        }
    }
}
