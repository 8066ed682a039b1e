//! The Kafka shell: sends records already routed by the pipeline.

use std::{
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use rdkafka::{
    ClientConfig,
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
    config: ClientConfig,
    /// Swapped for a fresh one when it stalls (see [`StallWatch`]).
    producer: RwLock<Arc<FutureProducer>>,
    events_topic: String,
    dlq_topic: String,
    healthy: Arc<AtomicBool>,
    /// The broker answered the last metadata probe.
    broker_up: Arc<AtomicBool>,
    stall: Mutex<StallWatch>,
}

/// Decides when a producer is wedged: sends keep failing for `after`
/// while the broker answers metadata (so it is the client, not the
/// broker), or librdkafka reported a fatal error. Pure, so it is tested
/// without a broker.
#[derive(Debug)]
pub struct StallWatch {
    after: Duration,
    failing_since: Option<Instant>,
}

/// Why a producer is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    Stalled,
    Fatal,
}

impl StallWatch {
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            failing_since: None,
        }
    }

    /// Records one send's outcome at `now`; `Some` when the producer
    /// should be replaced (the watch then starts over).
    pub fn observe(
        &mut self,
        now: Instant,
        any_acked: bool,
        any_failed: bool,
        broker_up: bool,
        fatal: bool,
    ) -> Option<Replace> {
        if any_acked {
            self.failing_since = None;
            return None;
        }
        if !any_failed {
            return None;
        }
        let since = *self.failing_since.get_or_insert(now);
        let verdict = if fatal {
            Some(Replace::Fatal)
        } else if broker_up && now.duration_since(since) >= self.after {
            Some(Replace::Stalled)
        } else {
            None
        };
        if verdict.is_some() {
            self.failing_since = None;
        }
        verdict
    }
}

impl KafkaPublisher {
    /// `produce_timeout_ms` bounds how long a record may wait for an ack
    /// before it is reported failed (and spooled): librdkafka's
    /// `message.timeout.ms`. A record that timed out may still have been
    /// written (the ack, not the write, was lost), so a spooled record can
    /// reach Kafka twice; downstream dedupes by message id (the scorer's
    /// per-lead ids, the sink's ReplacingMergeTree on `message_id`).
    pub fn new(cfg: &IngestConfig) -> anyhow::Result<Self> {
        let bootstrap = cfg.shared.kafka.brokers()?;
        let (events_topic, dlq_topic) = (
            cfg.shared.topics.events.as_str(),
            cfg.shared.topics.dlq.as_str(),
        );
        let mut config = leadstream_common::kafka::producer_config(bootstrap, cfg.kafka_linger_ms);
        config.set("message.timeout.ms", cfg.produce_timeout_ms.to_string());
        let producer: FutureProducer = config.create()?;
        let healthy = Arc::new(AtomicBool::new(false));
        let broker_up = Arc::new(AtomicBool::new(false));
        let probe: BaseConsumer = leadstream_common::kafka::admin_config(bootstrap).create()?;
        let (flag, up_flag) = (Arc::clone(&healthy), Arc::clone(&broker_up));
        // Readiness follows the broker: a metadata round trip every 2 s.
        std::thread::Builder::new()
            .name("kafka-health".into())
            .spawn(move || {
                loop {
                    let up = probe.fetch_metadata(None, Duration::from_secs(2)).is_ok();
                    flag.store(up, Ordering::Relaxed);
                    up_flag.store(up, Ordering::Relaxed);
                    if Arc::strong_count(&flag) == 1 {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(2));
                }
            })
            .expect("spawning the health thread");
        Ok(Self {
            config,
            producer: RwLock::new(Arc::new(producer)),
            events_topic: events_topic.to_owned(),
            dlq_topic: dlq_topic.to_owned(),
            healthy,
            broker_up,
            stall: Mutex::new(StallWatch::new(Duration::from_millis(
                cfg.producer_stall_ms,
            ))),
        })
    }

    fn current(&self) -> Arc<FutureProducer> {
        Arc::clone(&self.producer.read().expect("producer lock"))
    }

    /// Puts a fresh producer in place of `old`. The old one is dropped on
    /// its own thread: dropping purges what it still holds, which fails
    /// those sends (their records are spooled), and may block.
    fn replace(&self, old: &Arc<FutureProducer>, why: Replace) {
        let fresh: FutureProducer = match self.config.create() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot create a replacement Kafka producer; keeping the old one");
                return;
            }
        };
        let mut slot = self.producer.write().expect("producer lock");
        if !Arc::ptr_eq(&slot, old) {
            return; // another send replaced it already
        }
        let stale = std::mem::replace(&mut *slot, Arc::new(fresh));
        drop(slot);
        let reason = match why {
            Replace::Stalled => "stalled",
            Replace::Fatal => "fatal",
        };
        tracing::warn!(
            reason,
            "Kafka producer replaced: it got no acks while the broker answered"
        );
        metrics::counter!(m::PRODUCER_REPLACED, "reason" => reason).increment(1);
        std::thread::spawn(move || drop(stale));
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
        let producer = self.current();
        let mut pending = Vec::with_capacity(records.len());
        for r in records {
            let record = FutureRecord::to(self.topic(r.topic))
                .key(&r.key)
                .payload(&r.payload);
            pending.push(
                producer
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
        let acked = results.iter().any(Result::is_ok);
        if acked {
            self.healthy.store(true, Ordering::Relaxed);
        }
        let verdict = self.stall.lock().expect("stall lock").observe(
            Instant::now(),
            acked,
            results.iter().any(Result::is_err),
            self.broker_up.load(Ordering::Relaxed),
            producer.client().fatal_error().is_some(),
        );
        if let Some(why) = verdict {
            self.replace(&producer, why);
        }
        results
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn flush(&self, timeout: Duration) {
        let _ = self.current().flush(timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_producer_is_replaced_only_when_it_fails_while_the_broker_answers() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut w = StallWatch::new(Duration::from_secs(10));
        assert_eq!(
            w.observe(s(0), false, true, true, false),
            None,
            "first failure"
        );
        assert_eq!(
            w.observe(s(5), false, true, true, false),
            None,
            "not long enough"
        );
        assert_eq!(
            w.observe(s(10), false, true, true, false),
            Some(Replace::Stalled)
        );
        assert_eq!(
            w.observe(s(11), false, true, true, false),
            None,
            "the watch starts over"
        );
        // The broker is down: a new producer would not help.
        let mut down = StallWatch::new(Duration::from_secs(10));
        for t in 0..60 {
            assert_eq!(down.observe(s(t), false, true, false, false), None);
        }
        // An ack in between resets it.
        let mut w = StallWatch::new(Duration::from_secs(10));
        w.observe(s(0), false, true, true, false);
        w.observe(s(8), true, true, true, false);
        assert_eq!(w.observe(s(12), false, true, true, false), None);
        // librdkafka's fatal error: at once.
        let mut w = StallWatch::new(Duration::from_secs(10));
        assert_eq!(
            w.observe(s(0), false, true, false, true),
            Some(Replace::Fatal)
        );
    }
}
