//! Binary operators at one step: scalar/scalar, vector/scalar, and
//! vector/vector with `on`/`ignoring`, `group_left`/`group_right`, `bool`
//! and the set operators (`VectorBinop`, `VectorAnd`... of 2.42's engine).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::PromError;
use crate::eval::Sample;
use crate::ir::{BinOp, Card, Matching};
use crate::labels::{Labels, METRIC_NAME, Metric};

fn btos(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// `scalarBinop`.
pub(crate) fn scalar_op(op: BinOp, a: f64, b: f64) -> f64 {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Pow => a.powf(b),
        BinOp::Mod => a % b,
        BinOp::Atan2 => a.atan2(b),
        BinOp::Eq => btos(a == b),
        BinOp::Ne => btos(a != b),
        BinOp::Gt => btos(a > b),
        BinOp::Lt => btos(a < b),
        BinOp::Ge => btos(a >= b),
        BinOp::Le => btos(a <= b),
        BinOp::And | BinOp::Or | BinOp::Unless => f64::NAN,
    }
}

/// `vectorElemBinop`: the value, and whether the element is kept.
fn elem_op(op: BinOp, a: f64, b: f64) -> (f64, bool) {
    match op {
        BinOp::Eq => (a, a == b),
        BinOp::Ne => (a, a != b),
        BinOp::Gt => (a, a > b),
        BinOp::Lt => (a, a < b),
        BinOp::Ge => (a, a >= b),
        BinOp::Le => (a, a <= b),
        _ => (scalar_op(op, a, b), true),
    }
}

/// `VectorscalarBinop`; `swap` when the scalar is on the left.
pub(crate) fn vector_scalar(
    op: BinOp,
    vector: &[Sample],
    scalar: f64,
    swap: bool,
    return_bool: bool,
) -> Vec<Sample> {
    let mut out = Vec::with_capacity(vector.len());
    for s in vector {
        let (l, r) = if swap { (scalar, s.v) } else { (s.v, scalar) };
        let (mut value, mut keep) = elem_op(op, l, r);
        if op.is_comparison() && swap {
            value = r;
        }
        if return_bool {
            value = btos(keep);
            keep = true;
        }
        if keep {
            let metric = if op.drops_name() || return_bool {
                drop_name(&s.metric)
            } else {
                s.metric.clone()
            };
            out.push(Sample {
                metric,
                t: s.t,
                v: value,
            });
        }
    }
    out
}

fn drop_name(m: &Metric) -> Metric {
    if m.has_name() {
        Arc::new(m.drop_name())
    } else {
        m.clone()
    }
}

type Sig = Vec<(String, String)>;

/// Vector matching for one binary expression, with what it has worked
/// out at earlier steps (signatures and result label sets by series).
pub(crate) struct Matcher<'m> {
    m: &'m Matching,
    sigs: HashMap<usize, Arc<Sig>>,
    results: HashMap<(usize, usize), Metric>,
}

fn key(m: &Metric) -> usize {
    Arc::as_ptr(m) as usize
}

impl<'m> Matcher<'m> {
    pub(crate) fn new(m: &'m Matching) -> Self {
        Self {
            m,
            sigs: HashMap::new(),
            results: HashMap::new(),
        }
    }

    fn sig(&mut self, metric: &Metric) -> Arc<Sig> {
        let (on, labels) = (self.m.on, &self.m.labels);
        self.sigs
            .entry(key(metric))
            .or_insert_with(|| Arc::new(metric.signature(on, labels)))
            .clone()
    }

    /// `and`, `or`, `unless`.
    pub(crate) fn set_op(&mut self, op: BinOp, lhs: &[Sample], rhs: &[Sample]) -> Vec<Sample> {
        match op {
            BinOp::And => {
                if lhs.is_empty() || rhs.is_empty() {
                    return Vec::new();
                }
                let right: HashSet<Arc<Sig>> = rhs.iter().map(|s| self.sig(&s.metric)).collect();
                lhs.iter()
                    .filter(|s| right.contains(&self.sig(&s.metric)))
                    .cloned()
                    .collect()
            }
            BinOp::Or => {
                if lhs.is_empty() || rhs.is_empty() {
                    return lhs.iter().chain(rhs).cloned().collect();
                }
                let left: HashSet<Arc<Sig>> = lhs.iter().map(|s| self.sig(&s.metric)).collect();
                let mut out = lhs.to_vec();
                for s in rhs {
                    if !left.contains(&self.sig(&s.metric)) {
                        out.push(s.clone());
                    }
                }
                out
            }
            _ => {
                if lhs.is_empty() || rhs.is_empty() {
                    return lhs.to_vec();
                }
                let right: HashSet<Arc<Sig>> = rhs.iter().map(|s| self.sig(&s.metric)).collect();
                lhs.iter()
                    .filter(|s| !right.contains(&self.sig(&s.metric)))
                    .cloned()
                    .collect()
            }
        }
    }

    /// `VectorBinop`: arithmetic and comparisons between two vectors.
    pub(crate) fn vector_op(
        &mut self,
        op: BinOp,
        lhs: &[Sample],
        rhs: &[Sample],
        return_bool: bool,
    ) -> Result<Vec<Sample>, PromError> {
        if lhs.is_empty() || rhs.is_empty() {
            return Ok(Vec::new());
        }
        let card = self.m.card;
        let (lhs, rhs) = if card == Card::OneToMany {
            (rhs, lhs)
        } else {
            (lhs, rhs)
        };
        let mut right: HashMap<Arc<Sig>, &Sample> = HashMap::with_capacity(rhs.len());
        for rs in rhs {
            let sig = self.sig(&rs.metric);
            if let Some(dup) = right.get(&sig) {
                let side = if card == Card::OneToMany {
                    "left"
                } else {
                    "right"
                };
                let matched = Labels::new((*sig).clone());
                return Err(PromError::execution(format!(
                    "found duplicate series for the match group {matched} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    rs.metric, dup.metric
                )));
            }
            right.insert(sig, rs);
        }
        let mut matched: HashMap<Arc<Sig>, Option<HashSet<Metric>>> = HashMap::new();
        let mut out = Vec::new();
        for ls in lhs {
            let sig = self.sig(&ls.metric);
            let Some(rs) = right.get(&sig) else {
                continue;
            };
            let (vl, vr) = if card == Card::OneToMany {
                (rs.v, ls.v)
            } else {
                (ls.v, rs.v)
            };
            let (mut value, keep) = elem_op(op, vl, vr);
            if return_bool {
                value = btos(keep);
            } else if !keep {
                continue;
            }
            let mut metric = self.result_metric(op, &ls.metric, &rs.metric);
            if return_bool {
                metric = drop_name(&metric);
            }
            match matched.get_mut(&sig) {
                None => {
                    let set = (card != Card::OneToOne).then(|| HashSet::from([metric.clone()]));
                    matched.insert(sig, set);
                }
                Some(None) => {
                    return Err(PromError::execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    ));
                }
                Some(Some(set)) => {
                    if !set.insert(metric.clone()) {
                        return Err(PromError::execution(
                            "multiple matches for labels: grouping labels must ensure unique matches",
                        ));
                    }
                }
            }
            out.push(Sample {
                metric,
                t: ls.t,
                v: value,
            });
        }
        Ok(out)
    }

    /// `resultMetric`.
    fn result_metric(&mut self, op: BinOp, lhs: &Metric, rhs: &Metric) -> Metric {
        let k = (key(lhs), key(rhs));
        if let Some(m) = self.results.get(&k) {
            return m.clone();
        }
        let mut l: Labels = (**lhs).clone();
        if op.drops_name() {
            l = l.without(&[METRIC_NAME.to_string()]);
        }
        if self.m.card == Card::OneToOne {
            l = if self.m.on {
                l.keep(&self.m.labels)
            } else {
                l.without(&self.m.labels)
            };
        }
        for name in &self.m.include {
            l = l.with(name, rhs.get(name));
        }
        let m = Arc::new(l);
        self.results.insert(k, m.clone());
        m
    }
}
