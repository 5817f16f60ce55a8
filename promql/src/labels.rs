//! A series' label set: name/value pairs sorted by name, `__name__` among
//! them, shared (`Arc`) between the samples of one series.

use std::fmt;
use std::sync::Arc;

/// The metric-name label.
pub const METRIC_NAME: &str = "__name__";

/// The bucket label of classic histograms.
pub const BUCKET: &str = "le";

/// A label set, sorted by name; no empty values (an empty value is no
/// label in Prometheus).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);

/// A label set as samples share it.
pub type Metric = Arc<Labels>;

impl Labels {
    /// From pairs in any order; empty values are dropped, and of two pairs
    /// with one name the last wins.
    pub fn new(mut pairs: Vec<(String, String)>) -> Self {
        pairs.retain(|(_, v)| !v.is_empty());
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for p in pairs {
            match out.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => out.push(p),
            }
        }
        Labels(out)
    }

    pub fn empty() -> Self {
        Labels(Vec::new())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `name`, `""` when there is none.
    pub fn get(&self, name: &str) -> &str {
        match self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => &self.0[i].1,
            Err(_) => "",
        }
    }

    /// With `name` set to `value` (removed when `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Self {
        let mut out = self.0.clone();
        match out.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                out.remove(i);
            }
            Ok(i) => out[i].1 = value.to_string(),
            Err(_) if value.is_empty() => {}
            Err(i) => out.insert(i, (name.to_string(), value.to_string())),
        }
        Labels(out)
    }

    /// Without the labels `names`.
    pub fn without(&self, names: &[String]) -> Self {
        Labels(
            self.0
                .iter()
                .filter(|(n, _)| !names.iter().any(|x| x == n))
                .cloned()
                .collect(),
        )
    }

    /// Only the labels `names`.
    pub fn keep(&self, names: &[String]) -> Self {
        Labels(
            self.0
                .iter()
                .filter(|(n, _)| names.iter().any(|x| x == n))
                .cloned()
                .collect(),
        )
    }

    /// Without `__name__`.
    pub fn drop_name(&self) -> Self {
        self.without(&[METRIC_NAME.to_string()])
    }

    pub fn has_name(&self) -> bool {
        !self.get(METRIC_NAME).is_empty()
    }

    /// The values of `names` (`on`) or of every label but `names` and
    /// `__name__` (`ignoring`), as one key: what vector matching and
    /// grouping compare.
    pub fn signature(&self, on: bool, names: &[String]) -> Vec<(String, String)> {
        if on {
            self.0
                .iter()
                .filter(|(n, _)| names.iter().any(|x| x == n))
                .cloned()
                .collect()
        } else {
            self.0
                .iter()
                .filter(|(n, _)| n != METRIC_NAME && !names.iter().any(|x| x == n))
                .cloned()
                .collect()
        }
    }

    /// The key of grouping by `names` (`by`), or by every label but
    /// `names` and `__name__` (`without`).
    pub fn grouping(&self, without: bool, names: &[String]) -> Vec<(String, String)> {
        self.signature(!without, names)
    }
}

impl fmt::Display for Labels {
    /// As Prometheus prints a label set: `{a="1", b="2"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn labels_sort_drop_empty_and_compare_as_prometheus() {
        let a = l(&[("job", "api"), ("__name__", "up"), ("x", "")]);
        assert_eq!(a.to_string(), r#"{__name__="up", job="api"}"#);
        assert_eq!(a.get("job"), "api");
        assert_eq!(a.get("x"), "");
        assert_eq!(a.drop_name().to_string(), r#"{job="api"}"#);
        assert_eq!(a.with("job", "").to_string(), r#"{__name__="up"}"#);
        // Compared pair by pair, then by length, as labels.Compare does.
        assert!(l(&[("a", "1")]) < l(&[("a", "1"), ("b", "0")]));
        assert!(l(&[("a", "2")]) > l(&[("a", "1"), ("b", "0")]));
        assert!(valid_label_name("_a1") && !valid_label_name("1a") && !valid_label_name(""));
    }
}
