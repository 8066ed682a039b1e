//! `leadstream broker`: Tansu, a Kafka-compatible broker, embedded in
//! process. For tests and the quickstart only: production runs real Kafka.

use std::{net::SocketAddr, process::ExitCode};

use anyhow::Context as _;
use clap::Args;
use tansu_broker::{broker::Broker, coordinator::group::administrator::Controller};
use tansu_storage::StorageContainer;
use url::Url;

mod groups;
mod resume;
mod storage;
use storage::DevStorage;

#[derive(Args)]
pub struct BrokerArgs {
    /// Address to listen on (keep it on 127.0.0.1: the dev broker has no auth).
    #[arg(
        long,
        env = "LEADSTREAM_BROKER_LISTEN",
        default_value = "127.0.0.1:9092"
    )]
    listen: SocketAddr,
    /// Tansu storage URL: memory://tansu/ keeps everything in RAM.
    #[arg(
        long,
        env = "LEADSTREAM_BROKER_STORAGE",
        default_value = "memory://tansu/"
    )]
    storage: Url,
    /// Cluster id reported to clients.
    #[arg(
        long,
        env = "LEADSTREAM_BROKER_CLUSTER_ID",
        default_value = "leadstream-dev"
    )]
    cluster_id: String,
}

const NODE_ID: i32 = 1;

/// Starts the broker; the returned task serves until aborted (Tansu has no
/// public shutdown, so aborting the task is how it stops).
pub async fn start(
    listen: SocketAddr,
    storage: Url,
    cluster_id: &str,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // Tansu's dependencies enable two rustls crypto providers; pick one
    // before anything builds a TLS config. Err means one is already set.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let url = Url::parse(&format!("tcp://{listen}")).context("broker listen address")?;
    let storage = StorageContainer::builder()
        .cluster_id(cluster_id)
        .node_id(NODE_ID)
        .advertised_listener(url.clone())
        .storage(storage)
        .build()
        .await
        .map_err(|e| anyhow::anyhow!("opening the broker's storage: {e}"))?;
    let storage = DevStorage::new(storage);
    let groups = Controller::with_storage(storage.clone())
        .map_err(|e| anyhow::anyhow!("starting the group coordinator: {e}"))?;
    let mut broker = Broker::new(
        NODE_ID,
        cluster_id,
        url.clone(),
        url,
        storage,
        groups,
        uuid::Uuid::new_v4(),
    );
    Ok(tokio::spawn(async move {
        if let Err(e) = broker.serve(tokio::time::Instant::now()).await {
            tracing::error!(error = %e, "broker stopped");
        }
    }))
}

pub async fn run(args: BrokerArgs) -> anyhow::Result<ExitCode> {
    let task = start(args.listen, args.storage.clone(), &args.cluster_id).await?;
    tracing::info!(listen = %args.listen, storage = %args.storage, "dev broker (Tansu) running; topics are not auto-created");
    tokio::select! {
        _ = crate::shutdown_signal() => {}
        res = &mut Box::pin(task) => {
            res.context("broker task")?;
            anyhow::bail!("the broker stopped on its own (is {} already in use?)", args.listen);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use leadstream_common::kafka::{TopicSpec, consumer_config, ensure_topics, producer_config};
    use rdkafka::{
        Message, Offset, TopicPartitionList,
        consumer::{Consumer, StreamConsumer},
        producer::{FutureProducer, FutureRecord, Producer},
    };

    async fn produce(producer: &FutureProducer, topic: &str, range: std::ops::Range<i64>) {
        let sends: Vec<_> = range
            .map(|i| {
                let payload = format!("m{i}");
                let record = FutureRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(&payload);
                producer.send_result(record).map_err(|(e, _)| e).unwrap()
            })
            .collect();
        for send in sends {
            send.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    }

    /// A consumer that resumes inside a batch (a committed offset after a
    /// rebalance, a rewind, a restart) gets the rest of that batch and
    /// everything after it, each record once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fetch_from_inside_a_batch_resumes_at_that_record() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let broker = super::start(listen, "memory://tansu/".parse().unwrap(), "resume-test")
            .await
            .unwrap();
        let bootstrap = listen.to_string();
        let topic = "resume";
        let spec = TopicSpec {
            name: topic.into(),
            partitions: 1,
            replication: 1,
            compacted: false,
        };
        ensure_topics(&bootstrap, &[spec]).await.unwrap();

        // A long linger puts each burst into one multi-record batch.
        let producer: FutureProducer = producer_config(&bootstrap, 200).create().unwrap();
        produce(&producer, topic, 0..100).await;
        produce(&producer, topic, 100..150).await;

        let consumer: StreamConsumer = consumer_config(&bootstrap, "resume-test").create().unwrap();
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, Offset::Offset(37))
            .unwrap();
        consumer.assign(&assignment).unwrap();
        let mut got = Vec::new();
        while got.len() < 113 {
            let message = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out after {} records: {got:?}", got.len()))
                .unwrap();
            let payload = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
            got.push((message.offset(), payload));
        }
        let expected: Vec<_> = (37..150).map(|i| (i, format!("m{i}"))).collect();
        assert_eq!(got, expected);
        broker.abort();
    }
}
