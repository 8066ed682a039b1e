//! The HTTP API in process, with a fake publisher that can be told to fail:
//! auth, limits, gzip, CORS, per-event results, dedupe, DLQ routing, the
//! spool when Kafka is down, 503 when the spool is full.

use std::{
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use leadstream_ingest::{
    IngestConfig, build_state,
    pipeline::{Record, Topic},
    publish::{PublishError, Publisher},
    serve,
    sources::hash_key,
};
use serde_json::{Value, json};

#[derive(Default)]
struct FakeKafka {
    sent: Mutex<Vec<Record>>,
    down: AtomicBool,
}

#[async_trait]
impl Publisher for FakeKafka {
    async fn send_all(&self, records: &[Record]) -> Vec<Result<(), PublishError>> {
        if self.down.load(Ordering::SeqCst) {
            return records
                .iter()
                .map(|_| Err(PublishError("broker down".into())))
                .collect();
        }
        self.sent.lock().unwrap().extend_from_slice(records);
        records.iter().map(|_| Ok(())).collect()
    }
    fn healthy(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }
    fn flush(&self, _: Duration) {}
}

impl FakeKafka {
    fn on(&self, topic: Topic) -> Vec<Record> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.topic == topic)
            .cloned()
            .collect()
    }
}

struct Server {
    url: String,
    kafka: Arc<FakeKafka>,
    _dir: tempfile::TempDir,
}

fn config(dir: &std::path::Path, spool_max_bytes: u64) -> IngestConfig {
    let sources = dir.join("sources.toml");
    std::fs::write(
        &sources,
        format!(
            "[[source]]\nid = \"web\"\nplatform = \"web\"\ntenant = \"brand-a\"\nwrite_key_sha256 = \"{}\"\n\n\
             [[source]]\nid = \"limited\"\nplatform = \"app\"\ntenant = \"brand-a\"\nwrite_key_sha256 = \"{}\"\nrate_limit_per_sec = 5\n",
            hash_key("web-key"),
            hash_key("limited-key")
        ),
    )
    .unwrap();
    IngestConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shared: leadstream_common::args::SharedArgs::new("unused:9092"),
        sources,
        pii_pepper: "a-test-pepper-of-some-length".into(),
        spool_dir: dir.join("spool"),
        spool_max_bytes,
        produce_timeout_ms: 1000,
        producer_stall_ms: 10_000,
        body_timeout_ms: 600,
        request_timeout_ms: 2_500,
        header_timeout_ms: 10_000,
        max_connections: 10_000,
        kafka_linger_ms: 5,
        max_event_bytes: 32 * 1024,
        max_batch_bytes: 500 * 1024,
        max_batch_events: 2500,
        max_gzip_ratio: 100,
        dedupe_window_secs: 3600,
        dedupe_capacity: 10_000,
        max_clock_skew_secs: 86_400,
        bot_user_agents: vec!["bot".into()],
        // The fake publisher stands in for Kafka; no broker for metrics either.
        pipeline_metrics: leadstream_common::pipeline_metrics::PipelineMetricsArgs {
            topic: String::new(),
        },
    }
}

async fn start(spool_max_bytes: u64) -> Server {
    start_with(|c| c.spool_max_bytes = spool_max_bytes).await
}

async fn start_with(adjust: impl FnOnce(&mut IngestConfig)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    let mut cfg = config(dir.path(), 1 << 20);
    adjust(&mut cfg);
    let state = build_state(&cfg, kafka.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(state, listener, std::future::pending()));
    Server {
        url,
        kafka,
        _dir: dir,
    }
}

fn track(id: &str, event: &str, props: Value) -> Value {
    json!({"type": "track", "messageId": id, "anonymousId": "anon-1", "event": event, "properties": props,
           "timestamp": "2026-11-22T08:00:00Z", "context": {"library": {"name": "test-sdk", "version": "1.0"}}})
}

fn form(id: &str) -> Value {
    track(
        id,
        "Lead Form Submitted",
        json!({"form_id": "quote", "phone": "+86 138 0013 8000", "name": "Wang Wei"}),
    )
}

async fn post(url: &str, path: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .json(body);
    if let Some(k) = key {
        req = req.basic_auth(k, Some(""));
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn three_ways_to_pass_the_write_key_and_401_otherwise() {
    let s = start(1 << 20).await;
    assert_eq!(
        post(&s.url, "/v1/track", Some("web-key"), &form("a1"))
            .await
            .status(),
        200
    );
    let r = reqwest::Client::new()
        .post(format!("{}/v1/track", s.url))
        .header("x-write-key", "web-key")
        .json(&form("a2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = form("a3");
    body["writeKey"] = json!("web-key");
    assert_eq!(post(&s.url, "/v1/track", None, &body).await.status(), 200);
    assert_eq!(
        post(&s.url, "/v1/track", Some("wrong"), &form("a4"))
            .await
            .status(),
        401
    );
    assert_eq!(
        post(&s.url, "/v1/track", None, &form("a5")).await.status(),
        401
    );
    assert_eq!(s.kafka.on(Topic::Events).len(), 3);
}

#[tokio::test]
async fn batch_answers_per_event_and_routes_rejects_to_the_dlq() {
    let s = start(1 << 20).await;
    let batch = json!({"batch": [
        form("b1"),
        track("b2", "Lead Form Submitted", json!({"form_id": 7})),
        track("b3", "Wishlist Added", json!({})),
        {"type": "page", "messageId": "b4", "anonymousId": "anon-1", "name": "Configurator", "properties": {"model_id": "x5"}},
        {"type": "identify", "messageId": "b5", "userId": "u-1", "traits": {"email": "Wang@Example.com", "phone": "13800138000"}},
        {"type": "alias", "messageId": "b6", "userId": "u-1", "previousId": "anon-1"},
        form("b1"),
    ], "context": {"campaign": {"source": "autohome"}}});
    let r = post(&s.url, "/v1/batch", Some("web-key"), &batch).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 4);
    assert_eq!(body["duplicates"], 1);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(
        rejected[0],
        json!({"index": 1, "messageId": "b2", "reason": "type_mismatch", "field": "properties.form_id", "message": "properties.form_id: expected string, found integer"})
    );
    assert_eq!(rejected[1]["reason"], "unplanned_event");

    let dlq = s.kafka.on(Topic::Dlq);
    assert_eq!(dlq.len(), 2);
    let first: Value = serde_json::from_slice(&dlq[0].payload).unwrap();
    assert_eq!(
        (
            first["reason"].as_str(),
            first["field"].as_str(),
            first["sdk_name"].as_str()
        ),
        (
            Some("type_mismatch"),
            Some("properties.form_id"),
            Some("test-sdk")
        )
    );
    let all: Vec<u8> = s
        .kafka
        .sent
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| r.payload.clone())
        .collect();
    let all = String::from_utf8_lossy(&all);
    for clear in [
        "13800138000",
        "138 0013 8000",
        "Wang Wei",
        "Wang@Example.com",
    ] {
        assert!(!all.contains(clear), "{clear} reached Kafka in clear text");
    }
}

#[tokio::test]
async fn limits_gzip_and_cors() {
    let s = start(1 << 20).await;
    let big = track(
        "c1",
        "Lead Form Submitted",
        json!({"form_id": "x".repeat(40 * 1024)}),
    );
    let body: Value = post(
        &s.url,
        "/v1/batch",
        Some("web-key"),
        &json!({"batch": [big]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["rejected"][0]["reason"], "too_large");
    let huge = json!({"batch": (0..30).map(|i| track(&format!("h{i}"), "x", json!({"pad": "y".repeat(20_000)}))).collect::<Vec<_>>()});
    assert_eq!(
        post(&s.url, "/v1/batch", Some("web-key"), &huge)
            .await
            .status(),
        413
    );
    let many = json!({"batch": (0..2501).map(|i| track(&format!("n{i}"), "x", json!({}))).collect::<Vec<_>>()});
    assert_eq!(
        post(&s.url, "/v1/batch", Some("web-key"), &many)
            .await
            .status(),
        413
    );

    let gz = |bytes: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    let client = reqwest::Client::new();
    let ok = client
        .post(format!("{}/v1/track", s.url))
        .basic_auth("web-key", Some(""))
        .header("content-encoding", "gzip")
        .header("content-type", "application/json")
        .body(gz(form("g1").to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bomb = client
        .post(format!("{}/v1/track", s.url))
        .basic_auth("web-key", Some(""))
        .header("content-encoding", "gzip")
        .body(gz(&vec![b' '; 400 * 1024]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        bomb.status(),
        413,
        "a 400 KB body of spaces compresses > 100:1"
    );

    let bad = client
        .post(format!("{}/v1/track", s.url))
        .basic_auth("web-key", Some(""))
        .body("{not json 13800138000")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let dlq = s.kafka.on(Topic::Dlq);
    let last: Value = serde_json::from_slice(&dlq.last().unwrap().payload).unwrap();
    assert_eq!(last["reason"], "bad_json");
    assert!(!last.to_string().contains("13800138000"));

    let pre = client
        .request(reqwest::Method::OPTIONS, format!("{}/v1/track", s.url))
        .header("origin", "https://brand.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,authorization",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let s = start(1 << 20).await;
    let batch = json!({"batch": (0..10).map(|i| form(&format!("r{i}"))).collect::<Vec<_>>()});
    let r = post(&s.url, "/v1/batch", Some("limited-key"), &batch).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
}

#[tokio::test]
async fn kafka_down_spools_then_replays_in_order_without_loss_or_duplicates() {
    let s = start(1 << 20).await;
    s.kafka.down.store(true, Ordering::SeqCst);
    let mut ids = Vec::new();
    for i in 0..20 {
        let id = format!("s{i}");
        assert_eq!(
            post(&s.url, "/v1/track", Some("web-key"), &form(&id))
                .await
                .status(),
            200,
            "spooled is durable"
        );
        ids.push(id);
    }
    assert!(s.kafka.on(Topic::Events).is_empty());
    let ready = reqwest::get(format!("{}/_readiness", s.url)).await.unwrap();
    assert_eq!(ready.status(), 200, "the spool still has room");
    s.kafka.down.store(false, Ordering::SeqCst);
    // Events arriving while the backlog drains queue behind it.
    for i in 20..25 {
        let id = format!("s{i}");
        assert_eq!(
            post(&s.url, "/v1/track", Some("web-key"), &form(&id))
                .await
                .status(),
            200
        );
        ids.push(id);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while s.kafka.on(Topic::Events).len() < ids.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got: Vec<String> = s
        .kafka
        .on(Topic::Events)
        .into_iter()
        .map(|r| r.message_id)
        .collect();
    assert_eq!(got, ids, "every accepted event once, in order");
    let metrics = reqwest::get(format!("{}/metrics", s.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("ingest_events_spooled_total"), "{metrics}");
}

#[tokio::test]
async fn full_spool_answers_503_and_loses_nothing_it_accepted() {
    let s = start(4 * 1024).await;
    s.kafka.down.store(true, Ordering::SeqCst);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..40 {
        let id = format!("f{i}");
        let r = post(&s.url, "/v1/track", Some("web-key"), &form(&id)).await;
        match r.status().as_u16() {
            200 => accepted.push(id),
            503 => {
                assert_eq!(r.headers()["retry-after"], "1");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        !accepted.is_empty() && refused > 0,
        "accepted {} refused {refused}",
        accepted.len()
    );
    s.kafka.down.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while s.kafka.on(Topic::Events).len() < accepted.len() && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got: Vec<String> = s
        .kafka
        .on(Topic::Events)
        .into_iter()
        .map(|r| r.message_id)
        .collect();
    assert_eq!(got, accepted);
}

/// A client that sends its headers and then trickles the body a byte at a
/// time (never pausing long enough for the body timeout) is cut off with a
/// 408 once the request timeout passes, instead of holding its connection
/// for ever.
#[tokio::test]
async fn a_client_that_trickles_its_body_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start(1 << 20).await;
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/track HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nx-write-key: web-key\r\ncontent-length: 1000\r\n\r\n{{"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if conn.write_all(b" ").await.is_err() {
                break;
            }
            let mut buf = [0u8; 512];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), conn.read(&mut buf)).await
            {
                return String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
        String::new()
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), trickle)
        .await
        .expect("the slow client was never cut off");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut off after {:?}",
        started.elapsed()
    );
}

/// Reads what the server sends until it closes the connection (or `wait`
/// passes, which fails the test).
async fn read_to_close(conn: &mut tokio::net::TcpStream, wait: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(wait, conn.read_to_end(&mut got))
        .await
        .expect("the server kept the connection open")
        .ok();
    String::from_utf8_lossy(&got).into_owned()
}

/// A client that trickles its headers (slowloris) is cut off once the header
/// deadline passes, instead of holding a connection for ever.
#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let s = start_with(|c| c.header_timeout_ms = 500).await;
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(format!("POST /v1/track HTTP/1.1\r\nhost: {addr}\r\n").as_bytes())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (mut read, mut write) = conn.into_split();
    let trickle = tokio::spawn(async move {
        for b in b"x-slow: ".iter().cycle() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(&[*b]).await.is_err() {
                break;
            }
        }
    });
    let mut buf = [0u8; 512];
    use tokio::io::AsyncReadExt;
    let n = tokio::time::timeout(Duration::from_secs(5), read.read(&mut buf))
        .await
        .expect("the slow client was never cut off")
        .unwrap_or(0);
    trickle.abort();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(
        n == 0 || answer.starts_with("HTTP/1.1 408"),
        "closed, or told why: {answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut off after {:?}",
        started.elapsed()
    );
}

/// Past `--max-connections`, a new connection is answered 503 and closed;
/// once one closes, the next is served.
#[tokio::test]
async fn connections_over_the_cap_are_refused_with_a_503() {
    use tokio::io::AsyncWriteExt;
    let s = start_with(|c| c.max_connections = 2).await;
    let addr = s.url.trim_start_matches("http://").to_owned();
    let connect = || tokio::net::TcpStream::connect(addr.clone());
    let held = [connect().await.unwrap(), connect().await.unwrap()];
    // Let the server accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = connect().await.unwrap();
    let answer = read_to_close(&mut over, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many connections"), "{answer}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut next = connect().await.unwrap();
    next.write_all(
        format!("GET /_liveness HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut next, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
