//! Weighted rules with decay, configured in TOML (default:
//! deploy/config/scoring.toml).

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;

use crate::{DAY_MS, event::Signal, features::LeadState};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScoringConfig {
    /// Intent halves every this many days without new activity.
    pub half_life_days: f64,
    /// Inactivity after which a lead counts as dormant.
    pub dormant_after_days: f64,
    /// Rule points at which the rule score reaches 63 (1 − 1/e of 100).
    pub scale: f64,
    /// Points per unit of (decayed) intent, by reason code.
    pub weights: Weights,
    pub grades: Grades,
    pub stages: Stages,
    /// How long a reactivated lead keeps the flag.
    pub reactivated_flag_days: f64,
    /// Share of the model in the blended score when one is loaded (0 = rules only).
    pub model_weight: f64,
    /// With a model, how often a lead above low is re-checked for a grade change.
    pub model_recheck_hours: f64,
}

/// The rule weights as configured (reason code → points), and by signal
/// for scoring, which reads all of them for every score.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(from = "BTreeMap<String, f64>")]
pub struct Weights {
    by_code: BTreeMap<String, f64>,
    by_signal: [f64; Signal::ALL.len()],
}

impl From<BTreeMap<String, f64>> for Weights {
    fn from(by_code: BTreeMap<String, f64>) -> Self {
        let by_signal = Signal::ALL.map(|s| by_code.get(s.code()).copied().unwrap_or(0.0));
        Self { by_code, by_signal }
    }
}

impl Weights {
    /// The configured reason codes.
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.by_code.keys().map(String::as_str)
    }

    /// Points per unit of `signal`'s intent (0 when not configured).
    pub fn of(&self, signal: Signal) -> f64 {
        self.by_signal[signal.index()]
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grades {
    pub high: f64,
    pub medium: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    /// How long a lead with interest only (no intent) stays new.
    pub new_days: f64,
    /// No intent for this long: nurture.
    pub nurture_after_days: f64,
    pub retained_after_days: f64,
    /// An owner silent this long is flagged as a churn risk.
    pub churn_after_days: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read scoring config {path}: {message}")]
    Read { path: String, message: String },
    #[error("scoring config: {0}")]
    Invalid(String),
}

pub const DEFAULT_TOML: &str = include_str!("../../deploy/config/scoring.toml");

impl ScoringConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let known: Vec<&str> = Signal::ALL.iter().map(|s| s.code()).collect();
        if self.weights.codes().any(|k| k == "prior_purchase") {
            return Err(ConfigError::Invalid(
                "weights.prior_purchase is no longer a rule: a purchase is a stage (customer, retained), and owners are scored for upgrade by their own behaviour; remove the line".into(),
            ));
        }
        if let Some(k) = self.weights.codes().find(|k| !known.contains(k)) {
            return Err(ConfigError::Invalid(format!(
                "weights.{k} is not a reason code; known: {}",
                known.join(", ")
            )));
        }
        for (name, v) in [
            ("half_life_days", self.half_life_days),
            ("scale", self.scale),
            ("dormant_after_days", self.dormant_after_days),
            ("model_recheck_hours", self.model_recheck_hours),
            ("stages.new_days", self.stages.new_days),
            ("stages.nurture_after_days", self.stages.nurture_after_days),
            (
                "stages.retained_after_days",
                self.stages.retained_after_days,
            ),
            ("stages.churn_after_days", self.stages.churn_after_days),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(ConfigError::Invalid(format!("{name} must be positive")));
            }
        }
        if self.stages.nurture_after_days < self.dormant_after_days {
            return Err(ConfigError::Invalid(
                "stages.nurture_after_days must not be less than dormant_after_days".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.model_weight) {
            return Err(ConfigError::Invalid(
                "model_weight must be within 0..=1".into(),
            ));
        }
        if self.grades.medium > self.grades.high {
            return Err(ConfigError::Invalid(
                "grades.medium must not exceed grades.high".into(),
            ));
        }
        Ok(())
    }

    pub fn half_life_ms(&self) -> i64 {
        (self.half_life_days * DAY_MS as f64) as i64
    }

    pub fn dormant_after_ms(&self) -> i64 {
        days_ms(self.dormant_after_days)
    }

    pub fn model_recheck_ms(&self) -> i64 {
        (self.model_recheck_hours * crate::HOUR_MS as f64) as i64
    }

    #[cfg(test)]
    fn weight(&self, code: &str) -> f64 {
        Signal::ALL
            .iter()
            .find(|s| s.code() == code)
            .map_or(0.0, |&s| self.weights.of(s))
    }

    /// Rule points by reason code at `now_ms`, largest first.
    pub fn contributions(&self, state: &LeadState, now_ms: i64) -> Vec<(&'static str, f64)> {
        let intent = state.intent_at(now_ms, self.half_life_ms());
        let mut out: Vec<(&'static str, f64)> = Signal::ALL
            .iter()
            .map(|s| (s.code(), self.weights.of(*s) * f64::from(intent[s.index()])))
            .filter(|(_, p)| *p > 0.0)
            .collect();
        // Ties broken by code so replays give identical reasons.
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        out
    }

    /// 0–100 from rule points, saturating.
    pub fn rule_score(&self, points: f64) -> f64 {
        100.0 * (1.0 - (-points / self.scale).exp())
    }

    /// Rule points at which the rule score reaches `score` (the inverse of
    /// [`Self::rule_score`]); infinite at 100 and above.
    pub fn points_for(&self, score: f64) -> f64 {
        if score >= 100.0 {
            f64::INFINITY
        } else {
            -self.scale * (1.0 - score / 100.0).ln()
        }
    }
}

/// Days as milliseconds.
pub fn days_ms(days: f64) -> i64 {
    (days * DAY_MS as f64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_parses_and_reflects_common_practice() {
        let c = ScoringConfig::parse(DEFAULT_TOML).unwrap();
        assert_eq!(c.weight("configurator"), 10.0);
        assert_eq!(c.weight("test_drive_booked"), 50.0);
        assert_eq!(
            c.weight("prior_purchase"),
            0.0,
            "a purchase is a stage, not points"
        );
        assert!(c.weight("test_drive_booked") > c.weight("lead_form_submitted"));
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let bad = DEFAULT_TOML.replace("configurator = 10", "configurater = 10");
        let err = ScoringConfig::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("weights.configurater"), "{err}");
        let bad = DEFAULT_TOML.replace("model_weight = 0.5", "model_weight = 2.0");
        assert!(
            ScoringConfig::parse(&bad)
                .unwrap_err()
                .to_string()
                .contains("model_weight")
        );
        let bad = DEFAULT_TOML.replace(
            "page_views = 1.0",
            "page_views = 1.0\nprior_purchase = 100.0",
        );
        let err = ScoringConfig::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("prior_purchase is no longer a rule"), "{err}");
        let bad = DEFAULT_TOML.replace("nurture_after_days = 365.0", "nurture_after_days = 30.0");
        let err = ScoringConfig::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("nurture_after_days"), "{err}");
        let r = ScoringConfig::parse(DEFAULT_TOML).unwrap();
        for s in [10.0, 40.0, 70.0] {
            assert!((r.rule_score(r.points_for(s)) - s).abs() < 1e-9);
        }
    }
}
