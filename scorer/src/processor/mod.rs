//! The scoring stage, pure: records of one `by_lead` partition in, score
//! records and follow-up routed records out. The Kafka shell
//! (`runtime::score_loop`) decodes, calls [`Processor::handle`], produces
//! what it returns, then writes [`Processor::take_changelog`] and commits.
//!
//! Merges across partitions: a lead that the identity graph says has merged
//! into another hands its state over (a `MergeState` routed to the survivor)
//! and forwards every later record; a surviving lead asks each lead the
//! graph says merged into it for its state (`MergeRequest`) once.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
};

mod changelog;
mod record;
mod schedule;
pub use changelog::{ChangelogRecord, RestoreError, STREAM_TIME_KEY};
pub use record::{Reason, ScoreRecord};
use record::{event_now, score_output};
use schedule::{catch_up, expiring_version_base, schedule_lead};

use crate::{
    event::{LeadEvent, to_facts},
    identity::IdentityGraph,
    lead::{Lead, message_hash},
    proto::{Body, LeadSnapshot, MergeRequest, MergeState, Routed},
    rules::ScoringConfig,
    score::{ChangeReason, Model, score},
};

/// One `by_lead` record, decoded by the shell.
// Inputs live for one record and are handled straight away; boxing the
// merge state would only add an allocation per merge.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Input {
    /// What an event means for scoring; `None` when it does not map to a
    /// scorable event.
    Event {
        event: Option<LeadEvent>,
        /// The event's only identifier is an unlinked anonymous id.
        anonymous: bool,
    },
    MergeRequest {
        into: String,
    },
    MergeState {
        from: String,
        state: Option<LeadSnapshot>,
    },
}

/// Where the identity graph puts a lead id: the lead it belongs to now, and
/// the leads that merged into it (when it is that lead).
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub root: String,
    pub absorbed: Vec<String>,
}

impl Place {
    pub fn of(graph: &mut IdentityGraph, lead_id: &str) -> Self {
        Self {
            root: graph.current_lead(lead_id),
            absorbed: graph.absorbed_into(lead_id).to_vec(),
        }
    }
}

/// What processing one record produced, in the order it must be produced.
// Outputs live for one record and are produced straight away.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A `lead_score` record, keyed by its lead id, and why it was
    /// emitted (also in the record, for readers).
    Score {
        record: ScoreRecord,
        reason: ChangeReason,
    },
    /// A record for another lead's owner, keyed by `routed.lead_id`.
    Route(Routed),
}

/// Why a record changed nothing; counted by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Already applied before a restart (position at or below the lead's).
    Replayed,
    /// A message id this lead already applied.
    Duplicate,
    /// Older than stream time minus grace: counted on the lead, not applied.
    Late,
    Bot,
    Unscorable,
}

#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub outputs: Vec<Output>,
    pub skipped: Option<Skipped>,
}

#[derive(Debug, Default)]
struct Partition {
    stream_time_ms: i64,
    /// The instant the schedule has run to: stream time minus grace, or
    /// the idle wall clock minus grace. Lateness is judged on stream time
    /// alone, so a backfill of old events after a quiet spell is applied,
    /// not dropped.
    watermark_ms: i64,
    /// Boxed: the map's spare capacity then costs a pointer per slot, not a lead.
    leads: HashMap<String, Box<Lead>>,
    /// Leads changed since the last changelog, each once (`Lead::dirty`).
    dirty: Vec<String>,
    /// Leads expired since the last changelog: their keys get tombstones.
    expired: Vec<String>,
    stream_time_dirty: bool,
    /// Leads by the next instant time alone may change their class. An
    /// entry is live while it matches its lead's `scheduled_ms`; stale ones
    /// are skipped when they surface, so an update pushes only when its due
    /// time moved earlier and a sweep touches only leads that are due.
    schedule: BinaryHeap<Reverse<(i64, String)>>,
    /// Whether the schedule holds every lead, and whether it was built with
    /// a model loaded (which adds re-checks): rebuilt when that changes.
    schedule_built_with_model: Option<bool>,
}

impl Partition {
    fn ensure_schedule(&mut self, cfg: &ScoringConfig, ttl: Option<i64>, model_loaded: bool) {
        if self.schedule_built_with_model == Some(model_loaded) {
            return;
        }
        self.schedule.clear();
        for (key, lead) in &mut self.leads {
            lead.scheduled_ms = None;
            schedule_lead(&mut self.schedule, key, lead, cfg, ttl, model_loaded);
        }
        self.schedule_built_with_model = Some(model_loaded);
    }
}

/// Notes that `lead` (under `key`) changed in this batch; most events are
/// of a lead already noted, and those cost a flag test.
fn mark_dirty(dirty: &mut Vec<String>, key: &str, lead: &mut Lead) {
    if !lead.dirty {
        lead.dirty = true;
        dirty.push(key.to_owned());
    }
}

pub struct Processor {
    cfg: ScoringConfig,
    grace_ms: i64,
    score_bots: bool,
    /// Anonymous leads idle this long (in watermark time) expire.
    anonymous_ttl_ms: Option<i64>,
    partitions: HashMap<i32, Partition>,
}

impl Processor {
    pub fn new(cfg: ScoringConfig, grace_ms: i64, score_bots: bool) -> Self {
        Self {
            cfg,
            grace_ms,
            score_bots,
            anonymous_ttl_ms: None,
            partitions: HashMap::new(),
        }
    }

    /// Expires anonymous leads (every event carried only an anonymous id
    /// the identity graph never linked) once they have had no event for
    /// `ttl_ms` of watermark time: their state is dropped and their
    /// changelog key tombstoned. A later event of the same id starts a new
    /// lead. The TTL must exceed the grace period, or a re-delivered event
    /// could count again on the new lead.
    pub fn with_anonymous_ttl(mut self, ttl_ms: Option<i64>) -> Result<Self, TtlError> {
        if let Some(ttl) = ttl_ms
            && ttl <= self.grace_ms
        {
            return Err(TtlError {
                ttl_ms: ttl,
                grace_ms: self.grace_ms,
            });
        }
        self.anonymous_ttl_ms = ttl_ms;
        Ok(self)
    }

    /// Forgets a partition this instance no longer owns.
    pub fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// The partitions this processor holds state for, in order.
    pub fn partitions(&self) -> Vec<i32> {
        let mut p: Vec<i32> = self.partitions.keys().copied().collect();
        p.sort_unstable();
        p
    }

    pub fn owns(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Marks `partition` owned (even when its changelog was empty).
    pub fn assign(&mut self, partition: i32) {
        self.partitions.entry(partition).or_default();
    }

    pub fn leads(&self) -> usize {
        self.partitions.values().map(|p| p.leads.len()).sum()
    }

    pub fn lead(&self, partition: i32, lead_id: &str) -> Option<&Lead> {
        self.partitions
            .get(&partition)?
            .leads
            .get(lead_id)
            .map(|l| &**l)
    }

    /// Handles one routed record for lead `key` at `position` of `partition`
    /// (`routing::position`: positions only grow along a
    /// partition, and a replayed one is recognised by it). `graph`
    /// must have applied the identity log at least to the record's
    /// `graph_offset`; `graph_offset` is how far it has, stamped on
    /// anything this produces.
    #[allow(clippy::too_many_arguments)]
    pub fn handle(
        &mut self,
        partition: i32,
        position: i64,
        key: &str,
        input: Input,
        graph: &mut IdentityGraph,
        graph_offset: u64,
        model: Option<&dyn Model>,
    ) -> Outcome {
        let place = Place::of(graph, key);
        self.handle_placed(partition, position, key, input, place, graph_offset, model)
    }

    /// [`Processor::handle`] with the graph's answer for `key` looked up
    /// already: the shell holds the shared graph only for that lookup, so
    /// stream threads score in parallel.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_placed(
        &mut self,
        partition: i32,
        position: i64,
        key: &str,
        input: Input,
        place: Place,
        graph_offset: u64,
        model: Option<&dyn Model>,
    ) -> Outcome {
        let hl = self.cfg.half_life_ms();
        let dormant = self.cfg.dormant_after_ms();
        let cfg = &self.cfg;
        let ttl = self.anonymous_ttl_ms;
        let part = self.partitions.entry(partition).or_default();
        part.ensure_schedule(cfg, ttl, model.is_some());
        let mut out = Outcome::default();
        if part
            .leads
            .get(key)
            .is_some_and(|l| l.applied_position >= position)
        {
            out.skipped = Some(Skipped::Replayed);
            return out;
        }
        let Place { root, absorbed } = place;
        if root != key {
            // This lead merged away: hand its state over once, forward the rest.
            if let Some(lead) = part.leads.get_mut(key) {
                if lead.merged_into.is_none() {
                    catch_up(key, lead, part.watermark_ms, cfg, model, &mut out.outputs);
                    lead.merged_into = Some(root.as_str().into());
                    let now = event_now(lead, part.stream_time_ms);
                    let scored = score(&lead.state, now, cfg, model);
                    out.outputs
                        .push(score_output(key, lead, now, &scored, ChangeReason::Merged));
                    out.outputs.push(Output::Route(Routed {
                        lead_id: root.clone(),
                        graph_offset,
                        body: Some(Body::MergeState(MergeState {
                            from: key.to_owned(),
                            state: Some(lead.to_snapshot()),
                        })),
                    }));
                }
                lead.applied_position = position;
                mark_dirty(&mut part.dirty, key, lead);
            }
            let body = match input {
                // The lead it goes to is linked: not anonymous any more.
                Input::Event { event, .. } => Some(Body::Facts(to_facts(event))),
                Input::MergeState { from, state } => {
                    Some(Body::MergeState(MergeState { from, state }))
                }
                Input::MergeRequest { .. } => None,
            };
            if let Some(body) = body {
                out.outputs.push(Output::Route(Routed {
                    lead_id: root,
                    graph_offset,
                    body: Some(body),
                }));
            }
            return out;
        }

        if !part.leads.contains_key(key) {
            part.leads.insert(key.to_owned(), Box::default());
        }
        let lead = part.leads.get_mut(key).expect("inserted above");
        for merged in &absorbed {
            if !lead.has_absorbed(merged) && lead.request(merged) {
                out.outputs.push(Output::Route(Routed {
                    lead_id: merged.clone(),
                    graph_offset,
                    body: Some(Body::MergeRequest(MergeRequest {
                        into: key.to_owned(),
                    })),
                }));
            }
        }
        lead.applied_position = position;
        mark_dirty(&mut part.dirty, key, lead);
        let input_kind = match &input {
            Input::Event { .. } => InputKind::Event,
            _ => InputKind::Merge,
        };
        if let Input::Event { anonymous, .. } = &input {
            let anonymous = *anonymous;
            if !lead.has_events() && lead.merges.is_none() {
                lead.anonymous = anonymous;
            } else if !anonymous {
                lead.anonymous = false;
            }
        }
        let changed = match input {
            Input::Event { event: None, .. } => {
                out.skipped = Some(Skipped::Unscorable);
                false
            }
            Input::Event { event: Some(e), .. } => {
                let horizon = part.stream_time_ms - self.grace_ms;
                lead.seen.forget_before(horizon);
                let hash = message_hash(&e.message_id);
                if e.is_bot && !self.score_bots {
                    out.skipped = Some(Skipped::Bot);
                    false
                } else if lead.seen.contains(hash) {
                    out.skipped = Some(Skipped::Duplicate);
                    false
                } else if e.ts_ms < horizon.max(lead.seen.floor_ms()) {
                    lead.late_events = lead.late_events.saturating_add(1);
                    out.skipped = Some(Skipped::Late);
                    false
                } else {
                    lead.seen.insert(hash, e.ts_ms);
                    // What time alone changed before this event, first.
                    catch_up(key, lead, e.ts_ms, cfg, model, &mut out.outputs);
                    if e.ts_ms > part.stream_time_ms {
                        part.stream_time_ms = e.ts_ms;
                        part.stream_time_dirty = true;
                    }
                    if !lead.has_events() {
                        lead.state = crate::features::LeadState::new(e.ts_ms);
                        if lead.anonymous && ttl.is_some() && lead.version == 0 {
                            lead.version = expiring_version_base(e.ts_ms);
                        }
                    }
                    lead.state.apply(&e, hl, dormant);
                    true
                }
            }
            Input::MergeState { from, state } => {
                if !lead.note_absorbed(from) {
                    out.skipped = Some(Skipped::Duplicate);
                    false
                } else {
                    catch_up(key, lead, part.watermark_ms, cfg, model, &mut out.outputs);
                    match state.map(Lead::from_snapshot) {
                        Some(Ok(other)) => {
                            let had = other.has_events();
                            lead.absorb(other, hl, dormant);
                            had
                        }
                        Some(Err(e)) => {
                            tracing::error!(lead = key, error = %e, "merged state unreadable; counted as lost");
                            false
                        }
                        None => false,
                    }
                }
            }
            // Only a lead that merged away hands over; a request reaching a
            // current lead is stale (the requester saw an older graph).
            Input::MergeRequest { .. } => false,
        };
        if changed {
            let now = event_now(lead, part.stream_time_ms);
            let scored = score(&lead.state, now, cfg, model);
            let reason = if matches!(input_kind, InputKind::Event) {
                ChangeReason::Event
            } else {
                ChangeReason::Merged
            };
            out.outputs
                .push(score_output(key, lead, now, &scored, reason));
        }
        schedule_lead(&mut part.schedule, key, lead, cfg, ttl, model.is_some());
        out
    }
}

#[derive(Debug, Clone, Copy)]
enum InputKind {
    Event,
    Merge,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the anonymous TTL ({ttl_ms} ms) must exceed the grace period ({grace_ms} ms), or a re-delivered event could count again on an expired lead's successor"
)]
pub struct TtlError {
    pub ttl_ms: i64,
    pub grace_ms: i64,
}

#[cfg(test)]
mod tests;
