//! The quickstart's model: trained, before the run starts, on the history
//! of people who came earlier (another seed of the same simulator), mapped
//! to tracking-plan events by ingest's own pipeline and featurised by the
//! scorer's own code, exactly as `leadstream train` does with real exports.

use std::path::Path;

use anyhow::Context as _;
use leadstream_ingest::server::AppState;
use leadstream_scorer::{
    DAY_MS,
    rules::{DEFAULT_TOML, ScoringConfig},
    train::{Snapshot, TrainedModel, category_names, roc_auc, snapshots},
    trees::{self, TreeParams},
};

use crate::simulate;

/// People in the training history, arriving over `HISTORY_DAYS`.
const PEOPLE: usize = 6_000;
const HISTORY_DAYS: i64 = 720;
/// The check's horizon: does the lead order within 90 days.
const HORIZON_DAYS: i64 = 90;

/// What was trained, for the quickstart's banner.
pub struct Trained {
    pub people: usize,
    pub events: usize,
    pub rejected: usize,
    /// ROC AUC on the history's last quarter, fit on the rest.
    pub holdout_auc: f64,
}

/// Trains on simulated people arriving in the `HISTORY_DAYS` before
/// `start_ms` and writes the model to `path`.
pub fn train(state: &AppState, seed: u64, start_ms: i64, path: &Path) -> anyhow::Result<Trained> {
    let span = HISTORY_DAYS * DAY_MS;
    let mut events = Vec::new();
    let mut rejected = 0;
    for i in 0..PEOPLE {
        let arrives = start_ms - span + (i as i64 * span) / PEOPLE as i64;
        // Another seed than the run's: the model has not seen the people it scores.
        let person = simulate::person(seed ^ 0x7a11_ed5e_ed00_0001, i, arrives);
        for (t, platform, call) in &person.calls {
            let source = state
                .sources
                .authenticate(simulate::write_key(platform))
                .context("the dev write keys are not in the sources")?;
            match state.pipeline.plan_json(call, source, *t, i64::MAX) {
                Ok(e) => events.push(e),
                Err(_) => rejected += 1,
            }
        }
    }
    let cfg = ScoringConfig::parse(DEFAULT_TOML)?;
    let snaps = snapshots(&events, &cfg, HORIZON_DAYS * DAY_MS);
    let names = category_names(&events);
    let params = TreeParams::default();
    let split = start_ms - span / 4;
    let (fit_on, held): (Vec<Snapshot>, Vec<Snapshot>) =
        snaps.iter().cloned().partition(|s| s.ts_ms < split);
    let check = trees::fit(&fit_on, &names, &[], HORIZON_DAYS as f64, &params)?;
    let scored: Vec<(f64, bool)> = held
        .iter()
        .map(|s| (check.probability(&s.features), s.label))
        .collect();
    let model = TrainedModel::Trees(trees::fit(
        &snaps,
        &names,
        &[],
        HORIZON_DAYS as f64,
        &params,
    )?);
    std::fs::write(path, serde_json::to_string(&model)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Trained {
        people: PEOPLE,
        events: events.len(),
        rejected,
        holdout_auc: roc_auc(&scored),
    })
}
