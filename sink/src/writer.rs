//! The sink loop: read a batch from events, scores and the DLQ; turn it into
//! rows (undecodable records become dead letters, not crashes); insert
//! every table, retrying with backoff until ClickHouse takes it; only then
//! commit the offsets. Redelivery after a crash or rebalance writes the same
//! rows again, which the ReplacingMergeTree sorting keys collapse.

use std::{sync::Arc, time::Duration};

use leadstream_common::kafka::{LagGauge, collect_batch, commit_offsets, next_offsets};

use base64::Engine as _;
use leadstream_schemas::{Decoder, codec::DecodeError, datum::Datum};
use rdkafka::{Message, consumer::StreamConsumer};

use crate::{
    config::SinkConfig,
    metrics::{BATCHES, CONSUMER_LAG, DEAD_LETTERS, INSERT_RETRIES, INSERT_SECONDS, ROWS},
    rows::{
        DeadLetterRow, EventRow, PipelineMetricRow, RowError, ScoreRow, ViolationRow, event_row,
        pipeline_metric_row, score_row, violation_row,
    },
    store::Store,
};

/// Rows of one batch, by table.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<EventRow>,
    pub scores: Vec<ScoreRow>,
    pub violations: Vec<ViolationRow>,
    pub dead: Vec<DeadLetterRow>,
    pub metrics: Vec<PipelineMetricRow>,
}

impl Batch {
    pub fn rows(&self) -> usize {
        self.events.len()
            + 2 * self.scores.len()
            + self.violations.len()
            + self.dead.len()
            + self.metrics.len()
    }
}

/// What a writer's topic holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Events,
    Scores,
    Violations,
    Metrics,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Events => "events",
            Kind::Scores => "scores",
            Kind::Violations => "violations",
            Kind::Metrics => "metrics",
        }
    }
}

/// One topic's loop. Each topic has its own consumer group
/// (`<group>.<kind>`), so a slow or broken stream never holds up another.
pub struct Writer {
    pub kind: Kind,
    pub consumer: StreamConsumer,
    pub decoder: Arc<Decoder>,
    pub store: Store,
    pub batch_rows: usize,
    pub batch_ms: u64,
    pub max_backoff_ms: u64,
    pub lag: LagGauge,
    in_flight: Option<InFlight>,
}

impl Writer {
    pub fn new(
        kind: Kind,
        consumer: StreamConsumer,
        decoder: Arc<Decoder>,
        store: Store,
        cfg: &SinkConfig,
    ) -> Self {
        Self {
            kind,
            consumer,
            decoder,
            store,
            batch_rows: cfg.batch_rows,
            batch_ms: cfg.batch_ms,
            max_backoff_ms: cfg.max_backoff_ms,
            lag: LagGauge::new(CONSUMER_LAG, ("stream", kind.label())),
            in_flight: None,
        }
    }
}

/// `f` over `items` on every core (scoped threads, one chunk each); in
/// order. Small inputs stay on the calling thread.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const MIN_PER_THREAD: usize = 512;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len() / MIN_PER_THREAD)
        .max(1);
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let f = &f;
            let handles: Vec<_> = items
                .chunks(chunk)
                .map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<R>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("row conversion thread panicked"))
                .collect()
        })
    })
}

fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

impl Writer {
    /// Reads and converts one batch while the previous one is being
    /// inserted; then waits for that insert, commits its offsets, and starts
    /// inserting this batch. Returns the records read. `stop` ends retrying
    /// (a batch not accepted by then is not committed and is read again).
    pub async fn step(
        &mut self,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<usize> {
        let t0 = std::time::Instant::now();
        let messages = collect_batch(&self.consumer, self.batch_rows, self.batch_ms).await?;
        let t_collect = t0.elapsed();
        self.lag.maybe_record(&self.consumer);
        if messages.is_empty() {
            // Quiet stream: commit what is in flight now, not at the next record.
            drop(messages);
            self.finish().await?;
            return Ok(0);
        }
        let as_records: Vec<Record<'_>> = messages
            .iter()
            .map(|m| Record {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
                payload: m.payload(),
            })
            .collect();
        let batch = to_batch(self.kind, &self.decoder, &as_records, now_secs()).await;
        let t_convert = t0.elapsed();
        let offsets = next_offsets(&messages);
        let records = messages.len();
        drop(messages);
        self.finish().await?;
        let t_previous = t0.elapsed();
        let inserter = Inserter {
            store: self.store.clone(),
            kind: self.kind,
            max_backoff_ms: self.max_backoff_ms,
        };
        let stop = stop.clone();
        self.in_flight = Some(InFlight {
            insert: tokio::spawn(async move { inserter.insert_with_retry(&batch, &stop).await }),
            offsets,
        });
        tracing::debug!(
            stream = self.kind.label(),
            records,
            ?t_collect,
            ?t_convert,
            ?t_previous,
            "sink batch"
        );
        Ok(records)
    }

    /// Waits for the batch in flight, if any, and commits its offsets.
    pub async fn finish(&mut self) -> anyhow::Result<()> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(());
        };
        if !in_flight.insert.await.unwrap_or(false) {
            anyhow::bail!("stopped before ClickHouse accepted the batch; it will be read again");
        }
        if let Err(e) = commit_offsets(&self.consumer, &in_flight.offsets) {
            tracing::warn!(error = %e, "offset commit failed (rebalance?); the batch may be written again, harmlessly");
        }
        metrics::counter!(BATCHES).increment(1);
        Ok(())
    }
}

/// One Kafka record as the conversion sees it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub payload: Option<&'a [u8]>,
}

/// The rows of one batch of `kind` records: the pure stage of the sink.
/// A record that does not decode or map becomes a dead letter (stamped
/// `now_secs`) with the raw bytes and why.
pub async fn to_batch(
    kind: Kind,
    decoder: &Decoder,
    records: &[Record<'_>],
    now_secs: u32,
) -> Batch {
    let mut batch = Batch::default();
    let failed = match kind {
        Kind::Events => {
            let (rows, failed) =
                decoded_rows(decoder, records, |id, d, p, o| event_row(d, id, p, o)).await;
            batch.events = rows;
            failed
        }
        Kind::Scores => {
            let (rows, failed) = decoded_rows(decoder, records, |_, d, _, _| score_row(d)).await;
            batch.scores = rows;
            failed
        }
        Kind::Violations | Kind::Metrics => {
            let mut failed = Vec::new();
            for (i, r) in records.iter().enumerate() {
                if let Err(error) = json_rows(kind, r, &mut batch) {
                    failed.push((i, error));
                }
            }
            failed
        }
    };
    for (i, error) in failed {
        let r = &records[i];
        tracing::warn!(topic = r.topic, partition = r.partition, offset = r.offset, %error, "record kept as a dead letter");
        batch.dead.push(DeadLetterRow {
            failed_at: now_secs,
            topic: r.topic.to_owned(),
            kafka_partition: r.partition,
            kafka_offset: r.offset,
            error,
            raw_base64: base64::engine::general_purpose::STANDARD
                .encode(r.payload.unwrap_or_default()),
        });
    }
    batch
}

/// Avro records (events, scores: the bulk of the data) are decoded on
/// every core: those whose writer schema is already fetched in parallel,
/// the rest (the first of each new schema) one by one. Returns the rows and
/// the records that failed, by index, with why.
async fn decoded_rows<R: Send>(
    decoder: &Decoder,
    records: &[Record<'_>],
    to_row: impl Fn(u32, &Datum<'_>, i32, i64) -> Result<R, RowError> + Sync,
) -> (Vec<R>, Vec<(usize, String)>) {
    let converted = parallel_map(records, |r| {
        let Some(bytes) = r.payload else {
            return Some(Err("record has no value".to_owned()));
        };
        let converted =
            decoder.visit_cached(bytes, |id, d| to_row(id, d, r.partition, r.offset))?;
        Some(flatten(converted))
    });
    let mut rows = Vec::with_capacity(records.len());
    let mut failed = Vec::new();
    for (i, result) in converted.into_iter().enumerate() {
        let result = match result {
            Some(r) => r,
            None => {
                let r = records[i];
                let bytes = r.payload.unwrap_or_default();
                flatten(
                    decoder
                        .visit(bytes, |id, d| to_row(id, d, r.partition, r.offset))
                        .await,
                )
            }
        };
        match result {
            Ok(row) => rows.push(row),
            Err(e) => failed.push((i, e)),
        }
    }
    (rows, failed)
}

/// DLQ and metric records are JSON.
fn json_rows(kind: Kind, r: &Record<'_>, batch: &mut Batch) -> Result<(), String> {
    let payload = r.payload.ok_or("record has no value")?;
    if kind == Kind::Metrics {
        batch
            .metrics
            .push(pipeline_metric_row(payload).map_err(|e| e.to_string())?);
    } else {
        batch
            .violations
            .push(violation_row(payload, r.partition, r.offset).map_err(|e| e.to_string())?);
    }
    Ok(())
}

/// A record's outcome, with why it failed as text for the dead-letter row.
fn flatten<R>(r: Result<Result<R, RowError>, DecodeError>) -> Result<R, String> {
    match r {
        Ok(Ok(row)) => Ok(row),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// A batch being inserted while the next one is read: its insert task and
/// the offsets to commit once ClickHouse has it.
struct InFlight {
    insert: tokio::task::JoinHandle<bool>,
    offsets: Vec<(String, i32, i64)>,
}

/// What inserting needs, owned, so an insert runs as its own task.
struct Inserter {
    store: Store,
    kind: Kind,
    max_backoff_ms: u64,
}

impl Inserter {
    /// Inserts every table; on failure waits (doubling up to the maximum)
    /// and inserts everything again. False when stopped first.
    async fn insert_with_retry(
        &self,
        batch: &Batch,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            match write_batch(&self.store, batch).await {
                Ok(()) => {
                    metrics::histogram!(INSERT_SECONDS).record(started.elapsed().as_secs_f64());
                    for (table, n) in [
                        ("events", batch.events.len()),
                        ("lead_scores", batch.scores.len()),
                        ("schema_violations", batch.violations.len()),
                        ("dead_letters", batch.dead.len()),
                        ("pipeline_metrics", batch.metrics.len()),
                    ] {
                        metrics::counter!(ROWS, "table" => table).increment(n as u64);
                    }
                    metrics::counter!(DEAD_LETTERS).increment(batch.dead.len() as u64);
                    return true;
                }
                Err(e) => {
                    metrics::counter!(INSERT_RETRIES).increment(1);
                    tracing::warn!(error = %format!("{e:#}"), stream = self.kind.label(), rows = batch.rows(), retry_in_ms = backoff.as_millis() as u64, "insert failed; retrying (offsets not committed)");
                    let mut stop = stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => return false,
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
    store.insert("events", &batch.events).await?;
    store.insert("lead_scores", &batch.scores).await?;
    store.insert("lead_score_history", &batch.scores).await?;
    store.insert("schema_violations", &batch.violations).await?;
    store.insert("dead_letters", &batch.dead).await?;
    store.insert("pipeline_metrics", &batch.metrics).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_map_keeps_the_input_order() {
        let items: Vec<u64> = (0..10_007).collect();
        let out = parallel_map(&items, |x| x * 3 + 1);
        assert_eq!(out, items.iter().map(|x| x * 3 + 1).collect::<Vec<_>>());
        // Small inputs take the single-thread path; empty ones too.
        assert_eq!(parallel_map(&items[..3], |x| *x), vec![0, 1, 2]);
        assert!(parallel_map(&[] as &[u64], |x| *x).is_empty());
    }
}
