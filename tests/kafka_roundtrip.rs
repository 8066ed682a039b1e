//! Confluent-framed Avro events through the real broker: produce keyed by
//! identity, consume in a group, decode with the registry, commit offsets.

mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use leadstream_schemas::{EmbeddedResolver, Encoder, Plan, codec::Decoder, codec::to_json};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
};
use serde_json::json;

const LEADS: usize = 20;
const PER_LEAD: usize = 15;

fn event(lead: usize, seq: usize) -> serde_json::Value {
    json!({
        "message_id": format!("lead{lead}-{seq}"), "event": "page_viewed", "type": "page",
        "platform": "web", "source_id": "web-main", "tenant": "brand-a",
        "anonymous_id": format!("anon-{lead}"),
        "timestamp": 1_795_305_600_000_i64 + (seq as i64) * 1000, "received_at": 1_795_305_600_000_i64,
        "context": {"page_path": "/models/x5"},
        "properties": {"page_type": "model_detail", "model_id": "x5", "duration_ms": seq}
    })
}

#[tokio::test]
async fn framed_avro_round_trips_through_a_consumer_group_that_commits() {
    let bootstrap = common::kafka();
    let topic = common::TestTopic::create(&bootstrap, "roundtrip", 3).await;
    let plan = Plan::embedded().unwrap();
    let resolver = Arc::new(EmbeddedResolver::new(&plan).unwrap());
    let encoder = Encoder::build(&plan, resolver.as_ref()).await.unwrap();
    let decoder = Decoder::new(resolver);

    let producer: FutureProducer = leadstream_common::kafka::producer_config(&bootstrap, 20)
        .create()
        .unwrap();
    // Interleave leads so per-key order is actually exercised.
    for seq in 0..PER_LEAD {
        for lead in 0..LEADS {
            let encoded = encoder.encode(&event(lead, seq)).unwrap();
            let key = format!("anon-{lead}");
            producer
                .send(
                    FutureRecord::to(&topic.name)
                        .key(&key)
                        .payload(&encoded.bytes),
                    Duration::from_secs(10),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("produce failed: {e}"));
        }
    }

    let group = common::unique("roundtrip_group");
    let consumer: StreamConsumer = leadstream_common::kafka::consumer_config(&bootstrap, &group)
        .create()
        .unwrap();
    consumer.subscribe(&[&topic.name]).unwrap();
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let total = LEADS * PER_LEAD;
    for _ in 0..total {
        let msg = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("timed out waiting for messages")
            .expect("consume");
        let decoded = decoder.decode(msg.payload().unwrap()).await.unwrap();
        let value = to_json(&decoded.value);
        let anon = value["anonymous_id"].as_str().unwrap().to_owned();
        assert_eq!(msg.key(), Some(anon.as_bytes()), "keyed by identity");
        seen.entry(anon)
            .or_default()
            .push(value["properties"]["duration_ms"].as_u64().unwrap() as usize);
        consumer.store_offset_from_message(&msg).unwrap();
    }
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();

    assert_eq!(seen.len(), LEADS);
    for (lead, seqs) in &seen {
        assert_eq!(
            seqs,
            &(0..PER_LEAD).collect::<Vec<_>>(),
            "{lead}: per-key order kept"
        );
    }

    // The group's committed offsets equal the end of every partition.
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(&topic.name, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let mut committed_total = 0;
    for elem in committed.elements() {
        let (_, high) = consumer
            .fetch_watermarks(&topic.name, elem.partition(), Duration::from_secs(10))
            .unwrap();
        let Offset::Offset(off) = elem.offset() else {
            panic!(
                "partition {} has no committed offset: {:?}",
                elem.partition(),
                elem.offset()
            );
        };
        assert_eq!(off, high, "partition {}", elem.partition());
        committed_total += off;
    }
    assert_eq!(committed_total as usize, total);
}
