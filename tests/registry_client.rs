//! Confluent's own Python client (confluent-kafka) against `leadstream
//! registry`: list subjects, fetch by id, lookup, register, compatibility,
//! and decoding bytes framed by our codec.

use std::{process::Command, sync::Arc};

use leadstream_schemas::{EmbeddedResolver, Encoder, Plan, registry};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn confluent_python_client_works_against_the_registry() {
    let plan = Arc::new(Plan::embedded().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(registry::serve(
        listener,
        Arc::clone(&plan),
        std::future::pending(),
    ));

    let resolver = EmbeddedResolver::new(&plan).unwrap();
    let encoder = Encoder::build(&plan, &resolver).await.unwrap();
    let framed = encoder
        .encode(&json!({
            "message_id": "py-1", "event": "page_viewed", "type": "page", "platform": "mini_program",
            "source_id": "mp", "tenant": "brand-a", "union_id": "u-hash", "timestamp": 1_795_305_600_000_i64,
            "received_at": 1_795_305_600_000_i64, "context": {}, "properties": {"page_type": "configurator"}
        }))
        .unwrap();
    let hex: String = framed.bytes.iter().map(|b| format!("{b:02x}")).collect();

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/confluent_registry_client.py"
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(&url)
            .arg(hex)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 must be installed to run this test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'confluent_kafka'")
            && !stderr.contains("No module named 'fastavro'"),
        "confluent-kafka is not installed; run deploy/scripts/install-test-deps.sh (pip install 'confluent-kafka[avro,schemaregistry]')"
    );
    assert!(
        out.status.success(),
        "Confluent client failed against the registry:\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["decoded_message_id"], "py-1");
}
