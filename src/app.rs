//! Wiring for `navarch discovery`: load the sources, start the push loop (debounce → snapshot
//! → push), the ADS server and the debug HTTP servers, and keep them running: each long-lived
//! task runs under [`crate::supervise::supervise`], so a panic or early exit is
//! logged, counted, shown on `/ready` and the task restarted; a snapshot build that fails keeps
//! the last good snapshot and is retried on the next change.
//!
//! Holds no logic of its own beyond connecting the pieces; each piece lives in its module.

use std::collections::{BTreeMap, BTreeSet};
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::model::mesh::MeshConfig;
use crate::model::push_context::{ConfigStore, PushContext};
use crate::sources;
use crate::sources::objects::{MeshConfigMap, ObjectSet};
use crate::status::SyncStatusStore;
use crate::supervise::{AbortOnDrop, Health, RestartPolicy, join_error_cause, supervise};
use crate::xds::DiscoveryServer;
use crate::xds::debounce::{DebounceOptions, PushRequest, TriggerReason, debounce};
use tracing::Instrument;

/// Everything `discovery` needs to run.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub monitoring_addr: Option<SocketAddr>,
    /// The introspection page (`--ctrlz-addr`); off when `None`.
    pub ctrlz_addr: Option<SocketAddr>,
    pub config_dirs: Vec<PathBuf>,
    /// Watch a cluster: `Some(None)` for the in-cluster config, `Some(Some(path))` for a
    /// kubeconfig.
    pub cluster: Option<Option<PathBuf>>,
    pub mesh_config: Option<PathBuf>,
    pub system_namespace: String,
    /// The control plane revision (empty or `default` for the default one): names the mesh ConfigMap
    /// (`istio-<revision>`) and the Lease.
    pub revision: String,
    pub debounce: DebounceOptions,
    pub instance_id: String,
    /// Lease duration for singleton work in a cluster (istiod: 30s).
    pub lease_ttl: Duration,
    /// Limits of the ADS port (send timeout, streams per peer, request rate).
    pub ads_limits: crate::xds::grpc::AdsLimits,
    /// Where the admission webhooks (`/inject`, `/validate`) listen; served when a cluster is
    /// watched (they read the injector ConfigMap and set the webhooks' `caBundle`).
    pub webhook_addr: Option<SocketAddr>,
}

/// Addresses actually bound (useful when a port was 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub monitoring: Option<SocketAddr>,
    pub ctrlz: Option<SocketAddr>,
}

/// A running control plane.
pub struct Running {
    pub addrs: BoundAddrs,
    pub server: Arc<DiscoveryServer>,
    /// What failed and how often (what `/ready` and `/metrics` show).
    pub health: Arc<Health>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Waits until the control plane stops (it runs until an error or `shutdown`).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let task = std::mem::replace(&mut self.task, tokio::spawn(async { Ok(()) }));
        task.await.context("control plane task panicked")?
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

fn load_mesh(path: Option<&PathBuf>) -> anyhow::Result<Option<MeshConfig>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --mesh-config {}", path.display()))?;
    let mesh = MeshConfig::from_yaml(&text)
        .with_context(|| format!("--mesh-config {}: not a valid MeshConfig", path.display()))?;
    Ok(Some(mesh))
}

/// Which source an [`ObjectSet`] came from; each source's latest set is kept and merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceId {
    Files,
    Kubernetes,
}

/// Task names, as `/ready` and `navarch_task_failures_total{task=...}` show them.
pub mod task {
    pub const FILE_SOURCE: &str = "file-source";
    pub const KUBERNETES_SOURCE: &str = "kubernetes-source";
    pub const LEADER_ELECTION: &str = "leader-election";
    pub const PUSH_LOOP: &str = "push-loop";
    pub const DEBOUNCER: &str = "debouncer";
    /// Not a task: a snapshot build that failed (the debouncer goes on; the last good snapshot
    /// is served until a later change builds).
    pub const SNAPSHOT_BUILD: &str = "snapshot-build";
    pub const ADS_SERVER: &str = "ads-server";
    pub const HTTP_SERVER: &str = "http-server";
    pub const MONITORING_SERVER: &str = "monitoring-server";
    pub const CTRLZ_SERVER: &str = "ctrlz-server";
    pub const WEBHOOK_SERVER: &str = "webhook-server";
}

/// A listener shared by every incarnation of a supervised server, so that a restart serves the
/// same port without a window in which it is closed.
#[derive(Debug, Clone)]
pub struct SharedListener(pub Arc<TcpListener>);

impl SharedListener {
    /// Another handle on the same socket (a duplicated descriptor), for a server that takes its
    /// listener by value: when that incarnation ends, the socket stays bound.
    pub fn handle(&self) -> std::io::Result<TcpListener> {
        use std::os::fd::AsFd;
        let socket = std::net::TcpListener::from(self.0.as_fd().try_clone_to_owned()?);
        socket.set_nonblocking(true)?;
        TcpListener::from_std(socket)
    }
}

impl axum::serve::Listener for SharedListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                // Out of file descriptors and the like: wait instead of spinning.
                Err(error) => {
                    tracing::warn!(%error, "accepting an HTTP connection failed; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Starts the control plane and returns once every port is bound. With a cluster, proxies are
/// served once its first complete list has arrived (`/ready` says so).
pub async fn start(cfg: DiscoveryConfig) -> anyhow::Result<Running> {
    let mesh = load_mesh(cfg.mesh_config.as_ref())?;
    let mesh_map = MeshConfigMap::for_revision(&cfg.system_namespace, &cfg.revision);
    let bundled = cfg.config_dirs.is_empty() && cfg.cluster.is_none();
    let mut initial_sets = std::collections::BTreeMap::new();
    let mut file_seed = None;
    let initial = if bundled {
        tracing::info!(
            "no --config-dir and no cluster: serving the bundled sandbox config (testdata/sandbox: the seed's testns1/httpbin setup)"
        );
        sources::bundled::load_store(&cfg.system_namespace, mesh.as_ref())
    } else {
        if !cfg.config_dirs.is_empty() {
            let dirs = cfg.config_dirs.clone();
            let (set, cache) =
                tokio::task::spawn_blocking(move || sources::files::load_cached(&dirs))
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "reading the config dirs {}",
                            join_error_cause(e).unwrap_or_else(|| "was cancelled".into())
                        )
                    })??;
            initial_sets.insert(SourceId::Files, set);
            file_seed = Some(cache);
        }
        build_store(initial_sets.clone(), &mesh_map, mesh.as_ref())
    };
    let pilot_metrics = Arc::new(crate::metrics::PilotMetrics::default());
    let mut initially_reported = BTreeSet::new();
    log_errors(&initial, &mut initially_reported, &pilot_metrics);
    tracing::info!(
        services = initial.registry.services.len(),
        virtual_services = initial.virtual_services.len(),
        destination_rules = initial.destination_rules.len(),
        errors = initial.errors.len(),
        "initial config loaded"
    );
    let kube_client = match &cfg.cluster {
        Some(kubeconfig) => Some(
            sources::kube::client(kubeconfig.as_deref())
                .await
                .context("connecting to the cluster")?,
        ),
        None => None,
    };
    let status = Arc::new(SyncStatusStore::default());
    let first = tokio::task::spawn_blocking(move || PushContext::new(initial))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "building the first snapshot {}",
                join_error_cause(e).unwrap_or_else(|| "was cancelled".into())
            )
        })?;
    let mut server = DiscoveryServer::with_limits(
        first,
        status,
        cfg.instance_id.clone(),
        cfg.ads_limits.clone(),
    );
    server.metrics.pilot = pilot_metrics;
    let server = Arc::new(server);
    if kube_client.is_some() {
        server.set_ready(false);
    }

    let grpc_listener = crate::xds::grpc::bind(cfg.grpc_addr)
        .with_context(|| format!("binding --grpc-addr {}", cfg.grpc_addr))?;
    let http_listener = TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("binding --http-addr {}", cfg.http_addr))?;
    let monitoring_listener = match cfg.monitoring_addr {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding --monitoring-addr {a}"))?,
        ),
        None => None,
    };
    let ctrlz_listener = match cfg.ctrlz_addr {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding --ctrlz-addr {a}"))?,
        ),
        None => None,
    };
    let addrs = BoundAddrs {
        grpc: grpc_listener.local_addr()?,
        http: http_listener.local_addr()?,
        monitoring: monitoring_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?,
        ctrlz: ctrlz_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?,
    };
    tracing::info!(grpc = %addrs.grpc, http = %addrs.http, monitoring = ?addrs.monitoring, ctrlz = ?addrs.ctrlz, "listening");

    let health = Arc::new(Health::default());
    let policy = RestartPolicy::default();
    let (updates_tx, updates_rx) = mpsc::channel::<(SourceId, ObjectSet)>(16);
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let mut tasks: Vec<AbortOnDrop<()>> = Vec::new();
    let mut keep = |h: tokio::task::JoinHandle<()>| tasks.push(AbortOnDrop(h));

    if !cfg.config_dirs.is_empty() {
        let dirs = cfg.config_dirs.clone();
        let updates = updates_tx.clone();
        let mut restarted = false;
        // The first incarnation starts from the files already read.
        let seed = std::sync::Mutex::new(file_seed.take());
        keep(supervise(
            health.clone(),
            task::FILE_SOURCE,
            policy,
            move || {
                // A restart re-reads everything at once: changes made while it was down count.
                let send_first = std::mem::replace(&mut restarted, true);
                let dirs = dirs.clone();
                let seed = seed.lock().unwrap_or_else(|e| e.into_inner()).take();
                tagged(SourceId::Files, updates.clone(), move |tx| {
                    sources::files::watch(dirs, Duration::from_millis(20), tx, send_first, seed)
                })
            },
        ));
    }
    let (errors_tx, errors_rx) = watch::channel(Vec::new());
    let webhook_metrics = Arc::new(crate::webhook::WebhookMetrics::default());
    if let Some(client) = kube_client {
        if let Some(addr) = cfg.webhook_addr {
            let opts = crate::webhook::WebhookOptions {
                addr,
                system_namespace: cfg.system_namespace.clone(),
                revision: cfg.revision.clone(),
            };
            let (c, m) = (client.clone(), webhook_metrics.clone());
            keep(supervise(
                health.clone(),
                task::WEBHOOK_SERVER,
                policy,
                move || crate::webhook::serve(opts.clone(), c.clone(), m.clone()),
            ));
        }
        let leading = Arc::new(watch::Sender::new(false));
        let opts = sources::kube::KubeSourceOptions {
            mesh_map: mesh_map.clone(),
            settle: Duration::from_millis(20),
            status: Some(sources::kube::StatusOptions {
                errors: errors_rx,
                leading: leading.subscribe(),
            }),
            metrics: server.metrics.pilot.clone(),
        };
        let lease = sources::kube::leader::LeaseOptions {
            namespace: cfg.system_namespace.clone(),
            // istiod's per-revision election: each revision writes status for its own objects.
            name: crate::model::config::revision::named("istio-analyze-leader", &cfg.revision),
            identity: cfg.instance_id.clone(),
            ttl: cfg.lease_ttl,
        };
        let c = client.clone();
        keep(supervise(
            health.clone(),
            task::LEADER_ELECTION,
            policy,
            move || sources::kube::leader::run(c.clone(), lease.clone(), leading.clone()),
        ));
        let updates = updates_tx.clone();
        keep(supervise(
            health.clone(),
            task::KUBERNETES_SOURCE,
            policy,
            move || {
                let (client, opts) = (client.clone(), opts.clone());
                tagged(SourceId::Kubernetes, updates.clone(), move |tx| {
                    sources::kube::run(client, opts, tx)
                })
            },
        ));
    }
    drop(updates_tx);

    let shared = Arc::new(PushShared {
        server: server.clone(),
        health: health.clone(),
        sources: Mutex::new(PushSources {
            latest: initial_sets,
            mesh_map,
            mesh_override: mesh.clone(),
            expected: usize::from(!cfg.config_dirs.is_empty()) + usize::from(cfg.cluster.is_some()),
        }),
        reported: Mutex::new(initially_reported),
        dirty: AtomicBool::new(false),
        config_dirty: AtomicBool::new(true),
        errors_tx,
    });
    health.register(task::SNAPSHOT_BUILD);
    let (events_tx, events_rx) = mpsc::channel::<PushRequest>(1024);
    let updates_rx = Arc::new(tokio::sync::Mutex::new(updates_rx));
    let events_rx = Arc::new(tokio::sync::Mutex::new(events_rx));
    {
        let shared = shared.clone();
        keep(supervise(
            health.clone(),
            task::PUSH_LOOP,
            policy,
            move || push_loop(shared.clone(), updates_rx.clone(), events_tx.clone()),
        ));
    }
    {
        let (shared, debounce_opts) = (shared.clone(), cfg.debounce);
        let mut restarted = false;
        keep(supervise(
            health.clone(),
            task::DEBOUNCER,
            policy,
            move || {
                let restarted = std::mem::replace(&mut restarted, true);
                debouncer(shared.clone(), events_rx.clone(), debounce_opts, restarted)
            },
        ));
    }

    let grpc = SharedListener(Arc::new(grpc_listener));
    {
        let server = server.clone();
        keep(supervise(
            health.clone(),
            task::ADS_SERVER,
            policy,
            move || {
                let (listener, server) = (grpc.handle(), server.clone());
                async move {
                    crate::xds::grpc::serve(listener?, server)
                        .await
                        .context("ADS server")
                }
            },
        ));
    }
    let router = crate::admin::router(server.clone(), health.clone(), webhook_metrics);
    let mut serve_http = |name: &'static str, listener: TcpListener| {
        let (listener, router) = (SharedListener(Arc::new(listener)), router.clone());
        keep(supervise(health.clone(), name, policy, move || {
            axum::serve(listener.clone(), router.clone()).into_future()
        }));
    };
    serve_http(task::HTTP_SERVER, http_listener);
    if let Some(l) = monitoring_listener {
        serve_http(task::MONITORING_SERVER, l);
    }
    if let Some(l) = ctrlz_listener {
        let listener = SharedListener(Arc::new(l));
        let page = crate::ctrlz::router(server.clone(), health.clone());
        keep(supervise(
            health.clone(),
            task::CTRLZ_SERVER,
            policy,
            move || axum::serve(listener.clone(), page.clone()).into_future(),
        ));
    }

    let task = tokio::spawn(async move {
        // Dropping the handles (on shutdown, or when `Running` is dropped) stops every task.
        let _tasks = tasks;
        let _ = shutdown_rx.await;
        Ok(())
    });
    Ok(Running {
        addrs,
        server,
        health,
        shutdown: Some(shutdown_tx),
        task,
    })
}

/// Runs one incarnation of a source, whose updates arrive tagged with `source` on `updates`.
async fn tagged<Fut, E>(
    source: SourceId,
    updates: mpsc::Sender<(SourceId, ObjectSet)>,
    run: impl FnOnce(mpsc::Sender<ObjectSet>) -> Fut,
) -> Result<(), E>
where
    Fut: Future<Output = Result<(), E>>,
{
    let (tx, mut rx) = mpsc::channel(4);
    let relay = async move {
        while let Some(set) = rx.recv().await {
            if updates.send((source, set)).await.is_err() {
                break;
            }
        }
    };
    let (result, ()) = tokio::join!(run(tx), relay);
    result
}

/// The latest state of every source, merged into one store per push.
struct PushSources {
    latest: BTreeMap<SourceId, ObjectSet>,
    mesh_map: MeshConfigMap,
    mesh_override: Option<MeshConfig>,
    /// How many sources must have reported before proxies are served.
    expected: usize,
}

/// What the push loop and the debouncer share; outlives their incarnations.
struct PushShared {
    server: Arc<DiscoveryServer>,
    health: Arc<Health>,
    sources: Mutex<PushSources>,
    /// Errors already logged (each rejected document is logged once).
    reported: Mutex<BTreeSet<String>>,
    /// A source update arrived since the last snapshot build started.
    dirty: AtomicBool,
    /// An update that was not endpoint-only arrived since the last snapshot was built (the
    /// next build recomputes everything, not just endpoints).
    config_dirty: AtomicBool,
    errors_tx: watch::Sender<Vec<crate::model::config::ConfigError>>,
}

/// Locks `m`, also after a panic while it was held: the data is replaced whole, never left
/// half-written, so it stays usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Merges every source's latest objects into one validated store.
fn build_store(
    sets: BTreeMap<SourceId, ObjectSet>,
    mesh_map: &MeshConfigMap,
    mesh_override: Option<&MeshConfig>,
) -> ConfigStore {
    let mut merged = ObjectSet::default();
    for set in sets.into_values() {
        merged.merge(set);
    }
    merged.into_store_with(mesh_map, mesh_override)
}

/// Logs and counts (`pilot_total_rejected_configs`) each rejected document once (not again
/// on every rebuild while it stays broken).
fn log_errors(
    store: &ConfigStore,
    reported: &mut BTreeSet<String>,
    metrics: &crate::metrics::PilotMetrics,
) {
    let now: BTreeSet<String> = store.errors.iter().map(|e| e.to_string()).collect();
    for e in now.difference(reported) {
        tracing::warn!(error = %e, "config rejected; fix it, the rest is served");
        metrics.rejected_configs.inc();
    }
    *reported = now;
}

/// Source updates → the sources' latest state, and a push request for the debouncer.
async fn push_loop(
    shared: Arc<PushShared>,
    updates: Arc<tokio::sync::Mutex<mpsc::Receiver<(SourceId, ObjectSet)>>>,
    events: mpsc::Sender<PushRequest>,
) -> anyhow::Result<()> {
    let mut updates = updates.lock_owned().await;
    while let Some((source, set)) = updates.recv().await {
        let endpoints_only = set.endpoints_only;
        crate::metrics::PilotMetrics::count(
            &shared.server.metrics.pilot.inbound_updates,
            if endpoints_only { "eds" } else { "config" },
        );
        lock(&shared.sources).latest.insert(source, set);
        if !endpoints_only {
            shared.config_dirty.store(true, Ordering::Release);
        }
        shared.dirty.store(true, Ordering::Release);
        let req = if endpoints_only {
            PushRequest::endpoints_only()
        } else {
            PushRequest::full(TriggerReason::ConfigUpdate)
        };
        events
            .send(req)
            .await
            .context("the debouncer's event channel closed")?;
    }
    // No source left (bundled config): keep serving what was loaded.
    std::future::pending::<()>().await;
    Ok(())
}

/// One incarnation of the debouncer: push requests → debounce → snapshot → push. After a
/// restart it rebuilds at once, since the crash may have lost a batch.
async fn debouncer(
    shared: Arc<PushShared>,
    events: Arc<tokio::sync::Mutex<mpsc::Receiver<PushRequest>>>,
    opts: DebounceOptions,
    restarted: bool,
) -> anyhow::Result<()> {
    let mut events = events.lock_owned().await;
    let (tx, rx) = mpsc::channel(1);
    if restarted {
        shared.dirty.store(true, Ordering::Release);
        let _ = tx.try_send(PushRequest::full(TriggerReason::ConfigUpdate));
    }
    let relay = async move {
        while let Some(req) = events.recv().await {
            if tx.send(req).await.is_err() {
                break;
            }
        }
    };
    let s = shared.clone();
    tokio::join!(
        relay,
        debounce(rx, opts, move |req| {
            let span = tracing::info_span!("push", full = req.full, events = req.event_count());
            build_and_push(s.clone(), req).instrument(span)
        })
    );
    anyhow::bail!("the push loop's event channel closed")
}

/// Builds a snapshot of the sources' latest state (off the async threads) and pushes it. A
/// build that panics is a failure of `snapshot-build`: logged, counted, on `/ready`, and the
/// last good snapshot stays served; the next change builds again.
async fn build_and_push(shared: Arc<PushShared>, req: PushRequest) {
    if !shared.dirty.swap(false, Ordering::AcqRel) {
        return;
    }
    // Only endpoints changed since the last snapshot (and there is one): recompute them
    // alone, on the last snapshot's config.
    let config_changed = shared.config_dirty.swap(false, Ordering::AcqRel);
    let s = shared.clone();
    let built = tokio::task::spawn_blocking(move || {
        let (sets, mesh_map, mesh_override, complete) = {
            let sources = lock(&s.sources);
            (
                sources.latest.clone(),
                sources.mesh_map.clone(),
                sources.mesh_override.clone(),
                sources.latest.len() >= sources.expected,
            )
        };
        if !config_changed && s.server.is_ready() {
            let previous = s.server.push_context();
            let mut merged = ObjectSet::default();
            for set in sets.into_values() {
                merged.merge(set);
            }
            let store = merged.endpoints_into(&previous.store);
            return (PushContext::with_endpoints(&previous, store), complete);
        }
        let started = std::time::Instant::now();
        let store = build_store(sets, &mesh_map, mesh_override.as_ref());
        #[cfg(test)]
        tests::fault_point(&store);
        log_errors(&store, &mut lock(&s.reported), &s.server.metrics.pilot);
        let ctx = PushContext::new(store);
        s.server
            .metrics
            .pilot
            .pushcontext_init
            .observe(started.elapsed().as_secs_f64());
        (ctx, complete)
    })
    .await;
    let (ctx, complete) = match built {
        Ok(built) => built,
        Err(e) => {
            // The next build starts from scratch.
            shared.config_dirty.store(true, Ordering::Release);
            let cause = join_error_cause(e).unwrap_or_else(|| "was cancelled".into());
            let version = shared.server.push_context().version.clone();
            let cause = format!(
                "building a snapshot {cause}; proxies keep being served the last good snapshot (version {version}); the next config change builds again"
            );
            let failures = shared.health.fail(task::SNAPSHOT_BUILD, &cause);
            tracing::error!(
                task = task::SNAPSHOT_BUILD,
                failures,
                cause,
                "snapshot build failed"
            );
            return;
        }
    };
    shared.health.recover(task::SNAPSHOT_BUILD);
    let server = &shared.server;
    // Only endpoints changed: an incremental (EDS-only) push.
    let mut req = req;
    if server.push_context().config_version == ctx.config_version {
        req.full = false;
        req.reason.insert(TriggerReason::EndpointUpdate, 1);
    }
    shared.errors_tx.send_if_modified(|current| {
        let changed = *current != ctx.store.errors;
        if changed {
            current.clone_from(&ctx.store.errors);
        }
        changed
    });
    server.push(ctx, req);
    if complete && !server.is_ready() {
        tracing::info!("every source has delivered its first state; serving proxies");
        server.set_ready(true);
    }
}

#[cfg(test)]
mod tests {
    //! The snapshot build's fault-injection point (compiled into unit tests only) and the test
    //! that a failing build is logged, counted, shown on `/ready`, keeps the last good
    //! snapshot served and recovers on the next change.

    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    };
    use prost::Message;
    use tokio_stream::wrappers::ReceiverStream;
    use tracing_subscriber::util::SubscriberInitExt;

    /// A server on free loopback ports reading `dir`, with a short debounce.
    fn test_config(dir: std::path::PathBuf) -> DiscoveryConfig {
        DiscoveryConfig {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            monitoring_addr: None,
            ctrlz_addr: None,
            config_dirs: vec![dir],
            cluster: None,
            mesh_config: None,
            system_namespace: "istio-system".into(),
            revision: String::new(),
            debounce: DebounceOptions {
                after: Duration::from_millis(20),
                max: Duration::from_secs(1),
                eds_debounce: true,
            },
            instance_id: "navarch-test".into(),
            lease_ttl: Duration::from_secs(30),
            ads_limits: Default::default(),
            webhook_addr: None,
        }
    }

    /// A VirtualService with this annotation (value `panic-in-snapshot-build`) makes the
    /// snapshot build panic, in unit tests only.
    const FAULT_ANNOTATION: &str = "navarch.test/fault";

    pub(super) fn fault_point(store: &ConfigStore) {
        let injected = store.virtual_services.iter().any(|vs| {
            vs.meta
                .annotations
                .get(FAULT_ANNOTATION)
                .map(String::as_str)
                == Some("panic-in-snapshot-build")
        });
        if injected {
            panic!("injected fault: a VirtualService asks the snapshot build to panic");
        }
    }

    const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

    fn config(extra_service: bool, fault: bool) -> String {
        let mut yaml = String::from(
            r#"apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: testns1}
spec:
  ports: [{name: http, port: 8000, targetPort: 8080}]
  selector: {app: httpbin}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
"#,
        );
        if fault {
            yaml.push_str("  annotations: {navarch.test/fault: panic-in-snapshot-build}\n");
        }
        yaml.push_str(
            "spec:\n  hosts: [httpbin.testns1.svc.cluster.local]\n  http:\n  - route:\n    - destination: {host: httpbin.testns1.svc.cluster.local}\n",
        );
        if extra_service {
            yaml.push_str(
                "---\napiVersion: v1\nkind: Service\nmetadata: {name: extra, namespace: testns1}\nspec:\n  ports: [{name: http, port: 9000}]\n",
            );
        }
        yaml
    }

    fn write(dir: &std::path::Path, text: &str) {
        let tmp = dir.join("mesh.yaml.tmp~");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join("mesh.yaml")).unwrap();
    }

    /// A CDS subscription of one simulated sidecar.
    struct Proxy {
        tx: mpsc::Sender<DiscoveryRequest>,
        inbound: tonic::Streaming<DiscoveryResponse>,
    }

    impl Proxy {
        async fn connect(addr: SocketAddr, pod: &str) -> Proxy {
            let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let (tx, rx) = mpsc::channel(4);
            tx.send(DiscoveryRequest {
                node: Some(Node {
                    id: format!("sidecar~127.0.0.1~{pod}.testns1~testns1.svc.cluster.local"),
                    ..Default::default()
                }),
                type_url: CDS.into(),
                ..Default::default()
            })
            .await
            .unwrap();
            let inbound = client
                .stream_aggregated_resources(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            Proxy { tx, inbound }
        }

        /// The next CDS response's version and cluster names; ACKs it.
        async fn next(&mut self, within: Duration) -> Option<(String, Vec<String>)> {
            let resp = tokio::time::timeout(within, self.inbound.message())
                .await
                .ok()?
                .unwrap()
                .unwrap();
            self.tx
                .send(DiscoveryRequest {
                    type_url: CDS.into(),
                    version_info: resp.version_info.clone(),
                    response_nonce: resp.nonce.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            let names = resp
                .resources
                .iter()
                .map(|a| Cluster::decode(a.value.as_slice()).unwrap().name)
                .collect();
            Some((resp.version_info, names))
        }
    }

    async fn get(url: String) -> (u16, String) {
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn eventually<F: Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
        for _ in 0..200 {
            if check().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
        }
    }

    // A current-thread runtime: every task logs on this thread, into the captured subscriber.
    #[tokio::test]
    async fn a_panicking_snapshot_build_is_logged_counted_not_ready_keeps_serving_and_recovers() {
        let logs = Logs::default();
        let l = logs.clone();
        let _subscriber = tracing_subscriber::fmt()
            .with_writer(move || l.clone())
            .with_ansi(false)
            .set_default();
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &config(false, false));
        let running = start(test_config(dir.path().to_path_buf())).await.unwrap();
        let http = format!("http://{}", running.addrs.http);
        let extra = "outbound|9000||extra.testns1.svc.cluster.local".to_string();
        let mut proxy = Proxy::connect(running.addrs.grpc, "sleep").await;
        let (good, clusters) = proxy.next(Duration::from_secs(5)).await.unwrap();
        assert!(!clusters.contains(&extra));
        assert_eq!(get(format!("{http}/ready")).await, (200, "ready\n".into()));

        let snapshot = running.server.push_context().version.clone();
        // The change that makes the build panic: a new Service and the fault annotation.
        write(dir.path(), &config(true, true));
        let failed = eventually(|| async { get(format!("{http}/ready")).await.0 == 503 }).await;
        assert!(failed, "/ready turns 503 after the failed build");
        let (_, body) = get(format!("{http}/ready")).await;
        assert!(
            body.starts_with(
                "not ready: snapshot-build: building a snapshot panicked: injected fault"
            ) && body.contains(&format!("last good snapshot (version {snapshot})")),
            "/ready names the part, the cause and what is served: {body}"
        );
        let (_, metrics) = get(format!("{http}/metrics")).await;
        assert!(
            metrics.contains("navarch_task_failures_total{task=\"snapshot-build\"} 1")
                && metrics.contains("navarch_task_up{task=\"snapshot-build\"} 0"),
            "{metrics}"
        );
        let log = logs.text();
        assert!(
            log.lines().any(|l| l.contains("ERROR")
                && l.contains("snapshot build failed")
                && l.contains("task=\"snapshot-build\"")
                && l.contains("injected fault")),
            "a log line with the task and the cause:\n{log}"
        );
        // Proxies keep the last good snapshot: nothing pushed to the connected one, and a new
        // one gets the same version.
        assert_eq!(proxy.next(Duration::from_millis(300)).await, None);
        let mut late = Proxy::connect(running.addrs.grpc, "late").await;
        let (version, clusters) = late.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(version, good);
        assert!(!clusters.contains(&extra));

        // The next change builds: ready again, and the new Service reaches both proxies.
        write(dir.path(), &config(true, false));
        let (version, clusters) = proxy.next(Duration::from_secs(5)).await.unwrap();
        assert_ne!(version, good);
        assert!(clusters.contains(&extra), "{clusters:?}");
        assert!(late.next(Duration::from_secs(5)).await.is_some());
        assert_eq!(get(format!("{http}/ready")).await, (200, "ready\n".into()));
        let (_, metrics) = get(format!("{http}/metrics")).await;
        assert!(
            metrics.contains("navarch_task_failures_total{task=\"snapshot-build\"} 1")
                && metrics.contains("navarch_task_up{task=\"snapshot-build\"} 1"),
            "{metrics}"
        );
        running.shutdown().await;
    }

    #[tokio::test]
    async fn a_file_source_that_fails_is_restarted_and_ready_says_so_meanwhile() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("config");
        std::fs::create_dir(&dir).unwrap();
        write(&dir, &config(false, false));
        let running = start(test_config(dir.clone())).await.unwrap();
        let http = format!("http://{}", running.addrs.http);
        let mut proxy = Proxy::connect(running.addrs.grpc, "sleep").await;
        let (good, _) = proxy.next(Duration::from_secs(5)).await.unwrap();

        // The config dir goes away (atomically): its watch is gone, the source fails.
        let away = tmp.path().join("elsewhere");
        std::fs::rename(&dir, &away).unwrap();
        let failed = eventually(|| async { get(format!("{http}/ready")).await.0 == 503 }).await;
        assert!(failed, "/ready turns 503 when the file source fails");
        let (_, body) = get(format!("{http}/ready")).await;
        assert!(
            body.starts_with("not ready: file-source: failed: config dir")
                && body.contains("does not exist")
                && body.contains("restarting in"),
            "{body}"
        );
        let (_, metrics) = get(format!("{http}/metrics")).await;
        assert!(
            !metrics.contains("navarch_task_failures_total{task=\"file-source\"} 0")
                && metrics.contains("navarch_task_up{task=\"file-source\"} 0"),
            "{metrics}"
        );
        assert_eq!(
            proxy.next(Duration::from_millis(300)).await,
            None,
            "the last good config stays served"
        );

        // Back, with a change made meanwhile: the restarted source reads and sends it.
        write(&away, &config(true, false));
        std::fs::rename(&away, &dir).unwrap();
        let (version, clusters) = proxy.next(Duration::from_secs(10)).await.unwrap();
        assert_ne!(version, good);
        assert!(clusters.contains(&"outbound|9000||extra.testns1.svc.cluster.local".to_string()));
        // Healthy again once the restarted source has run for 5 s.
        let mut ready = false;
        for _ in 0..100 {
            if get(format!("{http}/ready")).await == (200, "ready\n".into()) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "/ready is 200 again after the restart");
        let (_, metrics) = get(format!("{http}/metrics")).await;
        assert!(
            metrics.contains("navarch_task_up{task=\"file-source\"} 1"),
            "{metrics}"
        );
        running.shutdown().await;
    }
}
