//! The ingest paths the crash tests write through, each with its own
//! client: pgwire `INSERT` and `COPY FROM STDIN` (tokio-postgres), Flight SQL
//! bulk ingest (`DoPut` with `CommandStatementIngest`), line protocol,
//! Prometheus remote write, NDJSON and OTLP logs over HTTP, and OTLP logs
//! over gRPC (the generated tonic client).
//!
//! Every path writes rows named `(writer, n)` into its own table (the two
//! OTLP paths share `otel_logs`, told apart by `service.name`) and reads
//! them back with one query that yields `w` and `n` as BIGINTs.

use std::net::SocketAddr;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow_flight::error::FlightError;
use arrow_flight::sql::{
    CommandStatementIngest, TableDefinitionOptions, TableExistsOption, TableNotExistOption,
};
use futures::SinkExt;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use rand::Rng;
use rand::rngs::StdRng;
use sextant_ingest::prometheus::{Label, Sample, TimeSeries, WriteRequest, encode_write_request};
use sextant_tests::{Server, http_post};
use tonic::Code;
use tonic::transport::Channel;

/// `(writer, n)`: the identity of one row.
pub(crate) type Key = (i64, i64);

/// 2026-01-01T00:00:00Z in nanoseconds.
const BASE_NS: i64 = 1_767_225_600_000_000_000;

/// The time of row `(writer, n)`: three seconds per `n` from 2026-01-01 (so
/// the rows span several hourly partitions), plus `writer` nanoseconds.
pub(crate) fn time_ns((writer, n): Key) -> i64 {
    BASE_NS + n * 3_000_000_000 + writer
}

/// One way into the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    Insert,
    Copy,
    FlightIngest,
    LineProtocol,
    RemoteWrite,
    Ndjson,
    OtlpHttp,
    OtlpGrpc,
}

/// How a write ended when it did not succeed.
pub(crate) enum Failure {
    /// The connection went away: the write may or may not have happened.
    InDoubt,
    /// The server answered with an error: always a bug here, since every
    /// write is valid.
    Rejected(String),
}

impl Path {
    pub(crate) const ALL: [Path; 8] = [
        Path::Insert,
        Path::Copy,
        Path::FlightIngest,
        Path::LineProtocol,
        Path::RemoteWrite,
        Path::Ndjson,
        Path::OtlpHttp,
        Path::OtlpGrpc,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Path::Insert => "INSERT",
            Path::Copy => "COPY",
            Path::FlightIngest => "Flight DoPut",
            Path::LineProtocol => "line protocol",
            Path::RemoteWrite => "remote write",
            Path::Ndjson => "NDJSON",
            Path::OtlpHttp => "OTLP/HTTP",
            Path::OtlpGrpc => "OTLP/gRPC",
        }
    }

    /// The table the path writes to (`t` for INSERT, as in the first crash
    /// test).
    pub(crate) fn table(self) -> &'static str {
        match self {
            Path::Insert => "t",
            Path::Copy => "crash_copy",
            Path::FlightIngest => "crash_flight",
            Path::LineProtocol => "crash_lp",
            Path::RemoteWrite => "crash_rw",
            Path::Ndjson => "crash_json",
            Path::OtlpHttp | Path::OtlpGrpc => "otel_logs",
        }
    }

    /// The OTLP `service.name` of the path's records.
    fn service(self) -> &'static str {
        match self {
            Path::OtlpGrpc => "crash-grpc",
            _ => "crash-http",
        }
    }

    /// `CREATE TABLE` for the paths that need one first (the others create
    /// their table on first write).
    pub(crate) fn create_sql(self) -> Option<String> {
        match self {
            Path::Insert | Path::Copy | Path::FlightIngest => Some(format!(
                "CREATE TABLE {} (time TIMESTAMP NOT NULL, writer BIGINT, n BIGINT)",
                self.table()
            )),
            _ => None,
        }
    }

    /// A query for the path's rows as `w`, `n` (BIGINT).
    pub(crate) fn select_sql(self) -> String {
        match self {
            Path::Insert | Path::Copy | Path::FlightIngest | Path::Ndjson => {
                format!("SELECT writer AS w, n FROM {}", self.table())
            }
            Path::LineProtocol => "SELECT CAST(writer AS BIGINT) AS w, n FROM crash_lp".into(),
            Path::RemoteWrite => {
                "SELECT CAST(writer AS BIGINT) AS w, CAST(value AS BIGINT) AS n FROM crash_rw"
                    .into()
            }
            Path::OtlpHttp | Path::OtlpGrpc => format!(
                "SELECT CAST(split_part(body, ' ', 1) AS BIGINT) AS w, \
                 CAST(split_part(body, ' ', 2) AS BIGINT) AS n \
                 FROM otel_logs WHERE service_name = '{}'",
                self.service()
            ),
        }
    }

    /// Rows in the next write: 1–5 (half of them single rows) for INSERT,
    /// 1–40 for the bulk paths.
    pub(crate) fn batch_rows(self, rng: &mut StdRng) -> i64 {
        match self {
            Path::Insert if rng.random_bool(0.5) => 1,
            Path::Insert => rng.random_range(2..=5),
            _ => rng.random_range(1..=40),
        }
    }

    /// A new connection of the path's client to `server`.
    pub(crate) async fn connect(self, server: &Server) -> Conn {
        match self {
            Path::Insert | Path::Copy => Conn::Pg(server.connect().await),
            Path::FlightIngest => Conn::Flight(crate::flight::client(server).await),
            Path::LineProtocol | Path::RemoteWrite | Path::Ndjson | Path::OtlpHttp => {
                Conn::Http(server.http_addr())
            }
            Path::OtlpGrpc => {
                let addr = server
                    .grpc_addr()
                    .expect("the ready file names a gRPC address");
                let client = LogsServiceClient::connect(format!("http://{addr}"))
                    .await
                    .expect("connect to OTLP/gRPC");
                Conn::Grpc(client)
            }
        }
    }
}

/// A path's connection.
pub(crate) enum Conn {
    Pg(tokio_postgres::Client),
    Flight(crate::flight::Client),
    Http(SocketAddr),
    Grpc(LogsServiceClient<Channel>),
}

impl Conn {
    /// Writes `keys` through `path`; `Ok` only when the server acknowledged.
    pub(crate) async fn write(&mut self, path: Path, keys: &[Key]) -> Result<(), Failure> {
        match (path, self) {
            (Path::Insert, Conn::Pg(c)) => c
                .execute(insert_sql(path.table(), keys).as_str(), &[])
                .await
                .map(drop)
                .map_err(|e| pg_failure(&e)),
            (Path::Copy, Conn::Pg(c)) => copy(c, path.table(), keys)
                .await
                .map_err(|e| pg_failure(&e)),
            (Path::FlightIngest, Conn::Flight(c)) => {
                let cmd = CommandStatementIngest {
                    table_definition_options: Some(TableDefinitionOptions {
                        if_not_exist: TableNotExistOption::Fail as i32,
                        if_exists: TableExistsOption::Append as i32,
                    }),
                    table: path.table().into(),
                    ..Default::default()
                };
                let batch = Ok(record_batch(keys));
                c.execute_ingest(cmd, futures::stream::iter(vec![batch]))
                    .await
                    .map(drop)
                    .map_err(flight_failure)
            }
            (Path::OtlpGrpc, Conn::Grpc(c)) => match c.export(otlp_logs(path, keys)).await {
                Ok(answer) => match answer.into_inner().partial_success {
                    Some(p) if p.rejected_log_records > 0 => Err(Failure::Rejected(format!(
                        "{} records rejected: {}",
                        p.rejected_log_records, p.error_message
                    ))),
                    _ => Ok(()),
                },
                Err(status) => Err(grpc_failure(status.code(), status.message())),
            },
            (_, Conn::Http(addr)) => {
                let (url, headers, body, ok) = http_request(path, keys);
                let addr = *addr;
                let answer = tokio::task::spawn_blocking(move || {
                    let headers: Vec<(&str, &str)> =
                        headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                    http_post(addr, &url, &headers, &body)
                })
                .await
                .expect("HTTP request task");
                match answer {
                    Ok(r) if r.status == ok => Ok(()),
                    Ok(r) => Err(Failure::Rejected(format!("HTTP {}: {}", r.status, r.body))),
                    Err(_) => Err(Failure::InDoubt),
                }
            }
            (path, _) => panic!("no connection of the right kind for {}", path.name()),
        }
    }
}

fn insert_sql(table: &str, keys: &[Key]) -> String {
    let values: Vec<String> = keys
        .iter()
        .map(|&(w, n)| format!("('{}', {w}, {n})", rfc3339(time_ns((w, n)))))
        .collect();
    format!("INSERT INTO {table} VALUES {}", values.join(", "))
}

/// An RFC 3339 time with nanoseconds, as COPY's text format spells it.
fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Year, month, day of a day number counted from 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[test]
fn times() {
    assert_eq!(rfc3339(time_ns((0, 0))), "2026-01-01T00:00:00.000000000Z");
    assert_eq!(
        rfc3339(time_ns((3, 1201))),
        "2026-01-01T01:00:03.000000003Z"
    );
    assert_eq!(
        rfc3339(time_ns((1, 28_800 * 59))),
        "2026-03-01T00:00:00.000000001Z"
    );
    assert_eq!(
        rfc3339(time_ns((2, 28_800 * 365))),
        "2027-01-01T00:00:00.000000002Z"
    );
}

async fn copy(
    client: &tokio_postgres::Client,
    table: &str,
    keys: &[Key],
) -> Result<(), tokio_postgres::Error> {
    let sink = client
        .copy_in::<_, bytes::Bytes>(&format!("COPY {table} (time, writer, n) FROM STDIN"))
        .await?;
    let mut text = String::new();
    for &(w, n) in keys {
        text.push_str(&format!("{}\t{w}\t{n}\n", rfc3339(time_ns((w, n)))));
    }
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from(text)).await?;
    let written = sink.as_mut().finish().await?;
    assert_eq!(written, keys.len() as u64, "COPY's row count");
    Ok(())
}

fn record_batch(keys: &[Key]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        ),
        Field::new("writer", DataType::Int64, true),
        Field::new("n", DataType::Int64, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampNanosecondArray::from_iter_values(
            keys.iter().map(|&k| time_ns(k)),
        )),
        Arc::new(Int64Array::from_iter_values(keys.iter().map(|k| k.0))),
        Arc::new(Int64Array::from_iter_values(keys.iter().map(|k| k.1))),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("a valid batch")
}

fn otlp_logs(path: Path, keys: &[Key]) -> ExportLogsServiceRequest {
    let text = |s: String| AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(text(path.service().into())),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: keys
                    .iter()
                    .map(|&(w, n)| LogRecord {
                        time_unix_nano: u64::try_from(time_ns((w, n))).expect("after 1970"),
                        severity_number: 9,
                        body: Some(text(format!("{w} {n}"))),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The URL, headers, body and success status of an HTTP write.
type HttpWrite = (String, Vec<(&'static str, String)>, Vec<u8>, u16);

fn http_request(path: Path, keys: &[Key]) -> HttpWrite {
    match path {
        Path::LineProtocol => {
            let mut body = String::new();
            for &(w, n) in keys {
                body.push_str(&format!("crash_lp,writer={w} n={n}i {}\n", time_ns((w, n))));
            }
            (
                "/api/v2/write?bucket=crash&precision=ns".into(),
                vec![],
                body.into_bytes(),
                204,
            )
        }
        Path::RemoteWrite => {
            let label = |name: &str, value: String| Label {
                name: name.into(),
                value,
            };
            let writer = keys.first().map_or(0, |k| k.0);
            let request = WriteRequest {
                timeseries: vec![TimeSeries {
                    labels: vec![
                        label("__name__", "crash_rw".into()),
                        label("writer", writer.to_string()),
                    ],
                    samples: keys
                        .iter()
                        .map(|&(w, n)| Sample {
                            value: n as f64,
                            timestamp: time_ns((w, n)) / 1_000_000,
                        })
                        .collect(),
                    ..Default::default()
                }],
                metadata: vec![],
            };
            (
                "/api/v1/write".into(),
                vec![
                    ("Content-Encoding", "snappy".into()),
                    ("Content-Type", "application/x-protobuf".into()),
                    ("X-Prometheus-Remote-Write-Version", "0.1.0".into()),
                ],
                encode_write_request(&request),
                204,
            )
        }
        Path::Ndjson => {
            let mut body = String::new();
            for &(w, n) in keys {
                body.push_str(&format!(
                    "{{\"time\": {}, \"writer\": {w}, \"n\": {n}}}\n",
                    time_ns((w, n))
                ));
            }
            (
                "/v1/ingest/crash_json?precision=ns".into(),
                vec![("Content-Type", "application/x-ndjson".into())],
                body.into_bytes(),
                200,
            )
        }
        Path::OtlpHttp => (
            "/v1/logs".into(),
            vec![("Content-Type", "application/x-protobuf".into())],
            otlp_logs(path, keys).encode_to_vec(),
            200,
        ),
        other => panic!("{} is not an HTTP path", other.name()),
    }
}

/// An error the server reported about the statement itself, as opposed to
/// the connection going away (no server message, SQLSTATE class 08
/// "connection exception" or 57 "operator intervention", or a FATAL/PANIC
/// message): with the latter the statement's outcome is in doubt.
pub(crate) fn statement_error(e: &tokio_postgres::Error) -> Option<String> {
    let db = e.as_db_error()?;
    let class = &db.code().code()[..2];
    let fatal = matches!(db.severity(), "FATAL" | "PANIC");
    if class == "08" || class == "57" || fatal {
        None
    } else {
        Some(format!("{db:?}"))
    }
}

fn pg_failure(e: &tokio_postgres::Error) -> Failure {
    statement_error(e).map_or(Failure::InDoubt, Failure::Rejected)
}

fn flight_failure(e: FlightError) -> Failure {
    match e {
        FlightError::Tonic(status) => grpc_failure(status.code(), status.message()),
        // Stream and decoding errors on the client's side: the connection.
        _ => Failure::InDoubt,
    }
}

/// A gRPC status from a dying server (transport errors come back as
/// UNAVAILABLE, UNKNOWN or CANCELLED, or INTERNAL for a broken HTTP/2
/// stream) leaves the write in doubt; any other is the server's answer.
fn grpc_failure(code: Code, message: &str) -> Failure {
    let transport = matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled)
        || (code == Code::Internal && (message.contains("h2") || message.contains("transport")));
    if transport {
        Failure::InDoubt
    } else {
        Failure::Rejected(format!("{code:?}: {message}"))
    }
}
