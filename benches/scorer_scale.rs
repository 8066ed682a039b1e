//! The scorer at a million leads: what it holds per lead and per linked
//! identifier (by allocation), the real binary's RSS after scoring a
//! backlog of that many leads, and how long a replacement takes to restore
//! their state and score again after `kill -9`.
//!   LEADSTREAM_BENCH_KAFKA=127.0.0.1:19092 cargo bench --bench scorer_scale
//! Knobs: LEADSTREAM_BENCH_LEADS (1,000,000), LEADSTREAM_BENCH_EVENTS_PER_LEAD
//! (events per lead in the allocation count, 40),
//! LEADSTREAM_BENCH_PARTITIONS (of the events topic, 4).
//! Ends with `scorer_scale leads=… rss_mb=… bytes_per_lead=…
//! bytes_per_identifier=… restore_s=…`.

mod harness;

use std::{
    alloc::System,
    hint::black_box,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use leadstream_scorer::{
    identity::{IdentityGraph, lead_id_of},
    processor::{Input, Processor},
    rules::{DEFAULT_TOML, ScoringConfig},
};
use rdkafka::{Message, producer::FutureProducer};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

// Counts every allocation of this process: the pure measurements below.
// The Kafka part runs the `leadstream` binary, which has its own allocator.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// One processor holding `leads` typical leads, as a partition would see
/// their events (event i of every lead, then i + 1).
fn processor_bytes_per_lead(leads: u64, events: i64) -> f64 {
    let keys: Vec<String> = (0..leads)
        .map(|l| format!("L{:016x}", l * 0x9e37_79b9))
        .collect();
    let mut graph = IdentityGraph::default();
    let (p, bytes) = harness::live_bytes_after(GLOBAL, || {
        let mut p = Processor::new(
            ScoringConfig::parse(DEFAULT_TOML).unwrap(),
            6 * 3_600_000,
            false,
        );
        p.assign(0);
        let mut offset = 0;
        for i in 0..events {
            for (l, key) in keys.iter().enumerate() {
                let input = Input::Event {
                    event: Some(harness::typical_event(l as u64, i)),
                    anonymous: false,
                };
                black_box(p.handle(0, offset, key, input, &mut graph, 0, None));
                offset += 1;
            }
            // The changelog is taken after every batch.
            drop(p.take_changelog());
        }
        p
    });
    drop(p);
    bytes as f64 / leads as f64
}

/// The identity graph after `people` each linked three identifiers (web
/// and mini-program anonymous ids and a WeChat union id), as the stitcher
/// links them; per linked identifier.
fn graph_bytes_per_identifier(people: u64) -> f64 {
    let (g, bytes) = harness::live_bytes_after(GLOBAL, || {
        let mut g = IdentityGraph::default();
        for p in 0..people {
            g.link(&[format!("a:web-{p}"), format!("w:wx-{p}")]);
            g.link(&[format!("a:mp-{p}"), format!("w:wx-{p}")]);
        }
        g
    });
    let ids = g.len();
    drop(g);
    bytes as f64 / ids as f64
}

struct Scorer {
    child: Child,
    log: std::path::PathBuf,
}

impl Scorer {
    fn start(bootstrap: &str, run: &str, log: std::path::PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_leadstream"))
            .args([
                "scorer",
                "--kafka",
                bootstrap,
                "--events-topic",
                &format!("{run}.events"),
                "--scores-topic",
                &format!("{run}.lead_scores"),
                "--topic-prefix",
                &format!("{run}.scorer"),
                "--group",
                &format!("{run}-group"),
                "--replication-factor",
                "1",
                "--listen",
                "127.0.0.1:0",
                // The killed instance leaves the group when its session ends.
                "--session-timeout-ms",
                "6000",
            ])
            .env("LEADSTREAM_LOG", "info")
            .env("LEADSTREAM_PIPELINE_METRICS_TOPIC", "")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("the leadstream binary starts");
        Self { child, log }
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kb / 1024.0
    }

    /// (records, elapsed ms) of every "restored from the changelog" line.
    fn restores(&self) -> Vec<(u64, u64)> {
        let file = std::fs::File::open(&self.log).unwrap();
        let field = |line: &str, name: &str| -> Option<u64> {
            let rest = &line[line.find(&format!("{name}="))? + name.len() + 1..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains("restored from the changelog"))
            .filter_map(|l| Some((field(&l, "records")?, field(&l, "elapsed_ms")?)))
            .collect()
    }
}

impl Drop for Scorer {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

/// Reads `topic` until `done(records read so far, record)` says so.
async fn read_until(
    bootstrap: &str,
    topic: &str,
    group: &str,
    mut done: impl FnMut(usize, &rdkafka::message::BorrowedMessage<'_>) -> bool,
) {
    let consumer = harness::subscribed(bootstrap, topic, group, &[]).await;
    let mut n = 0;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(300), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing on {topic} for 300 s after {n} records"))
            .unwrap();
        n += 1;
        if done(n, &m) {
            return;
        }
    }
}

#[tokio::main]
async fn main() {
    if !harness::under_cargo_bench() {
        return; // built by `cargo build --all-targets`; only `cargo bench` runs it
    }
    harness::init_tracing();
    let leads: usize = harness::knob("LEADSTREAM_BENCH_LEADS", 1_000_000);
    let events: i64 = harness::knob("LEADSTREAM_BENCH_EVENTS_PER_LEAD", harness::TYPICAL_EVENTS);
    let partitions: i32 = harness::knob("LEADSTREAM_BENCH_PARTITIONS", 4);

    let t = Instant::now();
    let bytes_per_lead = processor_bytes_per_lead(leads as u64, events);
    println!(
        "processor: {leads} leads x {events} events hold {bytes_per_lead:.0} bytes per lead by allocation ({:.0} s)",
        t.elapsed().as_secs_f64()
    );
    let bytes_per_identifier = graph_bytes_per_identifier(leads as u64 / 3);
    println!(
        "identity graph: {} people with 3 linked identifiers each hold {bytes_per_identifier:.0} bytes per identifier",
        leads / 3
    );

    // The real binary on a backlog of `leads` leads, one event each; every
    // third visitor's event also carries a WeChat union id (a link).
    let bootstrap = harness::kafka();
    let run = format!("sscale{}", std::process::id());
    harness::create_topic(&bootstrap, &format!("{run}.events"), partitions).await;
    let encoder = harness::plan_encoder().await;
    let producer: FutureProducer = leadstream_common::kafka::producer_config(&bootstrap, 5)
        .create()
        .unwrap();
    let t = Instant::now();
    let backlog = (0..leads).map(|lead| {
        let mut e = harness::page_view_json(lead, 0);
        if lead % 3 == 0 {
            e["union_id"] = format!("wx-{lead}").into();
        }
        (format!("anon-{lead}"), e)
    });
    harness::produce_events(&producer, &encoder, &format!("{run}.events"), backlog).await;
    println!(
        "backlog: {leads} events produced in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let dir = std::env::temp_dir();
    let first = Scorer::start(&bootstrap, &run, dir.join(format!("{run}-a.log")));
    let t = Instant::now();
    read_until(
        &bootstrap,
        &format!("{run}.lead_scores"),
        &format!("{run}-r1"),
        |n, _| n >= leads,
    )
    .await;
    // Let the last batch's changelog land before reading what the process holds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_mb = first.rss_mb();
    println!(
        "scorer binary: {leads} leads scored in {:.1} s; RSS {rss_mb:.0} MB ({:.0} bytes per lead, everything included)",
        t.elapsed().as_secs_f64(),
        rss_mb * 1024.0 * 1024.0 / leads as f64
    );
    drop(first); // kill -9

    // A replacement restores every partition, then scores a new event.
    let second = Scorer::start(&bootstrap, &run, dir.join(format!("{run}-b.log")));
    let restarted = Instant::now();
    let probe = leads + 1;
    let probe_event = (format!("anon-{probe}"), harness::page_view_json(probe, 0));
    harness::produce_events(&producer, &encoder, &format!("{run}.events"), [probe_event]).await;
    let probe_lead = lead_id_of(&format!("a:anon-{probe}"));
    read_until(
        &bootstrap,
        &format!("{run}.lead_scores"),
        &format!("{run}-r2"),
        |_, m| m.key() == Some(probe_lead.as_bytes()),
    )
    .await;
    let restore_s = restarted.elapsed().as_secs_f64();
    let restores = second.restores();
    let records: u64 = restores.iter().map(|r| r.0).sum();
    let reading_ms: u64 = restores.iter().map(|r| r.1).sum();
    println!(
        "after kill -9: a new instance scored a new event {restore_s:.1} s after it started (group join after the \
         dead member's 6 s session, restore, score); it restored {records} changelog records of {} partitions \
         in {:.1} s of reading ({:.2} s per 100k leads)",
        restores.len(),
        reading_ms as f64 / 1000.0,
        reading_ms as f64 / 1000.0 / (leads as f64 / 100_000.0)
    );
    drop(second);

    // One pass of `leadstream scorer compact-identity` over the run's log.
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_leadstream"))
        .args([
            "scorer",
            "compact-identity",
            "--kafka",
            &bootstrap,
            "--topic-prefix",
            &format!("{run}.scorer"),
        ])
        .env("LEADSTREAM_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "compact-identity failed: {out:?}");
    let compact_s = t.elapsed().as_secs_f64();
    println!(
        "identity log, one compaction pass in {compact_s:.1} s: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    println!(
        "scorer_scale leads={leads} rss_mb={rss_mb:.0} bytes_per_lead={bytes_per_lead:.0} \
         bytes_per_identifier={bytes_per_identifier:.0} restore_s={restore_s:.1} \
         identity_compact_s={compact_s:.1}"
    );
}
