//! The lock file pins (subject, version) → schema id forever, and records a
//! fingerprint so a published version cannot be edited in place.

use serde::{Deserialize, Serialize};

use crate::{plan::Plan, problem::Problem};

pub const LOCK_FILE: &str = "schemas.lock.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lock {
    pub schemas: Vec<LockEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockEntry {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub sha256: String,
}

impl Lock {
    pub fn id_of(&self, subject: &str, version: u32) -> Option<u32> {
        self.entry(subject, version).map(|e| e.id)
    }

    fn entry(&self, subject: &str, version: u32) -> Option<&LockEntry> {
        self.schemas
            .iter()
            .find(|e| e.subject == subject && e.version == version)
    }

    /// Adds entries for versions not yet pinned, with ids after the highest
    /// ever given. Existing entries are never changed.
    pub fn extended_for(&self, plan: &Plan) -> Lock {
        let mut lock = self.clone();
        let mut next = lock.schemas.iter().map(|e| e.id).max().unwrap_or(0) + 1;
        for v in plan.versions() {
            if lock.entry(&v.subject, v.version).is_none() {
                lock.schemas.push(LockEntry {
                    subject: v.subject.clone(),
                    version: v.version,
                    id: next,
                    sha256: v.sha256.clone(),
                });
                next += 1;
            }
        }
        lock
    }

    pub fn to_pretty_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("lock serializes") + "\n"
    }
}

/// Lock-file drift: unpinned versions, edited published versions, pinned
/// versions whose file is gone, and ids given twice.
pub fn drift(plan: &Plan) -> Vec<Problem> {
    let lock_file = format!("avro/{LOCK_FILE}");
    let mut problems = Vec::new();
    for v in plan.versions() {
        match plan.lock.entry(&v.subject, v.version) {
            None => problems.push(Problem::new(
                &v.file,
                "lock_missing",
                "version has no pinned id; run `leadstream schemas lock` and commit the lock file",
            )),
            Some(e) if e.sha256 != v.sha256 => problems.push(Problem::new(
                &v.file,
                "published_version_edited",
                format!(
                    "v{} of {} was changed after it was pinned (id {}); published versions are immutable, add v{} instead",
                    v.version,
                    v.subject,
                    e.id,
                    plan.subject(&v.subject).map_or(v.version + 1, |s| s.versions.len() as u32 + 1)
                ),
            )),
            Some(_) => {}
        }
    }
    for e in &plan.lock.schemas {
        let present = plan
            .versions()
            .any(|v| v.subject == e.subject && v.version == e.version);
        if !present {
            problems.push(Problem::new(
                &lock_file,
                "published_version_deleted",
                format!("{} v{} (id {}) is pinned but its file is gone; published versions are never deleted", e.subject, e.version, e.id),
            ));
        }
    }
    let mut seen = std::collections::HashMap::new();
    for e in &plan.lock.schemas {
        if let Some(other) = seen.insert(e.id, e) {
            problems.push(Problem::new(
                &lock_file,
                "duplicate_id",
                format!(
                    "id {} is pinned to both {} v{} and {} v{}",
                    e.id, other.subject, other.version, e.subject, e.version
                ),
            ));
        }
    }
    problems
}
