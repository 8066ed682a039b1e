//! Stage one: `leadstream.events` (keyed by whichever id the SDK knew) →
//! `<prefix>.by_lead` (keyed by lead id). Links new id combinations through
//! the identity log first, so every instance routes with the same graph.

use anyhow::Context as _;
use std::{sync::Arc, time::Duration};

use leadstream_common::kafka::{collect_batch, commit_processed, partition_for};
use leadstream_schemas::{Decoder, codec::to_json};
use prost::Message as _;
use rdkafka::{
    Message,
    consumer::StreamConsumer,
    producer::{FutureProducer, FutureRecord},
};

use super::{
    Topics, await_deliveries,
    identity_log::IdentityLog,
    metrics::{EVENTS_ROUTED, LINKS_WRITTEN, STITCH_SKIPPED},
};
use crate::{
    identity::identifiers,
    proto::{Body, Link, Routed},
};

pub struct Stitcher {
    pub consumer: StreamConsumer,
    pub producer: FutureProducer,
    pub decoder: Arc<Decoder>,
    pub identity: IdentityLog,
    pub topics: Topics,
    pub batch_max: usize,
    pub batch_ms: u64,
    pub lag: leadstream_common::kafka::LagGauge,
}

impl Stitcher {
    /// Processes one batch; returns how many records it read.
    pub async fn step(&self) -> anyhow::Result<usize> {
        let t0 = std::time::Instant::now();
        let batch = collect_batch(&self.consumer, self.batch_max, self.batch_ms)
            .await
            .context("reading from Kafka")?;
        self.lag.maybe_record(&self.consumer);
        let t_collect = t0.elapsed();
        if batch.is_empty() {
            return Ok(0);
        }
        let mut deliveries = Vec::with_capacity(batch.len());
        for m in &batch {
            let Some(payload) = m.payload() else {
                metrics::counter!(STITCH_SKIPPED, "reason" => "empty").increment(1);
                continue;
            };
            let event = match self.decoder.decode(payload).await {
                Ok(d) => to_json(&d.value),
                Err(e) => {
                    // Ingest validated it; a record that does not decode is
                    // not ours to fix. The sink keeps it in its dead letters.
                    tracing::error!(partition = m.partition(), offset = m.offset(), error = %e, "undecodable event skipped by the scorer");
                    metrics::counter!(STITCH_SKIPPED, "reason" => "undecodable").increment(1);
                    continue;
                }
            };
            let ids = identifiers(&event);
            if ids.is_empty() {
                metrics::counter!(STITCH_SKIPPED, "reason" => "no_identity").increment(1);
                continue;
            }
            let needs_link = ids.len() > 1
                && !self
                    .identity
                    .graph
                    .lock()
                    .expect("graph lock")
                    .already_linked(&ids);
            if needs_link {
                self.link(&ids).await?;
            }
            let (lead, graph_offset) = {
                let mut g = self.identity.graph.lock().expect("graph lock");
                (g.resolve(&ids), self.identity.applied())
            };
            let routed = Routed {
                lead_id: lead.clone(),
                graph_offset,
                body: Some(Body::Event(payload.to_vec())),
            };
            deliveries.push(
                send(
                    &self.producer,
                    &self.topics.by_lead,
                    partition_for(&lead, self.topics.partitions),
                    &lead,
                    routed.encode_to_vec(),
                )
                .await,
            );
            metrics::counter!(EVENTS_ROUTED).increment(1);
        }
        let t_process = t0.elapsed();
        await_deliveries(deliveries).await?;
        let t_outputs = t0.elapsed();
        commit_processed(&self.consumer, &batch)?;
        tracing::debug!(records = batch.len(), ?t_collect, ?t_process, ?t_outputs, total = ?t0.elapsed(), "stitch batch");
        Ok(batch.len())
    }

    /// After a failed batch: read it again from the last commit.
    pub fn rewind(&self) {
        leadstream_common::kafka::rewind_to_committed(&self.consumer);
    }

    /// Appends a link and waits until the local graph has applied it.
    async fn link(&self, ids: &[String]) -> anyhow::Result<()> {
        let mut sorted = ids.to_vec();
        sorted.sort();
        let key = sorted.join("|");
        let value = Link { ids: ids.to_vec() }.encode_to_vec();
        let delivery = self
            .producer
            .send(
                FutureRecord::to(&self.topics.identity)
                    .partition(0)
                    .key(&key)
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("appending to the identity log: {e}"))?;
        metrics::counter!(LINKS_WRITTEN).increment(1);
        self.identity.wait_for(delivery.offset as u64 + 1).await;
        Ok(())
    }
}

/// Queues one record; the returned future resolves when Kafka acked it.
/// `partition` < 0 leaves the choice to the producer's partitioner.
pub(crate) async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    value: Vec<u8>,
) -> rdkafka::producer::DeliveryFuture {
    let mut record = FutureRecord::to(topic).key(key).payload(&value);
    if partition >= 0 {
        record = record.partition(partition);
    }
    loop {
        match producer.send_result(record) {
            Ok(f) => return f,
            // Queue full: let librdkafka drain, then try again.
            Err((e, r)) => {
                tracing::debug!(error = %e, "producer queue full");
                tokio::time::sleep(Duration::from_millis(5)).await;
                record = r;
            }
        }
    }
}
