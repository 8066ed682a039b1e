//! Consuming in batches: collect, commit what was processed, rewind.

/// Reads up to `max` records or until they hold `max_bytes` of keys and
/// payloads (the record that crosses it included) from `consumer`, waiting
/// at most `wait_ms` in all. With `close_when_drained`, a batch that holds records also closes
/// as soon as nothing more is fetched already: at low load a record waits
/// for no window, at high load the queue never drains and batches fill to
/// `max`. An error ends the batch early; it is returned only when nothing
/// was read, so records already in hand are processed first.
pub async fn collect_batch<'a, C>(
    consumer: &'a rdkafka::consumer::StreamConsumer<C>,
    (max, max_bytes): (usize, usize),
    wait_ms: u64,
    close_when_drained: bool,
) -> rdkafka::error::KafkaResult<Vec<rdkafka::message::BorrowedMessage<'a>>>
where
    C: rdkafka::consumer::ConsumerContext + 'static,
{
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    let take = |batch: &mut Vec<_>, bytes: &mut usize, m: rdkafka::message::BorrowedMessage<'a>| {
        *bytes += m.key_len() + m.payload_len();
        batch.push(m);
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    while batch.len() < max && bytes < max_bytes {
        // Records librdkafka has already fetched are taken without arming
        // a timer per record (a backlog is read 20,000 at a time).
        if let Some(r) = ready_now(consumer.recv()) {
            match r {
                Ok(m) => {
                    take(&mut batch, &mut bytes, m);
                    continue;
                }
                Err(e) if batch.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        if close_when_drained && !batch.is_empty() {
            break;
        }
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => take(&mut batch, &mut bytes, m),
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
/// `block_in_place` for the broker's answer. Until it succeeds, nothing
/// more may be read: a later commit would skip what the failure left out.
pub fn rewind_to_committed<C>(
    consumer: &rdkafka::consumer::StreamConsumer<C>,
) -> rdkafka::error::KafkaResult<()>
where
    C: rdkafka::consumer::ConsumerContext + 'static,
{
    rewind_partitions_to_committed(consumer, |_, _| true).map(drop)
}

/// [`rewind_to_committed`] for the assigned partitions `which` picks;
/// returns those it moved.
pub fn rewind_partitions_to_committed<C>(
    consumer: &rdkafka::consumer::StreamConsumer<C>,
    which: impl Fn(&str, i32) -> bool,
) -> rdkafka::error::KafkaResult<Vec<i32>>
where
    C: rdkafka::consumer::ConsumerContext + 'static,
{
    use rdkafka::{Offset, TopicPartitionList, consumer::Consumer};
    let timeout = std::time::Duration::from_secs(10);
    tokio::task::block_in_place(|| {
        let mut picked = TopicPartitionList::new();
        for e in consumer.assignment()?.elements() {
            if which(e.topic(), e.partition()) {
                picked.add_partition(e.topic(), e.partition());
            }
        }
        if picked.count() == 0 {
            return Ok(Vec::new());
        }
        let mut tpl = consumer.committed_offsets(picked, timeout)?;
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
        let moved = tpl.elements().iter().map(|e| e.partition()).collect();
        consumer.seek_partitions(tpl, timeout)?;
        Ok(moved)
    })
}

/// Reads partition `partition` of `topic` from its start through a marker
/// record (`marker_key`, empty value) this appends first, calling `each` on
/// every record up to and including the marker. The end is the marker's
/// offset rather than the high watermark: everything acked before the
/// marker is before it in the log, on any broker (Tansu 0.6 reports the
/// base offset of the last batch + 1 as the high watermark, which hides
/// acked records). Used where a whole partition must be read before acting
/// on it: a changelog restore, an identity-log compaction.
pub async fn read_through_marker(
    producer: &rdkafka::producer::FutureProducer,
    bootstrap: &str,
    (topic, partition): (&str, i32),
    marker_key: &str,
    label: &str,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use rdkafka::{
        Message as _, Offset, TopicPartitionList,
        consumer::{Consumer as _, StreamConsumer},
    };
    use std::time::Duration;

    let marker = super::send(producer, topic, partition, marker_key, &[]).await;
    let end = super::delivered_offsets(vec![marker])
        .await
        .with_context(|| format!("appending a marker to {topic}[{partition}]"))?[0];
    let consumer: StreamConsumer = super::reader_config(bootstrap, label).create()?;
    // Metadata first: librdkafka postpones the offset lookup of a partition
    // whose leader it does not know yet by 500 ms, which every read by a
    // freshly created reader paid.
    tokio::task::block_in_place(|| consumer.fetch_metadata(Some(topic), Duration::from_secs(10)))
        .with_context(|| format!("reading the metadata of {topic}"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .with_context(|| {
                format!("reading {topic}[{partition}]: no record for 30 s before offset {end}")
            })??;
        each(&m)?;
        if m.offset() >= end {
            return Ok(());
        }
    }
}
