-- lead_score v2 carries the first-touch platform; scores written before it
-- read ''. The views that list lead columns are rebuilt so they show it.
-- grade_mix_daily now counts each lead once per day, in the grade it ended
-- the day with (0002 counted a lead in every grade it passed through, so a
-- day's mix summed to more leads than were active).

ALTER TABLE lead_scores ADD COLUMN first_platform String DEFAULT '' AFTER platforms;

ALTER TABLE lead_score_history ADD COLUMN first_platform String DEFAULT '' AFTER platforms;

DROP TABLE IF EXISTS call_list;

DROP TABLE IF EXISTS current_leads;

DROP TABLE IF EXISTS grade_mix_daily;

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
    last_event_at,
    event_count
FROM current_leads
WHERE stage NOT IN ('customer', 'retained') OR has(reason_codes, 'prior_purchase')
ORDER BY reactivated DESC, score DESC, last_event_at DESC;

CREATE VIEW grade_mix_daily AS
SELECT
    day,
    grade,
    count() AS leads,
    countIf(reactivated = 1) AS reactivated
FROM
(
    SELECT
        toDate(updated_at) AS day,
        lead_id,
        argMax(grade, version) AS grade,
        argMax(reactivated, version) AS reactivated,
        argMax(merged_into, version) AS merged_into
    FROM lead_score_history FINAL
    GROUP BY day, lead_id
)
WHERE merged_into = ''
GROUP BY day, grade;
