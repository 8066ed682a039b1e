//! `leadstream sink migrate --cluster` on a real ClickHouse 18.16 cluster:
//! two shards of two replicas with ZooKeeper, started by
//! `deploy/scripts/cluster.sh` (through `deploy/test.sh`).

mod common;

use leadstream_sink::{cluster::SHARDING, migrate::MIGRATIONS};

async fn client(url: &str, database: &str) -> clickhouse::Client {
    leadstream_common::clickhouse::connect(url, Some(database))
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .client
}

/// Migrations create replicated local tables on every shard behind
/// `Distributed` tables, record themselves once for the whole cluster, do
/// nothing the second time, and every analyst query and dashboard panel
/// answers through the `Distributed` tables on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_spread_over_the_cluster_once_and_every_query_answers() {
    let (name, urls) = common::cluster();
    let database = format!("cluster_migrate_{}", std::process::id());
    let args = common::clickhouse_args(&urls[0], &database, Some(&name));
    leadstream_sink::migrate(&args)
        .await
        .expect("first migrate");
    leadstream_sink::migrate(&args)
        .await
        .expect("a second migrate is a no-op");
    let all: Vec<u32> = MIGRATIONS.iter().map(|m| m.0).collect();
    for url in &urls {
        let db = client(url, &database).await;
        let versions: Vec<u32> = db
            .query("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all()
            .await
            .unwrap();
        assert_eq!(versions, all, "schema_migrations on {url}");
        for (table, _) in SHARDING {
            let engines: Vec<(String, String)> = db
                .query("SELECT name, engine FROM system.tables WHERE database = currentDatabase() AND name IN (?, ?) ORDER BY name")
                .bind(*table)
                .bind(format!("{table}_local"))
                .fetch_all()
                .await
                .unwrap();
            assert_eq!(engines.len(), 2, "{table} on {url}: {engines:?}");
            assert_eq!(engines[0].1, "Distributed", "{table} on {url}");
            assert!(
                engines[1].1.starts_with("Replicated"),
                "{table}_local on {url}: {engines:?}"
            );
        }
        for (label, sql) in common::analyst_queries() {
            db.query(&format!("SELECT count() FROM ({sql})"))
                .fetch_one::<u64>()
                .await
                .unwrap_or_else(|e| panic!("{label} on {url} failed: {e}\n{sql}"));
        }
    }
}

/// Rows written through a `Distributed` table land on the shard their key
/// picks, on both replicas; a lead's rows sit on one shard, and `FINAL`
/// through the `Distributed` table collapses duplicates written through
/// different nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leads_rows_sit_on_one_shard_and_duplicates_collapse() {
    let (name, urls) = common::cluster();
    let database = format!("cluster_shards_{}", std::process::id());
    let args = common::clickhouse_args(&urls[1], &database, Some(&name));
    leadstream_sink::migrate(&args).await.unwrap();
    // The same history written twice, through two different nodes, as a
    // sink replaying after a crash would.
    let values: Vec<String> = (0..200)
        .map(|i| format!("('L{:04}', {}.0, {})", i % 40, i, i / 40))
        .collect();
    let insert = format!(
        "INSERT INTO lead_score_history (lead_id, score, version) VALUES {}",
        values.join(",")
    );
    for url in [&urls[0], &urls[3]] {
        client(url, &database)
            .await
            .with_setting("insert_distributed_sync", "1")
            .query(&insert)
            .execute()
            .await
            .unwrap();
    }
    let through_any: u64 = client(&urls[2], &database)
        .await
        .query("SELECT count() FROM lead_score_history FINAL")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(through_any, 200, "each (lead, version) once after FINAL");
    // Per shard: which leads its local table holds, the same on both replicas.
    let mut shards: Vec<Vec<String>> = Vec::new();
    for url in &urls {
        let leads: Vec<String> = client(url, &database)
            .await
            .query("SELECT DISTINCT lead_id FROM lead_score_history_local ORDER BY lead_id")
            .fetch_all()
            .await
            .unwrap();
        shards.push(leads);
    }
    assert_eq!(shards[0], shards[1], "replicas of shard 1 differ");
    assert_eq!(shards[2], shards[3], "replicas of shard 2 differ");
    assert!(
        !shards[0].is_empty() && !shards[2].is_empty(),
        "both shards hold leads: {shards:?}"
    );
    assert!(
        shards[0].iter().all(|l| !shards[2].contains(l)),
        "a lead on both shards: {shards:?}"
    );
    assert_eq!(shards[0].len() + shards[2].len(), 40);
}
