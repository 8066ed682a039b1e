-- Base tables. Runs on ClickHouse 18.16 and current releases: no DateTime64,
-- Map, TTL, codecs or skip indexes. Millisecond times are UInt64 columns next
-- to their DateTime. Duplicates from Kafka redelivery are harmless: every
-- table is a ReplacingMergeTree whose sorting key is the row's dedupe key
-- (query with FINAL, or through the views, for exact counts).

CREATE TABLE IF NOT EXISTS events
(
    message_id String,
    event String,
    type String,
    platform String,
    source_id String,
    tenant String,
    anonymous_id String,
    user_id String,
    union_id String,
    phone_hash String,
    timestamp DateTime,
    timestamp_ms UInt64,
    received_at DateTime,
    received_ms UInt64,
    page_type String,
    model_id String,
    lead_channel String,
    utm_source String,
    utm_campaign String,
    session_id String,
    sdk_name String,
    sdk_version String,
    is_bot UInt8,
    context String,
    properties String,
    schema_id UInt32,
    kafka_partition Int32,
    kafka_offset Int64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(timestamp)
ORDER BY (event, timestamp, message_id);

CREATE TABLE IF NOT EXISTS lead_scores
(
    lead_id String,
    score Float64,
    rule_score Float64,
    probability Float64,
    grade String,
    stage String,
    reason_codes Array(String),
    reason_points Array(Float64),
    reactivated UInt8,
    event_count UInt64,
    platforms Array(String),
    first_channel String,
    first_seen_at DateTime,
    last_event_at DateTime,
    merged_into String,
    version UInt64,
    updated_at DateTime,
    updated_ms UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY lead_id;

CREATE TABLE IF NOT EXISTS lead_score_history
(
    lead_id String,
    score Float64,
    rule_score Float64,
    probability Float64,
    grade String,
    stage String,
    reason_codes Array(String),
    reason_points Array(Float64),
    reactivated UInt8,
    event_count UInt64,
    platforms Array(String),
    first_channel String,
    first_seen_at DateTime,
    last_event_at DateTime,
    merged_into String,
    version UInt64,
    updated_at DateTime,
    updated_ms UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(updated_at)
ORDER BY (lead_id, version);

CREATE TABLE IF NOT EXISTS schema_violations
(
    received_at DateTime,
    received_ms UInt64,
    message_id String,
    event String,
    reason String,
    field String,
    message String,
    source_id String,
    platform String,
    tenant String,
    sdk_name String,
    sdk_version String,
    raw String,
    kafka_partition Int32,
    kafka_offset Int64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY (kafka_partition, kafka_offset);

CREATE TABLE IF NOT EXISTS pipeline_metrics
(
    minute DateTime,
    service String,
    instance String,
    metric String,
    value Float64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (service, metric, instance, minute);

CREATE TABLE IF NOT EXISTS dead_letters
(
    failed_at DateTime,
    topic String,
    kafka_partition Int32,
    kafka_offset Int64,
    error String,
    raw_base64 String
)
ENGINE = ReplacingMergeTree()
ORDER BY (topic, kafka_partition, kafka_offset);
