//! Helpers for tests against the real services that `deploy/test.sh`
//! starts. A test never skips: without a service it fails and says how to
//! start one.
#![allow(dead_code)] // each test binary uses a different subset

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
};

const HOW_TO_START: &str = "run the suite with `bash deploy/test.sh` (installs and starts a broker and ClickHouse), \
     or start them with `deploy/scripts/services.sh start` and export the variables it prints";

/// Bootstrap servers of the test broker (`LEADSTREAM_TEST_KAFKA`).
pub fn kafka() -> String {
    std::env::var("LEADSTREAM_TEST_KAFKA")
        .unwrap_or_else(|_| panic!("LEADSTREAM_TEST_KAFKA is not set: no Kafka-protocol broker to test against; {HOW_TO_START}"))
}

/// HTTP URL of the test ClickHouse server (`LEADSTREAM_TEST_CLICKHOUSE`).
pub fn clickhouse() -> String {
    std::env::var("LEADSTREAM_TEST_CLICKHOUSE")
        .unwrap_or_else(|_| panic!("LEADSTREAM_TEST_CLICKHOUSE is not set: no ClickHouse server to test against; {HOW_TO_START}"))
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A topic created for one test and deleted when dropped.
pub struct TestTopic {
    pub name: String,
    bootstrap: String,
}

impl TestTopic {
    pub async fn create(bootstrap: &str, prefix: &str, partitions: i32) -> Self {
        let name = unique(prefix);
        let admin: AdminClient<DefaultClientContext> =
            leadstream_common::kafka::admin_config(bootstrap)
                .create()
                .expect("admin client");
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(
                &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
                &opts,
            )
            .await
            .unwrap_or_else(|e| {
                panic!("creating topic {name} on {bootstrap} failed: {e}; {HOW_TO_START}")
            });
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t} failed: {e}"));
        }
        Self {
            name,
            bootstrap: bootstrap.to_owned(),
        }
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        let (name, bootstrap) = (self.name.clone(), self.bootstrap.clone());
        // Drop cannot await; delete from a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin: AdminClient<DefaultClientContext> =
                    leadstream_common::kafka::admin_config(&bootstrap)
                        .create()
                        .ok()?;
                let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
                admin.delete_topics(&[&name], &opts).await.ok()
            })
        })
        .join();
    }
}

/// A child process (a `leadstream` role under test), killed with -9 when
/// dropped: the way tests crash it, and so a failing test leaves nothing running.
pub struct KilledOnDrop(pub std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every SQL query analysts and dashboards are given, labelled: the blocks
/// of the analyst guide and the `rawSql` of every Grafana panel (Prometheus
/// panels are checked against live /metrics by the quickstart test).
pub fn analyst_queries() -> Vec<(String, String)> {
    let guide = include_str!("../../deploy/clickhouse/README.md");
    let mut queries: Vec<(String, String)> = guide
        .split("```sql")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .enumerate()
        .map(|(i, q)| (format!("guide query {}", i + 1), q.trim().to_owned()))
        .collect();
    for (file, dashboard) in [
        (
            "leads",
            include_str!("../../deploy/grafana/dashboards/leads.json"),
        ),
        (
            "tracking-plan",
            include_str!("../../deploy/grafana/dashboards/tracking-plan.json"),
        ),
        (
            "pipeline-health",
            include_str!("../../deploy/grafana/dashboards/pipeline-health.json"),
        ),
    ] {
        let d: serde_json::Value = serde_json::from_str(dashboard).expect("dashboard JSON");
        for panel in d["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                if let Some(sql) = target["rawSql"].as_str() {
                    queries.push((format!("{file} panel {}", panel["title"]), sql.to_owned()));
                }
            }
        }
    }
    queries
}

/// A ClickHouse server of this test's own (config from
/// `deploy/scripts/services.sh clickhouse-config`), so it can be killed
/// and restarted on the same data without disturbing the other tests.
pub struct OwnClickHouse {
    dir: tempfile::TempDir,
    http_port: u16,
    config: String,
    server: Option<KilledOnDrop>,
}

impl OwnClickHouse {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Three free ports, held together so they differ.
        let held: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<String> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port().to_string())
            .collect();
        drop(held);
        let out = std::process::Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/scripts/services.sh"
            ))
            .arg("clickhouse-config")
            .arg(dir.path())
            .args(&ports)
            .output()
            .expect("run deploy/scripts/services.sh");
        assert!(
            out.status.success(),
            "writing a ClickHouse config failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let mut me = Self {
            dir,
            http_port: ports[0].parse().unwrap(),
            config,
            server: None,
        };
        me.restart();
        me
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// kill -9: nothing is flushed or shut down cleanly.
    pub fn kill(&mut self) {
        self.server = None;
    }

    /// Starts the server (again) on the same data and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("log/stdout.log")).unwrap();
        let server = std::process::Command::new("/usr/sbin/clickhouse-server")
            .arg(format!("--config-file={}", self.config))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map(KilledOnDrop)
            .expect(
                "start /usr/sbin/clickhouse-server (install it with deploy/scripts/install-test-deps.sh)",
            );
        self.server = Some(server);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.http_port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "ClickHouse did not start; see {}/log",
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The test ClickHouse cluster's name and every server's HTTP URL (two
/// shards of two replicas: servers 0 and 1 are shard 1, 2 and 3 shard 2).
#[allow(dead_code)]
pub fn cluster() -> (String, Vec<String>) {
    let how =
        "run `bash deploy/test.sh`, or `deploy/scripts/cluster.sh start` and export what it prints";
    let name = std::env::var("LEADSTREAM_TEST_CLUSTER")
        .unwrap_or_else(|_| panic!("LEADSTREAM_TEST_CLUSTER is not set: {how}"));
    let urls: Vec<String> = std::env::var("LEADSTREAM_TEST_CLUSTER_URLS")
        .unwrap_or_else(|_| panic!("LEADSTREAM_TEST_CLUSTER_URLS is not set: {how}"))
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(urls.len(), 4, "two shards of two replicas: {urls:?}");
    (name, urls)
}

/// `deploy/scripts/cluster.sh kill-replica N` or `start-replica N`.
#[allow(dead_code)]
pub fn cluster_server(action: &str, server: usize) {
    let status = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/scripts/cluster.sh"
        ))
        .args([action, &server.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "cluster.sh {action} {server}: {status}");
}

/// ClickHouse at `url`, database `database`, no credentials, on `cluster`
/// when one is named.
#[allow(dead_code)]
pub fn clickhouse_args(
    url: &str,
    database: &str,
    cluster: Option<&str>,
) -> leadstream_sink::ClickHouseArgs {
    leadstream_sink::ClickHouseArgs {
        url: Some(url.to_owned()),
        database: database.to_owned(),
        user: None,
        password: None,
        cluster: cluster.map(str::to_owned),
    }
}
