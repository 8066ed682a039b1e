//! The operations endpoints every consumer role serves: `/metrics`
//! (Prometheus), `/_liveness`, `/_readiness`.

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, http::StatusCode, routing::get};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Seconds; every histogram leadstream records is a latency.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide Prometheus recorder, installed once and shared by every
/// role in the process (the quickstart runs them all in one).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Buckets (rather than the exporter's default summaries) so
            // latencies aggregate across replicas with histogram_quantile.
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding
            // process); then our handle simply renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Readiness a role flips once it has restored its state and joined its group.
#[derive(Debug, Clone, Default)]
pub struct Ready(Arc<AtomicBool>);

impl Ready {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pub fn router(ready: Ready) -> Router {
    let handle = prometheus();
    Router::new()
        .route("/metrics", get(move || async move { handle.render() }))
        .route("/_liveness", get(|| async { "ok" }))
        .route(
            "/_readiness",
            get(move || async move {
                if ready.get() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
}

/// Binds `addr` and serves [`router`] until the task is dropped; returns the
/// bound address (useful with port 0).
pub async fn serve(addr: SocketAddr, ready: Ready) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(ready)).await {
            tracing::error!(error = %e, "operations endpoint stopped");
        }
    });
    Ok(local)
}
