//! Rows of schemaless protocols → one Arrow batch per table.
//!
//! A decoder pushes one row at a time (time + named values). Each value's
//! type is checked against the table's existing column of that name, or the
//! column an earlier row of the same request introduced; a row with a type
//! conflict is rejected whole (nothing of it is appended) with a message
//! naming the column and both types. Never a silent cast: the one widening
//! allowed is a JSON integer into a float column, when exact.

use std::collections::HashMap;
use std::sync::Arc;

use crate::IngestError;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    StringViewBuilder, TimestampNanosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Name of the time column of every table.
pub const TIME: &str = "time";

/// The time column's type: nanoseconds, UTC.
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Text (line-protocol tags and string fields, JSON strings).
    Str(&'a str),
    /// Owned text (flattened JSON arrays, escapes resolved).
    String(String),
    /// A signed integer (line protocol `i`).
    I64(i64),
    /// An unsigned integer (line protocol `u`).
    U64(u64),
    /// A float.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// A JSON integer: an `Int64` column, or exactly into a `Float64` one.
    JsonInt(i64),
}

impl Value<'_> {
    /// The type a new column for this value gets.
    fn data_type(&self) -> DataType {
        match self {
            Value::Str(_) | Value::String(_) => DataType::Utf8,
            Value::I64(_) | Value::JsonInt(_) => DataType::Int64,
            Value::U64(_) => DataType::UInt64,
            Value::F64(_) => DataType::Float64,
            Value::Bool(_) => DataType::Boolean,
        }
    }

    /// Whether the value can be stored in a column of type `dt` without loss.
    fn fits(&self, dt: &DataType) -> bool {
        match (self, dt) {
            // Text columns declared in SQL are string views.
            (Value::Str(_) | Value::String(_), DataType::Utf8View) => true,
            (Value::JsonInt(i), DataType::Float64) => {
                (*i as f64) as i64 == *i && i.unsigned_abs() <= 1 << 53
            }
            (v, dt) => &v.data_type() == dt,
        }
    }
}

enum Builder {
    Str(StringBuilder),
    View(StringViewBuilder),
    I64(Int64Builder),
    U64(UInt64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
}

impl Builder {
    /// Whether a column of type `dt` can be built here.
    fn supports(dt: &DataType) -> bool {
        matches!(
            dt,
            DataType::Utf8
                | DataType::Utf8View
                | DataType::Int64
                | DataType::UInt64
                | DataType::Float64
                | DataType::Boolean
        )
    }

    fn new(dt: &DataType) -> Option<Self> {
        Some(match dt {
            DataType::Utf8 => Builder::Str(StringBuilder::new()),
            DataType::Utf8View => Builder::View(StringViewBuilder::new()),
            DataType::Int64 => Builder::I64(Int64Builder::new()),
            DataType::UInt64 => Builder::U64(UInt64Builder::new()),
            DataType::Float64 => Builder::F64(Float64Builder::new()),
            DataType::Boolean => Builder::Bool(BooleanBuilder::new()),
            _ => return None,
        })
    }

    fn append_nulls(&mut self, n: usize) {
        match self {
            Builder::Str(b) => b.append_nulls(n),
            Builder::View(b) => (0..n).for_each(|_| b.append_null()),
            Builder::I64(b) => b.append_nulls(n),
            Builder::U64(b) => b.append_nulls(n),
            Builder::F64(b) => b.append_nulls(n),
            Builder::Bool(b) => b.append_nulls(n),
        }
    }

    /// Appends a value already checked with [`Value::fits`].
    fn append(&mut self, v: &Value<'_>) {
        match (self, v) {
            (Builder::Str(b), Value::Str(s)) => b.append_value(s),
            (Builder::Str(b), Value::String(s)) => b.append_value(s),
            (Builder::View(b), Value::Str(s)) => b.append_value(s),
            (Builder::View(b), Value::String(s)) => b.append_value(s),
            (Builder::I64(b), Value::I64(i) | Value::JsonInt(i)) => b.append_value(*i),
            (Builder::U64(b), Value::U64(u)) => b.append_value(*u),
            (Builder::F64(b), Value::F64(f)) => b.append_value(*f),
            (Builder::F64(b), Value::JsonInt(i)) => b.append_value(*i as f64),
            (Builder::Bool(b), Value::Bool(x)) => b.append_value(*x),
            (b, _) => b.append_nulls(1),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Str(b) => Arc::new(b.finish()),
            Builder::View(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::U64(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
        }
    }
}

struct Column {
    name: String,
    data_type: DataType,
    builder: Builder,
    len: usize,
    /// A tag (line protocol) or label (remote write): part of the key of
    /// the table it creates ([`TAG_METADATA`]).
    tag: bool,
}

impl Column {
    /// Appends `v` as row `row`, after nulls for the rows that had no value.
    fn append(&mut self, row: usize, v: &Value<'_>) {
        self.builder.append_nulls(row - self.len);
        self.builder.append(v);
        self.len = row + 1;
    }
}

/// Field metadata marking a tag column (the catalog's `TAG_METADATA`).
pub const TAG_METADATA: &str = "sextant.tag";

/// Accumulates the rows of one table within one request.
pub struct TableRows {
    table: String,
    existing: Option<SchemaRef>,
    times: TimestampNanosecondBuilder,
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    /// The columns of the previous row's values, in its order: a row with
    /// the same names in the same order (most rows) is checked against
    /// them alone, without looking each name up.
    layout: Vec<usize>,
    rows: usize,
}

impl TableRows {
    /// Rows for `table`, whose current schema (if the table exists) is `existing`.
    pub fn new(table: impl Into<String>, existing: Option<SchemaRef>) -> Self {
        Self {
            table: table.into(),
            existing,
            times: TimestampNanosecondBuilder::new(),
            columns: vec![],
            index: HashMap::new(),
            layout: vec![],
            rows: 0,
        }
    }

    /// The table these rows go to.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Rows accepted so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was accepted.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The type `name` must have: the table's, or an earlier row's.
    fn expected(&self, name: &str) -> Option<DataType> {
        if let Some(s) = &self.existing
            && let Ok(f) = s.field_with_name(name)
        {
            return Some(f.data_type().clone());
        }
        self.index
            .get(name)
            .map(|&i| self.columns[i].data_type.clone())
    }

    /// Adds one row, or rejects it whole with the reason.
    pub fn push(&mut self, time_ns: i64, values: &[(&str, Value<'_>)]) -> Result<(), IngestError> {
        self.push_tagged(time_ns, values, 0..0)
    }

    /// Adds one row whose values at `tags` are tags (or labels), or
    /// rejects it whole with the reason.
    pub fn push_tagged(
        &mut self,
        time_ns: i64,
        values: &[(&str, Value<'_>)],
        tags: std::ops::Range<usize>,
    ) -> Result<(), IngestError> {
        // The previous row's columns, all distinct and none `time`, checked
        // when that row was: same names in the same order, values that fit.
        if values.len() == self.layout.len()
            && values.iter().zip(&self.layout).all(|((name, v), &c)| {
                let col = &self.columns[c];
                col.name == *name && v.fits(&col.data_type)
            })
        {
            for ((_, v), &c) in values.iter().zip(&self.layout) {
                self.columns[c].append(self.rows, v);
            }
            self.times.append_value(time_ns);
            self.rows += 1;
            return Ok(());
        }
        for (i, (name, v)) in values.iter().enumerate() {
            if *name == TIME {
                return Err(IngestError::InvalidRow(format!(
                    "\"{TIME}\" is the timestamp of the row and cannot be a field or tag"
                )));
            }
            if values[..i].iter().any(|(n, _)| n == name) {
                return Err(IngestError::InvalidRow(format!(
                    "\"{name}\" appears twice in one row"
                )));
            }
            match self.expected(name) {
                Some(dt) if !v.fits(&dt) => {
                    return Err(IngestError::InvalidRow(format!(
                        "column \"{name}\" of table \"{}\" is {}, but this value is {}",
                        self.table,
                        type_name(&dt),
                        type_name(&v.data_type())
                    )));
                }
                Some(dt) if !Builder::supports(&dt) => {
                    return Err(IngestError::InvalidRow(format!(
                        "column \"{name}\" of table \"{}\" is {}, which this protocol cannot write",
                        self.table,
                        type_name(&dt)
                    )));
                }
                _ => {}
            }
        }
        self.layout.clear();
        for (i, (name, v)) in values.iter().enumerate() {
            let idx = match self.index.get(*name) {
                Some(&i) => i,
                None => {
                    let dt = self.expected(name).unwrap_or_else(|| v.data_type());
                    let mut builder = Builder::new(&dt).expect("checked above");
                    builder.append_nulls(self.rows);
                    self.columns.push(Column {
                        name: name.to_string(),
                        data_type: dt,
                        builder,
                        len: self.rows,
                        tag: tags.contains(&i),
                    });
                    self.index.insert(name.to_string(), self.columns.len() - 1);
                    self.columns.len() - 1
                }
            };
            self.layout.push(idx);
            self.columns[idx].append(self.rows, v);
        }
        self.times.append_value(time_ns);
        self.rows += 1;
        Ok(())
    }

    /// The accepted rows as one batch: `time` first, then the columns in the
    /// order they were first seen.
    pub fn finish(mut self) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        if self.rows == 0 {
            return Ok(None);
        }
        let mut fields = vec![Field::new(TIME, time_type(), false)];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(self.times.finish().with_timezone("UTC"))];
        for c in &mut self.columns {
            c.builder.append_nulls(self.rows - c.len);
            let mut field = Field::new(&c.name, c.data_type.clone(), true);
            if c.tag {
                field =
                    field.with_metadata([(TAG_METADATA.to_string(), "true".to_string())].into());
            }
            fields.push(field);
            arrays.push(c.builder.finish());
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map(Some)
    }
}

/// SQL-ish type names for messages.
pub fn type_name(dt: &DataType) -> String {
    match dt {
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "text".into(),
        DataType::Int64 => "bigint".into(),
        DataType::UInt64 => "bigint unsigned".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "boolean".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};

    use super::*;

    #[test]
    fn columns_appear_and_pad_with_nulls() {
        let mut t = TableRows::new("cpu", None);
        t.push(1, &[("host", Value::Str("a")), ("usage", Value::F64(1.5))])
            .unwrap();
        t.push(2, &[("usage", Value::F64(2.5)), ("cores", Value::I64(4))])
            .unwrap();
        t.push(3, &[("host", Value::Str("c"))]).unwrap();
        let b = t.finish().unwrap().unwrap();
        let names: Vec<_> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["time", "host", "usage", "cores"]);
        let host = b.column(1).as_string::<i32>();
        assert_eq!(host.value(0), "a");
        assert!(host.is_null(1));
        assert_eq!(host.value(2), "c");
        let cores = b.column(3).as_primitive::<Int64Type>();
        assert!(cores.is_null(0) && !cores.is_null(1) && cores.is_null(2));
    }

    #[test]
    fn a_conflicting_row_is_rejected_whole() {
        let existing = Arc::new(Schema::new(vec![
            Field::new(TIME, time_type(), false),
            Field::new("usage", DataType::Float64, true),
        ]));
        let mut t = TableRows::new("cpu", Some(existing));
        let err = t
            .push(1, &[("host", Value::Str("a")), ("usage", Value::I64(3))])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("column \"usage\" of table \"cpu\" is double, but this value is bigint"),
            "{err}"
        );
        assert!(t.is_empty());
        // A JSON integer fits a float column exactly.
        t.push(2, &[("usage", Value::JsonInt(3))]).unwrap();
        // Within one request, the first row decides a new column's type.
        t.push(3, &[("host", Value::Str("b"))]).unwrap();
        assert!(t.push(4, &[("host", Value::Bool(true))]).is_err());
        let b = t.finish().unwrap().unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(1).as_primitive::<Float64Type>().value(0), 3.0);
    }

    #[test]
    fn text_columns_declared_in_sql_take_text() {
        let existing = Arc::new(Schema::new(vec![
            Field::new(TIME, time_type(), false),
            Field::new("host", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let mut t = TableRows::new("typed", Some(existing));
        t.push(1, &[("host", Value::Str("a")), ("n", Value::I64(1))])
            .unwrap();
        let err = t.push(2, &[("n", Value::Str("x"))]).unwrap_err();
        assert!(
            err.to_string()
                .contains("is bigint, but this value is text"),
            "{err}"
        );
        let err = t.push(2, &[("host", Value::I64(1))]).unwrap_err();
        assert!(
            err.to_string()
                .contains("is text, but this value is bigint"),
            "{err}"
        );
        let b = t.finish().unwrap().unwrap();
        assert_eq!(b.column(1).data_type(), &DataType::Utf8View);
        assert_eq!(b.column(1).as_string_view().value(0), "a");
    }

    #[test]
    fn time_and_duplicates_are_refused() {
        let mut t = TableRows::new("x", None);
        assert!(t.push(1, &[("time", Value::I64(1))]).is_err());
        assert!(
            t.push(1, &[("a", Value::I64(1)), ("a", Value::I64(2))])
                .is_err()
        );
        assert!(t.finish().unwrap().is_none());
    }
}
