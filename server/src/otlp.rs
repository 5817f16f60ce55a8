//! OpenTelemetry (OTLP) front ends: the gRPC `Export` services of logs,
//! traces and metrics on `--grpc-addr`, and `POST /v1/logs`, `/v1/traces`,
//! `/v1/metrics` on the HTTP address.
//!
//! A request body (protobuf, or the OTLP JSON mapping over HTTP; gzip
//! accepted on both) is parsed, decoded into `otel_*` rows by
//! `sextant_ingest::otlp`, and written through the engine; the answer comes
//! once the rows are durable. Records that cannot be stored are reported in
//! the response's `partial_success`; the rest are kept. Errors follow the
//! OTLP specification: a gRPC status (`INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`
//! with a `RetryInfo` under backpressure, `UNAVAILABLE` while shutting down),
//! or over HTTP a 4xx/5xx whose body is a `google.rpc.Status` in the
//! request's encoding (`Retry-After` on 503).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde_json::json;
use sextant_ingest::IngestError;
use sextant_ingest::otlp::{self, Decoded, Encoding};
use sextant_storage::{Admission, Engine, StorageError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Status};
use tracing::debug;

use crate::web::{AppState, HttpError, read_body};
use crate::write::write_batches;

/// How long a client is asked to wait before retrying under backpressure.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Logs,
    Traces,
    Metrics,
}

impl Signal {
    /// The wire format of a request of this signal in `encoding`.
    pub(crate) fn wire(self, encoding: Encoding) -> sextant_ingest::Wire {
        let signal = match self {
            Signal::Logs => otlp::Signal::Logs,
            Signal::Traces => otlp::Signal::Traces,
            Signal::Metrics => otlp::Signal::Metrics,
        };
        sextant_ingest::Wire::Otlp(signal, encoding)
    }

    /// Decodes a request; a log record without a time gets `now_ns`.
    fn decode(self, body: &[u8], encoding: Encoding, now_ns: i64) -> Result<Decoded, IngestError> {
        Ok(match self {
            Signal::Logs => otlp::decode_logs(
                &otlp::parse::<ExportLogsServiceRequest>(body, encoding)?,
                now_ns,
            ),
            Signal::Traces => {
                otlp::decode_traces(&otlp::parse::<ExportTraceServiceRequest>(body, encoding)?)
            }
            Signal::Metrics => {
                otlp::decode_metrics(&otlp::parse::<ExportMetricsServiceRequest>(body, encoding)?)
            }
        })
    }

    /// The export response, protobuf-encoded.
    fn response_protobuf(self, d: &Decoded) -> Vec<u8> {
        let rejected = d.rejected as i64;
        let message = d.error_message.clone();
        let partial = rejected > 0 || !message.is_empty();
        match self {
            Signal::Logs => ExportLogsServiceResponse {
                partial_success: partial.then_some(ExportLogsPartialSuccess {
                    rejected_log_records: rejected,
                    error_message: message,
                }),
            }
            .encode_to_vec(),
            Signal::Traces => ExportTraceServiceResponse {
                partial_success: partial.then_some(ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message: message,
                }),
            }
            .encode_to_vec(),
            Signal::Metrics => ExportMetricsServiceResponse {
                partial_success: partial.then_some(ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message: message,
                }),
            }
            .encode_to_vec(),
        }
    }

    /// The export response in the OTLP JSON mapping (int64 as a string).
    fn response_json(self, d: &Decoded) -> serde_json::Value {
        if d.rejected == 0 && d.error_message.is_empty() {
            return json!({});
        }
        let field = match self {
            Signal::Logs => "rejectedLogRecords",
            Signal::Traces => "rejectedSpans",
            Signal::Metrics => "rejectedDataPoints",
        };
        json!({"partialSuccess": {field: d.rejected.to_string(), "errorMessage": d.error_message}})
    }
}

/// The `partial_success` of a response: rejected count and message, unless
/// everything was accepted without a warning.
fn partial(d: Decoded) -> Option<(i64, String)> {
    (d.rejected > 0 || !d.error_message.is_empty()).then_some((d.rejected as i64, d.error_message))
}

/// Creates the tables a request needs and writes its rows.
async fn write(
    engine: &Engine,
    decoded: &mut Decoded,
    protocol: &'static str,
) -> Result<(), StorageError> {
    if decoded.rejected > 0 {
        sextant_metrics::metrics()
            .rejected_points
            .with_label_values(&[protocol, "invalid"])
            .inc_by(decoded.rejected as u64);
    }
    let batches = std::mem::take(&mut decoded.tables)
        .into_iter()
        .map(|(t, b)| (t.to_string(), b))
        .collect();
    let written = write_batches(engine, batches, protocol).await?;
    // Rows older than their table's retention are rejected, as invalid
    // ones are: the response's partial_success counts and names them.
    if let Some(m) = written.retention_message() {
        decoded.rejected += written.beyond_retention;
        if !decoded.error_message.is_empty() {
            decoded.error_message.push_str("; ");
        }
        decoded.error_message.push_str(&m);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// google.rpc.Status, for gRPC status details and OTLP/HTTP error bodies

#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

fn rpc_status(code: Code, message: &str, retry: bool) -> RpcStatus {
    let details = if retry {
        vec![ProtoAny {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: RetryInfo {
                retry_delay: Some(ProtoDuration {
                    seconds: RETRY_AFTER.as_secs() as i64,
                    nanos: 0,
                }),
            }
            .encode_to_vec(),
        }]
    } else {
        vec![]
    };
    RpcStatus {
        code: code as i32,
        message: message.to_string(),
        details,
    }
}

/// The gRPC status for an engine error, from its SQLSTATE
/// ([`SqlState::protocol_status`]).
fn grpc_status(e: StorageError) -> Status {
    let status = e.sqlstate().protocol_status();
    let code = Code::from(status.grpc);
    let message = e.to_string();
    if status.retry {
        let details = rpc_status(code, &message, true).encode_to_vec();
        Status::with_details(code, message, details.into())
    } else {
        Status::new(code, message)
    }
}

// ---------------------------------------------------------------------------
// gRPC

/// The OTLP gRPC services, sharing one engine.
#[derive(Clone)]
struct Collector {
    engine: Engine,
    directory: Arc<sextant_auth::Directory>,
}

/// The principal the authenticating interceptor left on the request.
fn caller<T>(request: &Request<T>) -> sextant_auth::Principal {
    request
        .extensions()
        .get::<sextant_auth::Principal>()
        .cloned()
        .unwrap_or_else(|| sextant_auth::Principal::password(""))
}

impl Collector {
    /// The request's admission ([`AdmitGrpc`] took it for the message's
    /// length on the wire before tonic read it), grown to what the decoded
    /// message of `bytes` holds while its rows are written.
    async fn admit<T>(
        &self,
        signal: Signal,
        request: &Request<T>,
        bytes: usize,
    ) -> Result<Admission, Status> {
        let want = signal.wire(Encoding::Protobuf).admitted_bytes(bytes);
        let held = request
            .extensions()
            .get::<Admitted>()
            .and_then(|a| a.0.lock().unwrap_or_else(|e| e.into_inner()).take());
        match held {
            Some(mut admission) => {
                admission.grow_to(want).await.map_err(grpc_status)?;
                Ok(admission)
            }
            None => self.engine.admit(want).await.map_err(grpc_status),
        }
    }

    async fn export(
        &self,
        signal: Signal,
        mut decoded: Decoded,
        bytes: usize,
        who: &sextant_auth::Principal,
    ) -> Result<Decoded, Status> {
        crate::web::may_write(
            &self.directory,
            who,
            decoded.tables.iter().map(|(t, _)| &**t),
        )
        .map_err(sextant_auth::grpc::auth_status)?;
        debug!(
            ?signal,
            accepted = decoded.accepted,
            rejected = decoded.rejected,
            "OTLP/gRPC export"
        );
        let span = tracing::info_span!("otlp_grpc_export", signal = ?signal);
        let written =
            tracing::Instrument::instrument(write(&self.engine, &mut decoded, "otlp_grpc"), span)
                .await
                .map_err(grpc_status);
        let m = sextant_metrics::metrics();
        m.ingest_bytes
            .with_label_values(&["otlp_grpc"])
            .inc_by(bytes as u64);
        let status = match &written {
            Ok(()) => "ok".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        m.ingest_requests
            .with_label_values(&["otlp_grpc", &status])
            .inc();
        written?;
        Ok(decoded)
    }
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, Status> {
        let bytes = prost::Message::encoded_len(request.get_ref());
        let _admitted = self.admit(Signal::Logs, &request, bytes).await?;
        let d = otlp::decode_logs(request.get_ref(), self.engine.now_ns());
        let d = Collector::export(self, Signal::Logs, d, bytes, &caller(&request)).await?;
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: partial(d).map(|(rejected, error_message)| ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message,
            }),
        }))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        let bytes = prost::Message::encoded_len(request.get_ref());
        let _admitted = self.admit(Signal::Traces, &request, bytes).await?;
        let d = otlp::decode_traces(request.get_ref());
        let d = Collector::export(self, Signal::Traces, d, bytes, &caller(&request)).await?;
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: partial(d).map(|(rejected, error_message)| {
                ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, Status> {
        let bytes = prost::Message::encoded_len(request.get_ref());
        let _admitted = self.admit(Signal::Metrics, &request, bytes).await?;
        let d = otlp::decode_metrics(request.get_ref());
        let d = Collector::export(self, Signal::Metrics, d, bytes, &caller(&request)).await?;
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: partial(d).map(|(rejected, error_message)| {
                ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message,
                }
            }),
        }))
    }
}

/// Serves OTLP/gRPC on `listener` until `shutdown` is cancelled.
pub async fn serve_grpc(
    listener: TcpListener,
    engine: Engine,
    directory: Arc<sextant_auth::Directory>,
    tls: Option<sextant_tls::TlsAcceptor>,
    max_message: usize,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    use tonic::service::interceptor::InterceptedService;
    let auth = sextant_auth::grpc::authenticator(directory.clone(), "otlp_grpc");
    let c = Collector { engine, directory };
    let admit = AdmitGrpc {
        inner: (),
        engine: c.engine.clone(),
        max_message,
    };
    let router = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(client_error_codes))
        .layer(admit)
        .add_service(InterceptedService::new(
            LogsServiceServer::new(c.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message),
            auth.clone(),
        ))
        .add_service(InterceptedService::new(
            TraceServiceServer::new(c.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message),
            auth.clone(),
        ))
        .add_service(InterceptedService::new(
            MetricsServiceServer::new(c)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message),
            auth,
        ));
    let stop = shutdown.clone();
    router
        .serve_with_incoming_shutdown(
            sextant_tls::Incoming::new(listener, tls, shutdown).into_stream(),
            async move { stop.cancelled().await },
        )
        .await
}

/// The admission of a gRPC request, taken before its message is read; the
/// handler takes it out ([`Collector::admit`]) and holds it.
#[derive(Clone)]
struct Admitted(Arc<std::sync::Mutex<Option<Admission>>>);

/// Admits each gRPC request ([`Engine::admit`]) for what its message holds
/// (by the length in the message's five-byte prefix) before the rest of
/// it is read, as the HTTP front end does by `Content-Length`: otherwise
/// tonic would read and decode every message sent at once before a
/// handler could say no. A refusal is the handler's (`RESOURCE_EXHAUSTED`
/// with `RetryInfo`), given before the message is read. A message over the
/// size limit goes on unadmitted, for tonic to refuse.
#[derive(Clone)]
struct AdmitGrpc<S> {
    inner: S,
    engine: Engine,
    max_message: usize,
}

impl<S> tower::Layer<S> for AdmitGrpc<()> {
    type Service = AdmitGrpc<S>;

    fn layer(&self, inner: S) -> AdmitGrpc<S> {
        AdmitGrpc {
            inner,
            engine: self.engine.clone(),
            max_message: self.max_message,
        }
    }
}

type GrpcRequest = axum::http::Request<tonic::body::Body>;
type GrpcResponse = axum::http::Response<tonic::body::Body>;

impl<S> tower::Service<GrpcRequest> for AdmitGrpc<S>
where
    S: tower::Service<GrpcRequest, Response = GrpcResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<GrpcResponse, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: GrpcRequest) -> Self::Future {
        // The service polled ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let engine = self.engine.clone();
        let max_message = self.max_message;
        Box::pin(async move {
            let signal = match request.uri().path() {
                p if p.starts_with("/opentelemetry.proto.collector.logs.") => Signal::Logs,
                p if p.starts_with("/opentelemetry.proto.collector.trace.") => Signal::Traces,
                p if p.starts_with("/opentelemetry.proto.collector.metrics.") => Signal::Metrics,
                _ => return inner.call(request).await,
            };
            let (mut parts, body) = request.into_parts();
            let mut stream = Body::new(body).into_data_stream();
            // Up to the message's length prefix.
            let mut read: Vec<axum::body::Bytes> = vec![];
            let mut prefix = Vec::with_capacity(5);
            while prefix.len() < 5 {
                match futures::StreamExt::next(&mut stream).await {
                    Some(Ok(chunk)) => {
                        prefix.extend(chunk.iter().take(5 - prefix.len()));
                        read.push(chunk);
                    }
                    _ => break,
                }
            }
            let length = (prefix.len() == 5)
                .then(|| u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize)
                .filter(|&n| n <= max_message);
            if let Some(length) = length {
                let want = signal.wire(Encoding::Protobuf).admitted_bytes(length);
                match engine.admit(want).await {
                    Ok(admission) => {
                        parts
                            .extensions
                            .insert(Admitted(Arc::new(std::sync::Mutex::new(Some(admission)))));
                    }
                    Err(e) => return Ok(grpc_status(e).into_http()),
                }
            }
            let rest = futures::stream::iter(read.into_iter().map(Ok)).chain(stream);
            let body = tonic::body::Body::new(Body::from_stream(rest));
            inner
                .call(axum::http::Request::from_parts(parts, body))
                .await
        })
    }
}

/// gRPC answers a request body that is not the expected protobuf message
/// with INTERNAL, and a message past the size limit with OUT_OF_RANGE; both
/// are the client's doing, so Sextant says INVALID_ARGUMENT and
/// RESOURCE_EXHAUSTED (without retry information: resending will not help).
/// These errors come before any handler runs, as trailers-only responses
/// whose status is in the headers.
fn client_error_codes<B>(mut resp: axum::http::Response<B>) -> axum::http::Response<B> {
    let headers = resp.headers_mut();
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .replace("%20", " ");
    let code = match headers.get("grpc-status").and_then(|v| v.to_str().ok()) {
        Some("13") if message.contains("decode Protobuf message") => Code::InvalidArgument,
        Some("11") if message.contains("too large") => Code::ResourceExhausted,
        _ => return resp,
    };
    headers.insert("grpc-status", HeaderValue::from(code as i32));
    resp
}

// ---------------------------------------------------------------------------
// HTTP

/// An OTLP/HTTP error: a status and a `google.rpc.Status` body in the
/// request's encoding.
struct OtlpHttpError {
    status: StatusCode,
    message: String,
    encoding: Encoding,
    /// The gRPC code of the `Status` body.
    code: Code,
}

impl IntoResponse for OtlpHttpError {
    fn into_response(self) -> Response {
        let code = self.code;
        let retry = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let mut resp = match self.encoding {
            Encoding::Protobuf => (
                self.status,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                rpc_status(code, &self.message, retry).encode_to_vec(),
            )
                .into_response(),
            Encoding::Json => (
                self.status,
                axum::Json(json!({"code": code as i32, "message": self.message})),
            )
                .into_response(),
        };
        if retry {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER.as_secs()),
            );
        }
        resp
    }
}

/// `e` as OTLP/HTTP answers it: the HTTP status, and a `Status` body whose
/// code follows the SQLSTATE where `e` has one (the mapping every protocol
/// shares), else the HTTP status (a body too large, an unknown media type).
fn otlp_error(e: HttpError, encoding: Encoding) -> OtlpHttpError {
    let code = match (e.sqlstate, e.status) {
        (_, StatusCode::TOO_MANY_REQUESTS) => Code::Unavailable,
        (Some(state), _) => Code::from(state.protocol_status().grpc),
        (None, StatusCode::PAYLOAD_TOO_LARGE) => Code::ResourceExhausted,
        (None, StatusCode::SERVICE_UNAVAILABLE) => Code::Unavailable,
        (None, s) if s.is_client_error() => Code::InvalidArgument,
        (None, _) => Code::Internal,
    };
    OtlpHttpError {
        status: e.status,
        message: e.message,
        encoding,
        code,
    }
}

/// `e` as an OTLP/HTTP error response (a `Status` in the request's
/// encoding, JSON when it names none), for errors that happen before the
/// OTLP handler runs (a login that fails).
pub(crate) fn error_response(e: HttpError, headers: &HeaderMap) -> Response {
    let encoding = content_encoding(headers).unwrap_or(Encoding::Json);
    otlp_error(e, encoding).into_response()
}

/// The body encoding named by `Content-Type`.
fn content_encoding(headers: &HeaderMap) -> Result<Encoding, OtlpHttpError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(OtlpHttpError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!(
                "Content-Type {ct:?} is not supported: send application/x-protobuf or application/json"
            ),
            encoding: Encoding::Json,
            code: Code::InvalidArgument,
        }),
    }
}

/// `POST /v1/logs`, `/v1/traces`, `/v1/metrics`.
pub(crate) async fn export_http(
    signal: Signal,
    state: AppState,
    who: sextant_auth::Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OtlpHttpErrorResponse> {
    let encoding = content_encoding(&headers).map_err(OtlpHttpErrorResponse)?;
    let fail = |e: HttpError| OtlpHttpErrorResponse(otlp_error(e, encoding));
    let (bytes, _admitted) = read_body(&state, &headers, body, signal.wire(encoding))
        .await
        .map_err(fail)?;
    let mut decoded = signal
        .decode(&bytes, encoding, state.engine.now_ns())
        .map_err(|e| fail(e.into()))?;
    debug!(
        ?signal,
        accepted = decoded.accepted,
        rejected = decoded.rejected,
        "OTLP/HTTP export"
    );
    crate::web::may_write(
        &state.directory,
        &who,
        decoded.tables.iter().map(|(t, _)| &**t),
    )
    .map_err(|e| fail(HttpError::from(e)))?;
    write(&state.engine, &mut decoded, "otlp_http")
        .await
        .map_err(|e| fail(HttpError::from(e)))?;
    Ok(match encoding {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            signal.response_protobuf(&decoded),
        )
            .into_response(),
        Encoding::Json => axum::Json(signal.response_json(&decoded)).into_response(),
    })
}

/// The error answer of [`export_http`].
pub(crate) struct OtlpHttpErrorResponse(OtlpHttpError);

impl IntoResponse for OtlpHttpErrorResponse {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}
