-- Views analysts and dashboards query. Plain views over FINAL, so they are
-- exact after redelivery and need no backfill when the base tables change.

CREATE VIEW IF NOT EXISTS funnel_daily AS
SELECT
    toDate(timestamp) AS day,
    if(lead_channel != '', lead_channel, if(utm_source != '', utm_source, 'direct')) AS channel,
    platform,
    uniqExactIf(anonymous_id, event = 'page_viewed') AS visitors,
    uniqExactIf(anonymous_id, (event = 'page_viewed' AND page_type = 'configurator') OR event = 'vehicle_configured') AS configured,
    uniqExactIf(anonymous_id, event = 'test_drive_booked') AS test_drives,
    uniqExactIf(anonymous_id, event = 'lead_form_submitted') AS lead_forms,
    uniqExactIf(if(user_id != '', user_id, anonymous_id), event = 'order_placed') AS orders
FROM events FINAL
WHERE is_bot = 0
GROUP BY day, channel, platform;

CREATE VIEW IF NOT EXISTS current_leads AS
SELECT *
FROM lead_scores FINAL
WHERE merged_into = '';

CREATE VIEW IF NOT EXISTS grade_mix_daily AS
SELECT
    toDate(updated_at) AS day,
    grade,
    uniqExact(lead_id) AS leads,
    uniqExactIf(lead_id, reactivated = 1) AS reactivated
FROM lead_score_history FINAL
WHERE merged_into = ''
GROUP BY day, grade;

CREATE VIEW IF NOT EXISTS tracking_plan_health AS
SELECT
    toDate(received_at) AS day,
    event,
    reason,
    field,
    sdk_name,
    sdk_version,
    platform,
    count() AS violations
FROM schema_violations FINAL
GROUP BY day, event, reason, field, sdk_name, sdk_version, platform;

CREATE VIEW IF NOT EXISTS call_list AS
SELECT
    lead_id,
    round(score, 1) AS score,
    grade,
    stage,
    reactivated,
    reason_codes,
    platforms,
    first_channel,
    last_event_at,
    event_count
FROM current_leads
WHERE stage NOT IN ('customer', 'retained') OR has(reason_codes, 'prior_purchase')
ORDER BY reactivated DESC, score DESC, last_event_at DESC;
