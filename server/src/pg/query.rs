//! A pgwire connection's statements: [`Service`] is the simple, extended
//! (Parse, Bind, Describe, Execute with portals) and COPY handler. Each
//! statement goes through [`sextant_sql::plan`] for the connection's
//! principal; Sextant's own statements run against the engine, the rest are
//! answered by datafusion-postgres. Every statement runs under its
//! [`QueryGuard`] (registry, timeout, cancel), and every error leaves with a
//! SQLSTATE ([`SqlStateErrors`]).

use sextant_sqlstate::SqlState;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::UInt64Array;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::{DfSessionService, Parser as DfParser};
use futures::{Sink, StreamExt};
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::send_describe_response;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DescribeResponse, DescribeStatementResponse, FieldInfo, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::Entry;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, ErrorHandler, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::extendedquery::{Describe, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::response::TransactionStatus;
use pgwire::types::format::FormatOptions;
use sextant_auth::{Directory, Principal, Via};
use sextant_storage::Engine;
use tracing::{debug, info};

use sextant_sql::{self as statements, Done, Planned, Queries, QueryGuard, SqlError};

use super::startup::{SessionPrincipal, principal};
use crate::copy;
use crate::error::{assign_sqlstate, pg_error};

pub(super) fn canceled(message: &str) -> PgWireError {
    pg_error(SqlError::new(SqlState::QUERY_CANCELED, message))
}

type DfStatement = <DfParser as QueryParser>::Statement;

/// pgwire rows for [`sextant_sql::guarded`].
pub(super) struct PgRows;

impl sextant_sql::RowStream for PgRows {
    type Item = pgwire::messages::data::DataRow;
    type Error = PgWireError;
    fn rows(_: &Self::Item) -> u64 {
        1
    }
    fn fail(guard: &QueryGuard, e: &mut PgWireError) {
        fail(guard, e);
    }
    fn cancelled(message: &str) -> PgWireError {
        canceled(message)
    }
}

/// The row stream of a statement under its guard ([`sextant_sql::guarded`]).
pub(super) fn guarded(
    rows: pgwire::api::results::SendableRowStream,
    guard: QueryGuard,
) -> pgwire::api::results::SendableRowStream {
    Box::pin(sextant_sql::guarded::<PgRows, _>(rows, guard))
}

pub(super) struct SqlStateErrors;

impl ErrorHandler for SqlStateErrors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        assign_sqlstate(error);
        debug!(error = %error, "statement failed");
    }
}

pub(super) struct Service {
    pub(super) inner: Arc<DfSessionService>,
    pub(super) parser: Arc<Parser>,
    pub(super) engine: Engine,
    pub(super) ctx: Arc<SessionContext>,
    pub(super) queries: Queries,
    pub(super) directory: Arc<Directory>,
}

impl Service {
    /// Runs one statement as an entry of `system.queries`: cancellable while
    /// it plans and runs, its scans counted, its rows streamed under its
    /// guard.
    fn begin<C: ClientInfo>(&self, client: &C, text: &str) -> QueryGuard {
        let user = client
            .metadata()
            .get("user")
            .map_or("sextant", String::as_str);
        let guard = self
            .queries
            .start("pgwire", Some(client.pid_and_secret_key().0), user, text);
        if let Some(limit) = statement_timeout(client) {
            guard.time_out_after(limit);
        }
        guard
    }
}

/// Runs one statement (`run`) under `guard`.
pub(super) async fn tracked<F>(guard: QueryGuard, run: F) -> PgWireResult<Vec<Response>>
where
    F: std::future::Future<Output = PgWireResult<Vec<Response>>>,
{
    {
        let result = guard
            .plan(run)
            .await
            .unwrap_or_else(|| Err(canceled(guard.cancel_message())));
        let mut responses = match result {
            Ok(r) => r,
            Err(mut e) => {
                fail(&guard, &mut e);
                return Err(e);
            }
        };
        let mut guard = Some(guard);
        for r in &mut responses {
            match r {
                Response::Query(q) => {
                    if let Some(g) = guard.take() {
                        let rows =
                            std::mem::replace(&mut q.data_rows, Box::pin(futures::stream::empty()));
                        q.data_rows = guarded(rows, g);
                    }
                }
                Response::Error(e) => {
                    if let Some(g) = &guard {
                        g.fail_with(&e.code, &e.message);
                    }
                }
                Response::Execution(tag) => {
                    if let (Some(g), Some(n)) = (&guard, tag_rows(tag)) {
                        g.add_rows(n);
                    }
                }
                _ => {}
            }
        }
        Ok(responses)
    }
}

/// Records a statement's error, with the SQLSTATE it will leave with.
pub(super) fn fail(guard: &QueryGuard, e: &mut PgWireError) {
    assign_sqlstate(e);
    match e {
        PgWireError::UserError(info) => guard.fail_with(&info.code, &info.message),
        other => guard.fail(&other.to_string()),
    }
}

/// The row count of a command tag such as `INSERT 0 5`.
pub(super) fn tag_rows(tag: &Tag) -> Option<u64> {
    let complete: pgwire::messages::response::CommandComplete = tag.clone().into();
    let (_, rows) = complete.tag.rsplit_once(' ')?;
    rows.parse().ok()
}

impl Service {
    async fn run_sextant<C: ClientInfo>(
        &self,
        client: &C,
        stmt: &statements::SextantStatement,
    ) -> PgWireResult<Response> {
        let who = principal(client);
        let was_open = !self.directory.required();
        let Done { tag, rows, batch } = statements::execute(stmt, &self.engine, &self.ctx, &who)
            .await
            .map_err(pg_error)?;
        // The connection that made the first user (an admin) goes on as it:
        // logins are required from now on, and it set the password.
        if was_open
            && *who.via() == Via::Trusted
            && let [only] = self.directory.users().as_slice()
            && let Some(p) = client.session_extensions().get::<SessionPrincipal>()
        {
            info!(user = %only.name, "the first user exists: logins are required from now on");
            *p.0.write().unwrap_or_else(|e| e.into_inner()) = Principal::password(&only.name);
        }
        if let Some(batch) = batch {
            let df = self
                .ctx
                .read_batch(batch)
                .map_err(|e| pg_error(SqlError::from(e)))?;
            let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            return Ok(Response::Query(
                encode_dataframe(df, &Format::UnifiedText, Some(options)).await?,
            ));
        }
        let tag = Tag::new(tag);
        Ok(Response::Execution(match rows {
            Some(n) => tag.with_rows(n),
            None => tag,
        }))
    }
}

/// Plans one statement for the connection's principal through the
/// statement layer's one pipeline ([`sextant_sql::plan`]), as on Flight SQL:
/// Sextant's statements run here, queries and INSERTs from their checked
/// plan; every other statement (SET, SHOW, transactions, cursors, DDL) goes
/// on to datafusion-postgres, whose hooks answer it.
pub(super) async fn own_plan(
    ctx: &SessionContext,
    client: &(dyn ClientInfo + Send + Sync),
    sql: &str,
) -> PgWireResult<Planned> {
    let setting = |name: &str| crate::pg_session::value_of(client, name).map(|(_, v)| v);
    let who = principal(client);
    let session = sextant_sql::Session {
        user: client
            .metadata()
            .get("user")
            .map_or("sextant", String::as_str),
        pid: Some(client.pid_and_secret_key().0),
        setting: &setting,
        principal: Some(&who),
    };
    sextant_sql::plan(ctx, sql, &session)
        .await
        .map_err(pg_error)
}

impl Service {
    /// Runs a planned query or INSERT of the simple protocol: rows as text,
    /// or the `INSERT 0 n` tag.
    async fn run_plan<C: ClientInfo>(
        &self,
        client: &C,
        stmt: &Statement,
        plan: LogicalPlan,
    ) -> PgWireResult<Response> {
        if client.transaction_status() == TransactionStatus::Error {
            return Err(pg_error(SqlError::new(
                SqlState::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            )));
        }
        let run = async {
            let df = self.ctx.execute_logical_plan(plan).await?;
            if matches!(stmt, Statement::Insert(_)) {
                let batches = df.collect().await?;
                let rows: u64 = batches
                    .iter()
                    .filter_map(|b| b.column_by_name("count"))
                    .filter_map(|c| c.as_any().downcast_ref::<UInt64Array>())
                    .flat_map(|c| c.iter().flatten())
                    .sum();
                return Ok(Ran::Inserted(rows));
            }
            Ok(Ran::Rows(df))
        };
        // The statement timeout covers this and the rows after it: it
        // cancels the statement's guard (Service::begin).
        let ran: Result<Ran, DataFusionError> = run.await;
        match ran.map_err(|e| pg_error(SqlError::from(e)))? {
            Ran::Inserted(rows) => Ok(Response::Execution(
                Tag::new("INSERT").with_oid(0).with_rows(rows as usize),
            )),
            Ran::Rows(df) => {
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                Ok(Response::Query(
                    encode_dataframe(df, &Format::UnifiedText, Some(options)).await?,
                ))
            }
        }
    }
}

impl Service {
    /// `COPY ... FROM STDIN` starts copy-in mode; `COPY ... TO STDOUT`
    /// streams the query's rows as text or CSV.
    async fn run_copy<C: ClientInfo + Send + Sync>(
        &self,
        client: &C,
        sql: &str,
    ) -> PgWireResult<Response> {
        let parsed = copy::parse(sql, &self.engine).map_err(pg_error)?;
        if let copy::Copy::In { table, .. } = &parsed {
            self.directory
                .check(&principal(client), sextant_auth::Action::Insert(table))
                .map_err(|e| pg_error(e.into()))?;
        }
        let copy::Copy::Out { query, .. } = &parsed else {
            return Ok(copy::start_in(client, parsed));
        };
        let Planned::Query { plan, .. } = own_plan(&self.ctx, client, query).await? else {
            return Err(pg_error(SqlError::syntax("COPY (...) TO takes a query")));
        };
        let df = self
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| pg_error(SqlError::from(e)))?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let mut encoded = encode_dataframe(df, &Format::UnifiedText, Some(options)).await?;
        let names: Vec<String> = encoded
            .row_schema()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        let rows = std::mem::replace(encoded.data_rows(), Box::pin(futures::stream::empty()));
        let values = rows.map(|row| row.map(|r| data_row_values(&r)));
        Ok(copy::out_response(
            names.len(),
            Some(names),
            values,
            &parsed,
        ))
    }
}

/// The values of a text-format DataRow (`None` for NULL).
pub(super) fn data_row_values(row: &pgwire::messages::data::DataRow) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(row.field_count.max(0) as usize);
    let mut rest: &[u8] = &row.data;
    for _ in 0..row.field_count {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            break;
        };
        let len = i32::from_be_bytes(*len);
        if len < 0 {
            out.push(None);
            rest = tail;
        } else {
            let (v, tail) = tail.split_at((len as usize).min(tail.len()));
            out.push(Some(v.to_vec()));
            rest = tail;
        }
    }
    out
}

#[async_trait]
impl CopyHandler for Service {
    async fn on_copy_data<C>(&self, client: &mut C, data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        copy::data(client, &self.engine, data).await
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        copy::done(client, &self.engine).await
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        copy::fail(client, &fail.message)
    }
}

/// A statement's description; NoData when it returns no rows.
pub(super) struct StatementDescription(DescribeStatementResponse);

impl DescribeResponse for StatementDescription {
    fn parameters(&self) -> Option<&[Type]> {
        self.0.parameters()
    }

    fn fields(&self) -> &[FieldInfo] {
        self.0.fields()
    }

    fn no_data() -> Self {
        StatementDescription(DescribeStatementResponse::no_data())
    }

    fn is_no_data(&self) -> bool {
        self.0.fields.is_empty()
    }
}

pub(super) enum Ran {
    Rows(DataFrame),
    Inserted(u64),
}

/// The client's `statement_timeout`, as `SET` keeps it (`crate::pg_session`);
/// `None` for none (0).
pub(super) fn statement_timeout<C: ClientInfo>(client: &C) -> Option<Duration> {
    let value = client.metadata().get("statement_timeout")?;
    sextant_sql::pgcompat::settings::parse_milliseconds("statement_timeout", value)
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

#[async_trait]
impl SimpleQueryHandler for Service {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmts = statements::split(query).map_err(pg_error)?;
        if stmts.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let run = sextant_sql::run_as(principal(client), self.run_simple(client, stmts));
        sextant_sql::contain_panic("the server", run)
            .await
            .map_err(pg_error)?
    }
}

impl Service {
    async fn run_simple<C>(&self, client: &mut C, stmts: Vec<String>) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut out = Vec::with_capacity(stmts.len());
        for stmt in stmts {
            if copy::is_copy(&stmt) {
                out.push(self.run_copy(client, &stmt).await?);
                continue;
            }
            let guard = self.begin(client, &stmt);
            let ran = tracked(guard, async {
                match own_plan(&self.ctx, client, &stmt).await? {
                    Planned::Sextant(s) => Ok(vec![self.run_sextant(client, &s).await?]),
                    Planned::Query { statement, plan } => {
                        Ok(vec![self.run_plan(client, &statement, plan).await?])
                    }
                    Planned::Other(_) => {
                        SimpleQueryHandler::do_query(&*self.inner, client, &stmt).await
                    }
                }
            })
            .await?;
            out.extend(ran);
        }
        Ok(out)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = DfStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    /// pgwire's own, except that a statement with parameters and no result
    /// rows (an INSERT) is described as NoData, as Postgres does: pgwire
    /// sends an empty RowDescription, and pgjdbc then refuses the INSERT
    /// ("A result was returned when none was expected").
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.target_type != TARGET_TYPE_BYTE_STATEMENT {
            return self._on_describe(client, message).await;
        }
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match client.portal_store().get_statement(name) {
            Some(Entry::Value(stmt)) => {
                let described = self.do_describe_statement(client, &stmt).await?;
                send_describe_response(client, &StatementDescription(described)).await
            }
            _ => self._on_describe(client, message).await,
        }
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let run = sextant_sql::run_as(principal(client), self.run_portal(client, portal, max_rows));
        sextant_sql::contain_panic("the server", run)
            .await
            .map_err(pg_error)?
    }
}

impl Service {
    async fn run_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<DfStatement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // The parser leaves Sextant's statements and COPY unplanned (no
        // plan, just text).
        if let (text, None) = &portal.statement.statement
            && copy::is_copy(text)
        {
            return self.run_copy(client, text).await;
        }
        let guard = self.begin(client, &portal.statement.statement.0);
        let mut ran = tracked(guard, async {
            // Planned again as it runs, so the check sees the grants of now.
            if let (text, None) = &portal.statement.statement
                && let Planned::Sextant(s) = own_plan(&self.ctx, client, text).await?
            {
                let s = bind_parameters(s, portal, &self.ctx).await?;
                return Ok(vec![self.run_sextant(client, &s).await?]);
            }
            Ok(vec![
                ExtendedQueryHandler::do_query(&*self.inner, client, portal, max_rows).await?,
            ])
        })
        .await?;
        Ok(ran.remove(0))
    }
}

/// A Sextant statement with the portal's parameters: `DELETE ... WHERE
/// host = $1` takes them (typed as the client says, or as the condition
/// places them); the others take none.
async fn bind_parameters(
    stmt: statements::SextantStatement,
    portal: &Portal<DfStatement>,
    ctx: &SessionContext,
) -> PgWireResult<statements::SextantStatement> {
    let statements::SextantStatement::Delete(mut d) = stmt else {
        return Ok(stmt);
    };
    if portal.parameters.is_empty() {
        return Ok(statements::SextantStatement::Delete(d));
    }
    let types = d.parameter_types(ctx).await.map_err(pg_error)?;
    let types: Vec<Option<&datafusion::arrow::datatypes::DataType>> =
        types.iter().map(|t| t.as_ref()).collect();
    let values =
        datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters(portal, &types)?;
    d.params = match values {
        datafusion::common::ParamValues::List(list) => list.into_iter().map(|v| v.value).collect(),
        datafusion::common::ParamValues::Map(_) => {
            return Err(pg_error(SqlError::syntax(
                "DELETE takes positional parameters ($1, $2, ...)",
            )));
        }
    };
    Ok(statements::SextantStatement::Delete(d))
}

/// Extended-protocol parser: Sextant's statements are kept as text for
/// `do_query`; rewritten and plain SQL is planned by datafusion-postgres.
pub(super) struct Parser {
    pub(super) inner: Arc<DfParser>,
    pub(super) ctx: Arc<SessionContext>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = DfStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut stmts = statements::split(sql).map_err(pg_error)?;
        if stmts.len() > 1 {
            return Err(pg_error(SqlError::syntax(
                "cannot insert multiple commands into a prepared statement",
            )));
        }
        let Some(stmt) = stmts.pop() else {
            return Ok(None);
        };
        if copy::is_copy(&stmt) {
            return Ok(Some((stmt, None)));
        }
        match own_plan(&self.ctx, client, &stmt).await? {
            Planned::Sextant(_) => Ok(Some((stmt, None))),
            Planned::Query { statement, plan } => {
                Ok(Some((statement.to_string(), Some((statement, plan)))))
            }
            Planned::Other(_) => self.inner.parse_sql(client, &stmt, types).await,
        }
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(stmt, column_format)
    }
}
