//! Per-minute pipeline metrics for analysts: every role publishes, once a
//! minute, what its Prometheus counters did in that minute (and its gauges'
//! values) to a Kafka topic, and the sink writes them to ClickHouse's
//! `pipeline_metrics`. Prometheus stays the operators' view; this is the
//! same numbers kept beside the data they describe, queryable in SQL.
//!
//! The rows come from the process's own Prometheus exposition, so there is
//! one set of instrumentation, and a series appears here exactly when it
//! appears on `/metrics`.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::kafka::{TopicSpec, ensure_topics, producer_config};

/// Where a role publishes its per-minute metrics (and where the sink reads them).
#[derive(Debug, Clone, Args)]
pub struct PipelineMetricsArgs {
    /// Topic of per-minute metric rows for ClickHouse's `pipeline_metrics`;
    /// empty turns them off.
    #[arg(
        long = "pipeline-metrics-topic",
        env = "LEADSTREAM_PIPELINE_METRICS_TOPIC",
        default_value = "leadstream.pipeline_metrics"
    )]
    pub topic: String,
}

impl PipelineMetricsArgs {
    pub fn enabled(&self) -> Option<&str> {
        Some(self.topic.trim()).filter(|t| !t.is_empty())
    }
}

/// One row of `pipeline_metrics`: a series' change during a minute
/// (counters; histograms as `_count` and `_sum`) or its value at the
/// minute's end (gauges).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// Start of the minute, Unix seconds.
    pub minute: u32,
    pub service: String,
    pub instance: String,
    /// The Prometheus series, labels included, e.g.
    /// `ingest_events_rejected_total{reason="type_mismatch"}`.
    pub metric: String,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SampleKind {
    Counter,
    Gauge,
}

/// Samples of a text exposition worth a row: counters and gauges, and the
/// `_count`/`_sum` of histograms and summaries (their buckets and
/// quantiles do not add up across minutes, so they stay in Prometheus).
fn samples(text: &str) -> Vec<(String, SampleKind, f64)> {
    let mut kinds: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                kinds.insert(name, kind);
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        let kind = match kinds.get(name).copied() {
            Some("counter") => SampleKind::Counter,
            Some("gauge") => SampleKind::Gauge,
            Some(_) => continue,
            None => {
                let base = name
                    .strip_suffix("_count")
                    .or_else(|| name.strip_suffix("_sum"));
                match base.and_then(|b| kinds.get(b)) {
                    Some(&"histogram") | Some(&"summary") => SampleKind::Counter,
                    _ => continue,
                }
            }
        };
        out.push((series.to_owned(), kind, value));
    }
    out
}

/// Turns successive expositions into rows; pure, so it is tested without
/// a clock or a broker.
#[derive(Debug)]
pub struct Reporter {
    service: String,
    instance: String,
    /// Only series named `<service>_…` are this role's (the quickstart runs
    /// every role in one process, behind one exposition).
    prefix: String,
    last: HashMap<String, f64>,
}

impl Reporter {
    pub fn new(service: &str, instance: &str) -> Self {
        Self {
            service: service.to_owned(),
            instance: instance.to_owned(),
            prefix: format!("{service}_"),
            last: HashMap::new(),
        }
    }

    /// Rows for the minute starting at `minute`, given the exposition at its
    /// end. Counters report the change since the previous call (since 0 on
    /// the first call: a process's counters start at 0); a counter that went
    /// down was reset and reports its new value.
    pub fn rows(&mut self, exposition: &str, minute: u32) -> Vec<MetricRow> {
        let mut rows = Vec::new();
        for (series, kind, value) in samples(exposition) {
            if !series.starts_with(&self.prefix) {
                continue;
            }
            let value = match kind {
                SampleKind::Gauge => value,
                SampleKind::Counter => {
                    let before = self.last.insert(series.clone(), value).unwrap_or(0.0);
                    if value >= before {
                        value - before
                    } else {
                        value
                    }
                }
            };
            rows.push(MetricRow {
                minute,
                service: self.service.clone(),
                instance: self.instance.clone(),
                metric: series,
                value,
            });
        }
        rows
    }
}

/// This process's name among the role's replicas: the host name (a pod's
/// name on Kubernetes) and the port of its operations endpoint.
pub fn instance(listen: SocketAddr) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", listen.port())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Starts publishing `service`'s rows to `topic` (see [`publish`]); None
/// when the topic is unset (metrics turned off). `listen` is the role's
/// operations address, which names the instance.
pub fn spawn(
    kafka: &str,
    topic: Option<&str>,
    service: &str,
    listen: SocketAddr,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let topic = topic?;
    let reporter = Reporter::new(service, &instance(listen));
    Some(tokio::spawn(publish(
        kafka.to_owned(),
        topic.to_owned(),
        reporter,
        stop,
    )))
}

/// How long a minute's rows may wait for their acks: bounded, as at a stop
/// the broker may already be gone.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

/// After the stop: waits for the last partial minute's rows. The publisher
/// bounds its own wait; past a further margin it is cancelled, and this
/// returns only once its producer is gone, so a caller that stops the
/// broker next never has a client of this role reconnecting to it.
pub async fn finish(publisher: Option<tokio::task::JoinHandle<()>>) {
    if let Some(mut p) = publisher
        && tokio::time::timeout(PUBLISH_WAIT * 2, &mut p)
            .await
            .is_err()
    {
        p.abort();
        let _ = p.await;
    }
}

/// Publishes `reporter`'s rows at every minute boundary until `stop` turns
/// true, then once more for the partial minute. Best effort: metrics never
/// hold up the pipeline, so a failed publish is logged and the minute lost.
pub async fn publish(
    kafka: String,
    topic: String,
    mut reporter: Reporter,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    if let Err(e) = ensure_topics(
        &kafka,
        &[TopicSpec {
            name: topic.clone(),
            partitions: 1,
            replication: -1,
            compacted: false,
        }],
    )
    .await
    {
        tracing::warn!(error = %e, %topic, "pipeline metrics topic unavailable; publishing anyway");
    }
    let producer: FutureProducer = match producer_config(&kafka, 100).create() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "pipeline metrics off: no producer");
            return;
        }
    };
    let handle = crate::ops::prometheus();
    let mut minute = unix_now() / 60 * 60;
    loop {
        let next = minute + 60;
        let wait = Duration::from_secs(next.saturating_sub(unix_now()));
        let stopped = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let rows = reporter.rows(&handle.render(), minute as u32);
        // Queued together and awaited together: one linger for the minute,
        // not one per row (a role has dozens of series).
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let Ok(json) = serde_json::to_vec(row) else {
                continue;
            };
            let key = format!("{}|{}|{}", row.service, row.instance, row.metric);
            let record = FutureRecord::to(&topic).key(&key).payload(&json);
            match producer.send_result(record) {
                Ok(d) => deliveries.push(d),
                Err((e, _)) => {
                    tracing::warn!(error = %e, %topic, "a pipeline metrics row was not queued");
                    break;
                }
            }
        }
        let acked = tokio::time::timeout(PUBLISH_WAIT, async {
            let mut lost = 0usize;
            for d in deliveries {
                if !matches!(d.await, Ok(Ok(_))) {
                    lost += 1;
                }
            }
            lost
        });
        match acked.await {
            Ok(0) => {}
            Ok(lost) => tracing::warn!(lost, %topic, "pipeline metrics rows were not published"),
            Err(_) => {
                tracing::warn!(%topic, "pipeline metrics rows unacknowledged after {PUBLISH_WAIT:?}")
            }
        }
        if stopped {
            // The producer is dropped here, inside the task, so once
            // `finish` returns no client of this role talks to the broker.
            return;
        }
        minute = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# TYPE ingest_events_accepted_total counter
ingest_events_accepted_total 120
# TYPE ingest_events_rejected_total counter
ingest_events_rejected_total{reason=\"type_mismatch\"} 3
# TYPE ingest_spool_bytes gauge
ingest_spool_bytes 4096
# TYPE ingest_produce_seconds histogram
ingest_produce_seconds_bucket{le=\"0.005\"} 100
ingest_produce_seconds_bucket{le=\"+Inf\"} 120
ingest_produce_seconds_sum 0.6
ingest_produce_seconds_count 120
# TYPE scorer_records_total counter
scorer_records_total 99
";

    #[test]
    fn counters_report_the_minutes_change_gauges_their_value() {
        let mut r = Reporter::new("ingest", "host:8080");
        let first = r.rows(EXPOSITION, 60);
        let get = |rows: &[MetricRow], m: &str| {
            rows.iter()
                .find(|r| r.metric == m)
                .unwrap_or_else(|| panic!("no {m} in {rows:?}"))
                .value
        };
        assert_eq!(get(&first, "ingest_events_accepted_total"), 120.0);
        assert_eq!(
            get(
                &first,
                "ingest_events_rejected_total{reason=\"type_mismatch\"}"
            ),
            3.0
        );
        assert_eq!(get(&first, "ingest_spool_bytes"), 4096.0);
        assert_eq!(get(&first, "ingest_produce_seconds_count"), 120.0);
        assert!(
            first.iter().all(|r| !r.metric.contains("_bucket")
                && !r.metric.starts_with("scorer_")
                && r.minute == 60
                && r.service == "ingest"),
            "{first:?}"
        );

        let later = EXPOSITION
            .replace("accepted_total 120", "accepted_total 200")
            .replace("spool_bytes 4096", "spool_bytes 0");
        let second = r.rows(&later, 120);
        assert_eq!(get(&second, "ingest_events_accepted_total"), 80.0);
        assert_eq!(
            get(
                &second,
                "ingest_events_rejected_total{reason=\"type_mismatch\"}"
            ),
            0.0
        );
        assert_eq!(get(&second, "ingest_spool_bytes"), 0.0);
    }

    #[test]
    fn a_counter_that_went_down_was_reset_and_reports_its_new_value() {
        let mut r = Reporter::new("ingest", "h:1");
        r.rows(EXPOSITION, 0);
        let rows = r.rows(
            &EXPOSITION.replace("accepted_total 120", "accepted_total 7"),
            60,
        );
        let accepted = rows
            .iter()
            .find(|r| r.metric == "ingest_events_accepted_total")
            .unwrap();
        assert_eq!(accepted.value, 7.0);
    }

    #[test]
    fn rows_round_trip_as_json() {
        let row = MetricRow {
            minute: 1_700_000_040,
            service: "sink".into(),
            instance: "pod-1:8083".into(),
            metric: "sink_consumer_lag{stream=\"events\"}".into(),
            value: 12.0,
        };
        let json = serde_json::to_string(&row).unwrap();
        assert_eq!(serde_json::from_str::<MetricRow>(&json).unwrap(), row);
    }
}
