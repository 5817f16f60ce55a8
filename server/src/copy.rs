//! `COPY` over pgwire (psql's `\copy`, drivers' copy APIs).
//!
//! `COPY t [(columns)] FROM STDIN [WITH (FORMAT text|csv, HEADER, DELIMITER,
//! NULL, QUOTE, ESCAPE)]`: the rows arrive as CopyData, are kept until
//! CopyDone, parsed into the table's Arrow types (a value that does not
//! parse is refused with its line and column, and nothing is written), and
//! written through the WAL like any INSERT; `COPY n` answers once they are
//! durable. `COPY t|(query) TO STDOUT`: the rows leave as text or CSV, each
//! value spelled as a query result spells it.

use sextant_sqlstate::SqlState;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::FormatOptions as ArrowFormatOptions;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use futures::StreamExt;
use pgwire::api::ClientInfo;
use pgwire::api::results::{CopyResponse, Response, Tag};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::CopyData;
use sextant_sql::SqlError;
use sextant_storage::Engine;

use crate::error::pg_error;

/// The most COPY data one statement may send (it is held until CopyDone).
const MAX_COPY_BYTES: usize = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Format {
    Text,
    Csv,
}

/// How values are written: PostgreSQL's COPY options.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    format: Format,
    delimiter: u8,
    null: String,
    header: bool,
    quote: u8,
    escape: u8,
}

impl Options {
    fn from_statement(
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<Options, SqlError> {
        let mut format = Format::Text;
        let (mut delimiter, mut null, mut header, mut quote, mut escape) =
            (None, None, false, None, None);
        let one_byte = |c: char, what: &str| -> Result<u8, SqlError> {
            u8::try_from(c).ok().filter(u8::is_ascii).ok_or_else(|| {
                SqlError::invalid_parameter(format!(
                    "COPY {what} must be a single one-byte character"
                ))
            })
        };
        for o in options {
            match o {
                CopyOption::Format(f) => {
                    format = match f.value.to_lowercase().as_str() {
                        "text" => Format::Text,
                        "csv" => Format::Csv,
                        "binary" => {
                            return Err(SqlError::unsupported(
                                "COPY ... (FORMAT binary) is not supported: use text or csv",
                            ));
                        }
                        other => {
                            return Err(SqlError::invalid_parameter(format!(
                                "COPY format \"{other}\" not recognized"
                            )));
                        }
                    }
                }
                CopyOption::Delimiter(c) => delimiter = Some(one_byte(*c, "delimiter")?),
                CopyOption::Null(n) => null = Some(n.clone()),
                CopyOption::Header(h) => header = *h,
                CopyOption::Quote(c) => quote = Some(one_byte(*c, "quote")?),
                CopyOption::Escape(c) => escape = Some(one_byte(*c, "escape")?),
                CopyOption::Encoding(e)
                    if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
                other => {
                    return Err(SqlError::unsupported(format!(
                        "COPY option {other} is not supported"
                    )));
                }
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Binary => {
                    return Err(SqlError::unsupported(
                        "COPY ... BINARY is not supported: use text or csv",
                    ));
                }
                CopyLegacyOption::Delimiter(c) => delimiter = Some(one_byte(*c, "delimiter")?),
                CopyLegacyOption::Null(n) => null = Some(n.clone()),
                CopyLegacyOption::Csv(csv) => {
                    format = Format::Csv;
                    for c in csv {
                        match c {
                            CopyLegacyCsvOption::Header => header = true,
                            CopyLegacyCsvOption::Quote(q) => quote = Some(one_byte(*q, "quote")?),
                            CopyLegacyCsvOption::Escape(e) => {
                                escape = Some(one_byte(*e, "escape")?)
                            }
                            other => {
                                return Err(SqlError::unsupported(format!(
                                    "COPY option {other} is not supported"
                                )));
                            }
                        }
                    }
                }
                other => {
                    return Err(SqlError::unsupported(format!(
                        "COPY option {other} is not supported"
                    )));
                }
            }
        }
        if header && format == Format::Text {
            return Err(SqlError::unsupported(
                "COPY HEADER is available only in CSV mode",
            ));
        }
        let quote = quote.unwrap_or(b'"');
        Ok(Options {
            format,
            delimiter: delimiter.unwrap_or(if format == Format::Csv { b',' } else { b'\t' }),
            null: null.unwrap_or_else(|| {
                if format == Format::Csv {
                    String::new()
                } else {
                    "\\N".into()
                }
            }),
            header,
            quote,
            escape: escape.unwrap_or(quote),
        })
    }
}

/// A COPY statement, ready to run.
pub(crate) enum Copy {
    /// Rows in: the table, the columns the data holds, in order.
    In {
        table: String,
        columns: Vec<Field>,
        options: Options,
    },
    /// Rows out of this query.
    Out { query: String, options: Options },
}

/// Whether `sql` is a COPY statement (its first word).
pub(crate) fn is_copy(sql: &str) -> bool {
    sql.trim_start()
        .get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case("copy"))
        && sql.trim_start()[4..].starts_with(|c: char| c.is_whitespace() || c == '(')
}

/// Reads a COPY statement against `engine`'s tables.
pub(crate) fn parse(sql: &str, engine: &Engine) -> Result<Copy, SqlError> {
    let stmt = sextant_sql::pgcompat::parse_plain(sql)?;
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    } = stmt
    else {
        return Err(SqlError::syntax("expected COPY"));
    };
    let options = Options::from_statement(&options, &legacy_options)?;
    match (to, &target) {
        (false, CopyTarget::Stdin) | (true, CopyTarget::Stdout) => {}
        (false, _) => {
            return Err(SqlError::unsupported(
                "COPY FROM a file on the server is not supported: use COPY ... FROM STDIN (psql: \\copy)",
            ));
        }
        (true, _) => {
            return Err(SqlError::unsupported(
                "COPY TO a file on the server is not supported: use COPY ... TO STDOUT (psql: \\copy)",
            ));
        }
    }
    match source {
        CopySource::Table {
            table_name,
            columns,
        } => {
            let name = sextant_sql::table_name(&table_name)?;
            let def = engine.table(&name).ok_or_else(|| {
                SqlError::new(
                    SqlState::UNDEFINED_TABLE,
                    format!("relation \"{name}\" does not exist"),
                )
            })?;
            let visible = def.visible_schema();
            let fields: Vec<Field> = if columns.is_empty() {
                visible
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect()
            } else {
                columns
                    .iter()
                    .map(|c| {
                        let c = if c.quote_style.is_some() {
                            c.value.clone()
                        } else {
                            c.value.to_lowercase()
                        };
                        visible.field_with_name(&c).cloned().map_err(|_| {
                            SqlError::new(
                                SqlState::UNDEFINED_COLUMN,
                                format!("column \"{c}\" of relation \"{name}\" does not exist"),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?
            };
            if to {
                let list = fields
                    .iter()
                    .map(|f| format!("\"{}\"", f.name().replace('"', "\"\"")))
                    .collect::<Vec<_>>()
                    .join(", ");
                Ok(Copy::Out {
                    query: format!("SELECT {list} FROM \"{}\"", name.replace('"', "\"\"")),
                    options,
                })
            } else {
                Ok(Copy::In {
                    table: name,
                    columns: fields,
                    options,
                })
            }
        }
        CopySource::Query(q) if to => Ok(Copy::Out {
            query: q.to_string(),
            options,
        }),
        CopySource::Query(_) => Err(SqlError::syntax("COPY (query) can only copy TO")),
    }
}

/// The state of a COPY FROM STDIN between its CopyData messages.
#[derive(Default)]
pub(crate) struct CopyInState(Mutex<Option<Pending>>);

pub(crate) struct Pending {
    table: String,
    columns: Vec<Field>,
    options: Options,
    data: Vec<u8>,
    /// The data's admission ([`Engine::admit`]), grown as it comes, held
    /// until the write is answered.
    admission: Option<sextant_storage::Admission>,
}

/// Starts a COPY FROM STDIN: the connection now expects CopyData.
pub(crate) fn start_in<C: ClientInfo>(client: &C, copy: Copy) -> Response {
    let Copy::In {
        table,
        columns,
        options,
    } = copy
    else {
        unreachable!("start_in takes COPY FROM");
    };
    let n = columns.len();
    let state = client
        .session_extensions()
        .get_or_insert_with(CopyInState::default);
    *state.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Pending {
        table,
        columns,
        options,
        data: vec![],
        admission: None,
    });
    Response::CopyIn(CopyResponse::new(0, n, futures::stream::empty()))
}

fn pending<C: ClientInfo>(client: &C) -> Arc<CopyInState> {
    client
        .session_extensions()
        .get_or_insert_with(CopyInState::default)
}

/// A CopyData message of a COPY FROM STDIN: kept once the engine admits
/// the data so far ([`Engine::admit`]; while it waits, the connection is
/// not read).
pub(crate) async fn data<C: ClientInfo + Sync>(
    client: &C,
    engine: &Engine,
    data: CopyData,
) -> PgWireResult<()> {
    let state = pending(client);
    let (want, admission) = {
        let mut guard = state.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = guard.as_mut() else {
            return Err(pg_error(SqlError::new(
                SqlState::PROTOCOL_VIOLATION,
                "COPY data without a COPY FROM STDIN",
            )));
        };
        if p.data.len() + data.data.len() > MAX_COPY_BYTES {
            *guard = None;
            return Err(pg_error(SqlError::new(
                SqlState::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "COPY data exceeds {} MiB: split it into several COPY statements",
                    MAX_COPY_BYTES >> 20
                ),
            )));
        }
        (
            sextant_ingest::Wire::Copy.admitted_bytes(p.data.len() + data.data.len()),
            p.admission.take(),
        )
    };
    let admitted = match admission {
        Some(mut a) => a.grow_to(want).await.map(|()| a),
        None => engine.admit(want).await,
    };
    let mut guard = state.0.lock().unwrap_or_else(|e| e.into_inner());
    let Some(p) = guard.as_mut() else {
        return Err(pg_error(SqlError::new(
            SqlState::PROTOCOL_VIOLATION,
            "COPY data without a COPY FROM STDIN",
        )));
    };
    match admitted {
        Ok(a) => {
            p.admission = Some(a);
            p.data.extend_from_slice(&data.data);
            Ok(())
        }
        Err(e) => {
            *guard = None;
            Err(pg_error(SqlError::from(e)))
        }
    }
}

/// CopyDone: parses the rows and writes them; answers `COPY n`.
pub(crate) async fn done<C>(client: &mut C, engine: &Engine) -> PgWireResult<()>
where
    C: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
{
    let Some(p) = pending(client)
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return Err(pg_error(SqlError::new(
            SqlState::PROTOCOL_VIOLATION,
            "COPY done without a COPY FROM STDIN",
        )));
    };
    let batch = to_batch(&p).map_err(pg_error)?;
    let rows = batch.num_rows();
    if rows > 0 {
        engine
            .write(&p.table, batch)
            .await
            .map_err(|e| pg_error(SqlError::from(e)))?;
        sextant_metrics::metrics()
            .ingest_rows
            .with_label_values(&["copy", &p.table])
            .inc_by(rows as u64);
    }
    use futures::SinkExt;
    client
        .send(PgWireBackendMessage::CommandComplete(
            Tag::new("COPY").with_rows(rows).into(),
        ))
        .await?;
    Ok(())
}

/// CopyFail: the client gave up; nothing is written.
pub(crate) fn fail<C: ClientInfo>(client: &C, message: &str) -> PgWireError {
    pending(client)
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    pg_error(SqlError::new(
        SqlState::QUERY_CANCELED,
        format!("COPY from stdin failed: {message}"),
    ))
}

/// The rows of a COPY FROM as one batch of the named columns.
fn to_batch(p: &Pending) -> Result<RecordBatch, SqlError> {
    let text = std::str::from_utf8(&p.data).map_err(|e| {
        SqlError::new(
            SqlState::CHARACTER_NOT_IN_REPERTOIRE,
            format!("COPY data is not valid UTF-8: {e}"),
        )
    })?;
    let mut rows = match p.options.format {
        Format::Text => parse_text(text, &p.options)?,
        Format::Csv => parse_csv(text, &p.options)?,
    };
    if p.options.header && !rows.is_empty() {
        rows.remove(0);
    }
    let n = p.columns.len();
    for (line, row) in &rows {
        if row.len() != n {
            return Err(SqlError::new(
                SqlState::BAD_COPY_FILE_FORMAT,
                format!(
                    "COPY {}, line {line}: expected {n} columns, got {}",
                    p.table,
                    row.len()
                ),
            ));
        }
    }
    let strict = CastOptions {
        safe: false,
        format_options: ArrowFormatOptions::new(),
    };
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(n);
    for (c, field) in p.columns.iter().enumerate() {
        let values: StringArray = rows.iter().map(|(_, r)| r[c].as_deref()).collect();
        let array = match cast_with_options(&values, field.data_type(), &strict) {
            Ok(a) => a,
            Err(_) => {
                // Name the first value that does not parse.
                let (line, bad) = rows
                    .iter()
                    .find_map(|(line, r)| {
                        let v = r[c].as_deref()?;
                        let one = StringArray::from(vec![v]);
                        cast_with_options(&one, field.data_type(), &strict)
                            .err()
                            .map(|_| (*line, v))
                    })
                    .unwrap_or((0, ""));
                let code = if matches!(
                    field.data_type(),
                    DataType::Timestamp(_, _) | DataType::Date32
                ) {
                    SqlState::INVALID_DATETIME_FORMAT
                } else {
                    SqlState::INVALID_TEXT_REPRESENTATION
                };
                let ty = datafusion_postgres::arrow_pg::datatypes::into_pg_type(field.data_type())
                    .map_or_else(|_| field.data_type().to_string(), |t| t.name().to_string());
                return Err(SqlError::new(
                    code,
                    format!(
                        "COPY {}, line {line}, column {}: invalid input syntax for type {ty}: \"{bad}\"",
                        p.table,
                        field.name(),
                    ),
                ));
            }
        };
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(
        p.columns
            .iter()
            .map(|f| f.clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(schema, arrays).map_err(|e| SqlError::internal(e.to_string()))
}

type Rows = Vec<(usize, Vec<Option<String>>)>;

/// PostgreSQL's text format: one row a line, `delimiter` between values,
/// backslash escapes, the null string for NULL, `\.` as an end marker.
fn parse_text(text: &str, o: &Options) -> Result<Rows, SqlError> {
    let mut rows = vec![];
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == "\\." {
            break;
        }
        if line.is_empty() && i + 1 == text.split('\n').count() {
            continue;
        }
        let mut fields = vec![];
        let mut raw = String::new();
        let mut chars = line.chars().peekable();
        let mut escaped_any = false;
        let finish = |raw: &mut String, escaped: bool, fields: &mut Vec<Option<String>>| {
            if !escaped && *raw == o.null {
                fields.push(None);
            } else {
                fields.push(Some(std::mem::take(raw)));
            }
            raw.clear();
        };
        while let Some(c) = chars.next() {
            if c == o.delimiter as char {
                finish(&mut raw, escaped_any, &mut fields);
                escaped_any = false;
            } else if c == '\\' {
                let Some(n) = chars.next() else {
                    raw.push('\\');
                    break;
                };
                // `\N` (the default null) is the null string, not an escape.
                if format!("\\{n}") == o.null
                    && raw.is_empty()
                    && chars.peek().is_none_or(|c| *c == o.delimiter as char)
                {
                    raw.push_str(&o.null);
                    continue;
                }
                escaped_any = true;
                match n {
                    'b' => raw.push('\u{8}'),
                    'f' => raw.push('\u{c}'),
                    'n' => raw.push('\n'),
                    'r' => raw.push('\r'),
                    't' => raw.push('\t'),
                    'v' => raw.push('\u{b}'),
                    d @ '0'..='7' => {
                        let mut v = d.to_digit(8).unwrap_or(0);
                        for _ in 0..2 {
                            match chars.peek().and_then(|c| c.to_digit(8)) {
                                Some(x) => {
                                    v = v * 8 + x;
                                    chars.next();
                                }
                                None => break,
                            }
                        }
                        raw.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                    }
                    'x' => {
                        let mut v = 0;
                        let mut digits = 0;
                        while digits < 2 {
                            match chars.peek().and_then(|c| c.to_digit(16)) {
                                Some(x) => {
                                    v = v * 16 + x;
                                    chars.next();
                                    digits += 1;
                                }
                                None => break,
                            }
                        }
                        if digits == 0 {
                            raw.push('x');
                        } else {
                            raw.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                        }
                    }
                    other => raw.push(other),
                }
            } else {
                raw.push(c);
            }
        }
        finish(&mut raw, escaped_any, &mut fields);
        rows.push((i + 1, fields));
    }
    Ok(rows)
}

/// CSV: `quote`d values may hold delimiters, quotes (as `escape` + quote)
/// and line breaks; an unquoted value equal to the null string is NULL.
fn parse_csv(text: &str, o: &Options) -> Result<Rows, SqlError> {
    let (d, q, e) = (o.delimiter as char, o.quote as char, o.escape as char);
    let mut rows = vec![];
    let mut fields: Vec<Option<String>> = vec![];
    let mut value = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut line = 1;
    let mut row_line = 1;
    let mut chars = text.chars().peekable();
    let mut any = false;
    let end_value = |value: &mut String, quoted: bool, fields: &mut Vec<Option<String>>| {
        if !quoted && *value == o.null {
            fields.push(None);
        } else {
            fields.push(Some(std::mem::take(value)));
        }
        value.clear();
    };
    while let Some(c) = chars.next() {
        any = true;
        if in_quotes {
            if c == e && e != q && chars.peek() == Some(&q) {
                value.push(q);
                chars.next();
            } else if c == q {
                if e == q && chars.peek() == Some(&q) {
                    value.push(q);
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                if c == '\n' {
                    line += 1;
                }
                value.push(c);
            }
        } else if c == q {
            in_quotes = true;
            quoted = true;
        } else if c == d {
            end_value(&mut value, quoted, &mut fields);
            quoted = false;
        } else if c == '\n' || c == '\r' {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            if fields.is_empty() && value == "\\." && !quoted {
                return Ok(rows);
            }
            end_value(&mut value, quoted, &mut fields);
            quoted = false;
            rows.push((row_line, std::mem::take(&mut fields)));
            line += 1;
            row_line = line;
            any = false;
        } else {
            value.push(c);
        }
    }
    if in_quotes {
        return Err(SqlError::new(
            SqlState::BAD_COPY_FILE_FORMAT,
            format!("COPY CSV, line {row_line}: unterminated quoted value"),
        ));
    }
    if any && !(fields.is_empty() && value == "\\." && !quoted) {
        end_value(&mut value, quoted, &mut fields);
        rows.push((row_line, fields));
    }
    Ok(rows)
}

/// The response of COPY ... TO STDOUT: `rows` (each value's text as a
/// query result gives it, `None` for NULL) as CopyData lines.
pub(crate) fn out_response(
    columns: usize,
    header: Option<Vec<String>>,
    rows: impl futures::Stream<Item = PgWireResult<Vec<Option<Vec<u8>>>>> + Send + 'static,
    copy: &Copy,
) -> Response {
    let (Copy::In { options, .. } | Copy::Out { options, .. }) = copy;
    let o = options.clone();
    let mut header = header.filter(|_| o.header).map(|h| {
        let mut line = vec![];
        for (i, name) in h.iter().enumerate() {
            if i > 0 {
                line.push(o.delimiter);
            }
            write_value(&mut line, Some(name.as_bytes()), &o);
        }
        line.push(b'\n');
        line
    });
    let lines = rows.map(move |row| {
        let row = row?;
        let mut line = header.take().unwrap_or_default();
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                line.push(o.delimiter);
            }
            write_value(&mut line, v.as_deref(), &o);
        }
        line.push(b'\n');
        Ok(CopyData::new(line.into()))
    });
    Response::CopyOut(CopyResponse::new(0, columns, lines))
}

fn write_value(out: &mut Vec<u8>, v: Option<&[u8]>, o: &Options) {
    let Some(v) = v else {
        out.extend_from_slice(o.null.as_bytes());
        return;
    };
    match o.format {
        Format::Text => {
            for &b in v {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' if o.delimiter == b'\t' => out.extend_from_slice(b"\\t"),
                    b if b == o.delimiter => {
                        out.push(b'\\');
                        out.push(b);
                    }
                    b => out.push(b),
                }
            }
        }
        Format::Csv => {
            let needs_quotes = v.is_empty() && o.null.is_empty()
                || v == o.null.as_bytes()
                || v.iter()
                    .any(|&b| b == o.delimiter || b == o.quote || b == b'\n' || b == b'\r');
            if !needs_quotes {
                out.extend_from_slice(v);
                return;
            }
            out.push(o.quote);
            for &b in v {
                if b == o.quote || b == o.escape {
                    out.push(o.escape);
                }
                out.push(b);
            }
            out.push(o.quote);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(format: Format) -> Options {
        Options::from_statement(
            &match format {
                Format::Text => vec![],
                Format::Csv => vec![CopyOption::Format(
                    datafusion::sql::sqlparser::ast::Ident::new("csv"),
                )],
            },
            &[],
        )
        .unwrap()
    }

    #[test]
    fn text_format() {
        let rows = parse_text("a\t1\t\\N\nb\\tc\t2\tx\\\\y\n", &opts(Format::Text)).unwrap();
        assert_eq!(
            rows,
            vec![
                (1, vec![Some("a".into()), Some("1".into()), None]),
                (
                    2,
                    vec![Some("b\tc".into()), Some("2".into()), Some("x\\y".into())]
                ),
            ]
        );
        let mut out = vec![];
        write_value(&mut out, Some(b"b\tc\\"), &opts(Format::Text));
        assert_eq!(out, b"b\\tc\\\\");
    }

    #[test]
    fn csv_format() {
        let rows = parse_csv(
            "a,\"x,\"\"y\"\"\",\n\"multi\nline\",\"\",3\r\n",
            &opts(Format::Csv),
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![
                (1, vec![Some("a".into()), Some("x,\"y\"".into()), None]),
                (
                    2,
                    vec![
                        Some("multi\nline".into()),
                        Some("".into()),
                        Some("3".into())
                    ]
                ),
            ]
        );
        let mut out = vec![];
        write_value(&mut out, Some(b""), &opts(Format::Csv));
        write_value(&mut out, None, &opts(Format::Csv));
        write_value(&mut out, Some(b"a\"b"), &opts(Format::Csv));
        assert_eq!(out, b"\"\"\"a\"\"b\"");
    }
}
