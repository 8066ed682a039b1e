//! `leadstream sink` configuration: every field a flag and an env var.

use std::{net::SocketAddr, path::PathBuf};

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct SinkConfig {
    /// Kafka bootstrap servers (required to run; `sink migrate` needs none).
    #[arg(long = "kafka", env = "LEADSTREAM_KAFKA_BROKERS")]
    pub kafka: Option<String>,
    /// Confluent-compatible registry URL; the plan built into the binary when unset.
    #[arg(long = "registry", env = "LEADSTREAM_REGISTRY_URL")]
    pub registry: Option<String>,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// Write JSONEachRow files here instead of ClickHouse (load them later
    /// with clickhouse-client); for trying leadstream without a server.
    #[arg(
        long,
        env = "LEADSTREAM_SINK_EXPORT_DIR",
        conflicts_with = "clickhouse_url"
    )]
    pub export_dir: Option<PathBuf>,
    #[arg(
        long,
        env = "LEADSTREAM_EVENTS_TOPIC",
        default_value = "leadstream.events"
    )]
    pub events_topic: String,
    #[arg(
        long,
        env = "LEADSTREAM_SCORES_TOPIC",
        default_value = "leadstream.lead_scores"
    )]
    pub scores_topic: String,
    #[arg(
        long,
        env = "LEADSTREAM_DLQ_TOPIC",
        default_value = "leadstream.events.dlq"
    )]
    pub dlq_topic: String,
    /// Per-minute metrics of every role (this one included), into
    /// `pipeline_metrics`.
    #[command(flatten)]
    pub pipeline_metrics: leadstream_common::pipeline_metrics::PipelineMetricsArgs,
    #[arg(long, env = "LEADSTREAM_SINK_GROUP", default_value = "leadstream-sink")]
    pub group: String,
    /// Rows per insert (all tables together); offsets commit after each.
    #[arg(long, env = "LEADSTREAM_SINK_BATCH_ROWS", default_value_t = 20_000)]
    pub batch_rows: usize,
    /// How long a batch may wait to fill.
    #[arg(long, env = "LEADSTREAM_SINK_BATCH_MS", default_value_t = 1_000)]
    pub batch_ms: u64,
    /// Longest wait between retries of a failed insert.
    #[arg(long, env = "LEADSTREAM_SINK_MAX_BACKOFF_MS", default_value_t = 10_000)]
    pub max_backoff_ms: u64,
    #[arg(
        long,
        env = "LEADSTREAM_KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 45_000
    )]
    pub session_timeout_ms: u64,
    /// Address of /metrics, /_liveness and /_readiness.
    #[arg(
        long = "listen",
        env = "LEADSTREAM_SINK_LISTEN",
        default_value = "127.0.0.1:8083"
    )]
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP URL.
    #[arg(
        long = "clickhouse",
        id = "clickhouse_url",
        env = "LEADSTREAM_CLICKHOUSE_URL"
    )]
    pub url: Option<String>,
    #[arg(
        long = "clickhouse-database",
        env = "LEADSTREAM_CLICKHOUSE_DATABASE",
        default_value = "leadstream"
    )]
    pub database: String,
    #[arg(long = "clickhouse-user", env = "LEADSTREAM_CLICKHOUSE_USER")]
    pub user: Option<String>,
    #[arg(
        long = "clickhouse-password",
        env = "LEADSTREAM_CLICKHOUSE_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
}

impl SinkConfig {
    /// Defaults for an embedded run (quickstart, tests): everything but the broker.
    pub fn defaults(kafka: &str) -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            cfg: SinkConfig,
        }
        Wrapper::parse_from(["sink", "--kafka", kafka]).cfg
    }
}
