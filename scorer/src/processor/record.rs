//! The `lead_score` record as typed fields: what the shell hands the
//! encoder (no JSON tree on the hot path), and the JSON shape readers see.

use leadstream_schemas::codec::{Field, FieldView};
use serde_json::Value as Json;

use super::Output;
use crate::{event::Platform, lead::Lead, score::ChangeReason};

/// One `lead_score` record (the `leadstream.scores.LeadScore` schema).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRecord {
    pub lead_id: String,
    pub score: f64,
    pub rule_score: f64,
    pub probability: f64,
    pub grade: &'static str,
    pub stage: &'static str,
    /// Largest first, points rounded to cents.
    pub reasons: Vec<Reason>,
    pub reactivated: bool,
    pub event_count: i64,
    pub platforms: Vec<&'static str>,
    pub first_platform: Option<&'static str>,
    pub first_channel: Option<Box<str>>,
    pub first_seen_at: i64,
    pub last_event_at: i64,
    pub merged_into: Option<Box<str>>,
    pub version: i64,
    pub updated_at: i64,
    pub change_reason: &'static str,
    pub previous_stage: Option<&'static str>,
    pub churn_risk: bool,
    pub last_intent_at: Option<i64>,
}

/// One rule's contribution (`leadstream.scores.Reason`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub code: &'static str,
    pub points: f64,
}

const NAMES: &[&str] = &[
    "lead_id",
    "score",
    "rule_score",
    "probability",
    "grade",
    "stage",
    "reasons",
    "reactivated",
    "event_count",
    "platforms",
    "first_platform",
    "first_channel",
    "first_seen_at",
    "last_event_at",
    "merged_into",
    "version",
    "updated_at",
    "change_reason",
    "previous_stage",
    "churn_risk",
    "last_intent_at",
];

fn text_or_null(t: Option<&str>) -> Field<'_> {
    t.map_or(Field::Null, Field::Text)
}

impl FieldView for ScoreRecord {
    fn names(&self) -> &'static [&'static str] {
        NAMES
    }

    fn field_at(&self, i: usize) -> Field<'_> {
        // Positions of NAMES; the encoder maps them to the schema once.
        match i {
            0 => Field::Text(&self.lead_id),
            1 => Field::Double(self.score),
            2 => Field::Double(self.rule_score),
            3 => Field::Double(self.probability),
            4 => Field::Text(self.grade),
            5 => Field::Text(self.stage),
            6 => Field::List(&self.reasons),
            7 => Field::Bool(self.reactivated),
            8 => Field::Long(self.event_count),
            9 => Field::List(&self.platforms),
            10 => text_or_null(self.first_platform),
            11 => text_or_null(self.first_channel.as_deref()),
            12 => Field::Long(self.first_seen_at),
            13 => Field::Long(self.last_event_at),
            14 => text_or_null(self.merged_into.as_deref()),
            15 => Field::Long(self.version),
            16 => Field::Long(self.updated_at),
            17 => Field::Text(self.change_reason),
            18 => text_or_null(self.previous_stage),
            19 => Field::Bool(self.churn_risk),
            20 => self.last_intent_at.map_or(Field::Null, Field::Long),
            _ => Field::Absent,
        }
    }
}

impl FieldView for Reason {
    fn names(&self) -> &'static [&'static str] {
        &["code", "points"]
    }

    fn field_at(&self, i: usize) -> Field<'_> {
        match i {
            0 => Field::Text(self.code),
            1 => Field::Double(self.points),
            _ => Field::Absent,
        }
    }
}

impl ScoreRecord {
    /// The record as the JSON object the tracking plan describes (tests,
    /// tools; the shell encodes the typed fields).
    pub fn to_json(&self) -> Json {
        Field::Record(self).to_json()
    }
}

/// The instant an event-driven score refers to: the partition's stream
/// time, never before the lead's newest event or its last emitted score.
pub(super) fn event_now(lead: &Lead, stream_time_ms: i64) -> i64 {
    stream_time_ms
        .max(lead.state.last_event_ms)
        .max(lead.evaluated_ms)
}

/// The `lead_score` output for `lead` scored at `now`; bumps the lead's
/// version and records what was emitted.
pub(super) fn score_output(
    lead_id: &str,
    lead: &mut Lead,
    now: i64,
    scored: &crate::score::Scored,
    reason: ChangeReason,
) -> Output {
    let s = &lead.state;
    lead.version += 1;
    let previous_stage = lead.emitted.map(|c| c.stage.as_str());
    let record = ScoreRecord {
        lead_id: lead_id.to_owned(),
        score: round2(scored.score),
        rule_score: round2(scored.rule_score),
        probability: scored.probability,
        grade: scored.grade.as_str(),
        stage: scored.stage.as_str(),
        reasons: scored
            .reasons
            .iter()
            .map(|&(code, points)| Reason {
                code,
                points: round2(points),
            })
            .collect(),
        reactivated: scored.reactivated,
        event_count: i64::from(s.events),
        platforms: s.platforms_used().map(Platform::as_str).collect(),
        first_platform: s.first_platform.map(Platform::as_str),
        first_channel: s.first_channel.clone(),
        first_seen_at: s.first_seen_ms,
        last_event_at: s.last_event_ms,
        merged_into: lead.merged_into.clone(),
        version: lead.version as i64,
        updated_at: now,
        change_reason: reason.as_str(),
        previous_stage,
        churn_risk: scored.churn_risk,
        last_intent_at: s.last_high_intent_ms.get(),
    };
    lead.emitted = Some(scored.class());
    lead.evaluated_ms = now;
    Output::Score { record, reason }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
