//! A producer for stages that send many records and need to know only that
//! all of them landed (or the first that did not): the scorer's scores and
//! changelog, one or more records per event.
//!
//! `FutureProducer` allocates a channel per record and hands back a future
//! per record; at a few hundred thousand records per second, kept until the
//! next commit, those were a tenth of the scorer's CPU (the allocations, the
//! fresh pages under them, the wake-ups). Here each record carries a
//! reference to its sender's [`Tally`], and the delivery callback counts.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use rdkafka::{
    ClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    message::DeliveryResult,
    producer::{BaseRecord, ProducerContext, ThreadedProducer},
};

use super::DeliveryError;

/// Counts the delivery reports of one sender's records.
#[derive(Default)]
pub struct Tally {
    reported: AtomicU64,
    /// The count the waiter waits for (u64::MAX: nobody waits).
    awaited: AtomicU64,
    failed: Mutex<Option<KafkaError>>,
    wake: tokio::sync::Notify,
}

/// Routes each delivery report to the tally its record was sent with.
pub struct TallyContext;

impl ClientContext for TallyContext {}

impl ProducerContext for TallyContext {
    type DeliveryOpaque = Arc<Tally>;

    fn delivery(&self, result: &DeliveryResult<'_>, tally: Arc<Tally>) {
        if let Err((e, _)) = result {
            tally
                .failed
                .lock()
                .expect("tally lock")
                .get_or_insert_with(|| e.clone());
        }
        let reported = tally.reported.fetch_add(1, Ordering::AcqRel) + 1;
        if result.is_err() || reported >= tally.awaited.load(Ordering::Acquire) {
            tally.wake.notify_one();
        }
    }
}

/// A producer whose records are counted by [`Tally`] (it polls for
/// delivery reports on a thread of its own, as `FutureProducer` does).
pub type TallyProducer = ThreadedProducer<TallyContext>;

/// Creates a [`TallyProducer`] with `config`.
pub fn tally_producer(
    config: &rdkafka::ClientConfig,
) -> rdkafka::error::KafkaResult<TallyProducer> {
    config.create_with_context(TallyContext)
}

/// One sender's records: sends them and waits until every one sent so far
/// has been acknowledged.
pub struct Tallied {
    producer: TallyProducer,
    tally: Arc<Tally>,
    sent: u64,
}

impl Tallied {
    pub fn new(producer: TallyProducer) -> Self {
        Self {
            producer,
            tally: Arc::new(Tally {
                awaited: AtomicU64::new(u64::MAX),
                ..Tally::default()
            }),
            sent: 0,
        }
    }

    /// Queues one record (`value` None: a tombstone); `partition` < 0
    /// leaves the choice to the partitioner. A full queue is waited out;
    /// a record refused at once counts as a failed delivery.
    pub async fn send(&mut self, topic: &str, partition: i32, key: &str, value: Option<&[u8]>) {
        while !self.try_send(topic, partition, key, value) {
            tracing::debug!("producer queue full");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// [`Tallied::send`] without waiting: false when the producer's queue
    /// is full, and then nothing was queued or counted. The hot path calls
    /// this first, so no future is built for a record that goes at once.
    pub fn try_send(
        &mut self,
        topic: &str,
        partition: i32,
        key: &str,
        value: Option<&[u8]>,
    ) -> bool {
        let mut record = BaseRecord::with_opaque_to(topic, Arc::clone(&self.tally)).key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        if partition >= 0 {
            record = record.partition(partition);
        }
        match self.producer.send(record) {
            Ok(()) => {}
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => return false,
            Err((e, _)) => {
                // Reported here, as the delivery callback would.
                let tally = &self.tally;
                tally.failed.lock().expect("tally lock").get_or_insert(e);
                tally.reported.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.sent += 1;
        true
    }

    /// Records queued since this sender was made or last [`Tallied::forget`].
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Waits until every record sent so far is acknowledged; returns the
    /// first failure as soon as one is reported.
    pub async fn landed(&self) -> Result<(), DeliveryError> {
        let tally = &self.tally;
        tally.awaited.store(self.sent, Ordering::Release);
        loop {
            let woken = tally.wake.notified();
            if let Some(e) = tally.failed.lock().expect("tally lock").clone() {
                tally.awaited.store(u64::MAX, Ordering::Release);
                return Err(DeliveryError::Refused(e));
            }
            if tally.reported.load(Ordering::Acquire) >= self.sent {
                tally.awaited.store(u64::MAX, Ordering::Release);
                return Ok(());
            }
            woken.await;
        }
    }

    /// Starts over: records sent before (and their failures) no longer
    /// count. Their reports still arrive, on the old tally.
    pub fn forget(&mut self) {
        *self = Self::new(self.producer.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;

    fn producer(bootstrap: &str) -> TallyProducer {
        tally_producer(&super::super::producer_config(bootstrap, 1)).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_record_is_counted_once_acknowledged() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 2, 1).unwrap();
        let mut sender = Tallied::new(producer(&cluster.bootstrap_servers()));
        sender.landed().await.unwrap();
        for i in 0..5_000 {
            sender
                .send("t", i % 2, &format!("k{i}"), Some(b"v".as_slice()))
                .await;
        }
        sender.send("t", -1, "gone", None).await;
        assert_eq!(sender.sent(), 5_001);
        tokio::time::timeout(std::time::Duration::from_secs(30), sender.landed())
            .await
            .expect("acks arrive")
            .unwrap();
        assert_eq!(sender.tally.reported.load(Ordering::Acquire), 5_001);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_refused_by_try_send_and_waited_out_by_send() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        // Records wait a second in the queue, which holds four.
        let mut config = super::super::producer_config(&cluster.bootstrap_servers(), 1_000);
        config.set("queue.buffering.max.messages", "4");
        let mut sender = Tallied::new(tally_producer(&config).unwrap());
        let mut accepted = 0;
        while sender.try_send("t", 0, "k", Some(b"v".as_slice())) {
            accepted += 1;
            assert!(accepted <= 4, "the queue holds four records");
        }
        assert!(accepted >= 1);
        // A refused record is neither queued nor counted.
        assert_eq!(sender.sent(), accepted);
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            sender.send("t", 0, "k", Some(b"v".as_slice())),
        )
        .await
        .expect("the queue drains and the record goes");
        assert_eq!(sender.sent(), accepted + 1);
        tokio::time::timeout(std::time::Duration::from_secs(30), sender.landed())
            .await
            .expect("acks arrive")
            .unwrap();
        assert_eq!(sender.tally.reported.load(Ordering::Acquire), accepted + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_kafka_refuses_fails_the_wait() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let mut sender = Tallied::new(producer(&cluster.bootstrap_servers()));
        // Partition 7 does not exist: librdkafka reports the record failed.
        sender.send("t", 7, "k", Some(b"v".as_slice())).await;
        sender.send("t", 0, "k", Some(b"v".as_slice())).await;
        let err = tokio::time::timeout(std::time::Duration::from_secs(30), sender.landed())
            .await
            .expect("the failure is reported")
            .unwrap_err();
        assert!(matches!(err, DeliveryError::Refused(_)), "{err}");
        // Forgotten: what is sent next counts alone.
        sender.forget();
        sender.send("t", 0, "k", Some(b"v".as_slice())).await;
        sender.landed().await.unwrap();
    }
}
