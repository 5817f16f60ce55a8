//! PromQL text → the expression the evaluator reads.
//!
//! `promql-parser` parses and type-checks; [`parse`] then turns its tree
//! into [`Expr`]: parentheses gone, durations in milliseconds, operators
//! and functions named by enums, each selector numbered so the series read
//! for it can be found again. What Prometheus 2.42 does not know (functions
//! and syntax of later versions) is refused here, as 2.42 refuses it.

use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, AtModifier, LabelModifier, Offset, VectorMatchCardinality};
use regex::Regex;

use crate::PromError;
use crate::labels::METRIC_NAME;

/// What an expression evaluates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Scalar,
    String,
    Vector,
    Matrix,
}

impl Kind {
    /// As Prometheus names it in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Scalar => "scalar",
            Kind::String => "string",
            Kind::Vector => "instant vector",
            Kind::Matrix => "range vector",
        }
    }
}

/// Called with each selector, its range (for a range vector) and the
/// subqueries above it.
pub type SelectorFn<'a, 'f> = dyn FnMut(&'a Selector, Option<i64>, &[&'a Expr]) + 'f;

/// A label matcher; regexes are anchored.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchKind,
    pub value: String,
}

#[derive(Debug, Clone)]
pub enum MatchKind {
    Equal,
    NotEqual,
    Re(Regex),
    NotRe(Regex),
}

impl Matcher {
    pub fn matches(&self, v: &str) -> bool {
        match &self.op {
            MatchKind::Equal => self.value == v,
            MatchKind::NotEqual => self.value != v,
            MatchKind::Re(r) => r.is_match(v),
            MatchKind::NotRe(r) => !r.is_match(v),
        }
    }
}

/// The time an `@` modifier pins a selector or subquery to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum At {
    Start,
    End,
    /// Milliseconds since the epoch.
    Time(i64),
}

/// A vector selector: which series, and the time it is read at.
#[derive(Debug, Clone)]
pub struct Selector {
    /// Numbers the selectors of one query: the key of its series.
    pub id: usize,
    /// Every matcher, `__name__` included.
    pub matchers: Vec<Matcher>,
    /// Milliseconds (negative for a negative offset).
    pub offset: i64,
    pub at: Option<At>,
}

impl Selector {
    /// The metric name, when one `=` matcher names it.
    pub fn metric_name(&self) -> Option<&str> {
        self.matchers
            .iter()
            .find(|m| m.name == METRIC_NAME && matches!(m.op, MatchKind::Equal))
            .map(|m| m.value.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl BinOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le
        )
    }

    pub fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }

    /// Arithmetic drops the metric name; comparisons and sets keep it.
    pub fn drops_name(self) -> bool {
        matches!(
            self,
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod | BinOp::Pow
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
    ManyToMany,
}

/// How the two sides of a vector/vector operation find each other.
#[derive(Debug, Clone)]
pub struct Matching {
    pub card: Card,
    /// `on` (true) or `ignoring` (false) these labels.
    pub on: bool,
    pub labels: Vec<String>,
    /// `group_left`/`group_right` labels taken from the "one" side.
    pub include: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    Quantile,
    CountValues,
}

/// An expression, as the evaluator reads it.
#[derive(Debug, Clone)]
pub enum Expr {
    Number(f64),
    String(String),
    Vector(Selector),
    /// A range vector: the selector and its range in milliseconds.
    Matrix(Selector, i64),
    Subquery {
        expr: Box<Expr>,
        range: i64,
        /// Milliseconds; without one, 2.42 takes the global evaluation
        /// interval (1 minute by default).
        step: Option<i64>,
        offset: i64,
        at: Option<At>,
    },
    Neg(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
        matching: Matching,
        return_bool: bool,
    },
    Aggregate {
        op: AggOp,
        expr: Box<Expr>,
        param: Option<Box<Expr>>,
        /// `by` labels, or `without` labels when `without`; sorted.
        grouping: Vec<String>,
        without: bool,
    },
    Call {
        func: &'static str,
        args: Vec<Expr>,
    },
}

impl Expr {
    pub fn kind(&self) -> Kind {
        match self {
            Expr::Number(_) => Kind::Scalar,
            Expr::String(_) => Kind::String,
            Expr::Vector(_) | Expr::Aggregate { .. } => Kind::Vector,
            Expr::Matrix(..) | Expr::Subquery { .. } => Kind::Matrix,
            Expr::Neg(e) => e.kind(),
            Expr::Binary { lhs, rhs, .. } => {
                if lhs.kind() == Kind::Scalar && rhs.kind() == Kind::Scalar {
                    Kind::Scalar
                } else {
                    Kind::Vector
                }
            }
            Expr::Call { func, .. } => crate::functions::return_kind(func),
        }
    }

    /// Every selector of the expression, with the subqueries above it
    /// (outermost first), for reading their series.
    pub fn selectors<'a>(&'a self, above: &mut Vec<&'a Expr>, out: &mut SelectorFn<'a, '_>) {
        match self {
            Expr::Number(_) | Expr::String(_) => {}
            Expr::Vector(s) => out(s, None, above),
            Expr::Matrix(s, range) => out(s, Some(*range), above),
            Expr::Subquery { expr, .. } => {
                above.push(self);
                expr.selectors(above, out);
                above.pop();
            }
            Expr::Neg(e) => e.selectors(above, out),
            Expr::Binary { lhs, rhs, .. } => {
                lhs.selectors(above, out);
                rhs.selectors(above, out);
            }
            Expr::Aggregate { expr, param, .. } => {
                if let Some(p) = param {
                    p.selectors(above, out);
                }
                expr.selectors(above, out);
            }
            Expr::Call { args, .. } => {
                for a in args {
                    a.selectors(above, out);
                }
            }
        }
    }
}

/// The functions Prometheus 2.42 has (promql-parser knows later ones too).
const FUNCTIONS_2_42: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "deg",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_replace",
    "label_join",
    "ln",
    "log10",
    "log2",
    "last_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// Parses `text` as Prometheus 2.42 would; every refusal is `bad_data`.
pub fn parse(text: &str) -> Result<Expr, PromError> {
    static FUNCTIONS: Once = Once::new();
    FUNCTIONS.call_once(|| {
        // 2.42's name for what later versions call
        // double_exponential_smoothing.
        use promql_parser::parser::value::ValueType;
        let _ = parser::register_extra_functions(vec![parser::Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
    if text.trim().is_empty() {
        return Err(PromError::bad_data(
            "1:1: parse error: no expression found in input",
        ));
    }
    if text.len() <= INLINE_PARSE {
        return parse_and_convert(text);
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("promql-parse".into())
            .stack_size(256 << 20)
            .spawn_scoped(scope, || parse_and_convert(text))
            .map_err(|e| PromError::internal(format!("cannot start the parser's thread: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(PromError::internal("the parser failed on this expression")))
    })
}

/// `text` as Prometheus's `format_query` prints it (after the checks of
/// [`parse`]).
pub fn format_query(text: &str) -> Result<String, PromError> {
    parse(text)?;
    parser::parse(text)
        .map(|tree| tree.prettify())
        .map_err(|e| PromError::bad_data(format!("parse error: {e}")))
}

/// The deepest an expression may nest: the evaluator recurses once per
/// level, on a thread's stack.
const MAX_DEPTH: usize = 512;

/// Queries longer than this are parsed on a thread with a large stack:
/// `promql-parser` drops its tree recursively, and a long chain such as
/// `1+1+...+1` would overflow a runtime thread's stack.
const INLINE_PARSE: usize = 4096;

/// How deep `e` nests, counted without recursion.
fn depth(e: &parser::Expr) -> usize {
    use parser::Expr as P;
    let mut deepest = 0;
    let mut stack = vec![(e, 1usize)];
    while let Some((e, d)) = stack.pop() {
        deepest = deepest.max(d);
        match e {
            P::Aggregate(a) => {
                stack.push((&a.expr, d + 1));
                if let Some(p) = &a.param {
                    stack.push((p, d + 1));
                }
            }
            P::Unary(u) => stack.push((&u.expr, d + 1)),
            P::Binary(b) => {
                stack.push((&b.lhs, d + 1));
                stack.push((&b.rhs, d + 1));
            }
            P::Paren(p) => stack.push((&p.expr, d + 1)),
            P::Subquery(q) => stack.push((&q.expr, d + 1)),
            P::Call(c) => stack.extend(c.args.args.iter().map(|a| (&**a, d + 1))),
            _ => {}
        }
    }
    deepest
}

fn parse_and_convert(text: &str) -> Result<Expr, PromError> {
    // promql-parser panics on some inputs (a duration of 8e23 seconds:
    // `Duration::from_secs_f64`); such an input is malformed PromQL.
    let tree = std::panic::catch_unwind(|| parser::parse(text))
        .unwrap_or_else(|_| Err("the expression holds a number out of range".to_string()))
        .map_err(|e| PromError::bad_data(format!("parse error: {e}")))?;
    if depth(&tree) > MAX_DEPTH {
        return Err(PromError::bad_data(format!(
            "parse error: the expression nests deeper than {MAX_DEPTH} levels"
        )));
    }
    let mut next = 0;
    convert(&tree, &mut next)
}

fn millis(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => millis(d),
        Some(Offset::Neg(d)) => -millis(d),
    }
}

fn at_of(a: &Option<AtModifier>) -> Option<At> {
    a.as_ref().map(|a| match a {
        AtModifier::Start => At::Start,
        AtModifier::End => At::End,
        AtModifier::At(t) => At::Time(system_time_ms(*t)),
    })
}

fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => millis(&d),
        Err(e) => -millis(&e.duration()),
    }
}

fn unsupported(what: &str) -> PromError {
    PromError::bad_data(format!("parse error: {what} is not supported"))
}

fn selector(vs: &parser::VectorSelector, next: &mut usize) -> Result<Selector, PromError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(unsupported("\"or\" inside a selector"));
    }
    let mut matchers = Vec::new();
    if let Some(name) = &vs.name {
        matchers.push(Matcher {
            name: METRIC_NAME.to_string(),
            op: MatchKind::Equal,
            value: name.clone(),
        });
    }
    for m in &vs.matchers.matchers {
        let op = match &m.op {
            MatchOp::Equal => MatchKind::Equal,
            MatchOp::NotEqual => MatchKind::NotEqual,
            MatchOp::Re(r) => MatchKind::Re(r.clone()),
            MatchOp::NotRe(r) => MatchKind::NotRe(r.clone()),
        };
        matchers.push(Matcher {
            name: m.name.clone(),
            op,
            value: m.value.clone(),
        });
    }
    let id = *next;
    *next += 1;
    Ok(Selector {
        id,
        matchers,
        offset: offset_ms(&vs.offset),
        at: at_of(&vs.at),
    })
}

fn labels_of(l: &promql_parser::label::Labels) -> Vec<String> {
    let mut v = l.labels.clone();
    v.sort();
    v.dedup();
    v
}

fn binop(op: &str) -> Option<BinOp> {
    Some(match op {
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        "%" => BinOp::Mod,
        "^" => BinOp::Pow,
        "atan2" => BinOp::Atan2,
        "==" => BinOp::Eq,
        "!=" => BinOp::Ne,
        ">" => BinOp::Gt,
        "<" => BinOp::Lt,
        ">=" => BinOp::Ge,
        "<=" => BinOp::Le,
        "and" => BinOp::And,
        "or" => BinOp::Or,
        "unless" => BinOp::Unless,
        _ => return None,
    })
}

fn aggop(op: &str) -> Option<AggOp> {
    Some(match op {
        "sum" => AggOp::Sum,
        "avg" => AggOp::Avg,
        "min" => AggOp::Min,
        "max" => AggOp::Max,
        "count" => AggOp::Count,
        "group" => AggOp::Group,
        "stddev" => AggOp::Stddev,
        "stdvar" => AggOp::Stdvar,
        "topk" => AggOp::Topk,
        "bottomk" => AggOp::Bottomk,
        "quantile" => AggOp::Quantile,
        "count_values" => AggOp::CountValues,
        _ => return None,
    })
}

fn convert(e: &parser::Expr, next: &mut usize) -> Result<Expr, PromError> {
    use parser::Expr as P;
    Ok(match e {
        P::Paren(p) => convert(&p.expr, next)?,
        P::NumberLiteral(n) => Expr::Number(n.val),
        P::StringLiteral(s) => Expr::String(s.val.clone()),
        P::VectorSelector(vs) => Expr::Vector(selector(vs, next)?),
        P::MatrixSelector(ms) => Expr::Matrix(selector(&ms.vs, next)?, millis(&ms.range)),
        P::Subquery(sq) => {
            let range = millis(&sq.range);
            let step = sq.step.as_ref().map(millis);
            if step == Some(0) {
                return Err(PromError::bad_data(
                    "parse error: zero step in a subquery is not allowed",
                ));
            }
            Expr::Subquery {
                expr: Box::new(convert(&sq.expr, next)?),
                range,
                step,
                offset: offset_ms(&sq.offset),
                at: at_of(&sq.at),
            }
        }
        P::Unary(u) => match convert(&u.expr, next)? {
            Expr::Number(v) => Expr::Number(-v),
            inner => Expr::Neg(Box::new(inner)),
        },
        P::Binary(b) => {
            let op = binop(&b.op.to_string())
                .ok_or_else(|| unsupported(&format!("the operator {}", b.op)))?;
            let (lhs, rhs) = (convert(&b.lhs, next)?, convert(&b.rhs, next)?);
            let (mut card, on, labels, include, return_bool) = match &b.modifier {
                None => (Card::OneToOne, false, vec![], vec![], false),
                Some(m) => {
                    if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                        return Err(unsupported("fill()"));
                    }
                    let (on, labels) = match &m.matching {
                        None => (false, vec![]),
                        Some(LabelModifier::Include(l)) => (true, labels_of(l)),
                        Some(LabelModifier::Exclude(l)) => (false, labels_of(l)),
                    };
                    let (card, include) = match &m.card {
                        VectorMatchCardinality::OneToOne => (Card::OneToOne, vec![]),
                        VectorMatchCardinality::ManyToMany => (Card::ManyToMany, vec![]),
                        VectorMatchCardinality::ManyToOne(l) => (Card::ManyToOne, l.labels.clone()),
                        VectorMatchCardinality::OneToMany(l) => (Card::OneToMany, l.labels.clone()),
                    };
                    (card, on, labels, include, m.return_bool)
                }
            };
            if op.is_set() {
                card = Card::ManyToMany;
            }
            Expr::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                matching: Matching {
                    card,
                    on,
                    labels,
                    include,
                },
                return_bool,
            }
        }
        P::Aggregate(a) => {
            let name = a.op.to_string();
            let op = aggop(&name).ok_or_else(|| unsupported(&format!("the aggregation {name}")))?;
            let (grouping, without) = match &a.modifier {
                None => (vec![], false),
                Some(LabelModifier::Include(l)) => (labels_of(l), false),
                Some(LabelModifier::Exclude(l)) => (labels_of(l), true),
            };
            Expr::Aggregate {
                op,
                expr: Box::new(convert(&a.expr, next)?),
                param: match &a.param {
                    Some(p) => Some(Box::new(convert(p, next)?)),
                    None => None,
                },
                grouping,
                without,
            }
        }
        P::Call(c) => {
            let name = c.func.name;
            let Some(func) = FUNCTIONS_2_42.iter().find(|f| **f == name) else {
                return Err(PromError::bad_data(format!(
                    "parse error: unknown function with name \"{name}\""
                )));
            };
            let args = c
                .args
                .args
                .iter()
                .map(|a| convert(a, next))
                .collect::<Result<Vec<_>, _>>()?;
            Expr::Call { func, args }
        }
        P::Extension(_) => return Err(unsupported("this expression")),
    })
}

/// Labels the matchers of `m` name exactly, as `absent()` gives them.
pub fn absent_labels(m: &[Matcher]) -> crate::labels::Labels {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for ma in m {
        if ma.name == METRIC_NAME {
            continue;
        }
        if matches!(ma.op, MatchKind::Equal) && !seen.contains(&ma.name.as_str()) {
            pairs.retain(|(n, _)| n != &ma.name);
            pairs.push((ma.name.clone(), ma.value.clone()));
            seen.push(&ma.name);
        } else {
            pairs.retain(|(n, _)| n != &ma.name);
        }
    }
    crate::labels::Labels::new(pairs)
}

/// The matchers of a selector as the parser's type (for `/series` and
/// `match[]`), parsed from text.
pub fn parse_series_selector(text: &str) -> Result<Vec<Matcher>, PromError> {
    match parse(text)? {
        Expr::Vector(s) => Ok(s.matchers),
        _ => Err(PromError::bad_data(format!(
            "invalid parameter \"match[]\": 1:1: parse error: expected type instant vector in series selector, got {}",
            "another expression"
        ))),
    }
}
