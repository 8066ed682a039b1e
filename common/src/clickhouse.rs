//! Connecting to ClickHouse across server generations. The `clickhouse`
//! crate validates row types with `RowBinaryWithNamesAndTypes`, which old
//! servers (Debian's 18.16, used in CI) cannot produce, so validation is
//! switched on only for servers that support it, detected at connect time.

use clickhouse::Client;

/// Oldest server major version we let the crate validate against; the crate
/// itself targets currently supported releases.
pub const MIN_VALIDATING_MAJOR: u32 = 24;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("ClickHouse at {url} is unreachable or refused `SELECT version()`: {source}")]
    Unreachable {
        url: String,
        source: clickhouse::error::Error,
    },
    #[error("ClickHouse at {url} reported an unparseable version {version:?}")]
    BadVersion { url: String, version: String },
}

/// A connected client plus what the server told us about itself.
#[derive(Clone)]
pub struct Connection {
    pub client: Client,
    pub version: String,
    pub major: u32,
}

/// Connects to `url` (HTTP interface), asks the server its version and
/// returns a client with row validation matching what the server supports.
pub async fn connect(url: &str, database: Option<&str>) -> Result<Connection, ConnectError> {
    let mut base = Client::default().with_url(url).with_validation(false);
    if let Some(db) = database {
        base = base.with_database(db);
    }
    let version: String = base
        .query("SELECT version()")
        .fetch_one()
        .await
        .map_err(|source| ConnectError::Unreachable {
            url: url.to_owned(),
            source,
        })?;
    let major = major_version(&version).ok_or_else(|| ConnectError::BadVersion {
        url: url.to_owned(),
        version: version.clone(),
    })?;
    let client = base.with_validation(major >= MIN_VALIDATING_MAJOR);
    Ok(Connection {
        client,
        version,
        major,
    })
}

pub fn major_version(version: &str) -> Option<u32> {
    version.split('.').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_major_versions() {
        assert_eq!(major_version("18.16.1"), Some(18));
        assert_eq!(major_version("25.8.2.29"), Some(25));
        assert_eq!(major_version("dev"), None);
    }
}
