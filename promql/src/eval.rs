//! The evaluator: a port of Prometheus 2.42's `promql/engine.go`.
//!
//! Series come in read already ([`Data`]: each selector's raw samples,
//! staleness markers included). Every instant-vector or scalar expression
//! evaluates to a matrix with one point per evaluation step (an instant
//! query is a range query of one step), the way the Go engine's
//! `rangeEval` does it: arguments first, then the operator or function
//! once per step over the arguments' samples at that step. Range-vector
//! functions walk each series' window step by step instead. Samples are
//! read with the lookback delta (5 minutes by default) and staleness
//! markers end a series at once.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::PromError;
use crate::ir::{At, Card, Expr, Kind, Matching, Selector};
use crate::labels::{Labels, Metric};

/// The bits of the NaN Prometheus writes when a series disappears.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

/// One sample of a series: milliseconds and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub t: i64,
    pub v: f64,
}

/// A series and its points, oldest first.
#[derive(Debug, Clone)]
pub struct Series {
    pub metric: Metric,
    pub points: Vec<Point>,
}

/// One element of an instant vector.
#[derive(Debug, Clone)]
pub struct Sample {
    pub metric: Metric,
    pub t: i64,
    pub v: f64,
}

/// The result of a query.
#[derive(Debug, Clone)]
pub enum Value {
    Scalar { t: i64, v: f64 },
    String { t: i64, v: String },
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

/// The series read for each selector (by [`Selector::id`]), each sorted by
/// time with one point per timestamp.
pub type Data = HashMap<usize, Vec<Series>>;

/// When and how a query is evaluated.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Milliseconds; `start == end` and `step == 0` for an instant query.
    pub start: i64,
    pub end: i64,
    pub step: i64,
    /// Milliseconds (Prometheus's `--query.lookback-delta`, 5 m).
    pub lookback: i64,
    /// At most this many points held at once (Prometheus's
    /// `--query.max-samples`, 50 million).
    pub max_samples: usize,
    /// Milliseconds between the points of a subquery written without a
    /// step (`x[5m:]`): Prometheus's `global.evaluation_interval`
    /// ([`DEFAULT_SUBQUERY_STEP`] by default).
    pub subquery_step: i64,
}

/// Interval of a subquery without a step: 2.42's global evaluation
/// interval, 1 minute by default.
pub const DEFAULT_SUBQUERY_STEP: i64 = 60_000;

/// The time range of samples each selector needs, as
/// `getTimeRangesForSelector` computes it: `(selector, mint, maxt)`.
pub fn selector_ranges<'a>(expr: &'a Expr, p: &Params) -> Vec<(&'a Selector, i64, i64)> {
    let mut out = Vec::new();
    let mut above = Vec::new();
    expr.selectors(&mut above, &mut |sel, range, subqueries| {
        // The evaluation times of the selector, through its subqueries.
        let (mut lo, mut hi) = (p.start, p.end);
        for sq in subqueries {
            if let Expr::Subquery {
                range, offset, at, ..
            } = sq
            {
                match at {
                    Some(a) => {
                        let t = resolve(*a, p);
                        lo = t.saturating_sub(*offset).saturating_sub(*range);
                        hi = t.saturating_sub(*offset);
                    }
                    None => {
                        lo = lo.saturating_sub(*offset).saturating_sub(*range);
                        hi = hi.saturating_sub(*offset);
                    }
                }
            }
        }
        if let Some(a) = sel.at {
            lo = resolve(a, p);
            hi = lo;
        }
        lo = lo.saturating_sub(range.unwrap_or(p.lookback));
        out.push((
            sel,
            lo.saturating_sub(sel.offset),
            hi.saturating_sub(sel.offset),
        ));
    });
    out
}

fn resolve(at: At, p: &Params) -> i64 {
    match at {
        At::Start => p.start,
        At::End => p.end,
        At::Time(t) => t,
    }
}

/// Evaluates `expr` over `data` (read for [`selector_ranges`]). `stop` is
/// asked now and then whether to give up (cancellation, timeout).
pub fn evaluate(
    expr: &Expr,
    data: &Data,
    p: &Params,
    stop: &dyn Fn() -> Result<(), PromError>,
) -> Result<Value, PromError> {
    let instant = p.start == p.end && p.step == 0;
    let ev = Evaluator {
        start: p.start,
        end: p.end,
        interval: if instant { 1 } else { p.step },
        query: *p,
        data,
        stop,
        samples: Cell::new(0),
    };
    let kind = expr.kind();
    if !instant && !matches!(kind, Kind::Scalar | Kind::Vector) {
        return Err(PromError::bad_data(format!(
            "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
            kind.name()
        )));
    }
    match kind {
        Kind::String => match expr {
            Expr::String(s) => Ok(Value::String {
                t: p.start,
                v: s.clone(),
            }),
            _ => Err(PromError::internal(
                "a string expression that is no literal",
            )),
        },
        Kind::Matrix => Ok(Value::Matrix(ev.range_vector(expr)?)),
        Kind::Scalar if instant => {
            let mat = ev.eval(expr)?;
            let v = mat
                .first()
                .and_then(|s| s.points.first())
                .map_or(f64::NAN, |p| p.v);
            Ok(Value::Scalar { t: p.start, v })
        }
        Kind::Vector if instant => {
            let mat = ev.eval(expr)?;
            Ok(Value::Vector(
                mat.into_iter()
                    .filter_map(|s| {
                        s.points.first().map(|pt| Sample {
                            metric: s.metric.clone(),
                            t: p.start,
                            v: pt.v,
                        })
                    })
                    .collect(),
            ))
        }
        _ => {
            let mut mat = ev.eval(expr)?;
            mat.retain(|s| !s.points.is_empty());
            mat.sort_by(|a, b| a.metric.cmp(&b.metric));
            Ok(Value::Matrix(mat))
        }
    }
}

pub(crate) struct Evaluator<'a> {
    start: i64,
    end: i64,
    interval: i64,
    query: Params,
    data: &'a Data,
    stop: &'a dyn Fn() -> Result<(), PromError>,
    /// Points held by the matrices evaluated so far (an upper bound).
    samples: Cell<usize>,
}

/// A matrix of step-aligned points.
type Mat = Vec<Series>;

fn dup_labelset() -> PromError {
    PromError::execution("vector cannot contain metrics with the same labelset")
}

/// Whether two samples of `v` have one label set.
fn has_duplicates(v: &[Sample]) -> bool {
    if v.len() < 2 {
        return false;
    }
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    v.iter().any(|s| !seen.insert(&*s.metric))
}

/// An operator or function at one step: the arguments' samples and the
/// time in, the result's samples out.
pub(crate) type StepFn<'f> = dyn FnMut(&[Vec<Sample>], i64) -> Result<Vec<Sample>, PromError> + 'f;

/// A range-vector function over one window (and the step's number): its
/// value, if any.
pub(crate) type WindowFn<'f> = dyn FnMut(&Window<'_>, usize) -> Result<Option<f64>, PromError> + 'f;

/// What a range-vector function reads at one step.
pub(crate) struct Window<'a> {
    pub points: &'a [Point],
    /// The evaluation time.
    pub ts: i64,
    /// The window's end (the evaluation time, less the offset, or the
    /// `@` time) and range, milliseconds: it covers `[maxt - range, maxt]`.
    pub maxt: i64,
    pub range: i64,
}

impl<'a> Evaluator<'a> {
    fn steps(&self) -> impl Iterator<Item = i64> + use<> {
        let (start, end, interval) = (self.start, self.end, self.interval);
        (0..)
            .map_while(move |i: i64| i.checked_mul(interval).and_then(|d| start.checked_add(d)))
            .take_while(move |t| *t <= end)
    }

    fn num_steps(&self) -> usize {
        let n = (i128::from(self.end) - i128::from(self.start)) / i128::from(self.interval) + 1;
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    fn hold(&self, n: usize) -> Result<(), PromError> {
        let held = self.samples.get().saturating_add(n);
        if held > self.query.max_samples {
            return Err(PromError::execution(
                "query processing would load too many samples into memory in query execution",
            ));
        }
        self.samples.set(held);
        Ok(())
    }

    fn at_time(&self, at: Option<At>) -> Option<i64> {
        at.map(|a| resolve(a, &self.query))
    }

    fn series(&self, sel: &Selector) -> &'a [Series] {
        self.data.get(&sel.id).map_or(&[], |v| v.as_slice())
    }

    /// A range vector as an instant query shows it: raw points.
    fn range_vector(&self, expr: &Expr) -> Result<Mat, PromError> {
        match expr {
            Expr::Matrix(sel, range) => {
                let reft = self
                    .at_time(sel.at)
                    .unwrap_or(self.start)
                    .saturating_sub(sel.offset);
                let mut out = Vec::new();
                for s in self.series(sel) {
                    let pts: Vec<Point> = window(&s.points, reft.saturating_sub(*range), reft)
                        .iter()
                        .filter(|p| !is_stale(p.v))
                        .copied()
                        .collect();
                    if !pts.is_empty() {
                        self.hold(pts.len())?;
                        out.push(Series {
                            metric: s.metric.clone(),
                            points: pts,
                        });
                    }
                }
                Ok(out)
            }
            Expr::Subquery { .. } => self.subquery(expr, self.start, self.end),
            _ => Err(PromError::internal("not a range vector")),
        }
    }

    /// Evaluates a subquery's inner expression over the steps its windows
    /// need, for evaluation times `from..=to` of the outer expression.
    fn subquery(&self, expr: &Expr, from: i64, to: i64) -> Result<Mat, PromError> {
        let Expr::Subquery {
            expr: inner,
            range,
            step,
            offset,
            at,
        } = expr
        else {
            return Err(PromError::internal("not a subquery"));
        };
        let interval = step.unwrap_or(self.query.subquery_step).max(1);
        let (from, to) = match self.at_time(*at) {
            Some(t) => (t, t),
            None => (from, to),
        };
        let lo = from.saturating_sub(*offset).saturating_sub(*range);
        let mut start = lo.div_euclid(interval).saturating_mul(interval);
        if start < lo {
            start = start.saturating_add(interval);
        }
        let sub = Evaluator {
            start,
            end: to.saturating_sub(*offset),
            interval,
            query: self.query,
            data: self.data,
            stop: self.stop,
            samples: Cell::new(self.samples.get()),
        };
        if sub.start > sub.end {
            return Ok(Vec::new());
        }
        let mat = sub.eval(inner)?;
        self.samples.set(sub.samples.get());
        Ok(mat)
    }

    /// Evaluates an instant-vector or scalar expression at every step.
    fn eval(&self, expr: &Expr) -> Result<Mat, PromError> {
        (self.stop)()?;
        match expr {
            Expr::Number(v) => {
                self.hold(self.num_steps())?;
                let points: Vec<Point> = self.steps().map(|t| Point { t, v: *v }).collect();
                self.hold(points.len())?;
                Ok(vec![Series {
                    metric: Arc::new(Labels::empty()),
                    points,
                }])
            }
            Expr::String(_) => Err(PromError::internal("a string where a number belongs")),
            Expr::Vector(sel) => self.vector_selector(sel),
            Expr::Matrix(..) | Expr::Subquery { .. } => Err(PromError::internal(
                "a range vector where an instant vector belongs",
            )),
            Expr::Neg(e) => {
                let mut mat = self.eval(e)?;
                let scalar = e.kind() == Kind::Scalar;
                for s in &mut mat {
                    if !scalar {
                        s.metric = Arc::new(s.metric.drop_name());
                    }
                    for p in &mut s.points {
                        p.v = -p.v;
                    }
                }
                if !scalar && has_duplicates_mat(&mat) {
                    return Err(dup_labelset());
                }
                Ok(mat)
            }
            Expr::Binary {
                op,
                lhs,
                rhs,
                matching,
                return_bool,
            } => self.binary(*op, lhs, rhs, matching, *return_bool),
            Expr::Aggregate {
                op,
                expr,
                param,
                grouping,
                without,
            } => crate::aggregate::eval(self, *op, expr, param.as_deref(), grouping, *without),
            Expr::Call { func, args } => crate::functions::call(self, func, args),
        }
    }

    fn vector_selector(&self, sel: &Selector) -> Result<Mat, PromError> {
        let at = self.at_time(sel.at);
        let lookback = self.query.lookback;
        let mut out = Vec::new();
        for s in self.series(sel) {
            (self.stop)()?;
            let mut points = Vec::new();
            let mut i = 0usize; // first point after the reference time
            for (step, ts) in self.steps().enumerate() {
                if step % 1024 == 1023 {
                    (self.stop)()?;
                }
                let reft = at.unwrap_or(ts).saturating_sub(sel.offset);
                if at.is_some() {
                    i = s.points.partition_point(|p| p.t <= reft);
                } else {
                    while i < s.points.len() && s.points[i].t <= reft {
                        i += 1;
                    }
                }
                if i == 0 {
                    continue;
                }
                let p = s.points[i - 1];
                if p.t < reft.saturating_sub(lookback) || is_stale(p.v) {
                    continue;
                }
                points.push(Point { t: ts, v: p.v });
            }
            if !points.is_empty() {
                self.hold(points.len())?;
                out.push(Series {
                    metric: s.metric.clone(),
                    points,
                });
            }
        }
        Ok(out)
    }

    /// The samples of a vector selector at `ts`, with their own
    /// timestamps (what `timestamp()` reads).
    pub(crate) fn selector_samples(&self, sel: &Selector, ts: i64) -> Vec<Sample> {
        let reft = self
            .at_time(sel.at)
            .unwrap_or(ts)
            .saturating_sub(sel.offset);
        let mut out = Vec::new();
        for s in self.series(sel) {
            let i = s.points.partition_point(|p| p.t <= reft);
            if i == 0 {
                continue;
            }
            let p = s.points[i - 1];
            if p.t < reft.saturating_sub(self.query.lookback) || is_stale(p.v) {
                continue;
            }
            out.push(Sample {
                metric: s.metric.clone(),
                t: p.t,
                v: p.v,
            });
        }
        out
    }

    /// `rangeEval`: evaluates `args`, then calls `f` at every step with the
    /// arguments' samples at that step; the results become series.
    pub(crate) fn range_eval(&self, args: &[&Expr], f: &mut StepFn<'_>) -> Result<Mat, PromError> {
        let mats: Vec<Mat> = args
            .iter()
            .map(|a| self.eval(a))
            .collect::<Result<_, _>>()?;
        let mut cursors: Vec<Vec<usize>> = mats.iter().map(|m| vec![0; m.len()]).collect();
        let mut vectors: Vec<Vec<Sample>> = vec![Vec::new(); mats.len()];
        let mut out: Vec<Series> = Vec::new();
        let mut index: HashMap<Metric, usize> = HashMap::new();
        let steps = self.num_steps();
        for (step, ts) in self.steps().enumerate() {
            if step % 64 == 0 {
                (self.stop)()?;
            }
            for (i, m) in mats.iter().enumerate() {
                let v = &mut vectors[i];
                v.clear();
                for (si, s) in m.iter().enumerate() {
                    let c = &mut cursors[i][si];
                    if let Some(p) = s.points.get(*c)
                        && p.t == ts
                    {
                        v.push(Sample {
                            metric: s.metric.clone(),
                            t: ts,
                            v: p.v,
                        });
                        *c += 1;
                    }
                }
            }
            let result = f(&vectors, ts)?;
            if has_duplicates(&result) {
                return Err(dup_labelset());
            }
            self.hold(result.len())?;
            for s in result {
                let point = Point { t: ts, v: s.v };
                match index.get(&s.metric) {
                    Some(&i) => out[i].points.push(point),
                    None => {
                        index.insert(s.metric.clone(), out.len());
                        let mut points = Vec::with_capacity(if steps > 1 { 16 } else { 1 });
                        points.push(point);
                        out.push(Series {
                            metric: s.metric,
                            points,
                        });
                    }
                }
            }
        }
        // The arguments' points are let go.
        let held: usize = mats.iter().flatten().map(|s| s.points.len()).sum();
        self.samples.set(self.samples.get().saturating_sub(held));
        Ok(out)
    }

    /// Calls `f` for every series of a range-vector argument at every step
    /// with the points of its window (staleness markers left out); `f`'s
    /// value, if any, is the series' point at that step. `keep_name` keeps
    /// `__name__` (`last_over_time`).
    pub(crate) fn range_function(
        &self,
        arg: &Expr,
        keep_name: bool,
        f: &mut WindowFn<'_>,
    ) -> Result<Mat, PromError> {
        let (series, range, offset, at): (std::borrow::Cow<'_, [Series]>, i64, i64, Option<i64>) =
            match arg {
                Expr::Matrix(sel, range) => (
                    self.series(sel).into(),
                    *range,
                    sel.offset,
                    self.at_time(sel.at),
                ),
                Expr::Subquery {
                    range, offset, at, ..
                } => (
                    self.subquery(arg, self.start, self.end)?.into(),
                    *range,
                    *offset,
                    self.at_time(*at),
                ),
                _ => return Err(PromError::internal("a function's range argument")),
            };
        let mut out = Vec::new();
        let mut buf: Vec<Point> = Vec::new();
        for s in series.iter() {
            (self.stop)()?;
            let metric = if keep_name {
                s.metric.clone()
            } else {
                Arc::new(s.metric.drop_name())
            };
            let mut points = Vec::new();
            let (mut lo, mut hi) = (0usize, 0usize);
            for (step, ts) in self.steps().enumerate() {
                if step % 1024 == 1023 {
                    (self.stop)()?;
                }
                let maxt = at.unwrap_or(ts).saturating_sub(offset);
                let mint = maxt.saturating_sub(range);
                if at.is_some() {
                    lo = s.points.partition_point(|p| p.t < mint);
                    hi = s.points.partition_point(|p| p.t <= maxt);
                } else {
                    while lo < s.points.len() && s.points[lo].t < mint {
                        lo += 1;
                    }
                    hi = hi.max(lo);
                    while hi < s.points.len() && s.points[hi].t <= maxt {
                        hi += 1;
                    }
                }
                buf.clear();
                buf.extend(s.points[lo..hi].iter().filter(|p| !is_stale(p.v)));
                if buf.is_empty() {
                    continue;
                }
                let w = Window {
                    points: &buf,
                    ts,
                    maxt,
                    range,
                };
                if let Some(v) = f(&w, step)? {
                    points.push(Point { t: ts, v });
                }
            }
            if !points.is_empty() {
                self.hold(points.len())?;
                out.push(Series { metric, points });
            }
        }
        Ok(out)
    }

    fn binary(
        &self,
        op: crate::ir::BinOp,
        lhs: &Expr,
        rhs: &Expr,
        matching: &Matching,
        return_bool: bool,
    ) -> Result<Mat, PromError> {
        use crate::binary;
        match (lhs.kind(), rhs.kind()) {
            (Kind::Scalar, Kind::Scalar) => self.range_eval(&[lhs, rhs], &mut |v, _| {
                let (a, b) = (scalar_of(&v[0]), scalar_of(&v[1]));
                Ok(vec![Sample {
                    metric: Arc::new(Labels::empty()),
                    t: 0,
                    v: binary::scalar_op(op, a, b),
                }])
            }),
            (Kind::Vector, Kind::Vector) => {
                let mut state = binary::Matcher::new(matching);
                self.range_eval(&[lhs, rhs], &mut |v, _| match matching.card {
                    Card::ManyToMany => Ok(state.set_op(op, &v[0], &v[1])),
                    _ => state.vector_op(op, &v[0], &v[1], return_bool),
                })
            }
            (Kind::Vector, Kind::Scalar) => self.range_eval(&[lhs, rhs], &mut |v, _| {
                Ok(binary::vector_scalar(
                    op,
                    &v[0],
                    scalar_of(&v[1]),
                    false,
                    return_bool,
                ))
            }),
            (Kind::Scalar, Kind::Vector) => self.range_eval(&[lhs, rhs], &mut |v, _| {
                Ok(binary::vector_scalar(
                    op,
                    &v[1],
                    scalar_of(&v[0]),
                    true,
                    return_bool,
                ))
            }),
            (a, b) => Err(PromError::bad_data(format!(
                "binary expression must contain only scalar and instant vector types, got {} and {}",
                a.name(),
                b.name()
            ))),
        }
    }
}

/// The value of a scalar argument at a step (NaN if it has none).
pub(crate) fn scalar_of(v: &[Sample]) -> f64 {
    v.first().map_or(f64::NAN, |s| s.v)
}

fn has_duplicates_mat(m: &Mat) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(m.len());
    m.iter().any(|s| !seen.insert(&*s.metric))
}

/// The points of `points` in `[mint, maxt]`.
fn window(points: &[Point], mint: i64, maxt: i64) -> &[Point] {
    let lo = points.partition_point(|p| p.t < mint);
    let hi = points.partition_point(|p| p.t <= maxt);
    &points[lo..hi.max(lo)]
}

impl Evaluator<'_> {
    /// The evaluation of a scalar argument, one value per step.
    pub(crate) fn scalar_steps(&self, e: &Expr) -> Result<Vec<f64>, PromError> {
        let mat = self.eval(e)?;
        self.hold(self.num_steps())?;
        let mut out = vec![f64::NAN; self.num_steps()];
        if let Some(s) = mat.first() {
            for p in &s.points {
                let i = usize::try_from(
                    (i128::from(p.t) - i128::from(self.start)) / i128::from(self.interval),
                )
                .unwrap_or(usize::MAX);
                if let Some(slot) = out.get_mut(i) {
                    *slot = p.v;
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn step_times(&self) -> Result<Vec<i64>, PromError> {
        self.hold(self.num_steps())?;
        Ok(self.steps().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(max_samples: usize) -> Params {
        Params {
            start: 1_700_000_000_000,
            end: 1_700_000_000_000,
            step: 0,
            lookback: 300_000,
            max_samples,
            subquery_step: DEFAULT_SUBQUERY_STEP,
        }
    }

    fn run(text: &str, p: &Params) -> Result<Value, PromError> {
        let expr = crate::parse(text)?;
        evaluate(&expr, &Data::new(), p, &|| Ok(()))
    }

    #[test]
    fn a_chain_deeper_than_the_limit_is_bad_data_not_a_crash() {
        let long = format!("1{}", "+1".repeat(20_000));
        let e = run(&long, &params(1000)).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::BadData, "{e}");
        assert!(e.message.contains("nests deeper"), "{e}");
        let Value::Scalar { v, .. } =
            run(&format!("1{}", "+1".repeat(100)), &params(1000)).unwrap()
        else {
            panic!("not a scalar")
        };
        assert_eq!(v, 101.0);
    }

    #[test]
    fn a_duration_past_what_the_parser_holds_is_bad_data() {
        // Found by the fuzz target: promql-parser panicked on it.
        let e = run("a[800000000000000000000000:1m]", &params(1000)).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::BadData, "{e}");
    }

    #[test]
    fn a_subquery_of_billions_of_steps_stops_at_the_sample_limit() {
        let e = run("max_over_time(vector(1)[100y:1ms])", &params(1_000_000)).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Execution, "{e}");
        assert!(e.message.contains("too many samples"), "{e}");
    }

    #[test]
    fn evaluation_asks_to_stop_and_stops() {
        let expr = crate::parse("sum_over_time(vector(1)[1d:1s])").unwrap();
        let calls = Cell::new(0);
        let stop = || {
            calls.set(calls.get() + 1);
            if calls.get() > 3 {
                Err(PromError::canceled(true))
            } else {
                Ok(())
            }
        };
        let e = evaluate(&expr, &Data::new(), &params(usize::MAX), &stop).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Timeout, "{e}");
    }
}
