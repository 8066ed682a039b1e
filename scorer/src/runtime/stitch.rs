//! Stage one: `leadstream.events` (keyed by whichever id the SDK knew) →
//! `<prefix>.by_lead` (keyed by lead id). Links new id combinations through
//! the identity log first, so every instance routes with the same graph.

use std::{sync::Arc, time::Duration};

use leadstream_common::kafka::{
    BatchStage, Offsets, await_deliveries, next_offsets, partition_for, send,
};
use leadstream_schemas::{Decoder, codec::DecodeError};
use prost::Message as _;
use rdkafka::{
    Message,
    consumer::{DefaultConsumerContext, StreamConsumer},
    message::BorrowedMessage,
    producer::{FutureProducer, FutureRecord},
};

use super::{
    Topics,
    identity_log::IdentityLog,
    metrics::{EVENTS_ROUTED, LINKS_WRITTEN, STITCH_SKIPPED},
};
use crate::{
    event::{from_plan, to_facts},
    identity::identifiers,
    proto::{Body, Link, Routed},
};

pub struct Stitcher {
    pub producer: FutureProducer,
    pub decoder: Arc<Decoder>,
    pub identity: IdentityLog,
    pub topics: Topics,
}

impl BatchStage for Stitcher {
    type Context = DefaultConsumerContext;

    /// Routes every event of the batch and waits for Kafka's acks.
    async fn process(
        &mut self,
        _consumer: &StreamConsumer,
        batch: &[BorrowedMessage<'_>],
    ) -> anyhow::Result<Offsets> {
        let mut deliveries = Vec::with_capacity(batch.len());
        for m in batch {
            let Some(payload) = m.payload() else {
                metrics::counter!(STITCH_SKIPPED, "reason" => "empty").increment(1);
                continue;
            };
            let Read { ids, body } = match read(&self.decoder, payload).await {
                Ok(r) => r,
                Err(e) => {
                    // Ingest validated it; a record that does not decode is
                    // not ours to fix. The sink keeps it in its dead letters.
                    tracing::error!(partition = m.partition(), offset = m.offset(), error = %e, "undecodable event skipped by the scorer");
                    metrics::counter!(STITCH_SKIPPED, "reason" => "undecodable").increment(1);
                    continue;
                }
            };
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
                body: Some(body),
            };
            deliveries.push(
                send(
                    &self.producer,
                    &self.topics.by_lead,
                    partition_for(&lead, self.topics.partitions),
                    &lead,
                    &routed.encode_to_vec(),
                )
                .await,
            );
            metrics::counter!(EVENTS_ROUTED).increment(1);
        }
        await_deliveries(deliveries).await?;
        Ok(next_offsets(batch))
    }
}

/// What the stitcher reads from one framed event: the identifiers it routes
/// by and the body it forwards to the lead's owner.
pub struct Read {
    pub ids: Vec<String>,
    pub body: Body,
}

/// Reads one framed event of the events topic, once: the borrowed datum
/// gives the identifiers and the facts scoring needs, and only the facts
/// travel on.
pub async fn read(decoder: &Decoder, framed: &[u8]) -> Result<Read, DecodeError> {
    decoder
        .visit(framed, |_, datum| {
            let event = from_plan(datum);
            Read {
                ids: identifiers(datum),
                body: Body::Facts(to_facts(event.as_ref())),
            }
        })
        .await
}

impl Stitcher {
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
