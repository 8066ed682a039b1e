//! Time as an input: each lead's next possible change (or anonymous
//! expiry) in its partition's schedule, and the sweep that re-scores due
//! leads as the watermark passes them.

use std::{cmp::Reverse, collections::BinaryHeap};

use super::{Output, Processor, mark_dirty, record::score_output};
use crate::{
    lead::Lead,
    rules::ScoringConfig,
    score::{ChangeReason, Grade, Model, next_change, score},
};

/// Whether `lead` needs the model's periodic re-check: a model is loaded
/// and the lead was last graded above low.
fn recheck(lead: &Lead, model_loaded: bool) -> bool {
    model_loaded && lead.emitted.is_some_and(|c| c.grade != Grade::Low)
}

/// When `lead` expires under an anonymous TTL of `ttl` ms: `ttl` after its
/// last event, if it is anonymous (a lead with no events at once).
fn expires_at(lead: &Lead, ttl: Option<i64>) -> Option<i64> {
    let ttl = ttl.filter(|_| lead.anonymous && lead.merged_into.is_none())?;
    Some(if lead.has_events() {
        lead.state.last_event_ms.saturating_add(ttl)
    } else {
        i64::MIN
    })
}

/// The first output version of a fresh anonymous lead when leads expire:
/// its first event's time × 1000. A lead that expired and came back
/// starts above every version its former self emitted (it had fewer than
/// 1000 scores per millisecond of its life and the TTL), so tables that
/// keep the highest version (lead_scores) show the new one.
pub(super) fn expiring_version_base(first_event_ms: i64) -> u64 {
    u64::try_from(first_event_ms)
        .unwrap_or(0)
        .saturating_mul(1000)
}

/// Puts `lead` in `schedule` at its next possible change, unless a live
/// entry is already due no later.
pub(super) fn schedule_lead(
    schedule: &mut BinaryHeap<Reverse<(i64, String)>>,
    key: &str,
    lead: &mut Lead,
    cfg: &ScoringConfig,
    ttl: Option<i64>,
    model_loaded: bool,
) {
    if lead.merged_into.is_some() {
        return;
    }
    let change = next_change(
        &lead.state,
        lead.evaluated_ms,
        cfg,
        recheck(lead, model_loaded),
    );
    let due = match (change, expires_at(lead, ttl)) {
        (Some(c), Some(e)) => Some(c.min(e)),
        (c, e) => c.or(e),
    };
    if let Some(due) = due
        && lead.scheduled_ms.is_none_or(|s| due < s)
    {
        schedule.push(Reverse((due, key.to_owned())));
        lead.scheduled_ms = Some(due);
    }
}

/// Re-scores `lead` at every instant up to `upto` where time alone may
/// change its class, emitting a record (with the reason) for each change.
/// Scoring at the boundary, not at whatever time the sweep runs, makes the
/// records the same on replay. True when anything was emitted.
pub(super) fn catch_up(
    key: &str,
    lead: &mut Lead,
    upto: i64,
    cfg: &ScoringConfig,
    model: Option<&dyn Model>,
    outputs: &mut Vec<Output>,
) -> bool {
    if lead.merged_into.is_some() || !lead.has_events() {
        return false;
    }
    // The lead's schedule entry is never later than its next change: when
    // it lies past `upto`, nothing is due (most events of an active lead).
    if lead.scheduled_ms.is_some_and(|s| s > upto) {
        return false;
    }
    let mut emitted = false;
    while let Some(due) = next_change(
        &lead.state,
        lead.evaluated_ms,
        cfg,
        recheck(lead, model.is_some()),
    )
    .filter(|d| *d <= upto)
    {
        let scored = score(&lead.state, due, cfg, model);
        let class = scored.class();
        match lead.emitted {
            Some(before) if before != class => {
                let reason = ChangeReason::for_time(before, class);
                outputs.push(score_output(key, lead, due, &scored, reason));
                emitted = true;
            }
            Some(_) => lead.evaluated_ms = due,
            // State from before emissions were tracked: adopt, do not emit.
            None => {
                lead.emitted = Some(class);
                lead.evaluated_ms = due;
            }
        }
    }
    emitted
}

impl Processor {
    /// Runs `partition`'s schedule to its watermark: stream time minus
    /// grace, or, when the shell says the partition is idle, the wall clock
    /// (`idle_now_ms`, from its injectable clock) minus grace. Emits a score
    /// for each lead whose class time alone changed; touches only due leads.
    pub fn advance(
        &mut self,
        partition: i32,
        idle_now_ms: Option<i64>,
        model: Option<&dyn Model>,
    ) -> Vec<Output> {
        let cfg = &self.cfg;
        let ttl = self.anonymous_ttl_ms;
        let Some(part) = self.partitions.get_mut(&partition) else {
            return Vec::new();
        };
        part.ensure_schedule(cfg, ttl, model.is_some());
        let mut w = part.stream_time_ms - self.grace_ms;
        if let Some(now) = idle_now_ms {
            w = w.max(now - self.grace_ms);
        }
        if w > part.watermark_ms {
            part.watermark_ms = w;
            part.stream_time_dirty = true;
        }
        let mut outputs = Vec::new();
        while let Some(Reverse((due, _))) = part.schedule.peek()
            && *due <= part.watermark_ms
        {
            let Some(Reverse((due, key))) = part.schedule.pop() else {
                break;
            };
            let Some(lead) = part.leads.get_mut(&key) else {
                continue;
            };
            if lead.scheduled_ms != Some(due) {
                continue;
            }
            lead.scheduled_ms = None;
            let expires = expires_at(lead, ttl).filter(|at| *at <= part.watermark_ms);
            // Time's changes up to the expiry are still emitted.
            let upto = expires.unwrap_or(part.watermark_ms);
            if catch_up(&key, lead, upto, cfg, model, &mut outputs) {
                mark_dirty(&mut part.dirty, &key, lead);
            }
            if expires.is_some() {
                // Its key may stay in `dirty`; the changelog skips leads it
                // no longer holds.
                part.leads.remove(&key);
                part.expired.push(key);
                continue;
            }
            schedule_lead(&mut part.schedule, &key, lead, cfg, ttl, model.is_some());
        }
        // Stale entries pile up only when due times keep moving earlier;
        // rebuild once they outnumber the leads.
        if part.schedule.len() > 2 * part.leads.len() + 1024 {
            part.schedule_built_with_model = None;
            part.ensure_schedule(cfg, ttl, model.is_some());
        }
        outputs
    }

    /// Leads due in `partition`'s schedule (live or stale entries), for metrics.
    pub fn scheduled(&self) -> usize {
        self.partitions.values().map(|p| p.schedule.len()).sum()
    }
}
