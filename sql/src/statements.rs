//! Running Sextant's own SQL statements: a [`SextantStatement`] (as
//! [`crate::classify`] recognized it and [`crate::plan`] checked it) →
//! [`execute`] → the module of its kind (access control, views, alerts,
//! `KILL`), or the table statements here (`CREATE TABLE`, `ALTER TABLE ...
//! SET/RESET (...)`, `DROP TABLE`, `FLUSH TABLE`, `COMPACT TABLE`) against
//! the engine → a [`Done`].

use sextant_sqlstate::SqlState;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    ColumnOption, CreateTable, CreateTableOptions, Ident, ObjectName, SqlOption, Statement,
    TableConstraint,
};
use sextant_auth::Principal;
use sextant_catalog::{Merge, NewTable, TIME_COLUMN, TableKey, TableOptions};
use sextant_storage::Engine;

use crate::ast::{AlterTable, Done, DropObjects, option_text, set_option, table_name};
use crate::classify::SextantStatement;
use crate::error::SqlError;

/// Runs one of Sextant's statements for `who`, as [`crate::plan`] gave it
/// (having checked that `who` may).
pub async fn execute(
    stmt: &SextantStatement,
    engine: &Engine,
    ctx: &SessionContext,
    who: &Principal,
) -> Result<Done, SqlError> {
    let directory = crate::access::directory(ctx)?;
    use SextantStatement as S;
    match stmt {
        S::Access(a) => crate::access::execute(a, &directory, who),
        S::CreateTable(ct) => create_table(ct, engine, ctx).await,
        S::AlterTable(alter) => alter_table(alter, engine).await,
        S::DropTable(drop) => drop_table(drop, engine).await,
        S::Flush(tables) => flush(tables, engine).await,
        S::Compact(tables) => compact(tables, engine).await,
        S::Check(tables) => check(tables, engine).await,
        S::CreateView(cv) => crate::views::create(cv, engine, ctx).await,
        S::CreatePlainView {
            name,
            query,
            or_replace,
            if_not_exists,
        } => {
            crate::views::create_plain(name, query, *or_replace, *if_not_exists, engine, ctx).await
        }
        S::DropPlainView(drop) => crate::views::drop_plain(drop, engine).await,
        S::CreateIndex(ci) => crate::indexes::create(ci, engine).await,
        S::DropIndex(drop) => crate::indexes::drop(drop, engine).await,
        S::DropView(drop) => crate::views::drop(drop, engine).await,
        S::RefreshView(name) => crate::views::refresh(name, engine, ctx).await,
        S::Delete(d) => crate::delete::execute(d, engine, ctx).await,
        S::CreateAlert { def, if_not_exists } => {
            crate::alerts::create(def, *if_not_exists, ctx).await
        }
        S::AlterAlert { name, paused } => crate::alerts::alter(name, *paused, ctx),
        S::DropAlert { name, if_exists } => crate::alerts::drop(name, *if_exists, ctx),
        S::Kill(id) => {
            let queries = ctx
                .state_ref()
                .read()
                .config()
                .get_extension::<crate::Queries>()
                .ok_or_else(|| SqlError::unsupported("KILL is not available in this session"))?;
            let own = (!directory.is_admin(who)).then(|| who.user());
            crate::queries::kill(*id, &queries, own)
        }
    }
}

async fn create_table(
    ct: &CreateTable,
    engine: &Engine,
    ctx: &SessionContext,
) -> Result<Done, SqlError> {
    let mut ct = ct.clone();
    let name = table_name(&ct.name)?;
    if ct.query.is_some() {
        return Err(SqlError::unsupported(
            "CREATE TABLE ... AS SELECT is not supported yet: create the table, then INSERT INTO ... SELECT",
        ));
    }
    if ct.external || ct.temporary {
        return Err(SqlError::unsupported(
            "only plain CREATE TABLE is supported (no EXTERNAL or TEMPORARY)",
        ));
    }
    let mut options = table_options(&ct.table_options)?;
    if ct.if_not_exists && engine.table(&name).is_some() {
        return Ok(Done {
            tag: "CREATE TABLE",
            rows: None,
            batch: None,
        });
    }
    let schema = column_schema(&mut ct, ctx).await?;
    let key = primary_key(&ct)?;
    let schema = if schema.index_of(TIME_COLUMN).is_err() {
        // A reference table (host -> team): no time column of its own.
        if options.retention.is_some() {
            return Err(SqlError::invalid_definition(format!(
                "table \"{name}\" has no time column, so its rows do not age: retention \
                 needs a \"time TIMESTAMP NOT NULL\" column"
            )));
        }
        options.reference = true;
        with_internal_time(schema)
    } else {
        with_time_column(&name, schema)?
    };
    let schema = match key {
        Some(columns) => {
            let schema = with_key(&name, schema, &columns, options.reference)?;
            options.key = Some(TableKey {
                columns,
                tags: false,
                merge: Merge::LastRow,
            });
            schema
        }
        None => schema,
    };
    crate::ast::check_token_index(&name, &options, &schema)?;
    match engine
        .create_table(NewTable {
            name,
            schema: Arc::new(schema),
            time_column: TIME_COLUMN.to_string(),
            options,
        })
        .await
    {
        Ok(_) => {}
        Err(sextant_storage::StorageError::Catalog(
            sextant_catalog::CatalogError::TableExists(_),
        )) if ct.if_not_exists => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Done {
        tag: "CREATE TABLE",
        rows: None,
        batch: None,
    })
}

/// The columns of `PRIMARY KEY (a, b)` or of a column's `PRIMARY KEY`.
fn primary_key(ct: &CreateTable) -> Result<Option<Vec<String>>, SqlError> {
    let normal = |i: &Ident| match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_lowercase(),
    };
    let mut keys: Vec<Vec<String>> = vec![];
    for c in &ct.constraints {
        if let TableConstraint::PrimaryKey(pk) = c {
            let cols = pk
                .columns
                .iter()
                .map(|c| match &c.column.expr {
                    datafusion::sql::sqlparser::ast::Expr::Identifier(i) => Ok(normal(i)),
                    other => Err(SqlError::syntax(format!(
                        "a primary key is made of columns, not {other}"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            keys.push(cols);
        }
    }
    for col in &ct.columns {
        if col
            .options
            .iter()
            .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
        {
            keys.push(vec![normal(&col.name)]);
        }
    }
    if keys.len() > 1 {
        return Err(SqlError::invalid_definition(format!(
            "table \"{}\" has more than one primary key",
            ct.name
        )));
    }
    Ok(keys.pop())
}

/// Checks a key against the columns (each once, each a column; the time
/// column among them unless the table is a reference table) and makes its
/// columns NOT NULL, as a primary key's are.
fn with_key(
    table: &str,
    schema: Schema,
    key: &[String],
    reference: bool,
) -> Result<Schema, SqlError> {
    for (i, c) in key.iter().enumerate() {
        if key[..i].contains(c) {
            return Err(SqlError::invalid_definition(format!(
                "column \"{c}\" appears twice in the primary key of table \"{table}\""
            )));
        }
        if reference && c == TIME_COLUMN || schema.index_of(c).is_err() {
            return Err(SqlError::new(
                SqlState::UNDEFINED_COLUMN,
                format!(
                    "column \"{c}\" named in the primary key of table \"{table}\" does not exist"
                ),
            ));
        }
    }
    if !reference && !key.iter().any(|c| c == TIME_COLUMN) {
        return Err(SqlError::invalid_definition(format!(
            "the primary key of table \"{table}\" must include its time column: \
             PRIMARY KEY ({}, time) (a row is one point of a series)",
            key.join(", ")
        )));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let f = f.as_ref().clone();
            if key.contains(f.name()) {
                f.with_nullable(false)
            } else {
                f
            }
        })
        .collect();
    Ok(Schema::new(fields))
}

/// Arrow types of the columns, as DataFusion maps SQL type names.
async fn column_schema(ct: &mut CreateTable, ctx: &SessionContext) -> Result<Schema, SqlError> {
    let mut plain = ct.clone();
    plain.table_options = CreateTableOptions::None;
    plain.if_not_exists = false;
    // The key is checked on its own ([`with_key`]), with its own errors.
    plain
        .constraints
        .retain(|c| !matches!(c, TableConstraint::PrimaryKey(_)));
    for c in &mut plain.columns {
        c.options
            .retain(|o| !matches!(o.option, ColumnOption::PrimaryKey(_)));
    }
    plain.name = ObjectName::from(vec![Ident::new("sextant_column_probe")]);
    let plan = crate::error::plan_contained(ctx, Statement::CreateTable(plain)).await?;
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) => {
            Ok(c.input.schema().as_arrow().clone())
        }
        other => Err(SqlError::internal(format!(
            "CREATE TABLE planned as {}",
            other.display()
        ))),
    }
}

/// A reference table's columns after its internal time column, which the
/// storage partitions by and queries do not see.
fn with_internal_time(schema: Schema) -> Schema {
    let time = Field::new(
        TIME_COLUMN,
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        false,
    );
    let fields: Vec<Field> = std::iter::once(time)
        .chain(schema.fields().iter().map(|f| f.as_ref().clone()))
        .collect();
    Schema::new(fields)
}

/// Every table has `time` as a nanosecond UTC timestamp that is never null.
fn with_time_column(table: &str, schema: Schema) -> Result<Schema, SqlError> {
    let Ok(idx) = schema.index_of(TIME_COLUMN) else {
        return Err(SqlError::invalid_definition(format!(
            "table \"{table}\" needs a time column: add \"time TIMESTAMP NOT NULL\""
        )));
    };
    if !matches!(schema.field(idx).data_type(), DataType::Timestamp(_, _)) {
        return Err(SqlError::invalid_definition(format!(
            "column \"time\" of table \"{table}\" must be TIMESTAMP, not {}",
            schema.field(idx).data_type()
        )));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i == idx {
                Field::new(
                    TIME_COLUMN,
                    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                    false,
                )
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Ok(Schema::new(fields))
}

fn table_options(opts: &CreateTableOptions) -> Result<TableOptions, SqlError> {
    let list: &[SqlOption] = match opts {
        CreateTableOptions::None => &[],
        CreateTableOptions::With(l) => l,
        _ => {
            return Err(SqlError::syntax(
                "table options go in WITH (retention = '30 days', partition = '1 hour')",
            ));
        }
    };
    let mut out = TableOptions::default();
    for opt in list {
        let SqlOption::KeyValue { key, value } = opt else {
            return Err(SqlError::syntax(format!("unsupported table option {opt}")));
        };
        set_option(&mut out, &key.value.to_lowercase(), &option_text(value)?)?;
    }
    Ok(out)
}

/// `ALTER TABLE t SET (retention = '7 days', token_index = 'off')`,
/// `ALTER TABLE t RESET (retention)`. Columns are added by writing them, so these are the only
/// changes a table takes.
async fn alter_table(alter: &AlterTable, engine: &Engine) -> Result<Done, SqlError> {
    let name = &alter.name;
    let Some(def) = engine.table(name) else {
        if alter.if_exists {
            return Ok(Done {
                tag: "ALTER TABLE",
                rows: None,
                batch: None,
            });
        }
        return Err(sextant_storage::StorageError::from(
            sextant_catalog::CatalogError::TableNotFound(name.clone()),
        )
        .into());
    };
    let mut options = def.options.clone();
    if def.options.reference
        && alter
            .changes
            .iter()
            .any(|(k, v)| k.as_str() == "retention" && v.is_some())
    {
        return Err(SqlError::invalid_definition(format!(
            "table \"{name}\" has no time column, so its rows do not age: retention does not apply"
        )));
    }
    for (key, value) in &alter.changes {
        match (key.as_str(), value) {
            ("partition" | "partition_duration", _) => {
                return Err(SqlError::unsupported(format!(
                    "the partition of table \"{name}\" cannot change: its files are laid out by it; \
                     create a new table and INSERT INTO ... SELECT"
                )));
            }
            (key, Some(text)) => set_option(&mut options, key, text)?,
            ("retention", None) => options.retention = TableOptions::default().retention,
            ("token_index", None) => options.token_index = TableOptions::default().token_index,
            (key, None) => {
                return Err(SqlError::invalid_parameter(format!(
                    "unknown table option \"{key}\" (known: {})",
                    crate::ast::KNOWN_TABLE_OPTIONS
                )));
            }
        }
    }
    crate::ast::check_token_index(name, &options, &def.schema)?;
    let now = engine.now_ns();
    let cutoff =
        |r: Option<std::time::Duration>| r.map(|r| now.saturating_sub(r.as_nanos() as i64));
    let (hidden_before, visible_from) = (cutoff(def.options.retention), cutoff(options.retention));
    engine.set_options(name, options).await?;
    if let Some(hidden_before) = hidden_before
        && visible_from.is_none_or(|v| v < hidden_before)
    {
        crate::views::reveal(engine, name, visible_from, hidden_before).await?;
    }
    Ok(Done {
        tag: "ALTER TABLE",
        rows: None,
        batch: None,
    })
}

async fn drop_table(drop: &DropObjects, engine: &Engine) -> Result<Done, SqlError> {
    for name in &drop.names {
        if engine.view(name).is_some() {
            return Err(SqlError::new(
                SqlState::WRONG_OBJECT_TYPE,
                format!("\"{name}\" is a materialized view: use DROP MATERIALIZED VIEW {name}"),
            ));
        }
        if engine.table(name).is_none() {
            if drop.if_exists {
                continue;
            }
            return Err(sextant_storage::StorageError::Catalog(
                sextant_catalog::CatalogError::TableNotFound(name.clone()),
            )
            .into());
        }
        engine.drop_table(name).await?;
    }
    Ok(Done {
        tag: "DROP TABLE",
        rows: None,
        batch: None,
    })
}

async fn flush(tables: &[String], engine: &Engine) -> Result<Done, SqlError> {
    let mut files = 0;
    for name in tables {
        files += engine.flush_table(name).await?;
    }
    Ok(Done {
        tag: "FLUSH",
        rows: Some(files),
        batch: None,
    })
}

/// `COMPACT TABLE a, b`: merges each table's small files now; the count is
/// the number of files merged away.
async fn compact(tables: &[String], engine: &Engine) -> Result<Done, SqlError> {
    let mut files = 0;
    for name in tables {
        files += engine.compact_table(name).await?.files_in;
    }
    Ok(Done {
        tag: "COMPACT",
        rows: Some(files),
        batch: None,
    })
}

/// The rows `CHECK TABLE` answers with: one per persisted file.
pub fn check_schema() -> arrow::datatypes::SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("damage", DataType::Utf8, true),
    ]))
}

/// `CHECK TABLE a, b`: reads every persisted file of each table whole and
/// answers one row per file (`ok` or `damaged` and what is wrong); damaged
/// files are noted in system.files. The count is the files checked.
async fn check(tables: &[String], engine: &Engine) -> Result<Done, SqlError> {
    use arrow::array::{ArrayRef, StringArray, UInt64Array};
    let mut rows = vec![];
    for name in tables {
        for f in engine.check_table(name).await? {
            rows.push((name.clone(), f));
        }
    }
    let status = |d: &Option<String>| if d.is_some() { "damaged" } else { "ok" };
    let batch = arrow::array::RecordBatch::try_new(
        check_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(t, _)| t))) as ArrayRef,
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, f)| &f.path),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|(_, f)| f.rows),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, f)| status(&f.damage)),
            )),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|(_, f)| f.damage.clone()),
            )),
        ],
    )
    .map_err(|e| SqlError::internal(e.to_string()))?;
    Ok(Done {
        tag: "CHECK",
        rows: Some(batch.num_rows()),
        batch: Some(batch),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ast::{parse_interval, parse_retention};

    #[test]
    fn options() {
        let o = table_options(&CreateTableOptions::None).unwrap();
        assert_eq!(o, TableOptions::default());
        assert_eq!(
            parse_retention("30 days").unwrap(),
            Some(Duration::from_secs(30 * 86400))
        );
        assert_eq!(parse_retention("infinite").unwrap(), None);
        assert!(parse_interval("soon").is_err());
    }
}
