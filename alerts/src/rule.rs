//! One rule's definition and the state machine of its instances.
//!
//! Each evaluation hands [`step`] the rows the query returned, as
//! [`Row`]s (labels and values), and the evaluation time. Instances move
//! inactive → pending → firing → resolved; [`step`] returns the transitions
//! and the instances that started firing or resolved, which become
//! notifications. Nothing here does I/O or reads a clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A rule as `CREATE ALERT` defined it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertDef {
    pub name: String,
    /// The SELECT whose rows are the rule's instances.
    pub query: String,
    pub every_ns: i64,
    /// How long an instance must be returned before it fires (`FOR`).
    #[serde(default)]
    pub for_ns: i64,
    /// How long a firing instance keeps firing once it is no longer returned.
    #[serde(default)]
    pub keep_firing_for_ns: i64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub webhook: String,
    /// Per delivery attempt.
    pub timeout_ms: u64,
    /// Attempts after the first.
    pub retries: u32,
    /// The query's time limit; the server's default when absent.
    #[serde(default)]
    pub query_timeout_ms: Option<u64>,
}

/// Where an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Inactive => "inactive",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
            Phase::Resolved => "resolved",
        }
    }
}

/// The labels of an instance: its non-numeric columns, as text.
pub type Labels = BTreeMap<String, String>;
/// The values of an instance: its numeric columns (NULL is `None`).
pub type Values = BTreeMap<String, Option<f64>>;

/// One row of a rule's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub labels: Labels,
    pub values: Values,
}

/// An instance that is pending or firing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub labels: Labels,
    pub values: Values,
    pub phase: Phase,
    /// First evaluation that returned it (this time round).
    pub active_since_ns: i64,
    /// When it started firing.
    #[serde(default)]
    pub fired_at_ns: Option<i64>,
    /// Last evaluation that returned it.
    pub last_seen_ns: i64,
}

/// A rule's evaluation state, persisted after every evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    #[serde(default)]
    pub paused: bool,
    /// When the next evaluation is due (clock time).
    pub next_run_ns: i64,
    #[serde(default)]
    pub last_eval_ns: Option<i64>,
    #[serde(default)]
    pub last_duration_us: u64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Evaluations in a row that failed with `last_error`.
    #[serde(default)]
    pub failures_in_a_row: u64,
    #[serde(default)]
    pub evaluations: u64,
    #[serde(default)]
    pub instances: Vec<Instance>,
}

impl RuleState {
    /// The rule's state as a whole: paused, or its most advanced instance.
    pub fn summary(&self) -> &'static str {
        if self.paused {
            "paused"
        } else if self.instances.iter().any(|i| i.phase == Phase::Firing) {
            "firing"
        } else if self.instances.iter().any(|i| i.phase == Phase::Pending) {
            "pending"
        } else {
            "inactive"
        }
    }

    pub fn count(&self, phase: Phase) -> u64 {
        self.instances.iter().filter(|i| i.phase == phase).count() as u64
    }
}

/// One instance moving from one phase to another.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub labels: Labels,
    pub values: Values,
    pub from: Phase,
    pub to: Phase,
}

/// What one evaluation changed.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    pub transitions: Vec<Transition>,
    /// Instances that started firing.
    pub fired: Vec<Instance>,
    /// Instances that resolved, with the time they did.
    pub resolved: Vec<(Instance, i64)>,
}

/// Applies one evaluation at `now` that returned `rows`. Rows must have
/// distinct labels (the caller checks).
pub fn step(def: &AlertDef, state: &mut RuleState, rows: Vec<Row>, now: i64) -> Step {
    let mut out = Step::default();
    let mut current: BTreeMap<Labels, Instance> = std::mem::take(&mut state.instances)
        .into_iter()
        .map(|i| (i.labels.clone(), i))
        .collect();
    let mut next = Vec::with_capacity(rows.len().max(current.len()));
    for row in rows {
        let mut inst = current.remove(&row.labels).unwrap_or_else(|| Instance {
            labels: row.labels.clone(),
            values: Values::new(),
            phase: Phase::Inactive,
            active_since_ns: now,
            fired_at_ns: None,
            last_seen_ns: now,
        });
        inst.values = row.values;
        inst.last_seen_ns = now;
        let from = inst.phase;
        if matches!(from, Phase::Inactive | Phase::Pending) {
            let to = if now - inst.active_since_ns >= def.for_ns {
                Phase::Firing
            } else {
                Phase::Pending
            };
            if to != from {
                out.transitions.push(Transition {
                    labels: inst.labels.clone(),
                    values: inst.values.clone(),
                    from,
                    to,
                });
                inst.phase = to;
            }
            if to == Phase::Firing {
                inst.fired_at_ns = Some(now);
                out.fired.push(inst.clone());
            }
        }
        next.push(inst);
    }
    // Instances the query no longer returns.
    for (_, inst) in current {
        match inst.phase {
            Phase::Firing if now - inst.last_seen_ns < def.keep_firing_for_ns => next.push(inst),
            Phase::Firing => {
                out.transitions.push(Transition {
                    labels: inst.labels.clone(),
                    values: inst.values.clone(),
                    from: Phase::Firing,
                    to: Phase::Resolved,
                });
                out.resolved.push((inst, now));
            }
            from => out.transitions.push(Transition {
                labels: inst.labels.clone(),
                values: inst.values.clone(),
                from,
                to: Phase::Inactive,
            }),
        }
    }
    next.sort_by(|a, b| a.labels.cmp(&b.labels));
    state.instances = next;
    out
}

/// The first slot of the schedule `scheduled + k * every` after `now`.
pub fn next_slot(scheduled: i64, every: i64, now: i64) -> i64 {
    if scheduled > now {
        return scheduled;
    }
    let every = every.max(1);
    scheduled + ((now - scheduled) / every + 1) * every
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000_000;

    fn def(for_min: i64, keep_min: i64) -> AlertDef {
        AlertDef {
            name: "a".into(),
            query: "SELECT 1".into(),
            every_ns: MIN,
            for_ns: for_min * MIN,
            keep_firing_for_ns: keep_min * MIN,
            labels: Labels::new(),
            annotations: Labels::new(),
            webhook: "http://127.0.0.1:1/".into(),
            timeout_ms: 1000,
            retries: 0,
            query_timeout_ms: None,
        }
    }

    fn row(host: &str, v: f64) -> Row {
        Row {
            labels: [("host".to_string(), host.to_string())].into(),
            values: [("v".to_string(), Some(v))].into(),
        }
    }

    fn moves(s: &Step) -> Vec<(Phase, Phase)> {
        s.transitions.iter().map(|t| (t.from, t.to)).collect()
    }

    #[test]
    fn pending_then_firing_then_resolved() {
        let d = def(3, 0);
        let mut st = RuleState::default();
        let s = step(&d, &mut st, vec![row("a", 95.0)], 0);
        assert_eq!(moves(&s), vec![(Phase::Inactive, Phase::Pending)]);
        assert_eq!(st.summary(), "pending");
        let s = step(&d, &mut st, vec![row("a", 96.0)], 2 * MIN);
        assert!(s.transitions.is_empty() && s.fired.is_empty());
        let s = step(&d, &mut st, vec![row("a", 97.0)], 3 * MIN);
        assert_eq!(moves(&s), vec![(Phase::Pending, Phase::Firing)]);
        assert_eq!(s.fired.len(), 1);
        assert_eq!(s.fired[0].values["v"], Some(97.0));
        assert_eq!(s.fired[0].fired_at_ns, Some(3 * MIN));
        // Still firing: nothing new to say.
        let s = step(&d, &mut st, vec![row("a", 98.0)], 4 * MIN);
        assert_eq!(s, Step::default());
        assert_eq!(st.summary(), "firing");
        let s = step(&d, &mut st, vec![], 5 * MIN);
        assert_eq!(moves(&s), vec![(Phase::Firing, Phase::Resolved)]);
        assert_eq!(s.resolved.len(), 1);
        assert_eq!(s.resolved[0].1, 5 * MIN);
        assert_eq!(st.summary(), "inactive");
        assert!(st.instances.is_empty());
    }

    #[test]
    fn pending_that_stops_goes_back_to_inactive_without_notifying() {
        let d = def(3, 0);
        let mut st = RuleState::default();
        step(&d, &mut st, vec![row("a", 95.0)], 0);
        let s = step(&d, &mut st, vec![], MIN);
        assert_eq!(moves(&s), vec![(Phase::Pending, Phase::Inactive)]);
        assert!(s.fired.is_empty() && s.resolved.is_empty());
        // Coming back starts the FOR period again.
        step(&d, &mut st, vec![row("a", 95.0)], 2 * MIN);
        let s = step(&d, &mut st, vec![row("a", 95.0)], 4 * MIN);
        assert!(s.fired.is_empty());
        let s = step(&d, &mut st, vec![row("a", 95.0)], 5 * MIN);
        assert_eq!(s.fired.len(), 1);
    }

    #[test]
    fn without_for_an_instance_fires_at_once() {
        let d = def(0, 0);
        let mut st = RuleState::default();
        let s = step(&d, &mut st, vec![row("a", 1.0), row("b", 2.0)], 0);
        assert_eq!(
            moves(&s),
            vec![
                (Phase::Inactive, Phase::Firing),
                (Phase::Inactive, Phase::Firing)
            ]
        );
        assert_eq!(s.fired.len(), 2);
        // Instances are independent.
        let s = step(&d, &mut st, vec![row("b", 2.0)], MIN);
        assert_eq!(s.resolved.len(), 1);
        assert_eq!(s.resolved[0].0.labels["host"], "a");
        assert_eq!(st.count(Phase::Firing), 1);
    }

    #[test]
    fn keep_firing_for_holds_a_resolution_back() {
        let d = def(0, 2);
        let mut st = RuleState::default();
        step(&d, &mut st, vec![row("a", 1.0)], 0);
        assert!(step(&d, &mut st, vec![], MIN).resolved.is_empty());
        // Seen again within KEEP FIRING FOR: still the same firing alert.
        let s = step(&d, &mut st, vec![row("a", 1.0)], 2 * MIN);
        assert_eq!(s, Step::default());
        assert!(step(&d, &mut st, vec![], 3 * MIN).resolved.is_empty());
        let s = step(&d, &mut st, vec![], 4 * MIN);
        assert_eq!(s.resolved.len(), 1);
    }

    #[test]
    fn schedule_skips_missed_slots() {
        assert_eq!(next_slot(100, 10, 50), 100);
        assert_eq!(next_slot(100, 10, 100), 110);
        assert_eq!(next_slot(100, 10, 135), 140);
        assert_eq!(next_slot(100, 0, 100), 101);
    }
}
