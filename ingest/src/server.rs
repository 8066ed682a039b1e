//! The HTTP shell: Segment routes, auth, limits, gzip, CORS, health and
//! metrics. Each request is validated event by event, then made durable
//! (Kafka ack, or fsync'd spool) before it is answered.

use std::{
    collections::HashMap,
    io::Read,
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::{Value as Json, json, value::RawValue};
use tokio::sync::Notify;
use tower_http::cors::{Any, CorsLayer};

use crate::{
    batch::RequestEvents,
    metrics as m,
    pipeline::{Pipeline, Record, Rejection, mask_unparseable},
    publish::Publisher,
    segment::Incoming,
    sources::Sources,
    spool::{Spool, SpoolError},
    wire::{Lenient, Loose, SegmentContext, SegmentEvent},
};

/// Request and event limits (Segment's, by default).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_batch_events: usize,
    pub max_gzip_ratio: usize,
    pub max_skew_ms: i64,
    pub spool_max_bytes: u64,
    /// Longest pause between two chunks of a request body.
    pub body_timeout: Duration,
    /// A whole request, body and Kafka acks included, within this.
    pub request_timeout: Duration,
    pub conn: crate::conn::ConnLimits,
}

pub struct AppState {
    pub pipeline: Pipeline,
    pub sources: Sources,
    pub publisher: Arc<dyn Publisher>,
    pub spool: Arc<Spool>,
    pub dedupe: crate::dedupe::Dedupe,
    pub limiters: HashMap<String, DefaultDirectRateLimiter>,
    pub limits: Limits,
    pub replay: Notify,
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
    /// Where the per-minute pipeline metrics go: (brokers, topic, listen address).
    pub pipeline_metrics: Option<(String, String, std::net::SocketAddr)>,
}

impl AppState {
    pub fn limiters_for(sources: &Sources) -> HashMap<String, DefaultDirectRateLimiter> {
        sources
            .iter()
            .filter_map(|s| {
                let per_sec = NonZeroU32::new(s.rate_limit_per_sec)?;
                Some((
                    s.id.clone(),
                    RateLimiter::direct(Quota::per_second(per_sec)),
                ))
            })
            .collect()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::CONTENT_ENCODING,
            "x-write-key".parse().expect("valid header"),
        ])
        .max_age(Duration::from_secs(3600));
    use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
    let body_limit = state.limits.max_batch_bytes;
    Router::new()
        .route("/v1/{kind}", post(ingest))
        .route(
            "/metrics",
            get(|State(s): State<Arc<AppState>>| async move { s.prometheus.render() }),
        )
        .route("/_liveness", get(|| async { "ok" }))
        .route("/_readiness", get(readiness))
        .layer(DefaultBodyLimit::max(body_limit))
        // A client that stops sending mid-body is cut off after the body
        // timeout (the read fails: 400), and one that trickles it after the
        // request timeout (408): no request holds a connection for ever.
        .layer(RequestBodyTimeoutLayer::new(state.limits.body_timeout))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.limits.request_timeout,
        ))
        .layer(cors)
        .with_state(state)
}

async fn readiness(State(s): State<Arc<AppState>>) -> Response {
    let spool_ok = s.spool.used_bytes() < s.limits.spool_max_bytes / 10 * 9;
    let broker = s.publisher.healthy();
    let body = json!({ "broker": broker, "spool_bytes": s.spool.used_bytes(), "spool_has_room": spool_ok });
    // Ready while Kafka is up, or while the spool can still absorb an outage.
    let status = if broker || spool_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Errors that answer the whole request.
#[derive(Debug)]
enum RequestError {
    BadBody(String),
    Unauthorized,
    TooLarge(String),
    RateLimited,
    Unavailable(String),
    NotFound(String),
}

/// The `reason` of every answer that refuses a whole request, in one place
/// (per-event reasons: [`crate::pipeline::REASONS`]).
pub const REQUEST_REASONS: [&str; 6] = [
    "bad_json",
    "too_large",
    "unauthorized_source",
    "rate_limited",
    "unavailable",
    "not_found",
];

impl RequestError {
    fn reason(&self) -> &'static str {
        match self {
            Self::BadBody(_) => "bad_json",
            Self::Unauthorized => "unauthorized_source",
            Self::TooLarge(_) => "too_large",
            Self::RateLimited => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::NotFound(_) => "not_found",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadBody(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let reason = self.reason();
        let message = match self {
            Self::BadBody(m) | Self::TooLarge(m) | Self::Unavailable(m) | Self::NotFound(m) => m,
            Self::Unauthorized => "missing or unknown write key".to_owned(),
            Self::RateLimited => "over the write key's rate limit".to_owned(),
        };
        let mut resp = (
            status,
            axum::Json(json!({ "success": false, "reason": reason, "message": message })),
        )
            .into_response();
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

const ROUTES: [&str; 8] = [
    "track", "page", "screen", "identify", "alias", "group", "batch", "import",
];

async fn ingest(
    State(s): State<Arc<AppState>>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = ROUTES
        .iter()
        .copied()
        .find(|r| *r == kind)
        .unwrap_or("unknown");
    let resp = match handle(&s, route, &headers, body).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    metrics::counter!(m::HTTP_REQUESTS, "route" => route, "status" => resp.status().as_str().to_owned()).increment(1);
    resp
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    context: Lenient<SegmentContext<'a>>,
    #[serde(rename = "sentAt", default, borrow)]
    sent_at: Loose<'a>,
    #[serde(rename = "writeKey", default)]
    write_key: Option<String>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn header_key(headers: &HeaderMap) -> Option<String> {
    if let Some(k) = headers.get("x-write-key").and_then(|v| v.to_str().ok()) {
        return Some(k.to_owned());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = auth
        .strip_prefix("Basic ")
        .or_else(|| auth.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(
        text.split_once(':')
            .map_or(text.as_str(), |(user, _)| user)
            .to_owned(),
    )
}

fn decompress(headers: &HeaderMap, body: Bytes, limits: &Limits) -> Result<Bytes, RequestError> {
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok(body);
    }
    let cap = limits
        .max_batch_bytes
        .min(body.len().saturating_mul(limits.max_gzip_ratio));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| RequestError::BadBody(format!("gzip body does not decompress: {e}")))?;
    if out.len() > cap {
        return Err(RequestError::TooLarge(format!(
            "decompressed body exceeds {cap} bytes (limit {} bytes, ratio {}:1)",
            limits.max_batch_bytes, limits.max_gzip_ratio
        )));
    }
    Ok(out.into())
}

async fn handle(
    s: &Arc<AppState>,
    route: &'static str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, RequestError> {
    if route == "unknown" {
        return Err(RequestError::NotFound(format!(
            "no such endpoint; use /v1/{{{}}}",
            ROUTES.join(",")
        )));
    }
    let received_at_ms = now_ms();
    let body = decompress(headers, body, &s.limits)?;
    let batch_route = route == "batch" || route == "import";
    let key_from_header = header_key(headers);

    // Parse once: a batch keeps each event as raw text (for its size), read
    // into the typed wire format below; a single call is one event of the
    // route's type.
    let unparseable = |message: String| {
        bad_body(
            s,
            key_from_header.as_deref(),
            &body,
            received_at_ms,
            message,
        )
    };
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(e) => return Err(unparseable(e.to_string()).await),
    };
    let mut single: Option<SegmentEvent<'_>> = None;
    type Parsed<'a> = (
        Vec<&'a str>,
        Option<SegmentContext<'a>>,
        Option<Loose<'a>>,
        Option<String>,
    );
    let (raw_events, batch_context, batch_sent_at, body_key): Parsed<'_> = if batch_route {
        let parsed: BatchBody<'_> = match serde_json::from_str(text) {
            Ok(b) => b,
            Err(e) => return Err(unparseable(e.to_string()).await),
        };
        if parsed.batch.len() > s.limits.max_batch_events {
            return Err(RequestError::TooLarge(format!(
                "batch of {} events exceeds {}",
                parsed.batch.len(),
                s.limits.max_batch_events
            )));
        }
        (
            parsed.batch.iter().map(|r| r.get()).collect(),
            parsed.context.0,
            (!parsed.sent_at.is_absent()).then_some(parsed.sent_at),
            parsed.write_key,
        )
    } else {
        // A single call's body is its event: unparseable means 400.
        let parsed = match SegmentEvent::parse(text) {
            Ok(v) => v,
            Err(e) => return Err(unparseable(e.to_string()).await),
        };
        let key = parsed.write_key.as_str().map(str::to_owned);
        single = Some(parsed);
        (vec![text], None, None, key)
    };

    let source = key_from_header
        .or(body_key)
        .and_then(|k| s.sources.authenticate(&k).cloned())
        .ok_or_else(|| {
            metrics::counter!(m::UNAUTHORIZED).increment(1);
            RequestError::Unauthorized
        })?;
    if let Some(limiter) = s.limiters.get(&source.id) {
        let n = NonZeroU32::new(raw_events.len().max(1) as u32).expect("at least one");
        if !matches!(limiter.check_n(n), Ok(Ok(()))) {
            metrics::counter!(m::RATE_LIMITED).increment(1);
            return Err(RequestError::RateLimited);
        }
    }
    let platform = source.platform.as_str();
    metrics::counter!(m::EVENTS_RECEIVED, "platform" => platform)
        .increment(raw_events.len() as u64);

    let inc = Incoming {
        source: &source,
        received_at_ms,
        max_skew_ms: s.limits.max_skew_ms,
        batch_context: batch_context.as_ref(),
        batch_sent_at: batch_sent_at.as_ref(),
    };
    let events = RequestEvents {
        texts: raw_events,
        single,
        route_type: (!batch_route).then_some(route),
    };
    let mut outcome = s
        .pipeline
        .process_batch(events, &inc, s.limits.max_event_bytes, &s.dedupe);
    make_durable(s, std::mem::take(&mut outcome.records)).await?;
    s.dedupe.remember(std::mem::take(&mut outcome.seen));
    outcome.record_metrics(platform);
    Ok(axum::Json(outcome.response()).into_response())
}

/// An unparseable body: 400, and (when the source is known) kept on the DLQ.
async fn bad_body(
    s: &Arc<AppState>,
    key: Option<&str>,
    body: &[u8],
    received_at_ms: i64,
    message: String,
) -> RequestError {
    metrics::counter!(m::EVENTS_REJECTED, "reason" => "bad_json").increment(1);
    if let Some(source) = key.and_then(|k| s.sources.authenticate(k)) {
        let inc = Incoming {
            source,
            received_at_ms,
            max_skew_ms: 0,
            batch_context: None,
            batch_sent_at: None,
        };
        let r = Rejection {
            index: 0,
            message_id: None,
            reason: "bad_json",
            field: None,
            message: message.clone(),
        };
        let record = s
            .pipeline
            .dlq_record(&Json::String(mask_unparseable(body, 4096)), &r, &inc);
        if let Err(e) = make_durable(s, vec![record]).await {
            return e;
        }
    }
    RequestError::BadBody(format!("body is not valid JSON: {message}"))
}

/// Kafka first; whatever Kafka did not acknowledge goes to the spool. While
/// the spool holds a backlog, new records queue behind it to keep order.
async fn make_durable(s: &Arc<AppState>, records: Vec<Record>) -> Result<(), RequestError> {
    if records.is_empty() {
        return Ok(());
    }
    let to_spool = if s.spool.is_empty() {
        let results = s.publisher.send_all(&records).await;
        records
            .into_iter()
            .zip(results)
            .filter_map(|(r, res)| res.is_err().then_some(r))
            .collect::<Vec<_>>()
    } else {
        records
    };
    if to_spool.is_empty() {
        return Ok(());
    }
    let n = to_spool.len() as u64;
    let spool = Arc::clone(&s.spool);
    let result = tokio::task::spawn_blocking(move || spool.append(&to_spool))
        .await
        .map_err(|e| RequestError::Unavailable(format!("spool task failed: {e}")))?;
    metrics::gauge!(m::SPOOL_BYTES).set(s.spool.used_bytes() as f64);
    match result {
        Ok(()) => {
            metrics::counter!(m::EVENTS_SPOOLED).increment(n);
            s.replay.notify_one();
            Ok(())
        }
        Err(SpoolError::Full { .. }) => {
            metrics::counter!(m::SPOOL_FULL).increment(1);
            Err(RequestError::Unavailable(
                "Kafka is unavailable and the local spool is full; retry later".into(),
            ))
        }
        Err(e) => Err(RequestError::Unavailable(format!(
            "events could not be made durable: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_request_reason_is_listed_and_every_listed_reason_is_used() {
        let every = [
            RequestError::BadBody(String::new()),
            RequestError::Unauthorized,
            RequestError::TooLarge(String::new()),
            RequestError::RateLimited,
            RequestError::Unavailable(String::new()),
            RequestError::NotFound(String::new()),
        ];
        // No wildcard: a new variant fails to compile here until it is
        // added to `every` above.
        for e in &every {
            match e {
                RequestError::BadBody(_)
                | RequestError::Unauthorized
                | RequestError::TooLarge(_)
                | RequestError::RateLimited
                | RequestError::Unavailable(_)
                | RequestError::NotFound(_) => {}
            }
        }
        let used: BTreeSet<&str> = every.iter().map(RequestError::reason).collect();
        assert_eq!(used, REQUEST_REASONS.into_iter().collect());
    }
}
