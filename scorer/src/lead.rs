//! A lead as the scorer keeps it between events: its feature state plus the
//! bookkeeping that makes processing repeatable (output version, last
//! applied offset, the message ids it must recognise again, merges done
//! and pending), and its
//! snapshot form for the changelog.

use std::collections::BTreeSet;

use crate::{
    event::Platform,
    features::{LeadState, MaybeMs},
    proto::{EmittedClass, LeadSnapshot},
    score::{Class, Grade, Stage},
    window::Windows,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Lead {
    /// `events == 0` until the first event (or merged state) arrives.
    pub state: LeadState,
    pub version: u64,
    /// `by_lead` position of the last routed record applied
    /// (`routing::position`); replays skip up to it.
    pub applied_position: i64,
    pub seen: SeenIds,
    /// Leads folded into this one and those asked to hand over; boxed and
    /// absent for the many leads that never merge.
    pub merges: Option<Box<Merges>>,
    pub merged_into: Option<Box<str>>,
    pub late_events: u32,
    /// Class of the last score emitted; time-driven re-scores emit only
    /// when it changes.
    pub emitted: Option<Class>,
    /// The instant the last emitted (or re-checked) score referred to.
    pub evaluated_ms: i64,
    /// Due time of this lead's live entry in its partition's schedule
    /// (rebuilt on restore, not persisted).
    pub scheduled_ms: Option<i64>,
    /// Every event so far carried only an anonymous id the identity graph
    /// never linked, and nothing merged in: the lead may expire.
    pub anonymous: bool,
    /// Listed in its partition's changed leads since the last changelog
    /// (not persisted).
    pub dirty: bool,
}

impl Default for Lead {
    fn default() -> Self {
        Self {
            state: LeadState::new(0),
            version: 0,
            applied_position: -1,
            seen: SeenIds::default(),
            merges: None,
            merged_into: None,
            late_events: 0,
            emitted: None,
            evaluated_ms: i64::MIN,
            scheduled_ms: None,
            anonymous: false,
            dirty: false,
        }
    }
}

/// The message ids (hashed) of a lead's events that a re-delivery could
/// still be applied on top of, with their event times.
///
/// An event older than the partition's stream time minus the grace period
/// is late and never applied, so a re-delivered copy of it cannot count
/// twice: only ids of events at or after that horizon are needed, and
/// [`SeenIds::forget_before`] lets the rest go. That makes the check exact
/// for any replay (a stitcher rewind, an ingest spool re-sent after a
/// produce timeout, an SDK retry) however many events it spans, while the
/// memory follows the lead's events within the grace period, not its
/// lifetime. `floor_ms` is the horizon the ids were let go at: a lead merged
/// in from a partition further ahead in stream time brings it along, and
/// events below it count as late here too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenIds {
    ids: Vec<(u64, i64)>,
    floor_ms: i64,
}

impl Default for SeenIds {
    fn default() -> Self {
        Self {
            ids: Vec::new(),
            floor_ms: i64::MIN,
        }
    }
}

impl SeenIds {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn contains(&self, hash: u64) -> bool {
        self.ids.iter().any(|(h, _)| *h == hash)
    }

    /// Below this event time a re-delivery can no longer be recognised.
    pub fn floor_ms(&self) -> i64 {
        self.floor_ms
    }

    /// Remembers `hash` (an event at `ts_ms`); false when it already was.
    pub fn insert(&mut self, hash: u64, ts_ms: i64) -> bool {
        if self.contains(hash) {
            return false;
        }
        self.ids.push((hash, ts_ms));
        true
    }

    /// Lets go of ids of events before `horizon_ms`.
    pub fn forget_before(&mut self, horizon_ms: i64) {
        if horizon_ms <= self.floor_ms {
            return;
        }
        self.floor_ms = horizon_ms;
        self.ids.retain(|(_, ts)| *ts >= horizon_ms);
        if self.ids.is_empty() {
            self.ids = Vec::new();
        } else if self.ids.capacity() > 2 * self.ids.len() + 4 {
            self.ids.shrink_to_fit();
        }
    }

    /// Takes in a merged lead's ids and horizon.
    pub fn absorb(&mut self, other: &SeenIds) {
        for &(hash, ts) in &other.ids {
            self.insert(hash, ts);
        }
        self.floor_ms = self.floor_ms.max(other.floor_ms);
    }

    /// Oldest remembered first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, i64)> + '_ {
        self.ids.iter().copied()
    }
}

/// A lead's merge bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merges {
    pub absorbed: BTreeSet<String>,
    pub requested: BTreeSet<String>,
}

/// Hash of a message id as remembered per lead.
pub fn message_hash(message_id: &str) -> u64 {
    crate::fnv1a64(message_id)
}

impl Lead {
    pub fn has_events(&self) -> bool {
        self.state.events > 0
    }

    pub fn has_absorbed(&self, lead: &str) -> bool {
        self.merges
            .as_ref()
            .is_some_and(|m| m.absorbed.contains(lead))
    }

    /// Notes that `lead` was asked for its state; false if it already was.
    pub fn request(&mut self, lead: &str) -> bool {
        self.merges
            .get_or_insert_default()
            .requested
            .insert(lead.to_owned())
    }

    /// Notes `lead`'s state as folded in; false if it already was.
    pub fn note_absorbed(&mut self, lead: String) -> bool {
        let m = self.merges.get_or_insert_default();
        m.requested.remove(&lead);
        m.absorbed.insert(lead)
    }

    /// Folds a merged lead into this one.
    pub fn absorb(&mut self, other: Lead, half_life_ms: i64, dormant_after_ms: i64) {
        if other.has_events() {
            if self.has_events() {
                self.state
                    .merge(&other.state, half_life_ms, dormant_after_ms);
            } else {
                self.state = other.state;
            }
        }
        self.seen.absorb(&other.seen);
        if let Some(theirs) = other.merges {
            self.merges
                .get_or_insert_default()
                .absorbed
                .extend(theirs.absorbed);
        }
        self.late_events = self.late_events.saturating_add(other.late_events);
        // A merge is a link: the lead is someone's now.
        self.anonymous = false;
    }

    pub fn to_snapshot(&self) -> LeadSnapshot {
        let s = &self.state;
        LeadSnapshot {
            windows: s.windows.to_bytes(),
            decayed: s.decayed.to_vec(),
            decayed_at_ms: s.decayed_at_ms,
            first_seen_ms: s.first_seen_ms,
            last_event_ms: s.last_event_ms,
            last_high_intent_ms: s.last_high_intent_ms.get(),
            woke_at_ms: s.woke_at_ms.get(),
            reactivated_at_ms: s.reactivated_at_ms.get(),
            events: s.events,
            sessions: u32::from(s.sessions),
            models: s.models.to_vec(),
            distinct_models: u32::from(s.distinct_models),
            max_price: s.max_price,
            max_page_value: s.max_page_value,
            duration_s: s.duration_s,
            platforms: u32::from(s.platforms),
            first_channel: s.first_channel.as_deref().map(str::to_owned),
            first_platform: s.first_platform.map(|p| p as u32),
            test_drive_booked: s.test_drive_booked,
            lead_form_submitted: s.lead_form_submitted,
            last_purchase_ms: s.last_purchase_ms.get(),
            version: self.version,
            applied_offset: crate::routing::offset_of(self.applied_position),
            applied_position: Some(self.applied_position),
            recent: self.seen.iter().map(|(h, _)| h).collect(),
            recent_ts_ms: self.seen.iter().map(|(_, ts)| ts).collect(),
            seen_floor_ms: (self.seen.floor_ms() != i64::MIN).then_some(self.seen.floor_ms()),
            absorbed: self
                .merges
                .iter()
                .flat_map(|m| m.absorbed.iter().cloned())
                .collect(),
            requested: self
                .merges
                .iter()
                .flat_map(|m| m.requested.iter().cloned())
                .collect(),
            merged_into: self.merged_into.as_deref().map(str::to_owned),
            late_events: u64::from(self.late_events),
            last_lost_ms: s.last_lost_ms.get(),
            emitted: self.emitted.map(|c| EmittedClass {
                grade: c.grade as u32,
                stage: c.stage as u32,
                reactivated: c.reactivated,
                churn_risk: c.churn_risk,
            }),
            evaluated_ms: self.evaluated_ms,
            model_page_s: s.model_page_s,
            category_values: s.categories.values.to_vec(),
            category_seen_s: s.categories.seen_s.to_vec(),
            anonymous: self.anonymous,
        }
    }

    /// Rebuilds a lead from its snapshot; the error names the bad field.
    pub fn from_snapshot(p: LeadSnapshot) -> Result<Self, SnapshotError> {
        let windows = Windows::from_bytes(&p.windows).ok_or(SnapshotError("windows"))?;
        let mut state = LeadState::new(p.first_seen_ms);
        state.windows = windows;
        state.decayed = p.decayed.try_into().map_err(|_| SnapshotError("decayed"))?;
        state.models = p.models.try_into().map_err(|_| SnapshotError("models"))?;
        state.decayed_at_ms = p.decayed_at_ms;
        state.last_event_ms = p.last_event_ms;
        state.last_high_intent_ms = MaybeMs::from(p.last_high_intent_ms);
        state.woke_at_ms = MaybeMs::from(p.woke_at_ms);
        state.reactivated_at_ms = MaybeMs::from(p.reactivated_at_ms);
        state.events = p.events;
        state.sessions = u16::try_from(p.sessions).map_err(|_| SnapshotError("sessions"))?;
        state.distinct_models =
            u8::try_from(p.distinct_models).map_err(|_| SnapshotError("distinct_models"))?;
        state.max_price = p.max_price;
        state.max_page_value = p.max_page_value;
        state.duration_s = p.duration_s;
        state.platforms = u8::try_from(p.platforms).map_err(|_| SnapshotError("platforms"))?;
        state.first_channel = p.first_channel.map(Into::into);
        state.first_platform = p
            .first_platform
            .map(|i| Platform::from_index(i).ok_or(SnapshotError("first_platform")))
            .transpose()?;
        state.test_drive_booked = p.test_drive_booked;
        state.lead_form_submitted = p.lead_form_submitted;
        state.last_purchase_ms = MaybeMs::from(p.last_purchase_ms);
        state.last_lost_ms = MaybeMs::from(p.last_lost_ms);
        state.model_page_s = p.model_page_s;
        // Snapshots from before the categorical context have none.
        if !p.category_values.is_empty() {
            state.categories.values = p
                .category_values
                .try_into()
                .map_err(|_| SnapshotError("category_values"))?;
            state.categories.seen_s = p
                .category_seen_s
                .try_into()
                .map_err(|_| SnapshotError("category_seen_s"))?;
        }
        let emitted = p
            .emitted
            .map(|c| {
                Ok::<_, SnapshotError>(Class {
                    grade: Grade::from_index(c.grade).ok_or(SnapshotError("emitted.grade"))?,
                    stage: Stage::from_index(c.stage).ok_or(SnapshotError("emitted.stage"))?,
                    reactivated: c.reactivated,
                    churn_risk: c.churn_risk,
                })
            })
            .transpose()?;
        Ok(Self {
            state,
            version: p.version,
            applied_position: p
                .applied_position
                .unwrap_or_else(|| crate::routing::legacy_position(p.applied_offset)),
            seen: {
                // Snapshots from before event times were kept: assume the
                // lead's last event time, so they are let go with it.
                let mut seen = SeenIds::default();
                let times = p
                    .recent_ts_ms
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(p.last_event_ms));
                for (hash, ts) in p.recent.iter().copied().zip(times) {
                    seen.insert(hash, ts);
                }
                if let Some(floor) = p.seen_floor_ms {
                    seen.floor_ms = floor;
                }
                seen
            },
            merges: (!p.absorbed.is_empty() || !p.requested.is_empty()).then(|| {
                Box::new(Merges {
                    absorbed: p.absorbed.into_iter().collect(),
                    requested: p.requested.into_iter().collect(),
                })
            }),
            merged_into: p.merged_into.map(Into::into),
            late_events: u32::try_from(p.late_events).unwrap_or(u32::MAX),
            emitted,
            evaluated_ms: p.evaluated_ms,
            scheduled_ms: None,
            anonymous: p.anonymous,
            dirty: false,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lead snapshot has an invalid {0}")]
pub struct SnapshotError(pub &'static str);

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::event::{LeadEvent, Platform, Signal};

    #[test]
    fn a_lead_survives_its_snapshot_bit_for_bit() {
        let mut lead = Lead::default();
        let e = LeadEvent {
            message_id: "m1".into(),
            event: "page_viewed".into(),
            ts_ms: 1_795_305_600_000,
            platform: Some(Platform::MiniProgram),
            signals: vec![Signal::PageView, Signal::Configurator],
            model_id: Some("x5".into()),
            price: Some(61_000.0),
            channel: Some("wechat".into()),
            session_id: None,
            is_bot: false,
            order: false,
            lost: false,
            purchase_ms: None,
            duration_ms: Some(30_000),
            page_value: None,
            categories: [0; crate::context::CATEGORIES],
        };
        lead.state = LeadState::new(e.ts_ms);
        lead.state.apply(&e, 7 * crate::DAY_MS, 90 * crate::DAY_MS);
        lead.version = 3;
        lead.applied_position = 41 << 16 | 3;
        assert!(lead.seen.insert(message_hash("m0"), e.ts_ms - 60_000));
        assert!(lead.seen.insert(message_hash("m1"), e.ts_ms));
        assert!(!lead.seen.insert(message_hash("m1"), e.ts_ms));
        lead.seen.forget_before(e.ts_ms - 1);
        assert!(lead.note_absorbed("Labc".into()));
        lead.merged_into = Some("Lxyz".into());
        lead.emitted = Some(Class {
            grade: Grade::Medium,
            stage: Stage::Dormant,
            reactivated: true,
            churn_risk: false,
        });
        lead.evaluated_ms = 1_795_305_600_123;
        let bytes = lead.to_snapshot().encode_to_vec();
        let back = Lead::from_snapshot(LeadSnapshot::decode(bytes.as_slice()).unwrap()).unwrap();
        assert_eq!(back, lead);
        let mut bad = lead.to_snapshot();
        bad.decayed.pop();
        assert_eq!(Lead::from_snapshot(bad), Err(SnapshotError("decayed")));
    }

    #[test]
    fn seen_ids_let_go_only_of_events_before_the_horizon() {
        let mut seen = SeenIds::default();
        for i in 0..1_000 {
            assert!(seen.insert(i, i as i64 * 1_000));
        }
        assert!(
            !seen.insert(999, 0),
            "a copy is recognised whatever its time"
        );
        seen.forget_before(400_000);
        assert_eq!(seen.len(), 600);
        assert!(!seen.contains(399) && seen.contains(400));
        assert_eq!(seen.floor_ms(), 400_000);
        seen.forget_before(1_000);
        assert_eq!((seen.len(), seen.floor_ms()), (600, 400_000), "never back");

        // A merged lead brings its ids and the higher horizon.
        let mut other = SeenIds::default();
        other.insert(5_000, 2_000_000);
        other.forget_before(900_000);
        let mut survivor = SeenIds::default();
        survivor.absorb(&seen);
        survivor.absorb(&other);
        assert_eq!(survivor.len(), 601);
        assert_eq!(survivor.floor_ms(), 900_000);
        survivor.forget_before(i64::MAX);
        assert!(survivor.is_empty());
    }

    #[test]
    fn snapshots_from_before_event_times_keep_their_ids() {
        let mut lead = Lead::default();
        lead.state.last_event_ms = 77;
        let mut old = lead.to_snapshot();
        old.recent = vec![1, 2];
        old.recent_ts_ms.clear();
        let back = Lead::from_snapshot(old).unwrap();
        assert_eq!(back.seen.iter().collect::<Vec<_>>(), [(1, 77), (2, 77)]);
        assert_eq!(back.seen.floor_ms(), i64::MIN);
    }
}
