//! Alert rules: SQL queries evaluated on a schedule, whose rows are alert
//! instances that go pending, fire and resolve, with webhook notifications.
//!
//! `CREATE ALERT` (parsed by `sextant-sql`) → [`Alerts::create`] plans the
//! query and stores the rule in the catalog → [`Alerts::run`], the
//! scheduler, starts each due rule's evaluation as its own task: the query
//! runs at the alert clock's time ([`Clock`]) under a timeout and the alert
//! memory pool → [`rule::step`] moves its instances → the new state, the
//! events and the notifications owed are committed in one catalog
//! transaction → the scheduler POSTs each notification ([`notify`]), one at
//! a time per rule and in order, retrying with backoff; every attempt is an
//! event. A restart loads rules, state and undelivered notifications back,
//! and a rule whose run fell due while the server was down runs once.

pub mod notify;
pub mod rule;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::DateTime;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use serde::{Deserialize, Serialize};
use sextant_catalog::{AlertEvent, Catalog, CatalogError, StoredAlert};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use rule::{AlertDef, Instance, Labels, Phase, Row, RuleState, Values};
pub use sextant_clock::Clock;

use notify::Notification;

/// What can go wrong with an alert statement.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The rule's query does not plan.
    #[error(transparent)]
    Query(#[from] DataFusionError),
    /// The statement layer refused the rule's query (not one SELECT, or
    /// it does not plan); its own error is inside.
    #[error(transparent)]
    Refused(Box<dyn std::error::Error + Send + Sync>),
}

/// Plans a rule's query, one SELECT, in the session of one evaluation. The
/// server hands in the statement layer's pipeline, so a rule reads SQL
/// exactly as a client's query does (`sextant_sql::plan_select`).
pub trait RulePlanner: Send + Sync {
    fn plan<'a>(
        &'a self,
        session: SessionState,
        query: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<LogicalPlan, AlertError>> + Send + 'a>,
    >;
}

/// One entry of `system.alert_events`, as stored in the catalog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `transition`, `notification`, `error`, `paused` or `resumed`.
    pub event: String,
    /// A transition's instance labels, or a notification's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Values>,
    /// A notification's `firing` or `resolved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// `delivered`, `failed` (to be retried) or `gave_up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An event with the rule it is about and its time.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub alert: String,
    pub time_ns: i64,
    pub event: Event,
}

/// A rule as `system.alerts` shows it.
#[derive(Debug, Clone)]
pub struct AlertInfo {
    pub def: AlertDef,
    pub state: RuleState,
    pub created_at_ns: i64,
    pub running: bool,
    /// Notifications not yet delivered.
    pub queued: u64,
}

struct Rule {
    def: AlertDef,
    state: RuleState,
    created_at_ns: i64,
    running: bool,
}

struct Queued {
    alert: String,
    n: Notification,
    in_flight: bool,
}

/// The alert rules of a server and their scheduler.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Alerts")
    }
}

struct Inner {
    catalog: Arc<dyn Catalog>,
    /// This node's id: the holder of the `alerts` lease when it evaluates.
    node: std::sync::OnceLock<String>,
    /// Whether this node holds the `alerts` lease: only then are rules
    /// evaluated and notifications sent here.
    held: AtomicBool,
    /// Whether this node may evaluate at all (`--mode` with `compact`).
    evaluates: AtomicBool,
    /// The session every evaluation starts from (its own memory pool).
    session: SessionState,
    planner: Arc<dyn RulePlanner>,
    clock: Clock,
    client: reqwest::Client,
    query_timeout: Duration,
    rules: Mutex<BTreeMap<String, Rule>>,
    /// Undelivered notifications by outbox id (oldest first).
    outbox: Mutex<BTreeMap<i64, Queued>>,
    wake: Notify,
    /// Evaluations and deliveries running.
    busy: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn corrupt(what: &str, e: serde_json::Error) -> AlertError {
    AlertError::Catalog(CatalogError::Corrupt(format!("{what}: {e}")))
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The rules and undelivered notifications `catalog` holds.
type Loaded = (BTreeMap<String, Rule>, BTreeMap<i64, Queued>);

fn load(catalog: &dyn Catalog) -> Result<Loaded, AlertError> {
    let mut rules = BTreeMap::new();
    for stored in catalog.alerts()? {
        let def: AlertDef = serde_json::from_str(&stored.definition)
            .map_err(|e| corrupt(&format!("alert {}", stored.name), e))?;
        let state: RuleState = serde_json::from_str(&stored.state)
            .map_err(|e| corrupt(&format!("alert {}", stored.name), e))?;
        rules.insert(
            stored.name.clone(),
            Rule {
                def,
                state,
                created_at_ns: stored.created_at_ns,
                running: false,
            },
        );
    }
    let mut outbox = BTreeMap::new();
    for d in catalog.deliveries()? {
        let n: Notification = serde_json::from_str(&d.body)
            .map_err(|e| corrupt(&format!("notification {} of {}", d.id, d.alert), e))?;
        outbox.insert(
            d.id,
            Queued {
                alert: d.alert,
                n,
                in_flight: false,
            },
        );
    }
    Ok((rules, outbox))
}

impl Alerts {
    /// Loads the rules and undelivered notifications from `catalog`.
    /// Evaluations run in `session` (with `now()` set to the alert clock's
    /// time), their queries planned by `planner`, each bounded by
    /// `query_timeout` unless its rule says otherwise.
    pub fn open(
        catalog: Arc<dyn Catalog>,
        session: SessionState,
        planner: Arc<dyn RulePlanner>,
        clock: Clock,
        query_timeout: Duration,
    ) -> Result<Self, AlertError> {
        let (rules, outbox) = load(catalog.as_ref())?;
        // A manual clock never goes back behind what the rules have seen
        // (their evaluations and events), restarts included.
        if clock.is_manual() {
            let last_event = catalog.alert_events(1)?.pop().map(|e| e.time_ns);
            let last_eval = rules.values().filter_map(|r| r.state.last_eval_ns).max();
            if let Some(seen) = last_event.max(last_eval) {
                clock.set(seen);
            }
        }
        if !rules.is_empty() {
            info!(
                rules = rules.len(),
                undelivered = outbox.len(),
                "alert rules loaded"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                catalog,
                node: std::sync::OnceLock::new(),
                held: AtomicBool::new(false),
                evaluates: AtomicBool::new(true),
                session,
                planner,
                clock,
                client: reqwest::Client::new(),
                query_timeout,
                rules: Mutex::new(rules),
                outbox: Mutex::new(outbox),
                wake: Notify::new(),
                busy: AtomicUsize::new(0),
            }),
        })
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The rules as the node `id` runs them: it evaluates them while it
    /// holds the catalog's `alerts` lease. Before the scheduler starts.
    /// Takes the lease now if it is free, so that rules due at start do
    /// not wait for the scheduler's first renewal.
    /// A node that does not `evaluate` (its `--mode` has no `compact`)
    /// never takes the lease.
    pub fn for_node(self, id: &str, evaluate: bool) -> Self {
        let _ = self.inner.node.set(id.to_string());
        self.inner.evaluates.store(evaluate, Ordering::SeqCst);
        if !evaluate {
            return self;
        }
        let now = self.inner.clock.now_ns();
        match self
            .inner
            .catalog
            .hold_lease("alerts", id, now, LEASE.as_nanos() as i64)
        {
            Ok(held) => {
                self.inner.held.store(held, Ordering::SeqCst);
                if held {
                    info!(node = %id, "alerts lease taken: this node evaluates the rules");
                }
            }
            Err(e) => warn!(error = %e, "cannot take the alerts lease; the scheduler tries again"),
        }
        self
    }

    /// Takes in the rules another node created, dropped, paused or resumed
    /// (a shared catalog). A node that does not hold the lease takes everything
    /// (states and queued notifications too), so that it starts from the
    /// holder's state if it takes over.
    pub fn sync(&self) -> Result<(), AlertError> {
        let inner = &self.inner;
        let (rules, outbox) = load(inner.catalog.as_ref())?;
        if !inner.held.load(Ordering::SeqCst) && inner.busy.load(Ordering::SeqCst) == 0 {
            *lock(&inner.rules) = rules;
            *lock(&inner.outbox) = outbox;
            return Ok(());
        }
        let mut mine = lock(&inner.rules);
        mine.retain(|name, _| rules.contains_key(name));
        for (name, rule) in rules {
            match mine.get_mut(&name) {
                // Paused or resumed on another node: that decision stands.
                Some(local) if local.state.paused != rule.state.paused => {
                    local.state.paused = rule.state.paused;
                    local.state.next_run_ns = rule.state.next_run_ns;
                }
                Some(_) => {}
                None => {
                    mine.insert(name, rule);
                }
            }
        }
        drop(mine);
        inner.wake.notify_one();
        Ok(())
    }

    /// Adds a rule after checking that its query plans; it is first
    /// evaluated at once. Returns false if `if_not_exists` and the name is
    /// taken.
    pub async fn create(&self, def: AlertDef, if_not_exists: bool) -> Result<bool, AlertError> {
        if lock(&self.inner.rules).contains_key(&def.name) {
            if if_not_exists {
                return Ok(false);
            }
            return Err(CatalogError::AlertExists(def.name).into());
        }
        self.inner.check(&def.query).await?;
        let now = self.inner.clock.now_ns();
        let state = RuleState {
            next_run_ns: now,
            ..RuleState::default()
        };
        let created_at_ns = self.inner.clock.now_ns();
        let mut rules = lock(&self.inner.rules);
        match self.inner.catalog.create_alert(&StoredAlert {
            name: def.name.clone(),
            definition: to_json(&def),
            state: to_json(&state),
            created_at_ns,
        }) {
            Ok(()) => {}
            Err(CatalogError::AlertExists(_)) if if_not_exists => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        info!(alert = %def.name, "alert rule created");
        rules.insert(
            def.name.clone(),
            Rule {
                def,
                state,
                created_at_ns,
                running: false,
            },
        );
        drop(rules);
        self.inner.wake.notify_one();
        Ok(true)
    }

    /// Removes a rule and its undelivered notifications; its events stay.
    pub fn drop_rule(&self, name: &str, if_exists: bool) -> Result<(), AlertError> {
        let mut rules = lock(&self.inner.rules);
        if !rules.contains_key(name) {
            if if_exists {
                return Ok(());
            }
            return Err(CatalogError::AlertNotFound(name.to_string()).into());
        }
        self.inner.catalog.drop_alert(name)?;
        rules.remove(name);
        lock(&self.inner.outbox).retain(|_, q| q.alert != name || q.in_flight);
        info!(alert = %name, "alert rule dropped");
        Ok(())
    }

    /// `ALTER ALERT name PAUSE | RESUME`. A paused rule is not evaluated
    /// and its instances keep their state; a resumed one is evaluated at
    /// once.
    pub fn set_paused(&self, name: &str, paused: bool) -> Result<(), AlertError> {
        let mut rules = lock(&self.inner.rules);
        let rule = rules
            .get_mut(name)
            .ok_or_else(|| CatalogError::AlertNotFound(name.to_string()))?;
        if rule.state.paused == paused {
            return Ok(());
        }
        let mut state = rule.state.clone();
        state.paused = paused;
        if !paused {
            state.next_run_ns = self.inner.clock.now_ns();
        }
        let event = Event {
            event: if paused { "paused" } else { "resumed" }.into(),
            ..Event::default()
        };
        self.inner.catalog.commit_alert(
            name,
            &to_json(&state),
            &[self.inner.event(name, &event)],
            &[],
        )?;
        rule.state = state;
        drop(rules);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Every rule, by name.
    pub fn list(&self) -> Vec<AlertInfo> {
        let mut queued: BTreeMap<String, u64> = BTreeMap::new();
        for q in lock(&self.inner.outbox).values() {
            *queued.entry(q.alert.clone()).or_default() += 1;
        }
        lock(&self.inner.rules)
            .values()
            .map(|r| AlertInfo {
                def: r.def.clone(),
                state: r.state.clone(),
                created_at_ns: r.created_at_ns,
                running: r.running,
                queued: queued.get(&r.def.name).copied().unwrap_or(0),
            })
            .collect()
    }

    /// The latest `limit` events, oldest first.
    pub fn events(&self, limit: usize) -> Result<Vec<EventRow>, AlertError> {
        self.inner
            .catalog
            .alert_events(limit)?
            .into_iter()
            .map(|e| {
                let event = serde_json::from_str(&e.body)
                    .map_err(|err| corrupt(&format!("event of {}", e.alert), err))?;
                Ok(EventRow {
                    alert: e.alert,
                    time_ns: e.time_ns,
                    event,
                })
            })
            .collect()
    }

    /// Returns once nothing is running and nothing is due at the clock's
    /// current time: after a manual clock moved, everything that time
    /// brought has been evaluated and delivered (or has failed).
    pub async fn settle(&self) {
        loop {
            if self.inner.busy.load(Ordering::SeqCst) == 0 && !self.inner.anything_due() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The scheduler: runs until `shutdown`, then waits (up to 10 s) for
    /// evaluations and deliveries under way.
    pub async fn run(self, shutdown: CancellationToken) {
        let inner = self.inner;
        let mut renew_at = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= renew_at {
                inner.renew_lease().await;
                renew_at = tokio::time::Instant::now() + LEASE_RENEWAL;
            }
            let woken = inner.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let next = if inner.held.load(Ordering::SeqCst) {
                inner.start_due()
            } else {
                i64::MAX
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = woken => {}
                _ = inner.clock.sleep_until(next) => {}
                _ = tokio::time::sleep_until(renew_at) => {}
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while inner.busy.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// How long the `alerts` lease lasts unless renewed, and how often its
/// holder renews it.
const LEASE: Duration = Duration::from_secs(15);
const LEASE_RENEWAL: Duration = Duration::from_secs(5);

impl Inner {
    /// Takes or renews the `alerts` lease. A node that takes it over reads
    /// the rules' states and queued notifications as the last holder left
    /// them.
    async fn renew_lease(self: &Arc<Self>) {
        if !self.evaluates.load(Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        let now = self.clock.now_ns();
        let held = tokio::task::spawn_blocking(move || {
            let node = me.node.get().map_or("", String::as_str);
            me.catalog
                .hold_lease("alerts", node, now, LEASE.as_nanos() as i64)
        })
        .await;
        let held = match held {
            Ok(Ok(held)) => held,
            Ok(Err(e)) => {
                warn!(error = %e, "cannot renew the alerts lease; not evaluating");
                false
            }
            Err(e) => {
                warn!(error = %e, "cannot renew the alerts lease; not evaluating");
                false
            }
        };
        let had = self.held.swap(held, Ordering::SeqCst);
        if held && !had {
            if self.busy.load(Ordering::SeqCst) == 0 {
                match load(self.catalog.as_ref()) {
                    Ok((rules, outbox)) => {
                        *lock(&self.rules) = rules;
                        *lock(&self.outbox) = outbox;
                    }
                    Err(e) => warn!(error = %e, "cannot read the alert rules"),
                }
            }
            info!(node = %self.node.get().map_or("", String::as_str), "alerts lease taken: this node evaluates the rules");
        } else if had && !held {
            info!("alerts lease lost: another node evaluates the rules");
        }
    }

    fn event(&self, alert: &str, event: &Event) -> AlertEvent {
        AlertEvent {
            alert: alert.to_string(),
            time_ns: self.clock.now_ns(),
            body: to_json(event),
        }
    }

    /// A session for one evaluation at `now_ns`: `now()` reads that time.
    fn session_at(&self, now_ns: i64) -> SessionState {
        let mut state = self.session.clone();
        state.execution_props_mut().query_execution_start_time =
            Some(DateTime::from_timestamp_nanos(now_ns));
        state
    }

    /// The query must be one SELECT that plans (logically and physically).
    async fn check(&self, query: &str) -> Result<(), AlertError> {
        let state = self.session_at(self.clock.now_ns());
        let plan = self.planner.plan(state.clone(), query).await?;
        state.create_physical_plan(&plan).await?;
        Ok(())
    }

    fn anything_due(&self) -> bool {
        if !self.held.load(Ordering::SeqCst) {
            return false;
        }
        let now = self.clock.now_ns();
        let rule_due = lock(&self.rules)
            .values()
            .any(|r| !r.state.paused && !r.running && r.state.next_run_ns <= now);
        rule_due || !self.due_deliveries(&lock(&self.outbox), now).is_empty()
    }

    /// The head of each rule's queue, if it is due and not being sent.
    fn due_deliveries(&self, outbox: &BTreeMap<i64, Queued>, now: i64) -> Vec<i64> {
        let mut heads = HashSet::new();
        outbox
            .iter()
            .filter(|(_, q)| heads.insert(q.alert.clone()))
            .filter(|(_, q)| !q.in_flight && q.n.next_attempt_ns <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Starts what is due; returns when the next thing falls due.
    fn start_due(self: &Arc<Self>) -> i64 {
        let now = self.clock.now_ns();
        let mut next = i64::MAX;
        {
            let mut rules = lock(&self.rules);
            for (name, rule) in rules.iter_mut() {
                if rule.state.paused || rule.running {
                    continue;
                }
                if rule.state.next_run_ns <= now {
                    rule.running = true;
                    self.busy.fetch_add(1, Ordering::SeqCst);
                    let span = tracing::info_span!("alert_evaluation", alert = %name);
                    tokio::spawn(tracing::Instrument::instrument(
                        self.clone().evaluate(name.clone()),
                        span,
                    ));
                } else {
                    next = next.min(rule.state.next_run_ns);
                }
            }
        }
        let mut outbox = lock(&self.outbox);
        for id in self.due_deliveries(&outbox, now) {
            if let Some(q) = outbox.get_mut(&id) {
                q.in_flight = true;
                self.busy.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(self.clone().deliver(id));
            }
        }
        let mut heads = HashSet::new();
        for q in outbox.values() {
            if heads.insert(q.alert.clone()) && !q.in_flight {
                next = next.min(q.n.next_attempt_ns);
            }
        }
        next
    }

    /// One evaluation of rule `name`.
    async fn evaluate(self: Arc<Self>, name: String) {
        let Some((def, mut state)) = lock(&self.rules)
            .get(&name)
            .map(|r| (r.def.clone(), r.state.clone()))
        else {
            self.busy.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        let now = self.clock.now_ns();
        let limit = def
            .query_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.query_timeout);
        let started = Instant::now();
        let result = match tokio::time::timeout(limit, self.rows(&def.query, now)).await {
            Ok(Ok(rows)) => distinct_labels(rows),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "the query did not finish within {} (the rule's query_timeout)",
                humantime::format_duration(limit)
            )),
        };
        state.last_eval_ns = Some(now);
        state.last_duration_us = started.elapsed().as_micros() as u64;
        state.evaluations += 1;
        // The next slot after this evaluation's start: a query that overran
        // the next slot is followed by one evaluation at once, not by one
        // per missed slot.
        state.next_run_ns = rule::next_slot(state.next_run_ns, def.every_ns, now);
        let mut events = vec![];
        let mut owed = vec![];
        sextant_metrics::metrics()
            .alert_evaluations
            .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
            .inc();
        match result {
            Ok(rows) => {
                if let Some(e) = state.last_error.take() {
                    info!(alert = %name, failures = state.failures_in_a_row, last_error = %e, "alert evaluation works again");
                }
                state.failures_in_a_row = 0;
                let step = rule::step(&def, &mut state, rows, now);
                for t in step.transitions {
                    events.push(Event {
                        event: "transition".into(),
                        labels: Some(serde_json::json!(t.labels)),
                        from: Some(t.from.as_str().into()),
                        to: Some(t.to.as_str().into()),
                        values: Some(t.values),
                        ..Event::default()
                    });
                }
                let fired: Vec<_> = step.fired.into_iter().map(|i| (i, None)).collect();
                let resolved: Vec<_> = step
                    .resolved
                    .into_iter()
                    .map(|(i, at)| (i, Some(at)))
                    .collect();
                for (status, instances) in [("firing", fired), ("resolved", resolved)] {
                    if instances.is_empty() {
                        continue;
                    }
                    owed.push(Notification {
                        url: def.webhook.clone(),
                        status: status.into(),
                        body: notify::body(&def, status, &instances).to_string(),
                        instances: instances.iter().map(|(i, _)| i.labels.clone()).collect(),
                        attempts: 0,
                        retries: def.retries,
                        timeout_ms: def.timeout_ms,
                        next_attempt_ns: now,
                    });
                }
            }
            Err(e) => {
                // One WARN per change of error, with how often the one
                // before it failed; the same error again is a debug line.
                if state.last_error.as_deref() != Some(e.as_str()) {
                    warn!(alert = %name, error = %e, failures_before = state.failures_in_a_row, "alert evaluation failed (logged again when the error changes)");
                    events.push(Event {
                        event: "error".into(),
                        error: Some(e.clone()),
                        ..Event::default()
                    });
                    state.failures_in_a_row = 0;
                } else {
                    debug!(alert = %name, error = %e, failures = state.failures_in_a_row + 1, "alert evaluation failed again");
                }
                state.failures_in_a_row += 1;
                state.last_error = Some(e);
            }
        }
        let mut rules = lock(&self.rules);
        let Some(rule) = rules.get_mut(&name) else {
            self.busy.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        // Paused or resumed while the query ran: that decision stands.
        if rule.state.paused != state.paused {
            state.paused = rule.state.paused;
            state.next_run_ns = rule.state.next_run_ns;
        }
        let events: Vec<AlertEvent> = events.iter().map(|e| self.event(&name, e)).collect();
        let bodies: Vec<String> = owed.iter().map(to_json).collect();
        match self
            .catalog
            .commit_alert(&name, &to_json(&state), &events, &bodies)
        {
            Ok(ids) => {
                rule.state = state;
                let mut outbox = lock(&self.outbox);
                for (id, n) in ids.into_iter().zip(owed) {
                    info!(alert = %name, status = %n.status, instances = n.instances.len(), "alert notification queued");
                    outbox.insert(
                        id,
                        Queued {
                            alert: name.clone(),
                            n,
                            in_flight: false,
                        },
                    );
                }
            }
            Err(e) => {
                warn!(alert = %name, error = %e, "cannot save alert evaluation");
                rule.state.last_error = Some(format!("cannot save the evaluation: {e}"));
                rule.state.next_run_ns = state.next_run_ns;
            }
        }
        rule.running = false;
        drop(rules);
        self.busy.fetch_sub(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The rows of `query` at `now_ns`, as labels and values.
    async fn rows(&self, query: &str, now_ns: i64) -> Result<Vec<Row>, AlertError> {
        let state = self.session_at(now_ns);
        let plan = self.planner.plan(state.clone(), query).await?;
        let batches = DataFrame::new(state, plan).collect().await?;
        let mut rows = vec![];
        for batch in &batches {
            rows_of(batch, &mut rows)?;
        }
        Ok(rows)
    }

    /// One attempt at the notification with outbox id `id`.
    async fn deliver(self: Arc<Self>, id: i64) {
        let Some((alert, mut n)) = lock(&self.outbox)
            .get(&id)
            .map(|q| (q.alert.clone(), q.n.clone()))
        else {
            self.busy.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        let result = notify::send(&self.client, &n).await;
        n.attempts += 1;
        let mut event = Event {
            event: "notification".into(),
            labels: Some(serde_json::json!(n.instances)),
            status: Some(n.status.clone()),
            attempt: Some(n.attempts),
            ..Event::default()
        };
        let done = match result {
            Ok(status) => {
                info!(%alert, status = %n.status, attempt = n.attempts, "alert notification delivered");
                event.outcome = Some("delivered".into());
                event.http_status = Some(status);
                true
            }
            Err((status, error)) => {
                let gave_up = n.attempts > n.retries;
                warn!(%alert, status = %n.status, attempt = n.attempts, %error, gave_up, "alert notification failed");
                event.outcome = Some(if gave_up { "gave_up" } else { "failed" }.into());
                event.http_status = status;
                event.error = Some(error);
                n.next_attempt_ns = self
                    .clock
                    .now_ns()
                    .saturating_add(notify::backoff(n.attempts).as_nanos() as i64);
                gave_up
            }
        };
        if let Some(outcome) = &event.outcome {
            sextant_metrics::metrics()
                .alert_notifications
                .with_label_values(&[outcome.as_str()])
                .inc();
        }
        let retry = (!done).then(|| to_json(&n));
        if let Err(e) =
            self.catalog
                .finish_delivery(id, &self.event(&alert, &event), retry.as_deref())
        {
            warn!(%alert, error = %e, "cannot record an alert notification attempt");
        }
        // A rule dropped meanwhile owes nothing more.
        let dropped = !lock(&self.rules).contains_key(&alert);
        {
            let mut outbox = lock(&self.outbox);
            if done || dropped {
                outbox.remove(&id);
            } else if let Some(q) = outbox.get_mut(&id) {
                q.n = n;
                q.in_flight = false;
            }
        }
        self.busy.fetch_sub(1, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// Rows must differ in their labels: two rows with the same labels would
/// be the same alert.
fn distinct_labels(rows: Vec<Row>) -> Result<Vec<Row>, String> {
    let mut seen = HashSet::new();
    for r in &rows {
        if !seen.insert(&r.labels) {
            return Err(format!(
                "the query returned two rows with the same labels {}: its non-numeric columns \
                 name an alert, so they must tell rows apart (GROUP BY them)",
                to_json(&r.labels)
            ));
        }
    }
    Ok(rows)
}

/// Numeric columns are values; every other column is a label, as text
/// (a NULL label is left out).
fn rows_of(batch: &RecordBatch, out: &mut Vec<Row>) -> Result<(), DataFusionError> {
    let schema = batch.schema();
    let options = FormatOptions::default();
    let mut values = vec![];
    let mut labels = vec![];
    for (field, col) in schema.fields().iter().zip(batch.columns()) {
        if field.data_type().is_numeric() {
            let f = arrow::compute::cast(col, &DataType::Float64)?;
            values.push((field.name().clone(), f));
        } else {
            labels.push((field.name().clone(), col.clone()));
        }
    }
    let formatters = labels
        .iter()
        .map(|(_, c)| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    for i in 0..batch.num_rows() {
        let mut row = Row {
            labels: Labels::new(),
            values: Values::new(),
        };
        for ((name, col), f) in labels.iter().zip(&formatters) {
            if col.is_valid(i) {
                row.labels.insert(name.clone(), f.value(i).to_string());
            }
        }
        for (name, col) in &values {
            let col = col.as_primitive::<Float64Type>();
            row.values
                .insert(name.clone(), col.is_valid(i).then(|| col.value(i)));
        }
        out.push(row);
    }
    Ok(())
}
