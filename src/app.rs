//! Wiring for `navarch discovery`: load the sources, start the push loop (debounce → snapshot
//! → push), the ADS server and the debug HTTP servers, and keep them running.
//!
//! Holds no logic of its own beyond connecting the pieces; each piece lives in its module.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::model::mesh::MeshConfig;
use crate::model::push_context::{ConfigStore, PushContext};
use crate::sources;
use crate::sources::objects::ObjectSet;
use crate::status::SyncStatusStore;
use crate::xds::DiscoveryServer;
use crate::xds::debounce::{DebounceOptions, PushRequest, TriggerReason, debounce};

/// Everything `discovery` needs to run.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub monitoring_addr: Option<SocketAddr>,
    pub config_dirs: Vec<PathBuf>,
    /// Watch a cluster: `Some(None)` for the in-cluster config, `Some(Some(path))` for a
    /// kubeconfig.
    pub cluster: Option<Option<PathBuf>>,
    pub mesh_config: Option<PathBuf>,
    pub system_namespace: String,
    pub debounce: DebounceOptions,
    pub instance_id: String,
    /// Lease duration for singleton work in a cluster (istiod: 30s).
    pub lease_ttl: Duration,
    /// Limits of the ADS port (send timeout, streams per peer, request rate).
    pub ads_limits: crate::xds::grpc::AdsLimits,
}

/// Addresses actually bound (useful when a port was 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub monitoring: Option<SocketAddr>,
}

/// A running control plane.
pub struct Running {
    pub addrs: BoundAddrs,
    pub server: Arc<DiscoveryServer>,
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

/// Starts the control plane and returns once every port is bound. With a cluster, proxies are
/// served once its first complete list has arrived (`/ready` says so).
pub async fn start(cfg: DiscoveryConfig) -> anyhow::Result<Running> {
    let mesh = load_mesh(cfg.mesh_config.as_ref())?;
    let bundled = cfg.config_dirs.is_empty() && cfg.cluster.is_none();
    let mut initial_sets = std::collections::BTreeMap::new();
    let initial = if bundled {
        tracing::info!(
            "no --config-dir and no cluster: serving the bundled sandbox config (testdata/sandbox: the seed's testns1/httpbin setup)"
        );
        sources::bundled::load_store(&cfg.system_namespace, mesh.as_ref())
    } else {
        if !cfg.config_dirs.is_empty() {
            initial_sets.insert(
                SourceId::Files,
                sources::files::load_objects(&cfg.config_dirs)?,
            );
        }
        build_store(&initial_sets, &cfg.system_namespace, mesh.as_ref())
    };
    log_errors(&initial, &mut Default::default());
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
    let server = Arc::new(DiscoveryServer::with_limits(
        PushContext::new(initial),
        status,
        cfg.instance_id.clone(),
        cfg.ads_limits.clone(),
    ));
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
    let addrs = BoundAddrs {
        grpc: grpc_listener.local_addr()?,
        http: http_listener.local_addr()?,
        monitoring: monitoring_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?,
    };
    tracing::info!(grpc = %addrs.grpc, http = %addrs.http, monitoring = ?addrs.monitoring, "listening");

    let (updates_tx, updates_rx) = mpsc::channel::<(SourceId, ObjectSet)>(16);
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let mut tasks = tokio::task::JoinSet::new();

    if !cfg.config_dirs.is_empty() {
        let dirs = cfg.config_dirs.clone();
        let tx = tagged(SourceId::Files, updates_tx.clone());
        tasks.spawn(async move {
            sources::files::watch(dirs, Duration::from_millis(20), tx)
                .await
                .context("file source")
        });
    }
    let (errors_tx, errors_rx) = tokio::sync::watch::channel(Vec::new());
    if let Some(client) = kube_client {
        let opts = sources::kube::KubeSourceOptions {
            system_namespace: cfg.system_namespace.clone(),
            settle: Duration::from_millis(20),
            status: Some(sources::kube::StatusOptions {
                errors: errors_rx,
                lease: sources::kube::leader::LeaseOptions {
                    namespace: cfg.system_namespace.clone(),
                    name: "istio-analyze-leader".into(),
                    identity: cfg.instance_id.clone(),
                    ttl: cfg.lease_ttl,
                },
            }),
        };
        let tx = tagged(SourceId::Kubernetes, updates_tx.clone());
        tokio::spawn(sources::kube::run(client, opts, tx));
    }
    drop(updates_tx);
    let sources = PushSources {
        latest: initial_sets,
        system_namespace: cfg.system_namespace.clone(),
        mesh_override: mesh.clone(),
        expected: usize::from(!cfg.config_dirs.is_empty()) + usize::from(cfg.cluster.is_some()),
    };
    tasks.spawn(push_loop(
        server.clone(),
        updates_rx,
        sources,
        cfg.debounce,
        errors_tx,
    ));

    let ads_server = server.clone();
    tasks.spawn(async move {
        crate::xds::grpc::serve(grpc_listener, ads_server)
            .await
            .context("ADS server")
    });
    let router = crate::admin::router(server.clone());
    let r2 = router.clone();
    tasks.spawn(async move {
        axum::serve(http_listener, router)
            .await
            .context("http server")
    });
    if let Some(l) = monitoring_listener {
        tasks.spawn(async move { axum::serve(l, r2).await.context("monitoring server") });
    }

    let task = tokio::spawn(async move {
        tokio::select! {
            _ = shutdown_rx => Ok(()),
            res = tasks.join_next() => match res {
                Some(Ok(r)) => r,
                Some(Err(e)) => Err(anyhow::anyhow!("a control plane task panicked: {e}")),
                None => Ok(()),
            },
        }
    });
    Ok(Running {
        addrs,
        server,
        shutdown: Some(shutdown_tx),
        task,
    })
}

/// A sender for one source whose updates arrive tagged with `source` on `updates`.
fn tagged(
    source: SourceId,
    updates: mpsc::Sender<(SourceId, ObjectSet)>,
) -> mpsc::Sender<ObjectSet> {
    let (tx, mut rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(set) = rx.recv().await {
            if updates.send((source, set)).await.is_err() {
                break;
            }
        }
    });
    tx
}

/// The latest state of every source, merged into one store per push.
struct PushSources {
    latest: BTreeMap<SourceId, ObjectSet>,
    system_namespace: String,
    mesh_override: Option<MeshConfig>,
    /// How many sources must have reported before proxies are served.
    expected: usize,
}

/// Merges every source's latest objects into one validated store.
fn build_store(
    sets: &BTreeMap<SourceId, ObjectSet>,
    system_namespace: &str,
    mesh_override: Option<&MeshConfig>,
) -> ConfigStore {
    let mut merged = ObjectSet::default();
    for set in sets.values() {
        merged.merge(set.clone());
    }
    merged.into_store(system_namespace, mesh_override)
}

/// Logs each rejected document once (not again on every rebuild while it stays broken).
fn log_errors(store: &ConfigStore, reported: &mut BTreeSet<String>) {
    let now: BTreeSet<String> = store.errors.iter().map(|e| e.to_string()).collect();
    for e in now.difference(reported) {
        tracing::warn!(error = %e, "config rejected; fix it, the rest is served");
    }
    *reported = now;
}

/// Source updates → debounce → merged store → new snapshot → push.
async fn push_loop(
    server: Arc<DiscoveryServer>,
    mut updates: mpsc::Receiver<(SourceId, ObjectSet)>,
    sources: PushSources,
    opts: DebounceOptions,
    errors_tx: tokio::sync::watch::Sender<Vec<crate::model::config::ConfigError>>,
) -> anyhow::Result<()> {
    let errors_tx = Arc::new(errors_tx);
    let sources = Arc::new(Mutex::new(sources));
    let reported: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let dirty = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (events_tx, events_rx) = mpsc::channel::<PushRequest>(1024);
    let (s2, server2, reported2, dirty2, errors2) = (
        sources.clone(),
        server.clone(),
        reported.clone(),
        dirty.clone(),
        errors_tx.clone(),
    );
    let debouncer = tokio::spawn(debounce(events_rx, opts, move |req| {
        let (sources, server, reported, dirty, errors_tx) = (
            s2.clone(),
            server2.clone(),
            reported2.clone(),
            dirty2.clone(),
            errors2.clone(),
        );
        async move {
            if !dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
                return;
            }
            let built = tokio::task::spawn_blocking(move || {
                let (store, complete) = {
                    let s = sources.lock().expect("push sources lock");
                    (
                        build_store(&s.latest, &s.system_namespace, s.mesh_override.as_ref()),
                        s.latest.len() >= s.expected,
                    )
                };
                log_errors(&store, &mut reported.lock().expect("reported errors lock"));
                (PushContext::new(store), complete)
            })
            .await
            .expect("building a snapshot does not panic");
            let (ctx, complete) = built;
            // Only endpoints changed: an incremental (EDS-only) push.
            let mut req = req;
            if server.push_context().config_version == ctx.config_version {
                req.full = false;
                req.reason.insert(TriggerReason::EndpointUpdate, 1);
            }
            errors_tx.send_if_modified(|current| {
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
    }));
    while let Some((source, set)) = updates.recv().await {
        sources
            .lock()
            .expect("push sources lock")
            .latest
            .insert(source, set);
        dirty.store(true, std::sync::atomic::Ordering::Release);
        if events_tx
            .send(PushRequest::full(TriggerReason::ConfigUpdate))
            .await
            .is_err()
        {
            break;
        }
    }
    drop(events_tx);
    let _ = debouncer.await;
    // Sources ended (bundled config, or files watcher stopped): keep serving.
    std::future::pending::<()>().await;
    Ok(())
}
