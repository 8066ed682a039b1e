//! Stage one: `leadstream.events` (keyed by whichever id the SDK knew) →
//! `<prefix>.by_lead` (partitioned by lead id, one batch record per
//! partition and batch). Links new id combinations through the identity log
//! first, so every instance routes with the same graph.

use std::sync::Arc;

use anyhow::Context as _;
use leadstream_common::kafka::{
    BatchStage, Delivery, Offsets, RebalanceLog, await_deliveries, delivered_offsets, next_offsets,
    partition_for, send,
};
use leadstream_schemas::{Decoder, codec::DecodeError};
use rdkafka::{
    Message, consumer::StreamConsumer, message::BorrowedMessage, producer::FutureProducer,
};

use super::{
    Topics,
    identity_log::IdentityLog,
    metrics::{EVENTS_ROUTED, LINKS_WRITTEN, STITCH_SKIPPED},
};
use crate::{
    event::{PLAN_PATHS, Projected, from_plan, to_facts},
    identity::{IdentityGraph, identifiers},
    identity_compaction::link_record,
    proto::{Body, Routed},
    routing::{BatchRecords, ROUTED_BATCH_KEY},
};

pub struct Stitcher {
    pub producer: FutureProducer,
    pub decoder: Arc<Decoder>,
    pub identity: IdentityLog,
    pub topics: Topics,
    /// The previous batch's `by_lead` records, not yet known to be acked,
    /// and the offsets to commit once they are.
    pub in_flight: Option<InFlight>,
    /// Where each batch's routes are encoded; empty between batches, its
    /// buffers kept for the next.
    pub records: BatchRecords,
    /// Each batch's routes (lead, body, links appended before it) before
    /// they are encoded; empty between batches.
    pub routes: Vec<(String, Body, usize)>,
}

/// Routes queued by one batch and what to commit once they are acked.
pub struct InFlight {
    deliveries: Vec<Delivery>,
    offsets: Offsets,
}

impl InFlight {
    async fn landed(self) -> anyhow::Result<Offsets> {
        await_deliveries(self.deliveries)
            .await
            .context("routing events to by_lead")?;
        Ok(self.offsets)
    }
}

impl BatchStage for Stitcher {
    type Context = RebalanceLog;

    /// Reads the batch's events, then routes them in order. An event with
    /// identifiers the graph does not link yet appends a `Link` and applies
    /// it to the local graph at once (linking is idempotent and
    /// order-independent, so the log's copy changes nothing), so later
    /// events route as if it had been waited for; every link's ack is
    /// awaited once for the batch, and each route is stamped with the log
    /// position its owner must reach. One round trip per batch, not per
    /// new link, and the same routes as linking one event at a time.
    ///
    /// The routes are not waited for: the next batch is read and routed
    /// while they travel, and a batch's offsets are committed at the next
    /// step, once its routes are acked. A failed route fails that step, and
    /// both batches are read again from the last commit (the owner drops
    /// the repeats by message id).
    async fn process(
        &mut self,
        _consumer: &StreamConsumer<RebalanceLog>,
        batch: &[BorrowedMessage<'_>],
    ) -> anyhow::Result<Offsets> {
        if batch.is_empty() {
            // Nothing new: commit what has landed meanwhile.
            return self.drain().await;
        }
        // (lead, body, links appended before it), in a vector kept from
        // batch to batch: thousands of bodies are megabytes, and a fresh
        // vector for each batch is fresh pages.
        let mut routes = std::mem::take(&mut self.routes);
        routes.clear();
        routes.reserve(batch.len());
        let mut links = Vec::new();
        for m in batch {
            let Some(payload) = m.payload() else {
                metrics::counter!(STITCH_SKIPPED, "reason" => "empty").increment(1);
                continue;
            };
            let Read { ids, mut body } = match read(&self.decoder, payload).await {
                Ok(r) if r.ids.is_empty() => {
                    metrics::counter!(STITCH_SKIPPED, "reason" => "no_identity").increment(1);
                    continue;
                }
                Ok(r) => r,
                Err(e) => {
                    // Ingest validated it; a record that does not decode is
                    // not ours to fix. The sink keeps it in its dead letters.
                    tracing::error!(partition = m.partition(), offset = m.offset(), error = %e, "undecodable event skipped by the scorer");
                    metrics::counter!(STITCH_SKIPPED, "reason" => "undecodable").increment(1);
                    continue;
                }
            };
            // One lock for an event whose ids are linked already (most).
            let linked = {
                let mut g = self.identity.graph.lock().expect("graph lock");
                (ids.len() <= 1 || g.already_linked(&ids)).then(|| route(&mut g, &ids, &mut body))
            };
            let lead = match linked {
                Some(lead) => lead,
                None => {
                    links.push(self.append_link(&ids).await);
                    let mut g = self.identity.graph.lock().expect("graph lock");
                    g.link(&ids);
                    route(&mut g, &ids, &mut body)
                }
            };
            routes.push((lead, body, links.len()));
        }
        // The log position the graph had reached once every route of the
        // batch was resolved: at least what any of them was resolved with
        // (an owner may wait for a little more than it needs, never less).
        let applied = {
            let _graph = self.identity.graph.lock().expect("graph lock");
            self.identity.applied()
        };
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
        let n_routed = routes.len() as u64;
        let records = &mut self.records;
        for (lead, body, n_links) in routes.drain(..) {
            let graph_offset = n_links
                .checked_sub(1)
                .map_or(applied, |i| applied.max(past[i]));
            let routed = Routed {
                lead_id: lead,
                graph_offset,
                body: Some(body),
            };
            records.push(
                partition_for(&routed.lead_id, self.topics.partitions),
                &routed,
            );
        }
        self.routes = routes;
        let mut deliveries = Vec::new();
        let records = records.take();
        send_batch_records(
            &self.producer,
            &self.topics.by_lead,
            &records,
            &mut deliveries,
        )
        .await;
        for (_, bytes) in records {
            self.records.recycle(bytes);
        }
        metrics::counter!(EVENTS_ROUTED).increment(n_routed);
        let previous = self.in_flight.replace(InFlight {
            deliveries,
            offsets: next_offsets(batch),
        });
        match previous {
            Some(p) => p.landed().await,
            None => Ok(Vec::new()),
        }
    }

    fn forget(&mut self, _consumer: &StreamConsumer<RebalanceLog>) {
        self.in_flight = None;
        self.records.take();
    }

    async fn drain(&mut self) -> anyhow::Result<Offsets> {
        match self.in_flight.take() {
            Some(p) => p.landed().await,
            None => Ok(Vec::new()),
        }
    }
}

/// Queues `by_lead` batch records ((partition, value) pairs), adding their
/// deliveries to `deliveries`.
pub async fn send_batch_records(
    producer: &FutureProducer,
    by_lead: &str,
    records: &[(i32, Vec<u8>)],
    deliveries: &mut Vec<Delivery>,
) {
    for (partition, value) in records {
        deliveries.push(send(producer, by_lead, *partition, ROUTED_BATCH_KEY, value).await);
    }
}

/// The lead `ids` resolve to in `graph`, noting on `body` whether it is
/// still anonymous.
fn route(graph: &mut IdentityGraph, ids: &[String], body: &mut Body) -> String {
    if let Body::Facts(facts) = body {
        facts.anonymous = graph.is_anonymous(ids);
    }
    graph.resolve(ids)
}

/// What the stitcher reads from one framed event: the identifiers it routes
/// by and the body it forwards to the lead's owner.
pub struct Read {
    pub ids: Vec<String>,
    pub body: Body,
}

/// Reads one framed event of the events topic, once and only the fields
/// scoring reads ([`PLAN_PATHS`]): they give the identifiers and the facts
/// scoring needs, and only the facts travel on.
pub async fn read(decoder: &Decoder, framed: &[u8]) -> Result<Read, DecodeError> {
    decoder
        .project(framed, PLAN_PATHS, |_, values| {
            let event = Projected(values);
            Read {
                ids: identifiers(&event),
                body: Body::Facts(to_facts(from_plan(&event))),
            }
        })
        .await
}

impl Stitcher {
    /// Queues a link of `ids` on the identity log.
    async fn append_link(&self, ids: &[String]) -> Delivery {
        let (key, value) = link_record(ids);
        send(&self.producer, &self.topics.identity, 0, &key, &value).await
    }
}
