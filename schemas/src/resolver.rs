//! Finding schemas by id and ids by schema: from the embedded plan, or from
//! any Confluent-compatible registry over HTTP. Each schema is parsed once
//! and cached for the life of the process.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use apache_avro::Schema;
use async_trait::async_trait;
use serde::Deserialize;

use crate::plan::Plan;

/// A schema known by id. `schema` is parsed once and lives for the process,
/// so decoders can borrow it without copying.
#[derive(Debug)]
pub struct ResolvedSchema {
    pub id: u32,
    pub text: String,
    pub schema: &'static Schema,
    /// Record full name, i.e. the RecordNameStrategy subject.
    pub subject: String,
}

impl ResolvedSchema {
    fn parse(id: u32, text: String) -> Result<Self, ResolveError> {
        let schema =
            Schema::parse_str(&text).map_err(|e| ResolveError::InvalidSchema(e.to_string()))?;
        Ok(Self::from_schema(id, text, schema))
    }

    fn from_schema(id: u32, text: String, schema: Schema) -> Self {
        let subject = match &schema {
            Schema::Record(r) => r.name.fullname(None),
            _ => String::new(),
        };
        // Bounded: one leak per schema id ever seen by this process.
        let schema: &'static Schema = Box::leak(Box::new(schema));
        Self {
            id,
            text,
            schema,
            subject,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("schema id {0} is not in the registry")]
    UnknownId(u32),
    #[error("subject {subject}: schema is not registered ({message})")]
    NotRegistered { subject: String, message: String },
    #[error("registry returned an invalid schema: {0}")]
    InvalidSchema(String),
    #[error("registry request failed: {0}")]
    Http(String),
    #[error("registry answered {status} (error_code {code}): {message}")]
    Registry {
        status: u16,
        code: i64,
        message: String,
    },
}

impl ResolveError {
    /// Whether retrying later may succeed (the registry was unreachable or failing).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Http(_))
            || matches!(self, Self::Registry { status, .. } if *status >= 500)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownId(_) => "unknown_id",
            Self::NotRegistered { .. } => "not_registered",
            Self::InvalidSchema(_) => "invalid_schema",
            Self::Http(_) => "http",
            Self::Registry { .. } => "registry",
        }
    }
}

#[async_trait]
pub trait SchemaResolver: Send + Sync {
    /// The writer schema for a Confluent-framed message.
    async fn schema_by_id(&self, id: u32) -> Result<Arc<ResolvedSchema>, ResolveError>;
    /// The id under which `schema_text` is registered for `subject`.
    async fn id_for(&self, subject: &str, schema_text: &str) -> Result<u32, ResolveError>;
}

/// Serves the plan compiled into the binary (or loaded from a directory),
/// with ids from its lock file.
pub struct EmbeddedResolver {
    by_id: HashMap<u32, Arc<ResolvedSchema>>,
    by_subject_text: HashMap<(String, String), u32>,
}

impl EmbeddedResolver {
    pub fn new(plan: &Plan) -> Result<Self, ResolveError> {
        let mut by_id = HashMap::new();
        let mut by_subject_text = HashMap::new();
        for (id, v) in plan.by_id() {
            by_subject_text.insert((v.subject.clone(), v.text.clone()), id);
            by_id.insert(
                id,
                Arc::new(ResolvedSchema::from_schema(
                    id,
                    v.text.clone(),
                    v.schema.clone(),
                )),
            );
        }
        Ok(Self {
            by_id,
            by_subject_text,
        })
    }
}

#[async_trait]
impl SchemaResolver for EmbeddedResolver {
    async fn schema_by_id(&self, id: u32) -> Result<Arc<ResolvedSchema>, ResolveError> {
        self.by_id
            .get(&id)
            .cloned()
            .ok_or(ResolveError::UnknownId(id))
    }

    async fn id_for(&self, subject: &str, schema_text: &str) -> Result<u32, ResolveError> {
        self.by_subject_text
            .get(&(subject.to_owned(), schema_text.to_owned()))
            .copied()
            .ok_or_else(|| ResolveError::NotRegistered {
                subject: subject.to_owned(),
                message: "not a governed version in the lock file".into(),
            })
    }
}

/// Any Confluent-compatible registry at `base_url`.
pub struct HttpResolver {
    base: String,
    client: reqwest::Client,
    by_id: RwLock<HashMap<u32, Arc<ResolvedSchema>>>,
    ids: RwLock<HashMap<(String, String), u32>>,
}

pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
}

/// The registry's answer naming a schema id (lookups and registrations).
#[derive(Deserialize)]
pub(crate) struct IdBody {
    pub(crate) id: u32,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: i64,
    message: String,
}

impl HttpResolver {
    pub fn new(base_url: &str) -> Result<Self, ResolveError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ResolveError::Http(e.to_string()))?;
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            client,
            by_id: RwLock::new(HashMap::new()),
            ids: RwLock::new(HashMap::new()),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request and decodes a 2xx JSON body, or the registry's error body.
    pub async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ResolveError> {
        let resp = req
            .header(reqwest::header::ACCEPT, CONTENT_TYPE)
            .send()
            .await
            .map_err(|e| ResolveError::Http(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ResolveError::Http(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| ResolveError::Http(format!("unexpected response body: {e}")));
        }
        let err: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        Err(ResolveError::Registry {
            status: status.as_u16(),
            code: err
                .as_ref()
                .map_or(i64::from(status.as_u16()), |e| e.error_code),
            message: err.map_or_else(
                || String::from_utf8_lossy(&body).into_owned(),
                |e| e.message,
            ),
        })
    }

    pub fn subject_url(&self, subject: &str) -> String {
        format!("{}/subjects/{}", self.base, urlencode(subject))
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[async_trait]
impl SchemaResolver for HttpResolver {
    async fn schema_by_id(&self, id: u32) -> Result<Arc<ResolvedSchema>, ResolveError> {
        if let Some(s) = self.by_id.read().expect("lock poisoned").get(&id) {
            return Ok(Arc::clone(s));
        }
        let url = format!("{}/schemas/ids/{id}", self.base);
        let body: SchemaBody = match self.call(self.client.get(url)).await {
            Err(ResolveError::Registry { code: 40403, .. }) => {
                return Err(ResolveError::UnknownId(id));
            }
            other => other?,
        };
        let resolved = Arc::new(ResolvedSchema::parse(id, body.schema)?);
        let mut cache = self.by_id.write().expect("lock poisoned");
        Ok(Arc::clone(cache.entry(id).or_insert(resolved)))
    }

    async fn id_for(&self, subject: &str, schema_text: &str) -> Result<u32, ResolveError> {
        let key = (subject.to_owned(), schema_text.to_owned());
        if let Some(id) = self.ids.read().expect("lock poisoned").get(&key) {
            return Ok(*id);
        }
        let req = self
            .client
            .post(self.subject_url(subject))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .json(&serde_json::json!({ "schema": schema_text }));
        let body: IdBody = match self.call(req).await {
            Err(ResolveError::Registry {
                code: 40401 | 40403,
                message,
                ..
            }) => {
                return Err(ResolveError::NotRegistered {
                    subject: subject.to_owned(),
                    message,
                });
            }
            other => other?,
        };
        self.ids
            .write()
            .expect("lock poisoned")
            .insert(key, body.id);
        Ok(body.id)
    }
}
