//! Arrow Flight SQL with the Rust `arrow_flight` client: queries streamed by
//! DoGet, prepared statements with bound parameters, updates and Sextant's
//! own statements through the statement layer, bulk ingest that survives
//! `kill -9`, metadata, and errors as gRPC status codes.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampNanosecondArray, UInt64Array,
};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandStatementIngest, SqlInfo, TableDefinitionOptions, TableExistsOption,
    TableNotExistOption,
};
use arrow_flight::{FlightInfo, IpcMessage};
use futures::TryStreamExt;
use sextant_tests::{Server, text_rows};
use tonic::Code;
use tonic::transport::Channel;

pub(crate) type Client = FlightSqlServiceClient<Channel>;

pub(crate) async fn client(server: &Server) -> Client {
    let addr = server
        .flight_addr()
        .expect("the ready file names a Flight SQL address");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to Flight SQL");
    FlightSqlServiceClient::new(channel)
}

/// Every batch of every endpoint of `info`.
async fn fetch(c: &mut Client, info: FlightInfo) -> Vec<RecordBatch> {
    let mut out = vec![];
    for ep in info.endpoint {
        let stream = c.do_get(ep.ticket.expect("a ticket")).await.unwrap();
        out.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    out
}

/// The answer of `info` as one batch (with the schema of `info` when empty).
async fn fetch_one(c: &mut Client, info: FlightInfo) -> RecordBatch {
    let schema = Arc::new(info.clone().try_decode_schema().unwrap());
    let batches = fetch(c, info).await;
    concat_batches(
        batches.first().map_or(&schema, |b| b.schema_ref()),
        &batches,
    )
    .unwrap()
}

async fn query(c: &mut Client, sql: &str) -> RecordBatch {
    let info = c
        .execute(sql.to_string(), None)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    fetch_one(c, info).await
}

async fn query_err(c: &mut Client, sql: &str) -> (Code, String) {
    match c.execute(sql.to_string(), None).await {
        Ok(_) => panic!("{sql}: no error"),
        Err(e) => code(e),
    }
}

pub(crate) fn code(e: FlightError) -> (Code, String) {
    match e {
        FlightError::Tonic(s) => (s.code(), s.message().to_string()),
        other => panic!("not a gRPC status: {other}"),
    }
}

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> &'a T {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| {
            panic!(
                "column {name} is {}",
                b.column_by_name(name).unwrap().data_type()
            )
        })
}

fn strings(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let c = cast(b.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
    let c = c.as_any().downcast_ref::<StringArray>().unwrap();
    c.iter().map(|v| v.map(str::to_string)).collect()
}

const T0: i64 = 1_704_067_200_000_000_000; // 2024-01-01T00:00:00Z

#[tokio::test]
async fn queries_updates_and_prepared_statements() {
    let server = Server::start(&[]);
    let mut c = client(&server).await;

    // DDL and INSERT through CommandStatementUpdate (the statement layer).
    let n = c
        .execute_update(
            "CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE, cores BIGINT)"
                .into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(n, 0);
    let n = c
        .execute_update(
            "INSERT INTO cpu VALUES ('2024-01-01T00:00:00.000000001Z', 'a', 1.5, 4), \
             ('2024-01-01T00:00:01Z', 'b', 2.5, 8), ('2024-01-01T00:00:02Z', 'c', NULL, NULL)"
                .into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(n, 3);

    // A query: Arrow types as stored, nanoseconds exact.
    let b = query(
        &mut c,
        "SELECT time, host, usage, cores FROM cpu ORDER BY time",
    )
    .await;
    assert_eq!(b.num_rows(), 3);
    assert_eq!(
        b.schema().field(0).data_type(),
        &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
    );
    let times = col::<TimestampNanosecondArray>(&b, "time");
    assert_eq!(
        times.values(),
        &[T0 + 1, T0 + 1_000_000_000, T0 + 2_000_000_000]
    );
    assert_eq!(
        strings(&b, "host"),
        [Some("a".into()), Some("b".into()), Some("c".into())]
    );
    let usage = col::<Float64Array>(&b, "usage");
    assert_eq!(
        (usage.value(0), usage.value(1), usage.is_null(2)),
        (1.5, 2.5, true)
    );
    assert_eq!(col::<Int64Array>(&b, "cores").value(1), 8);

    // Sextant's own statement through the same path: FLUSH TABLE reports
    // the files written, and the rows are then read from Parquet.
    assert_eq!(
        c.execute_update("FLUSH TABLE cpu".into(), None)
            .await
            .unwrap(),
        1
    );
    let b = query(&mut c, "SELECT count(*) AS n FROM cpu").await;
    assert_eq!(col::<Int64Array>(&b, "n").value(0), 3);
    let b = query(
        &mut c,
        "SELECT rows FROM system.files WHERE table_name = 'cpu'",
    )
    .await;
    assert_eq!(b.num_rows(), 1);
    // A statement that changes something also runs as a query (what
    // DB-API drivers send): FLUSH answers its count in a one-row result.
    let b = query(&mut c, "FLUSH TABLE cpu").await;
    assert_eq!(col::<UInt64Array>(&b, "count").value(0), 0);

    // A prepared query with parameters bound by DoPut.
    let mut ps = c
        .prepare(
            "SELECT host FROM cpu WHERE usage > $1 AND time >= $2 ORDER BY time".into(),
            None,
        )
        .await
        .unwrap();
    let params = ps.parameter_schema().unwrap().clone();
    assert_eq!(params.fields().len(), 2);
    assert_eq!(params.field(0).name(), "$1");
    assert_eq!(params.field(0).data_type(), &DataType::Float64);
    assert_eq!(ps.dataset_schema().unwrap().field(0).name(), "host");
    let bind = |usage: f64, time_us: i64| {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("$1", DataType::Float64, false),
                Field::new(
                    "$2",
                    DataType::Timestamp(TimeUnit::Microsecond, None),
                    false,
                ),
            ])),
            vec![
                Arc::new(Float64Array::from(vec![usage])) as ArrayRef,
                Arc::new(TimestampMicrosecondArray::from(vec![time_us])),
            ],
        )
        .unwrap()
    };
    ps.set_parameters(bind(1.0, T0 / 1000)).unwrap();
    let info = ps.execute().await.unwrap();
    let b = fetch_one(&mut c, info).await;
    assert_eq!(strings(&b, "host"), [Some("a".into()), Some("b".into())]);
    // Bound again: the new values apply.
    ps.set_parameters(bind(2.0, T0 / 1000)).unwrap();
    let info = ps.execute().await.unwrap();
    let b = fetch_one(&mut c, info).await;
    assert_eq!(strings(&b, "host"), [Some("b".into())]);
    // A float for an integer parameter is refused, naming the parameter.
    let mut ps2 = c
        .prepare("SELECT host FROM cpu WHERE cores = $1".into(), None)
        .await
        .unwrap();
    ps2.set_parameters(
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "$1",
                DataType::Float64,
                false,
            )])),
            vec![Arc::new(Float64Array::from(vec![4.5])) as ArrayRef],
        )
        .unwrap(),
    )
    .unwrap();
    let (code_, msg) = code(ps2.execute().await.unwrap_err());
    assert_eq!(code_, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("parameter $1 must be Int64"), "{msg}");
    ps2.close().await.unwrap();
    ps.close().await.unwrap();

    // A prepared INSERT executed for every row of the bound batch.
    let mut ins = c
        .prepare(
            "INSERT INTO cpu (time, host, usage) VALUES ($1, $2, $3)".into(),
            None,
        )
        .await
        .unwrap();
    ins.set_parameters(
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new(
                    "$1",
                    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                    false,
                ),
                Field::new("$2", DataType::Utf8, false),
                Field::new("$3", DataType::Float64, false),
            ])),
            vec![
                Arc::new(
                    TimestampNanosecondArray::from(vec![T0 + 10_000_000_000, T0 + 11_000_000_000])
                        .with_timezone("UTC"),
                ) as ArrayRef,
                Arc::new(StringArray::from(vec!["d", "e"])),
                Arc::new(Float64Array::from(vec![4.0, 5.0])),
            ],
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(ins.execute_update().await.unwrap(), 2);
    ins.close().await.unwrap();
    let b = query(
        &mut c,
        "SELECT host FROM cpu WHERE usage >= 4 ORDER BY time",
    )
    .await;
    assert_eq!(strings(&b, "host"), [Some("d".into()), Some("e".into())]);

    // The same rows over pgwire.
    let pg = server.connect().await;
    assert_eq!(
        text_rows(&pg, "SELECT count(*) FROM cpu").await,
        [vec!["5".to_string()]]
    );
}

#[tokio::test]
async fn a_result_streams_in_many_batches() {
    let server = Server::start(&[]);
    let mut c = client(&server).await;
    let info = c
        .execute(
            "SELECT value, value * 2 AS twice FROM generate_series(1, 300000)".into(),
            None,
        )
        .await
        .unwrap();
    let stream = c
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    assert!(
        batches.len() > 10,
        "{} batches: the result was not streamed",
        batches.len()
    );
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 300_000);
    let sum: i64 = batches
        .iter()
        .flat_map(|b| col::<Int64Array>(b, "twice").values().iter().copied())
        .sum();
    assert_eq!(sum, 300_000 * 300_001);
}

fn ingest_batch(times_ns: &[i64], hosts: &[&str], extra: Option<&[i32]>) -> RecordBatch {
    let mut fields = vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        ),
        Field::new("host", DataType::Utf8, true),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(TimestampNanosecondArray::from(times_ns.to_vec())),
        Arc::new(StringArray::from(hosts.to_vec())),
    ];
    if let Some(extra) = extra {
        fields.push(Field::new("n", DataType::Int32, true));
        cols.push(Arc::new(Int32Array::from(extra.to_vec())));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

fn ingest_cmd(
    table: &str,
    if_not_exist: TableNotExistOption,
    if_exists: TableExistsOption,
) -> CommandStatementIngest {
    CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: if_not_exist as i32,
            if_exists: if_exists as i32,
        }),
        table: table.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn bulk_ingest_is_durable_and_checks_the_table() {
    let mut server = Server::start(&[]);
    let mut c = client(&server).await;
    use TableExistsOption as E;
    use TableNotExistOption as N;

    // Create from the stream's schema; two batches in one DoPut.
    let batches = vec![
        Ok(ingest_batch(&[T0, T0 + 1], &["a", "b"], Some(&[1, 2]))),
        Ok(ingest_batch(&[T0 + 2], &["c"], Some(&[3]))),
    ];
    let n = c
        .execute_ingest(
            ingest_cmd("events", N::Create, E::Fail),
            futures::stream::iter(batches),
        )
        .await
        .unwrap();
    assert_eq!(n, 3);
    // Create again: the table exists.
    let (code_, msg) = code(
        c.execute_ingest(
            ingest_cmd("events", N::Create, E::Fail),
            futures::stream::iter(vec![Ok(ingest_batch(&[T0], &["x"], None))]),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code_, Code::AlreadyExists, "{msg}");
    // Append to a missing table with if_not_exist = fail.
    let (code_, msg) = code(
        c.execute_ingest(
            ingest_cmd("nope", N::Fail, E::Append),
            futures::stream::iter(vec![Ok(ingest_batch(&[T0], &["x"], None))]),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code_, Code::NotFound, "{msg}");
    // Append without the optional column: it is null there.
    let n = c
        .execute_ingest(
            ingest_cmd("events", N::Fail, E::Append),
            futures::stream::iter(vec![Ok(ingest_batch(&[T0 + 3], &["d"], None))]),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    // A type conflict names the column and both types; nothing is written.
    let conflict = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
            Field::new("n", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(TimestampNanosecondArray::from(vec![T0 + 4])) as ArrayRef,
            Arc::new(StringArray::from(vec!["four"])),
        ],
    )
    .unwrap();
    let (code_, msg) = code(
        c.execute_ingest(
            ingest_cmd("events", N::Create, E::Append),
            futures::stream::iter(vec![Ok(conflict)]),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code_, Code::InvalidArgument, "{msg}");
    assert!(
        msg.contains("column \"n\" of table \"events\" is Int32, but this write has Utf8"),
        "{msg}"
    );
    // No time column.
    let no_time = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("x", DataType::Binary, true)])),
        vec![Arc::new(BinaryArray::from(vec![b"1".as_ref()])) as ArrayRef],
    )
    .unwrap();
    let (code_, msg) = code(
        c.execute_ingest(
            ingest_cmd("notime", N::Create, E::Append),
            futures::stream::iter(vec![Ok(no_time)]),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code_, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("\"time\" column"), "{msg}");

    // Acknowledged means durable: kill -9 and restart, then every
    // acknowledged row is there, over pgwire too.
    server.kill9();
    server.restart();
    let pg = server.connect().await;
    assert_eq!(
        text_rows(&pg, "SELECT host, n FROM events ORDER BY time").await,
        [
            vec!["a".to_string(), "1".into()],
            vec!["b".into(), "2".into()],
            vec!["c".into(), "3".into()],
            vec!["d".into(), "NULL".into()],
        ]
    );
    // Replace: the table holds only the new rows.
    let mut c = client(&server).await;
    let n = c
        .execute_ingest(
            ingest_cmd("events", N::Create, E::Replace),
            futures::stream::iter(vec![Ok(ingest_batch(&[T0 + 9], &["z"], Some(&[9])))]),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let b = query(&mut c, "SELECT host FROM events").await;
    assert_eq!(strings(&b, "host"), [Some("z".into())]);
}

#[tokio::test]
async fn metadata() {
    let server = Server::start(&[]);
    let mut c = client(&server).await;
    c.execute_update(
        "CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE)".into(),
        None,
    )
    .await
    .unwrap();

    let info = c.get_catalogs().await.unwrap();
    let b = fetch_one(&mut c, info).await;
    assert_eq!(strings(&b, "catalog_name"), [Some("sextant".into())]);

    let info = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("sextant".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let b = fetch_one(&mut c, info).await;
    let schemas = strings(&b, "db_schema_name");
    for s in ["public", "system", "information_schema", "pg_catalog"] {
        assert!(schemas.contains(&Some(s.into())), "{s} not in {schemas:?}");
    }

    // Tables with their Arrow schema.
    let info = c
        .get_tables(CommandGetTables {
            catalog: Some("sextant".into()),
            db_schema_filter_pattern: Some("public".into()),
            table_name_filter_pattern: Some("c%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let b = fetch_one(&mut c, info).await;
    assert_eq!(strings(&b, "table_name"), [Some("cpu".into())]);
    assert_eq!(strings(&b, "table_type"), [Some("TABLE".into())]);
    let ipc = col::<BinaryArray>(&b, "table_schema").value(0).to_vec();
    let schema = Schema::try_from(IpcMessage(ipc.into())).unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["time", "host", "usage"]);
    // System tables are of type SYSTEM TABLE; the filter works.
    let info = c
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("system".into()),
            table_name_filter_pattern: None,
            table_types: vec!["SYSTEM TABLE".into()],
            include_schema: false,
        })
        .await
        .unwrap();
    let b = fetch_one(&mut c, info).await;
    let names = strings(&b, "table_name");
    assert!(names.contains(&Some("files".into())), "{names:?}");

    let info = c.get_table_types().await.unwrap();
    let b = fetch_one(&mut c, info).await;
    assert_eq!(
        strings(&b, "table_type"),
        [
            Some("SYSTEM TABLE".into()),
            Some("TABLE".into()),
            Some("VIEW".into())
        ]
    );

    let info = c
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerBulkIngestion,
        ])
        .await
        .unwrap();
    let b = fetch_one(&mut c, info).await;
    assert_eq!(b.num_rows(), 2);

    let info = c
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let b = fetch_one(&mut c, info).await;
    let types = strings(&b, "type_name");
    for t in ["BIGINT", "DOUBLE", "TEXT", "TIMESTAMP", "BOOLEAN"] {
        assert!(types.contains(&Some(t.into())), "{t} not in {types:?}");
    }

    // No keys: an empty answer with the protocol's schema.
    let info = c
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "cpu".into(),
        })
        .await
        .unwrap();
    let schema = info.clone().try_decode_schema().unwrap();
    assert_eq!(schema.field(5).name(), "key_sequence");
    let rows: usize = fetch(&mut c, info).await.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn errors_are_grpc_statuses() {
    let server = Server::start(&["--query-memory-limit", "16MiB"]);
    let mut c = client(&server).await;
    let (code_, msg) = query_err(&mut c, "SELEC 1").await;
    assert_eq!(code_, Code::InvalidArgument, "{msg}");
    assert!(msg.starts_with("syntax error"), "{msg}");
    let (code_, msg) = query_err(&mut c, "SELECT * FROM nope").await;
    assert_eq!(code_, Code::NotFound, "{msg}");
    assert!(msg.contains("nope"), "{msg}");
    let (code_, msg) = query_err(&mut c, "SELECT 1; SELECT 2").await;
    assert_eq!(code_, Code::InvalidArgument, "{msg}");
    let (code_, _) = query_err(&mut c, "SET datafusion.execution.batch_size = 10").await;
    assert_eq!(code_, Code::Unimplemented);
    let (code_, msg) = code(c.execute_update("SELECT 1".into(), None).await.unwrap_err());
    assert_eq!(code_, Code::InvalidArgument, "{msg}");

    // Past the memory limit, while streaming: RESOURCE_EXHAUSTED, and the
    // server keeps serving.
    let info = c
        .execute(
            "SELECT a.value, b.value FROM generate_series(1, 2000000) a \
             JOIN generate_series(1, 2000000) b ON a.value = b.value ORDER BY a.value DESC"
                .into(),
            None,
        )
        .await
        .unwrap();
    let stream = c.do_get(info.endpoint[0].ticket.clone().unwrap()).await;
    let result = match stream {
        Ok(s) => s.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    };
    let (code_, msg) = code(result.unwrap_err());
    assert_eq!(code_, Code::ResourceExhausted, "{msg}");
    let b = query(&mut c, "SELECT 1 AS one").await;
    assert_eq!(b.num_rows(), 1);
}
