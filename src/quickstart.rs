//! `leadstream quickstart`: every role in one process on embedded defaults —
//! an in-memory Kafka-protocol broker (Tansu), the registry from schemas/,
//! ingest, scorer, sink and the journey simulator — with a live table of
//! the hottest leads. For trying leadstream; production runs each role on
//! its own against real Kafka and ClickHouse.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;
use leadstream_common::{
    args::SharedArgs,
    kafka::{TopicSpec, ensure_topics},
};
use leadstream_schemas::Plan;
use tokio::sync::watch;

use crate::simulate::{self, Progress};
use leadstream_scorer::clock::{Clock, ScaledClock};

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Unset --kafka: an embedded in-memory broker; unset --registry:
    /// schemas/ served over the Confluent API.
    #[command(flatten)]
    shared: SharedArgs,
    /// Use this ClickHouse (HTTP URL); otherwise a local clickhouse-server
    /// is started under --dir when installed, else rows go to export files.
    #[arg(long, env = "LEADSTREAM_CLICKHOUSE_URL")]
    clickhouse: Option<String>,
    /// Write JSONEachRow export files even if clickhouse-server is installed.
    #[arg(long)]
    no_clickhouse: bool,
    /// Working directory for the spool, ClickHouse data, exports and truth.
    #[arg(long, default_value = ".leadstream")]
    dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:9092")]
    broker_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:8081")]
    registry_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:8080")]
    ingest_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:8082")]
    scorer_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:8083")]
    sink_listen: SocketAddr,
    /// HTTP port of the local ClickHouse the quickstart starts.
    #[arg(long, default_value_t = 18130)]
    clickhouse_port: u16,
    /// Stop bringing in new people after this many (default: never).
    #[arg(long)]
    leads: Option<usize>,
    /// Events per second the simulator posts, steadily, until stopped.
    #[arg(long, default_value_t = 300.0)]
    rate: f64,
    /// Simulated days per real second: at 1, a lead that goes quiet turns
    /// dormant 90 seconds later, so stages visibly change during a run.
    /// Simulated time starts three years back and never passes real time.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Stop by itself after this many seconds (headless runs, CI).
    #[arg(long)]
    duration_secs: Option<u64>,
}

/// A clickhouse-server child with its data under the quickstart dir.
struct LocalClickHouse(std::process::Child);

impl Drop for LocalClickHouse {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn clickhouse_binary() -> Option<PathBuf> {
    ["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Replaces the text of the first `<tag>…</tag>` in `xml` (the server's
/// top-level setting; nested sections reuse some names, e.g. `path`), or
/// with `value = None` removes every occurrence.
fn set_tag(xml: &str, tag: &str, value: Option<&str>) -> String {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let Some(j) = rest[i..].find(&close) else {
            break;
        };
        out.push_str(&rest[..i]);
        rest = &rest[i + j + close.len()..];
        if let Some(v) = value {
            out.push_str(&open);
            out.push_str(v);
            out.push_str(&close);
            break;
        }
    }
    out.push_str(rest);
    out
}

async fn start_clickhouse(
    bin: &Path,
    dir: &Path,
    port: u16,
) -> anyhow::Result<(LocalClickHouse, String)> {
    let d = std::fs::canonicalize(dir)?.join("clickhouse");
    for sub in ["data", "tmp", "log", "user_files", "format_schemas"] {
        std::fs::create_dir_all(d.join(sub))?;
    }
    let config = std::fs::read_to_string("/etc/clickhouse-server/config.xml").context(
        "clickhouse-server is installed but /etc/clickhouse-server/config.xml is missing",
    )?;
    std::fs::copy("/etc/clickhouse-server/users.xml", d.join("users.xml"))?;
    let p = |s: &str| d.join(s).display().to_string();
    let mut xml = config;
    for (tag, value) in [
        ("path", format!("{}/", p("data"))),
        ("tmp_path", format!("{}/", p("tmp"))),
        ("user_files_path", format!("{}/", p("user_files"))),
        ("format_schema_path", format!("{}/", p("format_schemas"))),
        ("log", p("log/server.log")),
        ("errorlog", p("log/error.log")),
        ("http_port", port.to_string()),
        ("tcp_port", (port + 1).to_string()),
        ("interserver_http_port", (port + 2).to_string()),
        ("users_config", p("users.xml")),
    ] {
        xml = set_tag(&xml, tag, Some(&value));
    }
    // Loopback only, once: the packaged config may list several hosts.
    xml = set_tag(&xml, "listen_host", None)
        .replace("</yandex>", "<listen_host>127.0.0.1</listen_host></yandex>");
    std::fs::write(d.join("config.xml"), xml)?;
    let mut cmd = std::process::Command::new(bin);
    cmd.arg(format!("--config-file={}", p("config.xml")))
        .stdout(std::fs::File::create(d.join("log/stdout.log"))?)
        .stderr(std::process::Stdio::null());
    let child = LocalClickHouse(cmd.spawn().context("starting clickhouse-server")?);
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if leadstream_common::clickhouse::connect(&url, None)
            .await
            .is_ok()
        {
            return Ok((child, url));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "clickhouse-server did not answer on {url} within 10 s; see {}",
        p("log")
    )
}

/// The dev sources (write keys) the simulator posts with.
const DEV_SOURCES: &str = include_str!("../deploy/config/sources.toml");

/// How far back simulated time starts.
const SIM_START_DAYS: i64 = 3 * 365;

pub async fn run(args: QuickstartArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |rx: &watch::Receiver<bool>| {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = Vec::new();

    // Kafka: the embedded broker unless told otherwise.
    let (kafka, replication, broker_task) = match &args.shared.kafka.brokers {
        Some(k) => (k.clone(), -1, None),
        None => {
            let task = crate::broker::start(
                args.broker_listen,
                "memory://tansu/".parse()?,
                "leadstream-quickstart",
            )
            .await?;
            (args.broker_listen.to_string(), 1, Some(task))
        }
    };
    let spec = |name: &str| TopicSpec {
        name: name.into(),
        partitions: 4,
        replication,
        compacted: false,
    };
    let mut ready = false;
    for _ in 0..50 {
        if ensure_topics(
            &kafka,
            &[
                spec(&args.shared.topics.events),
                spec(&args.shared.topics.dlq),
                // Created here, as the scorer would (compacted, keyed by
                // lead), so the sink and the live view that subscribe to
                // it before the scorer is up find it.
                TopicSpec {
                    compacted: true,
                    ..spec(&args.shared.topics.scores)
                },
            ],
        )
        .await
        .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(
        ready,
        "Kafka at {kafka} did not accept topic creation within 10 s (is {} free?)",
        args.broker_listen
    );

    // Registry: schemas/ served over the Confluent API, used by every role.
    let registry = match &args.shared.registry.url {
        Some(url) => url.clone(),
        None => {
            let listener = tokio::net::TcpListener::bind(args.registry_listen)
                .await
                .with_context(|| format!("binding the registry to {}", args.registry_listen))?;
            let plan = Arc::new(Plan::embedded()?);
            tasks.push(tokio::spawn({
                let stop = stopped(&stop_rx);
                async move {
                    if let Err(e) = leadstream_schemas::registry::serve(listener, plan, stop).await
                    {
                        tracing::error!(error = %e, "registry stopped");
                    }
                }
            }));
            format!("http://{}", args.registry_listen)
        }
    };

    // ClickHouse: given, local, or export files.
    let mut local_ch = None;
    let (clickhouse, export_dir) = match (&args.clickhouse, args.no_clickhouse, clickhouse_binary())
    {
        (Some(url), _, _) => (Some(url.clone()), None),
        (None, false, Some(bin)) => {
            let (child, url) = start_clickhouse(&bin, &args.dir, args.clickhouse_port).await?;
            local_ch = Some(child);
            (Some(url), None)
        }
        _ => (None, Some(args.dir.join("export"))),
    };
    let database = "leadstream".to_owned();
    if let Some(url) = &clickhouse {
        leadstream_sink::migrate(&leadstream_sink::ClickHouseArgs {
            url: Some(url.clone()),
            database: database.clone(),
            user: None,
            password: None,
            cluster: None,
        })
        .await?;
    }

    // What every role is given: the broker and registry in use, and the
    // topics and session timeout asked for.
    let mut shared = args.shared.clone();
    shared.kafka.brokers = Some(kafka.clone());
    shared.registry.url = Some(registry.clone());

    // Ingest.
    let mut ingest =
        leadstream_ingest::IngestConfig::defaults(&kafka, "quickstart-pepper-not-a-secret");
    ingest.shared = shared.clone();
    ingest.spool_dir = args.dir.join("spool");
    ingest.listen = args.ingest_listen;
    if !ingest.sources.exists() {
        // Run from outside the repo: the dev write keys the simulator uses
        // are built in, written next to the quickstart's other files.
        let path = args.dir.join("sources.toml");
        std::fs::create_dir_all(&args.dir)?;
        std::fs::write(&path, DEV_SOURCES)
            .with_context(|| format!("writing {}", path.display()))?;
        ingest.sources = path;
    }
    let publisher = Arc::new(leadstream_ingest::publish::KafkaPublisher::new(&ingest)?);
    let state = leadstream_ingest::build_state(&ingest, publisher).await?;
    let listener = tokio::net::TcpListener::bind(args.ingest_listen)
        .await
        .with_context(|| format!("binding ingest to {}", args.ingest_listen))?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let sim_start_ms = now_ms - SIM_START_DAYS * 86_400_000;
    let model_path = args.dir.join("model.json");
    let trained = tokio::task::spawn_blocking({
        let (state, seed, path) = (Arc::clone(&state), args.seed, model_path.clone());
        move || crate::quickstart_model::train(&state, seed, sim_start_ms, &path)
    })
    .await
    .context("training task")?
    .context("training the model on simulated history")?;
    let ingest_task = tokio::spawn(leadstream_ingest::serve(state, listener, stopped(&stop_rx)));

    // Scorer and sink.
    let mut scorer = leadstream_scorer::runtime::ScorerConfig::defaults(&kafka);
    scorer.shared = shared.clone();
    scorer.model = Some(model_path.clone());
    scorer.listen = args.scorer_listen;
    scorer.replication_factor = replication;
    anyhow::ensure!(
        args.speed > 0.0 && args.speed.is_finite(),
        "--speed must be a positive number of simulated days per second"
    );
    let clock: Arc<dyn Clock> = Arc::new(ScaledClock::new(sim_start_ms, args.speed * 86_400.0));
    // Time runs `speed` days a second, so a second of reordering between
    // partitions spans that much event time: a week of it is the grace.
    scorer.grace_minutes = ((args.speed * 7.0 * 1440.0) as u64).max(60);
    // The anonymous TTL must exceed the grace, which fast time stretches.
    let grace_days = u32::try_from(scorer.grace_minutes / 1440).unwrap_or(u32::MAX - 1);
    scorer.anonymous_ttl_days = scorer.anonymous_ttl_days.max(grace_days + 1);
    let scorer_task = tokio::spawn(leadstream_scorer::runtime::run_with_clock(
        scorer,
        Arc::clone(&clock),
        stopped(&stop_rx),
    ));
    let mut sink = leadstream_sink::SinkConfig::defaults(&kafka);
    sink.shared = shared;
    sink.clickhouse.url = clickhouse.clone();
    sink.clickhouse.database = database.clone();
    sink.export_dir = export_dir.clone();
    sink.listen = args.sink_listen;
    let sink_task = tokio::spawn(leadstream_sink::run(sink, stopped(&stop_rx)));

    // The simulator feeds the real HTTP API, in simulated time.
    let live = Arc::new(simulate::Live {
        seed: args.seed,
        rate: args.rate,
        cap: args.leads,
        truth: Arc::default(),
    });
    let truth_path = args.dir.join("truth.jsonl");
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let sim_task = tokio::spawn({
        let (live, clock, url, stop) = (
            Arc::clone(&live),
            Arc::clone(&clock),
            format!("http://{}", args.ingest_listen),
            stop_rx.clone(),
        );
        async move { live.run(&url, clock, progress_tx, stop).await }
    });

    println!(
        "leadstream quickstart — everything in one process, Kafka in memory (for trying it out)"
    );
    println!(
        "  ingest   http://{}/v1/batch  (write key dev-web-key)",
        args.ingest_listen
    );
    println!("  registry {registry}/subjects");
    println!(
        "  metrics  http://{}/metrics  http://{}/metrics  http://{}/metrics",
        args.ingest_listen, args.scorer_listen, args.sink_listen
    );
    match (&clickhouse, &export_dir) {
        (Some(url), _) => println!(
            "  ClickHouse {url}  try: curl '{url}/?database={database}' --data-binary 'SELECT lead_id, score, grade, stage, reason_codes FROM call_list LIMIT 10'"
        ),
        (_, Some(dir)) => println!(
            "  no ClickHouse: rows go to {}/<table>.jsonl; load later with clickhouse-client --query 'INSERT INTO leadstream.events FORMAT JSONEachRow' < {}/events.jsonl",
            dir.display(),
            dir.display()
        ),
        _ => {}
    }
    println!(
        "  model    {}: gradient-boosted trees trained on {} earlier simulated people ({} events; ROC AUC {:.3} on their last quarter), blended with the rules",
        model_path.display(),
        trained.people,
        trained.events,
        trained.holdout_auc
    );
    if trained.rejected > 0 {
        println!(
            "           ({} simulated calls were rejected by ingest's mapping)",
            trained.rejected
        );
    }
    println!("  Ctrl-C stops everything cleanly.\n");

    let quit = Arc::new(tokio::sync::Notify::new());
    let view_task = tokio::spawn(crate::live::run(crate::live::LiveInputs {
        kafka: kafka.clone(),
        registry: registry.clone(),
        scores_topic: args.shared.topics.scores.clone(),
        truth: Arc::clone(&live.truth),
        progress: progress_rx.clone(),
        stop: stop_rx.clone(),
        quit: Arc::clone(&quit),
        urls: endpoints(
            &args,
            &registry,
            clickhouse.as_deref(),
            export_dir.as_deref(),
        ),
        terminal: draws_in_terminal(),
    }));
    let duration = async {
        match args.duration_secs {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = duration => {}
        _ = crate::shutdown_signal() => {}
        _ = quit.notified() => {}
    }
    println!("\nstopping: flushing ingest, committing scorer and sink…");
    let _ = stop_tx.send(true);
    match sim_task.await {
        Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "the simulator stopped early"),
        Err(e) => tracing::warn!(error = %e, "the simulator task failed"),
        Ok(Ok(())) => {}
    }
    ingest_task.await.context("ingest task")??;
    scorer_task.await.context("scorer task")??;
    sink_task.await.context("sink task")??;
    let latest = view_task.await.context("live view task")?.into_latest();
    for t in tasks {
        let _ = t.await;
    }
    let truth = live.truth.lock().expect("truth lock").clone();
    simulate::write_truth(&truth_path, &truth)?;
    // Judge the scores at the time they refer to: behind a busy pipeline
    // they trail the simulator's clock, and what happened in between is
    // neither in them nor fair to count against them.
    let at = latest
        .values()
        .filter_map(|s| s["updated_at"].as_i64())
        .max()
        .unwrap_or_else(|| progress_rx.borrow().sim_ms);
    let behind_days = (progress_rx.borrow().sim_ms - at) as f64 / 86_400_000.0;
    if behind_days > 3.0 {
        println!(
            "the scores trail the simulator by {behind_days:.0} simulated days (the pipeline could not keep up with --rate/--speed); checking them at their own time"
        );
    }
    println!("{}", simulate::check(&truth, &latest, at, true));
    println!(
        "truth of {} simulated people in {}",
        truth.len(),
        truth_path.display()
    );
    println!("scores seen: {} leads", latest.len());
    drop(local_ch);
    // Last: every role has closed its clients by now, so none of them
    // sees the broker go away.
    if let Some(b) = broker_task {
        tokio::task::block_in_place(|| drop(b));
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the live view redraws in place: stdout is a terminal.
pub fn draws_in_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout())
}

impl QuickstartArgs {
    /// Where logs go while the live view owns the terminal.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("quickstart.log")
    }
}

/// Every endpoint the quickstart serves, for the live view.
fn endpoints(
    args: &QuickstartArgs,
    registry: &str,
    clickhouse: Option<&str>,
    export_dir: Option<&Path>,
) -> Vec<(String, String)> {
    let mut urls = vec![
        (
            "ingest (Segment API)".to_owned(),
            format!("http://{}/v1/batch", args.ingest_listen),
        ),
        ("schema registry".to_owned(), format!("{registry}/subjects")),
        (
            "metrics".to_owned(),
            format!(
                "http://{}/metrics  http://{}/metrics  http://{}/metrics",
                args.ingest_listen, args.scorer_listen, args.sink_listen
            ),
        ),
    ];
    match (clickhouse, export_dir) {
        (Some(url), _) => urls.push(("ClickHouse".to_owned(), url.to_owned())),
        (None, Some(dir)) => {
            urls.push(("rows (JSONEachRow)".to_owned(), dir.display().to_string()))
        }
        (None, None) => {}
    }
    urls.push(("logs".to_owned(), args.log_file().display().to_string()));
    urls
}
