//! What the benches against real services share: they run only under
//! `cargo bench`, read their knobs from the environment, and say how to
//! start a missing service.
#![allow(dead_code)] // each bench uses a different subset

/// False when built and run as a test target by `cargo build/test
/// --all-targets`: only `cargo bench` (which passes `--bench`) runs them.
pub fn under_cargo_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Logs at `LEADSTREAM_LOG` (default warn).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEADSTREAM_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
}

/// A knob: `name` from the environment, else `default`.
pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// Kafka bootstrap servers: `LEADSTREAM_BENCH_KAFKA`, else the test suite's.
pub fn kafka() -> String {
    std::env::var("LEADSTREAM_BENCH_KAFKA")
        .or_else(|_| std::env::var("LEADSTREAM_TEST_KAFKA"))
        .expect("set LEADSTREAM_BENCH_KAFKA to a broker, e.g. one started by deploy/scripts/services.sh")
}

/// ClickHouse HTTP URL: `LEADSTREAM_BENCH_CLICKHOUSE`, else the test suite's.
pub fn clickhouse() -> String {
    std::env::var("LEADSTREAM_BENCH_CLICKHOUSE")
        .or_else(|_| std::env::var("LEADSTREAM_TEST_CLICKHOUSE"))
        .expect("set LEADSTREAM_BENCH_CLICKHOUSE to a ClickHouse HTTP URL, e.g. one started by deploy/scripts/services.sh")
}

/// The `p` quantile of sorted samples (nearest rank); zero when empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// CPU time used so far, in seconds, by this process, by every
/// `clickhouse-server`, by every `leadstream broker`, and by the whole
/// machine; from /proc, in Linux's fixed USER_HZ of 100 ticks/s. Two
/// samples around a phase say where its cores went.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub at: std::time::Instant,
    pub own: f64,
    pub clickhouse: f64,
    pub broker: f64,
    pub machine: f64,
}

const USER_HZ: f64 = 100.0;

/// utime + stime of a /proc/<pid>/stat line, in seconds.
fn process_cpu(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces; fields after ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11); // state is field 3; utime is 14
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

pub fn cpu() -> Cpu {
    let at = std::time::Instant::now();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let own = process_cpu(&read("/proc/self/stat")).unwrap_or(0.0);
    let (mut clickhouse, mut broker) = (0.0, 0.0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let cmdline = read(&format!("/proc/{pid}/cmdline"));
        let args: Vec<&str> = cmdline.split('\0').collect();
        let is_clickhouse = args[0].ends_with("clickhouse-server");
        let is_broker = args[0].ends_with("leadstream") && args.get(1) == Some(&"broker");
        if is_clickhouse || is_broker {
            let used = process_cpu(&read(&format!("/proc/{pid}/stat"))).unwrap_or(0.0);
            if is_clickhouse {
                clickhouse += used;
            } else {
                broker += used;
            }
        }
    }
    let machine = read("/proc/stat")
        .lines()
        .next()
        .map(|l| {
            // user nice system idle iowait irq softirq steal: all but idle and iowait.
            let v: Vec<f64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            [0, 1, 2, 5, 6, 7]
                .iter()
                .filter_map(|&i| v.get(i))
                .sum::<f64>()
                / USER_HZ
        })
        .unwrap_or(0.0);
    Cpu {
        at,
        own,
        clickhouse,
        broker,
        machine,
    }
}

impl Cpu {
    /// Cores each used on average since `earlier`, as a printable line.
    pub fn cores_since(&self, earlier: &Cpu) -> String {
        let secs = (self.at - earlier.at).as_secs_f64().max(1e-9);
        format!(
            "cores used: this process {:.2}, clickhouse {:.2}, broker {:.2}, machine {:.2}",
            (self.own - earlier.own) / secs,
            (self.clickhouse - earlier.clickhouse) / secs,
            (self.broker - earlier.broker) / secs,
            (self.machine - earlier.machine) / secs,
        )
    }
}

/// Creates `name` (replication 1) unless it exists.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let spec = leadstream_common::kafka::TopicSpec {
        name: name.to_owned(),
        partitions,
        replication: 1,
        compacted: false,
    };
    leadstream_common::kafka::ensure_topics(bootstrap, &[spec])
        .await
        .expect("topic created");
}

/// The encoder of the embedded tracking plan.
pub async fn plan_encoder() -> leadstream_schemas::Encoder {
    let plan = leadstream_schemas::Plan::embedded().unwrap();
    let resolver = leadstream_schemas::EmbeddedResolver::new(&plan).unwrap();
    leadstream_schemas::Encoder::build(&plan, &resolver)
        .await
        .unwrap()
}

/// Encodes and produces every (key, event) to `topic`, at most 50,000
/// unacknowledged at a time; all are acked on return.
pub async fn produce_events(
    producer: &rdkafka::producer::FutureProducer,
    encoder: &leadstream_schemas::Encoder,
    topic: &str,
    events: impl IntoIterator<Item = (String, serde_json::Value)>,
) {
    use leadstream_common::kafka::{await_deliveries, send};
    let mut pending = Vec::with_capacity(50_000);
    for (key, event) in events {
        let bytes = encoder.encode(&event).unwrap().bytes;
        pending.push(send(producer, topic, -1, &key, &bytes).await);
        if pending.len() == 50_000 {
            await_deliveries(std::mem::take(&mut pending))
                .await
                .unwrap();
        }
    }
    await_deliveries(pending).await.unwrap();
}

/// A consumer of `topic` in group `group` (with `settings` on top of the
/// defaults), once the topic exists.
pub async fn subscribed(
    bootstrap: &str,
    topic: &str,
    group: &str,
    settings: &[(&str, &str)],
) -> rdkafka::consumer::StreamConsumer {
    use rdkafka::consumer::Consumer as _;
    while leadstream_common::kafka::partition_count(bootstrap, topic).is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut config = leadstream_common::kafka::consumer_config(bootstrap, group);
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let consumer: rdkafka::consumer::StreamConsumer = config.create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// What `f` leaves allocated, in bytes, counted by `alloc` (the bench's
/// global allocator), with what `f` returns.
pub fn live_bytes_after<T>(
    alloc: &stats_alloc::StatsAlloc<std::alloc::System>,
    f: impl FnOnce() -> T,
) -> (T, usize) {
    let region = stats_alloc::Region::new(alloc);
    let out = f();
    // stats_alloc books a realloc's growth in bytes_allocated and its
    // shrinking in bytes_deallocated: the difference is what is live.
    let s = region.change();
    (out, s.bytes_allocated.saturating_sub(s.bytes_deallocated))
}

/// Benchmark time zero (2026-11-22).
pub const T0: i64 = 1_795_305_600_000;

/// Events of a typical lead, over its first month.
pub const TYPICAL_EVENTS: i64 = 40;

use leadstream_scorer::{
    DAY_MS,
    event::{LeadEvent, Platform, Signal},
};

static CATEGORIES: std::sync::LazyLock<[u32; leadstream_scorer::context::CATEGORIES]> =
    std::sync::LazyLock::new(|| {
        leadstream_scorer::context::hashes(&serde_json::json!({
            "event": "page_viewed", "platform": "web",
            "context": {"utm_source": "autohome", "utm_campaign": "ev-launch", "os": "iOS 17", "user_agent": "Safari", "locale": "zh-CN"},
            "properties": {"model_id": "x5"}}))
    });

/// The `i`-th of a stream of page views whose signals, platform and model
/// vary with `i`.
pub fn event(i: i64) -> LeadEvent {
    LeadEvent {
        message_id: String::new(),
        event: "page_viewed".into(),
        ts_ms: T0 + i * 90_000,
        platform: Some(if i % 3 == 0 {
            Platform::MiniProgram
        } else {
            Platform::Web
        }),
        signals: vec![Signal::PageView, Signal::ALL[(i % 8) as usize]],
        model_id: Some(["x3", "x5", "i4", "ix"][(i % 4) as usize].into()),
        price: None,
        channel: Some("autohome".into()),
        session_id: None,
        is_bot: false,
        order: false,
        lost: false,
        purchase_ms: None,
        duration_ms: Some(30_000),
        page_value: None,
        categories: *CATEGORIES,
    }
}

/// A typical lead's events: 40 over a month from the first (`lead` varies
/// the signals), as the processor gets them.
pub fn typical_events(lead: u64) -> Vec<LeadEvent> {
    (0..TYPICAL_EVENTS)
        .map(|i| typical_event(lead, i))
        .collect()
}

/// Event `i` of [`typical_events`]`(lead)`.
pub fn typical_event(lead: u64, i: i64) -> LeadEvent {
    let mut e = event(i + lead as i64);
    e.ts_ms = T0 + (lead as i64 % 1000) * 60_000 + i * (30 * DAY_MS / TYPICAL_EVENTS);
    e.message_id = format!("m-{lead}-{i}");
    e
}

/// A tracking-plan `page_viewed` JSON event, event `k` of visitor `lead`
/// (`anon-<lead>`), a minute apart.
pub fn page_view_json(lead: usize, k: usize) -> serde_json::Value {
    let page_type = ["home", "model_detail", "configurator", "price", "article"][k % 5];
    serde_json::json!({"message_id": format!("l{lead}-{k}"), "event": "page_viewed", "type": "page", "platform": "web",
           "source_id": "web-main", "tenant": "brand-a", "anonymous_id": format!("anon-{lead}"),
           "timestamp": T0 + (k as i64) * 60_000 + lead as i64, "received_at": T0,
           "context": {"page_path": "/models/x5", "utm_source": "autohome"},
           "properties": {"page_type": page_type, "model_id": "x5", "duration_ms": 30_000}})
}
