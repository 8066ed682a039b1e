//! Topics: created at start when missing, partitions read from metadata.

use super::config::admin_config;

/// A topic a role needs, created at start when missing.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// Replication factor; -1 leaves it to the broker's default.
    pub replication: i32,
    /// `cleanup.policy=compact`: the topic is a table (latest value per key).
    pub compacted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot reach Kafka at {bootstrap} to manage topics: {message}")]
    Unreachable { bootstrap: String, message: String },
    #[error(
        "topic {topic} does not exist on {bootstrap}; create it (or start the role that owns it) first"
    )]
    Missing { topic: String, bootstrap: String },
    #[error("creating topic {topic} failed: {message}")]
    Create { topic: String, message: String },
}

/// Creates the topics in `specs` that do not exist yet; existing topics are
/// left as they are.
pub async fn ensure_topics(bootstrap: &str, specs: &[TopicSpec]) -> Result<(), TopicError> {
    use rdkafka::{
        admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
        client::DefaultClientContext,
        error::RDKafkaErrorCode,
    };
    let unreachable = |message: String| TopicError::Unreachable {
        bootstrap: bootstrap.to_owned(),
        message,
    };
    let admin: AdminClient<DefaultClientContext> = admin_config(bootstrap)
        .create()
        .map_err(|e| unreachable(e.to_string()))?;
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(s.replication),
            );
            if s.compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(15)));
    let results = admin
        .create_topics(&topics, &opts)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(TopicError::Create {
                    topic,
                    message: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Partitions of `topic`, read from the broker's metadata.
pub fn partition_count(bootstrap: &str, topic: &str) -> Result<i32, TopicError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let unreachable = |message: String| TopicError::Unreachable {
        bootstrap: bootstrap.to_owned(),
        message,
    };
    let consumer: BaseConsumer = admin_config(bootstrap)
        .create()
        .map_err(|e| unreachable(e.to_string()))?;
    let md = consumer
        .fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
        .map_err(|e| unreachable(e.to_string()))?;
    match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().len() as i32)
        }
        _ => Err(TopicError::Missing {
            topic: topic.to_owned(),
            bootstrap: bootstrap.to_owned(),
        }),
    }
}
