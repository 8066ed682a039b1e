//! Sources: who may send events, as what platform and tenant, under which
//! policy. Loaded from a TOML file; write keys are stored as SHA-256 hashes.

use std::{collections::HashMap, path::Path};

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use leadstream_schemas::Platform;

/// What to do with an event whose name is not in the tracking plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnplannedPolicy {
    /// Reject it to the DLQ.
    #[default]
    Block,
    /// Accept it (answer 200) and record it as a violation on the DLQ.
    Flag,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Source {
    pub id: String,
    pub platform: Platform,
    pub tenant: String,
    /// Hex SHA-256 of the write key; the key itself is never stored.
    pub write_key_sha256: String,
    #[serde(default)]
    pub unplanned: UnplannedPolicy,
    /// Events per second allowed for this key; 0 means unlimited.
    #[serde(default)]
    pub rate_limit_per_sec: u32,
}

#[derive(Debug, Deserialize)]
struct SourcesFile {
    #[serde(rename = "source")]
    sources: Vec<Source>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    #[error("cannot read sources file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("sources file {path} is invalid: {message}")]
    Invalid { path: String, message: String },
}

/// Write-key hash → source.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    by_key_hash: HashMap<String, Source>,
}

pub fn hash_key(write_key: &str) -> String {
    Sha256::digest(write_key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Sources {
    pub fn load(path: &Path) -> Result<Self, SourcesError> {
        let text = std::fs::read_to_string(path).map_err(|source| SourcesError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| SourcesError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: SourcesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        Self::from_sources(file.sources)
    }

    pub fn from_sources(sources: Vec<Source>) -> Result<Self, String> {
        let mut by_key_hash = HashMap::new();
        for s in sources {
            let key = s.write_key_sha256.to_ascii_lowercase();
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "source {}: write_key_sha256 must be 64 hex characters",
                    s.id
                ));
            }
            if let Some(other) = by_key_hash.insert(key, s.clone()) {
                return Err(format!(
                    "sources {} and {} share a write key",
                    other.id, s.id
                ));
            }
        }
        if by_key_hash.is_empty() {
            return Err("no [[source]] entries".into());
        }
        Ok(Self { by_key_hash })
    }

    pub fn authenticate(&self, write_key: &str) -> Option<&Source> {
        self.by_key_hash.get(&hash_key(write_key))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Source> {
        self.by_key_hash.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticates_by_hashed_key_and_rejects_bad_files() {
        let text = format!(
            "[[source]]\nid = \"web\"\nplatform = \"web\"\ntenant = \"t\"\nwrite_key_sha256 = \"{}\"\nunplanned = \"flag\"\n",
            hash_key("secret-key")
        );
        let sources = Sources::parse(&text).unwrap();
        let s = sources.authenticate("secret-key").unwrap();
        assert_eq!(
            (s.id.as_str(), s.platform, s.unplanned),
            ("web", Platform::Web, UnplannedPolicy::Flag)
        );
        assert!(sources.authenticate("other").is_none());
        assert!(Sources::parse("[[source]]\nid = \"x\"\nplatform = \"tv\"\ntenant = \"t\"\nwrite_key_sha256 = \"00\"\n").is_err());
        assert!(Sources::parse(&text.replace(&hash_key("secret-key"), "abc")).is_err());
    }

    #[test]
    fn shipped_default_sources_file_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config/sources.toml");
        let sources = Sources::load(Path::new(path)).unwrap();
        assert!(sources.iter().any(|s| s.platform == Platform::MiniProgram));
    }
}
