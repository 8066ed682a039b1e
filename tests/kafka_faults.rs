//! In-process fault injection with `rdkafka::mocking::MockCluster`: the
//! shared producer settings keep delivery exactly-once in effect when the
//! broker answers with retriable errors.

use std::{collections::HashSet, time::Duration};

use rdkafka::{
    Message,
    consumer::{BaseConsumer, Consumer},
    mocking::MockCluster,
    producer::{FutureProducer, FutureRecord},
    types::{RDKafkaApiKey, RDKafkaRespErr},
};

#[tokio::test(flavor = "multi_thread")]
async fn idempotent_producer_survives_injected_produce_errors_without_duplicates() {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic("faults", 4, 3).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let producer: FutureProducer = leadstream_common::kafka::producer_config(&bootstrap, 20)
        .create()
        .unwrap();

    let total = 2_000;
    let mut sends = Vec::new();
    for i in 0..total {
        if i == total / 2 {
            cluster.request_errors(
                RDKafkaApiKey::Produce,
                &[
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                ],
            );
        }
        let payload = format!("m-{i}");
        let key = format!("lead-{}", i % 50);
        let producer = producer.clone();
        sends.push(tokio::spawn(async move {
            producer
                .send(
                    FutureRecord::to("faults").key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        }));
    }
    for s in sends {
        s.await
            .unwrap()
            .expect("every send is acknowledged despite the injected errors");
    }

    let consumer: BaseConsumer =
        leadstream_common::kafka::consumer_config(&bootstrap, "faults-check")
            .create()
            .unwrap();
    consumer.subscribe(&["faults"]).unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < total && std::time::Instant::now() < deadline {
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            seen.push(String::from_utf8(msg.unwrap().payload().unwrap().to_vec()).unwrap());
        }
    }
    // Anything beyond `total` would be a duplicate; give it a moment to show up.
    let settle = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < settle {
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            seen.push(String::from_utf8(msg.unwrap().payload().unwrap().to_vec()).unwrap());
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), total, "every message arrived");
    assert_eq!(seen.len(), total, "and none twice");
}
