//! Aggregation operators (`sum`, `avg`, ..., `topk`, `count_values`) with
//! `by`/`without`, step by step, as 2.42's `aggregation` computes them
//! (its heap included, so `topk` picks what Prometheus picks).

use std::collections::HashMap;
use std::sync::Arc;

use crate::PromError;
use crate::eval::{Evaluator, Sample, scalar_of};
use crate::ir::{AggOp, Expr};
use crate::labels::{Labels, METRIC_NAME, Metric, valid_label_name};

type Mat = Vec<crate::eval::Series>;

struct Group {
    labels: Metric,
    value: f64,
    mean: f64,
    count: usize,
    heap: Vec<Sample>,
}

pub(crate) fn eval(
    ev: &Evaluator<'_>,
    op: AggOp,
    expr: &Expr,
    param: Option<&Expr>,
    grouping: &[String],
    without: bool,
) -> Result<Mat, PromError> {
    if op == AggOp::CountValues {
        let Some(Expr::String(label)) = param else {
            return Err(PromError::bad_data("count_values needs a label name"));
        };
        return count_values(ev, expr, label, grouping, without);
    }
    let mut groups = Grouper {
        grouping,
        without,
        group_of: HashMap::new(),
        keys: HashMap::new(),
        labels: Vec::new(),
    };
    let has_param = param.is_some();
    let args: Vec<&Expr> = match param {
        Some(p) => vec![p, expr],
        None => vec![expr],
    };
    ev.range_eval(&args, &mut |v, _ts| {
        let (param, vec) = if has_param {
            (scalar_of(&v[0]), &v[1])
        } else {
            (f64::NAN, &v[0])
        };
        let mut k = 0usize;
        if matches!(op, AggOp::Topk | AggOp::Bottomk) {
            if !(param >= i64::MIN as f64 && param <= i64::MAX as f64) {
                return Err(PromError::execution(format!(
                    "Scalar value {} overflows int64",
                    crate::json::go_float(param, 'g')
                )));
            }
            let kk = param as i64;
            if kk < 1 {
                return Ok(Vec::new());
            }
            k = usize::try_from(kk).unwrap_or(usize::MAX);
        }
        let mut order: Vec<usize> = Vec::new();
        let mut acc: HashMap<usize, Group> = HashMap::new();
        for s in vec {
            let gi = groups.index(&s.metric);
            match acc.get_mut(&gi) {
                None => {
                    order.push(gi);
                    let mut g = Group {
                        labels: groups.labels[gi].clone(),
                        value: s.v,
                        mean: s.v,
                        count: 1,
                        heap: Vec::new(),
                    };
                    match op {
                        AggOp::Stddev | AggOp::Stdvar => g.value = 0.0,
                        AggOp::Topk | AggOp::Bottomk | AggOp::Quantile => g.heap.push(s.clone()),
                        AggOp::Group => g.value = 1.0,
                        _ => {}
                    }
                    acc.insert(gi, g);
                }
                Some(g) => accumulate(op, g, s, k),
            }
        }
        let mut out = Vec::with_capacity(order.len());
        for gi in order {
            let Some(mut g) = acc.remove(&gi) else {
                continue;
            };
            let value = match op {
                AggOp::Avg => g.mean,
                AggOp::Count => g.count as f64,
                AggOp::Stdvar => g.value / g.count as f64,
                AggOp::Stddev => (g.value / g.count as f64).sqrt(),
                AggOp::Topk | AggOp::Bottomk => {
                    let less = heap_less(op);
                    // Descending by the heap's order, as sort.Reverse does.
                    g.heap.sort_by(|a, b| {
                        if less(b, a) {
                            std::cmp::Ordering::Less
                        } else if less(a, b) {
                            std::cmp::Ordering::Greater
                        } else {
                            std::cmp::Ordering::Equal
                        }
                    });
                    for s in g.heap {
                        out.push(Sample {
                            metric: s.metric,
                            t: s.t,
                            v: s.v,
                        });
                    }
                    continue;
                }
                AggOp::Quantile => {
                    let mut values: Vec<f64> = g.heap.iter().map(|s| s.v).collect();
                    crate::functions::quantile(param, &mut values)
                }
                _ => g.value,
            };
            out.push(Sample {
                metric: g.labels,
                t: 0,
                v: value,
            });
        }
        Ok(out)
    })
}

/// The group of each series (by its label set's address) and each
/// group's labels, worked out once for all steps.
struct Grouper<'a> {
    grouping: &'a [String],
    without: bool,
    group_of: HashMap<usize, usize>,
    keys: HashMap<Vec<(String, String)>, usize>,
    labels: Vec<Metric>,
}

impl Grouper<'_> {
    fn index(&mut self, m: &Metric) -> usize {
        let ptr = Arc::as_ptr(m) as usize;
        if let Some(&i) = self.group_of.get(&ptr) {
            return i;
        }
        let key = m.grouping(self.without, self.grouping);
        let i = match self.keys.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.labels.len();
                self.labels
                    .push(Arc::new(group_labels(m, self.grouping, self.without)));
                self.keys.insert(key, i);
                i
            }
        };
        self.group_of.insert(ptr, i);
        i
    }
}

fn accumulate(op: AggOp, g: &mut Group, s: &Sample, k: usize) {
    let v = s.v;
    match op {
        AggOp::Sum => g.value += v,
        AggOp::Avg => {
            g.count += 1;
            if g.mean.is_infinite() {
                if v.is_infinite() && (g.mean > 0.0) == (v > 0.0) {
                    return;
                }
                if !v.is_infinite() && !v.is_nan() {
                    return;
                }
            }
            let n = g.count as f64;
            g.mean += v / n - g.mean / n;
        }
        AggOp::Group => {}
        AggOp::Max => {
            if g.value < v || g.value.is_nan() {
                g.value = v;
            }
        }
        AggOp::Min => {
            if g.value > v || g.value.is_nan() {
                g.value = v;
            }
        }
        AggOp::Count | AggOp::CountValues => g.count += 1,
        AggOp::Stddev | AggOp::Stdvar => {
            g.count += 1;
            let delta = v - g.mean;
            g.mean += delta / g.count as f64;
            g.value += delta * (v - g.mean);
        }
        AggOp::Topk | AggOp::Bottomk => {
            let less = heap_less(op);
            let top = &g.heap[0];
            let replaces = if op == AggOp::Topk {
                top.v < v || top.v.is_nan()
            } else {
                top.v > v || top.v.is_nan()
            };
            if g.heap.len() < k || replaces {
                if g.heap.len() == k {
                    if k == 1 {
                        g.heap[0] = s.clone();
                        return;
                    }
                    heap_pop(&mut g.heap, less);
                }
                g.heap.push(s.clone());
                let last = g.heap.len() - 1;
                heap_up(&mut g.heap, last, less);
            }
        }
        AggOp::Quantile => g.heap.push(s.clone()),
    }
}

/// The heap order of `vectorByValueHeap` (topk) and
/// `vectorByReverseValueHeap` (bottomk): NaN first.
fn heap_less(op: AggOp) -> fn(&Sample, &Sample) -> bool {
    if op == AggOp::Topk {
        |a, b| a.v.is_nan() || a.v < b.v
    } else {
        |a, b| a.v.is_nan() || a.v > b.v
    }
}

/// Go's `container/heap` `up`.
fn heap_up(h: &mut [Sample], mut j: usize, less: fn(&Sample, &Sample) -> bool) {
    while j > 0 {
        let i = (j - 1) / 2;
        if !less(&h[j], &h[i]) {
            break;
        }
        h.swap(i, j);
        j = i;
    }
}

/// Go's `container/heap` `down`.
fn heap_down(h: &mut [Sample], i0: usize, n: usize, less: fn(&Sample, &Sample) -> bool) {
    let mut i = i0;
    loop {
        let j1 = 2 * i + 1;
        if j1 >= n {
            break;
        }
        let mut j = j1;
        let j2 = j1 + 1;
        if j2 < n && less(&h[j2], &h[j1]) {
            j = j2;
        }
        if !less(&h[j], &h[i]) {
            break;
        }
        h.swap(i, j);
        i = j;
    }
}

/// Go's `heap.Pop`: the smallest goes.
fn heap_pop(h: &mut Vec<Sample>, less: fn(&Sample, &Sample) -> bool) {
    let n = h.len() - 1;
    h.swap(0, n);
    heap_down(h, 0, n, less);
    h.pop();
}

fn group_labels(m: &Labels, grouping: &[String], without: bool) -> Labels {
    if without {
        let mut drop = grouping.to_vec();
        drop.push(METRIC_NAME.to_string());
        m.without(&drop)
    } else if grouping.is_empty() {
        Labels::empty()
    } else {
        m.keep(grouping)
    }
}

fn count_values(
    ev: &Evaluator<'_>,
    expr: &Expr,
    label: &str,
    grouping: &[String],
    without: bool,
) -> Result<Mat, PromError> {
    if !valid_label_name(label) {
        return Err(PromError::execution(format!(
            "invalid label name {label:?}"
        )));
    }
    let mut grouping = grouping.to_vec();
    if !without {
        grouping.push(label.to_string());
        grouping.sort();
    }
    ev.range_eval(&[expr], &mut |v, _| {
        let mut order: Vec<Vec<(String, String)>> = Vec::new();
        let mut groups: HashMap<Vec<(String, String)>, (Labels, usize)> = HashMap::new();
        for s in &v[0] {
            let m = s.metric.with(label, &crate::json::go_float(s.v, 'f'));
            let key = m.grouping(without, &grouping);
            match groups.get_mut(&key) {
                Some(g) => g.1 += 1,
                None => {
                    order.push(key.clone());
                    groups.insert(key, (group_labels(&m, &grouping, without), 1));
                }
            }
        }
        Ok(order
            .into_iter()
            .filter_map(|k| groups.remove(&k))
            .map(|(l, n)| Sample {
                metric: Arc::new(l),
                t: 0,
                v: n as f64,
            })
            .collect())
    })
}
