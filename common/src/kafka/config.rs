//! Client settings. The settings that matter for "nothing lost, nothing
//! doubled" live here once.

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
    with_env_overrides(c)
}

/// Consumer settings for at-least-once processing: offsets are committed
/// explicitly by the caller after its output is durable.
pub fn consumer_config(bootstrap: &str, group_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // At low rates a fetch otherwise idles up to 500 ms per hop, and the
        // scorer has two hops; at high rates fetches fill long before this.
        .set("fetch.wait.max.ms", "50")
        // Once the prefetch queue is full (64 MB by default) librdkafka
        // otherwise postpones the next fetch by up to a second, and a
        // consumer reading a backlog stalls 100-360 ms every 64 MB.
        .set("fetch.queue.backoff.ms", "10")
        // A subscribed topic that another role has yet to create is found
        // within seconds rather than librdkafka's default 5 minutes.
        .set("topic.metadata.refresh.interval.ms", "10000");
    with_env_overrides(c)
}

/// An assign-only consumer that reads a whole partition and never commits
/// (the identity log, changelog restore). The group id is only a label.
pub fn reader_config(bootstrap: &str, label: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", label)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10");
    with_env_overrides(c)
}

/// Prefix of environment variables passed to librdkafka as properties:
/// `LEADSTREAM_RDKAFKA_SECURITY_PROTOCOL=SASL_SSL` sets
/// `security.protocol`. This is how TLS, SASL and any other client setting
/// reach every Kafka client of every role (secrets stay in the environment).
pub const RDKAFKA_ENV_PREFIX: &str = "LEADSTREAM_RDKAFKA_";

/// The librdkafka property an override variable names, or None.
pub fn rdkafka_property(var: &str) -> Option<String> {
    let name = var.strip_prefix(RDKAFKA_ENV_PREFIX)?;
    (!name.is_empty()).then(|| name.to_ascii_lowercase().replace('_', "."))
}

/// Applies `LEADSTREAM_RDKAFKA_*` properties and the librdkafka debug
/// contexts of `LEADSTREAM_KAFKA_DEBUG` (e.g. `fetch,protocol`), so they
/// win over the built-in settings.
fn with_env_overrides(mut c: ClientConfig) -> ClientConfig {
    for (var, value) in std::env::vars() {
        if let Some(property) = rdkafka_property(&var) {
            c.set(property, value);
        }
    }
    if let Ok(contexts) = std::env::var("LEADSTREAM_KAFKA_DEBUG") {
        c.set("debug", contexts);
    }
    c
}

/// Settings for the admin client (topic creation, metadata).
pub fn admin_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    with_env_overrides(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_variables_name_librdkafka_properties() {
        assert_eq!(
            rdkafka_property("LEADSTREAM_RDKAFKA_SECURITY_PROTOCOL").as_deref(),
            Some("security.protocol")
        );
        assert_eq!(
            rdkafka_property("LEADSTREAM_RDKAFKA_SSL_CA_LOCATION").as_deref(),
            Some("ssl.ca.location")
        );
        assert_eq!(rdkafka_property("LEADSTREAM_RDKAFKA_"), None);
        assert_eq!(rdkafka_property("LEADSTREAM_KAFKA_BROKERS"), None);
    }
}
