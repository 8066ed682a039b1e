//! `leadstream sink migrate`: the SQL files of deploy/clickhouse applied in
//! order and recorded in `schema_migrations`. Re-running applies nothing; a
//! migration edited after it was applied is an error (add a new one).

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cluster::Cluster;

/// The migrations built into the binary, in order.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "0001_tables.sql",
        include_str!("../../deploy/clickhouse/0001_tables.sql"),
    ),
    (
        2,
        "0002_views.sql",
        include_str!("../../deploy/clickhouse/0002_views.sql"),
    ),
    (
        3,
        "0003_first_platform_grade_mix.sql",
        include_str!("../../deploy/clickhouse/0003_first_platform_grade_mix.sql"),
    ),
    (
        4,
        "0004_lifecycle.sql",
        include_str!("../../deploy/clickhouse/0004_lifecycle.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "migration {name} was changed after it was applied (checksum {applied} in schema_migrations, {now} in the file); add a new migration instead"
    )]
    Changed {
        name: String,
        applied: String,
        now: String,
    },
    #[error("migration {name}, statement {index}: {source}")]
    Statement {
        name: String,
        index: usize,
        source: clickhouse::error::Error,
    },
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct Applied {
    version: u32,
    name: String,
    checksum: String,
}

/// Statements of one SQL file: `--` comment lines dropped, split on `;`
/// at the end of a line.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let stmt = current.trim().trim_end_matches(';').trim().to_owned();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

pub fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Applies what is missing; returns the names applied now. On a cluster
/// every statement runs in its cluster form ([`Cluster::rewrite`]).
pub async fn migrate(
    client: &Client,
    cluster: Option<Cluster<'_>>,
) -> Result<Vec<String>, MigrateError> {
    let create = match cluster {
        Some(c) => c.schema_migrations(),
        None => "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, checksum String, applied_at DateTime DEFAULT now()) \
             ENGINE = MergeTree() ORDER BY version"
            .to_owned(),
    };
    client.query(&create).execute().await?;
    let applied: Vec<Applied> = client
        .query("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        .fetch_all()
        .await?;
    let mut done = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        let sum = checksum(sql);
        if let Some(a) = applied.iter().find(|a| a.version == *version) {
            if a.checksum != sum {
                return Err(MigrateError::Changed {
                    name: (*name).to_owned(),
                    applied: a.checksum.clone(),
                    now: sum,
                });
            }
            continue;
        }
        for (index, stmt) in statements(sql).iter().enumerate() {
            let run = match cluster {
                Some(c) => c.rewrite(stmt)?,
                None => vec![stmt.clone()],
            };
            for stmt in run {
                client
                    .query(&stmt)
                    .execute()
                    .await
                    .map_err(|source| MigrateError::Statement {
                        name: (*name).to_owned(),
                        index: index + 1,
                        source,
                    })?;
            }
        }
        // `?` placeholders would be bound client-side; the values are ours.
        client
            .query(&format!(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ({version}, '{name}', '{sum}')"
            ))
            .execute()
            .await?;
        tracing::info!(migration = name, "applied");
        done.push((*name).to_owned());
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_on_line_ending_semicolons_and_skip_comments() {
        let sql = "-- a comment; not a statement\nCREATE TABLE a (x String) ENGINE = Memory;\n\nCREATE VIEW v AS\nSELECT 'a;b' AS s\nFROM a;\n";
        assert_eq!(
            statements(sql),
            vec![
                "CREATE TABLE a (x String) ENGINE = Memory",
                "CREATE VIEW v AS\nSELECT 'a;b' AS s\nFROM a"
            ]
        );
        for (_, name, sql) in MIGRATIONS {
            assert!(!statements(sql).is_empty(), "{name}");
        }
    }
}
