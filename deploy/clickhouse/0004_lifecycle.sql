-- lead_score v3: scores now move with time. Each record says why it was
-- emitted (change_reason: event, merged, or a change time alone made —
-- decayed, went_dormant, went_nurture, became_retained,
-- reactivation_expired, churn_risk), the stage before it, the owners'
-- churn-risk flag and the lead's newest intent. Scores written before this
-- migration read change_reason 'event', previous_stage '', churn_risk 0 and
-- last_intent_at NULL.
-- call_list is rebuilt to order by what sales should do now (score, then
-- the newest intent), not by a flag; customers are not on it, retained
-- owners are when they show upgrade intent. dormant_pool ranks the dormant
-- leads by their newest intent, and stage_flow_daily counts the leads that
-- moved between stages per day and why.

ALTER TABLE lead_scores ADD COLUMN change_reason String DEFAULT 'event' AFTER updated_ms;

ALTER TABLE lead_scores ADD COLUMN previous_stage String DEFAULT '' AFTER change_reason;

ALTER TABLE lead_scores ADD COLUMN churn_risk UInt8 DEFAULT 0 AFTER previous_stage;

ALTER TABLE lead_scores ADD COLUMN last_intent_at Nullable(DateTime) AFTER churn_risk;

ALTER TABLE lead_score_history ADD COLUMN change_reason String DEFAULT 'event' AFTER updated_ms;

ALTER TABLE lead_score_history ADD COLUMN previous_stage String DEFAULT '' AFTER change_reason;

ALTER TABLE lead_score_history ADD COLUMN churn_risk UInt8 DEFAULT 0 AFTER previous_stage;

ALTER TABLE lead_score_history ADD COLUMN last_intent_at Nullable(DateTime) AFTER churn_risk;

DROP TABLE IF EXISTS call_list;

DROP TABLE IF EXISTS current_leads;

CREATE VIEW current_leads AS
SELECT *
FROM lead_scores FINAL
WHERE merged_into = '';

CREATE VIEW call_list AS
SELECT
    lead_id,
    round(score, 1) AS score,
    grade,
    stage,
    reactivated,
    reason_codes,
    platforms,
    first_platform,
    first_channel,
    last_intent_at,
    last_event_at,
    event_count
FROM current_leads
WHERE stage IN ('new', 'dormant') OR (stage = 'retained' AND grade != 'low')
ORDER BY score DESC, last_intent_at DESC, last_event_at DESC;

CREATE VIEW IF NOT EXISTS dormant_pool AS
SELECT
    lead_id,
    round(score, 1) AS score,
    grade,
    last_intent_at,
    last_event_at,
    reason_codes,
    platforms,
    first_channel,
    event_count
FROM current_leads
WHERE stage = 'dormant'
ORDER BY last_intent_at DESC, score DESC;

CREATE VIEW IF NOT EXISTS stage_flow_daily AS
SELECT
    toDate(updated_at) AS day,
    previous_stage AS from_stage,
    stage AS to_stage,
    change_reason,
    count() AS leads
FROM lead_score_history FINAL
WHERE previous_stage != '' AND previous_stage != stage
GROUP BY day, from_stage, to_stage, change_reason;
