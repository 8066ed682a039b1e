//! The sink loop: read a batch from events, scores and the DLQ; turn it into
//! rows (undecodable records become dead letters, not crashes); insert
//! every table, retrying with backoff until ClickHouse takes it; only then
//! commit the offsets. Redelivery after a crash or rebalance writes the same
//! rows again, which the ReplacingMergeTree sorting keys collapse.

use std::{sync::Arc, time::Duration};

use leadstream_common::kafka::{LagGauge, collect_batch, commit_processed};

use base64::Engine as _;
use leadstream_schemas::{Decoder, codec::to_json};
use rdkafka::{Message, consumer::StreamConsumer, message::BorrowedMessage};

use crate::{
    metrics::{BATCHES, DEAD_LETTERS, INSERT_RETRIES, INSERT_SECONDS, ROWS},
    rows::{
        DeadLetterRow, EventRow, PipelineMetricRow, ScoreRow, ViolationRow, event_row,
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
}

fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

impl Writer {
    /// One batch end to end; returns the records read. `stop` ends retrying
    /// (the batch is then not committed and will be read again).
    pub async fn step(&self, stop: &tokio::sync::watch::Receiver<bool>) -> anyhow::Result<usize> {
        let messages = collect_batch(&self.consumer, self.batch_rows, self.batch_ms).await?;
        self.lag.maybe_record(&self.consumer);
        if messages.is_empty() {
            return Ok(0);
        }
        let mut batch = Batch::default();
        for m in &messages {
            if let Err(error) = self.to_rows(m, &mut batch).await {
                tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %error, "record kept as a dead letter");
                batch.dead.push(DeadLetterRow {
                    failed_at: now_secs(),
                    topic: m.topic().to_owned(),
                    kafka_partition: m.partition(),
                    kafka_offset: m.offset(),
                    error,
                    raw_base64: base64::engine::general_purpose::STANDARD
                        .encode(m.payload().unwrap_or_default()),
                });
            }
        }
        if !self.insert_with_retry(&batch, stop).await {
            anyhow::bail!("stopped before ClickHouse accepted the batch; it will be read again");
        }
        if let Err(e) = commit_processed(&self.consumer, &messages) {
            tracing::warn!(error = %e, "offset commit failed (rebalance?); the batch may be written again, harmlessly");
        }
        metrics::counter!(BATCHES).increment(1);
        Ok(messages.len())
    }

    async fn to_rows(&self, m: &BorrowedMessage<'_>, batch: &mut Batch) -> Result<(), String> {
        let payload = m.payload().ok_or("record has no value")?;
        if self.kind == Kind::Metrics {
            batch
                .metrics
                .push(pipeline_metric_row(payload).map_err(|e| e.to_string())?);
            return Ok(());
        }
        if self.kind == Kind::Violations {
            batch.violations.push(
                violation_row(payload, m.partition(), m.offset()).map_err(|e| e.to_string())?,
            );
            return Ok(());
        }
        let decoded = self
            .decoder
            .decode(payload)
            .await
            .map_err(|e| e.to_string())?;
        let json = to_json(&decoded.value);
        if self.kind == Kind::Scores {
            batch
                .scores
                .push(score_row(&json).map_err(|e| e.to_string())?);
        } else {
            batch.events.push(
                event_row(&json, decoded.schema.id, m.partition(), m.offset())
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(())
    }

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
            match self.insert(batch).await {
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

    async fn insert(&self, batch: &Batch) -> anyhow::Result<()> {
        self.store.insert("events", &batch.events).await?;
        self.store.insert("lead_scores", &batch.scores).await?;
        self.store
            .insert("lead_score_history", &batch.scores)
            .await?;
        self.store
            .insert("schema_violations", &batch.violations)
            .await?;
        self.store.insert("dead_letters", &batch.dead).await?;
        self.store
            .insert("pipeline_metrics", &batch.metrics)
            .await?;
        Ok(())
    }
}
