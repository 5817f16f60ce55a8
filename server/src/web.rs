//! What every HTTP endpoint shares, the line-protocol and JSON ones in
//! [`crate::http`] and OTLP/HTTP in [`crate::otlp`]: the state a handler
//! gets, the bounded (and gunzipped) body, the INSERT check, and the error
//! with its JSON body, whose status follows the SQLSTATE of the engine's and
//! the directory's errors ([`SqlState::protocol_status`]).

use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;
use sextant_alerts::Alerts;
use sextant_auth::{Action, AuthError, Directory, Principal};
use sextant_ingest::{IngestError, Wire};
use sextant_sqlstate::SqlState;
use sextant_storage::{Admission, Engine, StorageError};

use crate::system::Gauges;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Engine,
    pub(crate) max_body: usize,
    pub(crate) directory: Arc<Directory>,
    pub(crate) alerts: Alerts,
    pub(crate) gauges: Arc<Gauges>,
    /// The SQL session PromQL reads its series through.
    pub(crate) ctx: Arc<datafusion::prelude::SessionContext>,
    pub(crate) promql: crate::prom::PromSettings,
    /// The metric metadata this process last committed, by family (see
    /// [`crate::prom::keep_metadata`]).
    pub(crate) metric_metadata:
        Arc<std::sync::Mutex<std::collections::HashMap<String, sextant_catalog::MetricMetadata>>>,
}

impl AppState {
    pub(crate) fn new(
        engine: Engine,
        alerts: Alerts,
        gauges: Arc<Gauges>,
        directory: Arc<Directory>,
        max_body: usize,
        ctx: Arc<datafusion::prelude::SessionContext>,
        promql: crate::prom::PromSettings,
    ) -> Self {
        Self {
            engine,
            max_body,
            directory,
            alerts,
            gauges,
            ctx,
            promql,
            metric_metadata: Default::default(),
        }
    }
}

/// Refuses the whole request unless `who` may write every one of `tables`.
pub(crate) fn may_write<'a>(
    directory: &Directory,
    who: &Principal,
    tables: impl IntoIterator<Item = &'a str>,
) -> Result<(), AuthError> {
    for t in tables {
        directory.check(who, Action::Insert(t))?;
    }
    Ok(())
}

/// An HTTP error with a JSON body.
pub(crate) struct HttpError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    retry_after: Option<u64>,
    /// The SQLSTATE the status came from, for protocols that answer in
    /// gRPC codes (OTLP/HTTP's `Status` body).
    pub(crate) sqlstate: Option<SqlState>,
}

impl HttpError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            sqlstate: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(json!({"error": self.message}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sextant\", Bearer realm=\"sextant\""),
            );
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl HttpError {
    /// An error with `sqlstate`'s HTTP status ([`SqlState::protocol_status`],
    /// the mapping every protocol shares); a retryable one says when to come
    /// back.
    pub(crate) fn of_sqlstate(sqlstate: SqlState, message: String) -> Self {
        let status = sqlstate.protocol_status();
        Self {
            status: StatusCode::from_u16(status.http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message,
            retry_after: status.retry.then_some(5),
            sqlstate: Some(sqlstate),
        }
    }
}

impl From<AuthError> for HttpError {
    fn from(e: AuthError) -> Self {
        match e {
            // Logins from this address wait: 429 with the wait, whatever the
            // SQLSTATE (28000) says on pgwire.
            AuthError::TooManyFailures(secs) => Self {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: e.to_string(),
                retry_after: Some(secs),
                sqlstate: Some(e.sqlstate()),
            },
            e => Self::of_sqlstate(e.sqlstate(), e.to_string()),
        }
    }
}

impl From<StorageError> for HttpError {
    fn from(e: StorageError) -> Self {
        Self::of_sqlstate(e.sqlstate(), e.to_string())
    }
}

impl From<IngestError> for HttpError {
    fn from(e: IngestError) -> Self {
        Self::of_sqlstate(e.sqlstate(), e.to_string())
    }
}

/// Reads the whole body, bounded, once the engine admits it
/// ([`sextant_storage::Engine::admit`], for what a body of its `wire`
/// format holds while it is decoded and written: by its declared length
/// before it is read, by its length read when none was declared). The
/// admission is held until the write is answered.
pub(crate) async fn read_raw_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    wire: Wire,
) -> Result<(Bytes, Admission), HttpError> {
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than {} bytes (--max-body-size)",
                state.max_body
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if declared > state.max_body {
        return Err(too_large());
    }
    let mut admission = match state.engine.admit(wire.admitted_bytes(declared)).await {
        Ok(a) => a,
        Err(e) => {
            drain(body, state.max_body).await;
            return Err(e.into());
        }
    };
    let raw: Bytes = axum::body::to_bytes(body, state.max_body)
        .await
        .map_err(|_| too_large())?;
    admission.grow_to(wire.admitted_bytes(raw.len())).await?;
    Ok((raw, admission))
}

/// Reads a refused request's body and drops it, chunk by chunk (up to
/// `limit` bytes): a client still sending its body then reads the refusal,
/// where a connection closed on unread data would reach it as a reset, the
/// write in doubt.
async fn drain(body: Body, limit: usize) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0;
    while read <= limit {
        match stream.next().await {
            Some(Ok(chunk)) => read += chunk.len(),
            _ => break,
        }
    }
}

/// [`read_raw_body`], gunzipped if it says so (the admission grown to the
/// unpacked size).
pub(crate) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    wire: Wire,
) -> Result<(Vec<u8>, Admission), HttpError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    if !matches!(encoding.as_str(), "identity" | "" | "gzip" | "x-gzip") {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {encoding:?} is not supported: send identity or gzip"),
        ));
    }
    let (raw, mut admission) = read_raw_body(state, headers, body, wire).await?;
    if matches!(encoding.as_str(), "identity" | "") {
        return Ok((raw.to_vec(), admission));
    }
    // Read one byte past the limit to tell "exactly at" from "over".
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::MultiGzDecoder::new(&raw[..])
        .take(state.max_body as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| HttpError::bad_request(format!("body is not valid gzip: {e}")))?;
    if out.len() > state.max_body {
        return Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "gzip body expands past {} bytes (--max-body-size)",
                state.max_body
            ),
        ));
    }
    drop(raw);
    admission.grow_to(wire.admitted_bytes(out.len())).await?;
    Ok((out, admission))
}
