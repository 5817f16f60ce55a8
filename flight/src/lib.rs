//! The Arrow Flight SQL front end.
//!
//! A Flight SQL command arrives → its SQL goes through the statement layer
//! (`sextant-sql`) as on pgwire: Sextant's own statements run against the
//! engine, the rest is planned by DataFusion ([`statement`]). GetFlightInfo
//! plans a query and answers its schema and a ticket that carries the
//! statement (and its bound parameters); DoGet plans it again and streams
//! the batches as execution produces them, so a result is never held whole.
//! A statement that changes something runs once, at GetFlightInfo or in a
//! DoPut update, and its small result travels in the ticket. Bulk ingest
//! ([`ingest`]) writes DoPut batches through the engine's WAL. Metadata
//! requests are answered from the same DataFusion catalog ([`metadata`]).
//! Every error is a gRPC status that follows its SQLSTATE ([`error`]).
//!
//! Every call is authenticated before it reaches the service
//! ([`sextant_auth::grpc::authenticator`]: an `authorization` header with Basic credentials or
//! a Bearer token; none while no user exists, from loopback). The principal
//! travels in the request's extensions, and each statement runs as it.

mod error;
mod ingest;
mod metadata;
mod statement;

use sextant_sqlstate::SqlState;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt,
    SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::prelude::SessionContext;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use sextant_auth::{Directory, Principal};
use sextant_cluster::Cluster;
use sextant_sql::{Queries, QueryGuard, SqlError};
use sextant_storage::Engine;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

pub use error::SQLSTATE_KEY;
use error::{df_status, invalid, status, unsupported};
use metadata::Keys;
use statement::{Planned, single};

/// At most this many prepared statements stay open; past it the oldest is
/// closed (a client that never closes its statements cannot exhaust memory).
const MAX_PREPARED: usize = 10_000;

/// Serves Flight SQL on `listener` until `shutdown` is cancelled.
/// `max_message` bounds one incoming gRPC message (a DoPut batch).
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<SessionContext>,
    engine: Engine,
    cluster: Option<(Arc<Cluster>, datafusion_distributed::Worker)>,
    tls: Option<sextant_tls::TlsAcceptor>,
    max_message: usize,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let directory = sextant_sql::directory(&ctx).expect("the session has the user directory");
    let service = FlightServiceServer::new(FlightSql::new(ctx, engine, directory.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message);
    // Another node of the cluster (its secret) reads this node's buffer;
    // everyone else authenticates as a user.
    let mut authenticate = sextant_auth::grpc::authenticator(directory, "flight_sql");
    let peers = cluster.as_ref().map(|(c, _)| c.clone());
    let service = tonic::service::interceptor::InterceptedService::new(
        service,
        move |mut request: Request<()>| {
            if peers
                .as_ref()
                .is_some_and(|c| c.is_peer(request.metadata()))
            {
                request.extensions_mut().insert(Peer);
                return Ok(request);
            }
            authenticate(request)
        },
    );
    let router = tonic::transport::Server::builder().add_service(service);
    // The worker service that runs other nodes' query stages here.
    let router = router.add_optional_service(cluster.map(|(cluster, worker)| {
        tonic::service::interceptor::InterceptedService::new(
            worker.into_worker_server(),
            move |request: Request<()>| {
                if cluster.is_peer(request.metadata()) {
                    Ok(request)
                } else {
                    Err(Status::unauthenticated(
                        "query stages are run for the nodes of the cluster only: the call lacks the cluster secret",
                    ))
                }
            },
        )
    }));
    let stop = shutdown.clone();
    router
        .serve_with_incoming_shutdown(
            sextant_tls::Incoming::new(listener, tls, shutdown).into_stream(),
            async move { stop.cancelled().await },
        )
        .await
}

/// Marks a call from another node of the cluster.
#[derive(Clone, Copy)]
struct Peer;

/// `fut` as `who`, with a panic in it answered as INTERNAL (SQLSTATE
/// XX000, "the server failed on this statement (...)") instead of
/// resetting the stream, as pgwire answers it ([`sextant_sql::contain_panic`]).
async fn run_contained<F: std::future::Future>(
    who: Principal,
    fut: F,
) -> Result<F::Output, Status> {
    sextant_sql::contain_panic("the server", sextant_sql::run_as(who, fut))
        .await
        .map_err(status)
}

/// The principal the interceptor left on `request` (nobody if none, whom
/// every check refuses).
fn who<T>(request: &Request<T>) -> Principal {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(|| Principal::password(""))
}

/// The Flight SQL service.
struct FlightSql {
    ctx: Arc<SessionContext>,
    engine: Engine,
    directory: Arc<Directory>,
    prepared: Mutex<PreparedStatements>,
}

#[derive(Default)]
struct PreparedStatements {
    next: u64,
    open: BTreeMap<u64, PreparedStatement>,
}

struct PreparedStatement {
    sql: String,
    /// The parameters bound by the last DoPut, if any.
    params: Option<RecordBatch>,
}

/// What a ticket carries: a query to plan again and stream, or the result
/// of a statement that already ran.
#[derive(Clone, PartialEq, Message)]
struct TicketBody {
    /// The statement.
    #[prost(string, tag = "1")]
    sql: String,
    /// Its bound parameters: one row as an Arrow IPC stream; empty if none.
    #[prost(bytes = "vec", tag = "2")]
    params: Vec<u8>,
    /// Set when the statement already ran: its result as an Arrow IPC stream.
    #[prost(bytes = "vec", optional, tag = "3")]
    result: Option<Vec<u8>>,
}

type DoGetStream = <FlightSql as FlightService>::DoGetStream;

impl FlightSql {
    fn new(ctx: Arc<SessionContext>, engine: Engine, directory: Arc<Directory>) -> Self {
        Self {
            ctx,
            engine,
            directory,
            prepared: Mutex::new(PreparedStatements::default()),
        }
    }

    fn prepared(&self) -> std::sync::MutexGuard<'_, PreparedStatements> {
        self.prepared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `sql` in `system.queries` (if the session has the registry).
    fn begin(&self, sql: &str, who: &Principal) -> Option<QueryGuard> {
        let queries = self
            .ctx
            .state_ref()
            .read()
            .config()
            .get_extension::<Queries>()?;
        Some(queries.start("flight_sql", None, who.user(), sql))
    }

    /// The statement and bound parameters of a prepared statement handle.
    fn lookup(&self, handle: &[u8]) -> Result<(String, Option<RecordBatch>), Status> {
        let id = handle_id(handle)?;
        let open = self.prepared();
        let p = open.open.get(&id).ok_or_else(|| {
            status(SqlError::new(
                SqlState::INVALID_SQL_STATEMENT_NAME,
                "unknown prepared statement: it was closed, or the server restarted",
            ))
        })?;
        Ok((p.sql.clone(), p.params.clone()))
    }

    /// Plans `sql` with `params` bound; a query becomes a ticket to stream
    /// from, a statement that changes something runs now.
    async fn flight_info(
        &self,
        sql: String,
        params: Option<RecordBatch>,
        descriptor: FlightDescriptor,
        who: &Principal,
    ) -> Result<Response<FlightInfo>, Status> {
        let planned = statement::plan(&self.ctx, &sql, who)
            .await
            .map_err(status)?;
        let (schema, body) = match planned {
            Planned::Query(_) => {
                let row = one_row(params.as_ref())?;
                let planned = planned.bind(row.map(|b| (b, 0))).map_err(status)?;
                let body = TicketBody {
                    sql,
                    params: match row {
                        Some(b) => ipc_bytes(&b.schema(), std::slice::from_ref(b))?,
                        None => vec![],
                    },
                    result: None,
                };
                (planned.schema(), body)
            }
            Planned::Change(_) => {
                let (schema, batches, _) = tracked(
                    self.begin(&sql, who),
                    self.run_change(planned, params.as_ref(), who),
                )
                .await?;
                let result = ipc_bytes(&schema, &batches)?;
                let body = TicketBody {
                    sql,
                    params: vec![],
                    result: Some(result),
                };
                (schema, body)
            }
        };
        let ticket = TicketStatementQuery {
            statement_handle: body.encode_to_vec().into(),
        };
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| invalid(e.to_string()))?
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
            )
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// Runs a statement that changes something once per parameter row (or
    /// once without parameters); returns the result of the last run and the
    /// summed record count.
    async fn run_change(
        &self,
        planned: Planned,
        params: Option<&RecordBatch>,
        who: &Principal,
    ) -> Result<(SchemaRef, Vec<RecordBatch>, i64), Status> {
        let rows = params.map_or(0, |p| p.num_rows());
        let mut runs: Vec<Option<(&RecordBatch, usize)>> = match params {
            Some(p) if rows > 0 => (0..rows).map(|r| Some((p, r))).collect(),
            _ => vec![None],
        };
        let mut total = 0;
        let mut last = None;
        for row in runs.drain(..) {
            let Planned::Change(change) = planned.clone().bind(row).map_err(status)? else {
                return Err(invalid("the statement returns rows: run it as a query"));
            };
            let outcome = statement::run(change, &self.ctx, &self.engine, who)
                .await
                .map_err(status)?;
            total += outcome.count;
            last = Some(outcome);
        }
        let last = last.expect("at least one run");
        Ok((last.schema, last.batches, total))
    }

    /// Streams the rows of a query as execution produces them, as an entry
    /// of `system.queries` until the last batch (or a cancel) is sent.
    async fn stream_query(
        &self,
        sql: &str,
        params: Option<RecordBatch>,
        who: &Principal,
    ) -> Result<Response<DoGetStream>, Status> {
        let guard = self.begin(sql, who);
        let start = async {
            let planned = statement::plan(&self.ctx, sql, who).await.map_err(status)?;
            let Planned::Query(_) = planned else {
                return Err(invalid("the ticket names a statement that is not a query"));
            };
            let Planned::Query(plan) = planned
                .bind(params.as_ref().map(|b| (b, 0)))
                .map_err(status)?
            else {
                unreachable!("binding keeps a query a query");
            };
            // The schema GetFlightInfo announced: the plan's. The optimizer
            // may find a column cannot be NULL (a constant) where the plan
            // said it could be; clients (ADBC) refuse a stream whose schema
            // differs from the announced one.
            let announced: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
            let df = self
                .ctx
                .execute_logical_plan(plan)
                .await
                .map_err(df_status)?;
            Ok((df.execute_stream().await.map_err(df_status)?, announced))
        };
        let ((stream, announced), guard) = tracked_keep(guard, start).await?;
        let schema = if same_but_nullability(&stream.schema(), &announced) {
            announced
        } else {
            stream.schema()
        };
        let as_announced = schema.clone();
        let batches = stream
            .map_ok(move |b| {
                if b.schema() == as_announced {
                    b
                } else {
                    RecordBatch::try_new(as_announced.clone(), b.columns().to_vec()).unwrap_or(b)
                }
            })
            .map_err(|e| FlightError::Tonic(Box::new(df_status(e))));
        let batches: Pin<Box<dyn Stream<Item = Result<RecordBatch, FlightError>> + Send>> =
            match guard {
                Some(g) => guarded(Box::pin(batches), g),
                None => Box::pin(batches),
            };
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(flight)))
    }
}

/// `a` and `b` have the same columns, but for which may hold NULLs.
fn same_but_nullability(a: &SchemaRef, b: &SchemaRef) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields().iter())
            .all(|(x, y)| x.name() == y.name() && x.data_type().equals_datatype(y.data_type()))
}

fn canceled(message: &str) -> Status {
    status(SqlError::new(SqlState::QUERY_CANCELED, message))
}

/// Records a failed statement's SQLSTATE and message on its guard.
fn fail(guard: &QueryGuard, e: &Status) {
    let code = e
        .metadata()
        .get(SQLSTATE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(SqlState::INTERNAL_ERROR.code());
    guard.fail_with(code, e.message());
}

/// Runs `run` as the statement of `guard`: under its span, its scans
/// counted, ended with 57014 when it is cancelled; keeps the guard for what
/// follows (a query's rows).
async fn tracked_keep<T>(
    guard: Option<QueryGuard>,
    run: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<(T, Option<QueryGuard>), Status> {
    let Some(guard) = guard else {
        return Ok((run.await?, None));
    };
    let result = guard
        .plan(run)
        .await
        .unwrap_or_else(|| Err(canceled(guard.cancel_message())));
    match result {
        Ok(v) => Ok((v, Some(guard))),
        Err(e) => {
            fail(&guard, &e);
            Err(e)
        }
    }
}

/// [`tracked_keep`] for a statement that is done when `run` is.
async fn tracked<T>(
    guard: Option<QueryGuard>,
    run: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    Ok(tracked_keep(guard, run).await?.0)
}

type Batches = Pin<Box<dyn Stream<Item = Result<RecordBatch, FlightError>> + Send>>;

/// Flight batches for [`sextant_sql::guarded`].
struct FlightBatches;

impl sextant_sql::RowStream for FlightBatches {
    type Item = RecordBatch;
    type Error = FlightError;
    fn rows(b: &RecordBatch) -> u64 {
        b.num_rows() as u64
    }
    fn fail(guard: &QueryGuard, e: &mut FlightError) {
        match e {
            FlightError::Tonic(s) => fail(guard, s),
            other => guard.fail(&other.to_string()),
        }
    }
    fn cancelled(message: &str) -> FlightError {
        FlightError::Tonic(Box::new(canceled(message)))
    }
}

/// A query's batches under its guard ([`sextant_sql::guarded`]).
fn guarded(batches: Batches, guard: QueryGuard) -> Batches {
    Box::pin(sextant_sql::guarded::<FlightBatches, _>(batches, guard))
}

/// The single row of bound parameters a query takes.
fn one_row(params: Option<&RecordBatch>) -> Result<Option<&RecordBatch>, Status> {
    match params {
        None => Ok(None),
        Some(p) if p.num_rows() == 0 => Ok(None),
        Some(p) if p.num_rows() == 1 => Ok(Some(p)),
        Some(p) => Err(invalid(format!(
            "a query takes one row of parameters, but {} rows were bound",
            p.num_rows()
        ))),
    }
}

fn handle_id(handle: &[u8]) -> Result<u64, Status> {
    let bytes: [u8; 8] = handle
        .try_into()
        .map_err(|_| invalid("malformed prepared statement handle"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn ipc_bytes(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, Status> {
    let mut out = vec![];
    let internal = |e: arrow::error::ArrowError| Status::internal(e.to_string());
    let mut w = StreamWriter::try_new(&mut out, schema).map_err(internal)?;
    for b in batches {
        w.write(b).map_err(internal)?;
    }
    w.finish().map_err(internal)?;
    drop(w);
    Ok(out)
}

fn from_ipc(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), Status> {
    let bad = |e: arrow::error::ArrowError| invalid(format!("malformed ticket: {e}"));
    let reader = StreamReader::try_new(bytes, None).map_err(bad)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(bad)?;
    Ok((schema, batches))
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(b) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(b)
}

/// The Arrow messages of a DoPut stream. Clients may send the command in a
/// message of its own, with no Arrow data; such messages are skipped.
pub(crate) fn data_messages(
    stream: PeekableFlightDataStream,
) -> impl Stream<Item = Result<arrow_flight::FlightData, FlightError>> + Send + 'static {
    stream
        .try_filter(|m| futures::future::ready(!m.data_header.is_empty()))
        .map_err(FlightError::from)
}

/// The batches of a DoPut stream (parameters), concatenated.
async fn read_batches(stream: PeekableFlightDataStream) -> Result<Option<RecordBatch>, Status> {
    let mut decoded = FlightRecordBatchStream::new_from_flight_data(data_messages(stream));
    let mut batches = vec![];
    while let Some(b) = decoded.next().await {
        batches.push(b.map_err(|e| invalid(format!("cannot decode the parameters: {e}")))?);
    }
    let schema = match (batches.first(), decoded.schema()) {
        (Some(b), _) => b.schema(),
        (None, Some(s)) => s.clone(),
        (None, None) => return Ok(None),
    };
    let batch = concat_batches(&schema, &batches).map_err(|e| invalid(e.to_string()))?;
    Ok(Some(batch))
}

/// A FlightInfo whose ticket is the metadata command itself.
fn command_info(
    cmd: impl ProstMessageExt,
    schema: &Schema,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(cmd.as_any().encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(request.into_inner());
    Ok(Response::new(info))
}

/// Streams batches that are already in memory (small answers).
fn batches_response(schema: SchemaRef, batches: Vec<RecordBatch>) -> Response<DoGetStream> {
    let flight = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(Status::from);
    Response::new(Box::pin(flight))
}

fn batch_response(batch: RecordBatch) -> Response<DoGetStream> {
    batches_response(batch.schema(), vec![batch])
}

/// What a transaction on Flight SQL is answered (UNIMPLEMENTED).
const NO_TRANSACTIONS: &str =
    "transactions are not supported: every write is committed once acknowledged";

fn no_transactions(id: &Option<bytes::Bytes>) -> Result<(), Status> {
    match id {
        Some(_) => Err(unsupported(NO_TRANSACTIONS)),
        None => Ok(()),
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    /// The interceptor checked the handshake's credentials (Basic, as ADBC
    /// sends a user's name and password); the answer hands the same
    /// `authorization` back for the client to send with every call.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let authorization = request.metadata().get("authorization").cloned();
        let mut incoming = request.into_inner();
        let first = incoming.message().await?.unwrap_or_default();
        let answer = HandshakeResponse {
            protocol_version: first.protocol_version,
            payload: Default::default(),
        };
        let mut response = Response::new(Box::pin(futures::stream::iter([Ok(answer)]))
            as Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>);
        if let Some(a) = authorization {
            response.metadata_mut().insert("authorization", a);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        no_transactions(&query.transaction_id)?;
        debug!(sql = %sextant_sql::redact(&query.query), "Flight SQL query");
        let sql = single(&query.query).map_err(status)?;
        let who = who(&request);
        run_contained(
            who.clone(),
            self.flight_info(sql, None, request.into_inner(), &who),
        )
        .await?
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (sql, params) = self.lookup(&cmd.prepared_statement_handle)?;
        let who = who(&request);
        run_contained(
            who.clone(),
            self.flight_info(sql, params, request.into_inner(), &who),
        )
        .await?
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: arrow_flight::sql::Any,
    ) -> Result<Response<DoGetStream>, Status> {
        if request.extensions().get::<Peer>().is_none() {
            return Err(invalid(format!("unknown ticket {}", message.type_url)));
        }
        match sextant_cluster::answer_peer_ticket(&self.engine, &message).await {
            Some(Ok((schema, batches))) => Ok(batches_response(schema, batches)),
            Some(Err(e)) => Err(status(SqlError::new(e.sqlstate(), e.to_string()))),
            None => Err(invalid(format!("unknown ticket {}", message.type_url))),
        }
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let who = who(&request);
        let body = TicketBody::decode(ticket.statement_handle.as_ref())
            .map_err(|e| invalid(format!("malformed ticket: {e}")))?;
        if let Some(result) = &body.result {
            let (schema, batches) = from_ipc(result)?;
            return Ok(batches_response(schema, batches));
        }
        let params = if body.params.is_empty() {
            None
        } else {
            let (_, mut batches) = from_ipc(&body.params)?;
            batches.pop()
        };
        run_contained(who.clone(), self.stream_query(&body.sql, params, &who)).await?
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let who = who(&request);
        no_transactions(&cmd.transaction_id)?;
        debug!(sql = %sextant_sql::redact(&cmd.query), "Flight SQL update");
        let stmts = sextant_sql::split(&cmd.query).map_err(status)?;
        if stmts.is_empty() {
            return Err(status(SqlError::syntax("the statement is empty")));
        }
        let run = async {
            let mut total = 0;
            for stmt in stmts {
                total += tracked(self.begin(&stmt, &who), async {
                    let planned = statement::plan(&self.ctx, &stmt, &who)
                        .await
                        .map_err(status)?;
                    Ok(self.run_change(planned, None, &who).await?.2)
                })
                .await?;
            }
            Ok(total)
        };
        run_contained(who.clone(), run).await?
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let who = who(&request);
        ingest::ingest(
            &self.engine,
            &self.directory,
            &who,
            cmd,
            request.into_inner(),
        )
        .await
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let id = handle_id(&cmd.prepared_statement_handle)?;
        let params = read_batches(request.into_inner()).await?;
        let mut open = self.prepared();
        let p = open.open.get_mut(&id).ok_or_else(|| {
            status(SqlError::new(
                SqlState::INVALID_SQL_STATEMENT_NAME,
                "unknown prepared statement: it was closed, or the server restarted",
            ))
        })?;
        p.params = params;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(cmd.prepared_statement_handle),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let (sql, bound) = self.lookup(&cmd.prepared_statement_handle)?;
        let who = who(&request);
        let sent = read_batches(request.into_inner()).await?;
        let params = sent.filter(|b| b.num_rows() > 0).or(bound);
        let run = tracked(self.begin(&sql, &who), async {
            let planned = statement::plan(&self.ctx, &sql, &who)
                .await
                .map_err(status)?;
            Ok(self.run_change(planned, params.as_ref(), &who).await?.2)
        });
        run_contained(who.clone(), run).await?
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        no_transactions(&query.transaction_id)?;
        let sql = single(&query.query).map_err(status)?;
        let who = who(&request);
        let planned = run_contained(who.clone(), statement::plan(&self.ctx, &sql, &who))
            .await?
            .map_err(status)?;
        let parameters = planned.parameter_schema().map_err(status)?;
        let dataset = planned.schema();
        let id = {
            let mut open = self.prepared();
            open.next += 1;
            let id = open.next;
            open.open
                .insert(id, PreparedStatement { sql, params: None });
            while open.open.len() > MAX_PREPARED {
                open.open.pop_first();
            }
            id
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: id.to_be_bytes().to_vec().into(),
            dataset_schema: schema_bytes(&dataset)?,
            parameter_schema: schema_bytes(&parameters)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        let id = handle_id(&query.prepared_statement_handle)?;
        self.prepared().open.remove(&id);
        Ok(())
    }

    async fn do_action_begin_transaction(
        &self,
        _query: arrow_flight::sql::ActionBeginTransactionRequest,
        _request: Request<Action>,
    ) -> Result<arrow_flight::sql::ActionBeginTransactionResult, Status> {
        Err(unsupported(NO_TRANSACTIONS))
    }

    async fn do_action_end_transaction(
        &self,
        _query: arrow_flight::sql::ActionEndTransactionRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Err(unsupported(NO_TRANSACTIONS))
    }

    // Metadata

    async fn get_flight_info_catalogs(
        &self,
        cmd: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(cmd, &metadata::catalogs_schema(), request)
    }

    async fn do_get_catalogs(
        &self,
        cmd: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(batch_response(metadata::catalogs(&self.ctx, cmd)?))
    }

    async fn get_flight_info_schemas(
        &self,
        cmd: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(cmd, &metadata::schemas_schema(), request)
    }

    async fn do_get_schemas(
        &self,
        cmd: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(batch_response(metadata::schemas(&self.ctx, cmd)?))
    }

    async fn get_flight_info_tables(
        &self,
        cmd: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::tables_schema(cmd.include_schema);
        command_info(cmd, &schema, request)
    }

    async fn do_get_tables(
        &self,
        cmd: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let readable = self.directory.readable_tables(&who(&request));
        Ok(batch_response(
            metadata::tables(&self.ctx, cmd, readable.as_deref()).await?,
        ))
    }

    async fn get_flight_info_table_types(
        &self,
        cmd: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(cmd, &metadata::table_types_schema(), request)
    }

    async fn do_get_table_types(
        &self,
        cmd: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(batch_response(metadata::table_types(cmd)?))
    }

    async fn get_flight_info_sql_info(
        &self,
        cmd: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = cmd.clone().into_builder(metadata::sql_info()).schema();
        command_info(cmd, &schema, request)
    }

    async fn do_get_sql_info(
        &self,
        cmd: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = cmd
            .into_builder(metadata::sql_info())
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(batch_response(batch))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        cmd: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = cmd.into_builder(metadata::xdbc_info()).schema();
        command_info(cmd, &schema, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        cmd: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = cmd
            .into_builder(metadata::xdbc_info())
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(batch_response(batch))
    }

    async fn get_flight_info_primary_keys(
        &self,
        cmd: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(cmd, &metadata::keys_schema(Keys::Primary), request)
    }

    async fn do_get_primary_keys(
        &self,
        _cmd: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(batches_response(
            metadata::keys_schema(Keys::Primary),
            vec![],
        ))
    }

    async fn get_flight_info_exported_keys(
        &self,
        cmd: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(cmd, &metadata::keys_schema(Keys::Foreign), request)
    }

    async fn do_get_exported_keys(
        &self,
        _cmd: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(batches_response(
            metadata::keys_schema(Keys::Foreign),
            vec![],
        ))
    }

    async fn get_flight_info_imported_keys(
        &self,
        cmd: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(cmd, &metadata::keys_schema(Keys::Foreign), request)
    }

    async fn do_get_imported_keys(
        &self,
        _cmd: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(batches_response(
            metadata::keys_schema(Keys::Foreign),
            vec![],
        ))
    }

    async fn get_flight_info_cross_reference(
        &self,
        cmd: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(cmd, &metadata::keys_schema(Keys::Foreign), request)
    }

    async fn do_get_cross_reference(
        &self,
        _cmd: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(batches_response(
            metadata::keys_schema(Keys::Foreign),
            vec![],
        ))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
