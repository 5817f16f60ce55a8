//! Token search: `matches_term(text, term)` and the token index that lets a
//! scan skip the Parquet row groups where a term cannot occur.
//!
//! A token is a longest run of alphanumeric characters ([`tokens`]).
//! `matches_term(text, term)` is true when `term` occurs in `text` with no
//! alphanumeric character against either of its alphanumeric edges
//! (GreptimeDB's `matches_term`): case-sensitive, `'error'` matches
//! `"an error: x"` and `"error-prone"` but not `"errors"`. Every token of
//! a matched term is then a token of the text, which is what the index
//! relies on.
//!
//! Writing: the Parquet writer hands each row group's values of the
//! columns meant for search ([`is_search_column`]) to an [`IndexBuilder`],
//! which puts their tokens in one split-block bloom filter per row group
//! (Parquet's own [`Sbbf`], folded to 1% false positives at the end) and
//! stores them in the file's key-value metadata ([`INDEX_KEY`]), so the
//! index lives and dies with its file (compaction writes a new one).
//!
//! Reading: a scan filtered by `matches_term(<column>, '<term>')` loads
//! each file's index once ([`TokenCache`]), and reads only the row groups
//! whose filter may hold every token of the term; a file with none is not
//! read at all. Rows are still filtered by the function itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sextant_catalog::TokenIndex;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::datatypes::DataType;
use base64::Engine as _;
use datafusion::common::{Result as DfResult, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::{KeyValue, ParquetMetaData};

/// The function's name in SQL.
pub const FUNCTION_NAME: &str = "matches_term";

/// The key of a file's token index in its Parquet key-value metadata.
pub(crate) const INDEX_KEY: &str = "sextant.token_index";

/// The tokenizer the index was built with: an index of another version is
/// ignored (the file is read whole), never trusted.
const TOKENIZER: &str = "alnum-1";

/// The false-positive rate each row group's filter is folded down to.
const FPP: f64 = 0.01;

/// Distinct tokens per row a row group's filter is first sized for, before
/// it is folded to what it holds (so a row group of varied text still gets
/// a useful filter; one of few words ends at a few dozen bytes).
const TOKENS_PER_ROW: usize = 4;

/// The most distinct tokens a row group's filter is sized for (2 MiB).
const MAX_NDV: usize = 1 << 21;

/// Whether a column gets a token index: text meant to be searched, by its
/// name (`body`, `message`, `msg`, `log`, or ending in `_message` or
/// `.message`), as ids get bloom filters by theirs.
pub(crate) fn is_search_column(name: &str, dt: &DataType) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) && (matches!(name.as_str(), "body" | "message" | "msg" | "log")
        || name.ends_with("_message")
        || name.ends_with(".message"))
}

/// Whether a table's `index` choice gives column `name` of type `dt` a
/// token index: a text column, by name ([`TokenIndex::Auto`]: those named
/// for messages) or listed.
pub(crate) fn indexed(index: &TokenIndex, name: &str, dt: &DataType) -> bool {
    match index {
        TokenIndex::Auto => is_search_column(name, dt),
        TokenIndex::Off => false,
        TokenIndex::Columns(columns) => {
            crate::engine::is_text(dt) && columns.iter().any(|c| c == name)
        }
    }
}

/// The columns of a table that its new files index for `matches_term`.
pub fn indexed_columns(def: &sextant_catalog::TableDef) -> Vec<String> {
    def.schema
        .fields()
        .iter()
        .filter(|f| indexed(&def.options.token_index, f.name(), f.data_type()))
        .map(|f| f.name().clone())
        .collect()
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric()
}

/// The tokens of `text`: its longest runs of alphanumeric characters.
pub(crate) fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !is_word(c)).filter(|t| !t.is_empty())
}

/// Whether each ASCII byte is a letter or digit.
const ASCII_WORD: [bool; 128] = {
    let mut t = [false; 128];
    let mut b = 0;
    while b < 128 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    t
};

/// `f` of each of [`tokens`]`(text)`, in order: byte by byte through
/// ASCII (a table lookup, where `tokens` decodes every character), a
/// character at a time past it. It runs over every value indexed.
fn for_each_token<'a>(text: &'a str, mut f: impl FnMut(&'a str)) {
    let bytes = text.as_bytes();
    let mut start = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (word, len) = if b < 0x80 {
            (ASCII_WORD[b as usize], 1)
        } else {
            let c = text[i..].chars().next().unwrap_or(' ');
            (is_word(c), c.len_utf8())
        };
        match (word, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                f(&text[s..i]);
                start = None;
            }
            _ => {}
        }
        i += len;
    }
    if let Some(s) = start {
        f(&text[s..]);
    }
}

/// A term compiled for matching many texts.
pub(crate) struct Term {
    finder: memchr::memmem::Finder<'static>,
    len: usize,
    word_start: bool,
    word_end: bool,
}

impl Term {
    /// `term` ready to match.
    pub(crate) fn new(term: &str) -> Self {
        Self {
            finder: memchr::memmem::Finder::new(term.as_bytes()).into_owned(),
            len: term.len(),
            word_start: term.chars().next().is_some_and(is_word),
            word_end: term.chars().next_back().is_some_and(is_word),
        }
    }

    /// Whether the term occurs in `text` with no alphanumeric character
    /// against an alphanumeric edge of it.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        let mut from = 0;
        while let Some(found) = self.finder.find(&bytes[from..]) {
            let start = from + found;
            let end = start + self.len;
            let before_ok =
                !self.word_start || !text[..start].chars().next_back().is_some_and(is_word);
            let after_ok = !self.word_end || !text[end..].chars().next().is_some_and(is_word);
            if before_ok && after_ok {
                return true;
            }
            // The next occurrence may overlap this one: look again one
            // character further on.
            from = start + text[start..].chars().next().map_or(1, char::len_utf8);
            if from > bytes.len() {
                break;
            }
        }
        false
    }
}

/// `matches_term(text, term)`, DataFusion's scalar function.
#[derive(Debug, PartialEq, Eq, Hash)]
struct MatchesTerm {
    signature: Signature,
}

/// The `matches_term` function, to register in a session.
pub fn matches_term_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(MatchesTerm {
        signature: Signature::string(2, Volatility::Immutable),
    })
}

impl ScalarUDFImpl for MatchesTerm {
    fn name(&self) -> &str {
        FUNCTION_NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [text, term] = args.args.as_slice() else {
            return exec_err!("{FUNCTION_NAME} takes two arguments: a text and a term");
        };
        let rows = args.number_rows;
        match (text, term) {
            (ColumnarValue::Array(text), ColumnarValue::Scalar(term)) => {
                let Some(term) = scalar_text(term)? else {
                    return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
                };
                let term = Term::new(&term);
                Ok(ColumnarValue::Array(Arc::new(map_texts(text, |t| {
                    term.matches(t)
                })?)))
            }
            (ColumnarValue::Scalar(text), ColumnarValue::Scalar(term)) => {
                let value = match (scalar_text(text)?, scalar_text(term)?) {
                    (Some(text), Some(term)) => Some(Term::new(&term).matches(&text)),
                    _ => None,
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(value)))
            }
            (text, term) => {
                let text = text.to_array(rows)?;
                let term = term.to_array(rows)?;
                let terms = texts(&term)?;
                let mut i = 0;
                let out = map_texts(&text, |t| {
                    let m = terms[i]
                        .as_deref()
                        .is_some_and(|term| Term::new(term).matches(t));
                    i += 1;
                    m
                })?;
                // A null term gives null, as a null text does.
                let nulls = arrow::buffer::NullBuffer::union(out.nulls(), term.nulls());
                Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(
                    out.values().clone(),
                    nulls,
                ))))
            }
        }
    }
}

fn scalar_text(v: &ScalarValue) -> DfResult<Option<String>> {
    match v {
        ScalarValue::Utf8(s) | ScalarValue::Utf8View(s) | ScalarValue::LargeUtf8(s) => {
            Ok(s.clone())
        }
        ScalarValue::Null => Ok(None),
        other => exec_err!("{FUNCTION_NAME} takes text, not {}", other.data_type()),
    }
}

/// `f` of each text of `array` (null where the text is), in order.
fn map_texts(array: &ArrayRef, mut f: impl FnMut(&str) -> bool) -> DfResult<BooleanArray> {
    Ok(match array.data_type() {
        DataType::Utf8View => array
            .as_string_view()
            .iter()
            .map(|t| t.map(&mut f))
            .collect(),
        DataType::Utf8 => array
            .as_string::<i32>()
            .iter()
            .map(|t| t.map(&mut f))
            .collect(),
        DataType::LargeUtf8 => array
            .as_string::<i64>()
            .iter()
            .map(|t| t.map(&mut f))
            .collect(),
        DataType::Null => BooleanArray::new_null(array.len()),
        other => return exec_err!("{FUNCTION_NAME} takes text, not {other}"),
    })
}

fn texts(array: &ArrayRef) -> DfResult<Vec<Option<String>>> {
    Ok(match array.data_type() {
        DataType::Utf8View => array
            .as_string_view()
            .iter()
            .map(|t| t.map(str::to_string))
            .collect(),
        DataType::Utf8 => array
            .as_string::<i32>()
            .iter()
            .map(|t| t.map(str::to_string))
            .collect(),
        DataType::LargeUtf8 => array
            .as_string::<i64>()
            .iter()
            .map(|t| t.map(str::to_string))
            .collect(),
        DataType::Null => vec![None; array.len()],
        other => return exec_err!("{FUNCTION_NAME} takes text, not {other}"),
    })
}

/// What a filter needs of a row group's tokens for any row there to
/// match it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Need {
    /// `matches_term(<column>, '<term>')`: every token of the term.
    Tokens { column: String, tokens: Vec<String> },
    /// `a AND b`: what each needs.
    All(Vec<Need>),
    /// `a OR b`: what one of them needs.
    Any(Vec<Need>),
}

/// What `filter` needs of the tokens, if it is made of `matches_term`
/// calls on a column and a constant term with some tokens, `AND` and
/// `OR` (an `AND` whose other side is anything else needs what this side
/// needs).
pub(crate) fn need(filter: &Expr) -> Option<Need> {
    match filter {
        Expr::BinaryExpr(b) if b.op == datafusion::logical_expr::Operator::And => {
            match (need(&b.left), need(&b.right)) {
                (Some(l), Some(r)) => Some(Need::All(vec![l, r])),
                (l, r) => l.or(r),
            }
        }
        Expr::BinaryExpr(b) if b.op == datafusion::logical_expr::Operator::Or => {
            Some(Need::Any(vec![need(&b.left)?, need(&b.right)?]))
        }
        Expr::ScalarFunction(f) if f.func.name() == FUNCTION_NAME => {
            let [column, term] = f.args.as_slice() else {
                return None;
            };
            let column = match column {
                Expr::Column(c) => c.name.clone(),
                Expr::Cast(c) => match c.expr.as_ref() {
                    Expr::Column(c) => c.name.clone(),
                    _ => return None,
                },
                _ => return None,
            };
            let term = match term {
                Expr::Literal(v, _) => scalar_text(v).ok()??,
                _ => return None,
            };
            let tokens: Vec<String> = tokens(&term).map(str::to_string).collect();
            (!tokens.is_empty()).then_some(Need::Tokens { column, tokens })
        }
        _ => None,
    }
}

/// Slots of [`Recent`] (a power of two): 80 KiB, which stays in cache.
const RECENT_BITS: u32 = 12;

/// The longest token [`Recent`] keeps (longer ones are always inserted).
const RECENT_LEN: usize = 15;

/// The tokens a column's filter of the current row group was given
/// lately, by their bytes: one given again is not hashed and inserted
/// again (log text repeats its words: a benchmark hour of bodies has 1.7
/// million tokens of 140 distinct ones). Only the same bytes in the same
/// row group are skipped, and inserting a token twice changes nothing, so
/// the filter is the same as without it.
struct Recent {
    slots: Box<[Slot]>,
}

/// A token (up to [`RECENT_LEN`] bytes) and the row group (plus one; 0: an
/// empty slot) it was inserted in.
#[derive(Clone, Copy, Default)]
struct Slot {
    group: u32,
    len: u8,
    bytes: [u8; RECENT_LEN],
}

impl Recent {
    fn new() -> Self {
        Self {
            slots: vec![Slot::default(); 1 << RECENT_BITS].into_boxed_slice(),
        }
    }

    /// Whether `token` was given to row group `group`'s filter lately;
    /// remembers it if not.
    fn seen(&mut self, group: usize, token: &[u8]) -> bool {
        let (Ok(group), true) = (u32::try_from(group + 1), token.len() <= RECENT_LEN) else {
            return false;
        };
        let mut key = [0u8; 16];
        key[..token.len()].copy_from_slice(token);
        let (lo, hi) = key.split_at(8);
        let lo = u64::from_le_bytes(lo.try_into().expect("8 bytes"));
        let hi = u64::from_le_bytes(hi.try_into().expect("8 bytes"));
        let hash =
            (lo ^ hi.rotate_left(29) ^ token.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let slot = &mut self.slots[(hash >> (64 - RECENT_BITS)) as usize];
        if slot.group == group
            && usize::from(slot.len) == token.len()
            && slot.bytes[..token.len()] == *token
        {
            return true;
        }
        let mut bytes = [0u8; RECENT_LEN];
        bytes.copy_from_slice(&key[..RECENT_LEN]);
        *slot = Slot {
            group,
            len: token.len() as u8,
            bytes,
        };
        false
    }
}

/// Builds a file's token index as its rows are written: one filter per
/// row group for each column meant for search.
pub(crate) struct IndexBuilder {
    /// Each indexed column's position in the batches and name.
    columns: Vec<(usize, String)>,
    /// Per column, per row group, its filter.
    filters: Vec<Vec<Sbbf>>,
    /// Per column, the tokens its filter was given lately.
    recent: Vec<Recent>,
    row_group_rows: usize,
    /// The filter size of a row group of the file.
    ndv: u64,
    rows: usize,
}

impl IndexBuilder {
    /// A builder for a file of `schema` and `rows` rows in row groups of
    /// `row_group_rows`; `None` if no column is meant for search.
    pub(crate) fn new(
        schema: &arrow::datatypes::Schema,
        index: &TokenIndex,
        rows: usize,
        row_group_rows: usize,
    ) -> Option<Self> {
        let columns: Vec<(usize, String)> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| indexed(index, f.name(), f.data_type()))
            .map(|(i, f)| (i, f.name().clone()))
            .collect();
        if columns.is_empty() {
            return None;
        }
        let ndv = (rows.clamp(1, row_group_rows) * TOKENS_PER_ROW).min(MAX_NDV) as u64;
        Some(Self {
            filters: vec![vec![]; columns.len()],
            recent: columns.iter().map(|_| Recent::new()).collect(),
            columns,
            row_group_rows: row_group_rows.max(1),
            ndv,
            rows: 0,
        })
    }

    /// Adds the tokens of the next rows, `batch`, as written.
    pub(crate) fn add(&mut self, batch: &arrow::array::RecordBatch) {
        let columns = self.columns.iter().zip(&mut self.filters);
        for (((idx, _), filters), recent) in columns.zip(&mut self.recent) {
            let col = batch.column(*idx);
            let mut row = self.rows;
            let mut each = |text: Option<&str>| {
                let group = row / self.row_group_rows;
                row += 1;
                let Some(text) = text else { return };
                while filters.len() <= group {
                    filters.push(
                        Sbbf::new_with_ndv_fpp(self.ndv, FPP)
                            .unwrap_or_else(|_| Sbbf::new_with_num_of_bytes(32)),
                    );
                }
                let filter = &mut filters[group];
                for_each_token(text, |token| {
                    if !recent.seen(group, token.as_bytes()) {
                        filter.insert(token);
                    }
                });
            };
            match col.data_type() {
                DataType::Utf8 => col.as_string::<i32>().iter().for_each(&mut each),
                DataType::LargeUtf8 => col.as_string::<i64>().iter().for_each(&mut each),
                DataType::Utf8View => col.as_string_view().iter().for_each(&mut each),
                _ => {}
            }
        }
        self.rows += batch.num_rows();
    }

    /// The index as the file's key-value metadata, given the row groups
    /// written; `None` if they are not the ones the rows were counted
    /// into (the file is then read whole, never pruned wrongly).
    pub(crate) fn finish(self, row_group_rows: &[usize]) -> Option<KeyValue> {
        let groups = row_group_rows.len();
        let expected = (0..groups).all(|g| {
            row_group_rows[g] == self.row_group_rows.min(self.rows - g * self.row_group_rows)
        });
        if !expected || groups * self.row_group_rows < self.rows {
            tracing::warn!(
                "row groups of {row_group_rows:?} rows, not of {} each: the file gets no token index",
                self.row_group_rows
            );
            return None;
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut columns = serde_json::Map::new();
        for ((_, name), mut filters) in self.columns.into_iter().zip(self.filters) {
            // A row group of nulls only has no filter yet: an empty one.
            filters.resize_with(groups, || Sbbf::new_with_num_of_bytes(32));
            let encoded: Vec<serde_json::Value> = filters
                .iter_mut()
                .map(|f| {
                    f.fold_to_target_fpp(FPP);
                    let mut bytes = vec![];
                    f.write(&mut bytes).ok()?;
                    Some(b64.encode(bytes).into())
                })
                .collect::<Option<_>>()?;
            columns.insert(name, encoded.into());
        }
        let value = serde_json::json!({ "tokenizer": TOKENIZER, "columns": columns });
        Some(KeyValue::new(INDEX_KEY.to_string(), value.to_string()))
    }
}

/// A file's token index, read back.
#[derive(Debug, Default)]
pub(crate) struct FileIndex {
    columns: HashMap<String, Vec<Sbbf>>,
    bytes: usize,
}

impl FileIndex {
    /// The index in `metadata`, if the file has one of this tokenizer and
    /// one filter per row group.
    pub(crate) fn from_metadata(metadata: &ParquetMetaData) -> Option<Self> {
        let kv = metadata.file_metadata().key_value_metadata()?;
        let value = kv.iter().find(|kv| kv.key == INDEX_KEY)?.value.as_deref()?;
        Self::parse(value, metadata.num_row_groups())
    }

    /// The index [`IndexBuilder::finish`] wrote as `value`, for a file of
    /// `groups` row groups.
    fn parse(value: &str, groups: usize) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(value).ok()?;
        if v.get("tokenizer")?.as_str()? != TOKENIZER {
            return None;
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut columns = HashMap::new();
        for (name, filters) in v.get("columns")?.as_object()? {
            let filters: Vec<Sbbf> = filters
                .as_array()?
                .iter()
                .map(|f| Sbbf::from_bytes(&b64.decode(f.as_str()?).ok()?).ok())
                .collect::<Option<_>>()?;
            if filters.len() != groups {
                return None;
            }
            columns.insert(name.clone(), filters);
        }
        Some(Self {
            columns,
            bytes: value.len(),
        })
    }

    /// For each row group, whether it may hold what `need` needs; `None`
    /// if that is unknown here (no index of a column it names).
    pub(crate) fn row_groups(&self, need: &Need) -> Option<Vec<bool>> {
        match need {
            Need::Tokens { column, tokens } => {
                let filters = self.columns.get(column)?;
                Some(
                    filters
                        .iter()
                        .map(|f| tokens.iter().all(|t| f.check(t.as_str())))
                        .collect(),
                )
            }
            // Unknown parts of an AND leave the known ones.
            Need::All(parts) => parts
                .iter()
                .filter_map(|p| self.row_groups(p))
                .reduce(|a, b| a.iter().zip(&b).map(|(x, y)| *x && *y).collect()),
            // An unknown part of an OR may match anywhere.
            Need::Any(parts) => parts
                .iter()
                .map(|p| self.row_groups(p))
                .reduce(|a, b| Some(a?.iter().zip(&b?).map(|(x, y)| *x || *y).collect()))?,
        }
    }
}

/// Files' token indexes by path, read once (files never change), up to a
/// size; past it, the cache starts again empty.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    entries: Mutex<(HashMap<String, Arc<FileIndex>>, usize)>,
}

/// What the cache holds at most, in bytes of index text.
const CACHE_BYTES: usize = 64 << 20;

impl TokenCache {
    pub(crate) fn get(&self, path: &str) -> Option<Arc<FileIndex>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.0.get(path).cloned()
    }

    pub(crate) fn put(&self, path: &str, index: Arc<FileIndex>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.1 + index.bytes > CACHE_BYTES {
            *entries = Default::default();
        }
        entries.1 += index.bytes;
        entries.0.insert(path.to_string(), index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_match_whole_words() {
        let m = |text: &str, term: &str| Term::new(term).matches(text);
        assert!(m("an error: disk full", "error"));
        assert!(m("error-prone", "error"));
        assert!(m("error", "error"));
        assert!(!m("errors", "error"));
        assert!(!m("error123", "error"));
        assert!(!m("anerror", "error"));
        assert!(m("note:hello world!", "hello world"));
        assert!(!m("hello-world", "hello world"));
        assert!(!m("hello world2023", "hello world"));
        // A later occurrence counts when an earlier one is inside a word.
        assert!(m("errors then error", "error"));
        // Overlapping occurrences.
        assert!(m("aaa aa", "aa"));
        // Non-alphanumeric edges need no boundary.
        assert!(m("x-y", "-"));
        assert!(m("état: süß", "süß"));
        assert!(!m("étatsüß", "süß"));
        assert!(m("anything", ""));
    }

    #[test]
    fn tokens_are_alphanumeric_runs() {
        let t: Vec<&str> = tokens("GET /api/v1?id=42 -- done.").collect();
        assert_eq!(t, ["GET", "api", "v1", "id", "42", "done"]);
        // The indexing tokenizer gives the same tokens as the query's.
        for text in [
            "GET /api/v1?id=42 -- done.",
            "",
            "---",
            "état: süß→naïve 東京 x",
            "a→b",
            "trailing word",
            "ünïcode½ ends½",
        ] {
            let mut fast = vec![];
            for_each_token(text, |t| fast.push(t));
            assert_eq!(fast, tokens(text).collect::<Vec<_>>(), "{text}");
        }
    }

    /// The index finds each row group that holds a term's tokens and
    /// skips the others.
    #[test]
    fn index_keeps_only_row_groups_with_the_tokens() {
        use arrow::array::{RecordBatch, StringArray};
        use arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("body", DataType::Utf8, true)]));
        let rows: Vec<Option<String>> = (0..300)
            .map(|i| match i {
                150 => Some("deadlock detected on shard 7".to_string()),
                7 => None,
                _ => Some(format!("request {i} served")),
            })
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(rows)) as ArrayRef],
        )
        .unwrap();
        let mut b = IndexBuilder::new(&schema, &TokenIndex::Auto, 300, 100).unwrap();
        b.add(&batch.slice(0, 120));
        b.add(&batch.slice(120, 180));
        assert!(b.finish(&[100, 100, 99]).is_none(), "row groups must match");
        let mut b = IndexBuilder::new(&schema, &TokenIndex::Auto, 300, 100).unwrap();
        b.add(&batch.slice(0, 120));
        b.add(&batch.slice(120, 180));
        let kv = b.finish(&[100, 100, 100]).unwrap();
        let index = FileIndex::parse(kv.value.as_deref().unwrap(), 3).unwrap();
        assert!(FileIndex::parse(kv.value.as_deref().unwrap(), 2).is_none());
        let req = |term: &str| Need::Tokens {
            column: "body".to_string(),
            tokens: tokens(term).map(str::to_string).collect(),
        };
        assert_eq!(
            index.row_groups(&req("deadlock")),
            Some(vec![false, true, false])
        );
        assert_eq!(
            index.row_groups(&req("shard 7")),
            Some(vec![false, true, false])
        );
        assert_eq!(
            index.row_groups(&req("served")),
            Some(vec![true, true, true])
        );
        assert_eq!(
            index.row_groups(&req("250")),
            Some(vec![false, false, true])
        );
        let other = || Need::Tokens {
            column: "other".to_string(),
            tokens: vec!["x".to_string()],
        };
        assert_eq!(index.row_groups(&other()), None);
        // OR: either; AND: both; an unknown side of an AND is left out, of
        // an OR makes the whole unknown.
        let any = Need::Any(vec![req("deadlock"), req("250")]);
        assert_eq!(index.row_groups(&any), Some(vec![false, true, true]));
        let all = Need::All(vec![req("served"), req("250")]);
        assert_eq!(index.row_groups(&all), Some(vec![false, false, true]));
        let all = Need::All(vec![other(), req("deadlock")]);
        assert_eq!(index.row_groups(&all), Some(vec![false, true, false]));
        assert_eq!(
            index.row_groups(&Need::Any(vec![other(), req("deadlock")])),
            None
        );
    }

    /// The filters are those of every token inserted, whatever the
    /// builder skips: words repeated within and across row groups, tokens
    /// too long to remember, and tokens whose slots collide.
    #[test]
    fn skipping_repeated_tokens_builds_the_same_filters() {
        use arrow::array::{RecordBatch, StringArray};
        use arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("body", DataType::Utf8, true)]));
        let words = [
            "pool",
            "shard",
            "x",
            "ünïcode",
            "averyveryverylongtoken",
            "timeout",
        ];
        let rows: Vec<Option<String>> = (0..5000usize)
            .map(|i| {
                (i % 13 != 0).then(|| {
                    format!(
                        "{} {} id{} {} {}",
                        words[i % words.len()],
                        words[(i / 7) % words.len()],
                        i % 5000,
                        words[(i * 3) % words.len()],
                        i % 97,
                    )
                })
            })
            .collect();
        let texts: Vec<Option<&str>> = rows.iter().map(|r| r.as_deref()).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(texts.clone())) as ArrayRef],
        )
        .unwrap();
        let (rows, group_rows) = (5000, 1000);
        let mut b = IndexBuilder::new(&schema, &TokenIndex::Auto, rows, group_rows).unwrap();
        for at in (0..rows).step_by(777) {
            b.add(&batch.slice(at, 777.min(rows - at)));
        }
        let built = b.finish(&[1000; 5]).unwrap();
        // Every token of every row into its row group's filter.
        let ndv = (group_rows * TOKENS_PER_ROW) as u64;
        let mut filters: Vec<Sbbf> = (0..5)
            .map(|_| Sbbf::new_with_ndv_fpp(ndv, FPP).unwrap())
            .collect();
        for (row, text) in texts.iter().enumerate() {
            for token in tokens(text.unwrap_or("")) {
                filters[row / group_rows].insert(token);
            }
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let expected: Vec<String> = filters
            .iter_mut()
            .map(|f| {
                f.fold_to_target_fpp(FPP);
                let mut bytes = vec![];
                f.write(&mut bytes).unwrap();
                b64.encode(bytes)
            })
            .collect();
        let value: serde_json::Value =
            serde_json::from_str(built.value.as_deref().unwrap()).unwrap();
        let got: Vec<String> = value["columns"]["body"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert!(got == expected, "the filters differ");
        // And a slot remembers only the same bytes of the same row group.
        let mut recent = Recent::new();
        assert!(!recent.seen(0, b"pool"));
        assert!(recent.seen(0, b"pool"));
        assert!(!recent.seen(1, b"pool"));
        assert!(!recent.seen(1, b"poo"));
        assert!(!recent.seen(1, b"averyveryverylongtoken"));
        assert!(!recent.seen(1, b"averyveryverylongtoken"));
    }

    /// What a filter needs, from the expressions DataFusion pushes down.
    #[test]
    fn filters_become_needs() {
        use datafusion::logical_expr::{col, lit};
        let udf = Arc::new(matches_term_udf());
        let mt = |term: &str| udf.call(vec![col("body"), lit(term)]);
        let tokens = |t: &[&str]| Need::Tokens {
            column: "body".to_string(),
            tokens: t.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(need(&mt("shard 7")), Some(tokens(&["shard", "7"])));
        assert_eq!(need(&mt("--")), None);
        assert_eq!(
            need(&mt("a").or(mt("b"))),
            Some(Need::Any(vec![tokens(&["a"]), tokens(&["b"])]))
        );
        assert_eq!(need(&mt("a").or(col("x").gt(lit(1)))), None);
        assert_eq!(
            need(&mt("a").and(col("x").gt(lit(1)))),
            Some(tokens(&["a"]))
        );
        assert_eq!(need(&udf.call(vec![col("body"), col("term")])), None);
    }
}
