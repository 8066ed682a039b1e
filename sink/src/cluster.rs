//! The migrations on a ClickHouse cluster. Each statement of
//! `deploy/clickhouse/*.sql` (written for one server) becomes what a cluster
//! needs, run `ON CLUSTER` so every node gets it:
//!
//! - a table becomes `<name>_local`, a `Replicated…MergeTree` on every
//!   shard, and `<name>`, a `Distributed` table over them that the sink
//!   writes and analysts query. Rows are sharded by the key they collapse
//!   on, so `FINAL` still finds every duplicate on one shard;
//! - `ALTER TABLE` changes the local tables, and the `Distributed` table
//!   (which holds no rows: the sink inserts synchronously) is created again
//!   over them: ClickHouse 18.16 refuses `ALTER … ON CLUSTER` on a table
//!   that is not replicated when the cluster's shards are;
//! - a view is created on every node, over the `Distributed` tables, so it
//!   reads the whole cluster wherever it is queried.
//!
//! Pure: the statements are rewritten here and run by [`crate::migrate`].

/// Each table's sharding expression: its ReplacingMergeTree's dedupe key,
/// or the part of it that identifies a duplicate (a lead's rows all on one
/// shard; an event's copies on one shard).
pub const SHARDING: &[(&str, &str)] = &[
    ("events", "cityHash64(message_id)"),
    ("lead_scores", "cityHash64(lead_id)"),
    ("lead_score_history", "cityHash64(lead_id)"),
    (
        "schema_violations",
        "cityHash64(kafka_partition, kafka_offset)",
    ),
    ("pipeline_metrics", "cityHash64(service, metric, instance)"),
    (
        "dead_letters",
        "cityHash64(topic, kafka_partition, kafka_offset)",
    ),
];

/// Where the migrations run.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    /// A cluster of the servers' `remote_servers` configuration.
    pub name: &'a str,
    pub database: &'a str,
}

/// A statement cluster mode does not know how to spread.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot run on a cluster ({why}): {statement}")]
pub struct ClusterError {
    pub why: String,
    pub statement: String,
}

impl Cluster<'_> {
    /// The database, on every node.
    pub fn create_database(&self) -> String {
        format!(
            "CREATE DATABASE IF NOT EXISTS {} ON CLUSTER {}",
            self.database, self.name
        )
    }

    /// `schema_migrations`, one replicated table every node of every shard
    /// holds in full, so any node answers what ran on the cluster.
    pub fn schema_migrations(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations ON CLUSTER {c} \
             (version UInt32, name String, checksum String, applied_at DateTime DEFAULT now()) \
             ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/{db}/schema_migrations', '{{shard}}-{{replica}}') \
             ORDER BY version",
            db = self.database,
            c = self.name
        )
    }

    /// The statements that do on the cluster what `statement` does on one
    /// server.
    pub fn rewrite(&self, statement: &str) -> Result<Vec<String>, ClusterError> {
        let fail = |why: &str| ClusterError {
            why: why.to_owned(),
            statement: statement.to_owned(),
        };
        let s = statement.trim();
        if let Some(rest) = strip_words(s, &["CREATE", "TABLE", "IF", "NOT", "EXISTS"]) {
            return self.create_table(rest).map_err(|why| fail(&why));
        }
        if let Some(rest) = strip_words(s, &["ALTER", "TABLE"]) {
            let (name, change) = split_name(rest);
            let key =
                sharding_key(name).ok_or_else(|| fail("ALTER of a table with no sharding key"))?;
            let (db, c) = (self.database, self.name);
            return Ok(vec![
                format!("ALTER TABLE {db}.{name}_local ON CLUSTER {c} {change}"),
                format!("DROP TABLE IF EXISTS {db}.{name} ON CLUSTER {c}"),
                self.distributed(name, key),
            ]);
        }
        if let Some(rest) = strip_words(s, &["DROP", "TABLE", "IF", "EXISTS"]) {
            let (name, tail) = split_name(rest);
            if !tail.is_empty() || sharding_key(name).is_some() {
                return Err(fail("only views are dropped by migrations"));
            }
            return Ok(vec![format!(
                "DROP TABLE IF EXISTS {}.{name} ON CLUSTER {}",
                self.database, self.name
            )]);
        }
        let (view, if_not_exists) = match strip_words(s, &["CREATE", "VIEW", "IF", "NOT", "EXISTS"])
        {
            Some(rest) => (Some(rest), "IF NOT EXISTS "),
            None => (strip_words(s, &["CREATE", "VIEW"]), ""),
        };
        if let Some(rest) = view {
            let (name, body) = split_name(rest);
            let select = strip_words(body, &["AS"]).ok_or_else(|| fail("a view without AS"))?;
            return Ok(vec![format!(
                "CREATE VIEW {if_not_exists}{}.{name} ON CLUSTER {} AS {}",
                self.database,
                self.name,
                self.qualified(select)
            )]);
        }
        Err(fail(
            "not a CREATE TABLE, ALTER TABLE, DROP TABLE or CREATE VIEW",
        ))
    }

    fn create_table(&self, rest: &str) -> Result<Vec<String>, String> {
        let (name, after) = split_name(rest);
        let key = sharding_key(name)
            .ok_or_else(|| format!("table {name} has no sharding key in cluster::SHARDING"))?;
        let engine_at = after
            .find("ENGINE")
            .ok_or_else(|| format!("table {name} names no ENGINE"))?;
        let columns = after[..engine_at].trim();
        let engine = after[engine_at + "ENGINE".len()..]
            .trim_start()
            .strip_prefix('=')
            .ok_or_else(|| format!("table {name}: ENGINE without ="))?
            .trim_start();
        let open = engine
            .find('(')
            .ok_or_else(|| format!("table {name}: engine without arguments"))?;
        let kind = engine[..open].trim();
        if !kind.ends_with("MergeTree") || kind.starts_with("Replicated") {
            return Err(format!(
                "table {name}: only non-replicated MergeTree engines are spread ({kind})"
            ));
        }
        let close = open
            + engine[open..]
                .find(')')
                .ok_or_else(|| format!("table {name}: unclosed engine arguments"))?;
        let args = engine[open + 1..close].trim();
        let tail = engine[close + 1..].trim();
        let (db, c) = (self.database, self.name);
        let path = format!("'/clickhouse/tables/{{shard}}/{db}/{name}_local', '{{replica}}'");
        let args = if args.is_empty() {
            path
        } else {
            format!("{path}, {args}")
        };
        Ok(vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{name}_local ON CLUSTER {c}\n{columns}\nENGINE = Replicated{kind}({args})\n{tail}"
            ),
            self.distributed(name, key),
        ])
    }

    /// The `Distributed` table `name` over `<name>_local`, sharded by `key`.
    fn distributed(&self, name: &str, key: &str) -> String {
        let (db, c) = (self.database, self.name);
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {c} AS {db}.{name}_local\nENGINE = Distributed({c}, {db}, {name}_local, {key})"
        )
    }

    /// `select` with the tables and views it reads (after FROM and JOIN)
    /// qualified by the database, as each node must resolve them.
    fn qualified(&self, select: &str) -> String {
        let mut out = String::with_capacity(select.len() + 64);
        let mut previous = "";
        let mut rest = select;
        while !rest.is_empty() {
            let word_end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
            let word = &rest[..word_end];
            let is_name = word
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if is_name && ["FROM", "JOIN"].contains(&previous) {
                out.push_str(self.database);
                out.push('.');
            }
            out.push_str(word);
            if !word.is_empty() {
                previous = word;
            }
            let space_end = rest[word_end..]
                .find(|c: char| !c.is_whitespace())
                .map_or(rest.len(), |i| word_end + i);
            out.push_str(&rest[word_end..space_end]);
            rest = &rest[space_end..];
        }
        out
    }
}

/// The sharding expression of `table`, if it is one of ours.
pub fn sharding_key(table: &str) -> Option<&'static str> {
    SHARDING.iter().find(|(t, _)| *t == table).map(|(_, k)| *k)
}

/// `s` after the keywords `words` (any case, any whitespace between).
fn strip_words<'s>(s: &'s str, words: &[&str]) -> Option<&'s str> {
    let mut rest = s;
    for w in words {
        let trimmed = rest.trim_start();
        let head = trimmed.get(..w.len())?;
        if !head.eq_ignore_ascii_case(w) {
            return None;
        }
        let after = &trimmed[w.len()..];
        if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        rest = after;
    }
    Some(rest.trim_start())
}

/// The leading name of `s` and what follows it.
fn split_name(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (&s[..end], s[end..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::{MIGRATIONS, statements};

    const C: Cluster<'static> = Cluster {
        name: "lc",
        database: "ls",
    };

    #[test]
    fn a_table_becomes_replicated_local_tables_and_a_distributed_one() {
        let sql = "CREATE TABLE IF NOT EXISTS lead_scores\n(\n    lead_id String,\n    version UInt64\n)\nENGINE = ReplacingMergeTree(version)\nORDER BY lead_id";
        let out = C.rewrite(sql).unwrap();
        assert_eq!(
            out,
            [
                "CREATE TABLE IF NOT EXISTS ls.lead_scores_local ON CLUSTER lc\n(\n    lead_id String,\n    version UInt64\n)\nENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/ls/lead_scores_local', '{replica}', version)\nORDER BY lead_id",
                "CREATE TABLE IF NOT EXISTS ls.lead_scores ON CLUSTER lc AS ls.lead_scores_local\nENGINE = Distributed(lc, ls, lead_scores_local, cityHash64(lead_id))",
            ]
        );
        let events = C
            .rewrite("CREATE TABLE IF NOT EXISTS events (message_id String) ENGINE = ReplacingMergeTree() ORDER BY message_id")
            .unwrap();
        assert!(events[0].contains("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/ls/events_local', '{replica}')"), "{events:?}");
        assert!(events[1].ends_with("cityHash64(message_id))"), "{events:?}");
    }

    #[test]
    fn alters_reach_both_tables_and_views_read_the_distributed_ones() {
        assert_eq!(
            C.rewrite("ALTER TABLE events ADD COLUMN x String DEFAULT '' AFTER y")
                .unwrap(),
            [
                "ALTER TABLE ls.events_local ON CLUSTER lc ADD COLUMN x String DEFAULT '' AFTER y",
                "DROP TABLE IF EXISTS ls.events ON CLUSTER lc",
                "CREATE TABLE IF NOT EXISTS ls.events ON CLUSTER lc AS ls.events_local\nENGINE = Distributed(lc, ls, events_local, cityHash64(message_id))",
            ]
        );
        assert_eq!(
            C.rewrite("CREATE VIEW IF NOT EXISTS current_leads AS\nSELECT *\nFROM lead_scores FINAL\nWHERE merged_into = ''")
                .unwrap(),
            ["CREATE VIEW IF NOT EXISTS ls.current_leads ON CLUSTER lc AS SELECT *\nFROM ls.lead_scores FINAL\nWHERE merged_into = ''"]
        );
        assert_eq!(
            C.rewrite("DROP TABLE IF EXISTS call_list").unwrap(),
            ["DROP TABLE IF EXISTS ls.call_list ON CLUSTER lc"]
        );
    }

    #[test]
    fn what_cannot_be_spread_is_refused_with_the_reason() {
        let err = C.rewrite("DROP TABLE IF EXISTS events").unwrap_err();
        assert!(err.why.contains("only views"), "{err}");
        let err = C
            .rewrite(
                "CREATE TABLE IF NOT EXISTS mystery (x String) ENGINE = MergeTree() ORDER BY x",
            )
            .unwrap_err();
        assert!(err.why.contains("no sharding key"), "{err}");
        let err = C.rewrite("OPTIMIZE TABLE events FINAL").unwrap_err();
        assert!(err.to_string().contains("OPTIMIZE TABLE events"), "{err}");
    }

    /// Every shipped migration spreads; a new one that cannot fails here.
    #[test]
    fn every_migration_statement_has_a_cluster_form() {
        for (_, name, sql) in MIGRATIONS {
            for stmt in statements(sql) {
                let out = C.rewrite(&stmt).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(
                    out.iter().all(|s| s.contains(" ON CLUSTER lc")),
                    "{name}: {out:?}"
                );
            }
        }
    }
}
