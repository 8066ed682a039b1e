//! The batch-stage driver. Every consuming stage (the scorer's stitcher
//! and scoring loop, the sink's writers) runs the same sequence: collect a
//! batch, sample the lag, process it into outputs, commit the offsets whose
//! outputs are durable; after a failure, forget partial state and read
//! again from the last commit. The stage supplies only the processing.

use std::{future::Future, time::Duration};

use anyhow::Context as _;
use rdkafka::{
    consumer::{ConsumerContext, StreamConsumer},
    message::BorrowedMessage,
};
use tokio::sync::watch;

use super::{LagGauge, collect_batch, commit_offsets, rewind_to_committed};

/// (topic, partition, next offset) entries to commit.
pub type Offsets = Vec<(String, i32, i64)>;

/// One consuming stage: what it does with a batch.
pub trait BatchStage: Send {
    type Context: ConsumerContext + 'static;

    /// Processes one batch, empty when the window passed with nothing read
    /// (time still moves). Returns the offsets whose outputs are durable
    /// now, for the driver to commit: this batch's ([`super::next_offsets`])
    /// for a stage that waits for its outputs, an earlier batch's for one
    /// that writes while it reads the next.
    fn process(
        &mut self,
        consumer: &StreamConsumer<Self::Context>,
        batch: &[BorrowedMessage<'_>],
    ) -> impl Future<Output = anyhow::Result<Offsets>> + Send;

    /// After a failed step, before the consumer goes back to its committed
    /// offsets: drop whatever may hold part of the failed batch.
    fn forget(&mut self, _consumer: &StreamConsumer<Self::Context>) {}

    /// At stop: finish work in flight; returns the offsets it made durable.
    fn drain(&mut self) -> impl Future<Output = anyhow::Result<Offsets>> + Send {
        async { Ok(Vec::new()) }
    }
}

/// How a batch closes: at `max` records, at `max_bytes` of keys and
/// payloads (a record may carry many events: the scorer's `by_lead` batch
/// records), or after `wait_ms`, and with
/// `close_when_drained` also once it holds records and nothing more is
/// fetched (latency-bound stages; a sink writing to ClickHouse wants the
/// window, for fewer, larger inserts).
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max: usize,
    pub max_bytes: usize,
    pub wait_ms: u64,
    pub close_when_drained: bool,
}

/// Runs a [`BatchStage`] on its consumer.
pub struct StageDriver<S: BatchStage> {
    /// For logs: "stitch", "score", "sink.events".
    pub name: String,
    pub consumer: StreamConsumer<S::Context>,
    pub stage: S,
    pub batching: Batching,
    pub lag: LagGauge,
    /// Pause after a failed step before reading again.
    pub retry_after: Duration,
}

impl<S: BatchStage> StageDriver<S> {
    pub fn new(
        name: impl Into<String>,
        consumer: StreamConsumer<S::Context>,
        stage: S,
        batching: Batching,
        lag: LagGauge,
    ) -> Self {
        Self {
            name: name.into(),
            consumer,
            stage,
            batching,
            lag,
            retry_after: Duration::from_millis(500),
        }
    }

    /// One batch: read, process, commit what is durable. Returns the
    /// records read.
    pub async fn step(&mut self) -> anyhow::Result<usize> {
        let Batching {
            max,
            max_bytes,
            wait_ms,
            close_when_drained,
        } = self.batching;
        let started = std::time::Instant::now();
        let batch = collect_batch(
            &self.consumer,
            (max, max_bytes),
            wait_ms,
            close_when_drained,
        )
        .await
        .context("reading from Kafka")?;
        let collected = started.elapsed();
        self.lag.maybe_record(&self.consumer);
        let durable = self.stage.process(&self.consumer, &batch).await?;
        let processed = started.elapsed();
        let read = batch.len();
        drop(batch);
        self.commit(&durable);
        tracing::debug!(stage = %self.name, records = read, ?collected, ?processed, total = ?started.elapsed(), "batch");
        Ok(read)
    }

    /// [`StageDriver::step`]; after a failure the stage forgets partial
    /// state and the consumer goes back to its committed offsets (retried,
    /// `retry_after` apart, until the broker answers or `stop`), so nothing
    /// after the last commit is skipped. The failure is returned.
    pub async fn step_or_rewind(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<usize> {
        let failure = match self.step().await {
            Ok(read) => return Ok(read),
            Err(e) => e,
        };
        self.stage.forget(&self.consumer);
        loop {
            let _ = tokio::time::timeout(self.retry_after, stop.wait_for(|s| *s)).await;
            if *stop.borrow() {
                break;
            }
            match rewind_to_committed(&self.consumer) {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(stage = %self.name, error = %e, "rewinding to the committed offsets failed; trying again");
                }
            }
        }
        Err(failure)
    }

    /// Steps until `stop` is set, rewinding after each failure; then lets
    /// the stage finish its work in flight and commits it.
    pub async fn run_until(mut self, mut stop: watch::Receiver<bool>) -> Self {
        while !*stop.borrow() {
            if let Err(e) = self.step_or_rewind(&mut stop).await {
                if *stop.borrow() {
                    break;
                }
                tracing::error!(stage = %self.name, error = %format!("{e:#}"), "batch failed; read again from the last commit");
            }
        }
        match self.stage.drain().await {
            Ok(durable) => self.commit(&durable),
            Err(e) => {
                tracing::info!(stage = %self.name, error = %format!("{e:#}"), "work in flight at stop left uncommitted; it is read again at the next start");
            }
        }
        self
    }

    /// A failed commit (a rebalance took the partition) only means the
    /// records are read again by their next owner; every stage's output
    /// collapses such repeats.
    fn commit(&self, offsets: &[(String, i32, i64)]) {
        if offsets.is_empty() {
            return;
        }
        if let Err(e) = commit_offsets(&self.consumer, offsets) {
            tracing::warn!(stage = %self.name, error = %e, "offset commit failed (rebalance?); the next owner reads those records again");
        }
    }
}
