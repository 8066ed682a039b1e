//! The identity log: `<prefix>.identity`, one partition, read whole by every
//! scorer instance into the same [`IdentityGraph`] in the same order. A
//! stitcher that links ids appends a [`Link`] and waits until its own
//! reader has applied it, so routing never runs ahead of the graph.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use prost::Message as _;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
};
use tokio::sync::watch;

use crate::{identity::IdentityGraph, proto::Link};

/// The graph and how far into the log it is (next offset to apply).
#[derive(Clone)]
pub struct IdentityLog {
    pub graph: Arc<Mutex<IdentityGraph>>,
    applied: watch::Receiver<u64>,
    /// Stops the reader when the last copy goes (the scorer stopped), so
    /// its consumer does not outlive the scorer and talk to a broker that
    /// is going away.
    _reader: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl IdentityLog {
    /// Starts reading `topic` from the beginning in a background task.
    pub fn start(bootstrap: &str, topic: &str) -> anyhow::Result<Self> {
        // Assigned, never committed: every instance reads the whole log.
        let consumer: StreamConsumer =
            leadstream_common::kafka::reader_config(bootstrap, &format!("{topic}.reader"))
                .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let graph = Arc::new(Mutex::new(IdentityGraph::default()));
        let (tx, rx) = watch::channel(0u64);
        let g = Arc::clone(&graph);
        let reader = tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(m) => {
                        let next = m.offset() as u64 + 1;
                        match m.payload().map(Link::decode) {
                            Some(Ok(link)) if !link.ids.is_empty() => {
                                g.lock().expect("graph lock").link(&link.ids);
                            }
                            other => tracing::error!(
                                offset = m.offset(),
                                ?other,
                                "unreadable identity link skipped"
                            ),
                        }
                        metrics::gauge!(super::metrics::IDENTITY_APPLIED).set(next as f64);
                        tx.send_replace(next);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "identity log read failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(Self {
            graph,
            applied: rx,
            _reader: Arc::new(AbortOnDrop(reader)),
        })
    }

    /// How far the graph has applied the log.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the graph has applied the log up to `offset` (exclusive).
    pub async fn wait_for(&self, offset: u64) {
        let mut rx = self.applied.clone();
        // The sender lives as long as the reader task, i.e. the process.
        let _ = rx.wait_for(|applied| *applied >= offset).await;
    }
}
