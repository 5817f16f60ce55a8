//! The alert statements: `CREATE ALERT`, `ALTER ALERT ... PAUSE | RESUME`,
//! `DROP ALERT` (`SHOW ALERTS` is a query of `system.alerts`). They are
//! parsed here and carried out by the server's [`Alerts`], which the
//! session config holds as an extension.
//!
//! ```sql
//! CREATE ALERT [IF NOT EXISTS] name AS <SELECT>
//!   EVERY <interval> [FOR <interval>] [KEEP FIRING FOR <interval>]
//!   [LABELS (k = 'v', ...)] [ANNOTATIONS (k = 'v', ...)]
//!   NOTIFY WEBHOOK '<url>' [WITH (timeout = '10s', retries = 3, query_timeout = '30s')]
//! ```
//! An interval is `INTERVAL '1 minute'` or just `'1 minute'`. The query ends
//! at the first `EVERY` outside parentheses.

use sextant_sqlstate::SqlState;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use sextant_alerts::{AlertDef, AlertError, Alerts};

use crate::SqlError;
use crate::ast::{Done, LineIndex, parse_duration, parse_interval};
use crate::words::{Usage, quoted, word};

const U: Usage = Usage(USAGE);

const USAGE: &str = "CREATE ALERT name AS SELECT ... EVERY '1 minute' [FOR '5 minutes'] \
     [KEEP FIRING FOR '10 minutes'] [LABELS (severity = 'page')] [ANNOTATIONS (summary = '...')] \
     NOTIFY WEBHOOK 'http://host/path' [WITH (timeout = '10s', retries = 3, query_timeout = '30s')]";

/// Delivery attempt timeout when `WITH (timeout = ...)` does not say.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries after a failed delivery when `WITH (retries = ...)` does not say.
pub const DEFAULT_RETRIES: u32 = 3;

impl From<AlertError> for SqlError {
    fn from(e: AlertError) -> Self {
        match e {
            AlertError::Catalog(c) => SqlError::new(c.sqlstate(), c.to_string()),
            AlertError::Query(d) => {
                let e = SqlError::from(d);
                SqlError::new(
                    e.state,
                    format!("the alert's query does not plan: {}", e.message),
                )
            }
            AlertError::Refused(e) => {
                let e = match e.downcast::<SqlError>() {
                    Ok(e) => *e,
                    Err(other) => SqlError::internal(other.to_string()),
                };
                if e.state == SqlState::WRONG_OBJECT_TYPE {
                    return e;
                }
                SqlError::new(
                    e.state,
                    format!("the alert's query does not plan: {}", e.message),
                )
            }
        }
    }
}

/// Alert rules plan their queries through the statement pipeline
/// ([`crate::plan_select`]), as a client's query is planned.
pub struct RulePlanner;

impl sextant_alerts::RulePlanner for RulePlanner {
    fn plan<'a>(
        &'a self,
        session: datafusion::execution::SessionState,
        query: &'a str,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<datafusion::logical_expr::LogicalPlan, AlertError>,
                > + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            let ctx = SessionContext::new_with_state(session);
            crate::plan_select(&ctx, query, "an alert rule")
                .await
                .map_err(|e| AlertError::Refused(Box::new(e)))
        })
    }
}

fn alerts(ctx: &SessionContext) -> Result<Arc<Alerts>, SqlError> {
    ctx.state_ref()
        .read()
        .config()
        .get_extension::<Alerts>()
        .ok_or_else(|| SqlError::unsupported("alert rules are not available in this session"))
}

/// A quoted string, or a bare number (`EVERY 60`).
fn string(p: &mut Parser<'_>, what: &str) -> Result<String, SqlError> {
    if let Token::Number(n, _) = &p.peek_token().token {
        let n = n.clone();
        p.next_token();
        return Ok(n);
    }
    quoted(p, what)
}

/// `INTERVAL '5 minutes'`, `INTERVAL '5' MINUTE` or `'5 minutes'`.
fn interval(p: &mut Parser<'_>, clause: &str) -> Result<Duration, SqlError> {
    let typed = p.parse_keyword(Keyword::INTERVAL);
    let mut text = string(p, &format!("the {clause} interval"))?;
    if typed && let Token::Word(w) = &p.peek_token().token {
        let unit = w.value.to_lowercase();
        if w.quote_style.is_none()
            && ["second", "minute", "hour", "day", "week"]
                .iter()
                .any(|u| unit.trim_end_matches('s') == *u)
        {
            text = format!("{text} {unit}");
            p.next_token();
        }
    }
    // Zero is a duration here: FOR '0 seconds' fires at once (EVERY has its
    // own minimum, which its error names).
    parse_duration(&text)
        .map_err(|e| SqlError::invalid_parameter(format!("{clause}: {}", e.message)))
}

/// `(k = 'v', ...)`; keys follow Prometheus' label name rules.
fn pairs(p: &mut Parser<'_>, clause: &str) -> Result<BTreeMap<String, String>, SqlError> {
    p.expect_token(&Token::LParen).map_err(|e| U.syntax(e))?;
    let mut out = BTreeMap::new();
    loop {
        let key = p.parse_identifier().map_err(|e| U.syntax(e))?.value;
        let valid = key
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if !valid || key.is_empty() {
            return Err(SqlError::invalid_parameter(format!(
                "{clause} name \"{key}\" is not valid: use letters, digits and _, not starting with a digit"
            )));
        }
        p.expect_token(&Token::Eq).map_err(|e| U.syntax(e))?;
        let value = string(p, &format!("the value of {clause} {key}"))?;
        if out.insert(key.clone(), value).is_some() {
            return Err(SqlError::invalid_parameter(format!(
                "{clause} \"{key}\" is given twice"
            )));
        }
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    p.expect_token(&Token::RParen).map_err(|e| U.syntax(e))?;
    Ok(out)
}

fn once<T>(slot: &mut Option<T>, value: T, clause: &str) -> Result<(), SqlError> {
    if slot.replace(value).is_some() {
        return Err(SqlError::syntax(format!(
            "syntax error: {clause} is given twice"
        )));
    }
    Ok(())
}

/// Parses `CREATE ALERT`; the query is checked later, by planning it.
pub(crate) fn parse_create(sql: &str) -> Result<(AlertDef, bool), SqlError> {
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect)
        .try_with_sql(sql)
        .map_err(|e| U.syntax(e))?;
    p.expect_keyword(Keyword::CREATE).map_err(|e| U.syntax(e))?;
    U.expect(&mut p, "alert")?;
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = U.name(&mut p)?;
    p.expect_keyword(Keyword::AS).map_err(|e| U.syntax(e))?;
    // The query: every token up to EVERY at depth 0.
    let index = LineIndex::new(sql);
    let start = index.offset(p.peek_token().span.start);
    let mut depth = 0i32;
    let end = loop {
        let t = p.peek_token();
        match &t.token {
            Token::EOF => {
                return Err(SqlError::syntax(format!(
                    "syntax error: the alert's query must be followed by EVERY <interval>; usage: {USAGE}"
                )));
            }
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(w)
                if depth == 0
                    && w.quote_style.is_none()
                    && w.value.eq_ignore_ascii_case("every") =>
            {
                break index.offset(t.span.start);
            }
            _ => {}
        }
        p.next_token();
    };
    let query = sql[start..end].trim().to_string();
    if query.is_empty() {
        return Err(SqlError::syntax(format!(
            "syntax error: CREATE ALERT needs a query after AS; usage: {USAGE}"
        )));
    }
    p.next_token();
    let every = interval(&mut p, "EVERY")?;
    if every < Duration::from_secs(1) {
        return Err(SqlError::invalid_parameter(format!(
            "EVERY must be at least 1 second, not {}",
            humantime::format_duration(every)
        )));
    }
    let (mut for_, mut keep, mut labels, mut annotations, mut webhook, mut with) =
        (None, None, None, None, None, None);
    loop {
        if p.parse_keyword(Keyword::FOR) {
            let d = interval(&mut p, "FOR")?;
            once(&mut for_, d, "FOR")?;
        } else if word(&mut p, "keep") {
            U.expect(&mut p, "firing")?;
            p.expect_keyword(Keyword::FOR).map_err(|e| U.syntax(e))?;
            let d = interval(&mut p, "KEEP FIRING FOR")?;
            once(&mut keep, d, "KEEP FIRING FOR")?;
        } else if word(&mut p, "labels") {
            let l = pairs(&mut p, "label")?;
            once(&mut labels, l, "LABELS")?;
        } else if word(&mut p, "annotations") {
            let a = pairs(&mut p, "annotation")?;
            once(&mut annotations, a, "ANNOTATIONS")?;
        } else if word(&mut p, "notify") {
            U.expect(&mut p, "webhook")?;
            let url = string(&mut p, "the webhook URL")?;
            sextant_alerts::notify::check_url(&url).map_err(SqlError::invalid_parameter)?;
            once(&mut webhook, url, "NOTIFY")?;
        } else if p.parse_keyword(Keyword::WITH) {
            let w = pairs(&mut p, "option")?;
            once(&mut with, w, "WITH")?;
        } else if p.peek_token().token == Token::EOF {
            break;
        } else {
            return Err(SqlError::syntax(format!(
                "syntax error: unexpected {} in CREATE ALERT; usage: {USAGE}",
                p.peek_token().token
            )));
        }
    }
    let webhook = webhook.ok_or_else(|| {
        SqlError::syntax(format!(
            "syntax error: CREATE ALERT needs NOTIFY WEBHOOK '<url>'; usage: {USAGE}"
        ))
    })?;
    let mut def = AlertDef {
        name,
        query,
        every_ns: every.as_nanos() as i64,
        for_ns: for_.map(|d| d.as_nanos() as i64).unwrap_or(0),
        keep_firing_for_ns: keep.map(|d| d.as_nanos() as i64).unwrap_or(0),
        labels: labels.unwrap_or_default(),
        annotations: annotations.unwrap_or_default(),
        webhook,
        timeout_ms: DEFAULT_WEBHOOK_TIMEOUT.as_millis() as u64,
        retries: DEFAULT_RETRIES,
        query_timeout_ms: None,
    };
    for (key, value) in with.unwrap_or_default() {
        let ms = |v: &str| -> Result<u64, SqlError> {
            parse_interval(v)
                .map(|d| d.as_millis().max(1) as u64)
                .map_err(|e| SqlError::invalid_parameter(format!("{key}: {}", e.message)))
        };
        match key.to_lowercase().as_str() {
            "timeout" => def.timeout_ms = ms(&value)?,
            "query_timeout" => def.query_timeout_ms = Some(ms(&value)?),
            "retries" => {
                def.retries = value.parse().ok().filter(|r| *r <= 20).ok_or_else(|| {
                    SqlError::invalid_parameter(format!(
                        "retries must be a whole number from 0 to 20, got '{value}'"
                    ))
                })?
            }
            other => {
                return Err(SqlError::invalid_parameter(format!(
                    "unknown option \"{other}\" (known: timeout, retries, query_timeout)"
                )));
            }
        }
    }
    Ok((def, if_not_exists))
}

pub(crate) async fn create(
    def: &AlertDef,
    if_not_exists: bool,
    ctx: &SessionContext,
) -> Result<Done, SqlError> {
    alerts(ctx)?.create(def.clone(), if_not_exists).await?;
    Ok(Done {
        tag: "CREATE ALERT",
        rows: None,
        batch: None,
    })
}

/// Parses `ALTER ALERT name PAUSE | RESUME`: the name, and whether paused.
pub(crate) fn parse_alter(sql: &str) -> Result<(String, bool), SqlError> {
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect)
        .try_with_sql(sql)
        .map_err(|e| U.syntax(e))?;
    p.expect_keyword(Keyword::ALTER).map_err(|e| U.syntax(e))?;
    U.expect(&mut p, "alert")?;
    let name = U.name(&mut p)?;
    let paused = if word(&mut p, "pause") {
        true
    } else if word(&mut p, "resume") {
        false
    } else {
        return Err(SqlError::syntax(format!(
            "syntax error: ALTER ALERT {name} takes PAUSE or RESUME, found {}",
            p.peek_token().token
        )));
    };
    if p.peek_token().token != Token::EOF {
        return Err(SqlError::syntax(format!(
            "syntax error: unexpected {} after {}",
            p.peek_token().token,
            if paused { "PAUSE" } else { "RESUME" }
        )));
    }
    Ok((name, paused))
}

/// `ALTER ALERT name PAUSE | RESUME`.
pub(crate) fn alter(name: &str, paused: bool, ctx: &SessionContext) -> Result<Done, SqlError> {
    alerts(ctx)?.set_paused(name, paused)?;
    Ok(Done {
        tag: "ALTER ALERT",
        rows: None,
        batch: None,
    })
}

/// Parses `DROP ALERT [IF EXISTS] name`: the name, and IF EXISTS.
pub(crate) fn parse_drop(sql: &str) -> Result<(String, bool), SqlError> {
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect)
        .try_with_sql(sql)
        .map_err(|e| U.syntax(e))?;
    p.expect_keyword(Keyword::DROP).map_err(|e| U.syntax(e))?;
    U.expect(&mut p, "alert")?;
    let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let name = U.name(&mut p)?;
    if p.peek_token().token != Token::EOF {
        return Err(SqlError::syntax(format!(
            "syntax error: unexpected {} after DROP ALERT {name}",
            p.peek_token().token
        )));
    }
    Ok((name, if_exists))
}

/// `DROP ALERT [IF EXISTS] name`.
pub(crate) fn drop(name: &str, if_exists: bool, ctx: &SessionContext) -> Result<Done, SqlError> {
    alerts(ctx)?.drop_rule(name, if_exists)?;
    Ok(Done {
        tag: "DROP ALERT",
        rows: None,
        batch: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_example_parses() {
        let (d, ine) = parse_create(
            "CREATE ALERT High_Cpu AS
               SELECT host, avg(usage) AS avg_usage FROM cpu
               WHERE time > now() - INTERVAL '5 minutes' GROUP BY host HAVING avg(usage) > 90
               EVERY INTERVAL '1 minute' FOR INTERVAL '3 minutes'
               LABELS (severity = 'page')
               NOTIFY WEBHOOK 'http://127.0.0.1:9000/hook'",
        )
        .unwrap();
        assert!(!ine);
        assert_eq!(d.name, "high_cpu");
        assert!(d.query.starts_with("SELECT host"));
        assert!(d.query.ends_with("HAVING avg(usage) > 90"));
        assert_eq!(d.every_ns, 60_000_000_000);
        assert_eq!(d.for_ns, 180_000_000_000);
        assert_eq!(d.labels["severity"], "page");
        assert_eq!(d.webhook, "http://127.0.0.1:9000/hook");
        assert_eq!(d.retries, DEFAULT_RETRIES);
    }

    #[test]
    fn every_clause_and_option() {
        let (d, ine) = parse_create(
            "create alert if not exists a as select x from (select 1 as x, 'every' as every) t \
             every '30s' keep firing for interval '5' minute annotations (summary = '{{ $labels.x }}') \
             notify webhook 'https://h/p' with (timeout = '2s', retries = 0, query_timeout = '1s') \
             for '1m'",
        )
        .unwrap();
        assert!(ine);
        assert_eq!(d.query, "select x from (select 1 as x, 'every' as every) t");
        assert_eq!(d.every_ns, 30_000_000_000);
        assert_eq!(d.keep_firing_for_ns, 300_000_000_000);
        assert_eq!(d.for_ns, 60_000_000_000);
        assert_eq!(d.timeout_ms, 2000);
        assert_eq!(d.retries, 0);
        assert_eq!(d.query_timeout_ms, Some(1000));
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |s: &str| parse_create(s).unwrap_err();
        let e = err("CREATE ALERT a AS SELECT 1 NOTIFY WEBHOOK 'http://x/'");
        assert_eq!(e.state, SqlState::SYNTAX_ERROR);
        assert!(e.message.contains("EVERY"), "{}", e.message);
        let e = err("CREATE ALERT a AS SELECT 1 EVERY '1m'");
        assert!(e.message.contains("NOTIFY WEBHOOK"), "{}", e.message);
        let e = err("CREATE ALERT a AS SELECT 1 EVERY 'soon' NOTIFY WEBHOOK 'http://x/'");
        assert_eq!(e.state, SqlState::INVALID_PARAMETER_VALUE);
        // Zero is a duration, under EVERY's minimum; FOR may be zero.
        let e = err("CREATE ALERT a AS SELECT 1 EVERY '0 seconds' NOTIFY WEBHOOK 'http://x/'");
        assert_eq!(e.state, SqlState::INVALID_PARAMETER_VALUE);
        assert_eq!(e.message, "EVERY must be at least 1 second, not 0s");
        let (d, _) = parse_create(
            "CREATE ALERT a AS SELECT 1 EVERY '1m' FOR '0 seconds' NOTIFY WEBHOOK 'http://x/'",
        )
        .unwrap();
        assert_eq!(d.for_ns, 0);
        let e = err("CREATE ALERT a AS SELECT 1 EVERY '1m' NOTIFY WEBHOOK 'ftp://x/'");
        assert_eq!(e.state, SqlState::INVALID_PARAMETER_VALUE);
        let e = err(
            "CREATE ALERT a AS SELECT 1 EVERY '1m' NOTIFY WEBHOOK 'http://x/' WITH (retries = 'many')",
        );
        assert_eq!(e.state, SqlState::INVALID_PARAMETER_VALUE);
        let e = err(
            "CREATE ALERT a AS SELECT 1 EVERY '1m' FOR '1m' FOR '2m' NOTIFY WEBHOOK 'http://x/'",
        );
        assert!(e.message.contains("twice"), "{}", e.message);
        let e = err(
            "CREATE ALERT a AS SELECT 1 EVERY '1m' LABELS (\"1x\" = 'v') NOTIFY WEBHOOK 'http://x/'",
        );
        assert_eq!(e.state, SqlState::INVALID_PARAMETER_VALUE);
    }
}
