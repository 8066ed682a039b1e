//! Producing: where a key goes, queueing and waiting for acks.

/// The partition a key lives on in topics a role partitions itself
/// (co-partitioned internal topics): FNV-1a, stable across processes.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let h = leadstream_schemas::hash::fnv1a32(key.bytes());
    (h % partitions.max(1) as u32) as i32
}

/// A record handed to the producer: its ack to come, or why the producer
/// refused it at once. Awaited by [`await_deliveries`] and
/// [`delivered_offsets`], where a refusal fails as a failed delivery does.
pub struct Delivery(Result<rdkafka::producer::DeliveryFuture, rdkafka::error::KafkaError>);

/// Queues one record; its [`Delivery`] resolves when Kafka acked it.
/// `partition` < 0 leaves the choice to the producer's partitioner. A full
/// queue is waited out, not an error: librdkafka drains it. Any other
/// refusal (a partition the topic lacks, a record over the size limit) is
/// the delivery's error, not a retry that would never end.
pub async fn send(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    value: &[u8],
) -> Delivery {
    let record = rdkafka::producer::FutureRecord::to(topic)
        .key(key)
        .payload(value);
    queue(producer, record, partition).await
}

/// Queues a tombstone (a null value) for `key`, as [`send`] queues a record:
/// a compacted topic then drops every record of `key`.
pub async fn send_tombstone(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
) -> Delivery {
    let record = rdkafka::producer::FutureRecord::<str, [u8]>::to(topic).key(key);
    queue(producer, record, partition).await
}

async fn queue(
    producer: &rdkafka::producer::FutureProducer,
    mut record: rdkafka::producer::FutureRecord<'_, str, [u8]>,
    partition: i32,
) -> Delivery {
    use rdkafka::{error::KafkaError, types::RDKafkaErrorCode};
    if partition >= 0 {
        record = record.partition(partition);
    }
    loop {
        match producer.send_result(record) {
            Ok(f) => return Delivery(Ok(f)),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                tracing::debug!("producer queue full");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                record = r;
            }
            Err((e, _)) => return Delivery(Err(e)),
        }
    }
}

/// A record Kafka did not take.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("Kafka did not accept a record: {0}")]
    Refused(rdkafka::error::KafkaError),
    #[error("the producer dropped a record before delivery")]
    Dropped,
}

/// Waits for every queued record's ack; the first failure is returned.
pub async fn await_deliveries(deliveries: Vec<Delivery>) -> Result<(), DeliveryError> {
    delivered_offsets(deliveries).await.map(drop)
}

/// [`await_deliveries`], returning the offset each record was written at.
pub async fn delivered_offsets(deliveries: Vec<Delivery>) -> Result<Vec<i64>, DeliveryError> {
    let mut offsets = Vec::with_capacity(deliveries.len());
    for Delivery(d) in deliveries {
        let d = d.map_err(DeliveryError::Refused)?;
        match d.await {
            Ok(Ok(delivery)) => offsets.push(delivery.offset),
            Ok(Err((e, _))) => return Err(DeliveryError::Refused(e)),
            Err(_) => return Err(DeliveryError::Dropped),
        }
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_the_producer_refuses_fails_its_delivery_instead_of_retrying() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let producer: rdkafka::producer::FutureProducer =
            super::super::producer_config(&cluster.bootstrap_servers(), 1)
                .create()
                .unwrap();
        let too_big = vec![0u8; 2 << 20]; // over librdkafka's 1 MB message.max.bytes
        for (what, partition, value) in [
            ("an oversized record", 0, too_big.as_slice()),
            ("a partition the topic lacks", 7, b"v".as_slice()),
        ] {
            let delivery = tokio::time::timeout(
                Duration::from_secs(10),
                send(&producer, "t", partition, "k", value),
            )
            .await
            .unwrap_or_else(|_| panic!("{what}: queueing must not retry forever"));
            let err =
                tokio::time::timeout(Duration::from_secs(30), await_deliveries(vec![delivery]))
                    .await
                    .unwrap_or_else(|_| panic!("{what}: the delivery must end"));
            assert!(
                matches!(err, Err(DeliveryError::Refused(_))),
                "{what}: {:?}",
                err.err()
            );
        }
        // A record the producer takes still lands.
        let ok = send(&producer, "t", 0, "k", b"v").await;
        tokio::time::timeout(Duration::from_secs(30), await_deliveries(vec![ok]))
            .await
            .expect("acks arrive")
            .unwrap();
    }
}
