//! Plumbing shared by the leadstream services (and the end-to-end tests):
//! how to configure Kafka clients and how to connect to ClickHouse.

pub mod args;
pub mod clickhouse;
pub mod kafka;
pub mod ops;
pub mod pipeline_metrics;
