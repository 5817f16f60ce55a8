//! The Prometheus HTTP API on the HTTP listener, so Grafana's Prometheus
//! data source and promtool work against Sextant unchanged:
//! `/api/v1/query`, `/query_range`, `/format_query`, `/labels`,
//! `/label/<name>/values`, `/series`, `/metadata`, `/status/buildinfo`,
//! GET or form-encoded POST.
//!
//! A request's parameters (query string and form body together, as Go's
//! `FormValue` reads them) are checked as Prometheus 2.42 checks them, then
//! the query runs through [`sextant_promql::run`] under the caller's
//! principal (it reads only tables the principal may SELECT), registered in
//! `system.queries` with protocol `promql`, cancelled by `KILL QUERY` or
//! when `timeout` (default `--promql-timeout`) passes. Answers and errors
//! are Prometheus's JSON (`bad_data` 400, `execution` 422, `timeout` and
//! `canceled` 503).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sextant_auth::{Action, Principal};
use sextant_catalog::MetricMetadata;
use sextant_promql::{ErrorKind, Params, PromError, TableSource, json, params};

use crate::web::AppState;

/// How PromQL queries run (`--promql-*` flags).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PromSettings {
    pub(crate) lookback: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_samples: usize,
    pub(crate) subquery_step: Duration,
}

/// The API's routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/labels", get(label_names).post(label_names))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/status/buildinfo", get(buildinfo))
}

/// A request's parameters, query string first, then the form body.
struct Form(Vec<(String, String)>);

impl Form {
    async fn read(
        state: &AppState,
        uri: &Uri,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Self, PromError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            let raw = axum::body::to_bytes(body, state.max_body)
                .await
                .map_err(|_| PromError::bad_data("the request body is too large or cut short"))?;
            pairs.extend(url::form_urlencoded::parse(&raw).into_owned());
        }
        if let Some(q) = uri.query() {
            pairs.extend(url::form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        Ok(Form(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A time parameter in milliseconds, `default` when absent.
    fn time(&self, name: &str, default: i64) -> Result<i64, PromError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => params::parse_time(v).map_err(|e| params::invalid(name, e)),
        }
    }
}

fn answer(result: Result<String, PromError>) -> Response {
    match result {
        Ok(data) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json::success(&data),
        )
            .into_response(),
        Err(e) => (
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [(header::CONTENT_TYPE, "application/json")],
            json::error(&e),
        )
            .into_response(),
    }
}

/// The earliest and latest times Prometheus's API takes for "unbounded".
const MIN_TIME: i64 = i64::MIN / 2;
const MAX_TIME: i64 = i64::MAX / 2;

fn now_ms(state: &AppState) -> i64 {
    state.engine.clock().now_ns().div_euclid(1_000_000)
}

/// A source of series for `who`: the tables it may read.
fn source(state: &AppState, who: &Principal) -> TableSource {
    let directory = state.directory.clone();
    let who = who.clone();
    TableSource::new(
        state.ctx.clone(),
        Box::new(move |table| directory.check(&who, Action::Select(table)).is_ok()),
    )
}

/// Runs `text` at `p` for `who`, registered in `system.queries`.
async fn run(
    state: &AppState,
    who: &Principal,
    text: &str,
    p: Params,
    timeout: Duration,
) -> Result<sextant_promql::Value, PromError> {
    let queries = state
        .ctx
        .state()
        .config()
        .get_extension::<sextant_sql::Queries>()
        .ok_or_else(|| PromError::internal("the server has no query registry"))?;
    let guard = queries.start("promql", None, who.user(), text);
    guard.time_out_after(timeout);
    let token = guard.token();
    let stop_token = token.clone();
    let stop: sextant_promql::Stop = Arc::new(move || {
        if stop_token.is_cancelled() {
            Err(PromError::canceled(false))
        } else {
            Ok(())
        }
    });
    let mut src = source(state, who);
    let run = sextant_sql::run_as(who.clone(), sextant_promql::run(&mut src, text, p, stop));
    let result = tokio::select! {
        r = run => r,
        _ = token.cancelled() => Err(PromError::canceled(false)),
    };
    match result {
        Ok(v) => {
            guard.add_rows(match &v {
                sextant_promql::Value::Vector(s) => s.len() as u64,
                sextant_promql::Value::Matrix(m) => m.len() as u64,
                _ => 1,
            });
            Ok(v)
        }
        Err(mut e) => {
            if matches!(e.kind, ErrorKind::Canceled) {
                // The statement timeout or KILL QUERY: say which.
                e = PromError::canceled(guard.cancel_message() == sextant_sql::TIMED_OUT);
            }
            guard.fail(&e.message);
            Err(e)
        }
    }
}

fn settings_timeout(state: &AppState, form: &Form) -> Result<Duration, PromError> {
    match form.get("timeout") {
        None => Ok(state.promql.timeout),
        Some(v) => {
            let ms = params::parse_duration(v).map_err(|e| params::invalid("timeout", e))?;
            Ok(Duration::from_millis(ms.max(0) as u64).min(state.promql.timeout))
        }
    }
}

async fn query(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            let form = Form::read(&state, &uri, &headers, body).await?;
            let t = form.time("time", now_ms(&state))?;
            let timeout = settings_timeout(&state, &form)?;
            let text = form.get("query").unwrap_or("");
            let p = Params {
                start: t,
                end: t,
                step: 0,
                lookback: state.promql.lookback.as_millis() as i64,
                max_samples: state.promql.max_samples,
                subquery_step: state.promql.subquery_step.as_millis() as i64,
            };
            let v = run(&state, &who, text, p, timeout).await.map_err(|e| {
                if e.kind == ErrorKind::BadData && e.message.starts_with("parse error") {
                    params::invalid("query", e.message)
                } else {
                    e
                }
            })?;
            Ok(json::query_data(&v))
        }
        .await,
    )
}

async fn query_range(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            let form = Form::read(&state, &uri, &headers, body).await?;
            let start = params::parse_time(form.get("start").unwrap_or(""))
                .map_err(|e| params::invalid("start", e))?;
            let end = params::parse_time(form.get("end").unwrap_or(""))
                .map_err(|e| params::invalid("end", e))?;
            if end < start {
                return Err(params::invalid(
                    "end",
                    "end timestamp must not be before start time",
                ));
            }
            let step = params::parse_duration(form.get("step").unwrap_or(""))
                .map_err(|e| params::invalid("step", e))?;
            params::check_range(start, end, step)?;
            let timeout = settings_timeout(&state, &form)?;
            let text = form.get("query").unwrap_or("");
            let p = Params {
                start,
                end,
                step,
                lookback: state.promql.lookback.as_millis() as i64,
                max_samples: state.promql.max_samples,
                subquery_step: state.promql.subquery_step.as_millis() as i64,
            };
            let v = run(&state, &who, text, p, timeout).await?;
            Ok(json::query_data(&v))
        }
        .await,
    )
}

async fn format_query(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            let form = Form::read(&state, &uri, &headers, body).await?;
            let text = form.get("query").unwrap_or("");
            let pretty = sextant_promql::format_query(text)
                .map_err(|e| params::invalid("query", e.message))?;
            Ok(serde_json::to_string(&pretty).unwrap_or_default())
        }
        .await,
    )
}

async fn buildinfo() -> Response {
    answer(Ok(serde_json::json!({
        "version": "2.42.0",
        "revision": concat!("sextant-", env!("CARGO_PKG_VERSION")),
        "branch": "sextant",
        "buildUser": "sextant",
        "buildDate": "",
        "goVersion": "sextant",
    })
    .to_string()))
}

/// The tables a metric family's series land in: the family's own name,
/// and a counter's `_total`, a histogram's or summary's `_bucket`, `_sum`
/// and `_count`, `_created`, an info's `_info`.
fn family_tables(family: &str) -> impl Iterator<Item = String> + '_ {
    [
        "", "_total", "_bucket", "_sum", "_count", "_created", "_info",
    ]
    .into_iter()
    .map(move |suffix| format!("{family}{suffix}"))
}

/// Keeps the metric metadata a remote write carried. Prometheus resends
/// every family's metadata each `metadata_config.send_interval` (a
/// minute), so only what differs from what this process last committed
/// goes to the catalog; the latest report of a family wins. A family is
/// kept when `who` may write one of its tables.
pub(crate) async fn keep_metadata(
    state: &AppState,
    who: &Principal,
    metadata: Vec<sextant_ingest::prometheus::MetricMetadata>,
) -> Result<(), crate::web::HttpError> {
    let mut changed: std::collections::BTreeMap<String, MetricMetadata> = Default::default();
    {
        let known = state
            .metric_metadata
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for m in metadata {
            let family = m.metric_family_name.as_str();
            if !family_tables(family)
                .any(|t| state.directory.check(who, Action::Insert(&t)).is_ok())
            {
                continue;
            }
            let entry = MetricMetadata {
                metric: family.to_string(),
                kind: m.type_name().to_string(),
                help: m.help,
                unit: m.unit,
            };
            if known.get(family) == Some(&entry) {
                changed.remove(family);
            } else {
                changed.insert(entry.metric.clone(), entry);
            }
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    let entries: Vec<MetricMetadata> = changed.into_values().collect();
    let catalog = state.engine.catalog().clone();
    let committed = entries.clone();
    tokio::task::spawn_blocking(move || catalog.put_metric_metadata(&committed))
        .await
        .map_err(|e| {
            crate::web::HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("metadata: {e}"))
        })?
        .map_err(sextant_storage::StorageError::from)?;
    let mut known = state
        .metric_metadata
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    for m in entries {
        known.insert(m.metric.clone(), m);
    }
    Ok(())
}

/// `/api/v1/metadata`: each metric family's type, help and unit, as
/// remote write reported them; `metric` picks one family, `limit` caps how
/// many (in name order). A family shows when `who` may read one of its
/// tables.
async fn metadata(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            let form = Form::read(&state, &uri, &headers, body).await?;
            let limit = match form.get("limit") {
                None => None,
                Some(v) => {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| PromError::bad_data("limit must be a number"))?;
                    usize::try_from(n).ok()
                }
            };
            let metric = form.get("metric");
            let catalog = state.engine.catalog().clone();
            let all = tokio::task::spawn_blocking(move || catalog.metric_metadata())
                .await
                .map_err(|e| PromError::internal(e.to_string()))?
                .map_err(|e| PromError::internal(e.to_string()))?;
            let mut out = serde_json::Map::new();
            for m in all {
                if limit.is_some_and(|n| out.len() >= n) {
                    break;
                }
                if metric.is_some_and(|want| want != m.metric)
                    || !family_tables(&m.metric)
                        .any(|t| state.directory.check(&who, Action::Select(&t)).is_ok())
                {
                    continue;
                }
                out.insert(
                    m.metric,
                    serde_json::json!([{"type": m.kind, "help": m.help, "unit": m.unit}]),
                );
            }
            Ok(serde_json::Value::Object(out).to_string())
        }
        .await,
    )
}

/// The selectors of `match[]` (none: every metric).
fn matcher_sets(form: &Form) -> Result<Vec<Vec<sextant_promql::ir::Matcher>>, PromError> {
    form.all("match[]")
        .into_iter()
        .map(sextant_promql::ir::parse_series_selector)
        .collect()
}

fn every_metric() -> Vec<sextant_promql::ir::Matcher> {
    vec![sextant_promql::ir::Matcher {
        name: sextant_promql::labels::METRIC_NAME.to_string(),
        op: sextant_promql::ir::MatchKind::NotEqual,
        value: String::new(),
    }]
}

/// The label sets of the series `form`'s `match[]`, `start` and `end`
/// select.
async fn selected(
    state: &AppState,
    who: &Principal,
    form: &Form,
    required: bool,
) -> Result<Vec<sextant_promql::labels::Labels>, PromError> {
    let start = form.time("start", MIN_TIME)?;
    let end = form.time("end", MAX_TIME)?;
    let mut sets = matcher_sets(form)?;
    if sets.is_empty() {
        if required {
            return Err(PromError::bad_data("no match[] parameter provided"));
        }
        sets.push(every_metric());
    }
    let mut src = source(state, who);
    let mut out = std::collections::BTreeSet::new();
    for m in &sets {
        let found = sextant_sql::run_as(who.clone(), src.series_labels(m, start, end)).await?;
        out.extend(found);
    }
    Ok(out.into_iter().collect())
}

async fn series(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            let form = Form::read(&state, &uri, &headers, body).await?;
            let sets = selected(&state, &who, &form, true).await?;
            let list: Vec<serde_json::Value> = sets
                .iter()
                .map(|l| {
                    serde_json::Value::Object(
                        l.iter()
                            .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
                            .collect(),
                    )
                })
                .collect();
            Ok(serde_json::Value::Array(list).to_string())
        }
        .await,
    )
}

async fn label_names(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            let form = Form::read(&state, &uri, &headers, body).await?;
            let sets = selected(&state, &who, &form, false).await?;
            let names: std::collections::BTreeSet<&str> =
                sets.iter().flat_map(|l| l.iter().map(|(k, _)| k)).collect();
            Ok(serde_json::to_string(&names).unwrap_or_default())
        }
        .await,
    )
}

async fn label_values(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            if !sextant_promql::labels::valid_label_name(&name) {
                return Err(PromError::bad_data(format!("invalid label name: {name:?}")));
            }
            let form = Form::read(&state, &uri, &headers, body).await?;
            let sets = selected(&state, &who, &form, false).await?;
            let values: std::collections::BTreeSet<&str> = sets
                .iter()
                .map(|l| l.get(&name))
                .filter(|v| !v.is_empty())
                .collect();
            Ok(serde_json::to_string(&values).unwrap_or_default())
        }
        .await,
    )
}
