//! Arguments every role shares, declared once and flattened into each
//! role's config: where Kafka is, where the schema registry is, and the
//! names of the topics the roles hand events over on.

use std::sync::Arc;

use clap::Args;
use leadstream_schemas::{EmbeddedResolver, HttpResolver, Plan, SchemaResolver};
use rdkafka::ClientConfig;

use crate::kafka;

/// What every role shares, flattened into each role's config as one field.
#[derive(Debug, Clone, Args)]
pub struct SharedArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
}

impl SharedArgs {
    /// Kafka at `brokers`, everything else at its documented default.
    pub fn new(brokers: &str) -> Self {
        parse_defaults(&["--kafka", brokers])
    }
}

#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port,...). Librdkafka properties come
    /// from LEADSTREAM_RDKAFKA_* variables (e.g. LEADSTREAM_RDKAFKA_SECURITY_PROTOCOL).
    #[arg(long = "kafka", env = "LEADSTREAM_KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// How long a consumer group waits for a silent member (e.g. killed)
    /// before moving its partitions to the others.
    #[arg(
        long = "session-timeout-ms",
        env = "LEADSTREAM_KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 45_000
    )]
    pub session_timeout_ms: u64,
    /// How often a group member tells the coordinator it is alive, and so
    /// how soon it learns that the group rebalances (a member that joined
    /// or left). Lower shortens rebalances, e.g. when a second stream
    /// thread joins moments after the first; 3 s is librdkafka's default.
    /// A third of the session timeout when not below it.
    #[arg(
        long = "heartbeat-interval-ms",
        env = "LEADSTREAM_KAFKA_HEARTBEAT_INTERVAL_MS",
        default_value_t = 3_000
    )]
    pub heartbeat_interval_ms: u64,
}

/// No broker was named where one is needed.
#[derive(Debug, thiserror::Error)]
#[error("no Kafka brokers: pass --kafka HOST:PORT or set LEADSTREAM_KAFKA_BROKERS")]
pub struct NoBrokers;

impl KafkaArgs {
    /// The bootstrap servers, or why there are none.
    pub fn brokers(&self) -> Result<&str, NoBrokers> {
        match self.brokers.as_deref().map(str::trim) {
            Some(b) if !b.is_empty() => Ok(b),
            _ => Err(NoBrokers),
        }
    }

    /// [`kafka::consumer_config`] for `group` with this role's session
    /// timeout: the one place a consumer group gets its settings.
    pub fn consumer_config(&self, group: &str) -> Result<ClientConfig, NoBrokers> {
        let mut c = kafka::consumer_config(self.brokers()?, group);
        c.set("session.timeout.ms", self.session_timeout_ms.to_string());
        // A heartbeat no shorter than the session would expel live members.
        let heartbeat = if self.heartbeat_interval_ms < self.session_timeout_ms {
            self.heartbeat_interval_ms
        } else {
            (self.session_timeout_ms / 3).max(1)
        };
        // A LEADSTREAM_RDKAFKA_* override still wins, as everywhere.
        if std::env::var("LEADSTREAM_RDKAFKA_HEARTBEAT_INTERVAL_MS").is_err() {
            c.set("heartbeat.interval.ms", heartbeat.to_string());
        }
        Ok(c)
    }
}

#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Confluent-compatible schema registry URL; unset: the tracking plan
    /// built into the binary.
    #[arg(long = "registry", env = "LEADSTREAM_REGISTRY_URL")]
    pub url: Option<String>,
}

impl RegistryArgs {
    /// The registry at `url`, or the embedded plan's schemas when unset.
    pub fn resolver(&self, plan: &Plan) -> anyhow::Result<Arc<dyn SchemaResolver>> {
        Ok(match &self.url {
            Some(url) => Arc::new(HttpResolver::new(url)?),
            None => Arc::new(EmbeddedResolver::new(plan)?),
        })
    }
}

/// The topics the roles hand data over on.
#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    /// Valid events, Avro, written by ingest.
    #[arg(
        long = "events-topic",
        env = "LEADSTREAM_EVENTS_TOPIC",
        default_value = "leadstream.events"
    )]
    pub events: String,
    /// Scores (Avro `lead_score`, keyed by lead id), written by the scorer.
    #[arg(
        long = "scores-topic",
        env = "LEADSTREAM_SCORES_TOPIC",
        default_value = "leadstream.lead_scores"
    )]
    pub scores: String,
    /// Events that failed validation, with the reason, written by ingest.
    #[arg(
        long = "dlq-topic",
        env = "LEADSTREAM_DLQ_TOPIC",
        default_value = "leadstream.events.dlq"
    )]
    pub dlq: String,
}

/// `T` with every flag at its documented default (environment variables
/// still apply) plus `args`: a role's config for embedding the role in
/// another process (the quickstart, tests).
pub fn parse_defaults<T: Args>(args: &[&str]) -> T {
    use clap::Parser;
    #[derive(Parser)]
    struct Wrapper<T: Args> {
        #[command(flatten)]
        inner: T,
    }
    let argv = std::iter::once("leadstream").chain(args.iter().copied());
    Wrapper::<T>::parse_from(argv).inner
}
