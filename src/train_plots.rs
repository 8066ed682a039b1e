//! The report's charts as SVG files beside the Markdown: how the model
//! ranks (ROC), how far its probabilities hold (calibration) and how many
//! buyers the top of the call list holds (cumulative gain).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::prelude::*;

type Points = Vec<(f64, f64)>;

/// (false positive rate, true positive rate) from the highest score down.
pub fn roc_points(scored: &[(f64, bool)]) -> Points {
    let mut sorted = scored.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pos = sorted.iter().filter(|s| s.1).count().max(1) as f64;
    let neg = (sorted.len() as f64 - pos).max(1.0);
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut out = vec![(0.0, 0.0)];
    let mut i = 0;
    while i < sorted.len() {
        // Tied scores move together: one diagonal step, as AUC counts them.
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            if sorted[j].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        out.push((fp / neg, tp / pos));
        i = j;
    }
    out
}

/// (share of leads called, share of buyers reached), best first.
pub fn gain_points(scored: &[(f64, bool)]) -> Points {
    let mut sorted = scored.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pos = sorted.iter().filter(|s| s.1).count().max(1) as f64;
    let n = sorted.len().max(1) as f64;
    let mut hits = 0.0;
    let mut out = vec![(0.0, 0.0)];
    let step = (sorted.len() / 200).max(1);
    for (i, (_, label)) in sorted.iter().enumerate() {
        if *label {
            hits += 1.0;
        }
        if (i + 1) % step == 0 || i + 1 == sorted.len() {
            out.push(((i + 1) as f64 / n, hits / pos));
        }
    }
    out
}

/// (mean predicted, observed rate) per decile of predictions.
pub fn calibration_points(scored: &[(f64, bool)]) -> Points {
    let mut sorted = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let size = sorted.len().div_ceil(10).max(1);
    sorted
        .chunks(size)
        .map(|c| {
            let n = c.len() as f64;
            (
                c.iter().map(|s| s.0).sum::<f64>() / n,
                c.iter().filter(|s| s.1).count() as f64 / n,
            )
        })
        .collect()
}

fn chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    model: &Points,
    reference: &Points,
    reference_label: &str,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (520, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    c.configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    c.draw_series(LineSeries::new(reference.iter().copied(), BLACK.mix(0.4)))?
        .label(reference_label)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.4)));
    c.draw_series(LineSeries::new(model.iter().copied(), BLUE.stroke_width(2)))?
        .label("model")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
    c.draw_series(
        model
            .iter()
            .filter(|_| model.len() <= 12)
            .map(|p| Circle::new(*p, 3, BLUE.filled())),
    )?;
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    root.present()?;
    Ok(())
}

fn beside(report: &Path, suffix: &str) -> (PathBuf, String) {
    let stem = report
        .file_stem()
        .map_or("model-report".into(), |s| s.to_string_lossy().into_owned());
    let name = format!("{stem}-{suffix}.svg");
    (report.with_file_name(&name), name)
}

/// Writes the three charts beside `report`; returns (title, file name) for links.
pub fn write(report: &Path, scored: &[(f64, bool)]) -> anyhow::Result<Vec<(String, String)>> {
    let diagonal = vec![(0.0, 0.0), (1.0, 1.0)];
    let mut out = Vec::new();
    let charts: [(&str, &str, &str, &str, Points, &str); 3] = [
        (
            "roc",
            "ROC curve (test set)",
            "false positive rate",
            "true positive rate",
            roc_points(scored),
            "chance",
        ),
        (
            "calibration",
            "Calibration by decile (test set)",
            "mean predicted probability",
            "observed order rate",
            calibration_points(scored),
            "perfectly calibrated",
        ),
        (
            "gain",
            "Cumulative gain (test set)",
            "share of snapshots, highest score first",
            "share of orders reached",
            gain_points(scored),
            "random order",
        ),
    ];
    for (suffix, title, x, y, points, reference) in charts {
        let (path, name) = beside(report, suffix);
        chart(&path, title, x, y, &points, &diagonal, reference)
            .with_context(|| format!("drawing {}", path.display()))?;
        out.push((title.to_owned(), name));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_start_at_zero_and_end_at_one() {
        let scored = [(0.9, true), (0.8, false), (0.7, true), (0.1, false)];
        let roc = roc_points(&scored);
        assert_eq!(roc.first(), Some(&(0.0, 0.0)));
        assert_eq!(roc.last(), Some(&(1.0, 1.0)));
        assert_eq!(roc[1], (0.0, 0.5), "the top score is a buyer");
        let gain = gain_points(&scored);
        assert_eq!(gain.last(), Some(&(1.0, 1.0)));
        let cal = calibration_points(&scored);
        assert_eq!(cal.len(), 4);
        assert_eq!(cal[0], (0.1, 0.0));
    }

    #[test]
    fn writes_three_svg_files_beside_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("report.md");
        let scored: Vec<(f64, bool)> = (0..100).map(|i| (i as f64 / 100.0, i % 3 == 0)).collect();
        let files = write(&report, &scored).unwrap();
        assert_eq!(files.len(), 3);
        for (_, name) in files {
            let svg = std::fs::read_to_string(dir.path().join(&name)).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.contains("polyline"),
                "{name}"
            );
        }
    }
}
