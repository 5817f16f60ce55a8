//! Postgres session settings as clients, pools and ORMs use them: `SHOW`
//! (one setting or `ALL`), `SET` of a Postgres setting, `RESET`, `DISCARD`,
//! `DEALLOCATE` and savepoints, answered per connection. A datafusion-postgres query
//! hook, placed before its own `SET`/`SHOW` hook; what is not a Postgres
//! session setting (`datafusion.*`) goes on to it. `statement_timeout` is
//! read as Postgres reads it (units, fractions) and kept in its canonical
//! form, which the statement's guard reads ([`crate::pg`]).
//!
//! Values live in the connection's metadata (where pgwire keeps the startup
//! parameters and datafusion-postgres the ones it sets); a setting never
//! set there has its default from [`DEFAULTS`], which `current_setting()`
//! also answers from.

use sextant_sqlstate::SqlState;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr, Reset, Set, Statement, Value};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use pgwire::api::ClientInfo;
use pgwire::api::Type;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::error::PgWireResult;
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::startup::ParameterStatus;

use sextant_sql::SqlError;

use sextant_sql::pgcompat::settings::{
    DEFAULTS, canonical, default_setting, milliseconds_text, parse_milliseconds,
};

use crate::error::pg_error;

/// The metadata key of a setting (lower case, as datafusion-postgres uses).
fn key(name: &str) -> String {
    canonical(name)
}

/// A connection's value of `name`: set in this session, or the default.
pub(crate) fn value_of(
    client: &(dyn ClientInfo + Send + Sync),
    name: &str,
) -> Option<(String, String)> {
    let (display, default) = default_setting(name)?;
    let value = client
        .metadata()
        .get(&key(name))
        .cloned()
        .unwrap_or_else(|| default.to_string());
    Some((display.to_string(), value))
}

/// Answers `SHOW`, `SET` of a Postgres setting, `RESET`, `DISCARD` and
/// `DEALLOCATE`.
#[derive(Debug)]
pub(crate) struct SessionHook;

/// What a statement is, for this hook.
enum Kind {
    Show(String),
    ShowAll,
    Set {
        name: String,
        value: String,
    },
    Reset(Option<String>),
    Discard(String),
    Deallocate(Option<String>),
    /// `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`: accepted with their tag
    /// (every write is already committed; there is nothing to roll back).
    Savepoint(&'static str),
}

fn kind(stmt: &Statement) -> Option<Kind> {
    match stmt {
        Statement::ShowVariable { variable } => {
            let name = variable
                .iter()
                .map(|i| i.value.clone())
                .collect::<Vec<_>>()
                .join(" ");
            if name.eq_ignore_ascii_case("all") {
                return Some(Kind::ShowAll);
            }
            default_setting(&name).map(|_| Kind::Show(name))
        }
        Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) => {
            let name = variable.to_string();
            default_setting(&name)?;
            let value = values
                .iter()
                .map(setting_text)
                .collect::<Vec<_>>()
                .join(", ");
            Some(Kind::Set { name, value })
        }
        Statement::Set(Set::SetTimeZone { value, .. }) => Some(Kind::Set {
            name: "TimeZone".into(),
            value: setting_text(value),
        }),
        Statement::Reset(r) => match &r.reset {
            Reset::ALL => Some(Kind::Reset(None)),
            Reset::ConfigurationParameter(name) => {
                let name = name.to_string();
                default_setting(&name).map(|_| Kind::Reset(Some(name)))
            }
        },
        Statement::Discard { object_type } => Some(Kind::Discard(object_type.to_string())),
        Statement::Savepoint { .. } => Some(Kind::Savepoint("SAVEPOINT")),
        Statement::ReleaseSavepoint { .. } => Some(Kind::Savepoint("RELEASE")),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => Some(Kind::Savepoint("ROLLBACK")),
        Statement::Deallocate { name, .. } => Some(Kind::Deallocate(
            (!name.value.eq_ignore_ascii_case("all")).then(|| name.value.clone()),
        )),
        _ => None,
    }
}

/// A `SET` value as text: `'UTC'` → `UTC`, `DEFAULT` → the default.
fn setting_text(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(id) => id.value.clone(),
        other => other.to_string(),
    }
}

fn text_response(columns: &[&str], rows: Vec<Vec<String>>) -> PgWireResult<Response> {
    let fields: Arc<Vec<FieldInfo>> = Arc::new(
        columns
            .iter()
            .map(|c| FieldInfo::new(c.to_string(), None, None, Type::TEXT, FieldFormat::Text))
            .collect(),
    );
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut encoder = DataRowEncoder::new(fields.clone());
        for v in row {
            encoder.encode_field(&Some(v))?;
        }
        out.push(Ok(encoder.take_row()));
    }
    Ok(Response::Query(QueryResponse::new(
        fields,
        Box::pin(futures::stream::iter(out)),
    )))
}

/// Settings a client learns of by `ParameterStatus` when they change.
const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "search_path",
    "standard_conforming_strings",
    "is_superuser",
];

async fn report(client: &mut dyn HookClient, name: &str) -> PgWireResult<()> {
    if let Some(reported) = REPORTED.iter().find(|r| r.eq_ignore_ascii_case(name))
        && let Some((_, value)) = value_of(client, name)
    {
        client
            .send_message(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                reported.to_string(),
                value,
            )))
            .await?;
    }
    Ok(())
}

async fn respond(kind: Kind, client: &mut dyn HookClient) -> PgWireResult<Response> {
    match kind {
        Kind::Show(name) => {
            let (display, value) = value_of(client, &name).expect("a known setting");
            text_response(&[&display], vec![vec![value]])
        }
        Kind::ShowAll => {
            let rows = DEFAULTS
                .iter()
                .map(|(n, _, d)| {
                    let (_, v) = value_of(client, n).expect("a known setting");
                    vec![n.to_string(), v, d.to_string()]
                })
                .collect();
            text_response(&["name", "setting", "description"], rows)
        }
        Kind::Set { name, value } => {
            let (display, default) = default_setting(&name).expect("a known setting");
            let value = if value.eq_ignore_ascii_case("default") {
                default.to_string()
            } else {
                value
            };
            let value = check_value(display, &value)?;
            client.metadata_mut().insert(key(display), value);
            report(client, display).await?;
            Ok(Response::Execution(Tag::new("SET")))
        }
        Kind::Reset(name) => {
            let names: Vec<&str> = match &name {
                Some(n) => vec![default_setting(n).expect("a known setting").0],
                None => DEFAULTS.iter().map(|(n, _, _)| *n).collect(),
            };
            for n in names {
                if client.metadata_mut().remove(&key(n)).is_some() {
                    report(client, n).await?;
                }
            }
            Ok(Response::Execution(Tag::new("RESET")))
        }
        Kind::Discard(what) => {
            if what.eq_ignore_ascii_case("all") {
                for (n, _, _) in DEFAULTS {
                    if client.metadata_mut().remove(&key(n)).is_some() {
                        report(client, n).await?;
                    }
                }
                client.portal_store().clear_portals();
            }
            Ok(Response::Execution(Tag::new(&format!(
                "DISCARD {}",
                what.to_uppercase()
            ))))
        }
        // pgwire cannot list a connection's statements to close them all;
        // a statement prepared again under its name replaces the old one,
        // which is what pools that send this rely on.
        Kind::Deallocate(None) => Ok(Response::Execution(Tag::new("DEALLOCATE ALL"))),
        Kind::Savepoint(tag) => Ok(Response::Execution(Tag::new(tag))),
        Kind::Deallocate(Some(name)) => {
            if client.portal_store().get_statement(&name).is_none() {
                return Err(pg_error(SqlError::new(
                    SqlState::INVALID_SQL_STATEMENT_NAME,
                    format!("prepared statement \"{name}\" does not exist"),
                )));
            }
            client.portal_store().rm_statement(&name);
            Ok(Response::Execution(Tag::new("DEALLOCATE")))
        }
    }
}

/// Values Sextant cannot honour are refused rather than ignored.
/// `value` as setting `name` keeps it, or Postgres' error for it.
fn check_value(name: &str, value: &str) -> PgWireResult<String> {
    let refuse = |why: &str| {
        Err(pg_error(SqlError::invalid_parameter(format!(
            "invalid value for parameter \"{name}\": \"{value}\"{why}"
        ))))
    };
    match name {
        "client_encoding"
            if !matches!(
                value.to_uppercase().replace('-', "").as_str(),
                "UTF8" | "UNICODE"
            ) =>
        {
            refuse(": Sextant speaks UTF8 only")
        }
        "standard_conforming_strings" if !value.eq_ignore_ascii_case("on") => {
            refuse(": only \"on\" is supported")
        }
        "statement_timeout" => parse_milliseconds(name, value)
            .map(milliseconds_text)
            .map_err(|m| pg_error(SqlError::invalid_parameter(m))),
        _ => Ok(value.to_string()),
    }
}

fn plan_for(kind: &Kind) -> LogicalPlan {
    let columns: Vec<Field> = match kind {
        Kind::Show(name) => {
            let display = default_setting(name).map_or(name.as_str(), |(d, _)| d);
            vec![Field::new(display, DataType::Utf8, false)]
        }
        Kind::ShowAll => ["name", "setting", "description"]
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, false))
            .collect(),
        _ => vec![],
    };
    let schema = DFSchema::try_from(Schema::new(columns)).expect("a valid schema");
    LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(schema),
    })
}

#[async_trait]
impl QueryHook for SessionHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let kind = kind(statement)?;
        Some(respond(kind, client).await)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        kind(statement).map(|k| Ok(plan_for(&k)))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let kind = kind(statement)?;
        Some(respond(kind, client).await)
    }
}
