//! Load harness: drives the real ingest HTTP server (in process) against a
//! Kafka-protocol broker with batched and single-event requests, and
//! measures the bare rdkafka producer on the same encoded payloads in the
//! same run.
//!
//!   bash deploy/scripts/services.sh start target/release/leadstream   # or any broker
//!   LEADSTREAM_BENCH_KAFKA=127.0.0.1:19092 cargo bench --bench ingest_load
//!
//! Env: LEADSTREAM_BENCH_KAFKA (bootstrap), LEADSTREAM_BENCH_SECONDS (10),
//! LEADSTREAM_BENCH_CONNECTIONS (64: enough in-flight requests to keep the server busy through the producer linger), LEADSTREAM_BENCH_BATCH (100).

mod harness;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use leadstream_ingest::{IngestConfig, build_state, publish::KafkaPublisher, serve};
use leadstream_schemas::{EmbeddedResolver, Encoder, Plan};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    producer::{FutureProducer, FutureRecord},
};
use serde_json::{Value, json};

// Same allocator as the `leadstream` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn event(i: u64, run: &str) -> Value {
    json!({
        "type": "track", "event": "Vehicle Configured", "messageId": format!("{run}-{i}"),
        "anonymousId": format!("anon-{}", i % 50_000), "timestamp": "2026-11-22T08:00:00Z",
        "context": {"library": {"name": "analytics.js", "version": "5.2.0"}, "page": {"path": "/models/x5/configure", "url": "https://brand.example/models/x5/configure"},
                    "campaign": {"source": "autohome", "medium": "cpc", "name": "x5-launch"},
                    "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15", "ip": "203.0.113.77"},
        "properties": {"model_id": "x5", "trim": "xDrive40", "powertrain": "bev", "color": "blue", "price": 520000.0, "options_count": 3}
    })
}

/// Bodies are generated before the clock starts, so the measurement is of
/// the server, not of building JSON (the generator shares the 2 cores).
fn bodies(batch: usize, count: usize, run: &str) -> Vec<(&'static str, String)> {
    (0..count as u64)
        .map(|b| {
            let base = b * batch as u64;
            if batch == 1 {
                ("/v1/track", event(base, run).to_string())
            } else {
                ("/v1/batch", json!({"batch": (0..batch as u64).map(|i| event(base + i, run)).collect::<Vec<_>>()}).to_string())
            }
        })
        .collect()
}

async fn drive(
    url: &str,
    batch: usize,
    connections: usize,
    seconds: u64,
    run: &str,
) -> (u64, Vec<f64>, f64) {
    // Enough unique events for the run at up to ~250k events/s.
    // Leaked so each request sends the body without copying it: the
    // harness shares the cores with the server it measures.
    let pool: &'static [(&str, String)] =
        Vec::leak(bodies(batch, (250_000 * seconds as usize) / batch, run));
    eprintln!("ingest_load: driving {connections} connections, batches of {batch}");
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (stop, sent, next, pool, url) = (
            stop.clone(),
            sent.clone(),
            next.clone(),
            pool,
            url.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((path, body)) = pool.get(i) else {
                    break;
                };
                let t = Instant::now();
                let r = client
                    .post(format!("{url}{path}"))
                    .basic_auth("dev-web-key", Some(""))
                    .header("content-type", "application/json")
                    .body(body.as_str())
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status() == 200) {
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    sent.fetch_add(batch as u64, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < deadline
        && (next.load(Ordering::Relaxed) as usize) < pool.len()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    (sent.load(Ordering::Relaxed), all, elapsed)
}

async fn create_topics(bootstrap: &str, names: &[&str]) {
    let admin: AdminClient<DefaultClientContext> =
        leadstream_common::kafka::admin_config(bootstrap)
            .create()
            .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for name in names {
        let topic = NewTopic::new(name, 4, TopicReplication::Fixed(1));
        for r in admin
            .create_topics([&topic], &opts)
            .await
            .expect("create topics")
        {
            r.expect("topic created");
        }
    }
}

#[tokio::main]
async fn main() {
    if !harness::under_cargo_bench() {
        return; // built by `cargo build --all-targets`; only `cargo bench` runs it
    }
    let bootstrap = harness::kafka();
    let seconds: u64 = harness::knob("LEADSTREAM_BENCH_SECONDS", 10);
    let connections: usize = harness::knob("LEADSTREAM_BENCH_CONNECTIONS", 64);
    let batch: usize = harness::knob("LEADSTREAM_BENCH_BATCH", 100);
    let run = format!("bench{}", std::process::id());
    let (events_topic, dlq_topic, bare_topic) = (
        format!("{run}.events"),
        format!("{run}.dlq"),
        format!("{run}.bare"),
    );
    create_topics(&bootstrap, &[&events_topic, &dlq_topic, &bare_topic]).await;

    let spool = tempfile::tempdir().unwrap();
    let mut cfg = IngestConfig::defaults(&bootstrap, "bench-pepper-of-enough-length");
    cfg.sources = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config/sources.toml").into();
    cfg.spool_dir = spool.path().to_path_buf();
    cfg.shared.topics.events = events_topic.clone();
    cfg.shared.topics.dlq = dlq_topic;
    cfg.produce_timeout_ms = 30_000;
    let publisher = Arc::new(KafkaPublisher::new(&cfg).unwrap());
    let state = build_state(&cfg, publisher).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(state, listener, std::future::pending()));

    // Bare producer: the same events, validated and encoded up front, sent
    // with the same producer settings.
    let plan = Plan::embedded().unwrap();
    let encoder = Encoder::build(&plan, &EmbeddedResolver::new(&plan).unwrap())
        .await
        .unwrap();
    let n_bare = 300_000u64;
    let src = leadstream_ingest::sources::Sources::load(&cfg.sources).unwrap();
    let source = src.authenticate("dev-web-key").unwrap().clone();
    let inc = leadstream_ingest::segment::Incoming {
        source: &source,
        received_at_ms: 1_795_305_600_000,
        max_skew_ms: 0,
        batch_context: None,
        batch_sent_at: None,
    };
    let payloads: Vec<(String, Vec<u8>)> = (0..n_bare)
        .map(|i| {
            let raw = event(i, "bare");
            let segment_event = leadstream_ingest::wire::SegmentEvent::from_json(&raw).unwrap();
            let plan_event = leadstream_ingest::segment::to_plan(&segment_event, &inc).unwrap();
            let encoded = encoder.encode_view(&plan_event.event, &plan_event);
            (format!("anon-{}", i % 50_000), encoded.unwrap().bytes)
        })
        .collect();
    let avg_bytes = payloads.iter().map(|p| p.1.len()).sum::<usize>() / payloads.len();
    let producer: FutureProducer = leadstream_common::kafka::producer_config(&bootstrap, 20)
        .create()
        .unwrap();
    let t = Instant::now();
    let mut futures = Vec::with_capacity(payloads.len());
    for (key, payload) in &payloads {
        loop {
            match producer.send_result(FutureRecord::to(&bare_topic).key(key).payload(payload)) {
                Ok(f) => {
                    futures.push(f);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await, // queue full
            }
        }
    }
    for f in futures {
        f.await.unwrap().unwrap();
    }
    let bare_rate = n_bare as f64 / t.elapsed().as_secs_f64();

    let (n, lat, secs) = drive(&url, batch, connections, seconds, &format!("{run}b")).await;
    let batch_rate = n as f64 / secs;
    let (n1, lat1, secs1) = drive(&url, 1, connections * 4, seconds, &format!("{run}s")).await;
    let single_rate = n1 as f64 / secs1;

    println!(
        "ingest load harness: {connections} connections (x4 for single events), {seconds}s each, broker {bootstrap}, avg Avro payload {avg_bytes} B"
    );
    println!("| mode | events/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    println!("| bare rdkafka producer, pre-encoded | {bare_rate:.0} | - | - |");
    println!(
        "| ingest HTTP, batches of {batch} | {batch_rate:.0} | {:.1} | {:.1} |",
        harness::percentile(&lat, 0.5),
        harness::percentile(&lat, 0.99)
    );
    println!(
        "| ingest HTTP, single events | {single_rate:.0} | {:.1} | {:.1} |",
        harness::percentile(&lat1, 0.5),
        harness::percentile(&lat1, 0.99)
    );
    println!(
        "batched ingest / bare producer = {:.2}",
        batch_rate / bare_rate
    );
}
