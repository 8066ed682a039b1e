//! `leadstream schemas publish`: registers every governed version, oldest
//! first, into an external Confluent-compatible registry.

use crate::{
    COMPATIBILITY,
    plan::Plan,
    resolver::{CONTENT_TYPE, HttpResolver, IdBody, ResolveError},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub subject: String,
    pub version: u32,
    /// The id the external registry gave; may differ from the lock file's.
    pub id: u32,
}

/// Registers each version in order. When `set_compatibility`, first sets
/// each subject's level to BACKWARD_TRANSITIVE so the registry enforces what
/// `schemas check` enforces.
pub async fn publish(
    plan: &Plan,
    registry: &HttpResolver,
    set_compatibility: bool,
) -> Result<Vec<Published>, ResolveError> {
    let mut out = Vec::new();
    for subject in plan.all_subjects() {
        if set_compatibility {
            let req = registry
                .client()
                .put(format!(
                    "{}/config/{}",
                    registry.base_url(),
                    subject.subject
                ))
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .json(&serde_json::json!({ "compatibility": COMPATIBILITY }));
            let _: serde_json::Value = registry.call(req).await?;
        }
        for v in &subject.versions {
            let req = registry
                .client()
                .post(format!("{}/versions", registry.subject_url(&v.subject)))
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .json(&serde_json::json!({ "schema": v.text }));
            let IdBody { id } = registry.call(req).await?;
            out.push(Published {
                subject: v.subject.clone(),
                version: v.version,
                id,
            });
        }
    }
    Ok(out)
}
