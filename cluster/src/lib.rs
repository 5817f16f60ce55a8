//! Several `sextant` nodes as one database: queries distributed over the
//! query nodes, and each ingest node's write buffer read from that node.
//!
//! The registry in the shared catalog (`system.nodes`) → [`Cluster::refresh`]
//! (every 2 s and on each catalog change) → which nodes ingest (their
//! buffers are part of every table) and which run query stages (the
//! workers). A query is planned as on one node; the table scan puts one
//! [`BufferScanExec`] per ingest node beside the Parquet scan, then
//! `datafusion-distributed` cuts the plan into stages run by the workers
//! ([`Cluster::distribute`]): the Parquet files spread over them, and a
//! stage that reads one node's buffer goes to that node when it is a
//! worker. A buffer scan reads its node over Arrow Flight ([`buffers`]),
//! or in place when the node is itself. Node-to-node calls (the workers'
//! gRPC service and the buffer tickets, both on the Flight SQL port) carry
//! the cluster secret ([`SECRET_HEADER`]); a call without it is refused.

mod buffers;
mod codec;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder};
use datafusion::logical_expr::{LogicalPlan, PlanType, StringifiedPlan, ToStringifiedPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::explain::ExplainExec;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::prelude::SessionContext;
use datafusion_distributed::{
    ChannelResolver, DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedExec,
    DistributedExt, NetworkBoundaryExt, RouteTasksEvent, RouteTasksEventResponse,
    SessionStateBuilderExt, Worker, WorkerChannel, WorkerQueryContext, WorkerResolver,
    display_plan_ascii, grpc,
};
use datafusion_distributed::{
    CoordinatorToWorkerMsg, ExecuteTaskRequest, GetWorkerInfoRequest, GetWorkerInfoResponse,
    SetPlanRequest, WorkerToCoordinatorMsg,
};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sextant_catalog::NodeInfo;
use sextant_storage::{BufferRequest, BufferScanExec, BufferSource, Engine};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tracing::warn;
use url::Url;

pub use buffers::{BUFFER_TICKET_TYPE, DELETES_TICKET_TYPE, answer_peer_ticket};

/// The metadata key that carries the cluster secret on node-to-node calls.
pub const SECRET_HEADER: &str = "x-sextant-cluster-secret";

/// How often the registry is read again without a catalog change.
const REFRESH: Duration = Duration::from_secs(2);

/// What a node does (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// Accepts writes, owns a WAL and a write buffer, persists.
    pub ingest: bool,
    /// Serves queries and runs distributed stages as a worker.
    pub query: bool,
    /// Runs the singleton jobs (compaction, retention, orphans, view
    /// refresh, alert evaluation) when it holds their lease.
    pub compact: bool,
}

impl Modes {
    /// Every mode: one node does everything.
    pub const ALL: Modes = Modes {
        ingest: true,
        query: true,
        compact: true,
    };

    /// Parses `all` or a comma list of `ingest`, `query`, `compact`.
    pub fn parse(text: &str) -> Result<Modes, String> {
        let mut modes = Modes {
            ingest: false,
            query: false,
            compact: false,
        };
        for word in text.split(',').map(str::trim) {
            match word {
                "all" => modes = Modes::ALL,
                "ingest" => modes.ingest = true,
                "query" => modes.query = true,
                "compact" => modes.compact = true,
                other => {
                    return Err(format!(
                        "unknown mode {other:?}: use all, or a comma list of ingest, query, compact"
                    ));
                }
            }
        }
        if !(modes.ingest || modes.query || modes.compact) {
            return Err("no mode given: use all, or a comma list of ingest, query, compact".into());
        }
        Ok(modes)
    }
}

impl std::fmt::Display for Modes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words: Vec<&str> = [
            (self.ingest, "ingest"),
            (self.query, "query"),
            (self.compact, "compact"),
        ]
        .into_iter()
        .filter_map(|(on, w)| on.then_some(w))
        .collect();
        write!(f, "{}", words.join(","))
    }
}

/// A registered node as the cluster uses it.
#[derive(Debug, Clone)]
struct Peer {
    node: NodeInfo,
    /// Its Flight SQL port as a URL, `https://` when the node has a
    /// certificate (workers and buffer tickets).
    flight: Option<String>,
}

impl Peer {
    fn has_mode(&self, mode: &str) -> bool {
        self.node.modes.split(',').any(|m| m.trim() == mode)
    }

    /// Runs query stages now: a query node, up.
    fn works(&self, now_ns: i64) -> bool {
        self.has_mode("query") && self.node.state(now_ns) == "up"
    }
}

/// The cluster as this node sees it; see the module.
pub struct Cluster {
    node_id: String,
    modes: Modes,
    secret: String,
    engine: Engine,
    peers: RwLock<BTreeMap<String, Peer>>,
    learned: std::sync::Mutex<BTreeMap<String, String>>,
    /// Trust for nodes that have certificates (`--cluster-ca`).
    tls: Option<ClientTlsConfig>,
    /// One connection per node, for its worker and its buffer.
    channels: std::sync::Mutex<BTreeMap<String, Channel>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("modes", &self.modes)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// This node (`node_id`, doing `modes`) in the cluster its engine's
    /// catalog registers; node-to-node calls carry `secret`, and trust
    /// nodes with certificates signed by `ca` (PEM).
    pub fn new(
        engine: Engine,
        node_id: String,
        modes: Modes,
        secret: String,
        ca: Option<&[u8]>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            modes,
            secret,
            engine,
            peers: RwLock::new(BTreeMap::new()),
            learned: Default::default(),
            tls: ca.map(|pem| ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))),
            channels: Default::default(),
        })
    }

    /// The connection to the node at `endpoint` (`http://` or `https://`
    /// and its Flight address), made once, lazily.
    fn channel(&self, endpoint: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(endpoint) {
            return Ok(c.clone());
        }
        let mut e = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| format!("{endpoint}: {e}"))?
            .connect_timeout(Duration::from_secs(5));
        if endpoint.starts_with("https://") {
            let tls = self.tls.clone().ok_or_else(|| {
                format!(
                    "{endpoint} has a certificate: give this node --cluster-ca with the \
                     certificate authority that signed it"
                )
            })?;
            e = e.tls_config(tls).map_err(|e| format!("{endpoint}: {e}"))?;
        }
        let c = e.connect_lazy();
        channels.insert(endpoint.to_string(), c.clone());
        Ok(c)
    }

    /// Reads the registry again. Blocking (the catalog is read).
    pub fn refresh(&self) -> sextant_catalog::Result<()> {
        let nodes = self.engine.catalog().nodes()?;
        let peers = nodes
            .into_iter()
            .map(|node: NodeInfo| {
                let addresses = serde_json::from_str::<serde_json::Value>(&node.addresses).ok();
                let flight = addresses.as_ref().and_then(|a| {
                    let address = a.get("flight")?.as_str()?;
                    let scheme = match a.get("tls").and_then(|t| t.as_bool()) {
                        Some(true) => "https",
                        _ => "http",
                    };
                    Some(format!("{scheme}://{address}"))
                });
                (node.id.clone(), Peer { node, flight })
            })
            .collect();
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = peers;
        Ok(())
    }

    /// Reads the registry every 2 s until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.refresh()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "reading the node registry failed"),
                Err(e) => warn!(error = %e, "reading the node registry failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Whether node-to-node metadata carries this cluster's secret.
    pub fn is_peer(&self, metadata: &tonic::metadata::MetadataMap) -> bool {
        metadata
            .get(SECRET_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| constant_time_eq(v.as_bytes(), self.secret.as_bytes()))
    }

    /// Flight endpoint of a registered node (or of one a plan named).
    fn address(&self, node: &str) -> Option<String> {
        let known = self
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .and_then(|p| p.flight.clone());
        known.or_else(|| {
            self.learned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(node)
                .cloned()
        })
    }

    /// "node b (host:port)" for a worker's URL.
    fn worker_name(&self, url: &Url) -> String {
        let address = host_port(url.as_str());
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        match peers
            .iter()
            .find(|(_, p)| p.flight.as_deref().map(host_port) == Some(address))
        {
            Some((id, _)) => format!("node {id} ({address})"),
            None => format!("the node at {address}"),
        }
    }

    /// Remembers a node's address that a plan carried.
    fn learn(&self, node: &str, address: &str) {
        self.learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string(), address.to_string());
    }

    fn worker_url(endpoint: &str) -> Option<Url> {
        Url::parse(endpoint).ok()
    }

    /// URLs of the nodes that run query stages and are up.
    fn workers(&self) -> Vec<Url> {
        let now = self.engine.now_ns();
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|p| p.works(now))
            .filter_map(|p| Self::worker_url(p.flight.as_deref()?))
            .collect()
    }

    /// Plans of `builder` distributed over the cluster's workers: the
    /// distributed planner (around the planner already set), this
    /// cluster's workers, its codec and its routing of buffer scans.
    pub fn distribute(self: &Arc<Self>, builder: SessionStateBuilder) -> SessionStateBuilder {
        let route = self.clone();
        let mut builder = builder.with_distributed_planner();
        let distributed = builder.query_planner().take();
        builder
            .with_query_planner(Arc::new(ExplainStages { inner: distributed }))
            .with_distributed_worker_resolver(Workers(self.clone()))
            .with_distributed_channel_resolver(Channels(self.clone()))
            .with_distributed_user_codec(codec::SextantCodec::new(self.clone()))
            .with_distributed_desired_task_count_handler(buffer_scan_task_count)
            .with_distributed_route_tasks_handler(move |ev: RouteTasksEvent| route.route(ev))
    }

    /// The worker gRPC service that runs other nodes' query stages here,
    /// with the functions and object stores of `ctx`; mount it behind
    /// [`Cluster::is_peer`].
    pub fn worker(self: &Arc<Self>, ctx: &SessionContext) -> Worker {
        let state = ctx.state();
        let scalars: Vec<_> = state.scalar_functions().values().cloned().collect();
        let aggregates: Vec<_> = state.aggregate_functions().values().cloned().collect();
        let windows: Vec<_> = state.window_functions().values().cloned().collect();
        let me = self.clone();
        Worker::from_session_builder(move |wctx: WorkerQueryContext| {
            let (scalars, aggregates, windows, me) = (
                scalars.clone(),
                aggregates.clone(),
                windows.clone(),
                me.clone(),
            );
            async move {
                Ok(wctx
                    .builder
                    .with_scalar_functions(scalars)
                    .with_aggregate_functions(aggregates)
                    .with_window_functions(windows)
                    .with_distributed_user_codec(codec::SextantCodec::new(me.clone()))
                    .with_distributed_channel_resolver(Channels(me))
                    .build())
            }
        })
        .with_runtime_env(ctx.runtime_env())
    }

    /// A stage that reads exactly one node's buffer and runs as one task
    /// goes to that node, if it runs stages; the rest is left to the
    /// planner's own routing.
    fn route(&self, ev: RouteTasksEvent) -> Option<DfResult<RouteTasksEventResponse>> {
        if ev.task_count != 1 {
            return None;
        }
        let mut nodes = vec![];
        buffer_nodes(ev.plan, &mut nodes);
        let [node] = nodes.as_slice() else {
            return None;
        };
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        let peer = peers.get(node)?;
        if !peer.works(self.engine.now_ns()) {
            return None;
        }
        let url = Self::worker_url(peer.flight.as_deref()?)?;
        Some(Ok(RouteTasksEventResponse::new(vec![url])))
    }
}

/// EXPLAIN of a query the cluster distributes shows its stages, where
/// DataFusion's EXPLAIN would show the plan before distribution; every
/// other plan is the distributed planner's.
#[derive(Debug)]
struct ExplainStages {
    inner: Option<Arc<dyn QueryPlanner + Send + Sync>>,
}

#[async_trait]
impl QueryPlanner for ExplainStages {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let inner = self
            .inner
            .as_ref()
            .ok_or_else(|| DataFusionError::Internal("no query planner to distribute".into()))?;
        if let LogicalPlan::Explain(explain) = logical_plan
            && !explain.verbose
        {
            let plan = inner.create_physical_plan(&explain.plan, session).await?;
            if plan.is::<DistributedExec>() {
                let mut plans = vec![explain.plan.to_stringified(PlanType::FinalLogicalPlan)];
                plans.push(StringifiedPlan::new(
                    PlanType::FinalPhysicalPlan,
                    display_plan_ascii(plan.as_ref(), false),
                ));
                return Ok(Arc::new(ExplainExec::new(
                    explain.schema.inner().clone(),
                    plans,
                    false,
                )));
            }
        }
        inner.create_physical_plan(logical_plan, session).await
    }
}

/// The nodes whose buffers the stage under `plan` reads (not past its
/// network boundaries, which are other stages).
fn buffer_nodes(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<String>) {
    if let Some(scan) = plan.downcast_ref::<BufferScanExec>() {
        out.push(scan.node().to_string());
        return;
    }
    if plan.as_ref().is_network_boundary() {
        return;
    }
    for child in plan.children() {
        buffer_nodes(child, out);
    }
}

/// A buffer scan is one task: it reads one node.
fn buffer_scan_task_count(
    ev: DesiredTaskCountEvent,
) -> Option<DfResult<DesiredTaskCountEventResponse>> {
    ev.plan.downcast_ref::<BufferScanExec>()?;
    Some(Ok(DesiredTaskCountEventResponse::maximum(1)))
}

impl BufferSource for Cluster {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn nodes(&self) -> Vec<String> {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        let mut nodes: Vec<String> = peers
            .iter()
            .filter(|(_, p)| !p.node.stopped && p.has_mode("ingest"))
            .map(|(id, _)| id.clone())
            .collect();
        // This node before it has read the registry once.
        if !peers.contains_key(&self.node_id) && self.modes.ingest {
            nodes.push(self.node_id.clone());
        }
        nodes
    }

    fn announce_deletes(&self, table: String) -> BoxFuture<'static, Result<(), String>> {
        let now = self.engine.now_ns();
        let targets: Vec<(String, String)> = self
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(id, p)| **id != self.node_id && p.node.state(now) == "up")
            .filter_map(|(id, p)| Some((id.clone(), p.flight.clone()?)))
            .collect();
        let calls: Vec<_> = targets
            .into_iter()
            .map(|(node, address)| {
                let channel = self.channel(&address);
                buffers::announce(node, address, channel, self.secret.clone(), table.clone())
            })
            .collect();
        Box::pin(async move {
            let failed: Vec<String> = futures::future::join_all(calls)
                .await
                .into_iter()
                .filter_map(|answer| answer.err())
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(format!("not every node took it in: {}", failed.join("; ")))
            }
        })
    }

    fn fetch(&self, node: &str, request: BufferRequest) -> DfResult<SendableRecordBatchStream> {
        if node == self.node_id {
            return buffers::local(&self.engine, request);
        }
        // A node that registered since the last read of the registry.
        let address = match self.address(node) {
            Some(a) => Some(a),
            None => {
                if let Err(e) = self.refresh() {
                    warn!(error = %e, "reading the node registry failed");
                }
                self.address(node)
            }
        };
        let address = address.ok_or_else(|| {
            DataFusionError::Execution(format!(
                "node {node} is not in the registry: its buffered rows of \"{}\" cannot be read",
                request.table
            ))
        })?;
        let channel = self.channel(&address);
        Ok(buffers::fetch(
            node.to_string(),
            host_port(&address).to_string(),
            channel,
            self.secret.clone(),
            request,
        ))
    }
}

/// The workers, as the registry has them.
struct Workers(Arc<Cluster>);

impl WorkerResolver for Workers {
    fn get_urls(&self) -> DfResult<Vec<Url>> {
        let urls = self.0.workers();
        if urls.is_empty() {
            // Before the first registry read: this node alone.
            return Ok(self
                .0
                .address(&self.0.node_id)
                .and_then(|a| Cluster::worker_url(&a))
                .into_iter()
                .collect());
        }
        Ok(urls)
    }
}

/// Connections to workers, reused, each call carrying the secret.
#[derive(Clone)]
struct Channels(Arc<Cluster>);

#[async_trait]
impl ChannelResolver for Channels {
    async fn get_worker_client_for_url(&self, url: &Url) -> DfResult<Box<dyn WorkerChannel>> {
        let who = self.0.worker_name(url);
        let endpoint = url.as_str().trim_end_matches('/');
        let channel = self
            .0
            .channel(endpoint)
            .map_err(|e| named(&who, DataFusionError::Configuration(e)))?;
        let secret = http::HeaderValue::try_from(self.0.secret.as_str())
            .map_err(|e| DataFusionError::Configuration(format!("cluster secret: {e}")))?;
        let with_secret = tower::ServiceExt::map_request(
            channel,
            move |mut request: http::Request<tonic::body::Body>| {
                request.headers_mut().insert(SECRET_HEADER, secret.clone());
                request
            },
        );
        Ok(Box::new(Named {
            who,
            inner: grpc::create_worker_client(grpc::BoxCloneSyncChannel::new(with_secret)),
        }))
    }
}

/// `e`, saying which worker it came from.
fn named(who: &str, e: DataFusionError) -> DataFusionError {
    e.context(format!("{who}, a worker of this query"))
}

/// A worker's channel whose errors name the worker (a node lost in the
/// middle of a query fails it with an error that says which).
struct Named {
    who: String,
    inner: Box<dyn WorkerChannel>,
}

#[async_trait]
impl WorkerChannel for Named {
    async fn coordinator_channel(
        &mut self,
        headers: http::HeaderMap,
        set_plan_request: SetPlanRequest,
        c2w_stream: BoxStream<'static, CoordinatorToWorkerMsg>,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> DfResult<BoxStream<'static, DfResult<WorkerToCoordinatorMsg>>> {
        let who = self.who.clone();
        let stream = self
            .inner
            .coordinator_channel(headers, set_plan_request, c2w_stream, metrics, task_ctx)
            .await
            .map_err(|e| named(&who, e))?;
        Ok(stream.map_err(move |e| named(&who, e)).boxed())
    }

    async fn execute_task(
        &mut self,
        headers: http::HeaderMap,
        request: ExecuteTaskRequest,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> DfResult<Vec<BoxStream<'static, DfResult<RecordBatch>>>> {
        let streams = self
            .inner
            .execute_task(headers, request, metrics, task_ctx)
            .await
            .map_err(|e| named(&self.who, e))?;
        Ok(streams
            .into_iter()
            .map(|s| {
                let who = self.who.clone();
                s.map_err(move |e| named(&who, e)).boxed()
            })
            .collect())
    }

    async fn get_worker_info(
        &mut self,
        request: GetWorkerInfoRequest,
    ) -> DfResult<GetWorkerInfoResponse> {
        self.inner
            .get_worker_info(request)
            .await
            .map_err(|e| named(&self.who, e))
    }
}

/// `host:port` of an endpoint URL.
fn host_port(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.trim_end_matches('/')
}

/// Compares two secrets in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        assert_eq!(Modes::parse("all").unwrap(), Modes::ALL);
        let m = Modes::parse("query, compact").unwrap();
        assert!(!m.ingest && m.query && m.compact);
        assert_eq!(m.to_string(), "query,compact");
        assert!(
            Modes::parse("ingest,reader")
                .unwrap_err()
                .contains("reader")
        );
        assert!(Modes::parse("").is_err());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
