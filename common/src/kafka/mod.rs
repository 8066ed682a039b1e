//! Kafka plumbing shared by every role: client settings, topics, batched
//! consuming and committing, producing, lag, and the batch-stage driver.

pub mod admin;
pub mod config;
pub mod consume;
pub mod lag;
pub mod produce;
pub mod rebalance_log;
pub mod stage;
pub mod tally;

pub use admin::{TopicError, TopicSpec, ensure_topics, partition_count};
pub use config::{
    RDKAFKA_ENV_PREFIX, admin_config, consumer_config, producer_config, rdkafka_property,
    reader_config,
};
pub use consume::{
    collect_batch, commit_offsets, next_offsets, read_through_marker,
    rewind_partitions_to_committed, rewind_to_committed,
};
pub use lag::LagGauge;
pub use produce::{
    Delivery, DeliveryError, await_deliveries, delivered_offsets, partition_for, send,
    send_tombstone,
};
pub use rebalance_log::{RebalanceLog, log_rebalance};
pub use stage::{BatchStage, Batching, Offsets, StageDriver};
pub use tally::{Tallied, TallyProducer, tally_producer};
