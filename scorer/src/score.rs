//! The scored lead: 0–100 blend of rules and model, grade, lifecycle stage,
//! top reasons and the reactivation flag.

use crate::{DAY_MS, features::LeadState, rules::ScoringConfig};

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
    /// First seen less than `stages.new_days` ago.
    New,
    /// No activity for `dormant_after_days`.
    Dormant,
    /// Older than new, active within the dormancy horizon.
    Nurture,
    /// Purchased within `stages.retained_after_days`.
    Customer,
    /// Purchased longer ago than that.
    Retained,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::New => "new",
            Stage::Dormant => "dormant",
            Stage::Nurture => "nurture",
            Stage::Customer => "customer",
            Stage::Retained => "retained",
        }
    }
}

/// A model's probability of purchase for a feature vector.
pub trait Model: Send + Sync {
    fn probability(&self, features: &[f32]) -> f64;
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
}

pub fn stage(state: &LeadState, now_ms: i64, cfg: &ScoringConfig) -> Stage {
    let days = |ms: i64| ms as f64 / DAY_MS as f64;
    if let Some(p) = state.last_purchase_ms {
        return if days(now_ms - p) >= cfg.stages.retained_after_days {
            Stage::Retained
        } else {
            Stage::Customer
        };
    }
    if days(now_ms - state.first_seen_ms) < cfg.stages.new_days {
        Stage::New
    } else if days(now_ms - state.last_event_ms) >= cfg.dormant_after_days {
        Stage::Dormant
    } else {
        Stage::Nurture
    }
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
            let p = m.probability(&state.features(now_ms, cfg.half_life_ms()));
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
    let flag_ms = (cfg.reactivated_flag_days * DAY_MS as f64) as i64;
    Scored {
        score,
        rule_score: rule,
        probability,
        grade,
        stage: stage(state, now_ms, cfg),
        reasons: contributions.into_iter().take(3).collect(),
        reactivated: state
            .reactivated_at_ms
            .is_some_and(|r| now_ms >= r && now_ms - r <= flag_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
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
            purchase_ms: None,
            duration_ms: None,
            page_value: None,
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
    fn stages_follow_purchase_and_age() {
        let bought = [
            ev(T0, &[Signal::StoreVisit], false),
            ev(T0 + DAY_MS, &[], true),
        ];
        assert_eq!(run(&bought, T0 + 100 * DAY_MS).stage, Stage::Customer);
        let old = run(&bought, T0 + 800 * DAY_MS);
        assert_eq!(old.stage, Stage::Retained);
        assert_eq!(
            old.reasons[0].0, "prior_purchase",
            "an owner past 24 months is due"
        );
        let active = [
            ev(T0, &[Signal::PageView], false),
            ev(T0 + 100 * DAY_MS, &[Signal::PageView], false),
        ];
        assert_eq!(run(&active, T0 + 100 * DAY_MS).stage, Stage::Nurture);
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
