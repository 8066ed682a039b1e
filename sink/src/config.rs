//! `leadstream sink` configuration: every field a flag and an env var.

use std::{net::SocketAddr, path::PathBuf};

use clap::Args;
use leadstream_common::args::{SharedArgs, parse_defaults};

#[derive(Debug, Clone, Args)]
pub struct SinkConfig {
    /// Kafka, the registry and the topics every role shares.
    #[command(flatten)]
    pub shared: SharedArgs,
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
    /// A cluster of the servers' `remote_servers`: migrations create
    /// replicated tables on every shard behind `Distributed` tables, and
    /// inserts wait until every shard has their rows.
    #[arg(long = "cluster", env = "LEADSTREAM_CLICKHOUSE_CLUSTER")]
    pub cluster: Option<String>,
}

impl ClickHouseArgs {
    /// The cluster the migrations spread over, when one is named.
    pub fn cluster(&self) -> Option<crate::cluster::Cluster<'_>> {
        self.cluster.as_deref().map(|name| crate::cluster::Cluster {
            name,
            database: &self.database,
        })
    }
}

impl SinkConfig {
    /// Defaults for an embedded run (quickstart, tests): everything but the broker.
    pub fn defaults(kafka: &str) -> Self {
        parse_defaults(&["--kafka", kafka])
    }
}
