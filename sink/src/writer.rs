//! The sink loop: read a batch from events, scores and the DLQ; turn it into
//! rows (undecodable records become dead letters, not crashes); insert
//! every table, retrying with backoff until ClickHouse takes it; only then
//! commit the offsets. Redelivery after a crash or rebalance writes the same
//! rows again, which the ReplacingMergeTree sorting keys collapse.
//!
//! A batch that fails for any other reason (the insert task died, a stop)
//! is never skipped: the consumer goes back to its committed offsets. A
//! batch ClickHouse refuses for the rows' sake ([`crate::insert::isolate`]) is
//! read again and written in halves, down to the rows it refuses, which
//! become dead letters with ClickHouse's reason while the stream moves on.

use std::sync::Arc;

use leadstream_common::kafka::{BatchStage, Offsets, next_offsets};

use base64::Engine as _;
use leadstream_schemas::{Decoder, codec::DecodeError, datum::Datum};
use rdkafka::{
    Message,
    consumer::{Consumer as _, DefaultConsumerContext, StreamConsumer},
    message::BorrowedMessage,
};
use tokio::sync::watch;

use crate::{
    config::SinkConfig,
    encode::{Buffers, EncodedRows, Format, RowEncoder, encode_all},
    insert::{Inserted, Inserter, REJECTIONS_BEFORE_ISOLATING, isolate},
    metrics::BATCHES,
    rows::{
        DeadLetterRow, EventRow, RowError, ScoreRow, fill_event_row, pipeline_metric_row,
        score_row, violation_row,
    },
    store::Store,
};

/// Rows of one batch, encoded for the store, by table.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: EncodedRows,
    /// Written to both `lead_scores` and `lead_score_history`.
    pub scores: EncodedRows,
    pub violations: EncodedRows,
    pub dead: EncodedRows,
    pub metrics: EncodedRows,
}

impl Batch {
    /// Each table and its rows, in the order they are written.
    pub fn tables(&self) -> [(&'static str, &EncodedRows); 6] {
        [
            ("events", &self.events),
            ("lead_scores", &self.scores),
            ("lead_score_history", &self.scores),
            ("schema_violations", &self.violations),
            ("dead_letters", &self.dead),
            ("pipeline_metrics", &self.metrics),
        ]
    }

    pub fn rows(&self) -> usize {
        self.tables().iter().map(|(_, rows)| rows.rows).sum()
    }

    /// Returns the batch's buffers to `pool` once it is written.
    pub fn recycle(self, pool: &Buffers) {
        let Batch {
            events,
            scores,
            violations,
            dead,
            metrics,
        } = self;
        for rows in [events, scores, violations, dead, metrics] {
            pool.give_back(rows);
        }
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
    pub decoder: Arc<Decoder>,
    pub store: Store,
    pub max_backoff_ms: u64,
    /// Ends retrying an insert (a batch not accepted by then is not
    /// committed and is read again).
    stop: watch::Receiver<bool>,
    buffers: Buffers,
    in_flight: Option<InFlight>,
    /// After a rejected batch: the offsets up to which batches are written
    /// in halves until the rows ClickHouse refuses are found.
    isolating: Option<Vec<(String, i32, i64)>>,
}

impl Writer {
    pub fn new(
        kind: Kind,
        decoder: Arc<Decoder>,
        store: Store,
        cfg: &SinkConfig,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            kind,
            decoder,
            store,
            max_backoff_ms: cfg.max_backoff_ms,
            stop,
            buffers: Buffers::default(),
            in_flight: None,
            isolating: None,
        }
    }
}

/// `f` over contiguous chunks of `items` on every core (scoped threads, one
/// chunk each), with each chunk's first index; results in order. Small
/// inputs stay on the calling thread.
fn parallel_chunks<T: Sync, R: Send>(items: &[T], f: impl Fn(usize, &[T]) -> R + Sync) -> Vec<R> {
    const MIN_PER_THREAD: usize = 512;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len() / MIN_PER_THREAD)
        .max(1);
    if threads == 1 {
        return vec![f(0, items)];
    }
    let chunk = items.len().div_ceil(threads);
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let f = &f;
            let handles: Vec<_> = items
                .chunks(chunk)
                .enumerate()
                .map(|(i, c)| s.spawn(move || f(i * chunk, c)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("row conversion thread panicked"))
                .collect()
        })
    })
}

pub(crate) fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

impl BatchStage for Writer {
    type Context = DefaultConsumerContext;

    /// Converts this batch while the previous one is being inserted; then
    /// waits for that insert and starts inserting this batch. Returns the
    /// previous batch's offsets once ClickHouse has it.
    async fn process(
        &mut self,
        consumer: &StreamConsumer,
        messages: &[BorrowedMessage<'_>],
    ) -> anyhow::Result<Offsets> {
        let t0 = std::time::Instant::now();
        if messages.is_empty() {
            // Quiet stream: commit what is in flight now, not at the next record.
            return self.finish().await;
        }
        if self.isolating.is_some() {
            // Read again after a rejection: written in halves down to the
            // rows ClickHouse refuses, then committed.
            let offsets = next_offsets(messages);
            let records = records_of(messages);
            isolate(
                &self.inserter(),
                &self.decoder,
                &self.buffers,
                &records,
                &self.stop,
            )
            .await?;
            self.end_isolating(consumer, &offsets);
            metrics::counter!(BATCHES).increment(1);
            return Ok(offsets);
        }
        let as_records = records_of(messages);
        let format = self.store.format();
        let batch = to_batch(
            self.kind,
            &self.decoder,
            &as_records,
            now_secs(),
            format,
            &self.buffers,
        )
        .await;
        let t_convert = t0.elapsed();
        let offsets = next_offsets(messages);
        drop(as_records);
        let durable = self.finish().await?;
        let t_previous = t0.elapsed();
        let inserter = self.inserter();
        let stop = self.stop.clone();
        self.in_flight = Some(InFlight {
            insert: tokio::spawn(async move {
                let outcome = inserter
                    .insert_with_retry(&batch, &stop, REJECTIONS_BEFORE_ISOLATING)
                    .await;
                (outcome, batch)
            }),
            offsets,
        });
        tracing::debug!(
            stream = self.kind.label(),
            records = messages.len(),
            ?t_convert,
            ?t_previous,
            "sink batch"
        );
        Ok(durable)
    }

    /// The last batch: committed if ClickHouse took it before the stop.
    async fn drain(&mut self) -> anyhow::Result<Offsets> {
        self.finish().await
    }
}

impl Writer {
    fn inserter(&self) -> Inserter {
        Inserter {
            store: self.store.clone(),
            kind: self.kind,
            max_backoff_ms: self.max_backoff_ms,
        }
    }

    /// After a batch written by [`isolate`]: isolating ends once every
    /// partition of the rejected batch is past it (or no longer ours).
    fn end_isolating(&mut self, consumer: &StreamConsumer, offsets: &[(String, i32, i64)]) {
        let assigned = consumer.assignment().ok();
        self.isolating = self.isolating.take().and_then(|targets| {
            let left: Vec<_> = targets
                .into_iter()
                .filter(|(topic, partition, target)| {
                    let ours = assigned
                        .as_ref()
                        .is_none_or(|a| a.find_partition(topic, *partition).is_some());
                    let reached = offsets
                        .iter()
                        .any(|(t, p, o)| t == topic && p == partition && o >= target);
                    ours && !reached
                })
                .collect();
            (!left.is_empty()).then_some(left)
        });
    }

    /// Waits for the batch in flight, if any; returns its offsets once
    /// ClickHouse has it. Fails when it does not (the driver then reads
    /// everything since the last commit again).
    pub async fn finish(&mut self) -> anyhow::Result<Offsets> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(Vec::new());
        };
        let outcome = match in_flight.insert.await {
            Ok((outcome, batch)) => {
                batch.recycle(&self.buffers);
                outcome
            }
            Err(e) => anyhow::bail!("the insert task failed ({e}); the batch will be read again"),
        };
        match outcome {
            Inserted::Written => {}
            Inserted::Stopped => {
                anyhow::bail!("stopped before ClickHouse accepted the batch; it will be read again")
            }
            Inserted::Rejected(reason) => {
                self.isolating = Some(in_flight.offsets);
                anyhow::bail!(
                    "ClickHouse refuses rows of this batch ({reason}); reading it again to set those rows aside as dead letters"
                )
            }
        }
        metrics::counter!(BATCHES).increment(1);
        Ok(in_flight.offsets)
    }
}

/// The conversion's view of `messages`.
fn records_of<'a>(messages: &'a [BorrowedMessage<'_>]) -> Vec<KafkaRecord<'a>> {
    messages
        .iter()
        .map(|m| KafkaRecord {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            payload: m.payload(),
        })
        .collect()
}

/// One Kafka record as the conversion sees it.
#[derive(Debug, Clone, Copy)]
pub struct KafkaRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub payload: Option<&'a [u8]>,
}

/// The rows of one batch of `kind` records, encoded in `format` into
/// buffers from `pool`: the pure stage of the sink. A record that does not
/// decode, map or encode becomes a dead letter (stamped `now_secs`) with
/// the raw bytes and why.
pub async fn to_batch(
    kind: Kind,
    decoder: &Decoder,
    records: &[KafkaRecord<'_>],
    now_secs: u32,
    format: Format,
    pool: &Buffers,
) -> Batch {
    let mut batch = Batch::default();
    let failed = match kind {
        Kind::Events => {
            let (rows, failed) = decoded_rows(
                decoder,
                records,
                format,
                pool,
                |row: &mut EventRow, id, d, p, o| fill_event_row(row, d, id, p, o),
            )
            .await;
            batch.events = rows;
            failed
        }
        Kind::Scores => {
            let (rows, failed) = decoded_rows(
                decoder,
                records,
                format,
                pool,
                |row: &mut ScoreRow, _, d, _, _| {
                    *row = score_row(d)?;
                    Ok(())
                },
            )
            .await;
            batch.scores = rows;
            failed
        }
        Kind::Violations | Kind::Metrics => {
            let mut out = RowEncoder::new(format, 0);
            let mut failed = Vec::new();
            for (i, r) in records.iter().enumerate() {
                if let Err(error) = json_row(kind, r, &mut out) {
                    failed.push((i, error));
                }
            }
            match kind {
                Kind::Metrics => batch.metrics = out.finish(),
                _ => batch.violations = out.finish(),
            }
            failed
        }
    };
    let dead: Vec<DeadLetterRow> = failed
        .into_iter()
        .map(|(i, error)| {
            let r = &records[i];
            tracing::warn!(topic = r.topic, partition = r.partition, offset = r.offset, %error, "record kept as a dead letter");
            dead_letter(r, error, now_secs)
        })
        .collect();
    // A plain struct of strings and integers: encodable in every format
    // (the unit tests encode one), so a failure here is a bug, not data.
    batch.dead = encode_all(format, &dead).expect("dead-letter rows always encode");
    batch
}

/// A record kept, raw, with why it could not be written.
pub(crate) fn dead_letter(r: &KafkaRecord<'_>, error: String, now_secs: u32) -> DeadLetterRow {
    DeadLetterRow {
        failed_at: now_secs,
        topic: r.topic.to_owned(),
        kafka_partition: r.partition,
        kafka_offset: r.offset,
        error,
        raw_base64: base64::engine::general_purpose::STANDARD.encode(r.payload.unwrap_or_default()),
    }
}

/// What one conversion thread made of its chunk of records.
#[derive(Default)]
struct Converted {
    rows: EncodedRows,
    /// Records that failed, by index into the batch, with why.
    failed: Vec<(usize, String)>,
    /// Records whose writer schema is not fetched yet, by index.
    uncached: Vec<usize>,
}

/// Avro records (events, scores: the bulk of the data) are decoded, mapped
/// and encoded on every core, each thread filling one reused row: those
/// whose writer schema is already fetched in parallel, the rest (the first
/// of each new schema) one by one. Returns the rows and the records that
/// failed, by index, with why.
async fn decoded_rows<R: Default + serde::Serialize + Send>(
    decoder: &Decoder,
    records: &[KafkaRecord<'_>],
    format: Format,
    pool: &Buffers,
    fill: impl Fn(&mut R, u32, &Datum<'_>, i32, i64) -> Result<(), RowError> + Sync,
) -> (EncodedRows, Vec<(usize, String)>) {
    let chunks = parallel_chunks(records, |start, chunk| {
        let mut out = Converted::default();
        let mut row = R::default();
        // Rows run larger than their Avro (JSON text, flattened columns).
        let guess = chunk
            .iter()
            .map(|r| r.payload.map_or(0, <[u8]>::len))
            .sum::<usize>()
            * 3;
        let mut encoder = RowEncoder::with_buffer(format, pool.take(guess));
        for (j, r) in chunk.iter().enumerate() {
            let Some(bytes) = r.payload else {
                out.failed
                    .push((start + j, "record has no value".to_owned()));
                continue;
            };
            let Some(filled) =
                decoder.visit_cached(bytes, |id, d| fill(&mut row, id, d, r.partition, r.offset))
            else {
                out.uncached.push(start + j);
                continue;
            };
            if let Err(e) = flatten(filled).and_then(|()| encode(&mut encoder, &row)) {
                out.failed.push((start + j, e));
            }
        }
        out.rows = encoder.finish();
        out
    });
    let mut rows = EncodedRows::default();
    let mut failed = Vec::new();
    let mut uncached = Vec::new();
    for c in chunks {
        append(&mut rows, c.rows);
        failed.extend(c.failed);
        uncached.extend(c.uncached);
    }
    let mut row = R::default();
    let mut encoder = RowEncoder::new(format, 0);
    for i in uncached {
        let r = records[i];
        let bytes = r.payload.unwrap_or_default();
        let filled = decoder
            .visit(bytes, |id, d| fill(&mut row, id, d, r.partition, r.offset))
            .await;
        if let Err(e) = flatten(filled).and_then(|()| encode(&mut encoder, &row)) {
            failed.push((i, e));
        }
    }
    append(&mut rows, encoder.finish());
    (rows, failed)
}

fn encode<R: serde::Serialize>(encoder: &mut RowEncoder, row: &R) -> Result<(), String> {
    encoder.push(row).map_err(|e| e.to_string())
}

/// Chunks of one row type always have the same columns.
fn append(all: &mut EncodedRows, more: EncodedRows) {
    all.append(more)
        .expect("every chunk of a table encodes the same row type");
}

/// DLQ and metric records are JSON.
fn json_row(kind: Kind, r: &KafkaRecord<'_>, out: &mut RowEncoder) -> Result<(), String> {
    let payload = r.payload.ok_or("record has no value")?;
    if kind == Kind::Metrics {
        encode(
            out,
            &pipeline_metric_row(payload).map_err(|e| e.to_string())?,
        )
    } else {
        encode(
            out,
            &violation_row(payload, r.partition, r.offset).map_err(|e| e.to_string())?,
        )
    }
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
    /// What became of the insert, and the batch (for its buffers).
    insert: tokio::task::JoinHandle<(Inserted, Batch)>,
    offsets: Vec<(String, i32, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use leadstream_common::kafka::{
        Batching, LagGauge, StageDriver, TopicSpec, consumer_config, ensure_topics, producer_config,
    };
    use rdkafka::producer::{FutureProducer, FutureRecord};

    fn tripled(start: usize, chunk: &[u64]) -> Vec<(usize, u64)> {
        chunk
            .iter()
            .enumerate()
            .map(|(j, x)| (start + j, x * 3))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_chunks_keep_the_input_order_and_indices() {
        let items: Vec<u64> = (0..10_007).collect();
        let out: Vec<_> = parallel_chunks(&items, tripled).concat();
        let want: Vec<_> = items.iter().map(|&x| (x as usize, x * 3)).collect();
        assert_eq!(out, want);
        // Small inputs take the single-thread path; empty ones too.
        assert_eq!(
            parallel_chunks(&items[..3], tripled).concat(),
            [(0, 0), (1, 3), (2, 6)]
        );
        assert!(parallel_chunks(&[] as &[u64], tripled).concat().is_empty());
    }

    /// A step that fails after reading a batch (here: the previous batch's
    /// insert task died) must not let a later commit skip either batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_step_reads_everything_since_the_last_commit_again() {
        let bootstrap = std::env::var("LEADSTREAM_TEST_KAFKA").expect(
            "LEADSTREAM_TEST_KAFKA is not set: run `bash deploy/test.sh`, or `deploy/scripts/services.sh start` and export what it prints",
        );
        let topic = format!("sink_rewind_{}", std::process::id());
        let spec = TopicSpec {
            name: topic.clone(),
            partitions: 1,
            replication: 1,
            compacted: false,
        };
        ensure_topics(&bootstrap, &[spec]).await.unwrap();
        // Not Avro: every record becomes a dead-letter row naming its offset.
        let producer: FutureProducer = producer_config(&bootstrap, 20).create().unwrap();
        let sends: Vec<_> = (0..300)
            .map(|i| {
                let payload = format!("record {i}");
                let record = FutureRecord::<(), _>::to(&topic).payload(&payload);
                producer.send_result(record).map_err(|(e, _)| e).unwrap()
            })
            .collect();
        for send in sends {
            send.await.unwrap().map_err(|(e, _)| e).unwrap();
        }

        let export = tempfile::tempdir().unwrap();
        let cfg = SinkConfig::defaults(&bootstrap);
        let consumer: StreamConsumer = consumer_config(&bootstrap, &format!("{topic}-sink"))
            .create()
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let resolver = leadstream_schemas::EmbeddedResolver::new(
            &leadstream_schemas::Plan::embedded().unwrap(),
        )
        .unwrap();
        let decoder = Arc::new(Decoder::new(Arc::new(resolver)));
        let store = Store::Export(export.path().to_owned());
        let (_stop_tx, mut stop) = tokio::sync::watch::channel(false);
        let writer = Writer::new(Kind::Violations, decoder, store, &cfg, stop.clone());
        let batching = Batching {
            max: 40,
            max_bytes: usize::MAX,
            wait_ms: 200,
            close_when_drained: false,
        };
        let lag = LagGauge::new("test_lag", ("stream", "test"));
        let mut driver = StageDriver::new("sink.test", consumer, writer, batching, lag);
        driver.retry_after = std::time::Duration::from_millis(10);

        let mut read = 0;
        while read == 0 {
            read = driver.step_or_rewind(&mut stop).await.unwrap();
        }
        // The insert of the batch just read dies.
        driver.stage.in_flight.as_mut().unwrap().insert =
            tokio::spawn(async { panic!("injected") });
        let failed = driver.step_or_rewind(&mut stop).await;
        assert!(failed.is_err(), "the dead insert must fail the step");
        let mut quiet = 0;
        while quiet < 3 {
            match driver.step_or_rewind(&mut stop).await {
                Ok(0) => quiet += 1,
                Ok(_) => quiet = 0,
                Err(e) => panic!("{e:#}"),
            }
        }
        driver.stage.drain().await.unwrap();

        let rows = std::fs::read_to_string(export.path().join("dead_letters.jsonl")).unwrap();
        let mut offsets: Vec<i64> = rows
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["kafka_offset"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(
            offsets,
            (0..300).collect::<Vec<i64>>(),
            "every record written"
        );
    }
}
