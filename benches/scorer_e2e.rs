//! End-to-end `leadstream scorer` against a real broker: throughput from a
//! backlog of events to scores, and latency from an event's produce to its
//! score's produce at a steady rate.
//!   LEADSTREAM_BENCH_KAFKA=127.0.0.1:19092 cargo bench --bench scorer_e2e
//! Knobs: LEADSTREAM_BENCH_LEADS (2000), LEADSTREAM_BENCH_EVENTS_PER_LEAD (50),
//! LEADSTREAM_BENCH_RATE (events/s in the latency run, 2000),
//! LEADSTREAM_BENCH_SECONDS (latency run length, 10).

mod harness;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use leadstream_schemas::{EmbeddedResolver, Encoder, Plan, codec::Decoder, codec::to_json};
use leadstream_scorer::runtime::{ScorerConfig, run};
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
};
use serde_json::json;

// Same allocator as the `leadstream` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0: i64 = 1_795_305_600_000;

fn event(lead: usize, k: usize) -> serde_json::Value {
    let page_type = ["home", "model_detail", "configurator", "price", "article"][k % 5];
    json!({"message_id": format!("l{lead}-{k}"), "event": "page_viewed", "type": "page", "platform": "web",
           "source_id": "web-main", "tenant": "brand-a", "anonymous_id": format!("anon-{lead}"),
           "timestamp": T0 + (k as i64) * 60_000 + lead as i64, "received_at": T0,
           "context": {"page_path": "/models/x5", "utm_source": "autohome"},
           "properties": {"page_type": page_type, "model_id": "x5", "duration_ms": 30_000}})
}

async fn create_topic(bootstrap: &str, name: &str) {
    let spec = leadstream_common::kafka::TopicSpec {
        name: name.to_owned(),
        partitions: 4,
        replication: 1,
        compacted: false,
    };
    leadstream_common::kafka::ensure_topics(bootstrap, &[spec])
        .await
        .expect("topic created");
}

fn config(bootstrap: &str, run: &str) -> ScorerConfig {
    let mut cfg = ScorerConfig::defaults(bootstrap);
    cfg.shared.topics.events = format!("{run}.events");
    cfg.shared.topics.scores = format!("{run}.lead_scores");
    cfg.topic_prefix = format!("{run}.scorer");
    cfg.group = format!("{run}-group");
    cfg.replication_factor = 1;
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg
}

/// Reads scores, calling `seen(lead, version, score produce time ms)`.
async fn read_scores(
    bootstrap: &str,
    topic: &str,
    n: usize,
    mut seen: impl FnMut(String, i64, i64),
) {
    while leadstream_common::kafka::partition_count(bootstrap, topic).is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plan = Plan::embedded().unwrap();
    let decoder = Decoder::new(Arc::new(EmbeddedResolver::new(&plan).unwrap()));
    let consumer: StreamConsumer =
        leadstream_common::kafka::consumer_config(bootstrap, &format!("{topic}-reader"))
            .create()
            .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    for _ in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(120), consumer.recv())
            .await
            .expect("scores stopped arriving")
            .unwrap();
        let v = to_json(&decoder.decode(m.payload().unwrap()).await.unwrap().value);
        seen(
            v["lead_id"].as_str().unwrap().to_owned(),
            v["version"].as_i64().unwrap(),
            m.timestamp().to_millis().unwrap(),
        );
    }
}

#[tokio::main]
async fn main() {
    if !harness::under_cargo_bench() {
        return; // built by `cargo build --all-targets`; only `cargo bench` runs it
    }
    harness::init_tracing();
    let bootstrap = harness::kafka();
    let leads: usize = harness::knob("LEADSTREAM_BENCH_LEADS", 2_000);
    let per_lead: usize = harness::knob("LEADSTREAM_BENCH_EVENTS_PER_LEAD", 50);
    let rate: u64 = harness::knob("LEADSTREAM_BENCH_RATE", 2_000);
    let seconds: u64 = harness::knob("LEADSTREAM_BENCH_SECONDS", 10);
    let plan = Plan::embedded().unwrap();
    let encoder = Encoder::build(&plan, &EmbeddedResolver::new(&plan).unwrap())
        .await
        .unwrap();
    let producer: FutureProducer = leadstream_common::kafka::producer_config(&bootstrap, 5)
        .create()
        .unwrap();

    // Throughput: a backlog of events, then the scorer starts.
    let run1 = format!("sbench{}a", std::process::id());
    let cfg = config(&bootstrap, &run1);
    create_topic(&bootstrap, &cfg.shared.topics.events).await;
    let total = leads * per_lead;
    let mut pending = Vec::with_capacity(total);
    for k in 0..per_lead {
        for lead in 0..leads {
            let bytes = encoder.encode(&event(lead, k)).unwrap().bytes;
            let key = format!("anon-{lead}");
            let record = FutureRecord::to(&cfg.shared.topics.events)
                .key(&key)
                .payload(&bytes);
            pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
            if pending.len() >= 50_000 {
                for d in pending.drain(..) {
                    d.await.unwrap().unwrap();
                }
            }
        }
    }
    for d in pending.drain(..) {
        d.await.unwrap().unwrap();
    }
    let started = Instant::now();
    let scores_topic = cfg.shared.topics.scores.clone();
    tokio::spawn(run(cfg, std::future::pending()));
    let (mut first, mut last) = (i64::MAX, 0i64);
    read_scores(&bootstrap, &scores_topic, total, |_, _, ts| {
        first = first.min(ts);
        last = last.max(ts);
    })
    .await;
    let wall = started.elapsed().as_secs_f64();
    let busy = (last - first) as f64 / 1000.0;
    println!(
        "throughput: {total} events ({leads} leads x {per_lead}) scored in {wall:.1} s from start \
         (incl. group join); first to last score {busy:.2} s = {:.0} events/s",
        total as f64 / busy
    );

    // Latency: scorer running and caught up, events at a steady rate.
    let run2 = format!("sbench{}b", std::process::id());
    let cfg = config(&bootstrap, &run2);
    create_topic(&bootstrap, &cfg.shared.topics.events).await;
    let scores_topic = cfg.shared.topics.scores.clone();
    let events_topic = cfg.shared.topics.events.clone();
    tokio::spawn(run(cfg, std::future::pending()));
    // Warm-up: one event per lead, wait for its score (group joined, caches warm).
    let produced: Arc<Mutex<HashMap<(String, i64), i64>>> = Arc::default();
    let lat_leads = 500usize;
    let warm = Instant::now();
    for lead in 0..lat_leads {
        let bytes = encoder.encode(&event(lead, 0)).unwrap().bytes;
        let key = format!("anon-{lead}");
        producer
            .send(
                FutureRecord::to(&events_topic).key(&key).payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let n = (rate * seconds) as usize;
    let lead_ids: Vec<String> = (0..lat_leads)
        .map(|l| leadstream_scorer::identity::lead_id_of(&format!("a:anon-{l}")))
        .collect();
    let latencies: Arc<Mutex<Vec<i64>>> = Arc::default();
    let reader = {
        let (produced, latencies, bootstrap, scores_topic) = (
            Arc::clone(&produced),
            Arc::clone(&latencies),
            bootstrap.clone(),
            scores_topic.clone(),
        );
        tokio::spawn(async move {
            read_scores(
                &bootstrap,
                &scores_topic,
                lat_leads + n,
                |lead, version, ts| {
                    if let Some(sent) = produced.lock().unwrap().remove(&(lead, version)) {
                        latencies.lock().unwrap().push(ts - sent);
                    }
                },
            )
            .await;
        })
    };
    // Wait for the warm-up scores before the clock starts.
    while latencies.lock().unwrap().is_empty() && warm.elapsed() < Duration::from_secs(120) {
        let probe = (lead_ids[0].clone(), 1);
        produced.lock().unwrap().insert(probe, harness::now_ms());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.lock().unwrap().clear();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut next_k = vec![1usize; lat_leads];
    for i in 0..n {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let lead = i % lat_leads;
        let k = next_k[lead];
        next_k[lead] += 1;
        let bytes = encoder.encode(&event(lead, k)).unwrap().bytes;
        let key = format!("anon-{lead}");
        produced
            .lock()
            .unwrap()
            .insert((lead_ids[lead].clone(), k as i64 + 1), harness::now_ms());
        let d = producer
            .send_result(FutureRecord::to(&events_topic).key(&key).payload(&bytes))
            .map_err(|(e, _)| e)
            .unwrap();
        tokio::spawn(async move {
            let _ = d.await;
        });
    }
    tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("scores caught up")
        .unwrap();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    println!(
        "latency at {rate} events/s for {seconds} s ({} scores): produce -> score produce p50 {} ms, p99 {} ms, max {} ms",
        l.len(),
        harness::percentile(&l, 0.5),
        harness::percentile(&l, 0.99),
        l.last().unwrap()
    );
}
