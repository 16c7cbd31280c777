//! The Kubernetes source: watches a cluster with kube-rs watchers and reflector stores and sends
//! a complete [`ObjectSet`] after every settled change.
//!
//! Owns the connection to the API server, the per-kind watchers (Services, EndpointSlices, Pods,
//! Namespaces, Secrets, the mesh ConfigMap (`istio[-<revision>]`) in the system namespace, and every networking.istio.io kind
//! at the version the cluster prefers) and their readiness. What an object means is
//! [`super::objects`]'s job, so a cluster and files behave identically.
//!
//! Relists, `410 Gone`, watch timeouts and API-server restarts are the watcher's business: a
//! reflector store swaps in a relisted state only once the list is complete, so between a
//! failure and the next complete list the last good objects keep being served. Every watcher
//! and helper task belongs to the source's [`TaskGroup`]: one that panics or ends fails the
//! source (its supervisor restarts it, which relists), and a failed source leaves no task
//! behind. Must not build Envoy config or talk to proxies.

use std::fmt::Debug;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc};

pub mod leader;
pub mod status;

use crate::model::config::{ConfigError, ConfigKind};
use crate::sources::objects::{ObjectSet, Origin};
use crate::supervise::{Spawner, TaskEnded, TaskGroup};

/// The API group of Istio's networking kinds.
pub const ISTIO_NETWORKING_GROUP: &str = "networking.istio.io";
/// The Istio kinds read from a cluster: all the model knows.
const ISTIO_KINDS: [ConfigKind; 7] = ConfigKind::ALL;
/// How often the source looks again for Istio CRDs that were not installed.
const CRD_RECHECK: Duration = Duration::from_secs(5);
/// Objects read from a cluster are reported with this source name.
pub const SOURCE_NAME: &str = "kubernetes";

/// Errors that stop the Kubernetes source from starting.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("kubeconfig {path}: {source}; pass a readable --kubeconfig")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no --kubeconfig and no in-cluster config ({0}); pass --kubeconfig or run inside a pod"
    )]
    InCluster(#[source] kube::config::InClusterError),
    #[error("building a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("a task of the Kubernetes source stopped: {0}")]
    TaskEnded(#[from] TaskEnded),
}

/// A client for `kubeconfig`, or for the cluster this process runs in.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeSourceError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| KubeSourceError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| KubeSourceError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => Config::incluster().map_err(KubeSourceError::InCluster)?,
    };
    Client::try_from(config).map_err(KubeSourceError::Client)
}

/// What the source needs besides a client.
#[derive(Debug, Clone)]
pub struct KubeSourceOptions {
    /// The mesh config's ConfigMap (`istio`, or `istio-<revision>`, in the system namespace).
    pub mesh_map: crate::sources::objects::MeshConfigMap,
    /// Changes closer together than this are sent as one update.
    pub settle: Duration,
    /// Write validation results into the Istio resources' status (leader only).
    pub status: Option<StatusOptions>,
    /// Where watch events are counted (`pilot_k8s_cfg_events`, `pilot_k8s_reg_events`).
    pub metrics: Arc<crate::metrics::PilotMetrics>,
}

/// What the status writer needs: the current errors (from the push loop) and whether this
/// replica holds the Lease (from [`leader::run`]).
#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub errors: tokio::sync::watch::Receiver<Vec<ConfigError>>,
    pub leading: tokio::sync::watch::Receiver<bool>,
}

/// One watched Istio kind: the version the cluster serves it at and its store.
struct IstioStore {
    resource: ApiResource,
    store: Store<DynamicObject>,
}

/// The reflector stores of every watched kind.
struct Stores {
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    istio: Mutex<Vec<IstioStore>>,
}

impl Stores {
    /// Everything the stores hold now, as one [`ObjectSet`].
    fn snapshot(&self) -> ObjectSet {
        // The watchers' own objects, shared, not copied.
        fn owned<K>(store: &Store<K>) -> Vec<Arc<K>>
        where
            K: Resource + Clone + 'static,
            K::DynamicType: Eq + Hash + Clone,
        {
            store.state()
        }
        let mut set = ObjectSet {
            services: owned(&self.services),
            endpoint_slices: owned(&self.endpoint_slices),
            pods: owned(&self.pods),
            namespaces: owned(&self.namespaces),
            config_maps: owned(&self.config_maps),
            secrets: owned(&self.secrets),
            ..Default::default()
        };
        let origin = Origin {
            source: SOURCE_NAME.into(),
            document: None,
        };
        let istio = self.istio.lock().expect("istio stores lock");
        for kind in istio.iter() {
            let mut objects = kind.store.state();
            objects.sort_by_key(|o| (o.namespace(), o.name_any()));
            for obj in objects {
                let Ok(mut doc) = serde_json::to_value(&*obj) else {
                    continue;
                };
                // List items may come without their type; the version we watch is theirs.
                if let Some(map) = doc.as_object_mut() {
                    map.entry("apiVersion")
                        .or_insert_with(|| kind.resource.api_version.clone().into());
                    map.entry("kind")
                        .or_insert_with(|| kind.resource.kind.clone().into());
                }
                set.add_document(&origin, doc);
            }
        }
        set
    }
}

/// What the watchers changed since the last snapshot: a wake-up, and whether anything but
/// endpoints (EndpointSlices, Pods) changed, so that an endpoint-only change can be pushed
/// as one (EDS alone, from a snapshot that recomputes endpoints only).
#[derive(Debug, Default)]
pub(crate) struct ChangeSignal {
    notify: Notify,
    config: std::sync::atomic::AtomicBool,
    /// Counts each watch event by kind.
    metrics: Arc<crate::metrics::PilotMetrics>,
}

impl ChangeSignal {
    fn changed(&self, endpoints_only: bool) {
        if !endpoints_only {
            self.config
                .store(true, std::sync::atomic::Ordering::Release);
        }
        self.notify.notify_one();
    }

    /// Whether anything but endpoints changed since the last call.
    fn take_config_changed(&self) -> bool {
        self.config.swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

/// The kinds whose changes move endpoints only.
fn moves_endpoints_only(kind: &str) -> bool {
    matches!(kind, "EndpointSlice" | "Pod")
}

/// Drives one watcher into its store, waking `changed` after every applied change. Each event
/// is counted as istiod counts them (`add` for the objects of a (re)list, `update` for a
/// change, `delete`), an Istio kind's (`istio`) as a config event, the others' as registry
/// events.
async fn run_watcher<K, S>(kind: String, stream: S, changed: Arc<ChangeSignal>, istio: bool)
where
    K: Resource + Clone + Debug + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    let endpoints_only = moves_endpoints_only(&kind);
    while let Some(event) = stream.next().await {
        let counted = match &event {
            Ok(watcher::Event::InitApply(_)) => Some("add"),
            Ok(watcher::Event::Apply(_)) => Some("update"),
            Ok(watcher::Event::Delete(_)) => Some("delete"),
            _ => None,
        };
        if let Some(e) = counted {
            changed.metrics.k8s_event(&kind, e, istio);
        }
        match event {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(_) => {
                if failing {
                    tracing::info!(kind, "watch resumed");
                    failing = false;
                }
                changed.changed(endpoints_only);
            }
            Err(error) => {
                // The backoff retries; the store keeps the last complete state meanwhile.
                if !failing {
                    tracing::warn!(kind, %error, "watch failed; retrying with backoff and serving the last known objects");
                }
                failing = true;
            }
        }
    }
}

/// How a failed watch retries: from 500 ms, doubling with jitter, at most 5 s apart, reset
/// after a minute of health. Shorter than client-go's 30 s cap on purpose: after an API-server
/// outage the changes made meanwhile reach proxies within seconds of its return, not after
/// each watcher's backoff has run out.
fn watch_backoff()
-> kube::runtime::utils::ResetTimerBackoff<kube::runtime::watcher::ExponentialBackoff> {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    kube::runtime::utils::ResetTimerBackoff::new(exponential.into(), Duration::from_secs(60))
}

/// Where the reflectors of typed kinds run and whom they tell of changes.
struct Reflectors<'a> {
    tasks: &'a Spawner,
    changed: &'a Arc<ChangeSignal>,
}

impl Reflectors<'_> {
    /// Starts a reflector for a typed kind; returns its store.
    fn watch<K>(&self, api: Api<K>, config: watcher::Config, kind: &str) -> Store<K>
    where
        K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        let (reader, writer) = reflector::store();
        let stream = watcher(api, config)
            .backoff(watch_backoff())
            .modify(|o: &mut K| o.managed_fields_mut().clear())
            .reflect(writer);
        self.tasks.spawn(
            format!("{kind} watcher"),
            run_watcher(kind.to_string(), stream, self.changed.clone(), false),
        );
        reader
    }
}

/// Finds the version the cluster serves each Istio kind at (its preferred version).
async fn discover_istio_kinds(client: &Client) -> Vec<(ConfigKind, ApiResource)> {
    let group = match kube::discovery::group(client, ISTIO_NETWORKING_GROUP).await {
        Ok(g) => g,
        Err(error) => {
            tracing::debug!(%error, "networking.istio.io is not served");
            return Vec::new();
        }
    };
    ISTIO_KINDS
        .iter()
        .filter_map(|kind| {
            group
                .recommended_kind(kind.as_str())
                .map(|(ar, _)| (*kind, ar))
        })
        .collect()
}

/// Watches the cluster and sends a complete [`ObjectSet`] once every kind has listed, then after
/// every settled change. Runs until `updates` is closed, or until one of its tasks stops (an
/// error: the caller restarts the source).
pub async fn run(
    client: Client,
    opts: KubeSourceOptions,
    updates: mpsc::Sender<ObjectSet>,
) -> Result<(), KubeSourceError> {
    let mut group = TaskGroup::new();
    let tasks = group.spawner();
    let changed = Arc::new(ChangeSignal {
        metrics: opts.metrics.clone(),
        ..ChangeSignal::default()
    });
    let cfg = watcher::Config::default;
    let reflect = Reflectors {
        tasks: &tasks,
        changed: &changed,
    };
    let stores = Arc::new(Stores {
        services: reflect.watch(Api::all(client.clone()), cfg(), "Service"),
        endpoint_slices: reflect.watch(Api::all(client.clone()), cfg(), "EndpointSlice"),
        pods: reflect.watch(Api::all(client.clone()), cfg(), "Pod"),
        namespaces: reflect.watch(Api::all(client.clone()), cfg(), "Namespace"),
        config_maps: reflect.watch(
            Api::namespaced(client.clone(), &opts.mesh_map.namespace),
            cfg().fields(&format!("metadata.name={}", opts.mesh_map.name)),
            "ConfigMap",
        ),
        // Only TLS-shaped Secrets can be gateway credentials; service-account tokens and
        // the like are never read.
        secrets: reflect.watch(
            Api::all(client.clone()),
            cfg().fields("type!=kubernetes.io/service-account-token"),
            "Secret",
        ),
        istio: Mutex::new(Vec::new()),
    });

    // Istio kinds: found by discovery; looked for again while some are missing.
    let istio_ready = Arc::new(Notify::new());
    {
        let client = client.clone();
        let stores = stores.clone();
        let changed = changed.clone();
        let istio_ready = istio_ready.clone();
        let watchers = tasks.clone();
        tasks.spawn_finite("Istio kind discovery", async move {
            let mut warned = false;
            let mut watched: Vec<ConfigKind> = Vec::new();
            loop {
                for (kind, resource) in discover_istio_kinds(&client).await {
                    if watched.contains(&kind) {
                        continue;
                    }
                    let writer = reflector::store::Writer::new(resource.clone());
                    let store = writer.as_reader();
                    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
                    let stream = watcher(api, cfg())
                        .backoff(watch_backoff())
                        .modify(|o: &mut DynamicObject| o.managed_fields_mut().clear())
                        .reflect(writer);
                    tracing::info!(kind = kind.as_str(), version = %resource.version, "watching Istio kind");
                    watchers.spawn(
                        format!("{} watcher", kind.as_str()),
                        run_watcher(kind.as_str().to_string(), stream, changed.clone(), true),
                    );
                    // Not served until listed, so a half-listed kind never looks deleted.
                    let _ = store.wait_until_ready().await;
                    stores
                        .istio
                        .lock()
                        .expect("istio stores lock")
                        .push(IstioStore { resource, store });
                    watched.push(kind);
                    changed.changed(false);
                }
                istio_ready.notify_one();
                if watched.len() == ISTIO_KINDS.len() {
                    return;
                }
                if !warned {
                    let missing: Vec<&str> = ISTIO_KINDS
                        .iter()
                        .filter(|k| !watched.contains(k))
                        .map(|k| k.as_str())
                        .collect();
                    tracing::warn!(
                        ?missing,
                        "the cluster does not serve these networking.istio.io kinds; install the networking.istio.io CRDs (Istio's, or navarch's from src/install.rs); they are read once they appear"
                    );
                    warned = true;
                }
                tokio::time::sleep(CRD_RECHECK).await;
            }
        });
    }

    if let Some(status) = opts.status.clone() {
        tasks.spawn(
            "status writer",
            status::run(
                client.clone(),
                stores.clone(),
                status.errors,
                status.leading,
            ),
        );
    }

    // Wait for the first complete list of everything, saying what is still missing.
    let initial = async {
        istio_ready.notified().await;
        let _ = stores.services.wait_until_ready().await;
        let _ = stores.endpoint_slices.wait_until_ready().await;
        let _ = stores.pods.wait_until_ready().await;
        let _ = stores.namespaces.wait_until_ready().await;
        let _ = stores.config_maps.wait_until_ready().await;
        let _ = stores.secrets.wait_until_ready().await;
    };
    let mut initial = std::pin::pin!(initial);
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut initial => break,
            ended = group.ended() => return Err(ended.into()),
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                tracing::info!(waited_s = started.elapsed().as_secs(), "waiting for the first list of every kind from the Kubernetes API server (is it reachable?)");
            }
        }
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Kubernetes objects listed"
    );

    let mut first = true;
    loop {
        let config_changed = changed.take_config_changed();
        let mut snapshot = stores.snapshot();
        snapshot.endpoints_only = !first && !config_changed;
        first = false;
        if updates.send(snapshot).await.is_err() {
            return Ok(());
        }
        tokio::select! {
            _ = changed.notify.notified() => {}
            ended = group.ended() => return Err(ended.into()),
        }
        tokio::time::sleep(opts.settle).await;
    }
}
