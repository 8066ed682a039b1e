//! Kafka client settings shared by every role. The settings that matter for
//! "nothing lost, nothing doubled" live here once.

use rdkafka::ClientConfig;

/// Producer settings for durable, ordered, idempotent delivery. `linger_ms`
/// trades single-event latency for batching (fewer, larger produce requests).
pub fn producer_config(bootstrap: &str, linger_ms: u64) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.num.messages", "10000")
        .set("message.timeout.ms", "30000");
    c
}

/// Consumer settings for at-least-once processing: offsets are committed
/// explicitly by the caller after its output is durable.
pub fn consumer_config(bootstrap: &str, group_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    c
}

/// Settings for the admin client (topic creation).
pub fn admin_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}
