//! Stage one: `leadstream.events` (keyed by whichever id the SDK knew) →
//! `<prefix>.by_lead` (keyed by lead id). Links new id combinations through
//! the identity log first, so every instance routes with the same graph.

use std::sync::Arc;

use anyhow::Context as _;
use leadstream_common::kafka::{
    BatchStage, Offsets, await_deliveries, delivered_offsets, next_offsets, partition_for, send,
};
use leadstream_schemas::{Decoder, codec::DecodeError};
use prost::Message as _;
use rdkafka::{
    Message,
    consumer::{DefaultConsumerContext, StreamConsumer},
    message::BorrowedMessage,
    producer::FutureProducer,
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

    /// Reads the batch's events, then routes them in order. An event with
    /// identifiers the graph does not link yet appends a `Link` and applies
    /// it to the local graph at once (linking is idempotent and
    /// order-independent, so the log's copy changes nothing), so later
    /// events route as if it had been waited for; every link's ack is
    /// awaited once for the batch, and each route is stamped with the log
    /// position its owner must reach. One round trip per batch, not per
    /// new link, and the same routes as linking one event at a time.
    async fn process(
        &mut self,
        _consumer: &StreamConsumer,
        batch: &[BorrowedMessage<'_>],
    ) -> anyhow::Result<Offsets> {
        let mut reads = Vec::with_capacity(batch.len());
        for m in batch {
            let Some(payload) = m.payload() else {
                metrics::counter!(STITCH_SKIPPED, "reason" => "empty").increment(1);
                continue;
            };
            match read(&self.decoder, payload).await {
                Ok(r) if r.ids.is_empty() => {
                    metrics::counter!(STITCH_SKIPPED, "reason" => "no_identity").increment(1);
                }
                Ok(r) => reads.push(r),
                Err(e) => {
                    // Ingest validated it; a record that does not decode is
                    // not ours to fix. The sink keeps it in its dead letters.
                    tracing::error!(partition = m.partition(), offset = m.offset(), error = %e, "undecodable event skipped by the scorer");
                    metrics::counter!(STITCH_SKIPPED, "reason" => "undecodable").increment(1);
                }
            }
        }
        // (lead, body, links appended before it, log position applied then)
        let mut routes = Vec::with_capacity(reads.len());
        let mut links = Vec::new();
        for Read { ids, body } in reads {
            let needs_link = ids.len() > 1
                && !self
                    .identity
                    .graph
                    .lock()
                    .expect("graph lock")
                    .already_linked(&ids);
            if needs_link {
                links.push(self.append_link(&ids).await);
            }
            let mut g = self.identity.graph.lock().expect("graph lock");
            if needs_link {
                g.link(&ids);
            }
            routes.push((g.resolve(&ids), body, links.len(), self.identity.applied()));
        }
        let offsets = delivered_offsets(links)
            .await
            .context("appending to the identity log")?;
        metrics::counter!(LINKS_WRITTEN).increment(offsets.len() as u64);
        // The log position just past each link (and every earlier one).
        let past: Vec<u64> = offsets
            .iter()
            .scan(0, |end, &o| {
                *end = (*end).max(o as u64 + 1);
                Some(*end)
            })
            .collect();
        let mut deliveries = Vec::with_capacity(routes.len());
        for (lead, body, n_links, applied) in routes {
            let routed = Routed {
                lead_id: lead.clone(),
                graph_offset: n_links
                    .checked_sub(1)
                    .map_or(applied, |i| applied.max(past[i])),
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
        .visit(framed, |_, datum| Read {
            ids: identifiers(datum),
            body: Body::Facts(to_facts(from_plan(datum))),
        })
        .await
}

impl Stitcher {
    /// Queues a link of `ids` on the identity log.
    async fn append_link(&self, ids: &[String]) -> rdkafka::producer::DeliveryFuture {
        let mut sorted = ids.to_vec();
        sorted.sort();
        let key = sorted.join("|");
        let value = Link { ids: ids.to_vec() }.encode_to_vec();
        send(&self.producer, &self.topics.identity, 0, &key, &value).await
    }
}
