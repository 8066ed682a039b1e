//! Logging each rebalance a group member goes through, so an operator (or a
//! failed test) can tell which member held which partitions when.

use rdkafka::{
    ClientContext, TopicPartitionList,
    consumer::{BaseConsumer, ConsumerContext, Rebalance},
};

/// A consumer context that logs every assignment and revocation at info,
/// and a failed rebalance at warn, naming its `stage`.
#[derive(Debug, Clone)]
pub struct RebalanceLog {
    pub stage: String,
}

impl ClientContext for RebalanceLog {}

impl ConsumerContext for RebalanceLog {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        log_rebalance(&self.stage, rebalance);
    }
}

/// Logs one rebalance of `stage`'s consumer (for contexts of their own).
pub fn log_rebalance(stage: &str, rebalance: &Rebalance<'_>) {
    match rebalance {
        Rebalance::Assign(tpl) => {
            tracing::info!(stage, partitions = ?partitions(tpl), "partitions assigned");
        }
        Rebalance::Revoke(tpl) => {
            tracing::info!(stage, partitions = ?partitions(tpl), "partitions revoked");
        }
        Rebalance::Error(e) => tracing::warn!(stage, error = %e, "rebalance failed"),
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}
