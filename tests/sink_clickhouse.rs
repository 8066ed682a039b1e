//! `leadstream sink` against the real broker and ClickHouse: nothing lost
//! and nothing doubled when ClickHouse goes away mid-load and when the sink
//! is killed with -9 mid-batch; poison records become dead letters; the
//! analyst views answer over what was written.

mod common;

use std::{
    io::Write as _,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use leadstream_schemas::{EmbeddedResolver, Encoder, Plan};
use leadstream_sink::{
    SinkConfig,
    encode::{Buffers, Format},
    insert::write_batch,
    writer::{KafkaRecord, Kind, to_batch},
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

const T0: i64 = 1_795_305_600_000;

struct Topics {
    events: common::TestTopic,
    scores: common::TestTopic,
    dlq: common::TestTopic,
    metrics: common::TestTopic,
}

async fn topics(bootstrap: &str) -> Topics {
    Topics {
        events: common::TestTopic::create(bootstrap, "sink_events", 2).await,
        scores: common::TestTopic::create(bootstrap, "sink_scores", 2).await,
        dlq: common::TestTopic::create(bootstrap, "sink_dlq", 1).await,
        metrics: common::TestTopic::create(bootstrap, "sink_metrics", 1).await,
    }
}

fn event(i: usize) -> serde_json::Value {
    let page_type = ["home", "model_detail", "configurator", "price"][i % 4];
    let platform = ["web", "app", "mini_program"][i % 3];
    let utm = ["autohome", "baidu"][i % 2];
    json!({"message_id": format!("m-{i:06}"), "event": "page_viewed", "type": "page", "platform": platform,
           "source_id": "web-main", "tenant": "brand-a", "anonymous_id": format!("anon-{}", i % 300),
           "timestamp": T0 + i as i64 * 1000, "received_at": T0 + i as i64 * 1000,
           "context": {"utm_source": utm, "sdk_name": "analytics-python", "sdk_version": "2.3.3"},
           "properties": {"page_type": page_type, "model_id": "x5"}})
}

/// Version `version` of a lead's score. Leads with versions 7-9 went
/// silent: their last record is a time-driven `went_dormant`, graded low.
fn score(lead: usize, version: i64) -> serde_json::Value {
    let dormant = version == 9;
    let score = if dormant { 5.0 } else { 10.0 * version as f64 };
    json!({"lead_id": format!("L{lead:04}"), "score": score, "rule_score": score, "probability": 0.1,
           "grade": if version > 5 && !dormant { "high" } else { "low" }, "stage": if dormant { "dormant" } else { "new" },
           "reasons": [{"code": "configurator", "points": 10.0}], "reactivated": lead.is_multiple_of(5), "event_count": version,
           "platforms": ["mini_program", "web"], "first_platform": "mini_program", "first_channel": "autohome", "first_seen_at": T0, "last_event_at": T0 + version * 1000,
           "merged_into": null, "version": version, "updated_at": T0 + version * 1000,
           "change_reason": if dormant { "went_dormant" } else { "event" },
           "previous_stage": if version % 3 == 1 { None } else { Some("new") },
           "churn_risk": false, "last_intent_at": T0 + version.min(8) * 1000})
}

/// Records for events [from, to): the events, `to - from` / 60 DLQ
/// records, per-minute metric rows (each twice: a producer retry) and a few
/// score versions per lead, plus one poison record on the events topic when
/// `from` is 0. By the stream whose topic they go to.
async fn records(from: usize, to: usize) -> Vec<(Kind, String, Vec<u8>)> {
    let plan = Plan::embedded().unwrap();
    let encoder = Encoder::build(&plan, &EmbeddedResolver::new(&plan).unwrap())
        .await
        .unwrap();
    let mut records = Vec::new();
    for i in from..to {
        let bytes = encoder.encode(&event(i)).unwrap().bytes;
        records.push((Kind::Events, format!("anon-{}", i % 300), bytes));
        if i % 60 == 0 {
            let dlq = json!({"message_id": format!("bad-{i}"), "event": "lead_form_submitted", "reason": "missing_required",
                "field": "properties.form_id", "message": "properties.form_id is required", "source_id": "web-main",
                "platform": "web", "tenant": "brand-a", "sdk_name": "analytics.js", "sdk_version": "4.1.0",
                "received_at": T0 + i as i64, "raw": {"event": "Lead Form Submitted"}});
            records.push((Kind::Violations, "k".into(), dlq.to_string().into_bytes()));
        }
        if i % 100 == 0 {
            // An ingest instance's per-minute row; every record is sent
            // twice (a producer retry) and must count once.
            let row = json!({"minute": (T0 / 1000) as u64 + i as u64 / 100 * 60, "service": "ingest",
                "instance": "ingest-0:8080", "metric": "ingest_events_accepted_total", "value": 100.0});
            for _ in 0..2 {
                records.push((Kind::Metrics, "ingest".into(), row.to_string().into_bytes()));
            }
            let lead = i / 100;
            for v in 1..=3 {
                let bytes = encoder
                    .encode_derived("lead_score", &score(lead, v + (lead % 3) as i64 * 3))
                    .unwrap()
                    .bytes;
                records.push((Kind::Scores, format!("L{lead:04}"), bytes));
            }
        }
    }
    if from == 0 {
        // Not Confluent-framed: must become a dead letter, not a crash loop.
        records.push((Kind::Events, "poison".into(), b"not avro".to_vec()));
    }
    records
}

/// Produces [`records`] to the test's topics.
async fn produce(bootstrap: &str, t: &Topics, from: usize, to: usize) {
    // Sent all at once, so records share batches: a sink killed mid-batch
    // resumes from a committed offset inside one, as it does on Kafka.
    let producer: FutureProducer = leadstream_common::kafka::producer_config(bootstrap, 20)
        .create()
        .unwrap();
    let records = records(from, to).await;
    let mut deliveries = Vec::with_capacity(records.len());
    for (kind, key, bytes) in &records {
        let topic = match kind {
            Kind::Events => &t.events.name,
            Kind::Scores => &t.scores.name,
            Kind::Violations => &t.dlq.name,
            Kind::Metrics => &t.metrics.name,
        };
        let record = FutureRecord::to(topic).key(key).payload(bytes);
        deliveries.push(
            producer
                .send_result(record)
                .unwrap_or_else(|(e, _)| panic!("produce failed: {e}")),
        );
    }
    for delivery in deliveries {
        delivery
            .await
            .unwrap()
            .unwrap_or_else(|(e, _)| panic!("produce failed: {e}"));
    }
}

fn config(bootstrap: &str, t: &Topics, clickhouse: &str, database: &str) -> SinkConfig {
    let mut cfg = SinkConfig::defaults(bootstrap);
    cfg.clickhouse = common::clickhouse_args(clickhouse, database, None);
    cfg.shared.topics.events = t.events.name.clone();
    cfg.shared.topics.scores = t.scores.name.clone();
    cfg.shared.topics.dlq = t.dlq.name.clone();
    cfg.pipeline_metrics.topic = t.metrics.name.clone();
    cfg.group = common::unique("sink_group");
    cfg.batch_rows = 500;
    cfg.batch_ms = 200;
    cfg.max_backoff_ms = 500;
    cfg.shared.kafka.session_timeout_ms = 6_000;
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg
}

async fn client(database: &str) -> clickhouse::Client {
    leadstream_common::clickhouse::connect(&common::clickhouse(), Some(database))
        .await
        .unwrap()
        .client
}

async fn count(db: &clickhouse::Client, sql: &str) -> u64 {
    db.query(sql)
        .fetch_one::<u64>()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{sql}"))
}

/// Waits until the events table holds `n` distinct message ids.
async fn wait_for_events(db: &clickhouse::Client, n: u64, timeout: Duration) {
    wait_for(db, "SELECT uniqExact(message_id) FROM events", n, timeout).await;
}

/// After an outage: waits until all of 6,000 events, their 100 violations
/// and the 3 score versions of each of the 60 leads are in.
async fn wait_for_every_stream(db: &clickhouse::Client) {
    wait_for_events(db, 6000, Duration::from_secs(90)).await;
    wait_for_every_stream_but_events(db).await;
}

async fn wait_for_every_stream_but_events(db: &clickhouse::Client) {
    wait_for(
        db,
        "SELECT count() FROM schema_violations FINAL",
        100,
        Duration::from_secs(60),
    )
    .await;
    wait_for(
        db,
        "SELECT count() FROM lead_score_history FINAL",
        180,
        Duration::from_secs(60),
    )
    .await;
    wait_for(
        db,
        "SELECT count() FROM dead_letters FINAL",
        1,
        Duration::from_secs(60),
    )
    .await;
}

/// Waits until `sql` (a count) reaches `n`. Each stream (events, DLQ,
/// scores) retries on its own backoff after an outage, so waiting for the
/// events alone does not mean the others have caught up.
async fn wait_for(db: &clickhouse::Client, sql: &str, n: u64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // 0 while ClickHouse is away (the outage tests).
        let got = db.query(sql).fetch_one::<u64>().await.unwrap_or(0);
        if got >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {got} of {n} within {timeout:?}: {sql}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A TCP proxy to ClickHouse that can be taken down (connections refused
/// and cut) and brought back: ClickHouse going away, seen from the sink.
struct Outage {
    addr: String,
    down: Arc<AtomicBool>,
}

async fn proxy(target: &str) -> Outage {
    let target = target.trim_start_matches("http://").to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let down = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&down);
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            if flag.load(Ordering::SeqCst) {
                continue; // dropped: the client sees the connection closed
            }
            let (target, flag) = (target.clone(), Arc::clone(&flag));
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                let cut = async {
                    while !flag.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tokio::select! { _ = copy => {}, _ = cut => {} }
            });
        }
    });
    Outage { addr, down }
}

async fn assert_everything_once(db: &clickhouse::Client, events: u64, violations: u64, leads: u64) {
    assert_eq!(
        count(db, "SELECT count() FROM events FINAL").await,
        events,
        "each event exactly once after dedupe"
    );
    // What reached ClickHouse, before FINAL collapses redeliveries: the
    // delivery is at least once, so never fewer rows than events.
    let raw = count(db, "SELECT count() FROM events").await;
    assert!(raw >= events, "{raw} rows for {events} events");
    println!(
        "events: {events} distinct, {raw} rows written, {} duplicates collapsed by FINAL",
        raw - events
    );
    assert_eq!(
        count(db, "SELECT uniqExact(message_id) FROM events").await,
        events
    );
    assert_eq!(
        count(db, "SELECT count() FROM schema_violations FINAL").await,
        violations
    );
    assert_eq!(count(db, "SELECT count() FROM current_leads").await, leads);
    assert_eq!(
        count(db, "SELECT count() FROM dead_letters FINAL").await,
        1,
        "the poison record"
    );
    assert_eq!(
        count(
            db,
            "SELECT count() FROM pipeline_metrics FINAL WHERE service = 'ingest'"
        )
        .await,
        events / 100,
        "per-minute metric rows, once each"
    );
    // The views answer over what was written.
    assert!(count(db, "SELECT sum(visitors) FROM funnel_daily").await > 0);
    assert!(count(db, "SELECT sum(configured) FROM funnel_daily").await > 0);
    assert!(count(db, "SELECT sum(violations) FROM tracking_plan_health").await == violations);
    // Each lead once per day, in the grade it ended the day with: a third
    // of the leads went low -> high within the day, a third were high and
    // then went dormant (low) as time passed.
    assert_eq!(
        count(db, "SELECT toUInt64(sum(leads)) FROM grade_mix_daily").await,
        leads
    );
    let went_silent = (0..leads as usize).filter(|l| l % 3 == 2).count() as u64;
    assert_eq!(
        count(
            db,
            "SELECT toUInt64(sum(leads)) FROM grade_mix_daily WHERE grade = 'high'"
        )
        .await,
        (0..leads as usize).filter(|l| l % 3 == 1).count() as u64
    );
    // Stage flows: the silent leads moved new -> dormant, by time alone.
    assert_eq!(
        count(
            db,
            "SELECT toUInt64(sum(leads)) FROM stage_flow_daily WHERE from_stage = 'new' AND to_stage = 'dormant' AND change_reason = 'went_dormant'"
        )
        .await,
        went_silent
    );
    assert_eq!(
        count(db, "SELECT toUInt64(sum(leads)) FROM stage_flow_daily").await,
        went_silent,
        "no other stage changed"
    );
    assert_eq!(
        count(db, "SELECT count() FROM dormant_pool").await,
        went_silent
    );
    assert_eq!(
        count(
            db,
            "SELECT count() FROM current_leads WHERE grade = 'high' AND stage = 'dormant'"
        )
        .await,
        0,
        "a silent lead is not high"
    );
    assert_eq!(
        count(
            db,
            "SELECT count() FROM current_leads WHERE first_platform = 'mini_program'"
        )
        .await,
        leads,
        "first-touch platform from lead_score v2"
    );
    assert_eq!(count(db, "SELECT count() FROM call_list").await, leads);
    // Every query of the analyst guide and every dashboard panel runs
    // against what was written.
    let queries = common::analyst_queries();
    let guide = queries
        .iter()
        .filter(|(l, _)| l.starts_with("guide"))
        .count();
    assert!(guide >= 10, "the guide has {guide} queries");
    assert!(
        queries.len() - guide >= 10,
        "{} panels",
        queries.len() - guide
    );
    for (label, sql) in &queries {
        db.query(&format!("SELECT count() FROM ({sql})"))
            .fetch_one::<u64>()
            .await
            .unwrap_or_else(|e| panic!("{label} failed: {e}\n{sql}"));
    }
    // What sales should do now: by score, whatever the flags say.
    let top: String = db
        .query("SELECT lead_id FROM call_list LIMIT 1")
        .fetch_one()
        .await
        .unwrap();
    let best = count(db, "SELECT toUInt64(max(score)) FROM current_leads").await;
    assert_eq!(
        count(
            db,
            &format!("SELECT toUInt64(score) FROM current_leads WHERE lead_id = '{top}'")
        )
        .await,
        best,
        "the call list leads with the highest score"
    );
}

async fn migrate(clickhouse: &str, database: &str) {
    leadstream_sink::migrate(&common::clickhouse_args(clickhouse, database, None))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clickhouse_going_away_mid_load_loses_and_doubles_nothing() {
    let bootstrap = common::kafka();
    let t = topics(&bootstrap).await;
    let database = common::unique("sink_outage");
    migrate(&common::clickhouse(), &database).await;
    let db = client(&database).await;
    produce(&bootstrap, &t, 0, 3000).await;

    let outage = proxy(&common::clickhouse()).await;
    let cfg = config(&bootstrap, &t, &outage.addr, &database);
    let _sink = spawn_sink(&cfg, "outage");
    wait_for_events(&db, 500, Duration::from_secs(60)).await;
    outage.down.store(true, Ordering::SeqCst);
    produce(&bootstrap, &t, 3000, 6000).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    outage.down.store(false, Ordering::SeqCst);
    wait_for_events(&db, 6000, Duration::from_secs(90)).await;
    // Let the last batch's commit land, then check.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_everything_once(&db, 6000, 100, 60).await;
    assert_sink_retried(&cfg, "outage");
    db.query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .unwrap();
}

/// A sink started while ClickHouse cannot be reached (starting, or
/// restarting) waits for it instead of exiting, then writes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sink_started_while_clickhouse_is_down_waits_for_it() {
    let bootstrap = common::kafka();
    let t = topics(&bootstrap).await;
    let database = common::unique("sink_start_down");
    migrate(&common::clickhouse(), &database).await;
    let db = client(&database).await;
    produce(&bootstrap, &t, 0, 6000).await;

    let outage = proxy(&common::clickhouse()).await;
    outage.down.store(true, Ordering::SeqCst);
    let cfg = config(&bootstrap, &t, &outage.addr, &database);
    let mut sink = spawn_sink(&cfg, "start_down");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        sink.0.try_wait().unwrap().is_none(),
        "the sink exited while ClickHouse was down; log: {}",
        sink_log_path(&cfg, "start_down").display()
    );
    outage.down.store(false, Ordering::SeqCst);
    wait_for_events(&db, 6000, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_everything_once(&db, 6000, 100, 60).await;
    let log = std::fs::read_to_string(sink_log_path(&cfg, "start_down")).unwrap();
    assert!(
        log.contains("ClickHouse unreachable; waiting for it"),
        "the wait is logged: {log}"
    );
    db.query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clickhouse_killed_mid_load_and_restarted_loses_and_doubles_nothing() {
    let bootstrap = common::kafka();
    let t = topics(&bootstrap).await;
    let mut server = tokio::task::spawn_blocking(common::OwnClickHouse::start)
        .await
        .unwrap();
    let database = common::unique("sink_restart");
    migrate(&server.url(), &database).await;
    let db = leadstream_common::clickhouse::connect(&server.url(), Some(&database))
        .await
        .unwrap()
        .client;
    produce(&bootstrap, &t, 0, 3000).await;

    let cfg = config(&bootstrap, &t, &server.url(), &database);
    let _sink = spawn_sink(&cfg, "restart");
    wait_for_events(&db, 500, Duration::from_secs(60)).await;
    server.kill();
    produce(&bootstrap, &t, 3000, 6000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    wait_for_every_stream(&db).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_everything_once(&db, 6000, 100, 60).await;
    assert_sink_retried(&cfg, "restart");
    drop(server);
}

fn sink_log_path(cfg: &SinkConfig, name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}-{name}.log", cfg.group))
}

/// The sink must have seen the outage: an insert failed and was retried.
fn assert_sink_retried(cfg: &SinkConfig, name: &str) {
    let path = sink_log_path(cfg, name);
    let log = std::fs::read_to_string(&path).unwrap();
    assert!(
        log.contains("insert failed; retrying"),
        "the sink never saw ClickHouse fail; its log ({}):\n{log}",
        path.display()
    );
}

fn spawn_sink(cfg: &SinkConfig, name: &str) -> common::KilledOnDrop {
    let log = std::fs::File::create(sink_log_path(cfg, name)).unwrap();
    let cluster = cfg
        .clickhouse
        .cluster
        .iter()
        .flat_map(|c| ["--cluster", c.as_str()]);
    Command::new(env!("CARGO_BIN_EXE_leadstream"))
        .args([
            "sink",
            "--kafka",
            cfg.shared.kafka.brokers().unwrap(),
            "--clickhouse",
            cfg.clickhouse.url.as_deref().unwrap(),
            "--clickhouse-database",
            &cfg.clickhouse.database,
            "--events-topic",
            &cfg.shared.topics.events,
            "--scores-topic",
            &cfg.shared.topics.scores,
            "--dlq-topic",
            &cfg.shared.topics.dlq,
            "--pipeline-metrics-topic",
            &cfg.pipeline_metrics.topic,
            "--group",
            &cfg.group,
            "--batch-rows",
            "300",
            "--batch-ms",
            "100",
            "--session-timeout-ms",
            "6000",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(cluster)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(common::KilledOnDrop)
        .expect("start leadstream sink")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_batch_then_restart_writes_every_event_once() {
    let bootstrap = common::kafka();
    let t = topics(&bootstrap).await;
    let database = common::unique("sink_kill");
    migrate(&common::clickhouse(), &database).await;
    let db = client(&database).await;
    produce(&bootstrap, &t, 0, 6000).await;

    let cfg = config(&bootstrap, &t, &common::clickhouse(), &database);
    let victim = spawn_sink(&cfg, "victim");
    wait_for_events(&db, 1000, Duration::from_secs(60)).await;
    drop(victim); // kill -9 while batches are in flight
    let written = count(&db, "SELECT uniqExact(message_id) FROM events").await;
    assert!(
        written < 6000,
        "the kill must land mid-load (had {written})"
    );
    let _restarted = spawn_sink(&cfg, "restarted");
    wait_for_every_stream(&db).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_everything_once(&db, 6000, 100, 60).await;
    db.query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .unwrap();
}

/// Rows ClickHouse refuses for their data (here: a `throwIf` check the
/// table's owner added) become dead letters with ClickHouse's reason and
/// the original record; everything else is written once and the stream
/// moves on past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_clickhouse_refuses_become_dead_letters_and_the_stream_moves_on() {
    use base64::Engine as _;
    let bootstrap = common::kafka();
    let t = topics(&bootstrap).await;
    let database = common::unique("sink_refused");
    migrate(&common::clickhouse(), &database).await;
    let db = client(&database).await;
    let refused = ["m-000013", "m-004321"];
    db.query(&format!(
        "ALTER TABLE events ADD COLUMN guard UInt8 DEFAULT throwIf(message_id IN ('{}'))",
        refused.join("', '")
    ))
    .execute()
    .await
    .unwrap();
    produce(&bootstrap, &t, 0, 6000).await;

    let cfg = config(&bootstrap, &t, &common::clickhouse(), &database);
    let _sink = spawn_sink(&cfg, "refused");
    wait_for_events(&db, 5998, Duration::from_secs(90)).await;
    let kept =
        "SELECT count() FROM dead_letters FINAL WHERE error LIKE 'ClickHouse refused the row:%'";
    wait_for(&db, kept, 2, Duration::from_secs(30)).await;
    wait_for_every_stream_but_events(&db).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_eq!(count(&db, "SELECT count() FROM events FINAL").await, 5998);
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count() FROM events WHERE message_id IN ('{}')",
                refused.join("', '")
            )
        )
        .await,
        0,
        "a refused row is not written"
    );
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Kept {
        error: String,
        raw_base64: String,
    }
    let rows: Vec<Kept> = db
        .query("SELECT error, raw_base64 FROM dead_letters FINAL WHERE error LIKE 'ClickHouse refused%' ORDER BY kafka_partition, kafka_offset")
        .fetch_all()
        .await
        .unwrap();
    let mut ids: Vec<String> = rows
        .iter()
        .map(|r| {
            assert!(
                r.error.contains("395"),
                "ClickHouse's reason is kept: {}",
                r.error
            );
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&r.raw_base64)
                .unwrap();
            let raw = String::from_utf8_lossy(&raw);
            refused
                .iter()
                .find(|id| raw.contains(*id))
                .unwrap_or_else(|| panic!("the original record is kept: {raw}"))
                .to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, refused);
    let log = std::fs::read_to_string(sink_log_path(&cfg, "refused")).unwrap();
    assert!(log.contains("refuses rows of this batch"), "{log}");
    db.query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .unwrap();
}

/// The migrations, the sink's rows and every analyst and dashboard query
/// on a current ClickHouse release (chDB), beside the 18.16 server above:
/// the rows go through the sink's own conversion into its JSONEachRow
/// export, which the script loads, as a user would with clickhouse-client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_rows_and_queries_work_on_current_clickhouse() {
    let plan = Plan::embedded().unwrap();
    let decoder = leadstream_schemas::Decoder::new(std::sync::Arc::new(
        EmbeddedResolver::new(&plan).unwrap(),
    ));
    let export = tempfile::tempdir().unwrap();
    let store = leadstream_sink::store::Store::Export(export.path().to_owned());
    let all = records(0, 3000).await;
    let mut row_binary_columns = std::collections::BTreeMap::new();
    for kind in [Kind::Events, Kind::Scores, Kind::Violations, Kind::Metrics] {
        let of_kind: Vec<KafkaRecord<'_>> = all
            .iter()
            .enumerate()
            .filter(|(_, (k, _, _))| *k == kind)
            .map(|(i, (_, _, bytes))| KafkaRecord {
                topic: kind.label(),
                partition: 0,
                offset: i as i64,
                payload: Some(bytes),
            })
            .collect();
        let batch = to_batch(
            kind,
            &decoder,
            &of_kind,
            1_795_305_600,
            Format::JsonEachRow,
            &Buffers::default(),
        )
        .await;
        write_batch(&store, &batch).await.unwrap();
        // The same rows in the RowBinary the sink inserts, for the script to
        // load beside the JSON and compare.
        let binary = to_batch(
            kind,
            &decoder,
            &of_kind,
            1_795_305_600,
            Format::RowBinary,
            &Buffers::default(),
        )
        .await;
        for (table, rows) in binary.tables() {
            if rows.is_empty() {
                continue;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(export.path().join(format!("{table}.rowbinary")))
                .unwrap();
            for bytes in rows.bytes() {
                f.write_all(bytes).unwrap();
            }
            row_binary_columns.insert(table, rows.columns.clone());
        }
    }
    let migrations: Vec<serde_json::Value> = leadstream_sink::migrate::MIGRATIONS
        .iter()
        .map(|(_, name, sql)| json!({"name": name, "statements": leadstream_sink::migrate::statements(sql)}))
        .collect();
    let queries: Vec<serde_json::Value> = common::analyst_queries()
        .into_iter()
        .map(|(label, sql)| json!({"label": label, "sql": sql}))
        .collect();
    let tables = [
        "events",
        "lead_scores",
        "lead_score_history",
        "schema_violations",
        "dead_letters",
        "pipeline_metrics",
    ];
    let spec = export.path().join("spec.json");
    std::fs::write(
        &spec,
        json!({"migrations": migrations, "export_dir": export.path(), "tables": tables, "queries": queries,
               "row_binary_columns": row_binary_columns})
            .to_string(),
    )
    .unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/modern_clickhouse.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(&spec)
        .output()
        .expect("python3 must be installed to run this test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'chdb'"),
        "chDB is not installed; run deploy/scripts/install-test-deps.sh (pip install chdb)"
    );
    assert!(out.status.success(), "the chDB script failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["errors"],
        json!([]),
        "on ClickHouse {}",
        report["version"]
    );
    let major: u32 = report["version"]
        .as_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(major >= 24, "chDB runs ClickHouse {}", report["version"]);
    let loaded = &report["loaded"];
    assert_eq!(loaded["events"], 3000);
    assert_eq!(loaded["dead_letters"], 1, "the poison record");
    assert_eq!(loaded["schema_violations"], 50);
    assert_eq!(loaded["lead_scores"], 30, "the latest version of each lead");
    assert_eq!(loaded["lead_score_history"], 90);
    assert_eq!(
        loaded["pipeline_metrics"], 30,
        "each sent twice, counted once"
    );
    assert_eq!(
        report["row_binary_compared"],
        json!(tables),
        "every table's RowBinary loaded and compared with its JSON"
    );
    let answers = &report["answers"];
    assert_eq!(
        answers.as_object().unwrap().len(),
        common::analyst_queries().len()
    );
    assert_eq!(answers["guide query 1"], 20, "the call list's top 20");
}

/// The sink on a ClickHouse cluster, through its `Distributed` tables,
/// while a replica of the other shard is killed with -9 mid-load and
/// started again: every event once across the cluster, the killed replica
/// catches up, and the leads' scores equal what a single server holds for
/// the same input.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_cluster_a_replica_killed_mid_load_loses_and_doubles_nothing() {
    let (cluster, urls) = common::cluster();
    let bootstrap = common::kafka();
    let t = topics(&bootstrap).await;
    let database = common::unique("sink_cluster");
    leadstream_sink::migrate(&common::clickhouse_args(
        &urls[0],
        &database,
        Some(&cluster),
    ))
    .await
    .unwrap();
    let on = |i: usize| {
        let (url, database) = (urls[i].clone(), database.clone());
        async move {
            leadstream_common::clickhouse::connect(&url, Some(&database))
                .await
                .unwrap()
                .client
        }
    };
    produce(&bootstrap, &t, 0, 3000).await;
    let mut cfg = config(&bootstrap, &t, &urls[0], &database);
    cfg.clickhouse.cluster = Some(cluster);
    let _sink = spawn_sink(&cfg, "cluster");
    // The same input into one server, for the scores to compare.
    let single_db = common::unique("sink_cluster_single");
    migrate(&common::clickhouse(), &single_db).await;
    let mut single_cfg = config(&bootstrap, &t, &common::clickhouse(), &single_db);
    single_cfg.group = common::unique("sink_group_single");
    let _single = spawn_sink(&single_cfg, "cluster-single");

    let reader = on(1).await;
    wait_for_events(&reader, 500, Duration::from_secs(60)).await;
    tokio::task::spawn_blocking(|| common::cluster_server("kill-replica", 3))
        .await
        .unwrap();
    produce(&bootstrap, &t, 3000, 6000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::spawn_blocking(|| common::cluster_server("start-replica", 3))
        .await
        .unwrap();
    wait_for_every_stream(&reader).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_everything_once(&reader, 6000, 100, 60).await;

    // The killed replica fetched what its shard took while it was down.
    let shard2 = count(&on(2).await, "SELECT count() FROM events_local").await;
    wait_for(
        &on(3).await,
        "SELECT count() FROM events_local",
        shard2,
        Duration::from_secs(60),
    )
    .await;
    let shard1 = count(&on(0).await, "SELECT count() FROM events_local").await;
    assert!(
        shard1 > 0 && shard2 > 0,
        "both shards hold events: {shard1} and {shard2}"
    );

    let single = client(&single_db).await;
    wait_for_every_stream(&single).await;
    let scores = "SELECT lead_id, score, grade, stage, version FROM current_leads ORDER BY lead_id";
    let on_cluster: Vec<(String, f64, String, String, u64)> =
        reader.query(scores).fetch_all().await.unwrap();
    let on_one: Vec<(String, f64, String, String, u64)> =
        single.query(scores).fetch_all().await.unwrap();
    assert_eq!(on_cluster.len(), 60);
    assert_eq!(
        on_cluster, on_one,
        "the cluster's leads differ from one server's"
    );
    // Every analyst query and panel answers the same on both. A trailing
    // LIMIT is left out: rows tied in the ORDER BY may be cut differently.
    for (label, sql) in common::analyst_queries() {
        let sql = without_limit(&sql);
        let (a, b) = (
            answer(&reader, &sql, &label).await,
            answer(&single, &sql, &label).await,
        );
        assert!(
            same_rows(&a, &b),
            "{label} differs on the cluster:\n{}\non one server:\n{}",
            a.join("\n"),
            b.join("\n")
        );
    }
}

/// `sql` without a trailing `LIMIT n`.
fn without_limit(sql: &str) -> String {
    let sql = sql.trim().trim_end_matches(';').trim_end();
    match sql.rsplit_once("LIMIT") {
        Some((head, n)) if n.trim().parse::<u64>().is_ok() => head.trim_end().to_owned(),
        _ => sql.to_owned(),
    }
}

/// The rows `sql` returns, as sorted tab-separated lines.
async fn answer(db: &clickhouse::Client, sql: &str, label: &str) -> Vec<String> {
    let bytes = db
        .query(sql)
        .fetch_bytes("TabSeparated")
        .unwrap()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{label}: {e}\n{sql}"));
    let mut lines: Vec<String> = String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// Equal rows, numbers to a relative 1e-9: sums over shards add in
/// another order.
fn same_rows(a: &[String], b: &[String]) -> bool {
    let same_field = |u: &str, v: &str| {
        u == v
            || matches!((u.parse::<f64>(), v.parse::<f64>()), (Ok(p), Ok(q))
                if (p - q).abs() <= 1e-9 * p.abs().max(q.abs()))
    };
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let (xs, ys): (Vec<&str>, Vec<&str>) =
                (x.split('\t').collect(), y.split('\t').collect());
            xs.len() == ys.len() && xs.iter().zip(&ys).all(|(u, v)| same_field(u, v))
        })
}
