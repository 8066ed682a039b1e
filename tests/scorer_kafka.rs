//! `leadstream scorer` against the real broker: identities whose events sit
//! on different partitions and are handled by different instances merge
//! into one lead with all their history; a kill -9 and a rebalance in the
//! middle of the stream end in the same scores as an uninterrupted run; a
//! lead that stops sending events moves through its lifecycle on the clock.

mod common;

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use leadstream_schemas::{EmbeddedResolver, Encoder, Plan, codec::Decoder, codec::to_json};
use leadstream_scorer::{
    clock::ManualClock,
    identity::{IdentityGraph, identifiers, lead_id_of},
    runtime::ScorerConfig,
};
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
};
use serde_json::{Value, json};

const PARTITIONS: i32 = 4;
const T0: i64 = 1_795_305_600_000;

/// One person's journey over web, mini-program and (some) app, spread over
/// partitions on purpose. Even persons give a phone on a lead form and the
/// CRM links phone, union id and user id; odd persons never link.
fn journeys(persons: std::ops::Range<usize>) -> Vec<(i32, Value)> {
    let mut out = Vec::new();
    for i in persons {
        let p = |k: usize| ((i + k) % PARTITIONS as usize) as i32;
        let base = |n: usize, event: &str, kind: &str, platform: &str| {
            json!({"message_id": format!("p{i}-{n}"), "event": event, "type": kind, "platform": platform,
                   "source_id": format!("{platform}-main"), "tenant": "brand-a",
                   "timestamp": T0 + (i * 20 + n) as i64 * 10_000, "received_at": T0, "context": {}})
        };
        for n in 0..3 {
            let mut e = base(n, "page_viewed", "page", "web");
            e["anonymous_id"] = json!(format!("web-{i}"));
            e["properties"] = json!({"page_type": if i % 3 == 0 { "configurator" } else { "model_detail" }, "model_id": "x5"});
            out.push((p(0), e));
        }
        for n in 3..6 {
            let mut e = base(n, "page_viewed", "page", "mini_program");
            e["anonymous_id"] = json!(format!("mp-{i}"));
            e["union_id"] = json!(format!("wx-{i}"));
            e["properties"] = json!({"page_type": "price", "model_id": "i4"});
            out.push((p(1), e));
        }
        if i % 2 == 0 {
            let mut form = base(6, "lead_form_submitted", "track", "web");
            form["anonymous_id"] = json!(format!("web-{i}"));
            form["phone_hash"] = json!(format!("ph-{i}"));
            form["properties"] = json!({"form_id": "quote"});
            out.push((p(0), form));
            let mut crm = base(7, "identify", "identify", "server");
            crm["user_id"] = json!(format!("u-{i}"));
            crm["phone_hash"] = json!(format!("ph-{i}"));
            crm["union_id"] = json!(format!("wx-{i}"));
            crm["properties"] = json!({});
            out.push((p(3), crm));
        }
        if i % 4 == 0 {
            let mut td = base(8, "test_drive_booked", "track", "app");
            td["anonymous_id"] = json!(format!("app-{i}"));
            td["union_id"] = json!(format!("wx-{i}"));
            td["properties"] = json!({"model_id": "i4", "dealer_id": "d-1"});
            out.push((p(2), td));
        }
    }
    out
}

/// The leads a single process that saw everything would end with, and
/// their event counts: what the distributed run must agree with.
fn expected_leads(events: &[(i32, Value)]) -> (BTreeMap<String, i64>, IdentityGraph) {
    let mut g = IdentityGraph::default();
    for (_, e) in events {
        g.link(&identifiers(e));
    }
    let mut counts = BTreeMap::new();
    for (_, e) in events {
        *counts.entry(g.resolve(&identifiers(e))).or_insert(0) += 1;
    }
    (counts, g)
}

async fn produce(bootstrap: &str, topic: &str, events: &[(i32, Value)]) {
    let plan = Plan::embedded().unwrap();
    let encoder = Encoder::build(&plan, &EmbeddedResolver::new(&plan).unwrap())
        .await
        .unwrap();
    // Sent all at once, so records share batches: consumers that resume
    // after a kill or a rebalance start inside a batch, as they do on Kafka.
    let producer: FutureProducer = leadstream_common::kafka::producer_config(bootstrap, 5)
        .create()
        .unwrap();
    let mut deliveries = Vec::new();
    for (partition, e) in events {
        let bytes = encoder
            .encode(e)
            .unwrap_or_else(|err| panic!("test event {e} is invalid: {err}"))
            .bytes;
        let key = ["user_id", "union_id", "anonymous_id"]
            .iter()
            .find_map(|k| e[*k].as_str())
            .unwrap()
            .to_owned();
        let record = FutureRecord::to(topic)
            .partition(*partition)
            .key(&key)
            .payload(&bytes);
        deliveries.push(
            producer
                .send_result(record)
                .unwrap_or_else(|(err, _)| panic!("produce failed: {err}")),
        );
    }
    for delivery in deliveries {
        delivery
            .await
            .unwrap()
            .unwrap_or_else(|(err, _)| panic!("produce failed: {err}"));
    }
}

/// Latest `lead_score` per lead (highest version), read until `done` holds.
async fn read_scores(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    let plan = Plan::embedded().unwrap();
    let decoder = Decoder::new(Arc::new(EmbeddedResolver::new(&plan).unwrap()));
    let consumer: StreamConsumer =
        leadstream_common::kafka::consumer_config(bootstrap, &common::unique("scores_reader"))
            .create()
            .unwrap();
    // The scorer creates its output topic when it starts; subscribe once it exists.
    let deadline = tokio::time::Instant::now() + timeout;
    while leadstream_common::kafka::partition_count(bootstrap, topic).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{topic} was never created"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    consumer.subscribe(&[topic]).unwrap();
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    while !done(&latest) {
        let m = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => panic!("consuming {topic}: {e}"),
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for the expected scores; latest (lead, events, merged_into): {:?}",
                latest
                    .values()
                    .map(|v| (
                        v["lead_id"].as_str(),
                        v["event_count"].as_i64(),
                        v["merged_into"].as_str()
                    ))
                    .collect::<Vec<_>>()
            ),
        };
        let v = to_json(
            &decoder
                .decode(m.payload().unwrap())
                .await
                .expect("lead_score decodes")
                .value,
        );
        let lead = v["lead_id"].as_str().unwrap().to_owned();
        assert_eq!(m.key(), Some(lead.as_bytes()), "keyed by lead id");
        if latest
            .get(&lead)
            .is_none_or(|old| old["version"].as_i64() < v["version"].as_i64())
        {
            latest.insert(lead, v);
        }
    }
    latest
}

/// Every expected lead at its full event count, every merged-away lead
/// leading to a survivor through `merged_into`. A lead names the lead its
/// state went to, which may itself have merged on later (A into B while B
/// was a root, then B into C): following the pointers must end at an
/// expected lead, without a loop.
fn complete(expected: &BTreeMap<String, i64>) -> impl Fn(&BTreeMap<String, Value>) -> bool {
    let expected = expected.clone();
    move |latest| {
        let survivor = |v: &Value| {
            let mut v = v;
            for _ in 0..latest.len() {
                let next = v["merged_into"].as_str()?;
                if expected.contains_key(next) {
                    return Some(next.to_owned());
                }
                v = latest.get(next)?;
            }
            None
        };
        expected.iter().all(|(lead, n)| {
            latest
                .get(lead)
                .is_some_and(|v| v["event_count"] == json!(n) && v["merged_into"].is_null())
        }) && latest
            .values()
            .filter(|v| !expected.contains_key(v["lead_id"].as_str().unwrap()))
            .all(|v| survivor(v).is_some())
    }
}

struct Setup {
    bootstrap: String,
    events: common::TestTopic,
}

fn config(bootstrap: &str, events: &str, run: &str) -> ScorerConfig {
    let mut cfg = ScorerConfig::defaults(bootstrap);
    cfg.shared.topics.events = events.to_owned();
    cfg.shared.topics.scores = format!("{run}.lead_scores");
    cfg.topic_prefix = format!("{run}.scorer");
    cfg.group = format!("{run}-group");
    cfg.replication_factor = 1;
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.batch_ms = 50;
    cfg.shared.kafka.session_timeout_ms = 6_000;
    // These tests compare runs: the wall clock driving idle partitions'
    // schedules would make the final scores depend on timing (the events
    // are weeks old). Stream time still drives them.
    cfg.idle_ms = u64::MAX / 2;
    cfg
}

/// Runs an in-process scorer until the returned sender fires.
fn spawn_scorer(
    cfg: ScorerConfig,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        leadstream_scorer::runtime::run(cfg, async move {
            let _ = rx.await;
        })
        .await
        .expect("scorer run");
    });
    (tx, task)
}

/// [`spawn_scorer`] with its clock injected.
fn spawn_scorer_on(
    cfg: ScorerConfig,
    clock: Arc<ManualClock>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        leadstream_scorer::runtime::run_with_clock(cfg, clock, async move {
            let _ = rx.await;
        })
        .await
        .expect("scorer run");
    });
    (tx, task)
}

async fn setup() -> Setup {
    let bootstrap = common::kafka();
    let events = common::TestTopic::create(&bootstrap, "scorer_events", PARTITIONS).await;
    Setup { bootstrap, events }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ids_on_different_partitions_and_instances_merge_into_one_lead() {
    let s = setup().await;
    let events = journeys(0..12);
    let (expected, mut g) = expected_leads(&events);
    assert_eq!(
        expected.len(),
        6 + 12,
        "6 linked persons are one lead each, 6 unlinked persons two each"
    );
    produce(&s.bootstrap, &s.events.name, &events).await;

    let run = common::unique("scorer_merge");
    let cfg = config(&s.bootstrap, &s.events.name, &run);
    let a = spawn_scorer(cfg.clone());
    let b = spawn_scorer(ScorerConfig {
        threads: 2,
        ..cfg.clone()
    });
    let latest = read_scores(
        &s.bootstrap,
        &cfg.shared.topics.scores,
        Duration::from_secs(120),
        complete(&expected),
    )
    .await;

    for i in (0..12).step_by(2) {
        let lead = g.resolve(&[format!("a:web-{i}")]);
        let v = &latest[&lead];
        let platforms: Vec<&str> = v["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        let mut want = vec!["mini_program", "web", "server"];
        if i % 4 == 0 {
            want.insert(0, "app");
        }
        assert_eq!(platforms, want, "person {i}: {v}");
        assert_eq!(
            v["reasons"][0]["code"],
            if i % 4 == 0 {
                "test_drive_booked"
            } else {
                "lead_form_submitted"
            },
            "{v}"
        );
    }
    for (tx, task) in [a, b] {
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("scorer stops on shutdown")
            .unwrap();
    }
}

fn spawn_binary(cfg: &ScorerConfig, log: &str) -> common::KilledOnDrop {
    let log = std::fs::File::create(std::env::temp_dir().join(log)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_leadstream"))
        .args([
            "scorer",
            "--kafka",
            cfg.shared.kafka.brokers().unwrap(),
            "--events-topic",
            &cfg.shared.topics.events,
            "--scores-topic",
            &cfg.shared.topics.scores,
            "--topic-prefix",
            &cfg.topic_prefix,
            "--group",
            &cfg.group,
            "--replication-factor",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--session-timeout-ms",
            "6000",
            "--batch-ms",
            "50",
            "--batch-max",
            "20",
            "--idle-ms",
            &cfg.idle_ms.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(common::KilledOnDrop)
        .expect("start leadstream scorer")
}

/// Comparable view of a final score. The score itself is compared with a
/// tolerance: it is computed at the partition's stream time, which depends
/// on how other leads' records interleave in that run.
type Summary = (i64, String, String, Vec<String>);

fn summary(latest: &BTreeMap<String, Value>) -> BTreeMap<String, Summary> {
    latest
        .iter()
        .filter(|(_, v)| v["merged_into"].is_null())
        .map(|(k, v)| {
            let reasons = v["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["code"].as_str().unwrap().to_owned())
                .collect();
            (
                k.clone(),
                (
                    v["event_count"].as_i64().unwrap(),
                    v["grade"].as_str().unwrap().to_owned(),
                    v["stage"].as_str().unwrap().to_owned(),
                    reasons,
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_and_a_rebalance_mid_stream_end_in_the_same_scores_as_an_uninterrupted_run() {
    let s = setup().await;
    let first = journeys(0..20);
    let second = journeys(20..40);
    let all: Vec<(i32, Value)> = first.iter().chain(&second).cloned().collect();
    let (expected, _) = expected_leads(&all);
    produce(&s.bootstrap, &s.events.name, &first).await;

    let run = common::unique("scorer_crash");
    let cfg = config(&s.bootstrap, &s.events.name, &run);
    let victim = spawn_binary(&cfg, &format!("{run}-a.log"));
    // Let it get part of the way, then kill -9 mid-stream.
    read_scores(
        &s.bootstrap,
        &cfg.shared.topics.scores,
        Duration::from_secs(120),
        |l| l.len() >= 10,
    )
    .await;
    drop(victim); // kill -9
    let b = spawn_binary(&cfg, &format!("{run}-b.log"));
    produce(&s.bootstrap, &s.events.name, &second[..second.len() / 2]).await;
    // A second instance joins: the group rebalances while events flow.
    let c = spawn_binary(&cfg, &format!("{run}-c.log"));
    produce(&s.bootstrap, &s.events.name, &second[second.len() / 2..]).await;
    let crashed = read_scores(
        &s.bootstrap,
        &cfg.shared.topics.scores,
        Duration::from_secs(180),
        complete(&expected),
    )
    .await;
    drop((b, c));

    let clean_run = common::unique("scorer_clean");
    let clean_cfg = config(&s.bootstrap, &s.events.name, &clean_run);
    let (tx, task) = spawn_scorer(clean_cfg.clone());
    let clean = read_scores(
        &s.bootstrap,
        &clean_cfg.shared.topics.scores,
        Duration::from_secs(120),
        complete(&expected),
    )
    .await;
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();

    for (lead, v) in clean.iter().filter(|(_, v)| v["merged_into"].is_null()) {
        let (a, b) = (
            v["score"].as_f64().unwrap(),
            crashed[lead]["score"].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1.0,
            "{lead}: score {a} uninterrupted vs {b} after the crash"
        );
    }
    let (crashed, clean) = (summary(&crashed), summary(&clean));
    let differ: Vec<_> = clean
        .iter()
        .filter(|(k, v)| crashed.get(*k) != Some(v))
        .map(|(k, v)| (k, v, crashed.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "final scores differ (lead, uninterrupted, crashed): {differ:?}"
    );
    assert_eq!(clean.len(), expected.len());
}

/// Time is an input: with the scorer's clock injected, a lead that shows
/// intent once and then goes silent turns dormant and then nurture with no
/// further event, each change emitted once, stamped at its boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_lead_goes_dormant_and_then_nurture_on_the_clock_alone() {
    const DAY: i64 = 86_400_000;
    let s = setup().await;
    let event = json!({"message_id": "idle-1", "event": "page_viewed", "type": "page", "platform": "web",
        "source_id": "web-main", "tenant": "brand-a", "timestamp": T0, "received_at": T0, "context": {},
        "anonymous_id": "idle-visitor", "properties": {"page_type": "configurator", "model_id": "x5"}});
    produce(&s.bootstrap, &s.events.name, &[(1, event)]).await;
    let lead = lead_id_of("a:idle-visitor");

    let run = common::unique("scorer_clock");
    let mut cfg = config(&s.bootstrap, &s.events.name, &run);
    cfg.idle_ms = 300;
    let clock = Arc::new(ManualClock::new(T0 + 60_000));
    let (tx, task) = spawn_scorer_on(cfg.clone(), clock.clone());
    let stage_is = |stage: &'static str| {
        let lead = lead.clone();
        move |l: &BTreeMap<String, Value>| l.get(&lead).is_some_and(|v| v["stage"] == stage)
    };
    let first = read_scores(
        &s.bootstrap,
        &cfg.shared.topics.scores,
        Duration::from_secs(60),
        stage_is("new"),
    )
    .await;
    assert_eq!(first[&lead]["change_reason"], "event");

    clock.set(T0 + 100 * DAY);
    let dormant = read_scores(
        &s.bootstrap,
        &cfg.shared.topics.scores,
        Duration::from_secs(60),
        stage_is("dormant"),
    )
    .await;
    let d = &dormant[&lead];
    assert_eq!(
        (
            d["change_reason"].as_str(),
            d["previous_stage"].as_str(),
            d["grade"].as_str()
        ),
        (Some("went_dormant"), Some("new"), Some("low"))
    );
    assert_eq!(
        d["updated_at"],
        T0 + 90 * DAY,
        "stamped at the boundary, not when the clock moved"
    );
    assert_eq!(d["event_count"], 1, "no event did this");

    clock.set(T0 + 400 * DAY);
    let nurture = read_scores(
        &s.bootstrap,
        &cfg.shared.topics.scores,
        Duration::from_secs(60),
        stage_is("nurture"),
    )
    .await;
    assert_eq!(nurture[&lead]["change_reason"], "went_nurture");
    assert_eq!(nurture[&lead]["updated_at"], T0 + 365 * DAY);

    // An anonymous device silent past the anonymous TTL expires: its
    // changelog key gets a tombstone.
    assert_eq!(cfg.anonymous_ttl_days, 400);
    clock.set(T0 + 401 * DAY);
    let changelog = cfg.changelog_topic();
    let tombstone = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let values = values_of(&s.bootstrap, &changelog, &lead, Duration::from_secs(5)).await;
            if values.last().is_some_and(Option::is_none) {
                return values;
            }
        }
    })
    .await
    .expect("a tombstone for the expired lead on the changelog");
    // Snapshots before it, if a commit fell between the lead's changes (a
    // commit writes only a lead's latest state, and nothing once it expired).
    assert!(
        tombstone[..tombstone.len() - 1].iter().all(Option::is_some),
        "snapshots, then the tombstone"
    );
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    let before_return = all_records(&s.bootstrap, &cfg.shared.topics.scores, &lead).await;

    // A restarted scorer restores the partition without it: the device's
    // next event starts a new lead, whose versions supersede the old ones.
    let back = json!({"message_id": "idle-2", "event": "page_viewed", "type": "page", "platform": "web",
        "source_id": "web-main", "tenant": "brand-a", "timestamp": T0 + 402 * DAY, "received_at": T0 + 402 * DAY,
        "context": {}, "anonymous_id": "idle-visitor", "properties": {"page_type": "home"}});
    produce(&s.bootstrap, &s.events.name, &[(1, back)]).await;
    clock.set(T0 + 402 * DAY);
    let (tx, task) = spawn_scorer_on(cfg.clone(), clock.clone());
    let returned = read_scores(
        &s.bootstrap,
        &cfg.shared.topics.scores,
        Duration::from_secs(60),
        {
            let lead = lead.clone();
            move |l: &BTreeMap<String, Value>| {
                l.get(&lead)
                    .is_some_and(|v| v["updated_at"].as_i64() >= Some(T0 + 402 * DAY))
            }
        },
    )
    .await;
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    let r = &returned[&lead];
    assert_eq!(
        r["event_count"], 1,
        "the expired history is not restored: {r}"
    );
    assert_eq!(r["change_reason"], "event");
    let old_max = before_return
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .max()
        .unwrap();
    assert!(r["version"].as_i64().unwrap() > old_max, "{r} vs {old_max}");
    let all = before_return;

    // Every record of the lead before it expired, in order: each
    // transition exactly once.
    let reasons: Vec<&str> = all
        .iter()
        .map(|v| v["change_reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "went_dormant").count(),
        1,
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| **r == "went_nurture").count(),
        1,
        "{reasons:?}"
    );
    let versions: Vec<i64> = all.iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "versions increase: {versions:?}"
    );
}

/// The values of `key` on `topic` in offset order (`None`: a tombstone),
/// read until nothing arrives for `quiet`.
async fn values_of(
    bootstrap: &str,
    topic: &str,
    key: &str,
    quiet: Duration,
) -> Vec<Option<Vec<u8>>> {
    let consumer: StreamConsumer =
        leadstream_common::kafka::consumer_config(bootstrap, &common::unique("values_of"))
            .create()
            .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    while let Ok(Ok(m)) = tokio::time::timeout(quiet, consumer.recv()).await {
        if m.key() == Some(key.as_bytes()) {
            out.push(m.payload().map(<[u8]>::to_vec));
        }
    }
    out
}

/// Every `lead_score` of `lead` on `topic`, in offset order (one partition per key).
async fn all_records(bootstrap: &str, topic: &str, lead: &str) -> Vec<Value> {
    let plan = Plan::embedded().unwrap();
    let decoder = Decoder::new(Arc::new(EmbeddedResolver::new(&plan).unwrap()));
    let mut out = Vec::new();
    for value in values_of(bootstrap, topic, lead, Duration::from_secs(8)).await {
        let value = value.expect("a score record, not a tombstone");
        out.push(to_json(&decoder.decode(&value).await.unwrap().value));
    }
    out
}

/// `scorer compact-identity` on the real broker: after a pass (and a second
/// one), a scorer that reads the log from the start has the same leads and
/// follows every old lead id to the same lead, and so does one that reads
/// only what Kafka's compaction would keep of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compacting_the_identity_log_keeps_every_lead_and_old_lead_id() {
    use leadstream_scorer::{identity_compaction as compaction, runtime::identity_log};
    let bootstrap = common::kafka();
    let topic = common::TestTopic::create(&bootstrap, "scorer_identity", 1).await;
    let events = journeys(0..60);
    let (_, mut expected) = expected_leads(&events);
    let producer: FutureProducer = leadstream_common::kafka::producer_config(&bootstrap, 5)
        .create()
        .unwrap();
    let append = |ids: Vec<String>| {
        let (producer, topic) = (&producer, &topic.name);
        async move {
            let (key, value) = compaction::link_record(&ids);
            producer
                .send(
                    FutureRecord::to(topic)
                        .partition(0)
                        .key(&key)
                        .payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .expect("link appended")
                .offset
        }
    };
    let mut links = 0;
    let mut keys = std::collections::BTreeSet::new();
    for (_, e) in &events {
        let ids = identifiers(e);
        if ids.len() > 1 {
            keys.insert(compaction::link_record(&ids).0);
            append(ids).await;
            links += 1;
        }
    }
    let first = identity_log::compact(&bootstrap, &topic.name)
        .await
        .unwrap();
    assert_eq!(first.records_read, links + 1, "every link and the marker");
    // Leads of several link records become one record each; a lead of one
    // record keeps it; the marker goes.
    assert!(
        first.components_written > 0 && first.tombstones > first.components_written,
        "{first:?}"
    );
    assert!(first.tombstones <= keys.len() + 1, "{first:?}");
    assert!(first.bytes_after < first.bytes_before, "{first:?}");
    let second = identity_log::compact(&bootstrap, &topic.name)
        .await
        .unwrap();
    assert!(second.bytes_after <= first.bytes_after, "{second:?}");
    // A link appended after the passes, as a running scorer would.
    let end = append(vec!["a:web-1".into(), "u:late-1".into()]).await;
    expected.link(&["a:web-1".into(), "u:late-1".into()]);

    let ids: Vec<String> = events
        .iter()
        .flat_map(|(_, e)| identifiers(e))
        .chain(["u:late-1".to_owned()])
        .collect();
    let same = |got: &mut IdentityGraph, expected: &mut IdentityGraph, what: &str| {
        for id in &ids {
            let one = std::slice::from_ref(id);
            assert_eq!(got.resolve(one), expected.resolve(one), "{what}: {id}");
            let old = lead_id_of(id);
            assert_eq!(
                got.current_lead(&old),
                expected.current_lead(&old),
                "{what}: {old}"
            );
        }
    };
    // What a scorer starting now reads: the whole log, nothing compacted yet.
    let log = identity_log::IdentityLog::start(&bootstrap, &topic.name).unwrap();
    tokio::time::timeout(Duration::from_secs(30), log.wait_for(end as u64 + 1))
        .await
        .expect("the reader reaches the last link");
    same(&mut log.graph.lock().unwrap(), &mut expected, "whole log");

    // What it would read once Kafka compacted the topic: the last record of
    // each key, none whose last is a tombstone.
    let consumer: StreamConsumer =
        leadstream_common::kafka::reader_config(&bootstrap, &common::unique("compacted"))
            .create()
            .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic.name, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut records = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("reading the identity log back")
            .unwrap();
        records.push((
            m.key().unwrap_or_default().to_vec(),
            m.payload().map(<[u8]>::to_vec),
        ));
        if m.offset() >= end {
            break;
        }
    }
    let last: BTreeMap<&[u8], usize> = records
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.as_slice(), i))
        .collect();
    let kept: Vec<_> = records
        .iter()
        .enumerate()
        .filter(|(i, (k, v))| last[k.as_slice()] == *i && v.is_some())
        .map(|(_, r)| r)
        .collect();
    assert!(
        kept.len() * 2 < links,
        "{} records kept of {links} links",
        kept.len()
    );
    let mut compacted = IdentityGraph::default();
    for (k, v) in kept {
        let record = compaction::read(Some(k), v.as_deref()).unwrap();
        assert!(compaction::apply(&mut compacted, &record));
    }
    same(&mut compacted, &mut expected, "compacted log");
}

/// The score loop commits every `--commit-interval-ms`: a lead's events
/// in between, each in a batch of its own, are scored at once but written
/// to the changelog once, when a stop commits what was applied; a
/// restarted scorer goes on from there without losing or counting any
/// event again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leads_events_within_a_commit_interval_are_one_changelog_write() {
    let s = setup().await;
    let event = |n: i64| {
        json!({"message_id": format!("interval-{n}"), "event": "page_viewed", "type": "page",
            "platform": "web", "source_id": "web-main", "tenant": "brand-a",
            "timestamp": T0 + n * 1000, "received_at": T0 + n * 1000, "context": {},
            "anonymous_id": "interval-visitor", "properties": {"page_type": "model_detail"}})
    };
    let lead = lead_id_of("a:interval-visitor");
    let run = common::unique("scorer_interval");
    let mut cfg = config(&s.bootstrap, &s.events.name, &run);
    cfg.commit_interval_ms = 600_000;
    let changelog = cfg.changelog_topic();
    let (tx, task) = spawn_scorer(cfg.clone());

    let plan = Plan::embedded().unwrap();
    let decoder = Decoder::new(Arc::new(EmbeddedResolver::new(&plan).unwrap()));
    let scores =
        leadstream_common::kafka::consumer_config(&s.bootstrap, &common::unique("interval"))
            .create::<StreamConsumer>()
            .unwrap();
    while leadstream_common::kafka::partition_count(&s.bootstrap, &cfg.shared.topics.scores)
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    scores.subscribe(&[&cfg.shared.topics.scores]).unwrap();
    for n in 1..=12 {
        // Each event waits for the previous one's score: a batch each.
        produce(&s.bootstrap, &s.events.name, &[(2, event(n))]).await;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(60), scores.recv())
                .await
                .unwrap_or_else(|_| panic!("no score for event {n}"))
                .unwrap();
            let v = to_json(&decoder.decode(m.payload().unwrap()).await.unwrap().value);
            if v["lead_id"] == lead.as_str() && v["event_count"] == n {
                break;
            }
        }
    }
    let snapshots = || values_of(&s.bootstrap, &changelog, &lead, Duration::from_secs(3));
    assert_eq!(
        snapshots().await.len(),
        0,
        "12 batches within the interval wrote no snapshot yet"
    );

    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("scorer stops on shutdown")
        .unwrap();
    assert_eq!(
        snapshots().await.len(),
        1,
        "the stop's commit wrote the lead once"
    );

    // Restarted: nothing is applied twice and nothing is missed.
    produce(&s.bootstrap, &s.events.name, &[(2, event(13))]).await;
    let (tx, task) = spawn_scorer(cfg.clone());
    let latest = read_scores(
        &s.bootstrap,
        &cfg.shared.topics.scores,
        Duration::from_secs(60),
        |l| {
            l.get(&lead)
                .is_some_and(|v| v["event_count"].as_i64() >= Some(13))
        },
    )
    .await;
    assert_eq!(latest[&lead]["event_count"], 13);
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
}
