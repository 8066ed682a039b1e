//! leadstream sink: events, lead scores and schema violations from Kafka
//! into ClickHouse (or JSONEachRow files), plus the migrations runner.

pub mod cluster;
pub mod config;
pub mod encode;
pub mod insert;
pub mod metrics;
pub mod migrate;
pub mod rejection;
pub mod rows;
pub mod store;
pub mod writer;

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use leadstream_common::{
    kafka::{Batching, LagGauge, StageDriver},
    ops::{self, Ready},
    pipeline_metrics,
};
use leadstream_schemas::{Decoder, Plan};
use rdkafka::consumer::{Consumer, StreamConsumer};

pub use config::{ClickHouseArgs, SinkConfig};
use store::Store;
use writer::Kind;

/// `leadstream sink [migrate]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SinkArgs {
    #[command(subcommand)]
    pub command: Option<SinkCommand>,
    #[command(flatten)]
    pub run: SinkConfig,
}

#[derive(Debug, Subcommand)]
pub enum SinkCommand {
    /// Apply the SQL migrations of deploy/clickhouse that are not applied yet.
    Migrate(ClickHouseArgs),
}

/// Connects and applies pending migrations; returns the store.
pub async fn migrate(args: &ClickHouseArgs) -> anyhow::Result<Store> {
    let url = args
        .url
        .as_deref()
        .context("no ClickHouse URL: pass --clickhouse or set LEADSTREAM_CLICKHOUSE_URL")?;
    let store = Store::clickhouse(args, url).await?;
    if let Store::ClickHouse(client) = &store {
        let applied = migrate::migrate(client, args.cluster()).await?;
        tracing::info!(applied = applied.len(), "migrations up to date");
    }
    Ok(store)
}

/// Connects to ClickHouse and checks that the database is migrated.
async fn open_clickhouse(cfg: &SinkConfig, url: &str) -> anyhow::Result<Store> {
    let store = Store::clickhouse(&cfg.clickhouse, url).await?;
    if let Store::ClickHouse(client) = &store {
        let latest = migrate::MIGRATIONS.last().map_or(0, |m| m.0);
        let applied: u32 = match client
            .query("SELECT max(version) FROM schema_migrations")
            .fetch_one()
            .await
        {
            Ok(v) => v,
            Err(e @ clickhouse::error::Error::Network(_)) => return Err(e.into()),
            Err(_) => 0,
        };
        anyhow::ensure!(
            applied >= latest,
            "ClickHouse database {} is at migration {applied}, this sink needs {latest}: run `leadstream sink migrate` first",
            cfg.clickhouse.database
        );
    }
    Ok(store)
}

/// Whether `e` says ClickHouse could not be reached (as opposed to refusing
/// what was asked). A `ConnectError::Unreachable` has the client's error
/// as its source, so the chain holds it too.
fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<clickhouse::error::Error>(),
            Some(clickhouse::error::Error::Network(_))
        )
    })
}

/// Runs the sink until `shutdown`; the current batch is finished (or left
/// uncommitted) first. A ClickHouse that cannot be reached yet is waited
/// for.
pub async fn run(
    cfg: SinkConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut shutdown = Box::pin(shutdown);
    // Configuration errors first, then the operations endpoint (live, not
    // ready), then ClickHouse, which may have to be waited for.
    anyhow::ensure!(
        cfg.clickhouse.url.is_some() || cfg.export_dir.is_some(),
        "nowhere to write: pass --clickhouse URL (or LEADSTREAM_CLICKHOUSE_URL), or --export-dir DIR for JSONEachRow files"
    );
    let kafka = cfg.shared.kafka.brokers()?.to_owned();
    let plan = Plan::embedded()?;
    let resolver = cfg.shared.registry.resolver(&plan)?;
    let decoder = Arc::new(Decoder::new(resolver));
    metrics::register();
    let ready = Ready::default();
    let addr = ops::serve(cfg.listen, ready.clone())
        .await
        .with_context(|| format!("binding the sink's operations endpoint to {}", cfg.listen))?;
    let store = match (&cfg.clickhouse.url, &cfg.export_dir) {
        (Some(url), _) => {
            let mut backoff = Duration::from_millis(100);
            let max_backoff = Duration::from_millis(cfg.max_backoff_ms.max(100));
            loop {
                match open_clickhouse(&cfg, url).await {
                    Ok(store) => break store,
                    // Starting or restarting (a sink started with it, or
                    // restarted meanwhile): wait for it rather than exit
                    // and depend on an orchestrator to start us again.
                    Err(e) if is_unreachable(&e) => {
                        tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "ClickHouse unreachable; waiting for it");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = shutdown.as_mut() => return Ok(()),
                        }
                        backoff = (backoff * 2).min(max_backoff);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        (None, Some(dir)) => Store::Export(dir.clone()),
        (None, None) => unreachable!("checked above"),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut loops = Vec::new();
    let mut streams = vec![
        (Kind::Events, cfg.shared.topics.events.as_str()),
        (Kind::Scores, cfg.shared.topics.scores.as_str()),
        (Kind::Violations, cfg.shared.topics.dlq.as_str()),
    ];
    if let Some(topic) = cfg.pipeline_metrics.enabled() {
        streams.push((Kind::Metrics, topic));
    }
    let reporter = pipeline_metrics::spawn(
        &kafka,
        cfg.pipeline_metrics.enabled(),
        "sink",
        addr,
        stop_rx.clone(),
    );
    for (kind, topic) in streams {
        let consumer: StreamConsumer = cfg
            .shared
            .kafka
            .consumer_config(&format!("{}.{}", cfg.group, kind.label()))?
            .create()?;
        consumer.subscribe(&[topic])?;
        let writer = writer::Writer::new(
            kind,
            Arc::clone(&decoder),
            store.clone(),
            &cfg,
            stop_rx.clone(),
        );
        let driver = StageDriver::new(
            format!("sink.{}", kind.label()),
            consumer,
            writer,
            // The window, not the queue, closes a batch: ClickHouse wants
            // fewer, larger inserts.
            Batching {
                max: cfg.batch_rows,
                max_bytes: usize::MAX,
                wait_ms: cfg.batch_ms,
                close_when_drained: false,
            },
            LagGauge::new(metrics::CONSUMER_LAG, ("stream", kind.label())),
        );
        loops.push(tokio::spawn(driver.run_until(stop_rx.clone())));
    }
    tracing::info!(%addr, %kafka, "sink running");
    ready.set(true);
    shutdown.await;
    let _ = stop_tx.send(true);
    for l in loops {
        l.await.context("sink loop")?;
    }
    pipeline_metrics::finish(reporter).await;
    ready.set(false);
    tracing::info!("sink stopped");
    Ok(())
}
