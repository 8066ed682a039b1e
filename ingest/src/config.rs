//! `leadstream ingest` configuration: every field a flag and an env var.

use std::{net::SocketAddr, path::PathBuf};

use clap::Args;
use leadstream_common::args::{SharedArgs, parse_defaults};

#[derive(Debug, Clone, Args)]
pub struct IngestConfig {
    /// Address the HTTP API listens on.
    #[arg(
        long = "listen",
        env = "LEADSTREAM_INGEST_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Kafka, the registry and the topics every role shares.
    #[command(flatten)]
    pub shared: SharedArgs,
    /// Sources file (write keys, platforms, tenants, policies).
    #[arg(
        long,
        env = "LEADSTREAM_SOURCES",
        default_value = "deploy/config/sources.toml"
    )]
    pub sources: PathBuf,
    /// Secret pepper for HMAC-SHA256 of PII fields.
    #[arg(long, env = "LEADSTREAM_PII_PEPPER", hide_env_values = true)]
    pub pii_pepper: String,
    /// Directory of the durable spool.
    #[arg(
        long,
        env = "LEADSTREAM_SPOOL_DIR",
        default_value = ".leadstream/spool"
    )]
    pub spool_dir: PathBuf,
    /// Spool bound in bytes; beyond it requests get 503.
    #[arg(long, env = "LEADSTREAM_SPOOL_MAX_BYTES", default_value_t = 1 << 30)]
    pub spool_max_bytes: u64,
    /// How long a record may wait for Kafka's ack before it is spooled.
    #[arg(long, env = "LEADSTREAM_PRODUCE_TIMEOUT_MS", default_value_t = 5_000)]
    pub produce_timeout_ms: u64,
    /// The longest pause between two chunks of a request body; a client
    /// that stops sending mid-body is cut off.
    #[arg(long, env = "LEADSTREAM_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,
    /// A whole request (body, validation, Kafka acks or spool) within this,
    /// else 408: a client that trickles its body is cut off here.
    #[arg(long, env = "LEADSTREAM_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// A request's headers must arrive within this, else the connection is
    /// closed (a client that trickles its headers holds nothing for long).
    #[arg(long, env = "LEADSTREAM_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Open connections at most; one more is answered 503 and closed.
    #[arg(long, env = "LEADSTREAM_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// A producer that gets no ack for this long while the broker answers
    /// metadata is replaced by a fresh one (a producer can stay wedged after
    /// a broker stall), so the spool drains without a restart.
    #[arg(long, env = "LEADSTREAM_PRODUCER_STALL_MS", default_value_t = 10_000)]
    pub producer_stall_ms: u64,
    /// Producer linger: how long librdkafka waits to fill a batch. Higher
    /// means more throughput per CPU and a higher single-event latency floor.
    #[arg(long, env = "LEADSTREAM_KAFKA_LINGER_MS", default_value_t = 20)]
    pub kafka_linger_ms: u64,
    #[command(flatten)]
    pub pipeline_metrics: leadstream_common::pipeline_metrics::PipelineMetricsArgs,
    /// Largest single event, bytes of JSON.
    #[arg(long, env = "LEADSTREAM_MAX_EVENT_BYTES", default_value_t = 32 * 1024)]
    pub max_event_bytes: usize,
    /// Largest request body (after decompression), bytes.
    #[arg(long, env = "LEADSTREAM_MAX_BATCH_BYTES", default_value_t = 500 * 1024)]
    pub max_batch_bytes: usize,
    #[arg(long, env = "LEADSTREAM_MAX_BATCH_EVENTS", default_value_t = 2_500)]
    pub max_batch_events: usize,
    /// Largest gzip expansion ratio accepted.
    #[arg(long, env = "LEADSTREAM_MAX_GZIP_RATIO", default_value_t = 100)]
    pub max_gzip_ratio: usize,
    /// messageId dedupe window, seconds.
    #[arg(long, env = "LEADSTREAM_DEDUPE_WINDOW_SECS", default_value_t = 86_400)]
    pub dedupe_window_secs: u64,
    /// messageIds remembered at most (bounds memory).
    #[arg(long, env = "LEADSTREAM_DEDUPE_CAPACITY", default_value_t = 2_000_000)]
    pub dedupe_capacity: u64,
    /// Cap on the device clock correction, seconds.
    #[arg(long, env = "LEADSTREAM_MAX_CLOCK_SKEW_SECS", default_value_t = 7 * 86_400)]
    pub max_clock_skew_secs: i64,
    /// User-agent fragments of known bots (case-insensitive), comma-separated.
    #[arg(
        long,
        env = "LEADSTREAM_BOT_USER_AGENTS",
        value_delimiter = ',',
        default_value = "bot,spider,crawler,slurp,bingpreview,headlesschrome,phantomjs,facebookexternalhit,lighthouse,prerender"
    )]
    pub bot_user_agents: Vec<String>,
}

impl IngestConfig {
    /// Rejects wiring that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        self.shared.kafka.brokers().map_err(|e| e.to_string())?;
        if self.pii_pepper.len() < 16 {
            return Err(
                "--pii-pepper / LEADSTREAM_PII_PEPPER must be at least 16 characters".into(),
            );
        }
        if self.max_event_bytes > self.max_batch_bytes {
            return Err("--max-event-bytes must not exceed --max-batch-bytes".into());
        }
        if self.request_timeout_ms <= self.produce_timeout_ms + self.body_timeout_ms {
            return Err(
                "--request-timeout-ms must exceed --produce-timeout-ms plus --body-timeout-ms, or slow acks turn into 408s".into(),
            );
        }
        if self.produce_timeout_ms == 0 {
            return Err("--produce-timeout-ms must be positive".into());
        }
        if self.header_timeout_ms == 0 {
            return Err("--header-timeout-ms must be positive".into());
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be positive".into());
        }
        Ok(())
    }
}

impl IngestConfig {
    /// The defaults every flag documents, for embedding ingest in another
    /// process (the quickstart, tests). Environment variables still apply.
    pub fn defaults(kafka: &str, pii_pepper: &str) -> Self {
        parse_defaults(&["--kafka", kafka, "--pii-pepper", pii_pepper])
    }
}
