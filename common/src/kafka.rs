//! Kafka client settings shared by every role. The settings that matter for
//! "nothing lost, nothing doubled" live here once.

use rdkafka::ClientConfig;

/// Producer settings for durable, ordered, idempotent delivery. `linger_ms`
/// trades single-event latency for batching (fewer, larger produce requests).
pub fn producer_config(bootstrap: &str, linger_ms: u64) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.num.messages", "10000")
        .set("message.timeout.ms", "30000");
    with_env_overrides(c)
}

/// Consumer settings for at-least-once processing: offsets are committed
/// explicitly by the caller after its output is durable.
pub fn consumer_config(bootstrap: &str, group_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // At low rates a fetch otherwise idles up to 500 ms per hop, and the
        // scorer has two hops; at high rates fetches fill long before this.
        .set("fetch.wait.max.ms", "50")
        // Once the prefetch queue is full (64 MB by default) librdkafka
        // otherwise postpones the next fetch by up to a second, and a
        // consumer reading a backlog stalls 100-360 ms every 64 MB.
        .set("fetch.queue.backoff.ms", "10")
        // A subscribed topic that another role has yet to create is found
        // within seconds rather than librdkafka's default 5 minutes.
        .set("topic.metadata.refresh.interval.ms", "10000");
    with_env_overrides(c)
}

/// An assign-only consumer that reads a whole partition and never commits
/// (the identity log, changelog restore). The group id is only a label.
pub fn reader_config(bootstrap: &str, label: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", label)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10");
    with_env_overrides(c)
}

/// Prefix of environment variables passed to librdkafka as properties:
/// `LEADSTREAM_RDKAFKA_SECURITY_PROTOCOL=SASL_SSL` sets
/// `security.protocol`. This is how TLS, SASL and any other client setting
/// reach every Kafka client of every role (secrets stay in the environment).
pub const RDKAFKA_ENV_PREFIX: &str = "LEADSTREAM_RDKAFKA_";

/// The librdkafka property an override variable names, or None.
pub fn rdkafka_property(var: &str) -> Option<String> {
    let name = var.strip_prefix(RDKAFKA_ENV_PREFIX)?;
    (!name.is_empty()).then(|| name.to_ascii_lowercase().replace('_', "."))
}

/// Applies `LEADSTREAM_RDKAFKA_*` properties and the librdkafka debug
/// contexts of `LEADSTREAM_KAFKA_DEBUG` (e.g. `fetch,protocol`), so they
/// win over the built-in settings.
fn with_env_overrides(mut c: ClientConfig) -> ClientConfig {
    for (var, value) in std::env::vars() {
        if let Some(property) = rdkafka_property(&var) {
            c.set(property, value);
        }
    }
    if let Ok(contexts) = std::env::var("LEADSTREAM_KAFKA_DEBUG") {
        c.set("debug", contexts);
    }
    c
}

/// Settings for the admin client (topic creation, metadata).
pub fn admin_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    with_env_overrides(c)
}

/// A topic a role needs, created at start when missing.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// Replication factor; -1 leaves it to the broker's default.
    pub replication: i32,
    /// `cleanup.policy=compact`: the topic is a table (latest value per key).
    pub compacted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot reach Kafka at {bootstrap} to manage topics: {message}")]
    Unreachable { bootstrap: String, message: String },
    #[error(
        "topic {topic} does not exist on {bootstrap}; create it (or start the role that owns it) first"
    )]
    Missing { topic: String, bootstrap: String },
    #[error("creating topic {topic} failed: {message}")]
    Create { topic: String, message: String },
}

/// Creates the topics in `specs` that do not exist yet; existing topics are
/// left as they are.
pub async fn ensure_topics(bootstrap: &str, specs: &[TopicSpec]) -> Result<(), TopicError> {
    use rdkafka::{
        admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
        client::DefaultClientContext,
        error::RDKafkaErrorCode,
    };
    let unreachable = |message: String| TopicError::Unreachable {
        bootstrap: bootstrap.to_owned(),
        message,
    };
    let admin: AdminClient<DefaultClientContext> = admin_config(bootstrap)
        .create()
        .map_err(|e| unreachable(e.to_string()))?;
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(s.replication),
            );
            if s.compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(15)));
    let results = admin
        .create_topics(&topics, &opts)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(TopicError::Create {
                    topic,
                    message: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Partitions of `topic`, read from the broker's metadata.
pub fn partition_count(bootstrap: &str, topic: &str) -> Result<i32, TopicError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let unreachable = |message: String| TopicError::Unreachable {
        bootstrap: bootstrap.to_owned(),
        message,
    };
    let consumer: BaseConsumer = admin_config(bootstrap)
        .create()
        .map_err(|e| unreachable(e.to_string()))?;
    let md = consumer
        .fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
        .map_err(|e| unreachable(e.to_string()))?;
    match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().len() as i32)
        }
        _ => Err(TopicError::Missing {
            topic: topic.to_owned(),
            bootstrap: bootstrap.to_owned(),
        }),
    }
}

/// The partition a key lives on in topics a role partitions itself
/// (co-partitioned internal topics): FNV-1a, stable across processes.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let h = key.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (h % partitions.max(1) as u32) as i32
}

/// Reads up to `max` records from `consumer`, waiting at most `wait_ms` in
/// all. An error ends the batch early; it is returned only when nothing was
/// read, so records already in hand are processed first.
pub async fn collect_batch<'a, C>(
    consumer: &'a rdkafka::consumer::StreamConsumer<C>,
    max: usize,
    wait_ms: u64,
) -> rdkafka::error::KafkaResult<Vec<rdkafka::message::BorrowedMessage<'a>>>
where
    C: rdkafka::consumer::ConsumerContext + 'static,
{
    let mut batch = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    while batch.len() < max {
        // Records librdkafka has already fetched are taken without arming
        // a timer per record (a backlog is read 20,000 at a time).
        if let Some(r) = ready_now(consumer.recv()) {
            match r {
                Ok(m) => {
                    batch.push(m);
                    continue;
                }
                Err(e) if batch.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => batch.push(m),
            Ok(Err(e)) if batch.is_empty() => return Err(e),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    Ok(batch)
}

/// The future's output if it is ready at its first poll. `recv` is
/// cancel-safe: dropping it pending loses no record.
fn ready_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// The offset after the last record of each (topic, partition) in
/// `processed`: what to commit once they are processed.
pub fn next_offsets<'a>(
    processed: impl IntoIterator<Item = &'a rdkafka::message::BorrowedMessage<'a>>,
) -> Vec<(String, i32, i64)> {
    use rdkafka::Message;
    // One entry per partition (a commit list would keep duplicates): the last wins.
    let mut next = std::collections::BTreeMap::new();
    for m in processed {
        next.insert((m.topic(), m.partition()), m.offset() + 1);
    }
    next.into_iter()
        .map(|((t, p), o)| (t.to_owned(), p, o))
        .collect()
}

/// Commits, synchronously, the offset after the last record processed of
/// each (topic, partition) in `processed`. The wait happens in
/// `block_in_place` so the runtime's other tasks keep running meanwhile.
pub fn commit_processed<'a, C>(
    consumer: &rdkafka::consumer::StreamConsumer<C>,
    processed: impl IntoIterator<Item = &'a rdkafka::message::BorrowedMessage<'a>>,
) -> rdkafka::error::KafkaResult<()>
where
    C: rdkafka::consumer::ConsumerContext + 'static,
{
    commit_offsets(consumer, &next_offsets(processed))
}

/// Commits (topic, partition, next offset) entries synchronously, in
/// `block_in_place`.
pub fn commit_offsets<C>(
    consumer: &rdkafka::consumer::StreamConsumer<C>,
    offsets: &[(String, i32, i64)],
) -> rdkafka::error::KafkaResult<()>
where
    C: rdkafka::consumer::ConsumerContext + 'static,
{
    use rdkafka::{
        Offset, TopicPartitionList,
        consumer::{CommitMode, Consumer},
    };
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    tokio::task::block_in_place(|| consumer.commit(&tpl, CommitMode::Sync))
}

/// Moves `consumer` back to its committed offsets (the start, for a
/// partition with none) after a failed batch, so everything after the last
/// commit is read again rather than skipped by the next commit. Blocks in
/// `block_in_place` for the broker's answer.
pub fn rewind_to_committed<C>(consumer: &rdkafka::consumer::StreamConsumer<C>)
where
    C: rdkafka::consumer::ConsumerContext + 'static,
{
    use rdkafka::{Offset, consumer::Consumer};
    let timeout = std::time::Duration::from_secs(10);
    let result = tokio::task::block_in_place(|| {
        consumer.committed(timeout).and_then(|mut tpl| {
            let unset: Vec<(String, i32)> = tpl
                .elements()
                .iter()
                .filter(|e| !matches!(e.offset(), Offset::Offset(_)))
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            for (t, p) in unset {
                // Nothing committed yet: start where a new member would.
                tpl.set_partition_offset(&t, p, Offset::Beginning)?;
            }
            consumer.seek_partitions(tpl, timeout).map(|_| ())
        })
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "rewinding to committed offsets failed");
    }
}

/// Records the consumer's lag (records on its assigned partitions not yet
/// consumed) as a gauge, at most once per `every`: it asks the broker for
/// each partition's high watermark, so it is not for every batch.
pub struct LagGauge {
    name: &'static str,
    label: (&'static str, &'static str),
    every: std::time::Duration,
    next: std::sync::Mutex<std::time::Instant>,
}

impl LagGauge {
    pub fn new(name: &'static str, label: (&'static str, &'static str)) -> Self {
        Self {
            name,
            label,
            every: std::time::Duration::from_secs(10),
            next: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    pub fn maybe_record<C>(&self, consumer: &rdkafka::consumer::StreamConsumer<C>)
    where
        C: rdkafka::consumer::ConsumerContext + 'static,
    {
        {
            let mut next = self.next.lock().expect("lag gauge lock");
            let now = std::time::Instant::now();
            if now < *next {
                return;
            }
            *next = now + self.every;
        }
        if let Some(lag) = tokio::task::block_in_place(|| consumer_lag(consumer)) {
            metrics::gauge!(self.name, self.label.0 => self.label.1).set(lag as f64);
        }
    }
}

/// Sum over the assigned partitions of high watermark minus position; None
/// when the broker does not answer. Partitions not fetched from yet (no
/// position) are left out.
fn consumer_lag<C>(consumer: &rdkafka::consumer::StreamConsumer<C>) -> Option<i64>
where
    C: rdkafka::consumer::ConsumerContext + 'static,
{
    use rdkafka::{Offset, consumer::Consumer};
    let position = consumer.position().ok()?;
    let mut lag = 0;
    for e in position.elements() {
        let Offset::Offset(pos) = e.offset() else {
            continue;
        };
        let (_, high) = consumer
            .fetch_watermarks(e.topic(), e.partition(), std::time::Duration::from_secs(2))
            .ok()?;
        lag += (high - pos).max(0);
    }
    Some(lag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_variables_name_librdkafka_properties() {
        assert_eq!(
            rdkafka_property("LEADSTREAM_RDKAFKA_SECURITY_PROTOCOL").as_deref(),
            Some("security.protocol")
        );
        assert_eq!(
            rdkafka_property("LEADSTREAM_RDKAFKA_SSL_CA_LOCATION").as_deref(),
            Some("ssl.ca.location")
        );
        assert_eq!(rdkafka_property("LEADSTREAM_RDKAFKA_"), None);
        assert_eq!(rdkafka_property("LEADSTREAM_KAFKA_BROKERS"), None);
    }
}
