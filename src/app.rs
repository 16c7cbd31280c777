//! Wiring for `navarch discovery`: load the sources, start the push loop (debounce → snapshot
//! → push), the ADS server and the debug HTTP servers, and keep them running.
//!
//! Holds no logic of its own beyond connecting the pieces; each piece lives in its module.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::model::mesh::MeshConfig;
use crate::model::push_context::{ConfigStore, PushContext};
use crate::sources;
use crate::status::SyncStatusStore;
use crate::xds::DiscoveryServer;
use crate::xds::debounce::{DebounceOptions, PushRequest, TriggerReason, debounce};
use crate::xds::server::AdsService;

/// Everything `discovery` needs to run.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub monitoring_addr: Option<SocketAddr>,
    pub config_dirs: Vec<PathBuf>,
    pub mesh_config: Option<PathBuf>,
    pub system_namespace: String,
    pub debounce: DebounceOptions,
    pub instance_id: String,
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

/// Starts the control plane and returns once every port is bound.
pub async fn start(cfg: DiscoveryConfig) -> anyhow::Result<Running> {
    let mesh = load_mesh(cfg.mesh_config.as_ref())?;
    let bundled = cfg.config_dirs.is_empty();
    let initial = if bundled {
        tracing::info!(
            "no --config-dir and no cluster: serving the bundled sandbox config (testdata/sandbox: the seed's testns1/httpbin setup)"
        );
        sources::bundled::load_store(&cfg.system_namespace, mesh.as_ref())
    } else {
        sources::files::load_store(&cfg.config_dirs, &cfg.system_namespace, mesh.as_ref())?
    };
    tracing::info!(
        services = initial.registry.services.len(),
        virtual_services = initial.virtual_services.len(),
        destination_rules = initial.destination_rules.len(),
        errors = initial.errors.len(),
        "initial config loaded"
    );
    let status = Arc::new(SyncStatusStore::default());
    let server = Arc::new(DiscoveryServer::new(
        PushContext::new(initial),
        status,
        cfg.instance_id.clone(),
    ));

    let grpc_listener = TcpListener::bind(cfg.grpc_addr)
        .await
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

    let (store_tx, store_rx) = mpsc::channel::<ConfigStore>(16);
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let mut tasks = tokio::task::JoinSet::new();

    if !bundled {
        let dirs = cfg.config_dirs.clone();
        let ns = cfg.system_namespace.clone();
        let mesh = mesh.clone();
        tasks.spawn(async move {
            sources::files::watch(dirs, ns, mesh, Duration::from_millis(20), store_tx)
                .await
                .context("file source")
        });
    } else {
        drop(store_tx);
    }
    tasks.spawn(push_loop(server.clone(), store_rx, cfg.debounce));

    let ads = AdsService::new(server.clone());
    tasks.spawn(async move {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(ads)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                grpc_listener,
            ))
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

/// Latest store → debounce → new snapshot → push.
async fn push_loop(
    server: Arc<DiscoveryServer>,
    mut stores: mpsc::Receiver<ConfigStore>,
    opts: DebounceOptions,
) -> anyhow::Result<()> {
    let latest: Arc<std::sync::Mutex<Option<ConfigStore>>> = Arc::default();
    let (events_tx, events_rx) = mpsc::channel::<PushRequest>(1024);
    let l2 = latest.clone();
    let s2 = server.clone();
    let debouncer = tokio::spawn(debounce(events_rx, opts, move |req| {
        let store = l2.lock().expect("latest store lock").take();
        let server = s2.clone();
        async move {
            if let Some(store) = store {
                let ctx = tokio::task::spawn_blocking(move || PushContext::new(store))
                    .await
                    .expect("building a snapshot does not panic");
                server.push(ctx, req);
            }
        }
    }));
    while let Some(store) = stores.recv().await {
        *latest.lock().expect("latest store lock") = Some(store);
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
