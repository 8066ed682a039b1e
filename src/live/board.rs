//! What the live view shows, kept apart from drawing it: the latest score
//! of every current lead, the rates and lags read from the process's own
//! metrics, and the lists a user switches between. Pure, so tested without
//! a terminal or a broker.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value as Json;

use crate::simulate::Progress;

/// The lists the view switches between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Every current lead, hottest first: whom to call.
    Top,
    /// Dormant leads, hottest first: who is warming up again.
    Dormant,
    /// Owners (stage `retained`: bought long enough ago to be scored for
    /// an upgrade), hottest first: who may buy again.
    Owners,
}

impl View {
    pub fn next(self) -> Self {
        match self {
            View::Top => View::Dormant,
            View::Dormant => View::Owners,
            View::Owners => View::Top,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            View::Top => "top by score",
            View::Dormant => "dormant pool",
            View::Owners => "owners",
        }
    }

    fn admits(self, stage: &str) -> bool {
        match self {
            View::Top => true,
            View::Dormant => stage == "dormant",
            View::Owners => stage == "retained",
        }
    }
}

/// One lead as a row of the list.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadRow {
    pub lead_id: String,
    pub score: f64,
    pub grade: String,
    pub stage: String,
    pub reactivated: bool,
    pub reasons: Vec<String>,
    pub platforms: Vec<String>,
    pub persona: String,
}

/// Counters and gauges of the roles in this process, from one exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub events_in: f64,
    pub rejects: f64,
    pub scores_out: f64,
    pub rows_written: f64,
    /// (stage, records behind), e.g. ("scorer stitch", 12).
    pub lags: Vec<(String, f64)>,
}

impl Counters {
    /// Reads a Prometheus text exposition.
    pub fn parse(exposition: &str) -> Self {
        let mut c = Counters::default();
        for line in exposition.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            match name {
                "ingest_events_accepted_total" => c.events_in += value,
                "ingest_events_rejected_total" => c.rejects += value,
                "scorer_scores_emitted_total" => c.scores_out += value,
                "sink_rows_written_total" => c.rows_written += value,
                "scorer_consumer_lag" | "sink_consumer_lag" => {
                    let role = name.split('_').next().unwrap_or_default();
                    let label = labels
                        .split('"')
                        .nth(1)
                        .unwrap_or_default()
                        .trim_end_matches('}');
                    c.lags.push((format!("{role} {label}"), value));
                }
                _ => {}
            }
        }
        c.lags.sort_by(|a, b| a.0.cmp(&b.0));
        c
    }
}

/// Per-second rates between two readings of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub events_in: f64,
    pub rejects: f64,
    pub scores_out: f64,
    pub rows_written: f64,
}

impl Rates {
    pub fn between(before: &Counters, after: &Counters, secs: f64) -> Self {
        let per_s = |a: f64, b: f64| ((b - a) / secs.max(1e-3)).max(0.0);
        Rates {
            events_in: per_s(before.events_in, after.events_in),
            rejects: per_s(before.rejects, after.rejects),
            scores_out: per_s(before.scores_out, after.scores_out),
            rows_written: per_s(before.rows_written, after.rows_written),
        }
    }
}

/// The latest score of every current lead, and who each lead really is
/// (the simulator's persona, known only in the quickstart).
#[derive(Debug, Default)]
pub struct Board {
    latest: HashMap<String, Json>,
    personas: HashMap<String, String>,
    pub scores_seen: u64,
}

impl Board {
    /// A `lead_score` record as JSON: the lead's newest score, or the end of
    /// a lead merged into another.
    pub fn apply(&mut self, score: Json) {
        self.scores_seen += 1;
        let Some(lead) = score["lead_id"].as_str().map(str::to_owned) else {
            return;
        };
        if score["merged_into"].is_null() {
            self.latest.insert(lead, score);
        } else {
            self.latest.remove(&lead);
        }
    }

    pub fn set_persona(&mut self, lead: &str, persona: &str) {
        self.personas.insert(lead.to_owned(), persona.to_owned());
    }

    pub fn leads(&self) -> usize {
        self.latest.len()
    }

    /// The leads `view` lists, hottest first (ties by id, so the list is stable).
    pub fn rows(&self, view: View) -> Vec<LeadRow> {
        let strings = |v: &Json, key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().or_else(|| x["code"].as_str()))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut rows: Vec<LeadRow> = self
            .latest
            .iter()
            .filter(|(_, s)| view.admits(s["stage"].as_str().unwrap_or_default()))
            .map(|(lead, s)| LeadRow {
                lead_id: lead.clone(),
                score: s["score"].as_f64().unwrap_or(0.0),
                grade: s["grade"].as_str().unwrap_or_default().to_owned(),
                stage: s["stage"].as_str().unwrap_or_default().to_owned(),
                reactivated: s["reactivated"].as_bool() == Some(true),
                reasons: strings(s, "reasons"),
                platforms: strings(s, "platforms"),
                persona: self.personas.get(lead).cloned().unwrap_or_default(),
            })
            .collect();
        rows.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.lead_id.cmp(&b.lead_id))
        });
        rows
    }

    /// How many current leads have each value of `key` ("grade", "stage").
    pub fn mix(&self, key: &str) -> BTreeMap<String, usize> {
        let mut mix = BTreeMap::new();
        for s in self.latest.values() {
            *mix.entry(s[key].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
        mix
    }

    /// The latest score of every current lead.
    pub fn into_latest(self) -> HashMap<String, Json> {
        self.latest
    }

    /// One plain status line: what a pipe or a log gets every interval.
    pub fn status_line(&self, secs: f64, progress: &Progress) -> String {
        let secs = secs.max(1.0);
        let stages: Vec<String> = self
            .mix("stage")
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!(
            "── {:>5.0}s  simulated {}  events posted {} ({} rejected, {:.0}/s)  scores {} ({:.0}/s)  leads {} ({})",
            secs,
            sim_day(progress.sim_ms),
            progress.posted,
            progress.rejected,
            progress.posted as f64 / secs,
            self.scores_seen,
            self.scores_seen as f64 / secs,
            self.leads(),
            stages.join(", ")
        )
    }
}

/// The simulated date of `ms`.
pub fn sim_day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(String::new, |d| d.format("%Y-%m-%d").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn score(lead: &str, score: f64, stage: &str) -> Json {
        json!({"lead_id": lead, "score": score, "grade": "warm", "stage": stage, "merged_into": null,
               "reasons": [{"code": "test_drive_booked"}], "platforms": ["app", "web"], "updated_at": 7})
    }

    #[test]
    fn views_list_their_leads_hottest_first_and_merged_leads_leave() {
        let mut b = Board::default();
        b.apply(score("a", 10.0, "new"));
        b.apply(score("b", 80.0, "dormant"));
        b.apply(score("c", 50.0, "retained"));
        b.apply(score("d", 60.0, "dormant"));
        b.set_persona("b", "returning_owner");
        let ids = |b: &Board, v: View| -> Vec<String> {
            b.rows(v).into_iter().map(|r| r.lead_id).collect()
        };
        assert_eq!(ids(&b, View::Top), ["b", "d", "c", "a"]);
        assert_eq!(ids(&b, View::Dormant), ["b", "d"]);
        assert_eq!(ids(&b, View::Owners), ["c"]);
        let top = &b.rows(View::Top)[0];
        assert_eq!(top.reasons, ["test_drive_booked"]);
        assert_eq!(top.platforms, ["app", "web"]);
        assert_eq!(top.persona, "returning_owner");

        b.apply(json!({"lead_id": "d", "merged_into": "b"}));
        assert_eq!(ids(&b, View::Dormant), ["b"]);
        assert_eq!(b.scores_seen, 5);
        assert_eq!(b.mix("stage").get("dormant"), Some(&1));
        assert_eq!(View::Top.next().next().next(), View::Top);
    }

    #[test]
    fn counters_sum_labelled_series_and_rates_are_per_second() {
        let text = "# TYPE ingest_events_accepted_total counter\n\
            ingest_events_accepted_total{platform=\"web\"} 30\n\
            ingest_events_accepted_total{platform=\"app\"} 10\n\
            ingest_events_rejected_total{reason=\"bad_json\"} 2\n\
            scorer_scores_emitted_total 25\n\
            sink_rows_written_total{table=\"events\"} 40\n\
            scorer_consumer_lag{stage=\"stitch\"} 3\n\
            sink_consumer_lag{stream=\"events\"} 0\n";
        let after = Counters::parse(text);
        assert_eq!(after.events_in, 40.0);
        assert_eq!(after.rejects, 2.0);
        assert_eq!(after.scores_out, 25.0);
        assert_eq!(after.rows_written, 40.0);
        assert_eq!(
            after.lags,
            [
                ("scorer stitch".to_owned(), 3.0),
                ("sink events".to_owned(), 0.0)
            ]
        );
        let rates = Rates::between(&Counters::default(), &after, 2.0);
        assert_eq!(rates.events_in, 20.0);
        assert_eq!(rates.scores_out, 12.5);
    }

    #[test]
    fn the_status_line_keeps_the_shape_scripts_read() {
        let mut b = Board::default();
        b.apply(score("a", 10.0, "dormant"));
        let p = Progress {
            posted: 120,
            rejected: 1,
            sim_ms: 0,
            people: 3,
        };
        let line = b.status_line(6.0, &p);
        assert!(line.starts_with("──"), "{line}");
        assert!(line.contains("events posted 120 "), "{line}");
        assert!(line.contains("(dormant 1)"), "{line}");
        assert!(line.contains("simulated 1970-01-01"), "{line}");
    }
}
