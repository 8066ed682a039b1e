//! leadstream ingest: the Segment-compatible HTTP tracking API. Every event
//! is validated against the governed tracking plan, PII is hashed, and the
//! result is made durable (Kafka ack or fsync'd spool) before the client
//! hears 2xx.

pub mod batch;
pub mod config;
pub mod conn;
pub mod dedupe;
pub mod metrics;
pub mod pii;
pub mod pipeline;
pub mod plan_event;
pub mod publish;
pub mod segment;
pub mod server;
pub mod sources;
pub mod spool;
pub mod wire;

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use leadstream_common::pipeline_metrics;
use leadstream_schemas::{Encoder, Plan};
use tokio::net::TcpListener;

pub use config::IngestConfig;
use dedupe::Dedupe;
use pipeline::Pipeline;
use publish::{KafkaPublisher, Publisher};
use server::{AppState, Limits};
use sources::Sources;
use spool::Spool;

/// Builds the shared state from config, with the given publisher (Kafka in
/// production, a fake or a MockCluster-backed one in tests).
pub async fn build_state(
    cfg: &IngestConfig,
    publisher: Arc<dyn Publisher>,
) -> anyhow::Result<Arc<AppState>> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let plan = Plan::embedded()?;
    let resolver = cfg.shared.registry.resolver(&plan)?;
    let encoder = Encoder::build(&plan, resolver.as_ref())
        .await
        .context("looking up the tracking plan's schema ids in the registry")?;
    let sources = Sources::load(&cfg.sources)?;
    let spool = Spool::open(&cfg.spool_dir, cfg.spool_max_bytes)
        .with_context(|| format!("opening the spool at {}", cfg.spool_dir.display()))?;
    let limiters = AppState::limiters_for(&sources);
    metrics::register();
    Ok(Arc::new(AppState {
        pipeline: Pipeline {
            encoder,
            pii: pii::PiiRules::new(&plan, cfg.pii_pepper.as_bytes()),
            bot_agents: cfg
                .bot_user_agents
                .iter()
                .map(|b| b.trim().to_ascii_lowercase())
                .filter(|b| !b.is_empty())
                .collect(),
        },
        sources,
        publisher,
        spool: Arc::new(spool),
        dedupe: Dedupe::new(
            Duration::from_secs(cfg.dedupe_window_secs),
            usize::try_from(cfg.dedupe_capacity).unwrap_or(usize::MAX),
        ),
        limiters,
        limits: Limits {
            max_event_bytes: cfg.max_event_bytes,
            max_batch_bytes: cfg.max_batch_bytes,
            max_batch_events: cfg.max_batch_events,
            max_gzip_ratio: cfg.max_gzip_ratio,
            max_skew_ms: cfg.max_clock_skew_secs * 1000,
            spool_max_bytes: cfg.spool_max_bytes,
            body_timeout: Duration::from_millis(cfg.body_timeout_ms),
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
            conn: conn::ConnLimits {
                header_timeout: Duration::from_millis(cfg.header_timeout_ms),
                max_connections: cfg.max_connections,
            },
        },
        replay: tokio::sync::Notify::new(),
        prometheus: metrics::prometheus(),
        pipeline_metrics: cfg
            .pipeline_metrics
            .enabled()
            .zip(cfg.shared.kafka.brokers.clone())
            .map(|(topic, brokers)| (brokers, topic.to_owned(), cfg.listen)),
    }))
}

/// Runs `leadstream ingest` against Kafka until `shutdown` resolves.
pub async fn run(
    cfg: IngestConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let publisher = Arc::new(KafkaPublisher::new(&cfg).context("creating the Kafka producer")?);
    let state = build_state(&cfg, publisher).await?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding ingest to {}", cfg.listen))?;
    tracing::info!(listen = %listener.local_addr()?, kafka = %cfg.shared.kafka.brokers()?, spool = %cfg.spool_dir.display(), "ingest serving");
    serve(state, listener, shutdown).await
}

/// Serves the API and replays the spool until `shutdown`; then drains what
/// it can and flushes the producer.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reporter = state
        .pipeline_metrics
        .as_ref()
        .and_then(|(kafka, topic, listen)| {
            pipeline_metrics::spawn(kafka, Some(topic), "ingest", *listen, stop_rx.clone())
        });
    let replayer = tokio::spawn(replay_loop(Arc::clone(&state), stop_rx));
    conn::serve(
        listener,
        server::router(Arc::clone(&state)),
        state.limits.conn,
        shutdown,
    )
    .await;
    let _ = stop_tx.send(true);
    let mut progress = replayer.await.unwrap_or_default();
    // Drain what Kafka will take, bounded; what remains replays on next start.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(true) = drain_once(&state, &mut progress).await {}
    })
    .await;
    let publisher = Arc::clone(&state.publisher);
    tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(10))).await?;
    pipeline_metrics::finish(reporter).await;
    Ok(())
}

/// Progress through the segment being replayed: which records Kafka has
/// already acknowledged, so a retry after a partial failure re-sends only
/// the rest (a crash forgets this; then the whole segment is re-sent and
/// downstream dedupe by message id absorbs the repeats).
#[derive(Default)]
struct ReplayProgress {
    seq: Option<u64>,
    acked: Vec<bool>,
}

/// Replays one spool segment. Ok(true) when a segment was fully acknowledged.
async fn drain_once(state: &Arc<AppState>, progress: &mut ReplayProgress) -> anyhow::Result<bool> {
    let spool = Arc::clone(&state.spool);
    let Some(segment) = tokio::task::spawn_blocking(move || spool.oldest()).await?? else {
        return Ok(false);
    };
    if progress.seq != Some(segment.seq) {
        if segment.torn_tail {
            // A crash mid-append: the torn record was never acknowledged.
            ::metrics::counter!(metrics::SPOOL_TORN).increment(1);
        }
        *progress = ReplayProgress {
            seq: Some(segment.seq),
            acked: vec![false; segment.records.len()],
        };
    }
    let pending: Vec<usize> = (0..segment.records.len())
        .filter(|i| !progress.acked[*i])
        .collect();
    let to_send: Vec<pipeline::Record> = pending
        .iter()
        .map(|i| segment.records[*i].clone())
        .collect();
    let results = state.publisher.send_all(&to_send).await;
    let mut failed = 0;
    for (i, r) in pending.iter().zip(&results) {
        match r {
            Ok(()) => progress.acked[*i] = true,
            Err(_) => failed += 1,
        }
    }
    ::metrics::counter!(metrics::SPOOL_REPLAYED).increment((pending.len() - failed) as u64);
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} spooled records not acknowledged",
            segment.records.len()
        );
    }
    state.spool.remove(segment.seq)?;
    *progress = ReplayProgress::default();
    ::metrics::gauge!(metrics::SPOOL_BYTES).set(state.spool.used_bytes() as f64);
    Ok(true)
}

async fn replay_loop(
    state: Arc<AppState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> ReplayProgress {
    let mut backoff = Duration::from_millis(100);
    let mut progress = ReplayProgress::default();
    loop {
        if *stop.borrow() {
            return progress;
        }
        match drain_once(&state, &mut progress).await {
            Ok(true) => {
                backoff = Duration::from_millis(100);
                continue;
            }
            Ok(false) => {
                tokio::select! {
                    _ = state.replay.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return progress,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "spool replay failed; Kafka still unavailable?");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return progress,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
