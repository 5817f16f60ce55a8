//! PromQL's functions, as 2.42's `promql/functions.go` and `quantile.go`
//! compute them: range-vector functions over each series' window, the
//! rest over the samples of one step.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Timelike};
use regex::Regex;

use crate::PromError;
use crate::eval::{Evaluator, Point, Sample, Series, Window, scalar_of};
use crate::ir::{Expr, Kind, absent_labels};
use crate::labels::{BUCKET, Labels, METRIC_NAME, Metric, valid_label_name};

type Mat = Vec<Series>;

/// What `func` returns.
pub(crate) fn return_kind(func: &str) -> Kind {
    match func {
        "time" | "pi" | "scalar" => Kind::Scalar,
        _ => Kind::Vector,
    }
}

fn string_arg(args: &[Expr], i: usize) -> Result<&str, PromError> {
    match args.get(i) {
        Some(Expr::String(s)) => Ok(s),
        _ => Err(PromError::bad_data(format!(
            "expected a string literal as argument {}",
            i + 1
        ))),
    }
}

pub(crate) fn call(ev: &Evaluator<'_>, func: &str, args: &[Expr]) -> Result<Mat, PromError> {
    if let Some(i) = args.iter().position(|a| a.kind() == Kind::Matrix) {
        return range_call(ev, func, args, i);
    }
    let simple: Option<fn(f64) -> f64> = match func {
        "abs" => Some(f64::abs),
        "ceil" => Some(f64::ceil),
        "floor" => Some(f64::floor),
        "exp" => Some(f64::exp),
        "sqrt" => Some(f64::sqrt),
        "ln" => Some(f64::ln),
        "log2" => Some(f64::log2),
        "log10" => Some(f64::log10),
        "sin" => Some(f64::sin),
        "cos" => Some(f64::cos),
        "tan" => Some(f64::tan),
        "asin" => Some(f64::asin),
        "acos" => Some(f64::acos),
        "atan" => Some(f64::atan),
        "sinh" => Some(f64::sinh),
        "cosh" => Some(f64::cosh),
        "tanh" => Some(f64::tanh),
        "asinh" => Some(f64::asinh),
        "acosh" => Some(f64::acosh),
        "atanh" => Some(f64::atanh),
        "rad" => Some(|v| v * std::f64::consts::PI / 180.0),
        "deg" => Some(|v| v * 180.0 / std::f64::consts::PI),
        "sgn" => Some(|v: f64| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        }),
        _ => None,
    };
    let mut names = NameCache::default();
    if let Some(f) = simple {
        return map_values(ev, &args[0], &|s| f(s.v));
    }
    let empty = || Arc::new(Labels::empty());
    match func {
        "time" => ev.range_eval(&[], &mut |_, ts| {
            Ok(vec![Sample {
                metric: empty(),
                t: ts,
                v: ts as f64 / 1000.0,
            }])
        }),
        "pi" => ev.range_eval(&[], &mut |_, ts| {
            Ok(vec![Sample {
                metric: empty(),
                t: ts,
                v: std::f64::consts::PI,
            }])
        }),
        "vector" => ev.range_eval(&[&args[0]], &mut |v, ts| {
            Ok(vec![Sample {
                metric: empty(),
                t: ts,
                v: scalar_of(&v[0]),
            }])
        }),
        "scalar" => ev.range_eval(&[&args[0]], &mut |v, ts| {
            let value = if v[0].len() == 1 { v[0][0].v } else { f64::NAN };
            Ok(vec![Sample {
                metric: empty(),
                t: ts,
                v: value,
            }])
        }),
        "timestamp" => {
            if let Expr::Vector(sel) = &args[0] {
                return ev.range_eval(&[], &mut |_, ts| {
                    Ok(ev
                        .selector_samples(sel, ts)
                        .into_iter()
                        .map(|s| Sample {
                            metric: names.drop(&s.metric),
                            t: ts,
                            v: s.t as f64 / 1000.0,
                        })
                        .collect())
                });
            }
            map_values(ev, &args[0], &|s| s.t as f64 / 1000.0)
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let refs: Vec<&Expr> = args.iter().collect();
            ev.range_eval(&refs, &mut |v, _| {
                let (lo, hi) = match func {
                    "clamp" => (scalar_of(&v[1]), scalar_of(&v[2])),
                    "clamp_min" => (scalar_of(&v[1]), f64::NAN),
                    _ => (f64::NAN, scalar_of(&v[1])),
                };
                if func == "clamp" && hi < lo {
                    return Ok(Vec::new());
                }
                Ok(v[0]
                    .iter()
                    .map(|s| {
                        let value = match func {
                            "clamp" => go_max(lo, go_min(hi, s.v)),
                            "clamp_min" => go_max(lo, s.v),
                            _ => go_min(hi, s.v),
                        };
                        Sample {
                            metric: names.drop(&s.metric),
                            t: s.t,
                            v: value,
                        }
                    })
                    .collect())
            })
        }
        "round" => {
            let refs: Vec<&Expr> = args.iter().collect();
            ev.range_eval(&refs, &mut |v, _| {
                let to_nearest = if v.len() >= 2 { scalar_of(&v[1]) } else { 1.0 };
                let inverse = 1.0 / to_nearest;
                Ok(v[0]
                    .iter()
                    .map(|s| Sample {
                        metric: names.drop(&s.metric),
                        t: s.t,
                        v: (s.v * inverse + 0.5).floor() / inverse,
                    })
                    .collect())
            })
        }
        "sort" | "sort_desc" => ev.range_eval(&[&args[0]], &mut |v, _| {
            let mut out = v[0].clone();
            // NaN last either way.
            out.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ if func == "sort" => a.v.total_cmp(&b.v),
                _ => b.v.total_cmp(&a.v),
            });
            Ok(out)
        }),
        "absent" => {
            let labels = match &args[0] {
                Expr::Vector(sel) => absent_labels(&sel.matchers),
                _ => Labels::empty(),
            };
            let metric = Arc::new(labels);
            ev.range_eval(&[&args[0]], &mut |v, ts| {
                if v[0].is_empty() {
                    Ok(vec![Sample {
                        metric: metric.clone(),
                        t: ts,
                        v: 1.0,
                    }])
                } else {
                    Ok(Vec::new())
                }
            })
        }
        "histogram_quantile" => ev.range_eval(&[&args[0], &args[1]], &mut |v, ts| {
            Ok(histogram_quantile(scalar_of(&v[0]), &v[1], ts))
        }),
        "label_replace" => label_replace(ev, args),
        "label_join" => label_join(ev, args),
        "days_in_month" | "day_of_month" | "day_of_week" | "day_of_year" | "hour" | "minute"
        | "month" | "year" => {
            let part = date_part(func);
            if args.is_empty() {
                return ev.range_eval(&[], &mut |_, ts| {
                    Ok(vec![Sample {
                        metric: empty(),
                        t: ts,
                        v: part(ts.div_euclid(1000)),
                    }])
                });
            }
            map_values(ev, &args[0], &|s| part(go_int64(s.v)))
        }
        other => Err(PromError::bad_data(format!(
            "function \"{other}\" is not supported"
        ))),
    }
}

/// Go's `int64(f)` on amd64: truncation, and the smallest int64 for what
/// does not fit.
fn go_int64(f: f64) -> i64 {
    // 2^63: the first float past i64::MAX.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f.is_nan() || !(-LIMIT..LIMIT).contains(&f) {
        i64::MIN
    } else {
        f as i64
    }
}

/// Go's `math.Max`: NaN wins.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN wins.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn date_part(func: &str) -> fn(i64) -> f64 {
    fn at(secs: i64) -> Option<DateTime<chrono::Utc>> {
        DateTime::from_timestamp(secs, 0)
    }
    match func {
        "days_in_month" => |s| {
            at(s).map_or(f64::NAN, |t| {
                let (y, m) = (t.year(), t.month());
                let next = if m == 12 {
                    chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
                } else {
                    chrono::NaiveDate::from_ymd_opt(y, m + 1, 1)
                };
                let first = chrono::NaiveDate::from_ymd_opt(y, m, 1);
                match (first, next) {
                    (Some(a), Some(b)) => (b - a).num_days() as f64,
                    _ => f64::NAN,
                }
            })
        },
        "day_of_month" => |s| at(s).map_or(f64::NAN, |t| t.day() as f64),
        "day_of_week" => |s| at(s).map_or(f64::NAN, |t| t.weekday().num_days_from_sunday() as f64),
        "day_of_year" => |s| at(s).map_or(f64::NAN, |t| t.ordinal() as f64),
        "hour" => |s| at(s).map_or(f64::NAN, |t| t.hour() as f64),
        "minute" => |s| at(s).map_or(f64::NAN, |t| t.minute() as f64),
        "month" => |s| at(s).map_or(f64::NAN, |t| t.month() as f64),
        _ => |s| at(s).map_or(f64::NAN, |t| t.year() as f64),
    }
}

/// The samples of `arg` without `__name__`, each value given by `f`
/// (the math, date and `timestamp` functions).
fn map_values(
    ev: &Evaluator<'_>,
    arg: &Expr,
    f: &dyn Fn(&Sample) -> f64,
) -> Result<Mat, PromError> {
    let mut names = NameCache::default();
    ev.range_eval(&[arg], &mut |v, _| {
        Ok(v[0]
            .iter()
            .map(|s| Sample {
                metric: names.drop(&s.metric),
                t: s.t,
                v: f(s),
            })
            .collect())
    })
}

/// Label sets without `__name__`, worked out once per series.
#[derive(Default)]
struct NameCache(HashMap<usize, Metric>);

impl NameCache {
    fn drop(&mut self, m: &Metric) -> Metric {
        if !m.has_name() {
            return m.clone();
        }
        self.0
            .entry(Arc::as_ptr(m) as usize)
            .or_insert_with(|| Arc::new(m.drop_name()))
            .clone()
    }
}

fn label_replace(ev: &Evaluator<'_>, args: &[Expr]) -> Result<Mat, PromError> {
    let dst = string_arg(args, 1)?;
    let repl = string_arg(args, 2)?;
    let src = string_arg(args, 3)?;
    let re_text = string_arg(args, 4)?;
    let re = Regex::new(&format!("^(?:{re_text})$")).map_err(|_| {
        PromError::execution(format!(
            "invalid regular expression in label_replace(): {re_text}"
        ))
    })?;
    if !valid_label_name(dst) {
        return Err(PromError::execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    relabel(ev, &args[0], &|m| match re.captures(m.get(src)) {
        None => m.clone(),
        Some(caps) => {
            let mut res = String::new();
            caps.expand(repl, &mut res);
            Arc::new(m.with(dst, &res))
        }
    })
}

/// The samples of `arg` with the label sets `f` gives, worked out once per
/// series (label_replace, label_join).
fn relabel(
    ev: &Evaluator<'_>,
    arg: &Expr,
    f: &dyn Fn(&Metric) -> Metric,
) -> Result<Mat, PromError> {
    let mut cache: HashMap<usize, Metric> = HashMap::new();
    ev.range_eval(&[arg], &mut |v, _| {
        Ok(v[0]
            .iter()
            .map(|s| Sample {
                metric: cache
                    .entry(Arc::as_ptr(&s.metric) as usize)
                    .or_insert_with(|| f(&s.metric))
                    .clone(),
                t: s.t,
                v: s.v,
            })
            .collect())
    })
}

fn label_join(ev: &Evaluator<'_>, args: &[Expr]) -> Result<Mat, PromError> {
    let dst = string_arg(args, 1)?;
    let sep = string_arg(args, 2)?;
    let mut srcs = Vec::new();
    for i in 3..args.len() {
        let src = string_arg(args, i)?;
        if !valid_label_name(src) {
            return Err(PromError::execution(format!(
                "invalid source label name in label_join(): {src}"
            )));
        }
        srcs.push(src);
    }
    if !valid_label_name(dst) {
        return Err(PromError::execution(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    relabel(ev, &args[0], &|m| {
        let joined: Vec<&str> = srcs.iter().map(|n| m.get(n)).collect();
        Arc::new(m.with(dst, &joined.join(sep)))
    })
}

/// A function of a range vector (argument `i`), for every series and step.
fn range_call(ev: &Evaluator<'_>, func: &str, args: &[Expr], i: usize) -> Result<Mat, PromError> {
    let arg = &args[i];
    // The scalar arguments, one value per step.
    let mut scalars = Vec::new();
    for (j, a) in args.iter().enumerate() {
        if j != i {
            scalars.push(ev.scalar_steps(a)?);
        }
    }
    let scalar = |k: usize, step: usize| scalars[k].get(step).copied().unwrap_or(f64::NAN);
    let keep_name = func == "last_over_time";
    let mat = match func {
        "rate" => ev.range_function(arg, keep_name, &mut |w, _| {
            Ok(extrapolated_rate(w, true, true))
        }),
        "increase" => ev.range_function(arg, keep_name, &mut |w, _| {
            Ok(extrapolated_rate(w, true, false))
        }),
        "delta" => ev.range_function(arg, keep_name, &mut |w, _| {
            Ok(extrapolated_rate(w, false, false))
        }),
        "irate" => ev.range_function(arg, keep_name, &mut |w, _| {
            Ok(instant_value(w.points, true))
        }),
        "idelta" => ev.range_function(arg, keep_name, &mut |w, _| {
            Ok(instant_value(w.points, false))
        }),
        "deriv" => ev.range_function(arg, keep_name, &mut |w, _| {
            if w.points.len() < 2 {
                return Ok(None);
            }
            Ok(Some(linear_regression(w.points, w.points[0].t).0))
        }),
        "predict_linear" => ev.range_function(arg, keep_name, &mut |w, step| {
            if w.points.len() < 2 {
                return Ok(None);
            }
            let (slope, intercept) = linear_regression(w.points, w.ts);
            Ok(Some(slope * scalar(0, step) + intercept))
        }),
        "holt_winters" => ev.range_function(arg, keep_name, &mut |w, step| {
            holt_winters(w.points, scalar(0, step), scalar(1, step))
        }),
        "quantile_over_time" => ev.range_function(arg, keep_name, &mut |w, step| {
            let mut values: Vec<f64> = w.points.iter().map(|p| p.v).collect();
            Ok(Some(quantile(scalar(0, step), &mut values)))
        }),
        "changes" => ev.range_function(arg, keep_name, &mut |w, _| {
            let mut n = 0;
            for pair in w.points.windows(2) {
                let (prev, cur) = (pair[0].v, pair[1].v);
                if cur != prev && !(cur.is_nan() && prev.is_nan()) {
                    n += 1;
                }
            }
            Ok(Some(n as f64))
        }),
        "resets" => ev.range_function(arg, keep_name, &mut |w, _| {
            Ok(Some(
                w.points.windows(2).filter(|p| p[1].v < p[0].v).count() as f64,
            ))
        }),
        "absent_over_time" => {
            let mat = ev.range_function(arg, keep_name, &mut |_, _| Ok(Some(1.0)))?;
            return absent_over_time(ev, arg, mat);
        }
        _ => {
            let f: fn(&[Point]) -> f64 = match func {
                "avg_over_time" => avg_over_time,
                "count_over_time" => |p| p.len() as f64,
                "last_over_time" => |p| p[p.len() - 1].v,
                "max_over_time" => |p| {
                    let mut max = p[0].v;
                    for x in p {
                        if x.v > max || max.is_nan() {
                            max = x.v;
                        }
                    }
                    max
                },
                "min_over_time" => |p| {
                    let mut min = p[0].v;
                    for x in p {
                        if x.v < min || min.is_nan() {
                            min = x.v;
                        }
                    }
                    min
                },
                "sum_over_time" => |p| {
                    let (mut sum, mut c) = (0.0, 0.0);
                    for x in p {
                        (sum, c) = kahan_sum_inc(x.v, sum, c);
                    }
                    if sum.is_infinite() { sum } else { sum + c }
                },
                "stddev_over_time" => |p| variance_over_time(p).sqrt(),
                "stdvar_over_time" => variance_over_time,
                "present_over_time" => |_| 1.0,
                other => {
                    return Err(PromError::bad_data(format!(
                        "function \"{other}\" is not supported"
                    )));
                }
            };
            ev.range_function(arg, keep_name, &mut |w, _| Ok(Some(f(w.points))))
        }
    }?;
    let mut seen = std::collections::HashSet::with_capacity(mat.len());
    if mat.iter().any(|s| !seen.insert(&*s.metric)) {
        return Err(PromError::execution(
            "vector cannot contain metrics with the same labelset",
        ));
    }
    Ok(mat)
}

fn absent_over_time(ev: &Evaluator<'_>, arg: &Expr, mat: Mat) -> Result<Mat, PromError> {
    let steps = ev.step_times()?;
    let found: BTreeSet<i64> = mat
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.t))
        .collect();
    if found.len() == steps.len() {
        return Ok(Vec::new());
    }
    let labels = match arg {
        Expr::Matrix(sel, _) => absent_labels(&sel.matchers),
        _ => Labels::empty(),
    };
    Ok(vec![Series {
        metric: Arc::new(labels),
        points: steps
            .into_iter()
            .filter(|t| !found.contains(t))
            .map(|t| Point { t, v: 1.0 })
            .collect(),
    }])
}

/// `extrapolatedRate` (rate, increase, delta).
fn extrapolated_rate(w: &Window<'_>, is_counter: bool, is_rate: bool) -> Option<f64> {
    let p = w.points;
    if p.len() < 2 {
        return None;
    }
    let range_start = w.maxt.saturating_sub(w.range);
    let range_end = w.maxt;
    let (first, last) = (p[0], p[p.len() - 1]);
    let mut result = last.v - first.v;
    if is_counter {
        let mut prev = first.v;
        for cur in &p[1..] {
            if cur.v < prev {
                result += prev;
            }
            prev = cur.v;
        }
    }
    let secs = |a: i64, b: i64| (i128::from(a) - i128::from(b)) as f64 / 1000.0;
    let mut duration_to_start = secs(first.t, range_start);
    let duration_to_end = secs(range_end, last.t);
    let sampled_interval = secs(last.t, first.t);
    let average_between = sampled_interval / (p.len() - 1) as f64;
    if is_counter && result > 0.0 && first.v >= 0.0 {
        let duration_to_zero = sampled_interval * (first.v / result);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    let threshold = average_between * 1.1;
    let mut extrapolate_to = sampled_interval;
    extrapolate_to += if duration_to_start < threshold {
        duration_to_start
    } else {
        average_between / 2.0
    };
    extrapolate_to += if duration_to_end < threshold {
        duration_to_end
    } else {
        average_between / 2.0
    };
    let mut factor = extrapolate_to / sampled_interval;
    if is_rate {
        factor /= w.range as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `instantValue` (irate, idelta).
fn instant_value(p: &[Point], is_rate: bool) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (last, prev) = (p[p.len() - 1], p[p.len() - 2]);
    let mut result = if is_rate && last.v < prev.v {
        last.v
    } else {
        last.v - prev.v
    };
    let interval = last.t.saturating_sub(prev.t);
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

fn holt_winters(p: &[Point], sf: f64, tf: f64) -> Result<Option<f64>, PromError> {
    if sf <= 0.0 || sf >= 1.0 || sf.is_nan() {
        return Err(PromError::execution(format!(
            "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
        )));
    }
    if tf <= 0.0 || tf >= 1.0 || tf.is_nan() {
        return Err(PromError::execution(format!(
            "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
        )));
    }
    if p.len() < 2 {
        return Ok(None);
    }
    let trend = |i: usize, s0: f64, s1: f64, b: f64| {
        if i == 0 {
            b
        } else {
            tf * (s1 - s0) + (1.0 - tf) * b
        }
    };
    let (mut s0, mut s1) = (0.0, p[0].v);
    let mut b = p[1].v - p[0].v;
    for (i, pt) in p.iter().enumerate().skip(1) {
        let x = sf * pt.v;
        b = trend(i - 1, s0, s1, b);
        let y = (1.0 - sf) * (s1 + b);
        (s0, s1) = (s1, x + y);
    }
    Ok(Some(s1))
}

/// `kahanSumInc`, with Neumaier's improvement.
fn kahan_sum_inc(inc: f64, sum: f64, mut c: f64) -> (f64, f64) {
    let t = sum + inc;
    if sum.abs() >= inc.abs() {
        c += (sum - t) + inc;
    } else {
        c += (inc - t) + sum;
    }
    (t, c)
}

fn avg_over_time(p: &[Point]) -> f64 {
    let (mut mean, mut count, mut c) = (0.0f64, 0.0f64, 0.0f64);
    for x in p {
        count += 1.0;
        if mean.is_infinite() {
            if x.v.is_infinite() && (mean > 0.0) == (x.v > 0.0) {
                continue;
            }
            if !x.v.is_infinite() && !x.v.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_sum_inc(x.v / count - mean / count, mean, c);
    }
    if mean.is_infinite() { mean } else { mean + c }
}

fn variance_over_time(p: &[Point]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for x in p {
        count += 1.0;
        let delta = x.v - (mean + c_mean);
        (mean, c_mean) = kahan_sum_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_sum_inc(delta * (x.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// `linearRegression`: slope, and the intercept at `intercept_time`.
fn linear_regression(p: &[Point], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = p[0].v;
    let mut const_y = true;
    for (i, s) in p.iter().enumerate() {
        if const_y && i > 0 && s.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (i128::from(s.t) - i128::from(intercept_time)) as f64 / 1e3;
        (sum_x, c_x) = kahan_sum_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_sum_inc(s.v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_sum_inc(x * s.v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_sum_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sum_x, sum_y, sum_xy, sum_x2) = (sum_x + c_x, sum_y + c_y, sum_xy + c_xy, sum_x2 + c_x2);
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

/// `quantile` of 2.42 (values get sorted).
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts first, as vectorByValueHeap's Less puts it.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// `histogram_quantile` over classic buckets (`le`).
fn histogram_quantile(q: f64, vector: &[Sample], ts: i64) -> Vec<Sample> {
    let mut groups: HashMap<Labels, (Labels, Vec<(f64, f64)>)> = HashMap::new();
    let mut order: Vec<Labels> = Vec::new();
    for s in vector {
        let Some(upper) = parse_go_float(s.metric.get(BUCKET)) else {
            continue;
        };
        let sig = s.metric.without(&[BUCKET.to_string()]);
        let entry = groups.entry(sig.clone()).or_insert_with(|| {
            order.push(sig.clone());
            (
                s.metric
                    .without(&[METRIC_NAME.to_string(), BUCKET.to_string()]),
                Vec::new(),
            )
        });
        entry.1.push((upper, s.v));
    }
    order
        .into_iter()
        .filter_map(|k| groups.remove(&k))
        .map(|(labels, mut buckets)| Sample {
            metric: Arc::new(labels),
            t: ts,
            v: bucket_quantile(q, &mut buckets),
        })
        .collect()
}

/// `strconv.ParseFloat` for bucket bounds.
fn parse_go_float(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    s.parse::<f64>().ok()
}

/// `bucketQuantile`: buckets are (upper bound, cumulative count).
fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // coalesceBuckets
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(ub, count) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += count,
            _ => merged.push((ub, count)),
        }
    }
    // ensureMonotonic
    let mut max = merged[0].1;
    for b in merged.iter_mut().skip(1) {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    // sort.Search over all but the last bucket.
    let n = merged.len() - 1;
    let b = merged[..n].partition_point(|x| x.1 < rank);
    if b == n {
        return merged[n - 1].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_quantile_interpolates_as_prometheus() {
        // 10 observations <= 1, 20 <= 2, 20 in all.
        let mut b = vec![(2.0, 20.0), (1.0, 10.0), (f64::INFINITY, 20.0)];
        assert_eq!(bucket_quantile(0.5, &mut b), 1.0);
        let mut b = vec![(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)];
        assert_eq!(bucket_quantile(0.75, &mut b), 1.5);
        // Without +Inf there is no answer.
        let mut b = vec![(1.0, 10.0)];
        assert!(bucket_quantile(0.5, &mut b).is_nan());
        // Past the last finite bucket: its bound.
        let mut b = vec![(1.0, 10.0), (f64::INFINITY, 20.0)];
        assert_eq!(bucket_quantile(0.99, &mut b), 1.0);
    }

    #[test]
    fn quantile_weights_neighbours() {
        assert_eq!(quantile(0.5, &mut [1.0, 3.0]), 2.0);
        assert_eq!(quantile(0.0, &mut [3.0, 1.0]), 1.0);
        assert_eq!(quantile(2.0, &mut [1.0]), f64::INFINITY);
        assert!(quantile(0.5, &mut []).is_nan());
    }

    #[test]
    fn rate_extrapolates_to_the_window() {
        // A counter rising 1 per 10 s over a 60 s window sampled from
        // t=5 s to t=55 s: extrapolated to both ends, 0.1/s.
        let points: Vec<Point> = (0..6)
            .map(|i| Point {
                t: 5_000 + i * 10_000,
                v: (i + 1) as f64,
            })
            .collect();
        let w = Window {
            points: &points,
            ts: 60_000,
            maxt: 60_000,
            range: 60_000,
        };
        let r = extrapolated_rate(&w, true, true).unwrap();
        assert!((r - 0.1).abs() < 1e-12, "{r}");
        // From zero, the counter is not extrapolated below zero: the
        // window starts where the counter did (at t=5 s).
        let from_zero: Vec<Point> = points
            .iter()
            .map(|p| Point {
                t: p.t,
                v: p.v - 1.0,
            })
            .collect();
        let w = Window {
            points: &from_zero,
            ..w
        };
        let r = extrapolated_rate(&w, true, true).unwrap();
        assert!((r - 5.0 * 1.1 / 60.0).abs() < 1e-12, "{r}");
    }
}
