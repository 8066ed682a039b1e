//! A round trip through the real ClickHouse server with the `clickhouse`
//! crate, validation chosen from the server's reported version.

mod common;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
struct EventRow {
    message_id: String,
    event: String,
    ts_ms: u64,
    score: f64,
}

#[tokio::test]
async fn rows_round_trip_with_version_detected_validation() {
    let url = common::clickhouse();
    let conn = leadstream_common::clickhouse::connect(&url, None)
        .await
        .unwrap();
    assert_eq!(
        conn.major >= leadstream_common::clickhouse::MIN_VALIDATING_MAJOR,
        conn.version
            .split('.')
            .next()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 24
    );
    let table = common::unique("roundtrip");
    let client = conn.client.clone();
    client
        .query(&format!(
            "CREATE TABLE {table} (message_id String, event String, ts_ms UInt64, score Float64) \
             ENGINE = MergeTree() ORDER BY (event, message_id)"
        ))
        .execute()
        .await
        .unwrap();

    let rows: Vec<EventRow> = (0..1000)
        .map(|i| EventRow {
            message_id: format!("m-{i:04}"),
            event: if i % 3 == 0 {
                "page_viewed"
            } else {
                "test_drive_booked"
            }
            .into(),
            ts_ms: 1_795_305_600_000 + i,
            score: i as f64 / 10.0,
        })
        .collect();
    let mut insert = client.insert::<EventRow>(&table).await.unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();

    let back: Vec<EventRow> = client
        .query(&format!(
            "SELECT message_id, event, ts_ms, score FROM {table} ORDER BY message_id"
        ))
        .fetch_all()
        .await
        .unwrap();
    let result = (
        back == rows,
        client
            .query(&format!(
                "SELECT count() FROM {table} WHERE event = 'page_viewed'"
            ))
            .fetch_one::<u64>()
            .await,
    );
    client
        .query(&format!("DROP TABLE {table}"))
        .execute()
        .await
        .unwrap();
    assert!(result.0, "rows differ after the round trip");
    assert_eq!(result.1.unwrap(), 334);
}
