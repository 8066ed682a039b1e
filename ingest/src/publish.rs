//! The Kafka shell: sends records already routed by the pipeline.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    producer::{FutureProducer, FutureRecord, Producer},
};

use crate::{
    IngestConfig, metrics as m,
    pipeline::{Record, Topic},
};

#[derive(Debug, Clone, thiserror::Error)]
#[error("kafka did not acknowledge the record: {0}")]
pub struct PublishError(pub String);

/// Sends records, reporting per record whether Kafka acknowledged it.
/// Records are handed to the client in order, so per-partition order holds.
#[async_trait]
pub trait Publisher: Send + Sync {
    async fn send_all(&self, records: &[Record]) -> Vec<Result<(), PublishError>>;
    /// Whether the broker looks reachable (drives readiness).
    fn healthy(&self) -> bool;
    /// Waits for everything in flight to be acknowledged (shutdown).
    fn flush(&self, timeout: Duration);
}

pub struct KafkaPublisher {
    producer: FutureProducer,
    events_topic: String,
    dlq_topic: String,
    healthy: Arc<AtomicBool>,
}

impl KafkaPublisher {
    /// `produce_timeout_ms` bounds how long a record may wait for an ack
    /// before it is reported failed (and spooled): librdkafka's
    /// `message.timeout.ms`, so a failed record is definitively not in flight.
    pub fn new(cfg: &IngestConfig) -> Result<Self, rdkafka::error::KafkaError> {
        let bootstrap = cfg.kafka.as_str();
        let (events_topic, dlq_topic) = (cfg.events_topic.as_str(), cfg.dlq_topic.as_str());
        let mut config = leadstream_common::kafka::producer_config(bootstrap, cfg.kafka_linger_ms);
        config.set("message.timeout.ms", cfg.produce_timeout_ms.to_string());
        let producer: FutureProducer = config.create()?;
        let healthy = Arc::new(AtomicBool::new(false));
        let probe: BaseConsumer = leadstream_common::kafka::admin_config(bootstrap).create()?;
        let flag = Arc::clone(&healthy);
        // Readiness follows the broker: a metadata round trip every 2 s.
        std::thread::Builder::new()
            .name("kafka-health".into())
            .spawn(move || {
                loop {
                    let up = probe.fetch_metadata(None, Duration::from_secs(2)).is_ok();
                    flag.store(up, Ordering::Relaxed);
                    if Arc::strong_count(&flag) == 1 {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(2));
                }
            })
            .expect("spawning the health thread");
        Ok(Self {
            producer,
            events_topic: events_topic.to_owned(),
            dlq_topic: dlq_topic.to_owned(),
            healthy,
        })
    }

    fn topic(&self, t: Topic) -> &str {
        match t {
            Topic::Events => &self.events_topic,
            Topic::Dlq => &self.dlq_topic,
        }
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    async fn send_all(&self, records: &[Record]) -> Vec<Result<(), PublishError>> {
        let started = Instant::now();
        let mut pending = Vec::with_capacity(records.len());
        for r in records {
            let record = FutureRecord::to(self.topic(r.topic))
                .key(&r.key)
                .payload(&r.payload);
            pending.push(
                self.producer
                    .send_result(record)
                    .map_err(|(e, _)| PublishError(e.to_string())),
            );
        }
        let mut results = Vec::with_capacity(records.len());
        for p in pending {
            results.push(match p {
                Err(e) => Err(e),
                Ok(fut) => match fut.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(PublishError(e.to_string())),
                    Err(_) => Err(PublishError("producer dropped the delivery".into())),
                },
            });
        }
        metrics::histogram!(m::PRODUCE_SECONDS).record(started.elapsed().as_secs_f64());
        if results.iter().any(Result::is_ok) {
            self.healthy.store(true, Ordering::Relaxed);
        }
        results
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}
