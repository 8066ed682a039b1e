//! `leadstream sink` against the real broker and ClickHouse: nothing lost
//! and nothing doubled when ClickHouse goes away mid-load and when the sink
//! is killed with -9 mid-batch; poison records become dead letters; the
//! analyst views answer over what was written.

mod common;

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use leadstream_schemas::{EmbeddedResolver, Encoder, Plan};
use leadstream_sink::{ClickHouseArgs, SinkConfig};
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

fn score(lead: usize, version: i64) -> serde_json::Value {
    json!({"lead_id": format!("L{lead:04}"), "score": 10.0 * version as f64, "rule_score": 10.0 * version as f64, "probability": 0.1,
           "grade": if version > 6 { "high" } else { "low" }, "stage": "new",
           "reasons": [{"code": "configurator", "points": 10.0}], "reactivated": lead.is_multiple_of(5), "event_count": version,
           "platforms": ["web"], "first_channel": "autohome", "first_seen_at": T0, "last_event_at": T0 + version * 1000,
           "merged_into": null, "version": version, "updated_at": T0 + version * 1000})
}

/// Produces events [from, to), `to - from` / 60 DLQ records and a few score
/// versions per lead, plus one poison record on the events topic.
async fn produce(bootstrap: &str, t: &Topics, from: usize, to: usize) {
    let plan = Plan::embedded().unwrap();
    let encoder = Encoder::build(&plan, &EmbeddedResolver::new(&plan).unwrap())
        .await
        .unwrap();
    // One record per batch, sent one after another: Tansu 0.6 answers a
    // fetch from an offset inside a record batch with the *next* batch, so a
    // consumer resuming from a committed offset mid-batch would skip records
    // (Kafka returns the containing batch). Single-record batches keep this
    // test about the sink rather than that broker bug.
    let producer: FutureProducer = leadstream_common::kafka::producer_config(bootstrap, 0)
        .create()
        .unwrap();
    let mut records: Vec<(&str, String, Vec<u8>)> = Vec::new();
    for i in from..to {
        let bytes = encoder.encode(&event(i)).unwrap().bytes;
        records.push((&t.events.name, format!("anon-{}", i % 300), bytes));
        if i % 60 == 0 {
            let dlq = json!({"message_id": format!("bad-{i}"), "event": "lead_form_submitted", "reason": "missing_required",
                "field": "properties.form_id", "message": "properties.form_id is required", "source_id": "web-main",
                "platform": "web", "tenant": "brand-a", "sdk_name": "analytics.js", "sdk_version": "4.1.0",
                "received_at": T0 + i as i64, "raw": {"event": "Lead Form Submitted"}});
            records.push((&t.dlq.name, "k".into(), dlq.to_string().into_bytes()));
        }
        if i % 100 == 0 {
            // An ingest instance's per-minute row; every record is sent
            // twice (a producer retry) and must count once.
            let row = json!({"minute": (T0 / 1000) as u64 + i as u64 / 100 * 60, "service": "ingest",
                "instance": "ingest-0:8080", "metric": "ingest_events_accepted_total", "value": 100.0});
            for _ in 0..2 {
                records.push((
                    &t.metrics.name,
                    "ingest".into(),
                    row.to_string().into_bytes(),
                ));
            }
            let lead = i / 100;
            for v in 1..=3 {
                let bytes = encoder
                    .encode_derived("lead_score", &score(lead, v + (lead % 3) as i64 * 3))
                    .unwrap()
                    .bytes;
                records.push((&t.scores.name, format!("L{lead:04}"), bytes));
            }
        }
    }
    if from == 0 {
        // Not Confluent-framed: must become a dead letter, not a crash loop.
        records.push((&t.events.name, "poison".into(), b"not avro".to_vec()));
    }
    for (topic, key, bytes) in &records {
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(bytes),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce failed: {e}"));
    }
}

fn config(bootstrap: &str, t: &Topics, clickhouse: &str, database: &str) -> SinkConfig {
    let mut cfg = SinkConfig::defaults(bootstrap);
    cfg.clickhouse = ClickHouseArgs {
        url: Some(clickhouse.to_owned()),
        database: database.to_owned(),
        user: None,
        password: None,
    };
    cfg.events_topic = t.events.name.clone();
    cfg.scores_topic = t.scores.name.clone();
    cfg.dlq_topic = t.dlq.name.clone();
    cfg.pipeline_metrics.topic = t.metrics.name.clone();
    cfg.group = common::unique("sink_group");
    cfg.batch_rows = 500;
    cfg.batch_ms = 200;
    cfg.max_backoff_ms = 500;
    cfg.session_timeout_ms = 6_000;
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
    db.query(sql).fetch_one::<u64>().await.unwrap_or(0)
}

/// Waits until the events table holds `n` distinct message ids.
async fn wait_for_events(db: &clickhouse::Client, n: u64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got = count(db, "SELECT uniqExact(message_id) FROM events").await;
        if got >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {got} of {n} events reached ClickHouse within {timeout:?}"
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
    assert!(count(db, "SELECT sum(leads) FROM grade_mix_daily").await >= leads);
    assert_eq!(count(db, "SELECT count() FROM call_list").await, leads);
    // Every query of the analyst guide runs against what was written.
    let guide = include_str!("../deploy/clickhouse/README.md");
    let queries: Vec<&str> = guide
        .split("```sql")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert!(
        queries.len() >= 10,
        "the guide has {} queries",
        queries.len()
    );
    for q in queries {
        db.query(&format!("SELECT count() FROM ({})", q.trim()))
            .fetch_one::<u64>()
            .await
            .unwrap_or_else(|e| panic!("guide query failed: {e}\n{q}"));
    }
    // Every panel of the Grafana dashboards runs against it too.
    let mut panels = 0;
    for dashboard in [
        include_str!("../deploy/grafana/dashboards/leads.json"),
        include_str!("../deploy/grafana/dashboards/tracking-plan.json"),
        include_str!("../deploy/grafana/dashboards/pipeline-health.json"),
    ] {
        let d: serde_json::Value = serde_json::from_str(dashboard).expect("dashboard JSON");
        for panel in d["panels"].as_array().unwrap() {
            // Prometheus panels (`expr`) are checked against live
            // /metrics by the quickstart test.
            for target in panel["targets"].as_array().unwrap() {
                let Some(sql) = target["rawSql"].as_str() else {
                    continue;
                };
                db.query(&format!("SELECT count() FROM ({sql})"))
                    .fetch_one::<u64>()
                    .await
                    .unwrap_or_else(|e| panic!("panel {:?} failed: {e}\n{sql}", panel["title"]));
                panels += 1;
            }
        }
    }
    assert!(panels >= 10, "{panels} panels");
    let top: String = db
        .query("SELECT lead_id FROM call_list LIMIT 1")
        .fetch_one()
        .await
        .unwrap();
    let flagged = count(
        db,
        &format!("SELECT toUInt64(reactivated) FROM current_leads WHERE lead_id = '{top}'"),
    )
    .await;
    assert_eq!(flagged, 1, "reactivated leads come first on the call list");
}

async fn migrate(database: &str) {
    leadstream_sink::migrate(&ClickHouseArgs {
        url: Some(common::clickhouse()),
        database: database.to_owned(),
        user: None,
        password: None,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clickhouse_going_away_mid_load_loses_and_doubles_nothing() {
    let bootstrap = common::kafka();
    let t = topics(&bootstrap).await;
    let database = common::unique("sink_outage");
    migrate(&database).await;
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
    db.query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .unwrap();
}

fn spawn_sink(cfg: &SinkConfig, name: &str) -> common::KilledOnDrop {
    let log = std::env::temp_dir().join(format!("{}-{name}.log", cfg.group));
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_leadstream"))
        .args([
            "sink",
            "--kafka",
            cfg.kafka.as_deref().unwrap(),
            "--clickhouse",
            cfg.clickhouse.url.as_deref().unwrap(),
            "--clickhouse-database",
            &cfg.clickhouse.database,
            "--events-topic",
            &cfg.events_topic,
            "--scores-topic",
            &cfg.scores_topic,
            "--dlq-topic",
            &cfg.dlq_topic,
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
    migrate(&database).await;
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
    wait_for_events(&db, 6000, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_everything_once(&db, 6000, 100, 60).await;
    db.query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .unwrap();
}
