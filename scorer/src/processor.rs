//! The scoring stage, pure: records of one `by_lead` partition in, score
//! records and follow-up routed records out. The Kafka shell
//! (`runtime::score_loop`) decodes, calls [`Processor::handle`], produces
//! what it returns, then writes [`Processor::take_changelog`] and commits.
//!
//! Merges across partitions: a lead that the identity graph says has merged
//! into another hands its state over (a `MergeState` routed to the survivor)
//! and forwards every later record; a surviving lead asks each lead the
//! graph says merged into it for its state (`MergeRequest`) once.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost::Message;
use serde_json::{Value as Json, json};

use crate::{
    event::{LeadEvent, Platform},
    identity::IdentityGraph,
    lead::{Lead, SnapshotError, message_hash},
    proto::{self, Body, LeadSnapshot, MergeRequest, MergeState, Routed},
    rules::ScoringConfig,
    score::{Model, Scored, score},
};

/// Changelog key holding a partition's stream time.
pub const STREAM_TIME_KEY: &str = "\u{0}stream_time";

/// One `by_lead` record, decoded by the shell.
#[derive(Debug, Clone)]
pub enum Input {
    /// The framed event (forwarded as is) and what it means for scoring;
    /// `None` when it does not map to a scorable event.
    Event {
        framed: Vec<u8>,
        event: Option<LeadEvent>,
    },
    MergeRequest {
        into: String,
    },
    MergeState {
        from: String,
        state: Option<LeadSnapshot>,
    },
}

/// What processing one record produced, in the order it must be produced.
// Outputs live for one record and are produced straight away.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A `lead_score` record (tracking-plan JSON shape) keyed by lead id.
    Score { lead_id: String, record: Json },
    /// A record for another lead's owner, keyed by `routed.lead_id`.
    Route(Routed),
}

/// Why a record changed nothing; counted by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Already applied before a restart (offset at or below the lead's).
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
    leads: HashMap<String, Lead>,
    dirty: BTreeSet<String>,
    stream_time_dirty: bool,
}

pub struct Processor {
    cfg: ScoringConfig,
    grace_ms: i64,
    score_bots: bool,
    partitions: HashMap<i32, Partition>,
}

impl Processor {
    pub fn new(cfg: ScoringConfig, grace_ms: i64, score_bots: bool) -> Self {
        Self {
            cfg,
            grace_ms,
            score_bots,
            partitions: HashMap::new(),
        }
    }

    /// Restores one changelog record of `partition` (latest wins).
    pub fn restore(&mut self, partition: i32, key: &str, value: &[u8]) -> Result<(), RestoreError> {
        let part = self.partitions.entry(partition).or_default();
        if key == STREAM_TIME_KEY {
            let t = proto::StreamTime::decode(value)
                .map_err(|e| RestoreError::Decode(e.to_string()))?;
            part.stream_time_ms = part.stream_time_ms.max(t.ms);
            return Ok(());
        }
        let snap = LeadSnapshot::decode(value).map_err(|e| RestoreError::Decode(e.to_string()))?;
        part.leads
            .insert(key.to_owned(), Lead::from_snapshot(snap)?);
        Ok(())
    }

    /// Forgets a partition this instance no longer owns.
    pub fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
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
        self.partitions.get(&partition)?.leads.get(lead_id)
    }

    /// Changelog records (key, encoded value) for what changed since the
    /// last call, per partition.
    pub fn take_changelog(&mut self) -> BTreeMap<i32, Vec<(String, Vec<u8>)>> {
        let mut out = BTreeMap::new();
        for (&p, part) in &mut self.partitions {
            let mut records: Vec<(String, Vec<u8>)> = std::mem::take(&mut part.dirty)
                .into_iter()
                .filter_map(|k| {
                    let lead = part.leads.get(&k)?;
                    Some((k, lead.to_snapshot().encode_to_vec()))
                })
                .collect();
            if std::mem::take(&mut part.stream_time_dirty) {
                let t = proto::StreamTime {
                    ms: part.stream_time_ms,
                };
                records.push((STREAM_TIME_KEY.to_owned(), t.encode_to_vec()));
            }
            if !records.is_empty() {
                out.insert(p, records);
            }
        }
        out
    }

    /// Handles one record keyed `key` at `offset` of `partition`. `graph`
    /// must have applied the identity log at least to the record's
    /// `graph_offset`; `graph_offset` is how far it has, stamped on
    /// anything this produces.
    #[allow(clippy::too_many_arguments)]
    pub fn handle(
        &mut self,
        partition: i32,
        offset: i64,
        key: &str,
        input: Input,
        graph: &mut IdentityGraph,
        graph_offset: u64,
        model: Option<&dyn Model>,
    ) -> Outcome {
        let hl = self.cfg.half_life_ms();
        let dormant = self.cfg.dormant_after_ms();
        let part = self.partitions.entry(partition).or_default();
        let mut out = Outcome::default();
        if part
            .leads
            .get(key)
            .is_some_and(|l| l.applied_offset >= offset)
        {
            out.skipped = Some(Skipped::Replayed);
            return out;
        }
        let root = graph.current_lead(key);
        if root != key {
            // This lead merged away: hand its state over once, forward the rest.
            if let Some(lead) = part.leads.get_mut(key) {
                if lead.merged_into.is_none() {
                    lead.merged_into = Some(root.clone());
                    let record = score_record(key, lead, part.stream_time_ms, &self.cfg, model);
                    out.outputs.push(Output::Score {
                        lead_id: key.to_owned(),
                        record,
                    });
                    out.outputs.push(Output::Route(Routed {
                        lead_id: root.clone(),
                        graph_offset,
                        body: Some(Body::MergeState(MergeState {
                            from: key.to_owned(),
                            state: Some(lead.to_snapshot()),
                        })),
                    }));
                }
                lead.applied_offset = offset;
                part.dirty.insert(key.to_owned());
            }
            let body = match input {
                Input::Event { framed, .. } => Some(Body::Event(framed)),
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

        let lead = part.leads.entry(key.to_owned()).or_default();
        for merged in graph.absorbed_into(key) {
            if !lead.absorbed.contains(merged) && lead.requested.insert(merged.clone()) {
                out.outputs.push(Output::Route(Routed {
                    lead_id: merged.clone(),
                    graph_offset,
                    body: Some(Body::MergeRequest(MergeRequest {
                        into: key.to_owned(),
                    })),
                }));
            }
        }
        lead.applied_offset = offset;
        part.dirty.insert(key.to_owned());
        let changed = match input {
            Input::Event { event: None, .. } => {
                out.skipped = Some(Skipped::Unscorable);
                false
            }
            Input::Event { event: Some(e), .. } => {
                if e.is_bot && !self.score_bots {
                    out.skipped = Some(Skipped::Bot);
                    false
                } else if !lead.remember(message_hash(&e.message_id)) {
                    out.skipped = Some(Skipped::Duplicate);
                    false
                } else if e.ts_ms < part.stream_time_ms - self.grace_ms {
                    lead.late_events += 1;
                    out.skipped = Some(Skipped::Late);
                    false
                } else {
                    if e.ts_ms > part.stream_time_ms {
                        part.stream_time_ms = e.ts_ms;
                        part.stream_time_dirty = true;
                    }
                    if !lead.has_events() {
                        lead.state = crate::features::LeadState::new(e.ts_ms);
                    }
                    lead.state.apply(&e, hl, dormant);
                    true
                }
            }
            Input::MergeState { from, state } => {
                lead.requested.remove(&from);
                if !lead.absorbed.insert(from) {
                    out.skipped = Some(Skipped::Duplicate);
                    false
                } else {
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
            let record = score_record(key, lead, part.stream_time_ms, &self.cfg, model);
            out.outputs.push(Output::Score {
                lead_id: key.to_owned(),
                record,
            });
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("changelog record does not decode: {0}")]
    Decode(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// The `lead_score` record for `lead` as of its partition's stream time;
/// bumps the lead's version.
fn score_record(
    lead_id: &str,
    lead: &mut Lead,
    stream_time_ms: i64,
    cfg: &ScoringConfig,
    model: Option<&dyn Model>,
) -> Json {
    let s = &lead.state;
    let now = stream_time_ms.max(s.last_event_ms);
    let scored: Scored = score(s, now, cfg, model);
    lead.version += 1;
    json!({
        "lead_id": lead_id,
        "score": round2(scored.score),
        "rule_score": round2(scored.rule_score),
        "probability": scored.probability,
        "grade": scored.grade.as_str(),
        "stage": scored.stage.as_str(),
        "reasons": scored.reasons.iter().map(|(code, points)| json!({"code": code, "points": round2(*points)})).collect::<Vec<_>>(),
        "reactivated": scored.reactivated,
        "event_count": i64::from(s.events),
        "platforms": s.platforms_used().map(Platform::as_str).collect::<Vec<_>>(),
        "first_platform": s.first_platform.map(Platform::as_str),
        "first_channel": s.first_channel.as_deref(),
        "first_seen_at": s.first_seen_ms,
        "last_event_at": s.last_event_ms,
        "merged_into": lead.merged_into.as_deref(),
        "version": lead.version as i64,
        "updated_at": now,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::{event::from_plan, identity::identifiers, rules::DEFAULT_TOML};

    const T0: i64 = 1_795_305_600_000;
    const PARTITIONS: i32 = 4;

    /// Two partitions' worth of `by_lead` traffic, routed like the real topic.
    struct Harness {
        graph: IdentityGraph,
        queues: Vec<VecDeque<(i64, String, Input)>>,
        next_offset: Vec<i64>,
        processors: Vec<Processor>,
        latest: BTreeMap<String, Json>,
    }

    fn partition_of(lead: &str) -> usize {
        (lead.bytes().map(u32::from).sum::<u32>() % PARTITIONS as u32) as usize
    }

    impl Harness {
        fn new() -> Self {
            let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
            Self {
                graph: IdentityGraph::default(),
                queues: (0..PARTITIONS).map(|_| VecDeque::new()).collect(),
                next_offset: vec![0; PARTITIONS as usize],
                // One processor per partition: as if every partition had its own instance.
                processors: (0..PARTITIONS)
                    .map(|_| Processor::new(cfg.clone(), 3_600_000, false))
                    .collect(),
                latest: BTreeMap::new(),
            }
        }

        fn push(&mut self, lead: String, input: Input) {
            let p = partition_of(&lead);
            let o = self.next_offset[p];
            self.next_offset[p] += 1;
            self.queues[p].push_back((o, lead, input));
        }

        /// What the stitcher does: link, resolve, route.
        fn stitch(&mut self, e: Json) {
            let ids = identifiers(&e);
            if ids.len() > 1 {
                self.graph.link(&ids);
            }
            let lead = self.graph.resolve(&ids);
            let event = from_plan(&e);
            self.push(
                lead,
                Input::Event {
                    framed: e.to_string().into_bytes(),
                    event,
                },
            );
        }

        fn drain(&mut self) {
            while let Some(p) = (0..PARTITIONS as usize).find(|p| !self.queues[*p].is_empty()) {
                let (offset, key, input) = self.queues[p].pop_front().unwrap();
                let outcome = self.processors[p].handle(
                    p as i32,
                    offset,
                    &key,
                    input,
                    &mut self.graph,
                    0,
                    None,
                );
                for o in outcome.outputs {
                    match o {
                        Output::Score { lead_id, record } => {
                            self.latest.insert(lead_id, record);
                        }
                        Output::Route(r) => {
                            let input = match r.body.unwrap() {
                                Body::Event(framed) => {
                                    let e: Json = serde_json::from_slice(&framed).unwrap();
                                    Input::Event {
                                        event: from_plan(&e),
                                        framed,
                                    }
                                }
                                Body::MergeRequest(m) => Input::MergeRequest { into: m.into },
                                Body::MergeState(m) => Input::MergeState {
                                    from: m.from,
                                    state: m.state,
                                },
                            };
                            self.push(r.lead_id, input);
                        }
                    }
                }
            }
        }
    }

    fn ev(id: &str, anon: &str, extra: Json, event: &str, page_type: &str, minutes: i64) -> Json {
        let mut e = json!({"message_id": id, "event": event, "anonymous_id": anon,
            "timestamp": T0 + minutes * 60_000, "properties": {"page_type": page_type}});
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        e
    }

    #[test]
    fn ids_on_different_partitions_merge_into_one_lead_with_all_history() {
        let mut h = Harness::new();
        // The union id and the mini-program anonymous id arrive together: the smaller names the lead.
        let mp_lead = crate::identity::lead_id_of("a:mp-1");
        let web = (1..)
            .map(|i| format!("web-{i}"))
            .find(|a| {
                partition_of(&crate::identity::lead_id_of(&format!("a:{a}")))
                    != partition_of(&mp_lead)
            })
            .unwrap();
        let web = web.as_str();
        // Web and mini-program history before anyone knows they are one person.
        for i in 0..5 {
            h.stitch(ev(
                &format!("w{i}"),
                web,
                json!({"platform": "web"}),
                "page_viewed",
                "configurator",
                i,
            ));
            h.stitch(ev(
                &format!("m{i}"),
                "mp-1",
                json!({"platform": "mini_program", "union_id": "wx-1"}),
                "page_viewed",
                "price",
                10 + i,
            ));
        }
        h.drain();
        let web_lead = crate::identity::lead_id_of(&format!("a:{web}"));
        assert_eq!(h.graph.resolve(&["w:wx-1".into()]), mp_lead);
        assert_ne!(
            partition_of(&web_lead),
            partition_of(&mp_lead),
            "the case under test: two partitions"
        );
        // The lead form links the web visitor to a phone; the CRM links the phone to the union id.
        h.stitch(ev(
            "f1",
            web,
            json!({"platform": "web", "phone_hash": "ph-1"}),
            "lead_form_submitted",
            "",
            30,
        ));
        h.stitch(json!({"message_id": "i1", "event": "identify", "type": "identify", "timestamp": T0 + 31 * 60_000,
                        "user_id": "u-1", "phone_hash": "ph-1", "union_id": "wx-1", "platform": "server"}));
        // Later app traffic under the union id only.
        h.stitch(ev(
            "a1",
            "app-1",
            json!({"platform": "app", "union_id": "wx-1"}),
            "test_drive_booked",
            "",
            40,
        ));
        h.drain();

        let survivor = h.graph.current_lead(&web_lead);
        assert_eq!(h.graph.current_lead(&mp_lead), survivor);
        let s = &h.latest[&survivor];
        assert_eq!(s["event_count"], 13, "every event of every linked id: {s}");
        assert_eq!(
            s["platforms"],
            json!(["app", "mini_program", "web", "server"])
        );
        assert_eq!(s["first_platform"], "web", "the earliest history is web's");
        assert_eq!(s["grade"], "high");
        for old in [&web_lead, &mp_lead] {
            if *old != survivor {
                assert_eq!(h.latest[old]["merged_into"], json!(survivor), "{old}");
            }
        }
        // Re-delivery of an applied event changes nothing.
        h.stitch(ev(
            "a1",
            "app-1",
            json!({"platform": "app", "union_id": "wx-1"}),
            "test_drive_booked",
            "",
            40,
        ));
        h.drain();
        assert_eq!(h.latest[&survivor]["event_count"], 13);
    }

    #[test]
    fn late_events_beyond_grace_are_counted_not_applied_and_replays_are_skipped() {
        let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
        let mut p = Processor::new(cfg, 3_600_000, false);
        let mut g = IdentityGraph::default();
        let input = |id: &str, minutes: i64| {
            let e = ev(id, "x", json!({}), "page_viewed", "home", minutes);
            Input::Event {
                event: from_plan(&e),
                framed: vec![],
            }
        };
        let lead = crate::identity::lead_id_of("a:x");
        assert!(
            p.handle(0, 0, &lead, input("1", 600), &mut g, 0, None)
                .skipped
                .is_none()
        );
        assert!(
            p.handle(0, 1, &lead, input("2", 560), &mut g, 0, None)
                .skipped
                .is_none(),
            "inside grace"
        );
        assert_eq!(
            p.handle(0, 2, &lead, input("3", 400), &mut g, 0, None)
                .skipped,
            Some(Skipped::Late)
        );
        assert_eq!(
            p.handle(0, 1, &lead, input("4", 600), &mut g, 0, None)
                .skipped,
            Some(Skipped::Replayed)
        );
        let l = p.lead(0, &lead).unwrap();
        assert_eq!((l.state.events, l.late_events), (2, 1));

        // The changelog restores the same lead on another instance.
        let log = p.take_changelog();
        let mut q = Processor::new(
            ScoringConfig::parse(DEFAULT_TOML).unwrap(),
            3_600_000,
            false,
        );
        for (k, v) in &log[&0] {
            q.restore(0, k, v).unwrap();
        }
        assert_eq!(q.lead(0, &lead), p.lead(0, &lead));
        assert!(p.take_changelog().is_empty(), "nothing changed since");
        assert_eq!(
            q.handle(0, 2, &lead, input("5", 600), &mut g, 0, None)
                .skipped,
            Some(Skipped::Replayed)
        );
    }
}
