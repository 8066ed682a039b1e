//! `leadstream scorer`: the Kafka shell around the pure stages. Two consumer
//! groups in one process — stitching (`events` → `by_lead`) and scoring
//! (`by_lead` → `lead_scores` + changelog) — plus a reader of the identity
//! log. Any number of instances may run; partitions spread over them.

pub mod config;
pub mod identity_log;
pub mod metrics;
pub mod score_loop;
pub mod stitch;

use std::{
    future::Future,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use leadstream_common::{
    kafka::{
        Batching, LagGauge, RebalanceLog, StageDriver, TopicSpec, ensure_topics, partition_count,
        producer_config,
    },
    ops::{self, Ready},
    pipeline_metrics,
};
use leadstream_schemas::{Decoder, Encoder, Plan};
use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    producer::FutureProducer,
};

pub use config::{ScorerArgs, ScorerCommand, ScorerConfig};

use crate::{
    clock::{Clock, SystemClock},
    processor::Processor,
    rules::ScoringConfig,
    train::TrainedModel,
};

/// Topic names and the partition count of the co-partitioned ones.
#[derive(Debug, Clone)]
pub struct Topics {
    pub events: String,
    pub scores: String,
    pub identity: String,
    pub by_lead: String,
    pub changelog: String,
    pub partitions: i32,
}

/// `leadstream scorer compact-identity`: one compaction pass over the
/// identity log, reported on stdout.
pub async fn compact_identity(cfg: &ScorerConfig) -> anyhow::Result<()> {
    let kafka = cfg.shared.kafka.brokers()?.to_owned();
    let topic = cfg.identity_topic();
    let r = identity_log::compact(&kafka, &topic).await?;
    println!(
        "compacted {topic}: {} records read ({} identifiers in links), {} lead records written, {} tombstones; live bytes {} -> {} once Kafka compacts",
        r.records_read,
        r.identifiers,
        r.components_written,
        r.tombstones,
        r.bytes_before,
        r.bytes_after
    );
    Ok(())
}

/// Runs the scorer until `shutdown` resolves; each loop finishes (and
/// commits) its current batch first.
pub async fn run(
    cfg: ScorerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_clock(cfg, Arc::new(SystemClock), shutdown).await
}

/// [`run`] with the wall clock idle partitions' schedules read (the
/// quickstart's simulated time, tests' manual clock).
pub async fn run_with_clock(
    cfg: ScorerConfig,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let scoring = match &cfg.scoring_config {
        Some(path) => ScoringConfig::load(path)?,
        None => ScoringConfig::parse(crate::rules::DEFAULT_TOML)?,
    };
    let plan = Plan::embedded()?;
    let resolver = cfg.shared.registry.resolver(&plan)?;
    let encoder = Arc::new(
        Encoder::build(&plan, resolver.as_ref())
            .await
            .context("looking up the lead_score schema id in the registry")?,
    );
    let decoder = Arc::new(Decoder::new(Arc::clone(&resolver)));

    let kafka = cfg.shared.kafka.brokers()?.to_owned();
    let events_partitions = {
        let (k, t) = (kafka.clone(), cfg.shared.topics.events.clone());
        tokio::task::spawn_blocking(move || partition_count(&k, &t)).await??
    };
    let partitions = cfg.partitions.unwrap_or(events_partitions);
    let topics = Topics {
        events: cfg.shared.topics.events.clone(),
        scores: cfg.shared.topics.scores.clone(),
        identity: cfg.identity_topic(),
        by_lead: cfg.by_lead_topic(),
        changelog: cfg.changelog_topic(),
        partitions,
    };
    let spec = |name: &str, partitions: i32, compacted: bool| TopicSpec {
        name: name.to_owned(),
        partitions,
        replication: cfg.replication_factor,
        compacted,
    };
    ensure_topics(
        &kafka,
        &[
            spec(&topics.identity, 1, true),
            spec(&topics.by_lead, partitions, false),
            spec(&topics.changelog, partitions, true),
            spec(&topics.scores, partitions, true),
        ],
    )
    .await?;
    // The by_lead and changelog topics must agree on partitions: state for
    // partition p of one lives in partition p of the other.
    for t in [&topics.by_lead, &topics.changelog] {
        let (k, t2) = (kafka.clone(), t.clone());
        let n = tokio::task::spawn_blocking(move || partition_count(&k, &t2)).await??;
        anyhow::ensure!(
            n == partitions,
            "topic {t} has {n} partitions but the scorer runs with {partitions}; they must match (set --partitions)"
        );
    }

    metrics::register();
    let ready = Ready::default();
    let addr = ops::serve(cfg.listen, ready.clone())
        .await
        .with_context(|| format!("binding the scorer's operations endpoint to {}", cfg.listen))?;

    let identity = identity_log::IdentityLog::start(&kafka, &topics.identity)?;
    let model = Arc::new(RwLock::new(None));
    if let Some(path) = &cfg.model {
        load_model(path, &model)?;
        tokio::spawn(watch_model(path.clone(), Arc::clone(&model)));
    }

    let producer: FutureProducer = scorer_producer_config(&cfg, &kafka).create()?;
    let tallied = leadstream_common::kafka::tally_producer(&scorer_producer_config(&cfg, &kafka))?;

    let batching = Batching {
        max: cfg.batch_max,
        max_bytes: cfg.batch_max_bytes,
        wait_ms: cfg.batch_ms,
        close_when_drained: !cfg.batch_fill,
    };
    // Each thread: a stitcher and a score loop on consumers of their own
    // (members of the two groups), with its own processor. The identity
    // graph, producer and model are shared.
    let mut stitchers = Vec::new();
    let mut scorers = Vec::new();
    for thread in 0..cfg.threads {
        let stitch_consumer: StreamConsumer<RebalanceLog> =
            consumer_config(&cfg, &stitch_group(&cfg))?.create_with_context(RebalanceLog {
                stage: format!("stitch-{thread}"),
            })?;
        stitch_consumer.subscribe(&[&topics.events])?;
        stitchers.push(StageDriver::new(
            format!("stitch-{thread}"),
            stitch_consumer,
            stitch::Stitcher {
                producer: producer.clone(),
                decoder: Arc::clone(&decoder),
                identity: identity.clone(),
                topics: topics.clone(),
                in_flight: None,
                records: crate::routing::BatchRecords::new(topics.partitions),
                routes: Vec::new(),
            },
            batching,
            LagGauge::new(metrics::CONSUMER_LAG, ("stage", "stitch")),
        ));
        let score_consumer: StreamConsumer<score_loop::RebalanceTracker> =
            consumer_config(&cfg, &cfg.group)?
                .create_with_context(score_loop::RebalanceTracker::default())?;
        score_consumer.subscribe(&[&topics.by_lead])?;
        scorers.push(StageDriver::new(
            format!("score-{thread}"),
            score_consumer,
            score_loop::ScoreLoop {
                producer: producer.clone(),
                out: leadstream_common::kafka::Tallied::new(tallied.clone()),
                decoder: Arc::clone(&decoder),
                encoder: Arc::clone(&encoder),
                identity: identity.clone(),
                processor: Processor::new(
                    scoring.clone(),
                    cfg.grace_minutes as i64 * 60_000,
                    cfg.score_bots,
                )
                .with_anonymous_ttl(cfg.anonymous_ttl_ms())?,
                model: Arc::clone(&model),
                topics: topics.clone(),
                bootstrap: kafka.clone(),
                clock: Arc::clone(&clock),
                idle: Duration::from_millis(cfg.idle_ms),
                last_read: Default::default(),
                reported: Default::default(),
                commit_interval: Duration::from_millis(cfg.commit_interval_ms),
                uncommitted: Default::default(),
                routed: Vec::new(),
            },
            batching,
            LagGauge::new(metrics::CONSUMER_LAG, ("stage", "score")),
        ));
    }
    tracing::info!(%addr, kafka = %kafka, events = %topics.events, scores = %topics.scores, partitions, threads = cfg.threads, "scorer running");
    ready.set(true);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let reporter = pipeline_metrics::spawn(
        &kafka,
        cfg.pipeline_metrics.enabled(),
        "scorer",
        addr,
        stop_rx.clone(),
    );
    let mut tasks = Vec::new();
    for d in stitchers {
        let stop = stop_rx.clone();
        tasks.push((
            "stitching",
            tokio::spawn(async move { drop(d.run_until(stop).await) }),
        ));
    }
    for d in scorers {
        let stop = stop_rx.clone();
        tasks.push((
            "scoring",
            tokio::spawn(async move { drop(d.run_until(stop).await) }),
        ));
    }
    for (what, task) in tasks {
        task.await.with_context(|| format!("{what} task"))?;
    }
    identity.stop().await;
    pipeline_metrics::finish(reporter).await;
    ready.set(false);
    tracing::info!("scorer stopped");
    Ok(())
}

/// The settings of one of the scorer's consumer groups: the shared ones
/// (session timeout included) and the scorer's fetch wait.
pub fn consumer_config(cfg: &ScorerConfig, group: &str) -> anyhow::Result<rdkafka::ClientConfig> {
    let mut c = cfg.shared.kafka.consumer_config(group)?;
    // A LEADSTREAM_RDKAFKA_* override still wins, as everywhere.
    if std::env::var("LEADSTREAM_RDKAFKA_FETCH_WAIT_MAX_MS").is_err() {
        c.set("fetch.wait.max.ms", cfg.fetch_wait_ms.to_string());
    }
    Ok(c)
}

/// The settings of the scorer's producer (both stages' outputs, links and
/// the changelog).
pub fn scorer_producer_config(cfg: &ScorerConfig, kafka: &str) -> rdkafka::ClientConfig {
    let mut c = producer_config(kafka, 5);
    // Java clients' partitioner, so keyed scores land where any consumer expects.
    c.set("partitioner", "murmur2_random");
    c.set("batch.num.messages", cfg.kafka_batch_messages.to_string());
    c
}

/// The stitching stage's consumer group.
fn stitch_group(cfg: &ScorerConfig) -> String {
    format!("{}-stitch", cfg.group)
}

fn load_model(path: &PathBuf, slot: &RwLock<Option<Arc<TrainedModel>>>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading model {}", path.display()))?;
    let model = TrainedModel::parse(&text)
        .map_err(|why| anyhow::anyhow!("model {} is refused: {why}", path.display()))?;
    tracing::info!(model = %path.display(), learner = model.learner(), "model loaded");
    *slot.write().expect("model lock") = Some(Arc::new(model));
    Ok(())
}

/// Reloads the model when its file changes; a bad file keeps the old model.
async fn watch_model(path: PathBuf, slot: Arc<RwLock<Option<Arc<TrainedModel>>>>) {
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen: Option<SystemTime> = modified(&path);
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = modified(&path);
        if now != seen {
            seen = now;
            if let Err(e) = load_model(&path, &slot) {
                tracing::error!(error = %format!("{e:#}"), "model reload failed; keeping the previous model");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--session-timeout-ms` and `--fetch-wait-ms` on the command line
    /// reach both of the scorer's consumer groups.
    #[test]
    fn the_session_timeout_reaches_the_consumers() {
        let cfg: ScorerConfig = leadstream_common::args::parse_defaults(&[
            "--kafka",
            "127.0.0.1:9",
            "--session-timeout-ms",
            "7000",
            "--fetch-wait-ms",
            "5",
        ]);
        for group in [cfg.group.clone(), stitch_group(&cfg)] {
            let consumer = consumer_config(&cfg, &group).unwrap();
            assert_eq!(consumer.get("session.timeout.ms"), Some("7000"), "{group}");
            assert_eq!(
                consumer.get("heartbeat.interval.ms"),
                Some("3000"),
                "{group}"
            );
            assert_eq!(consumer.get("group.id"), Some(group.as_str()));
            assert_eq!(consumer.get("fetch.wait.max.ms"), Some("5"), "{group}");
        }
    }
}
