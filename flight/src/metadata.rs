//! Flight SQL metadata answers: catalogs, schemas and tables as the
//! DataFusion session sees them (so they agree with `information_schema`),
//! the server's SQL capabilities and types, and the empty answers for what
//! Sextant has none of (primary and foreign keys).

use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables, Nullable,
    Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity, SqlSupportedTransaction,
    SupportedSqlGrammar, XdbcDataType, XdbcDatetimeSubcode,
};
use datafusion::catalog::SchemaProvider;
use datafusion::catalog::information_schema::{INFORMATION_SCHEMA, InformationSchemaProvider};
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;
use tonic::Status;

use crate::error::{df_status, invalid};

/// Schemas whose tables describe the server itself.
const SYSTEM_SCHEMAS: [&str; 3] = ["system", "information_schema", "pg_catalog"];

/// The table types Sextant reports.
const TABLE: &str = "TABLE";
const VIEW: &str = "VIEW";
const SYSTEM_TABLE: &str = "SYSTEM TABLE";

fn arrow_status(e: impl std::fmt::Display) -> Status {
    invalid(e.to_string())
}

pub(crate) fn catalogs(
    ctx: &SessionContext,
    cmd: CommandGetCatalogs,
) -> Result<RecordBatch, Status> {
    let mut b = cmd.into_builder();
    let mut names = ctx.catalog_names();
    names.sort();
    for name in names {
        b.append(name);
    }
    b.build().map_err(arrow_status)
}

pub(crate) fn catalogs_schema() -> SchemaRef {
    CommandGetCatalogs {}.into_builder().schema()
}

/// Every (catalog, schema name, schema) the session resolves, including
/// `information_schema`, which DataFusion answers without listing it.
fn all_schemas(ctx: &SessionContext) -> Vec<(String, String, Arc<dyn SchemaProvider>)> {
    let state = ctx.state();
    let mut out = vec![];
    let mut catalogs = ctx.catalog_names();
    catalogs.sort();
    for catalog in catalogs {
        let Some(c) = ctx.catalog(&catalog) else {
            continue;
        };
        let mut names = c.schema_names();
        names.sort();
        for name in names {
            if let Some(s) = c.schema(&name) {
                out.push((catalog.clone(), name, s));
            }
        }
        if state.config().information_schema() {
            let info = InformationSchemaProvider::new(state.catalog_list().clone());
            out.push((
                catalog.clone(),
                INFORMATION_SCHEMA.to_string(),
                Arc::new(info),
            ));
        }
    }
    out
}

pub(crate) fn schemas(
    ctx: &SessionContext,
    cmd: CommandGetDbSchemas,
) -> Result<RecordBatch, Status> {
    let mut b = cmd.into_builder();
    for (catalog, name, _) in all_schemas(ctx) {
        b.append(catalog, name);
    }
    b.build().map_err(arrow_status)
}

pub(crate) fn schemas_schema() -> SchemaRef {
    CommandGetDbSchemas::default().into_builder().schema()
}

/// The tables `cmd` asks for; of Sextant's own, only the `readable` ones
/// (all if `None`).
pub(crate) async fn tables(
    ctx: &SessionContext,
    cmd: CommandGetTables,
    readable: Option<&[String]>,
) -> Result<RecordBatch, Status> {
    let include_schema = cmd.include_schema;
    let mut b = cmd.into_builder();
    for (catalog, schema_name, schema) in all_schemas(ctx) {
        let system = SYSTEM_SCHEMAS.contains(&schema_name.as_str());
        let mut names = schema.table_names();
        names.sort();
        for name in names {
            if !system && readable.is_some_and(|r| !r.contains(&name)) {
                continue;
            }
            let Some(table) = schema.table(&name).await.map_err(df_status)? else {
                continue;
            };
            let kind = match table.table_type() {
                _ if system => SYSTEM_TABLE,
                TableType::View => VIEW,
                TableType::Base | TableType::Temporary => TABLE,
            };
            let table_schema = if include_schema {
                table.schema()
            } else {
                Arc::new(Schema::empty())
            };
            b.append(&catalog, &schema_name, &name, kind, &table_schema)
                .map_err(arrow_status)?;
        }
    }
    b.build().map_err(arrow_status)
}

pub(crate) fn tables_schema(include_schema: bool) -> SchemaRef {
    CommandGetTables {
        include_schema,
        ..Default::default()
    }
    .into_builder()
    .schema()
}

pub(crate) fn table_types(cmd: CommandGetTableTypes) -> Result<RecordBatch, Status> {
    let mut b = cmd.into_builder();
    for t in [TABLE, VIEW, SYSTEM_TABLE] {
        b.append(t);
    }
    b.build().map_err(arrow_status)
}

pub(crate) fn table_types_schema() -> SchemaRef {
    CommandGetTableTypes {}.into_builder().schema()
}

/// What Sextant answers to GetSqlInfo.
pub(crate) fn sql_info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "Sextant");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        // The Arrow columnar format version (not the arrow-rs crate's).
        b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
        b.append(SqlInfo::FlightSqlServerReadOnly, false);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(
            SqlInfo::FlightSqlServerTransaction,
            SqlSupportedTransaction::None as i32,
        );
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
        b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
        b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
        b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
        b.append(SqlInfo::SqlDdlCatalog, false);
        b.append(SqlInfo::SqlDdlSchema, false);
        b.append(SqlInfo::SqlDdlTable, true);
        b.append(
            SqlInfo::SqlIdentifierCase,
            SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
        );
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(
            SqlInfo::SqlQuotedIdentifierCase,
            SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
        );
        b.append(SqlInfo::SqlAllTablesAreSelectable, true);
        b.append(
            SqlInfo::SqlNullOrdering,
            SqlNullOrdering::SqlNullsSortedHigh as i32,
        );
        b.append(
            SqlInfo::SqlSupportedGrammar,
            SupportedSqlGrammar::SqlCoreGrammar as i32,
        );
        b.append(SqlInfo::SqlSupportsColumnAliasing, true);
        b.append(SqlInfo::SqlTransactionsSupported, false);
        b.build().expect("static SQL info")
    })
}

/// The SQL types Sextant's tables hold, for GetXdbcTypeInfo.
pub(crate) fn xdbc_info() -> &'static XdbcTypeInfoData {
    static INFO: OnceLock<XdbcTypeInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = XdbcTypeInfoDataBuilder::new();
        let ty = |name: &str, data_type: XdbcDataType, size: Option<i32>| XdbcTypeInfo {
            type_name: name.to_string(),
            data_type,
            column_size: size,
            literal_prefix: None,
            literal_suffix: None,
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: false,
            searchable: Searchable::Full,
            unsigned_attribute: None,
            fixed_prec_scale: false,
            auto_increment: Some(false),
            local_type_name: Some(name.to_string()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: None,
            interval_precision: None,
        };
        let numeric = |mut t: XdbcTypeInfo, radix: i32| {
            t.unsigned_attribute = Some(false);
            t.num_prec_radix = Some(radix);
            t
        };
        let text = |mut t: XdbcTypeInfo| {
            t.literal_prefix = Some("'".into());
            t.literal_suffix = Some("'".into());
            t.case_sensitive = true;
            t
        };
        b.append(ty("BOOLEAN", XdbcDataType::XdbcBit, Some(1)));
        b.append(numeric(
            ty("SMALLINT", XdbcDataType::XdbcSmallint, Some(16)),
            2,
        ));
        b.append(numeric(
            ty("INTEGER", XdbcDataType::XdbcInteger, Some(32)),
            2,
        ));
        b.append(numeric(ty("BIGINT", XdbcDataType::XdbcBigint, Some(64)), 2));
        b.append(numeric(ty("REAL", XdbcDataType::XdbcReal, Some(24)), 2));
        b.append(numeric(ty("DOUBLE", XdbcDataType::XdbcDouble, Some(53)), 2));
        b.append(text(ty("TEXT", XdbcDataType::XdbcVarchar, None)));
        b.append(ty("BYTEA", XdbcDataType::XdbcVarbinary, None));
        let mut ts = ty("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(29));
        ts.literal_prefix = Some("TIMESTAMP '".into());
        ts.literal_suffix = Some("'".into());
        ts.sql_data_type = XdbcDataType::XdbcDatetime;
        ts.datetime_subcode = Some(XdbcDatetimeSubcode::XdbcSubcodeTimestampWithTimezone);
        ts.minimum_scale = Some(0);
        ts.maximum_scale = Some(9);
        b.append(ts);
        b.build().expect("static type info")
    })
}

/// Which empty key answer (Sextant has no primary or foreign keys).
#[derive(Clone, Copy)]
pub(crate) enum Keys {
    Primary,
    /// Exported, imported and cross-reference answers share one layout.
    Foreign,
}

/// The schema of a key answer, as the Flight SQL protocol defines it.
pub(crate) fn keys_schema(kind: Keys) -> SchemaRef {
    let text = |n: &str, nullable: bool| Field::new(n, DataType::Utf8, nullable);
    Arc::new(match kind {
        Keys::Primary => Schema::new(vec![
            text("catalog_name", true),
            text("db_schema_name", true),
            text("table_name", false),
            text("column_name", false),
            text("key_name", true),
            Field::new("key_sequence", DataType::Int32, false),
        ]),
        Keys::Foreign => Schema::new(vec![
            text("pk_catalog_name", true),
            text("pk_db_schema_name", true),
            text("pk_table_name", false),
            text("pk_column_name", false),
            text("fk_catalog_name", true),
            text("fk_db_schema_name", true),
            text("fk_table_name", false),
            text("fk_column_name", false),
            Field::new("key_sequence", DataType::Int32, false),
            text("fk_key_name", true),
            text("pk_key_name", true),
            Field::new("update_rule", DataType::UInt8, false),
            Field::new("delete_rule", DataType::UInt8, false),
        ]),
    })
}
