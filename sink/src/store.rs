//! Where rows go: ClickHouse (RowBinary inserts) or, for trying leadstream
//! without a server, JSONEachRow files that `clickhouse-client` loads later.

use std::{io::Write as _, path::PathBuf};

use clickhouse::{Client, Row, RowWrite};
use serde::Serialize;

use crate::config::ClickHouseArgs;

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
        with_auth(admin.client)
            .query(&format!("CREATE DATABASE IF NOT EXISTS {}", args.database))
            .execute()
            .await?;
        let conn = leadstream_common::clickhouse::connect(url, Some(&args.database)).await?;
        tracing::info!(version = %conn.version, database = %args.database, "connected to ClickHouse");
        Ok(Self::ClickHouse(Box::new(with_auth(conn.client))))
    }

    pub async fn insert<T>(&self, table: &str, rows: &[T]) -> anyhow::Result<()>
    where
        T: RowWrite + Serialize + for<'a> Row<Value<'a> = T>,
    {
        if rows.is_empty() {
            return Ok(());
        }
        match self {
            Store::ClickHouse(client) => {
                let mut insert = client.insert::<T>(table).await?;
                for row in rows {
                    insert.write(row).await?;
                }
                insert.end().await?;
            }
            Store::Export(dir) => {
                std::fs::create_dir_all(dir)?;
                let mut out = Vec::new();
                for row in rows {
                    serde_json::to_writer(&mut out, row)?;
                    out.push(b'\n');
                }
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("{table}.jsonl")))?;
                f.write_all(&out)?;
                f.sync_data()?;
            }
        }
        Ok(())
    }
}
