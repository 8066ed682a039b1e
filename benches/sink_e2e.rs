//! `leadstream sink` against a real broker and ClickHouse:
//! 1. rows/s from a Kafka backlog of events (and of lead scores) into
//!    ClickHouse through the sink, beside the bare `clickhouse` crate
//!    inserting the same rows in the same batch size in the same run;
//! 2. freshness at a steady rate: from an event's produce to Kafka (the
//!    moment ingest acknowledges it) to the row being countable in
//!    ClickHouse, polled every 50 ms.
//!
//!   LEADSTREAM_BENCH_KAFKA=127.0.0.1:19092 \
//!   LEADSTREAM_BENCH_CLICKHOUSE=http://127.0.0.1:18123 cargo bench --bench sink_e2e
//!
//! Knobs: LEADSTREAM_BENCH_EVENTS (400000), LEADSTREAM_BENCH_SCORES (200000),
//! LEADSTREAM_BENCH_RATE (events/s in the freshness run, 10000),
//! LEADSTREAM_BENCH_SECONDS (freshness run length, 20),
//! LEADSTREAM_BENCH_ROUNDS (bare/sink rounds for events, 3),
//! LEADSTREAM_BENCH_BATCH_MS (the sink's --batch-ms; its default otherwise),
//! LEADSTREAM_BENCH_CLUSTER (a cluster of that server's `remote_servers`:
//! both databases are migrated `--cluster`, and the sink and the bare
//! inserts both write through `Distributed` tables, synchronously).
//!
//! The bare inserts go to a second database migrated like the sink's, so
//! both sides write tables of the same engine, sharding and replication.

mod harness;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use leadstream_schemas::{EmbeddedResolver, Encoder, Plan, codec::Decoder};
use leadstream_sink::{
    ClickHouseArgs, SinkConfig,
    encode::{Buffers, Format, RowEncoder},
    rows::{EventRow, ScoreRow, event_row, fill_event_row, score_row},
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

// Same allocator as the `leadstream` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0: i64 = 1_795_305_600_000;

fn event(i: usize, received_ms: i64) -> serde_json::Value {
    let page_type = ["home", "model_detail", "configurator", "price", "article"][i % 5];
    let platform = ["web", "app", "mini_program"][i % 3];
    json!({"message_id": format!("e-{i:09}"), "event": "page_viewed", "type": "page", "platform": platform,
           "source_id": "web-main", "tenant": "brand-a", "anonymous_id": format!("anon-{}", i % 20_000),
           "timestamp": T0 + i as i64 * 10, "received_at": received_ms,
           "context": {"page_path": "/models/x5", "utm_source": "autohome", "sdk_name": "analytics.js", "sdk_version": "4.1.0",
                       "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"},
           "properties": {"page_type": page_type, "model_id": "x5", "duration_ms": 30_000}})
}

fn score(i: usize) -> serde_json::Value {
    let v = (i / 10_000 + 1) as i64;
    json!({"lead_id": format!("L{:06}", i % 10_000), "score": 42.5, "rule_score": 40.0, "probability": 0.2,
           "grade": "medium", "stage": "nurture",
           "reasons": [{"code": "configurator", "points": 12.0}, {"code": "price_page", "points": 8.0}],
           "reactivated": false, "event_count": v * 3, "platforms": ["web", "app"], "first_channel": "autohome",
           "first_seen_at": T0, "last_event_at": T0 + v * 1000, "merged_into": null, "version": v,
           "updated_at": T0 + v * 1000})
}

async fn produce_all(producer: &FutureProducer, topic: &str, records: &[(String, Vec<u8>)]) {
    let mut pending = Vec::new();
    for (key, bytes) in records {
        let record = FutureRecord::to(topic).key(key).payload(bytes);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        if pending.len() >= 50_000 {
            for d in pending.drain(..) {
                d.await.unwrap().unwrap();
            }
        }
    }
    for d in pending {
        d.await.unwrap().unwrap();
    }
}

async fn count(db: &clickhouse::Client, sql: &str) -> u64 {
    db.query(sql).fetch_one::<u64>().await.unwrap_or(0)
}

/// Waits (up to 60 s) until ClickHouse runs no background merge, so each
/// measured phase starts from the same quiet server rather than paying for
/// merging the rows the previous phase inserted.
async fn quiesce(db: &clickhouse::Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet = 0;
    while quiet < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if count(db, "SELECT toUInt64(count()) FROM system.merges").await == 0 {
            quiet += 1;
        } else {
            quiet = 0;
        }
    }
}

/// Polls `sql` until it counts `n` more than `base`. Returns the rows/s
/// between 10% and 90% of `n` (the steady state: no group join, no tail)
/// and the seconds from `start` to the end.
async fn wait_for(
    db: &clickhouse::Client,
    sql: &str,
    base: u64,
    n: u64,
    start: Instant,
) -> (f64, f64) {
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    loop {
        let c = count(db, sql).await.saturating_sub(base);
        samples.push((Instant::now(), c));
        if c >= n {
            let at = |share: f64| {
                *samples
                    .iter()
                    .find(|(_, c)| *c as f64 >= share * n as f64)
                    .unwrap()
            };
            let ((t1, c1), (t2, c2)) = (at(0.1), at(0.9));
            assert!(c2 > c1, "too few inserts to measure; raise the row count");
            let rate = (c2 - c1) as f64 / (t2 - t1).as_secs_f64();
            return (start.elapsed().as_secs_f64(), rate);
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "only {c} of {n} rows after 10 minutes: {sql}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The bare client: the same rows in batches of the sink's `--batch-rows`
/// records, one table after another as the sink does. Returns rows/s.
async fn bare_insert<T>(db: &clickhouse::Client, tables: &[&str], rows: &[T], batch: usize) -> f64
where
    T: clickhouse::RowWrite + serde::Serialize + for<'a> clickhouse::Row<Value<'a> = T>,
{
    let started = Instant::now();
    for chunk in rows.chunks(batch) {
        for table in tables {
            let mut insert = db.insert::<T>(table).await.unwrap();
            for row in chunk {
                insert.write(row).await.unwrap();
            }
            insert.end().await.unwrap();
        }
    }
    (rows.len() * tables.len()) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    if !harness::under_cargo_bench() {
        return; // built by `cargo build --all-targets`; only `cargo bench` runs it
    }
    harness::init_tracing();
    let bootstrap = harness::kafka();
    let clickhouse_url = harness::clickhouse();
    let n_events: usize = harness::knob("LEADSTREAM_BENCH_EVENTS", 400_000);
    let n_scores: usize = harness::knob("LEADSTREAM_BENCH_SCORES", 200_000);
    let rate: usize = harness::knob("LEADSTREAM_BENCH_RATE", 10_000);
    let seconds: usize = harness::knob("LEADSTREAM_BENCH_SECONDS", 20);
    let rounds: usize = harness::knob("LEADSTREAM_BENCH_ROUNDS", 3);

    let run = format!("skbench{}", std::process::id());
    let database = run.clone();
    let args = ClickHouseArgs {
        url: Some(clickhouse_url.clone()),
        database: database.clone(),
        user: None,
        password: None,
        cluster: std::env::var("LEADSTREAM_BENCH_CLUSTER").ok(),
    };
    leadstream_sink::migrate(&args).await.unwrap();
    let db = leadstream_common::clickhouse::connect(&clickhouse_url, Some(&database))
        .await
        .unwrap()
        .client;
    let bare_args = ClickHouseArgs {
        database: format!("{run}bare"),
        ..args.clone()
    };
    leadstream_sink::migrate(&bare_args).await.unwrap();
    let mut bare_db =
        leadstream_common::clickhouse::connect(&clickhouse_url, Some(&bare_args.database))
            .await
            .unwrap()
            .client;
    if args.cluster.is_some() {
        // As the sink inserts: acknowledged once every shard has the rows.
        bare_db = bare_db.with_setting("insert_distributed_sync", "1");
    }

    let mut cfg = SinkConfig::defaults(&bootstrap);
    cfg.clickhouse = args.clone();
    cfg.shared.topics.events = format!("{run}.events");
    cfg.shared.topics.scores = format!("{run}.lead_scores");
    cfg.shared.topics.dlq = format!("{run}.dlq");
    cfg.pipeline_metrics.topic = String::new();
    cfg.group = format!("{run}-sink");
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.batch_ms = harness::knob("LEADSTREAM_BENCH_BATCH_MS", cfg.batch_ms);
    let spec = |name: &str, partitions| leadstream_common::kafka::TopicSpec {
        name: name.to_owned(),
        partitions,
        replication: 1,
        compacted: false,
    };
    leadstream_common::kafka::ensure_topics(
        &bootstrap,
        &[
            spec(&cfg.shared.topics.events, 4),
            spec(&cfg.shared.topics.scores, 4),
            spec(&cfg.shared.topics.dlq, 1),
        ],
    )
    .await
    .unwrap();

    // The same rows both ways: encode, then decode exactly as the sink does.
    let plan = Plan::embedded().unwrap();
    let resolver = Arc::new(EmbeddedResolver::new(&plan).unwrap());
    let encoder = Encoder::build(&plan, resolver.as_ref()).await.unwrap();
    let decoder = Decoder::new(resolver);
    // Round r's events: records for Kafka and the rows the sink makes of
    // them, with message ids of their own (`events` collapses repeats).
    let round_events = |round: usize| {
        let mut records = Vec::with_capacity(n_events);
        let mut rows: Vec<EventRow> = Vec::with_capacity(n_events);
        for i in 0..n_events {
            let id = (round - 1) * n_events + i;
            let enc = encoder.encode(&event(id, T0 + i as i64)).unwrap();
            let row = decoder.visit_cached(&enc.bytes, |sid, d| event_row(d, sid, 0, i as i64));
            rows.push(row.expect("schema fetched").unwrap().unwrap());
            records.push((format!("anon-{}", i % 20_000), enc.bytes));
        }
        (records, rows)
    };
    // The reader for the events' schema, fetched once.
    let first = encoder.encode(&event(0, T0)).unwrap().bytes;
    decoder.decode(&first).await.unwrap();
    let (mut events, mut event_rows) = round_events(1);
    let mut scores = Vec::with_capacity(n_scores);
    let mut score_rows: Vec<ScoreRow> = Vec::with_capacity(n_scores);
    for i in 0..n_scores {
        let enc = encoder.encode_derived("lead_score", &score(i)).unwrap();
        let row = decoder.visit(&enc.bytes, |_, d| score_row(d));
        score_rows.push(row.await.unwrap().unwrap());
        scores.push((format!("L{:06}", i % 10_000), enc.bytes));
    }

    // What the sink does per record before inserting, alone on one core:
    // the borrowed decode alone, then with the row built; apache-avro's
    // generic decode (what the sink used before) for comparison.
    let time = |f: &dyn Fn(&[u8])| {
        let t = Instant::now();
        for (_, bytes) in &events {
            f(bytes);
        }
        t.elapsed()
    };
    let t_decode = time(&|b| {
        std::hint::black_box(decoder.visit_cached(b, |_, d| d.entries().count()));
    });
    let t_both = time(&|b| {
        std::hint::black_box(decoder.visit_cached(b, |id, d| event_row(d, id, 0, 0)));
    });
    let t_generic = time(&|b| {
        std::hint::black_box(decoder.decode_cached(b));
    });
    // As a sink conversion thread does: one reused row, encoded at once
    // into a buffer reused from batch to batch.
    let (t_encoded, row_bytes) = {
        let mut row = EventRow::default();
        let pool = Buffers::default();
        let mut row_bytes = 0;
        let t = Instant::now();
        for batch in events.chunks(cfg.batch_rows) {
            let mut out = RowEncoder::with_buffer(Format::RowBinary, pool.take(0));
            for (_, bytes) in batch {
                decoder
                    .visit_cached(bytes, |id, d| fill_event_row(&mut row, d, id, 0, 0))
                    .unwrap()
                    .unwrap()
                    .unwrap();
                out.push(&row).unwrap();
            }
            let encoded = out.finish();
            row_bytes += encoded.bytes().map(<[u8]>::len).sum::<usize>();
            pool.give_back(encoded);
        }
        (t.elapsed(), row_bytes / n_events)
    };
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n_events as f64;
    println!(
        "per event, one core: borrowed Avro decode {:.2} µs, + row {:.2} µs = {:.0} events/s (apache-avro generic decode alone: {:.2} µs); \
         decode + reused row + RowBinary ({} B), as the sink does: {:.2} µs",
        per(t_decode),
        per(t_both.saturating_sub(t_decode)),
        1e6 / per(t_both),
        per(t_generic),
        row_bytes,
        per(t_encoded)
    );

    let producer: FutureProducer = leadstream_common::kafka::producer_config(&bootstrap, 5)
        .create()
        .unwrap();

    // Events, in rounds: the bare insert of the round's rows, then the same
    // records as a backlog through the sink, each from a quiet ClickHouse.
    // Merges make single rounds vary by a quarter; the median round is the
    // figure.
    let mut ratios = Vec::new();
    let mut sink_rates = Vec::new();
    for round in 1..=rounds {
        quiesce(&db).await;
        // Both sides get the round's own rows, so both tables grow alike
        // and ClickHouse merges as much behind each.
        let records = if round == 1 {
            std::mem::take(&mut events)
        } else {
            let (records, rows) = round_events(round);
            event_rows = rows;
            records
        };
        let cpu0 = harness::cpu();
        let bare = bare_insert(&bare_db, &["events"], &event_rows, cfg.batch_rows).await;
        let bare_cpu = harness::cpu().cores_since(&cpu0);
        produce_all(&producer, &cfg.shared.topics.events, &records).await;
        drop(records);
        let base = count(&db, "SELECT count() FROM events").await;
        quiesce(&db).await;
        let started = Instant::now();
        let cpu0 = harness::cpu();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sink = tokio::spawn(leadstream_sink::run(cfg.clone(), async move {
            let _ = stop_rx.await;
        }));
        let (all, through_sink) = wait_for(
            &db,
            "SELECT count() FROM events",
            base,
            n_events as u64,
            started,
        )
        .await;
        let sink_cpu = harness::cpu().cores_since(&cpu0);
        let _ = stop_tx.send(());
        sink.await.unwrap().unwrap();
        println!(
            "events round {round}: {n_events} rows; sink {through_sink:.0} rows/s (from 10% to 90% of the rows; \
             all in {all:.2} s from start incl. group join); bare clickhouse insert {bare:.0} rows/s; \
             ratio {:.2}",
            through_sink / bare
        );
        println!("  bare insert {bare_cpu}\n  sink        {sink_cpu}");
        ratios.push(through_sink / bare);
        sink_rates.push(through_sink);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "events: sink / bare insert over {rounds} rounds: median {:.2} (min {:.2}, max {:.2})",
        harness::percentile(&ratios, 0.5),
        ratios[0],
        ratios[ratios.len() - 1]
    );

    quiesce(&db).await;
    let bare_scores = bare_insert(
        &bare_db,
        &["lead_scores", "lead_score_history"],
        &score_rows,
        cfg.batch_rows,
    )
    .await;

    // Scores: a backlog while the sink is stopped, then the same group resumes.
    produce_all(&producer, &cfg.shared.topics.scores, &scores).await;
    quiesce(&db).await;
    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sink = tokio::spawn(leadstream_sink::run(cfg.clone(), async move {
        let _ = stop_rx.await;
    }));
    let (sc_all, history) = wait_for(
        &db,
        "SELECT count() FROM lead_score_history",
        0,
        n_scores as u64,
        started,
    )
    .await;
    let sink_scores = 2.0 * history; // each score is a lead_scores and a history row
    println!(
        "scores: {n_scores} records = {} rows (lead_scores + history); sink {sink_scores:.0} rows/s \
         (from 10% to 90% of the rows; all in {sc_all:.2} s from start); \
         bare clickhouse insert {bare_scores:.0} rows/s; ratio {:.2}",
        2 * n_scores,
        sink_scores / bare_scores
    );

    // Freshness: the sink is caught up; events arrive at `rate`. Each
    // event's produce time is kept; when a poll first counts k rows, rows
    // beyond the previous count became queryable by then.
    let base = count(&db, "SELECT count() FROM events").await as usize;
    let total = rate * seconds;
    let sent: Arc<std::sync::Mutex<Vec<i64>>> = Arc::default();
    let producing = {
        let (producer, topic, sent) = (
            producer.clone(),
            cfg.shared.topics.events.clone(),
            sent.clone(),
        );
        tokio::spawn(async move {
            let tick = Duration::from_millis(10);
            let per_tick = (rate / 100).max(1);
            let mut interval = tokio::time::interval(tick);
            let mut i = 0;
            let mut pending = Vec::new();
            while i < total {
                interval.tick().await;
                for _ in 0..per_tick.min(total - i) {
                    let now = harness::now_ms();
                    let bytes = encoder
                        .encode(&event(rounds * n_events + i, now))
                        .unwrap()
                        .bytes;
                    let key = format!("anon-{}", i % 20_000);
                    let record = FutureRecord::to(&topic).key(&key).payload(&bytes);
                    pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
                    sent.lock().unwrap().push(now);
                    i += 1;
                }
            }
            for d in pending {
                d.await.unwrap().unwrap();
            }
        })
    };
    let mut latencies = Vec::with_capacity(total);
    let mut seen = 0usize;
    while seen < total {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = harness::now_ms();
        let c = (count(&db, "SELECT count() FROM events").await as usize).saturating_sub(base);
        let sent = sent.lock().unwrap();
        for &t in &sent[seen..c.min(sent.len())] {
            latencies.push((now - t) as f64 / 1000.0);
        }
        seen = seen.max(c.min(sent.len()));
    }
    producing.await.unwrap();
    latencies.sort_by(f64::total_cmp);
    let freshness = (
        harness::percentile(&latencies, 0.5),
        harness::percentile(&latencies, 0.99),
        *latencies.last().unwrap(),
    );
    println!(
        "freshness at {rate} events/s for {seconds} s ({total} events): produce → countable in ClickHouse \
         p50 {:.2} s, p99 {:.2} s, max {:.2} s (sink batch_ms {}, poll 50 ms)",
        harness::percentile(&latencies, 0.5),
        harness::percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        cfg.batch_ms
    );

    let _ = stop_tx.send(());
    sink.await.unwrap().unwrap();
    sink_rates.sort_by(f64::total_cmp);
    println!(
        "sink_e2e events_rows_per_s={:.0} events_ratio={:.2} scores_rows_per_s={sink_scores:.0} scores_ratio={:.2} freshness_p50_s={:.2} freshness_p99_s={:.2} freshness_max_s={:.2} cluster={}",
        harness::percentile(&sink_rates, 0.5),
        harness::percentile(&ratios, 0.5),
        sink_scores / bare_scores,
        freshness.0,
        freshness.1,
        freshness.2,
        args.cluster.as_deref().unwrap_or("none")
    );
    let on_cluster = args
        .cluster
        .as_deref()
        .map_or_else(String::new, |c| format!(" ON CLUSTER {c}"));
    // The bare database first: `db` itself is connected to the other.
    for drop in [&bare_args.database, &database] {
        db.query(&format!("DROP DATABASE {drop}{on_cluster}"))
            .execute()
            .await
            .unwrap();
    }
}
