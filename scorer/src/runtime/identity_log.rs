//! The identity log: `<prefix>.identity`, one partition, read whole by every
//! scorer instance into the same [`IdentityGraph`] in the same order. A
//! stitcher that links ids appends a [`Link`] and waits until its own
//! reader has applied it, so routing never runs ahead of the graph.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
};
use tokio::sync::watch;

use crate::{identity::IdentityGraph, identity_compaction as compaction};

/// The graph and how far into the log it is (next offset to apply).
#[derive(Clone)]
pub struct IdentityLog {
    pub graph: Arc<Mutex<IdentityGraph>>,
    applied: watch::Receiver<u64>,
    /// The reader task: [`IdentityLog::stop`] ends it and waits until its
    /// consumer is closed; dropping the last copy only asks it to end.
    reader: Arc<Reader>,
}

struct Reader(Mutex<Option<tokio::task::JoinHandle<()>>>);

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(task) = self.0.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

impl IdentityLog {
    /// Starts reading `topic` from the beginning in a background task.
    pub fn start(bootstrap: &str, topic: &str) -> anyhow::Result<Self> {
        // Assigned, never committed: every instance reads the whole log.
        let consumer: StreamConsumer =
            leadstream_common::kafka::reader_config(bootstrap, &format!("{topic}.reader"))
                .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let graph = Arc::new(Mutex::new(IdentityGraph::default()));
        let (tx, rx) = watch::channel(0u64);
        let g = Arc::clone(&graph);
        let reader = tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(m) => {
                        let next = m.offset() as u64 + 1;
                        let record = compaction::read(m.key(), m.payload());
                        let mut graph = g.lock().expect("graph lock");
                        match record {
                            Ok(record) => {
                                if !compaction::apply(&mut graph, &record) {
                                    tracing::error!(
                                        offset = m.offset(),
                                        "identity link without ids skipped"
                                    );
                                }
                            }
                            Err(e) => tracing::error!(
                                offset = m.offset(),
                                error = %e,
                                "unreadable identity record skipped"
                            ),
                        }
                        // Under the graph's lock: whoever reads the graph
                        // under it reads the position of what it holds.
                        tx.send_replace(next);
                        drop(graph);
                        metrics::gauge!(super::metrics::IDENTITY_APPLIED).set(next as f64);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "identity log read failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(Self {
            graph,
            applied: rx,
            reader: Arc::new(Reader(Mutex::new(Some(reader)))),
        })
    }

    /// Ends the reader and returns once its consumer is closed, so a
    /// broker stopped next (the quickstart's) sees no client of it.
    pub async fn stop(&self) {
        let task = self.reader.0.lock().expect("reader lock").take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// How far the graph has applied the log; read under the graph's lock,
    /// exactly what the graph holds.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the graph has applied the log up to `offset` (exclusive).
    pub async fn wait_for(&self, offset: u64) {
        let mut rx = self.applied.clone();
        // The sender lives as long as the reader task, i.e. the process.
        let _ = rx.wait_for(|applied| *applied >= offset).await;
    }
}

/// What a compaction pass did.
#[derive(Debug)]
pub struct CompactionReport {
    pub records_read: usize,
    pub identifiers: usize,
    pub components_written: usize,
    pub tombstones: usize,
    pub bytes_before: usize,
    pub bytes_after: usize,
}

/// One compaction pass over `topic` (see [`crate::identity_compaction`]):
/// appends a marker, reads the log up to it, writes each lead once and
/// tombstones what those records cover. Kafka removes the covered records
/// at its next compaction of the topic.
pub async fn compact(bootstrap: &str, topic: &str) -> anyhow::Result<CompactionReport> {
    use anyhow::Context as _;
    use leadstream_common::kafka::{
        await_deliveries, producer_config, read_through_marker, send, send_tombstone,
    };
    use rdkafka::producer::FutureProducer;

    let producer: FutureProducer = producer_config(bootstrap, 5).create()?;
    let mut log = Vec::new();
    read_through_marker(
        &producer,
        bootstrap,
        (topic, 0),
        compaction::MARKER_KEY,
        &format!("{topic}.compact"),
        |m| {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            log.push((key, m.payload().map(<[u8]>::to_vec)));
            Ok(())
        },
    )
    .await?;
    let records_read = log.len();
    let plan = compaction::plan(log);
    let mut deliveries = Vec::with_capacity(plan.writes.len());
    for (key, value) in &plan.writes {
        deliveries.push(send(&producer, topic, 0, key, value).await);
    }
    await_deliveries(deliveries)
        .await
        .with_context(|| format!("writing compacted leads to {topic}"))?;
    // Only once every lead is written: a tombstone must follow what covers it.
    let mut deliveries = Vec::with_capacity(plan.tombstones.len());
    for key in &plan.tombstones {
        deliveries.push(send_tombstone(&producer, topic, 0, key).await);
    }
    await_deliveries(deliveries)
        .await
        .with_context(|| format!("writing tombstones to {topic}"))?;
    Ok(CompactionReport {
        records_read,
        identifiers: plan.ids_before,
        components_written: plan.writes.len(),
        tombstones: plan.tombstones.len(),
        bytes_before: plan.bytes_before,
        bytes_after: plan.bytes_after,
    })
}
