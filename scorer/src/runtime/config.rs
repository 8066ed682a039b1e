//! `leadstream scorer` configuration: every field a flag and an env var.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Subcommand};
use leadstream_common::args::{SharedArgs, parse_defaults};

/// `leadstream scorer [compact-identity]`.
#[derive(Debug, Args)]
pub struct ScorerArgs {
    #[command(subcommand)]
    pub command: Option<ScorerCommand>,
    #[command(flatten)]
    pub run: ScorerConfig,
}

#[derive(Debug, Subcommand)]
pub enum ScorerCommand {
    /// Compact the identity log once: write each lead as one record and
    /// tombstone the links it covers (run it daily, e.g. as a CronJob;
    /// scorers keep running meanwhile). Takes the scorer's flags.
    CompactIdentity(ScorerConfig),
}

#[derive(Debug, Clone, Args)]
pub struct ScorerConfig {
    /// Kafka, the registry and the topics every role shares.
    #[command(flatten)]
    pub shared: SharedArgs,
    /// Prefix of the scorer's own topics: `<prefix>.identity`,
    /// `<prefix>.by_lead`, `<prefix>.changelog`.
    #[arg(
        long,
        env = "LEADSTREAM_SCORER_TOPIC_PREFIX",
        default_value = "leadstream.scorer"
    )]
    pub topic_prefix: String,
    /// Consumer group; the stitching stage uses `<group>-stitch`.
    #[arg(
        long,
        env = "LEADSTREAM_SCORER_GROUP",
        default_value = "leadstream-scorer"
    )]
    pub group: String,
    /// Partitions of the by-lead, changelog and scores topics when the scorer
    /// creates them; default: as many as the events topic has.
    #[arg(long, env = "LEADSTREAM_SCORER_PARTITIONS")]
    pub partitions: Option<i32>,
    /// Replication factor of topics the scorer creates (-1: broker default).
    #[arg(long, env = "LEADSTREAM_REPLICATION_FACTOR", default_value_t = -1, allow_hyphen_values = true)]
    pub replication_factor: i32,
    /// Scoring rules (TOML); the shipped deploy/config/scoring.toml when unset.
    #[arg(long, env = "LEADSTREAM_SCORING_CONFIG")]
    pub scoring_config: Option<PathBuf>,
    /// Model file written by `leadstream train`; reloaded when it changes.
    #[arg(long, env = "LEADSTREAM_MODEL")]
    pub model: Option<PathBuf>,
    /// Events older than the partition's stream time minus this are counted
    /// as late and not applied.
    #[arg(long, env = "LEADSTREAM_GRACE_MINUTES", default_value_t = 360)]
    pub grace_minutes: u64,
    /// A partition that has read nothing for this long is idle: the wall
    /// clock (minus the grace) drives its schedule, so leads that stopped
    /// sending events still decay, go dormant and lose expired flags.
    #[arg(long, env = "LEADSTREAM_SCORER_IDLE_MS", default_value_t = 5_000)]
    pub idle_ms: u64,
    /// Anonymous leads (every event carried only an anonymous id that was
    /// never linked to another identifier) with no event for this many
    /// days are dropped from the scorer's state and changelog; their last
    /// score stays in ClickHouse, and a later event starts a new lead. The
    /// default keeps a device through its dormant year, so its return
    /// still counts as a reactivation. 0 keeps them forever. Must exceed
    /// the grace period.
    #[arg(long, env = "LEADSTREAM_ANONYMOUS_TTL_DAYS", default_value_t = 400)]
    pub anonymous_ttl_days: u32,
    /// Score events that ingest marked as bots (ignored by default).
    #[arg(long, env = "LEADSTREAM_SCORE_BOTS")]
    pub score_bots: bool,
    /// Most records per batch; offsets are committed once per batch. A
    /// backlog is read in batches this large (each pays two round trips to
    /// the broker: outputs, then the changelog); at low load a batch is
    /// whatever was fetched.
    #[arg(long, env = "LEADSTREAM_SCORER_BATCH", default_value_t = 10_000)]
    pub batch_max: usize,
    /// Most bytes of records per batch. A `by_lead` record carries up to
    /// 256 KiB of events for one partition, so the score loop's batches
    /// are bounded by this, not by `--batch-max`.
    #[arg(long, env = "LEADSTREAM_SCORER_BATCH_BYTES", default_value_t = 4 << 20)]
    pub batch_max_bytes: usize,
    /// The longest a batch waits for records. A batch closes as soon as the
    /// records already fetched are taken (a few milliseconds at low load,
    /// `--batch-max` records under a backlog) unless `--batch-fill`.
    #[arg(long, env = "LEADSTREAM_SCORER_BATCH_MS", default_value_t = 100)]
    pub batch_ms: u64,
    /// The longest a fetch waits at the broker for records. Kafka answers a
    /// fetch as soon as records arrive; a broker that answers only at this
    /// deadline (Tansu) adds it to every hop. Lower costs only idle fetch
    /// requests.
    #[arg(long, env = "LEADSTREAM_SCORER_FETCH_WAIT_MS", default_value_t = 10)]
    pub fetch_wait_ms: u64,
    /// Wait out `--batch-ms` to fill each batch: fewer commits and changelog
    /// writes at moderate load, for a higher score latency.
    #[arg(long, env = "LEADSTREAM_SCORER_BATCH_FILL")]
    pub batch_fill: bool,
    /// How often the score loop makes its work durable: awaits its
    /// outputs' acks, writes each lead changed since the last time to the
    /// changelog once, and commits the records applied (Kafka Streams'
    /// `commit.interval.ms`). Scores are sent as each event is applied,
    /// whatever this is. Longer: fewer changelog writes under load (a lead
    /// with many events in the interval is written once); a crash or
    /// rebalance re-applies (and re-sends the same scores for) at most this
    /// much. 0: after every batch.
    #[arg(
        long,
        env = "LEADSTREAM_SCORER_COMMIT_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub commit_interval_ms: u64,
    /// Stream threads. Each runs both stages on consumers of its own
    /// (as Kafka Streams' `num.stream.threads`), so the partitions of this
    /// instance are scored on that many cores. Threads beyond the partition
    /// count (over all instances) sit idle.
    #[arg(long, env = "LEADSTREAM_SCORER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// Most records per produce batch of the scorer's producer: larger
    /// batches, fewer produce requests.
    #[arg(
        long,
        env = "LEADSTREAM_KAFKA_BATCH_MESSAGES",
        default_value_t = 10_000
    )]
    pub kafka_batch_messages: u32,
    /// Address of /metrics, /_liveness and /_readiness.
    #[arg(
        long = "listen",
        env = "LEADSTREAM_SCORER_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub pipeline_metrics: leadstream_common::pipeline_metrics::PipelineMetricsArgs,
}

impl ScorerConfig {
    pub fn identity_topic(&self) -> String {
        format!("{}.identity", self.topic_prefix)
    }
    pub fn by_lead_topic(&self) -> String {
        format!("{}.by_lead", self.topic_prefix)
    }
    pub fn changelog_topic(&self) -> String {
        format!("{}.changelog", self.topic_prefix)
    }

    pub fn anonymous_ttl_ms(&self) -> Option<i64> {
        (self.anonymous_ttl_days > 0).then(|| i64::from(self.anonymous_ttl_days) * 86_400_000)
    }

    /// Defaults for an embedded run (quickstart, tests): everything but the broker.
    pub fn defaults(kafka: &str) -> Self {
        parse_defaults(&["--kafka", kafka])
    }
}
