//! End-to-end `leadstream scorer` against a real broker: throughput from a
//! backlog of events to scores, against a bare pass-through of the same
//! backlog on the same broker (consume, produce one record per event,
//! commit after the acks), and latency from an event's produce to its
//! score's acknowledged produce at a steady rate.
//!   LEADSTREAM_BENCH_KAFKA=127.0.0.1:19092 cargo bench --bench scorer_e2e
//! Knobs: LEADSTREAM_BENCH_LEADS (20000; × 50 events: a backlog long enough
//! for a stable pass-through rate), LEADSTREAM_BENCH_EVENTS_PER_LEAD (50),
//! LEADSTREAM_BENCH_RATE (events/s in the latency run, 2000),
//! LEADSTREAM_BENCH_SECONDS (latency run length, 10),
//! LEADSTREAM_BENCH_THREADS (the scorer's `--threads`, 1 as its default:
//! one stream thread's two stages already use both cores here, and with
//! more the run starts with a rebalance, since the dev broker forms a group
//! with its first member at once, where Kafka waits
//! `group.initial.rebalance.delay.ms` for the others),
//! LEADSTREAM_BENCH_PRELOAD (events written to an unrelated topic first, to
//! measure on a broker that holds a day of data; 0),
//! LEADSTREAM_BENCH_ROUNDS (5: the backlog is read that many times by the
//! pass-through and by a fresh scorer in turn; the summary gives the
//! median of each and the ratio of the medians).
//! Ends with `scorer_e2e events_per_s=… passthrough_per_s=… ratio=…
//! p50_ms=… p99_ms=… max_ms=… preload=… repeats=… rounds=…` (repeats: score records
//! of the latency run read twice: the same score produced again when a
//! rebalance, such as a second stream thread joining during the warm-up,
//! hands a partition over and its new owner applies again what was not
//! committed yet). The throughput run counts distinct score records only.

mod harness;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use leadstream_common::kafka::{
    BatchStage, Batching, LagGauge, Offsets, StageDriver, await_deliveries, next_offsets, send,
};
use leadstream_schemas::{EmbeddedResolver, Plan, codec::Decoder, codec::to_json};
use leadstream_scorer::runtime::{ScorerConfig, run as run_scorer};
use rdkafka::{
    Message,
    consumer::{Consumer, DefaultConsumerContext, StreamConsumer},
    message::BorrowedMessage,
    producer::{FutureProducer, FutureRecord},
};

// Same allocator as the `leadstream` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use harness::page_view_json as event;

/// Partitions of the bench's topics.
const PARTITIONS: i32 = 4;

/// Events of a backlog: event k of every lead, then event k + 1.
fn backlog(leads: usize, per_lead: usize) -> impl Iterator<Item = (String, serde_json::Value)> {
    (0..per_lead)
        .flat_map(move |k| (0..leads).map(move |lead| (format!("anon-{lead}"), event(lead, k))))
}

fn config(bootstrap: &str, run: &str) -> ScorerConfig {
    let mut cfg = ScorerConfig::defaults(bootstrap);
    cfg.shared.topics.events = format!("{run}.events");
    cfg.shared.topics.scores = format!("{run}.lead_scores");
    cfg.topic_prefix = format!("{run}.scorer");
    cfg.group = format!("{run}-group");
    cfg.replication_factor = 1;
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.threads = harness::knob("LEADSTREAM_BENCH_THREADS", 1);
    cfg
}

/// Reads `n` event-driven scores, calling `seen(lead, version, event
/// count, score produce time ms, read time ms)` for each. A score can be
/// read only once Kafka acked it, so the read time bounds its acknowledged
/// produce from above; the reader's fetch waits 1 ms at most, to add
/// little to that bound. Scores that time alone caused (a partition idle
/// during the warm-up runs its schedule on the wall clock, which is days
/// past the events) are not counted; their number is returned.
async fn read_scores(
    bootstrap: &str,
    topic: &str,
    n: usize,
    mut seen: impl FnMut(String, i64, i64, i64, i64),
) -> usize {
    let plan = Plan::embedded().unwrap();
    let decoder = Decoder::new(Arc::new(EmbeddedResolver::new(&plan).unwrap()));
    let consumer = harness::subscribed(
        bootstrap,
        topic,
        &format!("{topic}-reader"),
        &[("fetch.wait.max.ms", "1")],
    )
    .await;
    let (mut events, mut time) = (0, 0);
    while events < n {
        let m = tokio::time::timeout(Duration::from_secs(120), consumer.recv())
            .await
            .expect("scores stopped arriving")
            .unwrap();
        let read_ms = harness::now_ms();
        let v = to_json(&decoder.decode(m.payload().unwrap()).await.unwrap().value);
        if v["change_reason"] != "event" {
            time += 1;
            continue;
        }
        events += 1;
        seen(
            v["lead_id"].as_str().unwrap().to_owned(),
            v["version"].as_i64().unwrap(),
            v["event_count"].as_i64().unwrap(),
            m.timestamp().to_millis().unwrap(),
            read_ms,
        );
    }
    time
}

/// The bench's baseline: every record of the batch to another topic,
/// acks awaited, then the batch's offsets committed.
struct PassThrough {
    producer: FutureProducer,
    to: String,
}

impl BatchStage for PassThrough {
    type Context = DefaultConsumerContext;

    async fn process(
        &mut self,
        _consumer: &StreamConsumer,
        batch: &[BorrowedMessage<'_>],
    ) -> anyhow::Result<Offsets> {
        let mut deliveries = Vec::with_capacity(batch.len());
        for m in batch {
            let key = std::str::from_utf8(m.key().unwrap_or_default()).unwrap_or_default();
            let value = m.payload().unwrap_or_default();
            deliveries.push(send(&self.producer, &self.to, m.partition(), key, value).await);
        }
        await_deliveries(deliveries).await?;
        Ok(next_offsets(batch))
    }
}

/// Waits until every group in `groups` is stable with `members` members.
async fn wait_for_stable_groups(bootstrap: &str, groups: &[String], members: usize) {
    let admin: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let started = Instant::now();
    loop {
        let stable = groups.iter().all(|g| {
            admin
                .fetch_group_list(Some(g), Duration::from_secs(5))
                .ok()
                .and_then(|l| {
                    l.groups()
                        .first()
                        .map(|g| g.state() == "Stable" && g.members().len() == members)
                })
                .unwrap_or(false)
        });
        if stable {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "consumer groups {groups:?} not stable with {members} members"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads `topic` until it has seen `n` distinct records. A record whose
/// key and value were read before (a score sent again when a rebalance or
/// restart replays what was not committed) is counted as a repeat, not as
/// progress.
async fn read_span(bootstrap: &str, topic: &str, n: usize) -> Span {
    let consumer = harness::subscribed(bootstrap, topic, &format!("{topic}-reader"), &[]).await;
    let (mut first, mut last) = (i64::MAX, 0i64);
    let mut cpu_from = None;
    let mut seen = rustc_hash::FxHashSet::with_capacity_and_hasher(n, Default::default());
    let mut repeats = 0usize;
    let mut stamps = Vec::with_capacity(n);
    while seen.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(120), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("records stopped arriving on {topic}"))
            .unwrap();
        cpu_from.get_or_insert_with(harness::cpu);
        // The reader shares the cores with what it measures: a fast hash.
        let record = {
            use std::hash::{Hash, Hasher};
            let mut h = rustc_hash::FxHasher::default();
            (m.key(), m.payload()).hash(&mut h);
            h.finish()
        };
        if !seen.insert(record) {
            repeats += 1;
            continue;
        }
        let ts = m.timestamp().to_millis().unwrap();
        first = first.min(ts);
        last = last.max(ts);
        stamps.push(ts);
    }
    let cores = harness::cpu().cores_since(&cpu_from.expect("n > 0"));
    // Thousands of records produced in each second from the first.
    let mut per_second = vec![0usize; ((last - first) / 1000 + 1) as usize];
    for ts in stamps {
        per_second[((ts - first) / 1000) as usize] += 1;
    }
    let timeline = per_second
        .iter()
        .map(|n| format!("{}k", n / 1000))
        .collect::<Vec<_>>()
        .join(" ");
    Span {
        first,
        last,
        cores,
        repeats,
        timeline,
    }
}

/// First and last produce time (ms) of the records read, and the cores
/// used from the first record read to the last.
struct Span {
    first: i64,
    last: i64,
    cores: String,
    repeats: usize,
    /// Records per second of the span, in thousands.
    timeline: String,
}

impl Span {
    fn seconds(&self) -> f64 {
        (self.last - self.first) as f64 / 1000.0
    }
}

/// One pass-through of the `total` events on `events` (a group and a
/// target topic of its own, named from `run`); its events/s.
async fn passthrough_round(bootstrap: &str, events: &str, run: &str, total: usize) -> f64 {
    let to = format!("{run}.passthrough");
    harness::create_topic(bootstrap, &to, PARTITIONS).await;
    let cfg = config(bootstrap, run);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let consumer: StreamConsumer =
        leadstream_common::kafka::consumer_config(bootstrap, &format!("{run}-passthrough"))
            .create()
            .unwrap();
    consumer.subscribe(&[events]).unwrap();
    let driver = StageDriver::new(
        "passthrough",
        consumer,
        PassThrough {
            producer: leadstream_scorer::runtime::scorer_producer_config(&cfg, bootstrap)
                .create()
                .unwrap(),
            to: to.clone(),
        },
        Batching {
            max: cfg.batch_max,
            max_bytes: cfg.batch_max_bytes,
            wait_ms: cfg.batch_ms,
            close_when_drained: !cfg.batch_fill,
        },
        LagGauge::new("bench_lag", ("stage", "passthrough")),
    );
    let passing = tokio::spawn(driver.run_until(stop_rx));
    let span = read_span(bootstrap, &to, total).await;
    let _ = stop_tx.send(true);
    let _ = passing.await;
    let per_s = total as f64 / span.seconds();
    println!(
        "pass-through: {total} events, first to last produce {:.2} s = {per_s:.0} events/s; {}; per second: {}",
        span.seconds(),
        span.cores,
        span.timeline
    );
    per_s
}

/// A fresh scorer (topics and groups of its own, named from `run`) on the
/// `total` events of `(leads, per_lead)` on `events`, stopped once every
/// event is scored; its events/s, first score to last.
async fn scorer_round(
    bootstrap: &str,
    events: &str,
    run: &str,
    total: usize,
    (leads, per_lead): (usize, usize),
) -> f64 {
    let mut cfg = config(bootstrap, run);
    cfg.shared.topics.events = events.to_owned();
    let scores_topic = cfg.shared.topics.scores.clone();
    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let scorer = tokio::spawn(run_scorer(cfg, async move {
        let _ = stop_rx.await;
    }));
    let span = read_span(bootstrap, &scores_topic, total).await;
    let wall = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    scorer.await.unwrap().unwrap();
    let per_s = total as f64 / span.seconds();
    println!(
        "throughput: {total} events ({leads} leads x {per_lead}) scored in {wall:.1} s from start \
         (incl. group join); first to last score {:.2} s = {per_s:.0} events/s \
         ({} repeated score records not counted); {}; per second: {}",
        span.seconds(),
        span.repeats,
        span.cores,
        span.timeline
    );
    per_s
}

fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len().is_multiple_of(2) {
        (xs[mid - 1] + xs[mid]) / 2.0
    } else {
        xs[mid]
    }
}

#[tokio::main]
async fn main() {
    if !harness::under_cargo_bench() {
        return; // built by `cargo build --all-targets`; only `cargo bench` runs it
    }
    harness::init_tracing();
    let bootstrap = harness::kafka();
    let leads: usize = harness::knob("LEADSTREAM_BENCH_LEADS", 20_000);
    let preload: usize = harness::knob("LEADSTREAM_BENCH_PRELOAD", 0);
    let per_lead: usize = harness::knob("LEADSTREAM_BENCH_EVENTS_PER_LEAD", 50);
    let rate: u64 = harness::knob("LEADSTREAM_BENCH_RATE", 2_000);
    let seconds: u64 = harness::knob("LEADSTREAM_BENCH_SECONDS", 10);
    let threads: usize = harness::knob("LEADSTREAM_BENCH_THREADS", 1);
    let rounds: usize = harness::knob("LEADSTREAM_BENCH_ROUNDS", 5).max(1);
    let encoder = harness::plan_encoder().await;
    let producer: FutureProducer = leadstream_common::kafka::producer_config(&bootstrap, 5)
        .create()
        .unwrap();

    if preload > 0 {
        let topic = format!("sbench{}-preload", std::process::id());
        harness::create_topic(&bootstrap, &topic, PARTITIONS).await;
        let t = Instant::now();
        let preload_leads = preload.div_ceil(per_lead);
        harness::produce_events(
            &producer,
            &encoder,
            &topic,
            backlog(preload_leads, per_lead),
        )
        .await;
        println!(
            "preload: {preload} events into {topic} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }

    // Throughput: a backlog of events, read in rounds by the pass-through
    // and by a fresh scorer in turn, on the same broker. The cores here
    // are shared virtual ones whose speed swings by up to half for a
    // second at a time (benches/README.md): rounds in turn, and the median
    // of each, keep one slow second from deciding the ratio.
    let run1 = format!("sbench{}a", std::process::id());
    let events = format!("{run1}.events");
    harness::create_topic(&bootstrap, &events, PARTITIONS).await;
    let total = leads * per_lead;
    harness::produce_events(&producer, &encoder, &events, backlog(leads, per_lead)).await;
    let (mut passthrough_rates, mut scorer_rates) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let rate = passthrough_round(&bootstrap, &events, &format!("{run1}p{round}"), total).await;
        passthrough_rates.push(rate);
        let rate = scorer_round(
            &bootstrap,
            &events,
            &format!("{run1}s{round}"),
            total,
            (leads, per_lead),
        )
        .await;
        scorer_rates.push(rate);
        println!(
            "round {round}: scorer {rate:.0} events/s, pass-through {:.0} events/s, ratio {:.2}",
            passthrough_rates[round - 1],
            rate / passthrough_rates[round - 1]
        );
    }
    let passthrough_per_s = median(&passthrough_rates);
    let events_per_s = median(&scorer_rates);

    // Latency: scorer running and caught up, events at a steady rate.
    let run2 = format!("sbench{}b", std::process::id());
    let cfg = config(&bootstrap, &run2);
    harness::create_topic(&bootstrap, &cfg.shared.topics.events, PARTITIONS).await;
    let scores_topic = cfg.shared.topics.scores.clone();
    let events_topic = cfg.shared.topics.events.clone();
    tokio::spawn(run_scorer(cfg, std::future::pending()));
    // Warm-up: rounds of one event per lead, each waited for (groups
    // joined, caches warm).
    // (lead, its event count once the event is applied) → produce time.
    let produced: Arc<Mutex<HashMap<(String, i64), i64>>> = Arc::default();
    let lat_leads = 500usize;
    const WARM_ROUNDS: usize = 2;
    let warm_round = |k: usize| {
        let (producer, encoder, events_topic) = (&producer, &encoder, &events_topic);
        async move {
            for lead in 0..lat_leads {
                let bytes = encoder.encode(&event(lead, k)).unwrap().bytes;
                let key = format!("anon-{lead}");
                producer
                    .send(
                        FutureRecord::to(events_topic).key(&key).payload(&bytes),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
            }
        }
    };
    let n = (rate * seconds) as usize;
    let lead_ids: Vec<String> = (0..lat_leads)
        .map(|l| leadstream_scorer::identity::lead_id_of(&format!("a:anon-{l}")))
        .collect();
    // (to the score's produce, to the score read back after its ack)
    let latencies: Arc<Mutex<Vec<(i64, i64)>>> = Arc::default();
    let read = Arc::new(AtomicUsize::new(0));
    // Score records whose (lead, version) was read before: the same score
    // produced twice (two owners of one partition, or a replay).
    let repeats = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (produced, latencies, read, repeats, bootstrap, scores_topic) = (
            Arc::clone(&produced),
            Arc::clone(&latencies),
            Arc::clone(&read),
            Arc::clone(&repeats),
            bootstrap.clone(),
            scores_topic.clone(),
        );
        let mut seen = std::collections::HashSet::new();
        tokio::spawn(async move {
            read_scores(
                &bootstrap,
                &scores_topic,
                WARM_ROUNDS * lat_leads + n,
                |lead, version, events, ts, read_ms| {
                    read.fetch_add(1, Ordering::Relaxed);
                    if !seen.insert((lead.clone(), version)) {
                        repeats.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(sent) = produced.lock().unwrap().remove(&(lead, events)) {
                        latencies.lock().unwrap().push((ts - sent, read_ms - sent));
                    }
                },
            )
            .await
        })
    };
    let warmed = |rounds: usize| {
        let read = Arc::clone(&read);
        async move {
            let started = Instant::now();
            while read.load(Ordering::Relaxed) < rounds * lat_leads {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "warm-up scores did not arrive"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    warm_round(0).await;
    warmed(1).await;
    // The clock starts once both groups hold a member per stream thread
    // and have settled: the broker does not delay the first rebalance, so
    // a thread that joins late rebalances the group, and a member learns
    // of that only at its next heartbeat (3 s). Then one more round.
    wait_for_stable_groups(
        &bootstrap,
        &[format!("{run2}-group"), format!("{run2}-group-stitch")],
        threads,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    warm_round(1).await;
    warmed(2).await;
    latencies.lock().unwrap().clear();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut next_k = vec![WARM_ROUNDS; lat_leads];
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
    let time_scores = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("scores caught up")
        .unwrap();
    let (mut produced_at, mut read_at): (Vec<i64>, Vec<i64>) =
        latencies.lock().unwrap().iter().copied().unzip();
    produced_at.sort_unstable();
    read_at.sort_unstable();
    let p = |l: &[i64], q: f64| harness::percentile(l, q);
    println!(
        "latency at {rate} events/s for {seconds} s ({} scores matched, {} repeated score records, \
         {time_scores} time-driven scores not counted): event produce -> score produce p50 {} ms, p99 {} ms, max {} ms; \
         -> score read back (acked) p50 {} ms, p99 {} ms, max {} ms",
        read_at.len(),
        repeats.load(Ordering::Relaxed),
        p(&produced_at, 0.5),
        p(&produced_at, 0.99),
        produced_at.last().unwrap(),
        p(&read_at, 0.5),
        p(&read_at, 0.99),
        read_at.last().unwrap(),
    );
    println!(
        "scorer_e2e events_per_s={events_per_s:.0} passthrough_per_s={passthrough_per_s:.0} ratio={:.2} p50_ms={} p99_ms={} max_ms={} preload={preload} repeats={} rounds={rounds}",
        events_per_s / passthrough_per_s,
        p(&read_at, 0.5),
        p(&read_at, 0.99),
        read_at.last().unwrap(),
        repeats.load(Ordering::Relaxed),
    );
}
