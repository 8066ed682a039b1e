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
    train::{calibration, fit, pr_auc, roc_auc, snapshots},
};

#[derive(Args)]
pub struct TrainArgs {
    /// Historical events, one tracking-plan JSON object per line (NDJSON).
    #[arg(long, env = "LEADSTREAM_TRAIN_EVENTS")]
    events: PathBuf,
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
    /// L2 regularisation strength.
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

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let cfg = match &args.config {
        Some(p) => ScoringConfig::load(p)?,
        None => ScoringConfig::parse(DEFAULT_TOML)?,
    };
    let file = fs::File::open(&args.events)
        .with_context(|| format!("opening {}", args.events.display()))?;
    let mut events = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        events.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not JSON", args.events.display(), i + 1))?,
        );
    }
    let horizon_ms = (args.horizon_days * DAY_MS as f64) as i64;
    let snaps = snapshots(&events, &cfg, horizon_ms);
    let (train, test, scored, model, split) = match (&args.test_from, args.folds) {
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
            let model = fit(&train, &args.exclude, args.horizon_days, args.alpha)?;
            let scored: Vec<(f64, bool)> = test
                .iter()
                .map(|s| (model.probability(&s.features), s.label))
                .collect();
            (train, test, scored, model, format!("time split at {date}"))
        }
        (None, Some(k)) => {
            anyhow::ensure!(k >= 2, "--folds must be at least 2");
            let fold_of = |lead: &str| {
                lead.bytes()
                    .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
                    % k
            };
            let mut scored = Vec::new();
            for f in 0..k {
                let (test, train): (Vec<_>, Vec<_>) = snaps
                    .iter()
                    .cloned()
                    .partition(|s| fold_of(&s.lead_id) == f);
                let model = fit(&train, &args.exclude, args.horizon_days, args.alpha)?;
                scored.extend(
                    test.iter()
                        .map(|s| (model.probability(&s.features), s.label)),
                );
            }
            let model = fit(&snaps, &args.exclude, args.horizon_days, args.alpha)?;
            (
                snaps.clone(),
                snaps,
                scored,
                model,
                format!("{k}-fold cross-validation by lead, pooled out-of-fold predictions"),
            )
        }
        (None, None) => anyhow::bail!("give --test-from DATE or --folds K"),
    };
    let (auc, ap) = (roc_auc(&scored), pr_auc(&scored));

    let mut r = String::new();
    let pos = |v: &[leadstream_scorer::train::Snapshot]| v.iter().filter(|s| s.label).count();
    writeln!(r, "# leadstream model report\n")?;
    writeln!(
        r,
        "- events: {} from `{}`",
        events.len(),
        args.events.display()
    )?;
    writeln!(
        r,
        "- snapshots: train {} ({} positive), test {} ({} positive); {split}",
        train.len(),
        pos(&train),
        test.len(),
        pos(&test)
    )?;
    writeln!(
        r,
        "- label: order within {} days of the snapshot; model: L2 logistic regression (alpha {})",
        args.horizon_days, args.alpha
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
        "\n| metric (test set) | value |\n|---|---|\n| ROC AUC | {auc:.3} |\n| PR AUC | {ap:.3} |\n| base rate | {:.3} |",
        pos(&test) as f64 / test.len() as f64
    )?;
    writeln!(
        r,
        "\nGrade thresholds (chosen on the training set: precision ≥ 0.6 → high, ≥ 0.3 → medium): high ≥ {:.3}, medium ≥ {:.3}\n",
        model.thresholds.high, model.thresholds.medium
    )?;
    writeln!(
        r,
        "## Calibration (test set)\n\n| predicted | snapshots | mean predicted | observed |\n|---|---|---|---|"
    )?;
    for (lo, hi, n, mean, rate) in calibration(&scored) {
        writeln!(r, "| {lo:.1}–{hi:.1} | {n} | {mean:.3} | {rate:.3} |")?;
    }
    let mut coef: Vec<(&String, f64)> = model
        .features
        .iter()
        .zip(model.coefficients.iter().copied())
        .collect();
    coef.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    writeln!(
        r,
        "\n## Largest coefficients (standardised features)\n\n| feature | coefficient |\n|---|---|"
    )?;
    for (f, c) in coef.iter().take(10) {
        writeln!(r, "| {f} | {c:+.3} |")?;
    }
    fs::write(&args.out, serde_json::to_string_pretty(&model)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    fs::write(&args.report, &r).with_context(|| format!("writing {}", args.report.display()))?;
    println!(
        "ROC AUC {auc:.3}  PR AUC {ap:.3}  (test snapshots {}, positives {})",
        test.len(),
        pos(&test)
    );
    eprintln!("wrote {} and {}", args.out.display(), args.report.display());
    Ok(ExitCode::SUCCESS)
}
