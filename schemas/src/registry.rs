//! `leadstream registry`: the Confluent Schema Registry REST API subset,
//! served read-only from the governed plan. Governed schemas change through
//! review of `schemas/`, so registering anything new is refused.

use std::{future::Future, sync::Arc};

use apache_avro::Schema;
use axum::{
    Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::{
    COMPATIBILITY, compat,
    plan::{Plan, SchemaVersion, Subject},
    resolver::CONTENT_TYPE,
};

const GOVERNED: &str = "governed schemas change through schemas/avro in the leadstream repository: add a version file, run `leadstream schemas check` and `leadstream schemas lock`, and get it reviewed";

/// A Confluent-style error: HTTP status plus `{"error_code", "message"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    fn subject_not_found(s: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40401,
            format!("Subject '{s}' not found."),
        )
    }
    fn version_not_found(v: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40402,
            format!("Version {v} not found."),
        )
    }
    fn schema_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, 40403, "Schema not found")
    }
    fn invalid_schema(msg: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Invalid schema: {msg}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        reply(
            self.status,
            json!({ "error_code": self.code, "message": self.message }),
        )
    }
}

fn reply(status: StatusCode, body: Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: Json) -> Result<Response, ApiError> {
    Ok(reply(StatusCode::OK, body))
}

type PlanState = Arc<Plan>;

pub fn router(plan: Arc<Plan>) -> Router {
    Router::new()
        .route("/", get(|| async { reply(StatusCode::OK, json!({})) }))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route("/subjects/{subject}/versions/{version}", get(get_version))
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_by_id))
        .route(
            "/schemas/types",
            get(|| async { reply(StatusCode::OK, json!(["AVRO"])) }),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility_one),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_all),
        )
        .route(
            "/config",
            get(|| async {
                reply(
                    StatusCode::OK,
                    json!({ "compatibilityLevel": COMPATIBILITY }),
                )
            }),
        )
        .route("/config/{subject}", get(subject_config))
        .route(
            "/mode",
            get(|| async { reply(StatusCode::OK, json!({ "mode": "READONLY" })) }),
        )
        .with_state(plan)
}

/// Serves the registry on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    plan: Arc<Plan>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(plan))
        .with_graceful_shutdown(shutdown)
        .await
}

fn subject<'a>(plan: &'a Plan, s: &str) -> Result<&'a Subject, ApiError> {
    plan.subject(s)
        .ok_or_else(|| ApiError::subject_not_found(s))
}

fn version<'a>(subject: &'a Subject, v: &str) -> Result<&'a Arc<SchemaVersion>, ApiError> {
    let latest = v == "latest" || v == "-1";
    let n: Option<u32> = v.parse().ok().filter(|n| *n >= 1);
    if !latest && n.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
            format!(
                "The specified version '{v}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
            ),
        ));
    }
    if latest {
        return Ok(subject.latest());
    }
    subject
        .versions
        .iter()
        .find(|sv| Some(sv.version) == n)
        .ok_or_else(|| ApiError::version_not_found(v))
}

fn version_body(plan: &Plan, v: &SchemaVersion) -> Json {
    json!({
        "subject": v.subject,
        "version": v.version,
        "id": plan.id_of(&v.subject, v.version),
        "schema": v.text,
    })
}

async fn list_subjects(State(plan): State<PlanState>) -> Result<Response, ApiError> {
    let mut subjects: Vec<&str> = plan.all_subjects().map(|s| s.subject.as_str()).collect();
    subjects.sort_unstable();
    ok(json!(subjects))
}

async fn list_versions(
    State(plan): State<PlanState>,
    Path(s): Path<String>,
) -> Result<Response, ApiError> {
    let subject = subject(&plan, &s)?;
    ok(json!(
        subject
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>()
    ))
}

async fn get_version(
    State(plan): State<PlanState>,
    Path((s, v)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let sv = version(subject(&plan, &s)?, &v)?;
    ok(version_body(&plan, sv))
}

async fn get_version_schema(
    State(plan): State<PlanState>,
    Path((s, v)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let sv = version(subject(&plan, &s)?, &v)?;
    ok(sv.json.clone())
}

/// The schema version the registry serves under `id` (a path segment).
fn version_by_id(plan: &Plan, id: &str) -> Result<Arc<SchemaVersion>, ApiError> {
    let id: u32 = id.parse().map_err(|_| ApiError::schema_not_found())?;
    plan.by_id()
        .remove(&id)
        .ok_or_else(ApiError::schema_not_found)
}

async fn schema_by_id(
    State(plan): State<PlanState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let v = version_by_id(&plan, &id)?;
    ok(json!({ "schema": v.text }))
}

async fn versions_by_id(
    State(plan): State<PlanState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let v = version_by_id(&plan, &id)?;
    ok(json!([{ "subject": v.subject, "version": v.version }]))
}

async fn subject_config(
    State(plan): State<PlanState>,
    Path(s): Path<String>,
) -> Result<Response, ApiError> {
    subject(&plan, &s)?;
    ok(json!({ "compatibilityLevel": COMPATIBILITY }))
}

#[derive(Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

/// Parses a `{"schema": "..."}` body (Confluent clients send it as
/// `application/vnd.schemaregistry.v1+json`, so no content-type check).
fn parse_request(body: &Bytes) -> Result<Schema, ApiError> {
    let req: SchemaRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Unrecognized request body: {e}"),
        )
    })?;
    if let Some(t) = req.schema_type.as_deref()
        && t != "AVRO"
    {
        return Err(ApiError::invalid_schema(format!(
            "schema type {t} is not served here; the tracking plan is AVRO"
        )));
    }
    Schema::parse_str(&req.schema).map_err(ApiError::invalid_schema)
}

/// The newest governed version equal to `schema` (same canonical form).
fn find_match<'a>(subject: &'a Subject, schema: &Schema) -> Option<&'a Arc<SchemaVersion>> {
    let canonical = schema.canonical_form();
    subject
        .versions
        .iter()
        .rev()
        .find(|v| v.schema.canonical_form() == canonical)
}

async fn lookup(
    State(plan): State<PlanState>,
    Path(s): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let subject = subject(&plan, &s)?;
    let schema = parse_request(&body)?;
    let v = find_match(subject, &schema).ok_or_else(ApiError::schema_not_found)?;
    ok(version_body(&plan, v))
}

async fn register(
    State(plan): State<PlanState>,
    Path(s): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let schema = parse_request(&body)?;
    let Some(subject) = plan.subject(&s) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42205,
            format!(
                "Subject '{s}' is not in the tracking plan and this registry is read-only; {GOVERNED}."
            ),
        ));
    };
    if let Some(v) = find_match(subject, &schema) {
        return ok(json!({ "id": plan.id_of(&v.subject, v.version) }));
    }
    let problems = transitive_problems(subject, &schema);
    if !problems.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{s}\", details: [{}]; {GOVERNED}.",
                problems.join(", ")
            ),
        ));
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        42205,
        format!(
            "Subject '{s}' is governed and this registry is read-only; the schema is compatible, but {GOVERNED}."
        ),
    ))
}

fn transitive_problems(subject: &Subject, schema: &Schema) -> Vec<String> {
    subject
        .versions
        .iter()
        .flat_map(|v| {
            compat::incompatibilities(&v.schema, schema)
                .into_iter()
                .map(move |(field, rule, msg)| format!("v{}: {field}: {rule}: {msg}", v.version))
        })
        .collect()
}

#[derive(Deserialize)]
struct Verbose {
    /// Clients send `true`, `True` or nothing.
    #[serde(default)]
    verbose: Option<String>,
}

impl Verbose {
    fn on(&self) -> bool {
        self.verbose
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

fn compatibility_reply(problems: Vec<String>, verbose: bool) -> Result<Response, ApiError> {
    let mut body = json!({ "is_compatible": problems.is_empty() });
    if verbose {
        body["messages"] = json!(problems);
    }
    ok(body)
}

async fn compatibility_one(
    State(plan): State<PlanState>,
    Path((s, v)): Path<(String, String)>,
    Query(q): Query<Verbose>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let sv = version(subject(&plan, &s)?, &v)?;
    let schema = parse_request(&body)?;
    let problems = compat::incompatibilities(&sv.schema, &schema)
        .into_iter()
        .map(|(field, rule, msg)| format!("{field}: {rule}: {msg}"))
        .collect();
    compatibility_reply(problems, q.on())
}

async fn compatibility_all(
    State(plan): State<PlanState>,
    Path(s): Path<String>,
    Query(q): Query<Verbose>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let subject = subject(&plan, &s)?;
    let schema = parse_request(&body)?;
    compatibility_reply(transitive_problems(subject, &schema), q.on())
}
