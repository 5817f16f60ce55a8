//! The HTTP endpoints: `GET /health`, line protocol (`POST /api/v2/write`,
//! `POST /write`), JSON (`POST /v1/ingest/{table}`), OTLP/HTTP (`POST
//! /v1/logs`, `/v1/traces`, `/v1/metrics`, in [`crate::otlp`]) and Prometheus
//! remote write (`POST /api/v1/write`), and `GET /metrics` (Prometheus text
//! format); for tests, `POST /debug/clock` moves the manual clock.
//!
//! A request body is read up to `--max-body-size` (413 past it), gunzipped if
//! `Content-Encoding: gzip` (again bounded, so a small bomb cannot expand
//! without limit), decoded into per-table rows by `sextant-ingest`, and
//! written through the engine: tables and columns are created on first
//! sight, and the answer comes only once the rows are in the WAL. Errors are
//! JSON bodies `{"error": "..."}` with a 4xx/5xx status.
//!
//! Every endpoint but `/health` authenticates first ([`authenticate`]):
//! `Authorization: Basic` (a user's name and password) or `Bearer` (a
//! token), or nothing while no user exists and the client is on loopback;
//! 401 with `WWW-Authenticate` otherwise. Ingest then needs INSERT on every
//! table a request writes, checked before any row is written.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;
use sextant_auth::{Action, AuthError, Principal};
use sextant_ingest::rows::TableRows;
use sextant_ingest::{Precision, Rejected, Wire, json as ndjson, line_protocol, prometheus};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::otlp::{self, Signal};
use crate::web::{AppState, HttpError, may_write, read_body, read_raw_body};
use crate::write::{Written, write_batches};

/// At most this many rejected lines are listed in an error body.
const MAX_LISTED_REJECTIONS: usize = 100;

/// Serves HTTP on `listener` (over TLS with `tls`) until `shutdown` is
/// cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<sextant_tls::TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/health", get(health))
        .route("/debug/clock", post(move_clock))
        .route("/api/v2/write", post(write_line_protocol))
        .route("/write", post(write_line_protocol))
        .route("/v1/ingest/{table}", post(ingest_json))
        .route(
            "/v1/logs",
            post(
                |State(s): State<AppState>,
                 Extension(w): Extension<Principal>,
                 h: HeaderMap,
                 b: Body| { otlp::export_http(Signal::Logs, s, w, h, b) },
            ),
        )
        .route(
            "/v1/traces",
            post(
                |State(s): State<AppState>,
                 Extension(w): Extension<Principal>,
                 h: HeaderMap,
                 b: Body| { otlp::export_http(Signal::Traces, s, w, h, b) },
            ),
        )
        .route(
            "/v1/metrics",
            post(
                |State(s): State<AppState>,
                 Extension(w): Extension<Principal>,
                 h: HeaderMap,
                 b: Body| { otlp::export_http(Signal::Metrics, s, w, h, b) },
            ),
        )
        .route("/api/v1/write", post(remote_write))
        .route("/metrics", get(metrics_text))
        .merge(crate::prom::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn(track_ingest))
        .with_state(state);
    let stop = shutdown.clone();
    let service = app.into_make_service_with_connect_info::<sextant_tls::Peer>();
    axum::serve(sextant_tls::Incoming::new(listener, tls, shutdown), service)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// Who is calling: the principal of the `Authorization` header, left in
/// the request's extensions for the handler. `/health` needs none.
async fn authenticate(
    State(s): State<AppState>,
    ConnectInfo(sextant_tls::Peer(peer)): ConnectInfo<sextant_tls::Peer>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let protocol = protocol_of(req.uri().path()).unwrap_or("http");
    match s.directory.authenticate(header, peer.ip(), protocol) {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        // OTLP/HTTP clients read a google.rpc.Status body.
        Err(e) if protocol == "otlp_http" => {
            crate::otlp::error_response(HttpError::from(e), req.headers())
        }
        Err(e) => HttpError::from(e).into_response(),
    }
}

async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// The ingest protocol an endpoint speaks, as metrics label it.
fn protocol_of(path: &str) -> Option<&'static str> {
    match path {
        "/api/v2/write" | "/write" => Some("line_protocol"),
        "/api/v1/write" => Some("prometheus_remote_write"),
        "/v1/logs" | "/v1/traces" | "/v1/metrics" => Some("otlp_http"),
        p if p.starts_with("/v1/ingest/") => Some("json"),
        _ => None,
    }
}

/// Counts each ingest request by status, and its bytes (as its
/// Content-Length declares them).
async fn track_ingest(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let span = tracing::info_span!(
        "http_request",
        method = %req.method(),
        path = %req.uri().path(),
        status = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let response = tracing::Instrument::instrument(track(req, next), span.clone()).await;
    span.record("status", response.status().as_u16());
    span.record("duration_ms", started.elapsed().as_secs_f64() * 1000.0);
    response
}

async fn track(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let Some(protocol) = protocol_of(req.uri().path()) else {
        return next.run(req).await;
    };
    let bytes = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let response = next.run(req).await;
    let m = sextant_metrics::metrics();
    m.ingest_bytes.with_label_values(&[protocol]).inc_by(bytes);
    m.ingest_requests
        .with_label_values(&[protocol, response.status().as_str()])
        .inc();
    response
}

/// `GET /metrics`: every metric in the Prometheus text format.
async fn metrics_text(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Response, HttpError> {
    // The figures name every table: for those who may read every table.
    if s.directory.readable_tables(&who).is_some() {
        return Err(AuthError::PermissionDenied(format!(
            "for /metrics: user \"{}\" needs SELECT on the database (GRANT SELECT ON DATABASE sextant TO {0}), as the figures name every table",
            who.user()
        ))
        .into());
    }
    s.gauges.refresh();
    Ok((
        [(header::CONTENT_TYPE, sextant_metrics::CONTENT_TYPE)],
        sextant_metrics::text(),
    )
        .into_response())
}

/// `POST /debug/clock {"advance": "90s"}` or `{"set": "<RFC 3339>"}`: moves
/// the server's manual clock (`--manual-clock`) and answers once every alert
/// evaluation and notification due by then has run, with the clock's time.
async fn move_clock(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, HttpError> {
    s.directory
        .check(&who, Action::Admin("move the server's clock"))?;
    let clock = s.alerts.clock();
    if !clock.is_manual() {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "no endpoint at /debug/clock (the server runs without --manual-clock)",
        ));
    }
    let to = match (body.get("advance"), body.get("set")) {
        (Some(serde_json::Value::String(d)), None) => {
            let d = humantime::parse_duration(d)
                .map_err(|e| HttpError::bad_request(format!("advance: '{d}': {e}")))?;
            clock.now_ns().saturating_add(d.as_nanos() as i64)
        }
        (None, Some(serde_json::Value::String(t))) => {
            crate::config::parse_time(t).map_err(HttpError::bad_request)?
        }
        _ => {
            return Err(HttpError::bad_request(
                "expected {\"advance\": \"90s\"} or {\"set\": \"2026-01-01T00:00:00Z\"}",
            ));
        }
    };
    clock.set(to);
    if tokio::time::timeout(std::time::Duration::from_secs(120), s.alerts.settle())
        .await
        .is_err()
    {
        return Err(HttpError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "alert work due at the new time did not finish within 120 s",
        ));
    }
    let now = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(clock.now_ns());
    Ok(Json(json!({"now": now.to_rfc3339()})))
}

async fn not_found(uri: Uri) -> impl IntoResponse {
    HttpError::new(
        StatusCode::NOT_FOUND,
        format!("no endpoint at {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> impl IntoResponse {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}: use POST", uri.path()),
    )
}

/// Writes every table's rows: creates tables and columns as needed, then
/// appends through the WAL ([`write_batches`]).
pub(crate) async fn write_tables(
    state: &AppState,
    who: &Principal,
    tables: Vec<TableRows>,
    protocol: &'static str,
) -> Result<Written, HttpError> {
    may_write(&state.directory, who, tables.iter().map(|t| t.table()))?;
    let engine = &state.engine;
    let mut batches = Vec::with_capacity(tables.len());
    for rows in tables {
        let table = rows.table().to_string();
        if let Some(batch) = rows
            .finish()
            .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        {
            batches.push((table, batch));
        }
    }
    Ok(write_batches(engine, batches, protocol).await?)
}

/// 400 with the rejected lines when some were rejected, and InfluxDB's
/// `partial write: points beyond retention policy dropped=N` when rows
/// were older than their table's retention (the others are written).
fn partial(written: Written, rejected: &[Rejected], protocol: &str) -> Result<(), HttpError> {
    let retention = written.retention_message();
    if rejected.is_empty() {
        return match retention {
            Some(m) => Err(HttpError::bad_request(format!(
                "{m}, {} written",
                plural(written.rows, "row")
            ))),
            None => Ok(()),
        };
    }
    sextant_metrics::metrics()
        .rejected_points
        .with_label_values(&[protocol, "invalid"])
        .inc_by(rejected.len() as u64);
    let listed: Vec<String> = rejected
        .iter()
        .take(MAX_LISTED_REJECTIONS)
        .map(|r| format!("line {}: {}", r.line, r.reason))
        .collect();
    let retention = retention.map(|m| format!("; {m}")).unwrap_or_default();
    Err(HttpError::bad_request(format!(
        "{} rejected, {} written: {}{retention}",
        plural(rejected.len(), "line"),
        written.rows,
        listed.join("; ")
    )))
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn precision(params: &HashMap<String, String>) -> Result<Precision, HttpError> {
    Ok(Precision::parse(
        params.get("precision").map(String::as_str).unwrap_or("ns"),
    )?)
}

/// InfluxDB line protocol, on the v2 path (`/api/v2/write?bucket=&precision=`)
/// and the v1 path (`/write?db=&precision=`). Bucket, org and db are accepted
/// for compatibility; every table lives in the one database.
async fn write_line_protocol(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, HttpError> {
    let precision = precision(&params)?;
    let (body, _admitted) = read_body(&state, &headers, body, Wire::LineProtocol).await?;
    let text = String::from_utf8(body)
        .map_err(|e| HttpError::bad_request(format!("line protocol must be UTF-8: {e}")))?;
    let engine = &state.engine;
    let decoded = line_protocol::decode(&text, precision, engine.now_ns(), &|t| {
        engine.table(t).map(|d| d.schema)
    });
    let written = write_tables(&state, &who, decoded.tables, "line_protocol").await?;
    partial(written, &decoded.rejected, "line_protocol")?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/ingest/{table}`: NDJSON or a JSON array of objects.
async fn ingest_json(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(table): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, HttpError> {
    if table.is_empty() || table.len() > 128 || table.chars().any(|c| c.is_control()) {
        return Err(HttpError::bad_request(format!(
            "{table:?} is not a table name (1 to 128 printable characters)"
        )));
    }
    let precision = precision(&params)?;
    let (body, _admitted) = read_body(&state, &headers, body, Wire::Ndjson).await?;
    let mut rows = TableRows::new(&table, state.engine.table(&table).map(|d| d.schema));
    let rejected = ndjson::decode(&body, &mut rows, precision, state.engine.now_ns())?;
    let written = write_tables(&state, &who, vec![rows], "json").await?;
    partial(written, &rejected, "json")?;
    Ok(Json(json!({"table": table, "rows": written.rows})))
}

/// Prometheus remote write 1.0: snappy-compressed protobuf, one table per
/// metric (see `sextant_ingest::prometheus`). 204 when every series was
/// written; 400 naming the rejected series otherwise (the others are kept).
async fn remote_write(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, HttpError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("snappy")
        .trim()
        .to_ascii_lowercase();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.contains("io.prometheus.write.v2") {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {content_type:?}: remote write 2.0 is not supported yet; configure protobuf_message: prometheus.WriteRequest (remote write 1.0)"
            ),
        ));
    }
    if encoding != "snappy" {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Encoding {encoding:?} is not supported: remote write bodies are snappy-compressed"
            ),
        ));
    }
    // Held until the write is answered.
    let (raw, mut admission) = read_raw_body(&state, &headers, body, Wire::RemoteWrite).await?;
    if let Some(unpacked) = prometheus::decoded_len(&raw) {
        admission
            .grow_to(Wire::RemoteWrite.admitted_bytes(unpacked.min(state.max_body)))
            .await?;
    }
    let engine = &state.engine;
    let decoded = prometheus::decode(&raw, state.max_body, &|t| engine.table(t).map(|d| d.schema))?;
    let written = write_tables(&state, &who, decoded.tables, "prometheus_remote_write").await?;
    if !decoded.metadata.is_empty() {
        crate::prom::keep_metadata(&state, &who, decoded.metadata).await?;
    }
    if !decoded.rejected.is_empty() {
        sextant_metrics::metrics()
            .rejected_points
            .with_label_values(&["prometheus_remote_write", "invalid"])
            .inc_by(decoded.rejected.len() as u64);
        let listed: Vec<String> = decoded
            .rejected
            .iter()
            .take(MAX_LISTED_REJECTIONS)
            .map(|r| format!("series {}: {}", r.line, r.reason))
            .collect();
        let retention = written
            .retention_message()
            .map(|m| format!("; {m}"))
            .unwrap_or_default();
        return Err(HttpError::bad_request(format!(
            "{} series rejected ({}), {} written: {}{retention}",
            decoded.rejected.len(),
            plural(decoded.rejected_samples, "sample"),
            plural(written.rows, "sample"),
            listed.join("; ")
        )));
    }
    // A 4xx: Prometheus drops the samples instead of retrying them.
    if let Some(m) = written.retention_message() {
        return Err(HttpError::bad_request(format!(
            "{m}, {} written",
            plural(written.rows, "sample")
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}
