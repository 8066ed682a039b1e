//! The scored lead: 0–100 blend of rules and model, grade, lifecycle stage,
//! top reasons and the reactivation flag.

use crate::{
    features::LeadState,
    rules::{ScoringConfig, days_ms},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grade {
    High,
    Medium,
    Low,
}

impl Grade {
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::High => "high",
            Grade::Medium => "medium",
            Grade::Low => "low",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Intent within `dormant_after_days` (a first-time lead, or one that
    /// woke up), or interest only and first seen within `stages.new_days`.
    New,
    /// No intent for `dormant_after_days` up to `stages.nurture_after_days`.
    Dormant,
    /// Interest only past `stages.new_days`, lost (a call outcome said not
    /// interested or bought elsewhere, with no intent since), or no intent
    /// for `stages.nurture_after_days`.
    Nurture,
    /// Purchased within `stages.retained_after_days`.
    Customer,
    /// Purchased longer ago than that: an owner, scored for upgrade.
    Retained,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::New,
        Stage::Dormant,
        Stage::Nurture,
        Stage::Customer,
        Stage::Retained,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::New => "new",
            Stage::Dormant => "dormant",
            Stage::Nurture => "nurture",
            Stage::Customer => "customer",
            Stage::Retained => "retained",
        }
    }

    pub fn from_index(i: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(i).ok()?).copied()
    }
}

impl Grade {
    pub const ALL: [Grade; 3] = [Grade::High, Grade::Medium, Grade::Low];

    pub fn from_index(i: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(i).ok()?).copied()
    }
}

/// A model's probability of purchase for a feature vector.
pub trait Model: Send + Sync {
    fn probability(&self, row: &crate::features::FeatureRow) -> f64;
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub score: f64,
    /// The rules' part alone (0–100), before blending with the model.
    pub rule_score: f64,
    /// Model probability when a model is loaded, else the rule score / 100
    /// (uncalibrated).
    pub probability: f64,
    pub grade: Grade,
    pub stage: Stage,
    /// Top 3 reason codes with their points.
    pub reasons: Vec<(&'static str, f64)>,
    pub reactivated: bool,
    /// An owner (customer or retained) with no activity for `stages.churn_after_days`.
    pub churn_risk: bool,
}

impl Scored {
    /// What a sales team acts on; a change of it is worth a new record.
    pub fn class(&self) -> Class {
        Class {
            grade: self.grade,
            stage: self.stage,
            reactivated: self.reactivated,
            churn_risk: self.churn_risk,
        }
    }
}

/// The part of a score that time alone can change and that is emitted when
/// it does: grade, stage and the two flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    pub grade: Grade,
    pub stage: Stage,
    pub reactivated: bool,
    pub churn_risk: bool,
}

/// Why a score record was emitted (`lead_score.change_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeReason {
    /// An event of the lead.
    Event,
    /// Another lead's history was merged into this one, or this one into another.
    Merged,
    /// Intent decayed enough to lower the grade.
    Decayed,
    WentDormant,
    WentNurture,
    BecameRetained,
    /// Any other stage change time alone makes (kept for completeness).
    StageChanged,
    ReactivationExpired,
    ChurnRisk,
}

impl ChangeReason {
    pub const ALL: [ChangeReason; 9] = [
        ChangeReason::Event,
        ChangeReason::Merged,
        ChangeReason::Decayed,
        ChangeReason::WentDormant,
        ChangeReason::WentNurture,
        ChangeReason::BecameRetained,
        ChangeReason::StageChanged,
        ChangeReason::ReactivationExpired,
        ChangeReason::ChurnRisk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeReason::Event => "event",
            ChangeReason::Merged => "merged",
            ChangeReason::Decayed => "decayed",
            ChangeReason::WentDormant => "went_dormant",
            ChangeReason::WentNurture => "went_nurture",
            ChangeReason::BecameRetained => "became_retained",
            ChangeReason::StageChanged => "stage_changed",
            ChangeReason::ReactivationExpired => "reactivation_expired",
            ChangeReason::ChurnRisk => "churn_risk",
        }
    }

    /// Why time alone moved a lead from `before` to `after` (which differ).
    /// A stage change names the change; then a new churn risk, an expired
    /// flag, and last a grade change.
    pub fn for_time(before: Class, after: Class) -> Self {
        if before.stage != after.stage {
            return match after.stage {
                Stage::Dormant => ChangeReason::WentDormant,
                Stage::Nurture => ChangeReason::WentNurture,
                Stage::Retained => ChangeReason::BecameRetained,
                Stage::New | Stage::Customer => ChangeReason::StageChanged,
            };
        }
        if after.churn_risk && !before.churn_risk {
            ChangeReason::ChurnRisk
        } else if before.reactivated && !after.reactivated {
            ChangeReason::ReactivationExpired
        } else {
            ChangeReason::Decayed
        }
    }
}

pub fn stage(state: &LeadState, now_ms: i64, cfg: &ScoringConfig) -> Stage {
    let st = &cfg.stages;
    if let Some(p) = state.last_purchase_ms.get() {
        return if now_ms - p >= days_ms(st.retained_after_days) {
            Stage::Retained
        } else {
            Stage::Customer
        };
    }
    let intent = state.last_high_intent_ms.get();
    if state
        .last_lost_ms
        .get()
        .is_some_and(|l| intent.is_none_or(|h| l >= h))
    {
        return Stage::Nurture;
    }
    match intent {
        Some(h) if now_ms - h < cfg.dormant_after_ms() => Stage::New,
        Some(h) if now_ms - h < days_ms(st.nurture_after_days) => Stage::Dormant,
        Some(_) => Stage::Nurture,
        None if now_ms - state.first_seen_ms < days_ms(st.new_days) => Stage::New,
        None => Stage::Nurture,
    }
}

fn is_owner(state: &LeadState) -> bool {
    state.last_purchase_ms.get().is_some()
}

pub fn score(
    state: &LeadState,
    now_ms: i64,
    cfg: &ScoringConfig,
    model: Option<&dyn Model>,
) -> Scored {
    let contributions = cfg.contributions(state, now_ms);
    let points: f64 = contributions.iter().map(|(_, p)| p).sum();
    let rule = cfg.rule_score(points);
    let (score, probability) = match model {
        Some(m) => {
            let p = m.probability(&state.feature_row(now_ms, cfg.half_life_ms()));
            (
                cfg.model_weight * 100.0 * p + (1.0 - cfg.model_weight) * rule,
                p,
            )
        }
        None => (rule, rule / 100.0),
    };
    let grade = if score >= cfg.grades.high {
        Grade::High
    } else if score >= cfg.grades.medium {
        Grade::Medium
    } else {
        Grade::Low
    };
    Scored {
        score,
        rule_score: rule,
        probability,
        grade,
        stage: stage(state, now_ms, cfg),
        reasons: contributions.into_iter().take(3).collect(),
        reactivated: reactivated(state, now_ms, cfg),
        churn_risk: is_owner(state)
            && now_ms - state.last_event_ms >= days_ms(cfg.stages.churn_after_days),
    }
}

fn reactivated(state: &LeadState, now_ms: i64, cfg: &ScoringConfig) -> bool {
    state
        .reactivated_at_ms
        .get()
        .is_some_and(|r| now_ms >= r && now_ms - r <= days_ms(cfg.reactivated_flag_days))
}

/// The earliest instant after `after_ms` at which time alone may change the
/// lead's [`Class`], if any: a stage boundary, a flag expiring or being
/// raised, or the rule score decaying below a grade threshold. With a model
/// blended in (`model_loaded`) the score has no closed form in time, so a
/// lead above low is also re-checked every `model_recheck_hours`. A
/// boundary is a candidate, not a promise: the caller re-scores at it and
/// emits only if the class changed.
pub fn next_change(
    state: &LeadState,
    after_ms: i64,
    cfg: &ScoringConfig,
    recheck: bool,
) -> Option<i64> {
    if state.events == 0 {
        return None;
    }
    let st = &cfg.stages;
    let mut next: Option<i64> = None;
    let mut consider = |t: i64| {
        if t > after_ms {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
    };
    if let Some(p) = state.last_purchase_ms.get() {
        consider(p + days_ms(st.retained_after_days));
        consider(state.last_event_ms + days_ms(st.churn_after_days));
    } else if let Some(h) = state.last_high_intent_ms.get() {
        consider(h + cfg.dormant_after_ms());
        consider(h + days_ms(st.nurture_after_days));
    } else {
        consider(state.first_seen_ms + days_ms(st.new_days));
    }
    if let Some(r) = state.reactivated_at_ms.get() {
        // The flag holds through r + days inclusive; it is gone 1 ms later.
        consider(r + days_ms(cfg.reactivated_flag_days) + 1);
    }
    // The rule points all decay by one factor, so the rule score falls below
    // a threshold at a time that has a closed form.
    let at = after_ms.max(state.decayed_at_ms);
    let points: f64 = cfg.contributions(state, at).iter().map(|(_, p)| p).sum();
    if points > 0.0 {
        let score = cfg.rule_score(points);
        let hl = cfg.half_life_ms() as f64;
        for threshold in [cfg.grades.high, cfg.grades.medium] {
            if score >= threshold {
                let needed = cfg.points_for(threshold);
                if needed > 0.0 {
                    let dt = hl * (points / needed).log2();
                    // A minute past the crossing: never a float hair early.
                    consider(at + dt.ceil() as i64 + 60_000);
                }
            }
        }
    }
    if recheck && cfg.model_weight > 0.0 {
        consider(at + cfg.model_recheck_ms());
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        DAY_MS,
        event::{LeadEvent, Signal},
        rules::DEFAULT_TOML,
    };

    const T0: i64 = 1_795_305_600_000;

    fn ev(ts: i64, signals: &[Signal], order: bool) -> LeadEvent {
        LeadEvent {
            message_id: String::new(),
            event: String::new(),
            ts_ms: ts,
            platform: None,
            signals: signals.to_vec(),
            model_id: None,
            price: None,
            channel: None,
            session_id: None,
            is_bot: false,
            order,
            lost: false,
            purchase_ms: None,
            duration_ms: None,
            page_value: None,
            categories: [0; crate::context::CATEGORIES],
        }
    }

    fn run(events: &[LeadEvent], now: i64) -> Scored {
        let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
        let mut s = LeadState::new(events[0].ts_ms);
        for e in events {
            s.apply(e, cfg.half_life_ms(), cfg.dormant_after_ms());
        }
        score(&s, now, &cfg, None)
    }

    #[test]
    fn hot_buyers_grade_high_browsers_low_and_quiet_leads_cool_down() {
        let hot = [
            ev(T0, &[Signal::PageView, Signal::Configurator], false),
            ev(T0 + 3_600_000, &[Signal::PriceFinance], false),
            ev(T0 + DAY_MS, &[Signal::TestDrive], false),
            ev(T0 + DAY_MS + 60_000, &[Signal::LeadForm], false),
        ];
        let s = run(&hot, T0 + DAY_MS + 60_000);
        assert_eq!(s.grade, Grade::High, "{s:?}");
        assert_eq!(
            s.reasons.iter().map(|r| r.0).collect::<Vec<_>>(),
            ["test_drive_booked", "lead_form_submitted", "configurator"]
        );
        assert_eq!(s.stage, Stage::New);
        let browser = [
            ev(T0, &[Signal::PageView], false),
            ev(T0 + 60_000, &[Signal::PageView], false),
        ];
        assert_eq!(run(&browser, T0 + 60_000).grade, Grade::Low);
        let cooled = run(&hot, T0 + 30 * DAY_MS);
        assert!(cooled.score < 15.0, "{}", cooled.score);
        assert_eq!(run(&hot, T0 + 120 * DAY_MS).stage, Stage::Dormant);
    }

    #[test]
    fn stages_follow_intent_purchase_and_call_outcomes() {
        let bought = [
            ev(T0, &[Signal::StoreVisit], false),
            ev(T0 + DAY_MS, &[], true),
        ];
        assert_eq!(run(&bought, T0 + 100 * DAY_MS).stage, Stage::Customer);
        let old = run(&bought, T0 + 800 * DAY_MS);
        assert_eq!(old.stage, Stage::Retained);
        assert_eq!(old.grade, Grade::Low, "an owner who shows nothing is low");
        assert!(old.churn_risk, "silent for two years");
        assert!(!run(&bought, T0 + 100 * DAY_MS).churn_risk);
        // An owner who configures and books a drive is an upgrade prospect.
        let mut upgrading = bought.to_vec();
        upgrading.push(ev(T0 + 790 * DAY_MS, &[Signal::Configurator], false));
        upgrading.push(ev(T0 + 795 * DAY_MS, &[Signal::PriceFinance], false));
        upgrading.push(ev(T0 + 799 * DAY_MS, &[Signal::TestDrive], false));
        let up = run(&upgrading, T0 + 800 * DAY_MS);
        assert_eq!(up.stage, Stage::Retained);
        assert_ne!(up.grade, Grade::Low, "{up:?}");
        assert!(up.score > old.score && !up.churn_risk);

        let browsing = [
            ev(T0, &[Signal::PageView], false),
            ev(T0 + 60 * DAY_MS, &[Signal::PageView], false),
        ];
        assert_eq!(run(&browsing, T0 + 60 * DAY_MS).stage, Stage::New);
        assert_eq!(
            run(&browsing, T0 + 100 * DAY_MS).stage,
            Stage::Nurture,
            "interest only, past new_days"
        );
        let intent = [ev(T0, &[Signal::Configurator], false)];
        assert_eq!(run(&intent, T0 + 89 * DAY_MS).stage, Stage::New);
        assert_eq!(run(&intent, T0 + 90 * DAY_MS).stage, Stage::Dormant);
        assert_eq!(run(&intent, T0 + 364 * DAY_MS).stage, Stage::Dormant);
        assert_eq!(run(&intent, T0 + 365 * DAY_MS).stage, Stage::Nurture);
        let mut lost = intent.to_vec();
        let mut call = ev(T0 + DAY_MS, &[], false);
        call.lost = true;
        lost.push(call);
        assert_eq!(run(&lost, T0 + 2 * DAY_MS).stage, Stage::Nurture);
        lost.push(ev(T0 + 30 * DAY_MS, &[Signal::PriceFinance], false));
        assert_eq!(
            run(&lost, T0 + 31 * DAY_MS).stage,
            Stage::New,
            "intent after the lost call wins the lead back"
        );
    }

    /// Walks `events` and then time, re-scoring at every `next_change`, and
    /// returns the class at each emitted change with its reason.
    fn timeline(events: &[LeadEvent], until: i64) -> Vec<(i64, ChangeReason, Class)> {
        let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
        let mut s = LeadState::new(events[0].ts_ms);
        let mut out = Vec::new();
        let mut last: Option<Class> = None;
        let mut at = events[0].ts_ms;
        let mut pending = events.iter().peekable();
        loop {
            let due = next_change(&s, at, &cfg, false).filter(|d| *d <= until);
            let next_event = pending.peek().map(|e| e.ts_ms);
            match (due, next_event) {
                (Some(d), n) if n.is_none_or(|n| d < n) => {
                    let c = score(&s, d, &cfg, None).class();
                    if Some(c) != last {
                        out.push((d, ChangeReason::for_time(last.unwrap(), c), c));
                        last = Some(c);
                    }
                    at = d;
                }
                (_, Some(n)) => {
                    let e = pending.next().expect("peeked");
                    s.apply(e, cfg.half_life_ms(), cfg.dormant_after_ms());
                    let c = score(&s, n, &cfg, None).class();
                    out.push((n, ChangeReason::Event, c));
                    last = Some(c);
                    at = n;
                }
                _ => return out,
            }
        }
    }

    #[test]
    fn time_alone_moves_grade_stage_and_flags_once_each() {
        let hot = [
            ev(T0, &[Signal::Configurator, Signal::PriceFinance], false),
            ev(T0 + DAY_MS, &[Signal::TestDrive, Signal::LeadForm], false),
        ];
        let t = timeline(&hot, T0 + 400 * DAY_MS);
        let reasons: Vec<&str> = t.iter().map(|(_, r, _)| r.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "event",
                "event",
                "decayed",
                "decayed",
                "went_dormant",
                "went_nurture"
            ],
            "{t:?}"
        );
        let (dormant_at, _, c) = t[4];
        assert_eq!(dormant_at, T0 + DAY_MS + 90 * DAY_MS);
        assert_eq!((c.stage, c.grade), (Stage::Dormant, Grade::Low));
        // Each decay lands just after the score crosses its threshold.
        let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
        let mut s = LeadState::new(T0);
        for e in &hot {
            s.apply(e, cfg.half_life_ms(), cfg.dormant_after_ms());
        }
        let (high_to_medium, _, _) = t[2];
        assert!(score(&s, high_to_medium - 120_000, &cfg, None).score >= 70.0);
        assert!(score(&s, high_to_medium, &cfg, None).score < 70.0);

        // Dormant, then intent: reactivated, and the flag expires by itself.
        let mut wake = hot.to_vec();
        wake.push(ev(T0 + 150 * DAY_MS, &[Signal::Configurator], false));
        let t = timeline(&wake, T0 + 200 * DAY_MS);
        let after: Vec<(&str, Stage, bool)> = t
            .iter()
            .filter(|(at, _, _)| *at >= T0 + 150 * DAY_MS)
            .map(|(_, r, c)| (r.as_str(), c.stage, c.reactivated))
            .collect();
        assert_eq!(
            after,
            [
                ("event", Stage::New, true),
                ("reactivation_expired", Stage::New, false)
            ],
            "{t:?}"
        );

        // A customer becomes a retained owner, then a churn risk.
        let bought = [
            ev(T0, &[Signal::StoreVisit], false),
            ev(T0 + DAY_MS, &[], true),
        ];
        let t = timeline(&bought, T0 + 800 * DAY_MS);
        let owner: Vec<(&str, Stage, bool)> = t
            .iter()
            .filter(|(_, r, _)| !matches!(r, ChangeReason::Event | ChangeReason::Decayed))
            .map(|(_, r, c)| (r.as_str(), c.stage, c.churn_risk))
            .collect();
        assert_eq!(
            owner,
            [
                ("churn_risk", Stage::Customer, true),
                ("became_retained", Stage::Retained, true)
            ],
            "{t:?}"
        );
    }

    #[test]
    fn reactivation_flag_lasts_its_configured_days() {
        let wake = [
            ev(T0, &[Signal::LeadForm], false),
            ev(T0 + 150 * DAY_MS, &[Signal::Configurator], false),
        ];
        assert!(run(&wake, T0 + 150 * DAY_MS).reactivated);
        assert!(!run(&wake, T0 + 170 * DAY_MS).reactivated);
    }

    #[test]
    fn replaying_the_same_events_gives_the_same_score() {
        let events: Vec<LeadEvent> = (0..200)
            .map(|i| ev(T0 + i * 3_600_000, &[Signal::ALL[(i % 8) as usize]], false))
            .collect();
        assert_eq!(
            run(&events, T0 + 300 * 3_600_000),
            run(&events, T0 + 300 * 3_600_000)
        );
    }
}
