//! `leadstream broker`: Tansu, a Kafka-compatible broker, embedded in
//! process. For tests and the quickstart only: production runs real Kafka.

use std::{net::SocketAddr, process::ExitCode};

use anyhow::Context as _;
use clap::Args;
use tansu_broker::{broker::Broker, coordinator::group::administrator::Controller};
use tansu_storage::StorageContainer;
use url::Url;

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
    let mut broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
        .node_id(1)
        .cluster_id(cluster_id)
        .incarnation_id(uuid::Uuid::new_v4())
        .advertised_listener(url.clone())
        .storage(storage)
        .listener(url)
        .build()
        .await
        .map_err(|e| anyhow::anyhow!("building the Tansu broker: {e}"))?;
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
