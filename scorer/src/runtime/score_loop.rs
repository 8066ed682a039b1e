//! Stage two: `<prefix>.by_lead` → scores, merges and the changelog. Each
//! batch is applied and its outputs sent at once; every commit interval
//! the loop waits for those outputs to be acked, writes the leads changed
//! since the last commit to the changelog (each once), waits, and commits
//! the input offsets. A crash anywhere replays from the last commit; leads
//! restored from a newer changelog skip what they already applied.

use anyhow::Context as _;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use leadstream_common::kafka::{
    BatchStage, Offsets, Tallied, await_deliveries, next_offsets, partition_for,
    read_through_marker, rewind_partitions_to_committed,
};
use leadstream_schemas::{Decoder, Encoder};
use rdkafka::{
    Message,
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    message::BorrowedMessage,
    producer::FutureProducer,
};

use super::{
    Topics,
    identity_log::IdentityLog,
    metrics::{
        LEADS, LEADS_EXPIRED, MERGES, RECORDS, RESTORED, SCHEDULED, SCORES, SKIPPED, TIME_SCORES,
    },
};
use crate::{
    clock::Clock,
    event::{from_facts, from_plan},
    processor::{Input, Output, Place, Processor, ScoreRecord, Skipped},
    proto::{Body, Routed},
    routing::{batch_records, position, read_record_into},
    train::TrainedModel,
};

/// Notes partitions taken away in a rebalance, for the loop to drop, and
/// those given, for it to restore before their first record: a partition
/// whose leads send nothing still has a schedule to run.
#[derive(Default)]
pub struct RebalanceTracker {
    pub revoked: Mutex<Vec<i32>>,
    pub assigned: Mutex<Vec<i32>>,
}

impl rdkafka::ClientContext for RebalanceTracker {}

impl ConsumerContext for RebalanceTracker {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut revoked = self.revoked.lock().expect("revoked lock");
            revoked.extend(tpl.elements().iter().map(|e| e.partition()));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        leadstream_common::kafka::log_rebalance("score", rebalance);
        if let Rebalance::Assign(tpl) = rebalance {
            let mut assigned = self.assigned.lock().expect("assigned lock");
            assigned.extend(tpl.elements().iter().map(|e| e.partition()));
        }
    }
}

pub struct ScoreLoop {
    /// Merge routes to by_lead and restore markers.
    pub producer: FutureProducer,
    /// Scores and the changelog: many records, counted rather than awaited
    /// one by one.
    pub out: Tallied,
    pub decoder: Arc<Decoder>,
    pub encoder: Arc<Encoder>,
    pub identity: IdentityLog,
    pub processor: Processor,
    pub model: Arc<RwLock<Option<Arc<TrainedModel>>>>,
    pub topics: Topics,
    pub bootstrap: String,
    /// Read only for partitions idle for `idle`, to drive their schedule.
    pub clock: Arc<dyn Clock>,
    pub idle: Duration,
    /// When each owned partition last delivered a record (or was restored).
    pub last_read: HashMap<i32, Instant>,
    /// What this loop last added to the process-wide gauges.
    pub reported: Reported,
    /// How often applied work is made durable and committed (0: every batch).
    pub commit_interval: Duration,
    pub uncommitted: Uncommitted,
    /// The routed records of the `by_lead` record being applied, kept
    /// between records for its capacity.
    pub routed: Vec<Routed>,
}

/// Work applied since the last commit: the outputs still in flight and the
/// offsets to commit once they and the changelog have landed.
pub struct Uncommitted {
    /// Merge routes queued on by_lead (scores and the changelog are
    /// counted by the loop's `Tallied`).
    deliveries: Vec<leadstream_common::kafka::Delivery>,
    /// by_lead partition → the offset after its last applied record.
    offsets: std::collections::BTreeMap<i32, i64>,
    /// Since when: the last commit, or the start.
    since: Instant,
}

impl Default for Uncommitted {
    fn default() -> Self {
        Self {
            deliveries: Vec::new(),
            offsets: Default::default(),
            since: Instant::now(),
        }
    }
}

/// A score loop's share of the leads and schedule gauges, which sum the
/// process's loops: each adds the change since its last report.
#[derive(Default)]
pub struct Reported {
    leads: f64,
    scheduled: f64,
}

impl Reported {
    fn report(&mut self, leads: usize, scheduled: usize) {
        let (leads, scheduled) = (leads as f64, scheduled as f64);
        metrics::gauge!(LEADS).increment(leads - self.leads);
        metrics::gauge!(SCHEDULED).increment(scheduled - self.scheduled);
        (self.leads, self.scheduled) = (leads, scheduled);
    }
}

impl BatchStage for ScoreLoop {
    type Context = RebalanceTracker;

    /// Applies a batch, runs the time schedule, waits for the outputs'
    /// acks, then writes and waits for the changed leads' state.
    async fn process(
        &mut self,
        consumer: &StreamConsumer<RebalanceTracker>,
        batch: &[BorrowedMessage<'_>],
    ) -> anyhow::Result<Offsets> {
        let revoked: Vec<i32> =
            std::mem::take(&mut *consumer.context().revoked.lock().expect("revoked lock"));
        for &p in &revoked {
            tracing::info!(partition = p, "partition revoked; state dropped");
            self.processor.revoke(p);
            self.last_read.remove(&p);
            // Its next owner applies again what was not committed.
            self.uncommitted.offsets.remove(&p);
        }
        // Records of a partition revoked while this batch was read belong
        // to its next owner, which reads them from the committed offset.
        // Applying them here would race that owner's restore with this
        // loop's changelog writes and commit, and could lose them.
        let stale = |m: &BorrowedMessage<'_>| revoked.contains(&m.partition());
        if batch.iter().any(stale) {
            let n = batch.iter().filter(|m| stale(m)).count();
            tracing::info!(
                records = n,
                ?revoked,
                "records of revoked partitions left to their next owner"
            );
            // A partition that came straight back to this loop has its next
            // owner here, already reading past the skipped records (some
            // may even be from after the new assignment): it goes back to
            // the committed offset, or they would never be applied.
            let back = rewind_partitions_to_committed(consumer, |_, p| revoked.contains(&p))
                .context("rewinding partitions revoked and assigned back during a batch")?;
            if !back.is_empty() {
                tracing::info!(partitions = ?back, "partitions assigned back to this loop read again from their committed offsets");
            }
        }
        let assigned: Vec<i32> =
            std::mem::take(&mut *consumer.context().assigned.lock().expect("assigned lock"));
        for p in assigned {
            // Idle is measured from the assignment, not from the epoch.
            self.last_read.insert(p, Instant::now());
            self.restore(p).await?;
        }
        let t0 = std::time::Instant::now();
        let mut outputs = Outputs::default();
        let read_at = Instant::now();
        let model = self.model.read().expect("model lock").clone();
        let model = model.as_deref().map(|m| m as &dyn crate::score::Model);
        let mut records = 0u64;
        for m in batch.iter().filter(|m| !stale(m)) {
            let p = m.partition();
            self.last_read.insert(p, read_at);
            self.restore(p).await?;
            let (Some(key), Some(payload)) = (m.key(), m.payload()) else {
                metrics::counter!(SKIPPED, "reason" => "empty").increment(1);
                continue;
            };
            let mut routed = std::mem::take(&mut self.routed);
            if let Err(e) = read_record_into(key, payload, &mut routed) {
                tracing::error!(partition = p, offset = m.offset(), error = %e, "unreadable by_lead record skipped");
                metrics::counter!(SKIPPED, "reason" => "unreadable").increment(1);
                self.routed = routed;
                continue;
            }
            records += routed.len() as u64;
            let applied = self
                .apply(p, m.offset(), &mut routed, model, &mut outputs)
                .await;
            self.routed = routed;
            applied?;
        }
        metrics::counter!(RECORDS).increment(records);
        // Time: leads whose grade or stage changed with no event. An idle
        // partition's schedule runs on the clock; a busy one on stream time.
        for p in self.processor.partitions() {
            let since = *self.last_read.entry(p).or_insert(read_at);
            let idle = read_at.duration_since(since) >= self.idle;
            let now = idle.then(|| self.clock.now_ms());
            for o in self.processor.advance(p, now, model) {
                if let Output::Score { reason, .. } = &o {
                    metrics::counter!(TIME_SCORES, "reason" => reason.as_str()).increment(1);
                }
                self.emit(o, &mut outputs).await?;
            }
        }
        self.send_routes(outputs).await;
        for (_, p, next) in next_offsets(batch.iter().filter(|m| !stale(m))) {
            self.uncommitted.offsets.insert(p, next);
        }
        self.reported
            .report(self.processor.leads(), self.processor.scheduled());
        let t_process = t0.elapsed();
        if self.uncommitted.since.elapsed() < self.commit_interval {
            tracing::debug!(
                records = batch.len(),
                routed = records,
                ?t_process,
                "score batch"
            );
            return Ok(Vec::new());
        }
        let committed = self.commit().await?;
        tracing::debug!(records = batch.len(), routed = records, ?t_process, total = ?t0.elapsed(), "score batch and commit");
        // After a rebalance the new owner replays from the last commit;
        // leads restored from a newer changelog skip what they applied.
        Ok(committed)
    }

    /// After a failed batch: forget in-memory state (it may hold part of the
    /// batch); it comes back from the changelog when the batch is read again.
    fn forget(&mut self, consumer: &StreamConsumer<RebalanceTracker>) {
        let owned: Vec<i32> = (0..self.topics.partitions)
            .filter(|p| self.processor.owns(*p))
            .collect();
        for p in &owned {
            self.processor.revoke(*p);
            self.last_read.remove(p);
        }
        // Read again from the last commit.
        self.uncommitted = Uncommitted::default();
        self.out.forget();
        // Still ours: restored at the next step, records or not.
        consumer
            .context()
            .assigned
            .lock()
            .expect("assigned lock")
            .extend(owned);
    }

    /// At stop: what was applied since the last commit is made durable.
    async fn drain(&mut self) -> anyhow::Result<Offsets> {
        self.commit().await
    }
}

impl ScoreLoop {
    /// Makes what was applied since the last commit durable: outputs
    /// first, then state (a changelog entry implies its outputs landed),
    /// then the offsets to commit.
    async fn commit(&mut self) -> anyhow::Result<Offsets> {
        let Uncommitted {
            deliveries,
            offsets,
            ..
        } = std::mem::take(&mut self.uncommitted);
        await_deliveries(deliveries).await?;
        self.out.landed().await.context("producing scores")?;
        let before = self.out.sent();
        let mut expired = 0u64;
        for (p, records) in self.processor.take_changelog() {
            for (k, v) in records {
                // A tombstone (None) once the lead expired.
                expired += u64::from(v.is_none());
                self.out
                    .send(&self.topics.changelog, p, &k, v.as_deref())
                    .await;
            }
        }
        metrics::counter!(LEADS_EXPIRED).increment(expired);
        tracing::debug!(state_writes = self.out.sent() - before, "changelog");
        self.out.landed().await.context("writing the changelog")?;
        Ok(offsets
            .into_iter()
            .map(|(p, next)| (self.topics.by_lead.clone(), p, next))
            .collect())
    }

    /// Partition `p`'s leads from the changelog, unless already held.
    async fn restore(&mut self, p: i32) -> anyhow::Result<()> {
        restore(
            &mut self.processor,
            &self.producer,
            &self.bootstrap,
            &self.topics.changelog,
            p,
        )
        .await
    }

    /// Applies the routed records of the `by_lead` record at `offset` of
    /// partition `p`, once the identity graph has caught up with their
    /// routes. The graph is locked once for the record's places, not once
    /// per routed record: the stitcher links under the same lock.
    async fn apply(
        &mut self,
        p: i32,
        offset: i64,
        routed: &mut Vec<Routed>,
        model: Option<&dyn crate::score::Model>,
        outputs: &mut Outputs,
    ) -> anyhow::Result<()> {
        let needed = routed.iter().map(|r| r.graph_offset).max().unwrap_or(0);
        if self.identity.applied() < needed
            && tokio::time::timeout(Duration::from_secs(2), self.identity.wait_for(needed))
                .await
                .is_err()
        {
            tracing::warn!(
                partition = p,
                offset,
                needed,
                applied = self.identity.applied(),
                "waiting for the identity log to catch up"
            );
            self.identity.wait_for(needed).await;
        }
        let (places, graph_offset) = {
            let mut graph = self.identity.graph.lock().expect("graph lock");
            let places: Vec<Place> = routed
                .iter()
                .map(|r| Place::of(&mut graph, &r.lead_id))
                .collect();
            (places, self.identity.applied())
        };
        for (i, (routed, place)) in routed.drain(..).zip(places).enumerate() {
            let at = position(offset, i);
            let Routed { lead_id, body, .. } = routed;
            // Facts (every record stitchers write now) need no decoder: no
            // future to build and move for each of them.
            let input = match body {
                Some(Body::Facts(facts)) => Some(facts_input(facts)),
                other => input_of(&self.decoder, other).await,
            };
            let Some(input) = input else {
                metrics::counter!(SKIPPED, "reason" => "empty").increment(1);
                continue;
            };
            if matches!(input, Input::MergeState { .. }) {
                metrics::counter!(MERGES).increment(1);
            }
            let outcome =
                self.processor
                    .handle_placed(p, at, &lead_id, input, place, graph_offset, model);
            tracing::debug!(partition = p, offset, index = i, lead = %lead_id, skipped = ?outcome.skipped, outputs = outcome.outputs.len(), "record");
            if let Some(s) = outcome.skipped {
                metrics::counter!(SKIPPED, "reason" => skipped_label(s)).increment(1);
            }
            for o in outcome.outputs {
                if let Some((key, framed)) = self.emit_now(o, outputs)? {
                    self.out
                        .send(&self.topics.scores, -1, &key, Some(&framed))
                        .await;
                }
            }
        }
        Ok(())
    }

    /// Queues a score on its topic at once; keeps a route for the batch's
    /// `by_lead` batch records.
    async fn emit(&mut self, o: Output, outputs: &mut Outputs) -> anyhow::Result<()> {
        if let Some((key, framed)) = self.emit_now(o, outputs)? {
            self.out
                .send(&self.topics.scores, -1, &key, Some(&framed))
                .await;
        }
        Ok(())
    }

    /// [`Self::emit`] without waiting: a score the producer's queue had no
    /// room for is handed back (lead id, framed record) to be sent.
    fn emit_now(
        &mut self,
        o: Output,
        outputs: &mut Outputs,
    ) -> anyhow::Result<Option<(String, Vec<u8>)>> {
        match o {
            Output::Score { record, .. } => {
                let framed = encode_score(&self.encoder, &record)?;
                outputs.scores += 1;
                if !self
                    .out
                    .try_send(&self.topics.scores, -1, &record.lead_id, Some(&framed))
                {
                    return Ok(Some((record.lead_id, framed)));
                }
            }
            Output::Route(r) => outputs.routes.push(r),
        }
        Ok(None)
    }

    /// Queues the batch's routes as batch records of their partitions,
    /// their deliveries awaited at the next commit.
    async fn send_routes(&mut self, outputs: Outputs) {
        let Outputs { routes, scores } = outputs;
        metrics::counter!(SCORES).increment(scores);
        let partitions = self.topics.partitions;
        let routes = routes
            .into_iter()
            .map(|r| (partition_for(&r.lead_id, partitions), r));
        super::stitch::send_batch_records(
            &self.producer,
            &self.topics.by_lead,
            &batch_records(routes, partitions),
            &mut self.uncommitted.deliveries,
        )
        .await;
    }
}

/// What a batch has produced so far.
#[derive(Default)]
struct Outputs {
    /// Merge messages, sent as batch records at the end of the batch.
    routes: Vec<Routed>,
    /// Score records queued (counted once per batch).
    scores: u64,
}

/// The processor's input for one `by_lead` body; None for an empty one.
/// An event that does not decode, or does not map to a scorable event, is
/// still an input (it advances the lead's offset).
pub async fn input_of(decoder: &Decoder, body: Option<Body>) -> Option<Input> {
    Some(match body? {
        Body::Facts(facts) => facts_input(facts),
        // Written by scorers before 2026-12-05: the framed event itself.
        Body::Event(framed) => Input::Event {
            anonymous: false,
            event: decoder
                .visit(&framed, |_, datum| from_plan(datum))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "undecodable event in by_lead");
                    None
                }),
        },
        Body::MergeRequest(r) => Input::MergeRequest { into: r.into },
        Body::MergeState(s) => Input::MergeState {
            from: s.from,
            state: s.state,
        },
    })
}

/// The processor's input for an event's facts.
fn facts_input(facts: crate::proto::EventFacts) -> Input {
    Input::Event {
        anonymous: facts.anonymous,
        event: from_facts(facts).unwrap_or_else(|e| {
            tracing::error!(error = %e, "unreadable event facts in by_lead");
            None
        }),
    }
}

/// A score output's `lead_score` record, framed for Kafka.
pub fn encode_score(encoder: &Encoder, record: &ScoreRecord) -> anyhow::Result<Vec<u8>> {
    Ok(encoder.encode_derived_view("lead_score", record)?.bytes)
}

/// Reads partition `p` of the changelog from the start (through a marker,
/// see [`read_through_marker`]) into the processor, unless the processor
/// already holds it.
async fn restore(
    processor: &mut Processor,
    producer: &FutureProducer,
    bootstrap: &str,
    changelog: &str,
    p: i32,
) -> anyhow::Result<()> {
    if processor.owns(p) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    processor.assign(p);
    let mut restored = 0u64;
    let read = read_through_marker(
        producer,
        bootstrap,
        (changelog, p),
        RESTORE_MARKER_KEY,
        &format!("{changelog}.restore"),
        |m| {
            match m.key() {
                Some(k) if k != RESTORE_MARKER_KEY.as_bytes() => {
                    processor.restore(p, &String::from_utf8_lossy(k), m.payload())?;
                    restored += 1;
                }
                _ => {}
            }
            Ok(())
        },
    )
    .await;
    // A failed read leaves the partition half restored, but owned: the
    // failed step's `forget` drops it and restores it again.
    read.with_context(|| format!("restoring {changelog}[{p}]"))?;
    metrics::counter!(RESTORED).increment(restored);
    tracing::info!(
        partition = p,
        records = restored,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "partition state restored from the changelog"
    );
    Ok(())
}

/// Changelog key of restore markers (empty values, ignored on restore).
const RESTORE_MARKER_KEY: &str = "\u{0}restore_marker";

fn skipped_label(s: Skipped) -> &'static str {
    match s {
        Skipped::Replayed => "replayed",
        Skipped::Duplicate => "duplicate",
        Skipped::Late => "late",
        Skipped::Bot => "bot",
        Skipped::Unscorable => "unscorable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_skip_label_is_registered_at_start() {
        for s in [
            Skipped::Replayed,
            Skipped::Duplicate,
            Skipped::Late,
            Skipped::Bot,
            Skipped::Unscorable,
        ] {
            assert!(
                super::super::metrics::SKIP_REASONS.contains(&skipped_label(s)),
                "{s:?}"
            );
        }
    }
}
