//! `leadstream train`: fit the scorer's model on historical events.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context as _;
use clap::Args;
use leadstream_scorer::{
    DAY_MS,
    rules::{DEFAULT_TOML, ScoringConfig},
    score::Model,
    train::{Snapshot, TrainedModel, calibration, category_names, fit, pr_auc, roc_auc, snapshots},
    trees::{self, TreeParams},
};
use serde_json::{Value as Json, json};

#[derive(Args)]
pub struct TrainArgs {
    /// Historical events, one tracking-plan JSON object per line (NDJSON).
    #[arg(
        long,
        env = "LEADSTREAM_TRAIN_EVENTS",
        required_unless_present = "clickhouse",
        conflicts_with = "clickhouse"
    )]
    events: Option<PathBuf>,
    /// Read the events from ClickHouse instead (the sink's `events` table), HTTP URL.
    #[arg(long, env = "LEADSTREAM_CLICKHOUSE_URL")]
    clickhouse: Option<String>,
    #[arg(
        long,
        env = "LEADSTREAM_CLICKHOUSE_DATABASE",
        default_value = "leadstream"
    )]
    clickhouse_database: String,
    /// Extra SQL condition on `events` (e.g. "timestamp >= '2026-01-01'").
    #[arg(long, env = "LEADSTREAM_TRAIN_WHERE")]
    r#where: Option<String>,
    /// Scoring config (half-life, dormancy); the built-in default when unset.
    #[arg(long, env = "LEADSTREAM_SCORING_CONFIG")]
    config: Option<PathBuf>,
    /// A snapshot is positive when an order follows within this many days.
    #[arg(long, env = "LEADSTREAM_TRAIN_HORIZON_DAYS", default_value_t = 30.0)]
    horizon_days: f64,
    /// Time split: snapshots from this date (YYYY-MM-DD, UTC) on are the test set.
    #[arg(
        long,
        env = "LEADSTREAM_TRAIN_TEST_FROM",
        conflicts_with = "folds",
        required_unless_present = "folds"
    )]
    test_from: Option<String>,
    /// Instead of a time split: k-fold cross-validation by lead (pooled
    /// out-of-fold predictions); the written model is fit on everything.
    #[arg(long, env = "LEADSTREAM_TRAIN_FOLDS")]
    folds: Option<u32>,
    /// Features to leave out (repeatable), e.g. page_value.
    #[arg(
        long = "exclude",
        env = "LEADSTREAM_TRAIN_EXCLUDE",
        value_delimiter = ','
    )]
    exclude: Vec<String>,
    /// The model written: gradient-boosted trees over behaviour and context
    /// (categories target-encoded), or the logistic-regression baseline over
    /// the numeric features. The report always shows both.
    #[arg(long, env = "LEADSTREAM_TRAIN_LEARNER", value_enum, default_value_t = Learner::Trees)]
    learner: Learner,
    /// Number of trees.
    #[arg(long, env = "LEADSTREAM_TRAIN_TREES", default_value_t = TreeParams::default().trees)]
    trees: usize,
    /// Depth of each tree.
    #[arg(long, env = "LEADSTREAM_TRAIN_MAX_DEPTH", default_value_t = TreeParams::default().max_depth)]
    max_depth: usize,
    /// Step size of each tree.
    #[arg(long, env = "LEADSTREAM_TRAIN_LEARNING_RATE", default_value_t = TreeParams::default().learning_rate)]
    learning_rate: f32,
    /// L2 regularisation strength of the logistic regression.
    #[arg(long, env = "LEADSTREAM_TRAIN_ALPHA", default_value_t = 1.0)]
    alpha: f64,
    /// Where to write the model (JSON).
    #[arg(long, env = "LEADSTREAM_MODEL", default_value = "model.json")]
    out: PathBuf,
    /// Where to write the evaluation report (Markdown).
    #[arg(
        long,
        env = "LEADSTREAM_TRAIN_REPORT",
        default_value = "model-report.md"
    )]
    report: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Learner {
    Trees,
    Logistic,
}

/// Both learners fit on the same training snapshots.
struct Fitted {
    chosen: TrainedModel,
    baseline: Option<TrainedModel>,
}

fn fit_both(
    args: &TrainArgs,
    train: &[Snapshot],
    names: &[std::collections::HashMap<u32, String>],
) -> anyhow::Result<Fitted> {
    let params = TreeParams {
        trees: args.trees,
        max_depth: args.max_depth,
        learning_rate: args.learning_rate,
        ..TreeParams::default()
    };
    let logistic =
        TrainedModel::Logistic(fit(train, &args.exclude, args.horizon_days, args.alpha)?);
    Ok(match args.learner {
        Learner::Logistic => Fitted {
            chosen: logistic,
            baseline: None,
        },
        Learner::Trees => Fitted {
            chosen: TrainedModel::Trees(trees::fit(
                train,
                names,
                &args.exclude,
                args.horizon_days,
                &params,
            )?),
            baseline: Some(logistic),
        },
    })
}

/// Predictions for the active-day snapshots (`idle` false) or for those
/// taken while leads were quiet (`idle` true).
fn score_with(model: &TrainedModel, snaps: &[Snapshot], idle: bool) -> Vec<(f64, bool)> {
    snaps
        .iter()
        .filter(|s| s.idle == idle)
        .map(|s| (model.probability(&s.features), s.label))
        .collect()
}

/// A row of the sink's `events` table (JSONEachRow) back as a
/// tracking-plan event: identities, time, context and properties.
pub fn row_to_event(row: &Json) -> Option<Json> {
    let text = |k: &str| row.get(k).and_then(Json::as_str).filter(|s| !s.is_empty());
    let ts = match row.get("timestamp_ms")? {
        // ClickHouse quotes 64-bit integers in JSON by default.
        Json::String(s) => s.parse::<i64>().ok()?,
        other => other.as_i64()?,
    };
    let parse = |k: &str| {
        text(k)
            .and_then(|t| serde_json::from_str::<Json>(t).ok())
            .unwrap_or(Json::Null)
    };
    Some(json!({
        "message_id": text("message_id")?,
        "event": text("event")?,
        "type": text("type"),
        "platform": text("platform"),
        "anonymous_id": text("anonymous_id"),
        "user_id": text("user_id"),
        "union_id": text("union_id"),
        "phone_hash": text("phone_hash"),
        "timestamp": ts,
        "context": parse("context"),
        "properties": parse("properties"),
    }))
}

async fn events_from_clickhouse(
    url: &str,
    database: &str,
    condition: Option<&str>,
) -> anyhow::Result<Vec<Json>> {
    let sql = format!(
        "SELECT message_id, event, type, platform, anonymous_id, user_id, union_id, phone_hash, timestamp_ms, context, properties \
         FROM {database}.events FINAL {} ORDER BY timestamp_ms FORMAT JSONEachRow",
        condition.map(|c| format!("WHERE {c}")).unwrap_or_default()
    );
    let resp = reqwest::Client::new()
        .post(url)
        .body(sql)
        .send()
        .await
        .with_context(|| format!("querying ClickHouse at {url}"))?;
    let status = resp.status();
    let body = resp.text().await?;
    anyhow::ensure!(
        status.is_success(),
        "ClickHouse answered {status}: {}",
        body.trim()
    );
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let row: Json =
                serde_json::from_str(l).context("ClickHouse returned a line that is not JSON")?;
            row_to_event(&row).with_context(|| {
                format!("events row without message_id, event or timestamp_ms: {l}")
            })
        })
        .collect()
}

fn events_from_file(path: &PathBuf) -> anyhow::Result<Vec<Json>> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut events = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        events.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?,
        );
    }
    Ok(events)
}

pub async fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let cfg = match &args.config {
        Some(p) => ScoringConfig::load(p)?,
        None => ScoringConfig::parse(DEFAULT_TOML)?,
    };
    let events = match (&args.events, &args.clickhouse) {
        (Some(path), _) => events_from_file(path)?,
        (None, Some(url)) => {
            events_from_clickhouse(url, &args.clickhouse_database, args.r#where.as_deref()).await?
        }
        (None, None) => anyhow::bail!("pass --events FILE or --clickhouse URL"),
    };
    let horizon_ms = (args.horizon_days * DAY_MS as f64) as i64;
    let snaps = snapshots(&events, &cfg, horizon_ms);
    let names = category_names(&events);
    // Test-set predictions of the chosen learner and of the baseline.
    // Metrics are on the active-day snapshots (comparable with earlier
    // reports and with data where leads are scored when they act); the
    // quiet ones are reported apart.
    let (train, test, scored, baseline_scored, idle_scored, model, split) =
        match (&args.test_from, args.folds) {
            (Some(date), _) => {
                let split_ms = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
                    .with_context(|| format!("--test-from {date:?} is not YYYY-MM-DD"))?
                    .and_hms_opt(0, 0, 0)
                    .expect("midnight exists")
                    .and_utc()
                    .timestamp_millis();
                let (train, test): (Vec<_>, Vec<_>) =
                    snaps.into_iter().partition(|s| s.ts_ms < split_ms);
                anyhow::ensure!(
                    !test.is_empty(),
                    "no snapshots on or after {date}: move --test-from earlier"
                );
                let fitted = fit_both(&args, &train, &names)?;
                let scored = score_with(&fitted.chosen, &test, false);
                let baseline = fitted
                    .baseline
                    .as_ref()
                    .map(|b| score_with(b, &test, false));
                let idle = score_with(&fitted.chosen, &test, true);
                (
                    train,
                    test,
                    scored,
                    baseline,
                    idle,
                    fitted.chosen,
                    format!("time split at {date}"),
                )
            }
            (None, Some(k)) => {
                anyhow::ensure!(k >= 2, "--folds must be at least 2");
                let fold_of = |lead: &str| {
                    lead.bytes()
                        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
                        % k
                };
                let (mut scored, mut baseline, mut idle) = (Vec::new(), Vec::new(), Vec::new());
                for f in 0..k {
                    let (test, train): (Vec<_>, Vec<_>) = snaps
                        .iter()
                        .cloned()
                        .partition(|s| fold_of(&s.lead_id) == f);
                    let fitted = fit_both(&args, &train, &names)?;
                    scored.extend(score_with(&fitted.chosen, &test, false));
                    idle.extend(score_with(&fitted.chosen, &test, true));
                    if let Some(b) = &fitted.baseline {
                        baseline.extend(score_with(b, &test, false));
                    }
                }
                let model = fit_both(&args, &snaps, &names)?.chosen;
                (
                    snaps.clone(),
                    snaps,
                    scored,
                    (!baseline.is_empty()).then_some(baseline),
                    idle,
                    model,
                    format!("{k}-fold cross-validation by lead, pooled out-of-fold predictions"),
                )
            }
            (None, None) => anyhow::bail!("give --test-from DATE or --folds K"),
        };
    let (auc, ap) = (roc_auc(&scored), pr_auc(&scored));

    let mut r = String::new();
    let pos =
        |v: &[leadstream_scorer::train::Snapshot]| v.iter().filter(|s| s.label && !s.idle).count();
    let active = |v: &[leadstream_scorer::train::Snapshot]| v.iter().filter(|s| !s.idle).count();
    writeln!(r, "# leadstream model report\n")?;
    writeln!(
        r,
        "- events: {} from `{}`",
        events.len(),
        match (&args.events, &args.clickhouse) {
            (Some(p), _) => p.display().to_string(),
            (None, url) => format!(
                "{}.events at {}",
                args.clickhouse_database,
                url.as_deref().unwrap_or_default()
            ),
        }
    )?;
    writeln!(
        r,
        "- snapshots at the end of active days: train {} ({} positive), test {} ({} positive); {split}",
        active(&train),
        pos(&train),
        active(&test),
        pos(&test)
    )?;
    writeln!(
        r,
        "- snapshots of quiet leads ({} days after their last event), also trained on: train {}, test {} ({} positive){}",
        leadstream_scorer::train::IDLE_SNAPSHOT_DAYS
            .map(|d| d.to_string())
            .join(", "),
        train.len() - active(&train),
        idle_scored.len(),
        idle_scored.iter().filter(|s| s.1).count(),
        if idle_scored.iter().any(|s| s.1) && idle_scored.iter().any(|s| !s.1) {
            format!("; ROC AUC on them {:.3}", roc_auc(&idle_scored))
        } else {
            String::new()
        }
    )?;
    writeln!(
        r,
        "- label: order within {} days of the snapshot; model: {}",
        args.horizon_days,
        match &model {
            TrainedModel::Trees(t) => format!(
                "gradient-boosted trees ({} trees, depth {}, step {}; {} numeric features, {} categorical: {})",
                t.trees.len(),
                args.max_depth,
                args.learning_rate,
                t.features.len(),
                t.categories.len(),
                t.categories
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            TrainedModel::Logistic(_) => format!("L2 logistic regression (alpha {})", args.alpha),
        }
    )?;
    writeln!(
        r,
        "- excluded features: {}",
        if args.exclude.is_empty() {
            "none".to_owned()
        } else {
            args.exclude.join(", ")
        }
    )?;
    writeln!(
        r,
        "\n| metric (test set) | {} | baseline: logistic regression |\n|---|---|---|",
        model.learner()
    )?;
    let base = |f: fn(&[(f64, bool)]) -> f64| {
        baseline_scored
            .as_deref()
            .map_or("—".to_owned(), |b| format!("{:.3}", f(b)))
    };
    writeln!(r, "| ROC AUC | {auc:.3} | {} |", base(roc_auc))?;
    writeln!(r, "| PR AUC | {ap:.3} | {} |", base(pr_auc))?;
    writeln!(
        r,
        "| base rate | {:.3} | |",
        pos(&test) as f64 / active(&test).max(1) as f64
    )?;
    let plots = crate::train_plots::write(&args.report, &scored)?;
    writeln!(r)?;
    for (title, file) in &plots {
        writeln!(r, "![{title}]({file})")?;
    }
    writeln!(
        r,
        "\nGrade thresholds (chosen on the training set: precision ≥ 0.6 → high, ≥ 0.3 → medium): high ≥ {:.3}, medium ≥ {:.3}\n",
        model.thresholds().high,
        model.thresholds().medium
    )?;
    writeln!(
        r,
        "## Calibration (test set)\n\n| predicted | snapshots | mean predicted | observed |\n|---|---|---|---|"
    )?;
    for (lo, hi, n, mean, rate) in calibration(&scored) {
        writeln!(r, "| {lo:.1}–{hi:.1} | {n} | {mean:.3} | {rate:.3} |")?;
    }
    match &model {
        TrainedModel::Logistic(lr) => {
            let mut coef: Vec<(&String, f64)> = lr
                .features
                .iter()
                .zip(lr.coefficients.iter().copied())
                .collect();
            coef.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
            writeln!(
                r,
                "\n## Largest coefficients (standardised features)\n\n| feature | coefficient |\n|---|---|"
            )?;
            for (f, c) in coef.iter().take(10) {
                writeln!(r, "| {f} | {c:+.3} |")?;
            }
        }
        TrainedModel::Trees(t) => {
            writeln!(
                r,
                "\n## Most used inputs (share of split gain)\n\n| input | share |\n|---|---|"
            )?;
            for (f, g) in t.importance.iter().take(12) {
                writeln!(r, "| {f} | {g:.3} |")?;
            }
        }
    }
    fs::write(&args.out, serde_json::to_string_pretty(&model)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    fs::write(&args.report, &r).with_context(|| format!("writing {}", args.report.display()))?;
    println!(
        "ROC AUC {auc:.3}  PR AUC {ap:.3}  (test snapshots {}, positives {}){}",
        active(&test),
        pos(&test),
        baseline_scored
            .as_deref()
            .map(|b| format!("  baseline logistic ROC AUC {:.3}", roc_auc(b)))
            .unwrap_or_default()
    );
    eprintln!("wrote {} and {}", args.out.display(), args.report.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clickhouse_rows_become_tracking_plan_events() {
        let row = json!({"message_id": "m1", "event": "page_viewed", "type": "page", "platform": "web",
            "anonymous_id": "a1", "user_id": "", "union_id": "", "phone_hash": "ph",
            "timestamp_ms": "1795305600123", "context": "{\"utm_source\":\"autohome\"}",
            "properties": "{\"page_type\":\"configurator\"}"});
        let e = row_to_event(&row).unwrap();
        assert_eq!(e["timestamp"], 1_795_305_600_123_i64);
        assert!(e["user_id"].is_null(), "empty columns are absent ids");
        assert_eq!(e["properties"]["page_type"], "configurator");
        let le = leadstream_scorer::event::from_plan(&e).unwrap();
        assert_eq!(le.channel.as_deref(), Some("autohome"));
        assert!(row_to_event(&json!({"message_id": "m", "event": "x"})).is_none());
    }
}
