//! Where rows go: ClickHouse (RowBinary inserts) or, for trying leadstream
//! without a server, JSONEachRow files that `clickhouse-client` loads later.

use std::{io::Write as _, path::PathBuf};

use clickhouse::Client;

use crate::{
    config::ClickHouseArgs,
    encode::{EncodedRows, Format},
};

#[derive(Clone)]
pub enum Store {
    ClickHouse(Box<Client>),
    Export(PathBuf),
}

impl Store {
    /// Connects (creating the database if needed) without migrating.
    pub async fn clickhouse(args: &ClickHouseArgs, url: &str) -> anyhow::Result<Self> {
        let admin = leadstream_common::clickhouse::connect(url, None).await?;
        let with_auth = |mut c: Client| {
            if let Some(u) = &args.user {
                c = c.with_user(u);
            }
            if let Some(p) = &args.password {
                c = c.with_password(p);
            }
            c
        };
        let create = match args.cluster() {
            Some(cluster) => cluster.create_database(),
            None => format!("CREATE DATABASE IF NOT EXISTS {}", args.database),
        };
        with_auth(admin.client).query(&create).execute().await?;
        let conn = leadstream_common::clickhouse::connect(url, Some(&args.database)).await?;
        tracing::info!(version = %conn.version, database = %args.database, cluster = ?args.cluster, "connected to ClickHouse");
        let mut client = with_auth(conn.client);
        if args.cluster.is_some() {
            // An insert into a Distributed table returns once every shard
            // has its rows, not once they are queued on this node: offsets
            // are committed only after that.
            client = client.with_setting("insert_distributed_sync", "1");
        }
        Ok(Self::ClickHouse(Box::new(client)))
    }

    /// The encoding [`Store::insert`] takes.
    pub fn format(&self) -> Format {
        match self {
            Store::ClickHouse(_) => Format::RowBinary,
            Store::Export(_) => Format::JsonEachRow,
        }
    }

    /// Inserts rows encoded in [`Store::format`]: one `INSERT ... FORMAT
    /// RowBinary` naming the row's columns, sent in pieces the size the
    /// `clickhouse` crate's own inserts use; or appended to the table's
    /// export file and fsync'd.
    pub async fn insert(&self, table: &str, rows: &EncodedRows) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        match self {
            Store::ClickHouse(client) => {
                let columns: Vec<String> = rows.columns.iter().map(|c| format!("`{c}`")).collect();
                let mut insert = client.insert_formatted_with(format!(
                    "INSERT INTO `{table}` ({}) FORMAT RowBinary",
                    columns.join(", ")
                ));
                for chunk in &rows.chunks {
                    let mut at = 0;
                    while at < chunk.len() {
                        let end = (at + SEND_BYTES).min(chunk.len());
                        insert.send(chunk.slice(at..end)).await?;
                        at = end;
                    }
                }
                insert.end().await?;
            }
            Store::Export(dir) => {
                std::fs::create_dir_all(dir)?;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("{table}.jsonl")))?;
                for bytes in rows.bytes() {
                    f.write_all(bytes)?;
                }
                f.sync_data()?;
            }
        }
        Ok(())
    }
}

/// Bytes per piece sent (and compressed) at a time; a piece may end inside
/// a row, which the server reassembles.
const SEND_BYTES: usize = 256 * 1024;
