//! Bulk ingest (`CommandStatementIngest`): a DoPut stream of Arrow batches
//! into one table, through the engine's WAL like every other write.
//!
//! The first batch decides the table: created from the stream's schema when
//! it is missing and the options allow it, or checked against it. Columns
//! the table lacks are added (nullable), as for the schemaless protocols;
//! a column whose type differs is accepted only where the conversion is
//! lossless (wider integers, finer timestamps, other string encodings) and
//! otherwise refused, naming the column and both types. Batches are grouped
//! into writes of about [`WRITE_BYTES`]; the answer (rows written) comes
//! once every write is durable. A stream that fails part-way leaves the
//! writes before the failure in the table.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{CastOptions, cast_with_options, concat_batches};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{CommandStatementIngest, TableExistsOption, TableNotExistOption};
use futures::StreamExt;
use sextant_catalog::{DATABASE_NAME, SCHEMA_NAME, TIME_COLUMN, TableOptions};
use sextant_sql::SqlError;
use sextant_storage::{Engine, StorageError};
use tonic::Status;
use tracing::info;

use crate::error::{invalid, status, unsupported};

/// Rows are written to the WAL in groups of about this many bytes.
const WRITE_BYTES: usize = 8 << 20;

/// Casts that fail on overflow instead of writing nulls.
const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: arrow::util::display::FormatOptions::new(),
};

/// What to do about the target table (ADBC's ingest modes).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Mode {
    create: bool,
    exists: TableExistsOption,
}

impl Mode {
    /// No options, or unspecified ones: create the table if it is missing
    /// and append if it is there, as the schemaless protocols do.
    fn of(cmd: &CommandStatementIngest) -> Result<Mode, Status> {
        let Some(o) = cmd.table_definition_options else {
            return Ok(Mode {
                create: true,
                exists: TableExistsOption::Append,
            });
        };
        let create = match TableNotExistOption::try_from(o.if_not_exist) {
            Ok(TableNotExistOption::Create | TableNotExistOption::Unspecified) => true,
            Ok(TableNotExistOption::Fail) => false,
            Err(_) => {
                return Err(invalid(format!(
                    "unknown if_not_exist option {}",
                    o.if_not_exist
                )));
            }
        };
        let exists = match TableExistsOption::try_from(o.if_exists) {
            Ok(TableExistsOption::Unspecified) => TableExistsOption::Append,
            Ok(e) => e,
            Err(_) => return Err(invalid(format!("unknown if_exists option {}", o.if_exists))),
        };
        Ok(Mode { create, exists })
    }
}

/// Runs one bulk ingest and returns the number of rows written.
pub(crate) async fn ingest(
    engine: &Engine,
    directory: &sextant_auth::Directory,
    who: &sextant_auth::Principal,
    cmd: CommandStatementIngest,
    stream: PeekableFlightDataStream,
) -> Result<i64, Status> {
    let mode = Mode::of(&cmd)?;
    check_target(&cmd)?;
    let table = cmd.table.clone();
    let action = match mode.exists {
        TableExistsOption::Replace => sextant_auth::Action::Manage(&table),
        _ => sextant_auth::Action::Insert(&table),
    };
    directory
        .check(who, action)
        .map_err(sextant_auth::grpc::auth_status)?;
    // What the stream holds at once (the batches pending, and their
    // concatenation) is admitted before it is read, and grown for a
    // larger batch.
    let mut admission = engine.admit(2 * WRITE_BYTES).await.map_err(storage)?;
    let mut batches = FlightRecordBatchStream::new_from_flight_data(crate::data_messages(stream));
    let mut prepared: Option<Target> = None;
    let mut pending: Vec<RecordBatch> = vec![];
    let mut pending_bytes = 0;
    let mut written: u64 = 0;
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(|e| match e {
            FlightError::Tonic(s) => *s,
            other => invalid(format!("cannot decode the ingest stream: {other}")),
        })?;
        let target = match &prepared {
            Some(t) => t,
            None => {
                prepared.insert(Target::prepare(engine, &table, batch.schema_ref(), mode).await?)
            }
        };
        let batch = target.convert(&batch)?;
        pending_bytes += batch.get_array_memory_size();
        admission
            .grow_to(2 * pending_bytes.max(WRITE_BYTES))
            .await
            .map_err(storage)?;
        pending.push(batch);
        if pending_bytes >= WRITE_BYTES {
            written += target.write(engine, std::mem::take(&mut pending)).await?;
            pending_bytes = 0;
        }
    }
    let target = match prepared {
        Some(t) => t,
        // A stream with a schema but no batches still creates the table.
        None => match batches.schema() {
            Some(schema) => Target::prepare(engine, &table, &schema.clone(), mode).await?,
            None => return Err(invalid("the ingest stream holds no schema and no rows")),
        },
    };
    written += target.write(engine, pending).await?;
    info!(table = %table, rows = written, "Flight SQL bulk ingest");
    Ok(written as i64)
}

fn check_target(cmd: &CommandStatementIngest) -> Result<(), Status> {
    if cmd.temporary {
        return Err(unsupported("temporary tables are not supported"));
    }
    if cmd.transaction_id.is_some() {
        return Err(unsupported(
            "transactions are not supported: every write is committed once acknowledged",
        ));
    }
    if cmd.table.is_empty() {
        return Err(invalid("the ingest command names no table"));
    }
    if let Some(s) = cmd
        .schema
        .as_deref()
        .filter(|s| !s.is_empty() && *s != SCHEMA_NAME)
    {
        return Err(status(SqlError::invalid_schema(format!(
            "tables live in schema \"{SCHEMA_NAME}\"; cannot ingest into schema \"{s}\""
        ))));
    }
    if let Some(c) = cmd
        .catalog
        .as_deref()
        .filter(|c| !c.is_empty() && *c != DATABASE_NAME)
    {
        return Err(status(SqlError::invalid_schema(format!(
            "tables live in catalog \"{DATABASE_NAME}\"; cannot ingest into catalog \"{c}\""
        ))));
    }
    Ok(())
}

/// The table being written, and how incoming columns become its columns.
struct Target {
    table: String,
    /// The type each incoming column is converted to, in stream order.
    types: Vec<DataType>,
    schema: SchemaRef,
}

impl Target {
    async fn prepare(
        engine: &Engine,
        table: &str,
        incoming: &SchemaRef,
        mode: Mode,
    ) -> Result<Target, Status> {
        // A reference table (no time column) takes rows without one.
        let reference = engine.table(table).is_some_and(|d| d.options.reference)
            && mode.exists != TableExistsOption::Replace;
        let incoming = normalize(incoming, reference)?;
        match engine.table(table) {
            Some(_) if mode.exists == TableExistsOption::Fail => {
                return Err(status(SqlError::from(StorageError::Catalog(
                    sextant_catalog::CatalogError::TableExists(table.to_string()),
                ))));
            }
            Some(_) if mode.exists == TableExistsOption::Replace => {
                engine.drop_table(table).await.map_err(storage)?;
            }
            Some(_) => {}
            None if !mode.create => {
                return Err(status(SqlError::from(StorageError::Catalog(
                    sextant_catalog::CatalogError::TableNotFound(table.to_string()),
                ))));
            }
            None => {}
        }
        let existing = engine.table(table);
        let mut types = Vec::with_capacity(incoming.fields().len());
        let mut new_fields = vec![];
        for field in incoming.fields() {
            match existing
                .as_ref()
                .and_then(|d| d.schema.field_with_name(field.name()).ok())
            {
                Some(col) if col.data_type() == field.data_type() => {
                    types.push(col.data_type().clone())
                }
                Some(col) if lossless(field.data_type(), col.data_type()) => {
                    types.push(col.data_type().clone())
                }
                Some(col) => {
                    return Err(status(SqlError::from(StorageError::TypeConflict {
                        table: table.to_string(),
                        column: field.name().clone(),
                        existing: col.data_type().clone(),
                        incoming: field.data_type().clone(),
                    })));
                }
                None => {
                    types.push(field.data_type().clone());
                    new_fields.push(field.as_ref().clone());
                }
            }
        }
        if existing.is_none() || !new_fields.is_empty() {
            // A new table gets every column; an existing one the new ones.
            engine
                .ensure_columns(table, &Schema::new(new_fields), TableOptions::default())
                .await
                .map_err(storage)?;
        }
        let schema = Arc::new(Schema::new(
            incoming
                .fields()
                .iter()
                .zip(&types)
                .map(|(f, t)| Field::new(f.name(), t.clone(), f.is_nullable()))
                .collect::<Vec<_>>(),
        ));
        Ok(Target {
            table: table.to_string(),
            types,
            schema,
        })
    }

    /// `batch` with its columns converted to the table's types.
    fn convert(&self, batch: &RecordBatch) -> Result<RecordBatch, Status> {
        if batch.num_columns() != self.types.len() {
            return Err(invalid(format!(
                "every batch of an ingest stream must have the same {} columns, got one with {}",
                self.types.len(),
                batch.num_columns()
            )));
        }
        let columns = batch
            .columns()
            .iter()
            .zip(&self.types)
            .zip(self.schema.fields())
            .map(|((col, ty), field)| {
                if col.data_type() == ty {
                    compact(col)
                } else {
                    cast_with_options(col, ty, &STRICT).map_err(|e| {
                        invalid(format!(
                            "column \"{}\": cannot convert {} to {ty}: {e}",
                            field.name(),
                            col.data_type()
                        ))
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let schema = Arc::new(Schema::new(
            self.schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        RecordBatch::try_new(schema, columns).map_err(|e| invalid(e.to_string()))
    }

    async fn write(&self, engine: &Engine, batches: Vec<RecordBatch>) -> Result<u64, Status> {
        let Some(first) = batches.first() else {
            return Ok(0);
        };
        let batch =
            concat_batches(&first.schema(), &batches).map_err(|e| invalid(e.to_string()))?;
        let n = engine.write(&self.table, batch).await.map_err(storage)?;
        sextant_metrics::metrics()
            .ingest_rows
            .with_label_values(&["flight", &self.table])
            .inc_by(n);
        Ok(n)
    }
}

fn storage(e: StorageError) -> Status {
    status(SqlError::from(e))
}

/// The incoming schema as Sextant stores it: `time` must be a timestamp and
/// becomes nanoseconds in UTC (a time without zone is taken as UTC), unless
/// the table is a reference table (`reference`), which has none;
/// dictionary-encoded columns are stored as their values.
fn normalize(schema: &SchemaRef, reference: bool) -> Result<SchemaRef, Status> {
    let time = schema.field_with_name(TIME_COLUMN);
    if let (Err(_), true) = (&time, reference) {
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Dictionary(_, value) => {
                    Field::new(f.name(), value.as_ref().clone(), true)
                }
                _ => f.as_ref().clone().with_nullable(true),
            })
            .collect();
        return Ok(Arc::new(Schema::new(fields)));
    }
    let Ok(time) = time else {
        return Err(status(SqlError::invalid_definition(format!(
            "the ingested data needs a \"{TIME_COLUMN}\" column (a timestamp), or the table must \
             exist as a reference table (CREATE TABLE without a time column); its columns are {}",
            schema
                .fields()
                .iter()
                .map(|f| format!("\"{}\"", f.name()))
                .collect::<Vec<_>>()
                .join(", ")
        ))));
    };
    if !matches!(time.data_type(), DataType::Timestamp(_, _)) {
        return Err(status(SqlError::invalid_definition(format!(
            "column \"{TIME_COLUMN}\" must be a timestamp, not {}",
            time.data_type()
        ))));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let ty = match f.data_type() {
                _ if f.name() == TIME_COLUMN => {
                    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
                }
                DataType::Dictionary(_, value) => value.as_ref().clone(),
                other => other.clone(),
            };
            Field::new(f.name(), ty, f.name() != TIME_COLUMN)
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// Whether every value of type `from` converts to `to` without loss.
fn lossless(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let rank = |t: &DataType| match t {
        Int8 => Some((true, 8)),
        Int16 => Some((true, 16)),
        Int32 => Some((true, 32)),
        Int64 => Some((true, 64)),
        UInt8 => Some((false, 8)),
        UInt16 => Some((false, 16)),
        UInt32 => Some((false, 32)),
        UInt64 => Some((false, 64)),
        _ => None,
    };
    let unit = |u: &TimeUnit| match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    };
    match (from, to) {
        (Dictionary(_, v), to) => lossless(v, to) || v.as_ref() == to,
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (Float16, Float32 | Float64) | (Float32, Float64) => true,
        (Int8 | Int16 | UInt8 | UInt16, Float32) => true,
        (Int8 | Int16 | Int32 | UInt8 | UInt16 | UInt32, Float64) => true,
        (Timestamp(a, _), Timestamp(b, _)) => unit(a) <= unit(b),
        _ => match (rank(from), rank(to)) {
            (Some((fs, fb)), Some((ts, tb))) => (fs == ts && fb <= tb) || (!fs && ts && fb < tb),
            _ => false,
        },
    }
}

/// `col` in buffers of its own. A batch decoded from Arrow IPC has every
/// column in slices of the one message it came in, and Arrow counts the
/// whole message for each of them (`get_array_memory_size`): a 13-column
/// batch counted 13 times its size, which the admission of the request
/// and the write buffer's accounting then reserved. Copying each column
/// frees the message and makes the count true.
fn compact(col: &arrow::array::ArrayRef) -> Result<arrow::array::ArrayRef, Status> {
    let data = col.to_data();
    let mut copy = arrow::array::MutableArrayData::new(vec![&data], false, data.len());
    copy.try_extend(0, 0, data.len())
        .map_err(|e| invalid(format!("cannot copy a column of the ingest stream: {e}")))?;
    Ok(arrow::array::make_array(copy.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch that came through Flight is counted at about its size once
    /// its columns are compacted, and far above it before.
    #[tokio::test]
    async fn decoded_batches_are_counted_at_their_size() {
        use arrow::array::{ArrayRef, StringArray};
        use arrow_flight::encode::FlightDataEncoderBuilder;
        let text: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..5_000).map(|i| format!("a log body of some length, number {i}")),
        ));
        let fields: Vec<Field> = (0..13)
            .map(|i| Field::new(format!("c{i}"), DataType::Utf8, true))
            .collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), vec![text; 13]).unwrap();
        let size = batch.get_array_memory_size();
        let encoded = FlightDataEncoderBuilder::new()
            .build(futures::stream::iter([Ok(batch)]))
            .map(|d| d.map_err(|e| FlightError::ExternalError(Box::new(e))));
        let decoded: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(encoded)
            .map(|b| b.unwrap())
            .collect()
            .await;
        let decoded = &decoded[0];
        assert!(decoded.get_array_memory_size() > 5 * size, "{size}");
        let compacted = RecordBatch::try_new(
            decoded.schema(),
            decoded
                .columns()
                .iter()
                .map(|c| compact(c).unwrap())
                .collect(),
        )
        .unwrap();
        assert_eq!(&compacted, decoded);
        assert!(compacted.get_array_memory_size() <= size * 3 / 2, "{size}");
    }

    #[test]
    fn lossless_conversions() {
        use DataType::*;
        assert!(lossless(&Int32, &Int64));
        assert!(lossless(&UInt32, &Int64));
        assert!(!lossless(&UInt64, &Int64));
        assert!(!lossless(&Int64, &Int32));
        assert!(!lossless(&Int64, &Float64));
        assert!(lossless(&Float32, &Float64));
        assert!(!lossless(&Float64, &Int64));
        assert!(lossless(&Utf8View, &Utf8));
        assert!(lossless(
            &Timestamp(TimeUnit::Microsecond, None),
            &Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
        ));
        assert!(!lossless(
            &Timestamp(TimeUnit::Nanosecond, None),
            &Timestamp(TimeUnit::Microsecond, None)
        ));
        assert!(lossless(
            &Dictionary(Box::new(Int32), Box::new(Utf8)),
            &Utf8
        ));
        assert!(!lossless(&Utf8, &Int64));
    }
}
