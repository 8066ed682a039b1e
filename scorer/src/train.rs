//! `leadstream train`: replays historical tracking-plan events through the
//! scorer's own feature code, takes point-in-time snapshots, labels each by
//! whether an order follows within the horizon, and fits either
//! gradient-boosted trees over the behaviour and the categorical context
//! ([`crate::trees`], the default) or a smartcore logistic regression over
//! the numeric features (the baseline).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use smartcore::{
    linalg::basic::{arrays::Array, matrix::DenseMatrix},
    linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters},
};

use crate::{
    DAY_MS,
    context::{CATEGORIES, values as category_values},
    event::{LeadEvent, from_plan},
    features::{FEATURE_NAMES, FeatureRow, LeadState},
    identity::{IdentityGraph, identifiers},
    rules::ScoringConfig,
    score::Model,
};

/// Features of one lead at one moment, and whether it ordered afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub lead_id: String,
    pub ts_ms: i64,
    pub features: FeatureRow,
    pub label: bool,
    /// Taken while the lead was quiet (days after its last event), not at
    /// the end of an active day.
    pub idle: bool,
}

/// Days after a lead's last event at which it is also snapshotted while it
/// stays quiet: the live scorer scores quiet leads as time passes (dormant
/// pools, owners), so the model must have seen leads that long quiet.
pub const IDLE_SNAPSHOT_DAYS: [i64; 5] = [7, 30, 90, 180, 365];

/// Category values by slot and hash, as the events spell them: models
/// store values, leads only hashes.
pub fn category_names(events: &[Json]) -> Vec<HashMap<u32, String>> {
    let mut names = vec![HashMap::new(); CATEGORIES];
    for e in events {
        for (slot, v) in category_values(e).into_iter().enumerate() {
            if let Some(v) = v {
                names[slot].entry(crate::context::hash(&v)).or_insert(v);
            }
        }
    }
    for m in crate::context::MONTH_NAMES {
        names[crate::context::MONTH_SLOT].insert(crate::context::hash(m), m.to_owned());
    }
    names
}

/// Replays `events` (any order; sorted here by time) and snapshots every
/// lead at the end of each active day and just before each order, so no
/// snapshot sees the order it is labelled with; and, while a lead stays
/// quiet, [`IDLE_SNAPSHOT_DAYS`] after its last event, as long as the data
/// covers the horizon after that instant (so the label is known). Identity
/// uses the final graph (every link known up front), which is kinder than
/// live scoring.
pub fn snapshots(events: &[Json], cfg: &ScoringConfig, horizon_ms: i64) -> Vec<Snapshot> {
    let mut graph = IdentityGraph::default();
    let mut parsed: Vec<(Vec<String>, LeadEvent)> = Vec::with_capacity(events.len());
    // A message id counts once, as live (an export can repeat a re-sent event).
    let mut seen = std::collections::HashSet::new();
    for e in events {
        let ids = identifiers(e);
        let Some(le) = from_plan(e) else { continue };
        if ids.is_empty()
            || le.is_bot
            || (!le.message_id.is_empty() && !seen.insert(le.message_id.clone()))
        {
            continue;
        }
        graph.link(&ids);
        parsed.push((ids, le));
    }
    parsed.sort_by(|a, b| {
        a.1.ts_ms
            .cmp(&b.1.ts_ms)
            .then(a.1.message_id.cmp(&b.1.message_id))
    });
    let mut orders: HashMap<String, Vec<i64>> = HashMap::new();
    let leads: Vec<String> = parsed
        .iter()
        .map(|(ids, le)| {
            let lead = graph.lead_of(&ids[0]).expect("linked above");
            if le.order {
                orders.entry(lead.clone()).or_default().push(le.ts_ms);
            }
            lead
        })
        .collect();

    let (hl, dormant) = (cfg.half_life_ms(), cfg.dormant_after_ms());
    let data_end = parsed.last().map_or(i64::MIN, |(_, le)| le.ts_ms);
    let mut states: BTreeMap<String, LeadState> = BTreeMap::new();
    let mut out = Vec::new();
    let at = |lead: &str, s: &LeadState, ts: i64, idle: bool, out: &mut Vec<Snapshot>| {
        let label = orders
            .get(lead)
            .is_some_and(|o| o.iter().any(|t| *t > ts && *t - ts <= horizon_ms));
        out.push(Snapshot {
            lead_id: lead.to_owned(),
            ts_ms: ts,
            features: s.feature_row(ts, hl),
            label,
            idle,
        });
    };
    let snap = |lead: &str, s: &LeadState, out: &mut Vec<Snapshot>| {
        at(lead, s, s.last_event_ms, false, out);
    };
    // Quiet until `next` (the lead's next event, or the end of the data).
    let quiet = |lead: &str, s: &LeadState, next: i64, out: &mut Vec<Snapshot>| {
        for d in IDLE_SNAPSHOT_DAYS {
            let t = s.last_event_ms + d * DAY_MS;
            if t < next && t.saturating_add(horizon_ms) <= data_end {
                at(lead, s, t, true, out);
            }
        }
    };
    let mut ended_with_order: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for ((_, le), lead) in parsed.iter().zip(&leads) {
        if let Some(s) = states.get(lead)
            && s.events > 0
        {
            if le.order || s.last_event_ms.div_euclid(DAY_MS) != le.ts_ms.div_euclid(DAY_MS) {
                snap(lead, s, &mut out);
            }
            quiet(lead, s, le.ts_ms, &mut out);
        }
        states
            .entry(lead.clone())
            .or_insert_with(|| LeadState::new(le.ts_ms))
            .apply(le, hl, dormant);
        if le.order {
            ended_with_order.insert(lead);
        } else {
            ended_with_order.remove(lead.as_str());
        }
    }
    // A lead whose history ends with its order has nothing left to predict
    // at that moment; once quiet it is an owner who may buy again.
    for (lead, s) in &states {
        if !ended_with_order.contains(lead.as_str()) {
            snap(lead, s, &mut out);
        }
        quiet(lead, s, i64::MAX, &mut out);
    }
    out
}

/// A trained logistic regression over standardised features.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogisticModel {
    pub features: Vec<String>,
    /// Indices into [`FEATURE_NAMES`] the model uses.
    pub columns: Vec<usize>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    pub horizon_days: f64,
    pub thresholds: Thresholds,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Thresholds {
    pub high: f64,
    pub medium: f64,
}

impl LogisticModel {
    /// Refuses a model trained on another feature set (another release's
    /// features, a hand-edited file): each column must name the feature
    /// this build computes at that index, or scores would be silently wrong.
    pub fn check_compatible(&self) -> Result<(), String> {
        let n = self.columns.len();
        if [self.mean.len(), self.std.len(), self.coefficients.len()]
            .iter()
            .any(|l| *l != n)
        {
            return Err(format!(
                "it is inconsistent: {} columns, {} means, {} spreads, {} coefficients",
                n,
                self.mean.len(),
                self.std.len(),
                self.coefficients.len()
            ));
        }
        check_feature_columns(&self.features, &self.columns)?;
        if let Some(j) = self.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!(
                "feature `{}` has a spread of {}",
                self.features[j], self.std[j]
            ));
        }
        Ok(())
    }

    pub fn probability(&self, row: &FeatureRow) -> f64 {
        let z: f64 = self
            .columns
            .iter()
            .enumerate()
            .map(|(j, &c)| {
                self.coefficients[j] * ((f64::from(row.numeric[c]) - self.mean[j]) / self.std[j])
            })
            .sum::<f64>()
            + self.intercept;
        1.0 / (1.0 + (-z).exp())
    }
}

/// Each model column must name the feature this build computes there.
pub fn check_feature_columns(features: &[String], columns: &[usize]) -> Result<(), String> {
    if features.len() != columns.len() {
        return Err(format!(
            "it is inconsistent: {} columns, {} feature names",
            columns.len(),
            features.len()
        ));
    }
    for (name, &c) in features.iter().zip(columns) {
        match FEATURE_NAMES.get(c) {
            Some(ours) if ours == name => {}
            Some(ours) => {
                return Err(format!(
                    "it was trained on another feature set: column {c} is `{name}` in the model but `{ours}` in this build; retrain it with `leadstream train`"
                ));
            }
            None => {
                return Err(format!(
                    "it was trained on another feature set: column {c} (`{name}`) does not exist in this build ({} features); retrain it with `leadstream train`",
                    FEATURE_NAMES.len()
                ));
            }
        }
    }
    Ok(())
}

/// A model file: which learner, and its parameters. Files written before
/// the learner was named are logistic regressions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrainedModel {
    Trees(crate::trees::TreeModel),
    Logistic(LogisticModel),
}

impl TrainedModel {
    /// Parses a model file and refuses one this build cannot score with.
    pub fn parse(text: &str) -> Result<Self, String> {
        let v: Json = serde_json::from_str(text).map_err(|e| format!("it is not JSON: {e}"))?;
        let mut model = if v.get("kind").is_some() {
            serde_json::from_value::<TrainedModel>(v)
        } else {
            serde_json::from_value::<LogisticModel>(v).map(TrainedModel::Logistic)
        }
        .map_err(|e| format!("it is not a leadstream model: {e}"))?;
        match &mut model {
            TrainedModel::Trees(t) => t.prepare()?,
            TrainedModel::Logistic(l) => l.check_compatible()?,
        }
        Ok(model)
    }

    pub fn thresholds(&self) -> Thresholds {
        match self {
            TrainedModel::Trees(t) => t.thresholds,
            TrainedModel::Logistic(l) => l.thresholds,
        }
    }

    pub fn learner(&self) -> &'static str {
        match self {
            TrainedModel::Trees(_) => "gradient-boosted trees",
            TrainedModel::Logistic(_) => "L2 logistic regression",
        }
    }
}

impl Model for TrainedModel {
    fn probability(&self, row: &FeatureRow) -> f64 {
        match self {
            TrainedModel::Trees(t) => t.probability(row),
            TrainedModel::Logistic(l) => l.probability(row),
        }
    }
}

impl Model for LogisticModel {
    fn probability(&self, row: &FeatureRow) -> f64 {
        LogisticModel::probability(self, row)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("not enough data: {0}")]
    NotEnoughData(String),
    #[error("unknown feature {0:?}; known: {1}")]
    UnknownFeature(String, String),
    #[error("smartcore: {0}")]
    Fit(String),
}

/// Fits on `train` using every feature except `exclude`.
pub fn fit(
    train: &[Snapshot],
    exclude: &[String],
    horizon_days: f64,
    alpha: f64,
) -> Result<LogisticModel, TrainError> {
    let columns = columns_except(exclude)?;
    let positives = train.iter().filter(|s| s.label).count();
    if positives == 0 || positives == train.len() {
        return Err(TrainError::NotEnoughData(format!(
            "{} snapshots, {positives} positive: need both classes",
            train.len()
        )));
    }
    let n = train.len() as f64;
    let mean: Vec<f64> = columns
        .iter()
        .map(|&c| {
            train
                .iter()
                .map(|s| f64::from(s.features.numeric[c]))
                .sum::<f64>()
                / n
        })
        .collect();
    let std: Vec<f64> = columns
        .iter()
        .zip(&mean)
        .map(|(&c, m)| {
            let var = train
                .iter()
                .map(|s| (f64::from(s.features.numeric[c]) - m).powi(2))
                .sum::<f64>()
                / n;
            // Constant columns get std 1 so they contribute nothing instead of NaN.
            if var > 1e-12 { var.sqrt() } else { 1.0 }
        })
        .collect();
    let rows: Vec<Vec<f64>> = train
        .iter()
        .map(|s| {
            columns
                .iter()
                .enumerate()
                .map(|(j, &c)| (f64::from(s.features.numeric[c]) - mean[j]) / std[j])
                .collect()
        })
        .collect();
    let x = DenseMatrix::from_2d_vec(&rows).map_err(|e| TrainError::Fit(e.to_string()))?;
    let y: Vec<i32> = train.iter().map(|s| i32::from(s.label)).collect();
    let lr = LogisticRegression::fit(
        &x,
        &y,
        LogisticRegressionParameters::default().with_alpha(alpha),
    )
    .map_err(|e| TrainError::Fit(e.to_string()))?;
    let coefficients: Vec<f64> = (0..columns.len())
        .map(|j| *lr.coefficients().get((0, j)))
        .collect();
    let intercept = *lr.intercept().get((0, 0));
    let mut model = LogisticModel {
        features: feature_names(&columns),
        columns,
        mean,
        std,
        coefficients,
        intercept,
        horizon_days,
        thresholds: Thresholds {
            high: 1.0,
            medium: 1.0,
        },
    };
    model.thresholds = grade_thresholds_on(train, |f| model.probability(f));
    Ok(model)
}

/// The names of feature `columns`, as a model file lists them.
pub fn feature_names(columns: &[usize]) -> Vec<String> {
    columns
        .iter()
        .map(|&c| FEATURE_NAMES[c].to_owned())
        .collect()
}

/// Indices of every numeric feature but `exclude`; names in `exclude` must
/// be features or categorical slots.
pub fn columns_except(exclude: &[String]) -> Result<Vec<usize>, TrainError> {
    let slots = crate::context::CATEGORY_SLOTS.map(|(n, _)| n);
    for e in exclude {
        if !FEATURE_NAMES.contains(&e.as_str()) && !slots.contains(&e.as_str()) {
            return Err(TrainError::UnknownFeature(
                e.clone(),
                FEATURE_NAMES
                    .iter()
                    .chain(&slots)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        }
    }
    Ok((0..FEATURE_NAMES.len())
        .filter(|c| !exclude.iter().any(|e| e == FEATURE_NAMES[*c]))
        .collect())
}

/// Grade cuts chosen on the training set, scored by `probability`:
/// precision ≥ 0.6 is high, ≥ 0.3 medium.
pub fn grade_thresholds_on(
    train: &[Snapshot],
    probability: impl Fn(&FeatureRow) -> f64,
) -> Thresholds {
    let scored: Vec<(f64, bool)> = train
        .iter()
        .map(|s| (probability(&s.features), s.label))
        .collect();
    Thresholds {
        high: threshold_for_precision(&scored, 0.6),
        medium: threshold_for_precision(&scored, 0.3),
    }
}

/// The lowest probability cut whose precision (on `scored`) is still at
/// least `precision`; the top decile's cut if none reaches it.
fn threshold_for_precision(scored: &[(f64, bool)], precision: f64) -> f64 {
    let mut sorted = scored.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut hits = 0usize;
    let mut best = None;
    for (i, (p, label)) in sorted.iter().enumerate() {
        hits += usize::from(*label);
        if i >= 9 && hits as f64 / (i + 1) as f64 >= precision {
            best = Some(*p);
        }
    }
    best.unwrap_or_else(|| sorted[(sorted.len() / 10).min(sorted.len() - 1)].0)
}

/// Area under the ROC curve (Mann–Whitney, ties counted half).
pub fn roc_auc(scored: &[(f64, bool)]) -> f64 {
    let mut sorted = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[i].0 {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg_rank * sorted[i..=j].iter().filter(|s| s.1).count() as f64;
        i = j + 1;
    }
    let pos = scored.iter().filter(|s| s.1).count() as f64;
    let neg = scored.len() as f64 - pos;
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Average precision (area under the precision–recall curve).
pub fn pr_auc(scored: &[(f64, bool)]) -> f64 {
    let mut sorted = scored.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pos = scored.iter().filter(|s| s.1).count() as f64;
    let (mut hits, mut ap) = (0.0, 0.0);
    for (i, (_, label)) in sorted.iter().enumerate() {
        if *label {
            hits += 1.0;
            ap += hits / (i + 1) as f64;
        }
    }
    ap / pos
}

/// Ten equal-width probability bins: (from, to, count, mean predicted, observed rate).
pub fn calibration(scored: &[(f64, bool)]) -> Vec<(f64, f64, usize, f64, f64)> {
    (0..10)
        .map(|b| {
            let (lo, hi) = (b as f64 / 10.0, (b + 1) as f64 / 10.0);
            let bin: Vec<&(f64, bool)> = scored
                .iter()
                .filter(|(p, _)| *p >= lo && (*p < hi || (b == 9 && *p <= hi)))
                .collect();
            let n = bin.len();
            let mean = if n == 0 {
                0.0
            } else {
                bin.iter().map(|s| s.0).sum::<f64>() / n as f64
            };
            let rate = if n == 0 {
                0.0
            } else {
                bin.iter().filter(|s| s.1).count() as f64 / n as f64
            };
            (lo, hi, n, mean, rate)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::DEFAULT_TOML;
    use serde_json::json;

    #[test]
    fn a_model_from_another_feature_set_is_refused_with_the_reason() {
        let model = |features: Vec<&str>, columns: Vec<usize>| LogisticModel {
            mean: vec![0.0; columns.len()],
            std: vec![1.0; columns.len()],
            coefficients: vec![0.5; columns.len()],
            features: features.into_iter().map(str::to_owned).collect(),
            columns,
            intercept: 0.0,
            horizon_days: 30.0,
            thresholds: Thresholds {
                high: 0.5,
                medium: 0.2,
            },
        };
        let ok = model(vec![FEATURE_NAMES[0], FEATURE_NAMES[5]], vec![0, 5]);
        assert_eq!(ok.check_compatible(), Ok(()));
        let moved = model(vec![FEATURE_NAMES[0]], vec![3]);
        let err = moved.check_compatible().unwrap_err();
        assert!(
            err.contains("another feature set") && err.contains("retrain"),
            "{err}"
        );
        let beyond = model(vec!["log_page_views_90d"], vec![FEATURE_NAMES.len() + 4]);
        assert!(
            beyond
                .check_compatible()
                .unwrap_err()
                .contains("does not exist")
        );
        let mut short = ok.clone();
        short.mean.pop();
        assert!(
            short
                .check_compatible()
                .unwrap_err()
                .contains("inconsistent")
        );
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let perfect = [(0.9, true), (0.8, true), (0.2, false), (0.1, false)];
        assert_eq!(roc_auc(&perfect), 1.0);
        assert_eq!(pr_auc(&perfect), 1.0);
        let mixed = [(0.9, true), (0.8, false), (0.7, true), (0.1, false)];
        assert_eq!(roc_auc(&mixed), 0.75);
        assert!((pr_auc(&mixed) - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!(
            roc_auc(&[(0.5, true), (0.5, false)]),
            0.5,
            "ties count half"
        );
    }

    fn ev(id: &str, anon: &str, event: &str, ts: i64, props: Json) -> Json {
        json!({"message_id": id, "event": event, "anonymous_id": anon, "timestamp": ts, "platform": "web", "context": {}, "properties": props})
    }

    #[test]
    fn quiet_leads_are_snapshotted_while_the_data_covers_their_horizon() {
        let t = 1_795_305_600_000_i64;
        let page = |id: &str, anon: &str, ts: i64| {
            ev(
                id,
                anon,
                "page_viewed",
                ts,
                json!({"page_type": "configurator"}),
            )
        };
        let events = vec![
            page("1", "a", t),
            page("2", "a", t + 100 * DAY_MS),
            ev("3", "a", "order_placed", t + 120 * DAY_MS, json!({})),
            page("4", "b", t + 250 * DAY_MS),
        ];
        let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
        let snaps = snapshots(&events, &cfg, 30 * DAY_MS);
        let idle: Vec<(i64, bool)> = snaps
            .iter()
            .filter(|s| s.idle)
            .map(|s| ((s.ts_ms - t) / DAY_MS, s.label))
            .collect();
        // Before a's second visit: 7, 30 and 90 days on (the order at day
        // 120 is within 30 days of day 90); after it: 7 (30 would pass the
        // order); after the order, as an owner: 7, 30 and 90 days on (180
        // would need data past day 330).
        assert_eq!(
            idle,
            [
                (7, false),
                (30, false),
                (90, true),
                (107, true),
                (127, false),
                (150, false),
                (210, false)
            ],
            "{snaps:#?}"
        );
        let col = FEATURE_NAMES
            .iter()
            .position(|f| *f == "days_since_last_event")
            .unwrap();
        let first_idle = snaps.iter().find(|s| s.idle).unwrap();
        assert_eq!(first_idle.features.numeric[col], 7.0);
    }

    #[test]
    fn snapshots_never_see_the_order_they_are_labelled_with() {
        let t = 1_795_305_600_000_i64;
        let events = vec![
            ev(
                "1",
                "a",
                "page_viewed",
                t,
                json!({"page_type": "configurator"}),
            ),
            ev("2", "a", "order_placed", t + 60_000, json!({})),
            ev("3", "b", "page_viewed", t, json!({"page_type": "home"})),
            ev(
                "4",
                "b",
                "page_viewed",
                t + 2 * DAY_MS,
                json!({"page_type": "home"}),
            ),
        ];
        let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
        let snaps = snapshots(&events, &cfg, 30 * DAY_MS);
        let prior = FEATURE_NAMES
            .iter()
            .position(|f| *f == "prior_purchase")
            .unwrap();
        let a: Vec<&Snapshot> = snaps.iter().filter(|s| s.label).collect();
        assert_eq!(a.len(), 1, "{snaps:#?}");
        assert_eq!(a[0].ts_ms, t);
        assert_eq!(
            a[0].features.numeric[prior], 0.0,
            "the order is not in its own snapshot"
        );
        let b: Vec<&Snapshot> = snaps.iter().filter(|s| !s.label).collect();
        assert_eq!(
            b.len(),
            2,
            "b has a snapshot per active day; a has none after its order"
        );
    }
}
