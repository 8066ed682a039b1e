//! Producing: where a key goes, queueing and waiting for acks.

/// The partition a key lives on in topics a role partitions itself
/// (co-partitioned internal topics): FNV-1a, stable across processes.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let h = leadstream_schemas::hash::fnv1a32(key.bytes());
    (h % partitions.max(1) as u32) as i32
}

/// Queues one record; the returned future resolves when Kafka acked it.
/// `partition` < 0 leaves the choice to the producer's partitioner. A full
/// queue is waited out, not an error: librdkafka drains it.
pub async fn send(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    value: &[u8],
) -> rdkafka::producer::DeliveryFuture {
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
) -> rdkafka::producer::DeliveryFuture {
    let record = rdkafka::producer::FutureRecord::<str, [u8]>::to(topic).key(key);
    queue(producer, record, partition).await
}

async fn queue(
    producer: &rdkafka::producer::FutureProducer,
    mut record: rdkafka::producer::FutureRecord<'_, str, [u8]>,
    partition: i32,
) -> rdkafka::producer::DeliveryFuture {
    if partition >= 0 {
        record = record.partition(partition);
    }
    loop {
        match producer.send_result(record) {
            Ok(f) => return f,
            Err((e, r)) => {
                tracing::debug!(error = %e, "producer queue full");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                record = r;
            }
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
pub async fn await_deliveries(
    deliveries: Vec<rdkafka::producer::DeliveryFuture>,
) -> Result<(), DeliveryError> {
    delivered_offsets(deliveries).await.map(drop)
}

/// [`await_deliveries`], returning the offset each record was written at.
pub async fn delivered_offsets(
    deliveries: Vec<rdkafka::producer::DeliveryFuture>,
) -> Result<Vec<i64>, DeliveryError> {
    let mut offsets = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        match d.await {
            Ok(Ok(delivery)) => offsets.push(delivery.offset),
            Ok(Err((e, _))) => return Err(DeliveryError::Refused(e)),
            Err(_) => return Err(DeliveryError::Dropped),
        }
    }
    Ok(offsets)
}
