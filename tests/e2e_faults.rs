//! The whole pipeline under faults, with full accounting: ingest → scorer →
//! sink as `leadstream` processes, on a broker and a ClickHouse 18.16 server
//! of the test's own, with default batching, under steady load from
//! Segment's Python SDK. During the run each role is killed with -9 at
//! random moments (several times each) and started again, the broker is
//! frozen (SIGSTOP) and resumed, and ClickHouse is killed with -9 and
//! restarted on its data. At the end:
//! - every messageId that got a 2xx is in ClickHouse `events` exactly once
//!   (after `OPTIMIZE … FINAL`; the raw row count is reported);
//! - every lead's `event_count` in `lead_scores` equals its accepted events;
//! - nothing accepted is missing from Kafka, and nothing the tracking plan
//!   rejected reached the events topic (it is on the DLQ).
//!
//! `LEADSTREAM_E2E_SECONDS` sets how long the load runs (60 by default; a
//! soak: `LEADSTREAM_E2E_SECONDS=1800`), with more kills the longer it runs;
//! `LEADSTREAM_E2E_SEED` replays a fault schedule. The last line is
//! `e2e_faults sent=… wall_s=…`.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use leadstream_schemas::{EmbeddedResolver, Plan, codec::Decoder, codec::to_json};
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
};
use serde_json::Value;

const SOURCES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config/sources.toml");
const LOAD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/segment_sdk_load.py"
);
const EVENTS_PER_S: u32 = 150;
const PEOPLE: u32 = 400;
const STALL: Duration = Duration::from_secs(8);

/// A `leadstream` process that can be killed with -9 and started again
/// with the same arguments; each run logs to its own file.
struct Role {
    name: &'static str,
    args: Vec<String>,
    logs: PathBuf,
    runs: u32,
    child: Option<common::KilledOnDrop>,
}

impl Role {
    fn new(name: &'static str, args: &[&str], logs: &Path) -> Self {
        Self {
            name,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            logs: logs.to_owned(),
            runs: 0,
            child: None,
        }
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.runs += 1;
        let log = std::fs::File::create(self.log(self.runs)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_leadstream"))
            .args(&self.args)
            // The broker logs every request at info.
            .env(
                "LEADSTREAM_LOG",
                if self.name == "broker" {
                    std::env::var("E2E_BROKER_LOG").unwrap_or("warn".into())
                } else {
                    "info".into()
                },
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start leadstream {}: {e}", self.name));
        self.child = Some(common::KilledOnDrop(child));
    }

    /// kill -9, then a fresh process.
    fn crash_and_restart(&mut self) {
        self.child = None;
        std::thread::sleep(Duration::from_millis(300));
        self.start();
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").0.id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {} ({pid})", self.name);
    }

    fn log(&self, run: u32) -> PathBuf {
        self.logs.join(format!("{}-{run}.log", self.name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fault {
    KillIngest,
    KillScorer,
    KillSink,
    StallBroker,
    RestartClickHouse,
}

/// A reproducible schedule: each role killed `kills` times and one broker
/// stall and ClickHouse restart per `kills / 2` (at least one), at random
/// moments between 10% and 85% of the load.
fn schedule(seed: u64, seconds: u64) -> Vec<(Duration, Fault)> {
    let mut rng = seed | 1;
    let mut next = move || {
        // xorshift64: enough for spreading faults, reproducible by seed.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let kills = (seconds / 30).max(2);
    let mut plan = Vec::new();
    let mut add = |fault: Fault, times: u64| {
        for _ in 0..times {
            let at = seconds as f64 * (0.10 + 0.75 * (next() % 10_000) as f64 / 10_000.0);
            plan.push((Duration::from_secs_f64(at), fault));
        }
    };
    add(Fault::KillIngest, kills);
    add(Fault::KillScorer, kills);
    add(Fault::KillSink, kills);
    add(Fault::StallBroker, (kills / 2).max(1));
    add(Fault::RestartClickHouse, (kills / 2).max(1));
    plan.sort_by_key(|(at, _)| *at);
    plan
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every record on `topic` (all partitions, from the start): reads until
/// `done` holds for what was read, then 3 s more to catch late copies.
async fn read_topic(
    bootstrap: &str,
    topic: &str,
    done: impl Fn(&[Vec<u8>]) -> bool,
) -> Vec<Vec<u8>> {
    let consumer: StreamConsumer =
        leadstream_common::kafka::consumer_config(bootstrap, &common::unique("e2e-check"))
            .create()
            .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut quiet_until = None;
    loop {
        let now = tokio::time::Instant::now();
        if quiet_until.is_some_and(|q| now >= q) || now >= deadline {
            return out;
        }
        if quiet_until.is_none() && done(&out) {
            quiet_until = Some(now + Duration::from_secs(3));
        }
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            out.push(m.payload().unwrap_or_default().to_vec());
        }
    }
}

/// Polls `check` every second until it returns true or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct LeadCount {
    lead_id: String,
    event_count: u64,
}

async fn event_ids_in_clickhouse(db: &clickhouse::Client) -> BTreeSet<String> {
    db.query("SELECT DISTINCT message_id FROM events")
        .fetch_all::<String>()
        .await
        .map(|ids| ids.into_iter().collect())
        .unwrap_or_default()
}

async fn lead_counts(db: &clickhouse::Client) -> HashMap<String, u64> {
    db.query("SELECT lead_id, argMax(event_count, version) AS event_count FROM lead_scores GROUP BY lead_id")
        .fetch_all::<LeadCount>()
        .await
        .map(|rows| rows.into_iter().map(|r| (r.lead_id, r.event_count)).collect())
        .unwrap_or_default()
}

fn mismatches(expected: &BTreeMap<String, u64>, got: &HashMap<String, u64>) -> Vec<String> {
    expected
        .iter()
        .filter(|(lead, n)| got.get(*lead) != Some(n))
        .map(|(lead, n)| format!("{lead}: expected {n}, got {:?}", got.get(lead)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_loses_and_doubles_nothing_under_kills_stalls_and_restarts() {
    let wall = Instant::now();
    let seconds: u64 = std::env::var("LEADSTREAM_E2E_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("LEADSTREAM_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000
        });
    let plan = schedule(seed, seconds);
    println!(
        "e2e: seed {seed} (LEADSTREAM_E2E_SEED to replay), {seconds} s of load, faults {plan:?}"
    );

    let work = tempfile::tempdir().unwrap();
    // Outside the work dir: kept after a failure.
    let logs = std::env::temp_dir().join(common::unique("e2e-logs"));
    std::fs::create_dir_all(&logs).unwrap();
    println!("e2e: logs in {}", logs.display());

    // A broker and a ClickHouse of this test's own: the faults would
    // disturb every other test on the shared ones.
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let mut broker = Role::new("broker", &["broker", "--listen", &bootstrap], &logs);
    broker.start();
    let up = eventually(Duration::from_secs(15), || async {
        std::net::TcpStream::connect(&bootstrap).is_ok()
    })
    .await;
    assert!(
        up,
        "the broker did not start; see {}",
        broker.log(1).display()
    );
    let mut clickhouse = tokio::task::spawn_blocking(common::OwnClickHouse::start)
        .await
        .unwrap();
    let ch_url = clickhouse.url();
    let database = "e2e";

    let events = common::TestTopic::create(&bootstrap, "e2e_events", 3).await;
    let dlq = common::TestTopic::create(&bootstrap, "e2e_dlq", 1).await;
    let scores = format!("{}.lead_scores", events.name);
    leadstream_sink::migrate(&common::clickhouse_args(&ch_url, database, None))
        .await
        .unwrap();

    let ingest_listen = format!("127.0.0.1:{}", free_port());
    let spool = work.path().join("spool");
    let spool = spool.to_str().unwrap();
    let prefix = format!("{}.scorer", events.name);
    let scorer_group = format!("{}-scorer", events.name);
    let sink_group = format!("{}-sink", events.name);
    let mut ingest = Role::new(
        "ingest",
        &[
            "ingest",
            "--listen",
            &ingest_listen,
            "--kafka",
            &bootstrap,
            "--sources",
            SOURCES,
            "--pii-pepper",
            "e2e-test-pii-pepper-0001",
            "--spool-dir",
            spool,
            "--events-topic",
            &events.name,
            "--dlq-topic",
            &dlq.name,
            "--pipeline-metrics-topic",
            "",
            "--produce-timeout-ms",
            "3000",
            "--producer-stall-ms",
            "4000",
        ],
        &logs,
    );
    let mut scorer = Role::new(
        "scorer",
        &[
            "scorer",
            "--kafka",
            &bootstrap,
            "--events-topic",
            &events.name,
            "--scores-topic",
            &scores,
            "--topic-prefix",
            &prefix,
            "--group",
            &scorer_group,
            "--replication-factor",
            "1",
            "--session-timeout-ms",
            "6000",
            "--pipeline-metrics-topic",
            "",
            "--listen",
            "127.0.0.1:0",
        ],
        &logs,
    );
    let mut sink = Role::new(
        "sink",
        &[
            "sink",
            "--kafka",
            &bootstrap,
            "--clickhouse",
            &ch_url,
            "--clickhouse-database",
            database,
            "--events-topic",
            &events.name,
            "--scores-topic",
            &scores,
            "--dlq-topic",
            &dlq.name,
            "--pipeline-metrics-topic",
            "",
            "--group",
            &sink_group,
            "--session-timeout-ms",
            "6000",
            "--listen",
            "127.0.0.1:0",
        ],
        &logs,
    );
    ingest.start();
    scorer.start();
    sink.start();
    let ingest_url = format!("http://{ingest_listen}");
    let up = eventually(Duration::from_secs(30), || {
        let url = format!("{ingest_url}/_readiness");
        async move {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    assert!(up, "ingest is not ready; see {}", ingest.log(1).display());

    let load = Command::new("python3")
        .args([
            LOAD,
            &ingest_url,
            "dev-web-key",
            &EVENTS_PER_S.to_string(),
            &seconds.to_string(),
            &PEOPLE.to_string(),
            &seed.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (deploy/scripts/install-test-deps.sh)");
    let load = tokio::task::spawn_blocking(move || load.wait_with_output());

    // The faults, on schedule, while the load runs.
    let started = Instant::now();
    let mut counts: HashMap<Fault, u32> = HashMap::new();
    for (at, fault) in &plan {
        if let Some(wait) = at.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        println!("e2e: {:>5.1} s {fault:?}", started.elapsed().as_secs_f64());
        match fault {
            Fault::KillIngest => ingest.crash_and_restart(),
            Fault::KillScorer => scorer.crash_and_restart(),
            Fault::KillSink => sink.crash_and_restart(),
            Fault::StallBroker => {
                broker.signal("-STOP");
                tokio::time::sleep(STALL).await;
                broker.signal("-CONT");
            }
            Fault::RestartClickHouse => {
                clickhouse.kill();
                tokio::time::sleep(Duration::from_secs(2)).await;
                clickhouse = tokio::task::spawn_blocking(move || {
                    clickhouse.restart();
                    clickhouse
                })
                .await
                .unwrap();
            }
        }
        *counts.entry(*fault).or_default() += 1;
    }
    let out = load.await.unwrap().unwrap();
    assert!(
        out.status.success(),
        "the load client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = report["failed"].as_array().unwrap();
    assert!(
        failed.is_empty(),
        "the SDK gave up on {} events (ingest unreachable for minutes?); logs in {}",
        failed.len(),
        logs.display()
    );
    let mut accepted = BTreeSet::new();
    let mut per_lead: BTreeMap<String, u64> = BTreeMap::new();
    for (anon, ids) in report["accepted"].as_object().unwrap() {
        let ids = ids.as_array().unwrap();
        let lead = leadstream_scorer::identity::lead_id_of(&format!("a:{anon}"));
        *per_lead.entry(lead).or_default() += ids.len() as u64;
        accepted.extend(ids.iter().map(|i| i.as_str().unwrap().to_owned()));
    }
    let invalid: BTreeSet<String> = report["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_owned())
        .collect();
    let sent = accepted.len() + invalid.len() + report["dropped"].as_u64().unwrap() as usize;
    println!(
        "e2e: load done after {:.0} s: {} accepted, {} breaking the plan",
        started.elapsed().as_secs_f64(),
        accepted.len(),
        invalid.len()
    );

    // Kafka: everything accepted, nothing the plan rejected.
    let decoder = Decoder::new(Arc::new(
        EmbeddedResolver::new(&Plan::embedded().unwrap()).unwrap(),
    ));
    let raw = read_topic(&bootstrap, &events.name, |got| got.len() >= accepted.len()).await;
    let mut in_kafka = Vec::new();
    for payload in &raw {
        let event = to_json(&decoder.decode(payload).await.unwrap().value);
        in_kafka.push(event["message_id"].as_str().unwrap().to_owned());
    }
    let kafka_ids: BTreeSet<String> = in_kafka.iter().cloned().collect();
    let missing_from_kafka = accepted.difference(&kafka_ids).count();
    let rejected_in_kafka = invalid.intersection(&kafka_ids).count();
    let dlq_raw = read_topic(&bootstrap, &dlq.name, |got| got.len() >= invalid.len()).await;
    let on_dlq: BTreeSet<String> = dlq_raw
        .iter()
        .filter_map(|p| serde_json::from_slice::<Value>(p).ok())
        .filter_map(|v| v["message_id"].as_str().map(str::to_owned))
        .collect();

    // ClickHouse: every accepted id, once; every lead's count.
    let db = leadstream_common::clickhouse::connect(&ch_url, Some(database))
        .await
        .unwrap()
        .client;
    let all_in = eventually(Duration::from_secs(180), || {
        let db = db.clone();
        let accepted = &accepted;
        async move { event_ids_in_clickhouse(&db).await.is_superset(accepted) }
    })
    .await;
    let scored = eventually(Duration::from_secs(180), || {
        let db = db.clone();
        let per_lead = &per_lead;
        async move { mismatches(per_lead, &lead_counts(&db).await).is_empty() }
    })
    .await;
    let rows: u64 = db
        .query("SELECT count() FROM events")
        .fetch_one()
        .await
        .unwrap();
    db.query("OPTIMIZE TABLE events FINAL")
        .execute()
        .await
        .unwrap();
    let after: u64 = db
        .query("SELECT count() FROM events")
        .fetch_one()
        .await
        .unwrap();
    let ch_ids = event_ids_in_clickhouse(&db).await;
    let lead_mismatches = mismatches(&per_lead, &lead_counts(&db).await);
    let kills = |f: Fault| counts.get(&f).copied().unwrap_or(0);
    println!(
        "e2e: {} records on the events topic for {} distinct ids; {rows} rows in ClickHouse events before OPTIMIZE FINAL, {after} after",
        in_kafka.len(),
        kafka_ids.len()
    );
    let summary = format!(
        "e2e_faults sent={sent} accepted={} in_kafka={} in_clickhouse={} duplicates_collapsed={} lead_count_mismatches={} kills_ingest={} kills_scorer={} kills_sink={} broker_stalls={} clickhouse_restarts={} wall_s={:.0}",
        accepted.len(),
        kafka_ids.len(),
        ch_ids.len(),
        rows.saturating_sub(after),
        lead_mismatches.len(),
        kills(Fault::KillIngest),
        kills(Fault::KillScorer),
        kills(Fault::KillSink),
        kills(Fault::StallBroker),
        kills(Fault::RestartClickHouse),
        wall.elapsed().as_secs_f64()
    );

    println!("{summary}");
    let see = format!("seed {seed}; logs in {}", logs.display());
    assert_eq!(
        missing_from_kafka, 0,
        "accepted events missing from Kafka; {see}"
    );
    assert_eq!(
        rejected_in_kafka, 0,
        "events the plan rejected on the events topic; {see}"
    );
    assert!(
        on_dlq.is_superset(&invalid),
        "rejected events missing from the DLQ; {see}"
    );
    assert!(
        all_in,
        "accepted events missing from ClickHouse: {:?}; {see}",
        accepted.difference(&ch_ids).take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        after,
        ch_ids.len() as u64,
        "rows left doubled after OPTIMIZE FINAL; {see}"
    );
    assert!(
        scored && lead_mismatches.is_empty(),
        "lead counts differ: {:?}; {see}",
        lead_mismatches.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        ch_ids.is_subset(&kafka_ids) && invalid.is_disjoint(&ch_ids),
        "ClickHouse holds ids that were never accepted; {see}"
    );
    // Topics are deleted through the broker, so before it stops.
    drop((events, dlq));
    drop((ingest, scorer, sink, broker, clickhouse));
    let _ = std::fs::remove_dir_all(&logs);
}
