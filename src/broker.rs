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

/// A broker serving on a runtime and threads of its own. In one process
/// with the roles (the quickstart), a role may block its thread on the
/// broker (closing a consumer waits for the broker to answer its
/// LeaveGroup); on a shared runtime that starved the broker itself, and
/// every consumer still open timed out. Dropping it stops the broker.
pub struct RunningBroker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    ended: tokio::sync::oneshot::Receiver<anyhow::Result<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningBroker {
    /// Resolves when the broker stops on its own, with why.
    pub async fn ended(&mut self) -> anyhow::Result<()> {
        (&mut self.ended)
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the broker's thread ended")))
    }

    /// Stops serving and waits until the broker's runtime is gone (its
    /// connections closed), blocking for as long as that takes.
    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the broker on a runtime of its own; it serves until the returned
/// handle is dropped.
pub async fn start(
    listen: SocketAddr,
    storage: Url,
    cluster_id: &str,
) -> anyhow::Result<RunningBroker> {
    // Tansu's dependencies enable two rustls crypto providers; pick one
    // before anything builds a TLS config. Err means one is already set.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let url = Url::parse(&format!("tcp://{listen}")).context("broker listen address")?;
    let cluster_id = cluster_id.to_owned();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("dev-broker".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("dev-broker")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("the broker's runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut broker = match build(url, storage, &cluster_id).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let result = tokio::select! {
                    served = broker.serve(tokio::time::Instant::now()) => {
                        served.map_err(|e| anyhow::anyhow!("the broker stopped: {e}"))
                    }
                    _ = stop_rx => Ok(()),
                };
                let _ = ended_tx.send(result);
            });
            // Dropping the runtime ends every connection the broker serves.
        })
        .context("starting the broker's thread")?;
    ready_rx
        .await
        .map_err(|_| anyhow::anyhow!("the broker's thread ended while starting"))??;
    Ok(RunningBroker {
        stop: Some(stop_tx),
        ended,
        thread: Some(thread),
    })
}

type DevBroker = Broker<Controller<DevStorage<StorageContainer>>, DevStorage<StorageContainer>>;

async fn build(url: Url, storage: Url, cluster_id: &str) -> anyhow::Result<DevBroker> {
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
    Ok(Broker::new(
        NODE_ID,
        cluster_id,
        url.clone(),
        url,
        storage,
        groups,
        uuid::Uuid::new_v4(),
    ))
}

pub async fn run(args: BrokerArgs) -> anyhow::Result<ExitCode> {
    let mut broker = start(args.listen, args.storage.clone(), &args.cluster_id).await?;
    tracing::info!(listen = %args.listen, storage = %args.storage, "dev broker (Tansu) running; topics are not auto-created");
    tokio::select! {
        _ = crate::shutdown_signal() => {}
        ended = broker.ended() => {
            ended?;
            anyhow::bail!("the broker stopped on its own (is {} already in use?)", args.listen);
        }
    }
    tokio::task::block_in_place(|| drop(broker));
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
        drop(broker);
    }
}
