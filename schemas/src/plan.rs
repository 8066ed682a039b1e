//! Loading the tracking plan: `avro/<event>/v<N>.avsc` files plus the lock
//! file, parsed once into [`Plan`].

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use apache_avro::Schema;
use sha2::{Digest, Sha256};

use crate::{
    lock::{LOCK_FILE, Lock},
    problem::Problem,
};

/// One published version of one event schema.
#[derive(Debug)]
pub struct SchemaVersion {
    pub event: String,
    /// RecordNameStrategy subject: the record's full name.
    pub subject: String,
    pub version: u32,
    /// Path for messages, relative to the plan root (`avro/<event>/v<N>.avsc`).
    pub file: String,
    pub json: serde_json::Value,
    /// Compact JSON with sorted keys: what the registry serves and the lock fingerprints.
    pub text: String,
    pub schema: Schema,
    pub sha256: String,
}

/// All versions of one event, oldest first.
#[derive(Debug)]
pub struct Subject {
    pub event: String,
    pub subject: String,
    pub versions: Vec<Arc<SchemaVersion>>,
}

impl Subject {
    pub fn latest(&self) -> &Arc<SchemaVersion> {
        self.versions
            .last()
            .expect("a subject has at least one version")
    }
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Tracking-plan events SDKs may send, by event name.
    pub subjects: BTreeMap<String, Subject>,
    /// Records the pipeline itself produces (e.g. `lead_score`), from
    /// `avro/derived/<name>/v<N>.avsc`: governed, locked and served like
    /// events, but never accepted from SDKs.
    pub derived: BTreeMap<String, Subject>,
    pub lock: Lock,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read tracking plan at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tracking plan has {} problem(s):\n{}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl Plan {
    /// The plan compiled into this binary from `schemas/avro`.
    pub fn embedded() -> Result<Self, PlanError> {
        let files = crate::embedded::FILES
            .iter()
            .map(|(path, text)| ((*path).to_owned(), (*text).to_owned()))
            .collect();
        Self::strict(Self::from_files(files))
    }

    /// Loads `<dir>/avro/**`, failing on any structural problem.
    pub fn load_dir(dir: &Path) -> Result<Self, PlanError> {
        Self::strict(Self::from_files(read_tree(&dir.join("avro"))?))
    }

    /// Reads `<dir>/avro/**`, keeping every problem found for `schemas check`.
    pub fn read_dir_lenient(dir: &Path) -> Result<(Self, Vec<Problem>), PlanError> {
        Ok(Self::from_files(read_tree(&dir.join("avro"))?))
    }

    fn strict((plan, problems): (Self, Vec<Problem>)) -> Result<Self, PlanError> {
        let missing: Vec<Problem> = plan
            .versions()
            .filter(|v| plan.id_of(&v.subject, v.version).is_none())
            .map(|v| {
                Problem::new(
                    &v.file,
                    "lock_missing",
                    "version has no pinned id in the lock file; run `leadstream schemas lock`",
                )
            })
            .collect();
        if problems.is_empty() && missing.is_empty() {
            Ok(plan)
        } else {
            Err(PlanError::Invalid(
                problems.into_iter().chain(missing).collect(),
            ))
        }
    }

    /// Parses files given as (path relative to `avro/`, contents).
    pub fn from_files(files: Vec<(String, String)>) -> (Self, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut lock = Lock::default();
        let mut by_event: BTreeMap<String, BTreeMap<u32, SchemaVersion>> = BTreeMap::new();
        let mut by_derived: BTreeMap<String, BTreeMap<u32, SchemaVersion>> = BTreeMap::new();
        for (rel, text) in files {
            let file = format!("avro/{rel}");
            if rel == LOCK_FILE {
                match serde_json::from_str(&text) {
                    Ok(parsed) => lock = parsed,
                    Err(e) => problems.push(Problem::new(&file, "lock_unreadable", e.to_string())),
                }
                continue;
            }
            if rel.ends_with(".md") {
                continue;
            }
            let (target, path) = match rel.strip_prefix(DERIVED_DIR) {
                Some(inner) => (&mut by_derived, inner),
                None => (&mut by_event, rel.as_str()),
            };
            let Some((event, version)) = parse_path(path) else {
                problems.push(Problem::new(
                    &file,
                    "file_layout",
                    "schema files must be named avro/<event>/v<N>.avsc",
                ));
                continue;
            };
            match parse_version(&event, version, &file, &text) {
                Ok(v) => {
                    target.entry(event).or_default().insert(version, v);
                }
                Err(p) => problems.push(p),
            }
        }
        let subjects = collect_subjects(by_event, &mut problems);
        let derived = collect_subjects(by_derived, &mut problems);
        (
            Self {
                subjects,
                derived,
                lock,
            },
            problems,
        )
    }

    /// Every version of every subject, events first.
    pub fn versions(&self) -> impl Iterator<Item = &Arc<SchemaVersion>> {
        self.all_subjects().flat_map(|s| s.versions.iter())
    }

    /// Event subjects then derived ones.
    pub fn all_subjects(&self) -> impl Iterator<Item = &Subject> {
        self.subjects.values().chain(self.derived.values())
    }

    pub fn subject(&self, subject: &str) -> Option<&Subject> {
        self.all_subjects().find(|s| s.subject == subject)
    }

    pub fn id_of(&self, subject: &str, version: u32) -> Option<u32> {
        self.lock.id_of(subject, version)
    }

    /// Schema id → version, for every locked version.
    pub fn by_id(&self) -> HashMap<u32, Arc<SchemaVersion>> {
        self.versions()
            .filter_map(|v| Some((self.id_of(&v.subject, v.version)?, Arc::clone(v))))
            .collect()
    }
}

/// Where records the pipeline produces live, under `avro/`.
pub const DERIVED_DIR: &str = "derived/";

fn collect_subjects(
    by_name: BTreeMap<String, BTreeMap<u32, SchemaVersion>>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Subject> {
    let mut subjects = BTreeMap::new();
    for (event, versions) in by_name {
        for (expected, (&found, v)) in (1u32..).zip(versions.iter()) {
            if expected != found {
                problems.push(Problem::new(
                    &v.file,
                    "version_gap",
                    format!(
                        "versions of {event} must be v1, v2, ... without gaps; expected v{expected}"
                    ),
                ));
                break;
            }
        }
        let versions: Vec<Arc<SchemaVersion>> = versions.into_values().map(Arc::new).collect();
        let subject = versions[0].subject.clone();
        subjects.insert(
            event.clone(),
            Subject {
                event,
                subject,
                versions,
            },
        );
    }
    subjects
}

fn parse_path(rel: &str) -> Option<(String, u32)> {
    let (event, file) = rel.split_once('/')?;
    let version = file
        .strip_prefix('v')?
        .strip_suffix(".avsc")?
        .parse()
        .ok()?;
    (!event.is_empty() && !file.contains('/')).then(|| (event.to_owned(), version))
}

fn parse_version(
    event: &str,
    version: u32,
    file: &str,
    text: &str,
) -> Result<SchemaVersion, Problem> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Problem::new(file, "invalid_json", e.to_string()))?;
    let schema =
        Schema::parse(&json).map_err(|e| Problem::new(file, "invalid_avro", e.to_string()))?;
    let Schema::Record(record) = &schema else {
        return Err(Problem::new(
            file,
            "not_a_record",
            "an event schema must be an Avro record",
        ));
    };
    let subject = record.name.fullname(None);
    // serde_json's map is ordered by key, so this text is stable under reformatting.
    let text = serde_json::to_string(&json).expect("a parsed JSON value serializes");
    let sha256 = hex(&Sha256::digest(text.as_bytes()));
    Ok(SchemaVersion {
        event: event.to_owned(),
        subject,
        version,
        file: file.to_owned(),
        json,
        text,
        schema,
        sha256,
    })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_tree(root: &Path) -> Result<Vec<(String, String)>, PlanError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|source| PlanError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|source| PlanError::Io {
                    path: dir.clone(),
                    source,
                })?
                .path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = fs::read_to_string(&path).map_err(|source| PlanError::Io {
                path: path.clone(),
                source,
            })?;
            let rel = path
                .strip_prefix(root)
                .expect("walked below root")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, text));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_plan_loads_with_every_version_locked() {
        let plan = Plan::embedded().unwrap();
        assert!(plan.subjects.len() >= 13);
        let pv = &plan.subjects["page_viewed"];
        assert_eq!(pv.subject, "leadstream.events.PageViewed");
        assert_eq!(pv.versions.len(), 2);
        assert_eq!(plan.by_id().len(), plan.versions().count());
    }

    #[test]
    fn paths_follow_the_layout() {
        assert_eq!(
            parse_path("page_viewed/v2.avsc"),
            Some(("page_viewed".into(), 2))
        );
        assert_eq!(parse_path("page_viewed/2.avsc"), None);
        assert_eq!(parse_path("v1.avsc"), None);
        assert_eq!(parse_path("a/b/v1.avsc"), None);
    }
}
