//! The xDS server: ADS streams (State of the World and Delta), per-connection state, the push
//! queue, the debounce, and the encoded-resource cache.
//!
//! It moves bytes and tracks ACK/NACK; it never interprets Istio semantics (that is
//! translate's job) and never parses config (the sources' job).

#[cfg(test)]
mod ads_tests;
pub mod cache;
pub mod connection;
pub mod debounce;
pub mod delta;
pub mod grpc;
pub mod push_queue;
pub mod server;
pub mod throttle;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;

use crate::model::proxy::Proxy;
use crate::model::push_context::PushContext;
use crate::resource_type::ResourceType;
use crate::status::{ConnectionStatus, SyncStatusStore};
use crate::xds::cache::{EncodedSet, ResourceCache};
use crate::xds::debounce::PushRequest;
use crate::xds::grpc::AdsLimits;
use crate::xds::push_queue::PushQueue;

/// Counters exported on /metrics (istiod's pilot_* names where they exist).
#[derive(Debug, Default)]
pub struct XdsMetrics {
    pub pushes: AtomicU64,
    pub push_bytes: AtomicU64,
    pub acks: AtomicU64,
    pub rejects: AtomicU64,
    /// NACKs by type (in `ResourceType::PUSH_ORDER`).
    pub rejects_by_type: [AtomicU64; ResourceType::COUNT],
    pub expired_nonces: AtomicU64,
    pub full_pushes: AtomicU64,
    /// Responses sent, by type (in `ResourceType::PUSH_ORDER`).
    pub pushes_by_type: [AtomicU64; ResourceType::COUNT],
    /// Delta streams opened.
    pub delta_connections: AtomicU64,
    /// Streams refused by the per-peer limit.
    pub refused_streams: AtomicU64,
    /// Streams cut because the proxy did not read (send timeout).
    pub stalled_streams: AtomicU64,
    /// NACKs by type and the Istio object they are traced to (`Kind namespace/name`).
    pub rejects_by_config: DashMap<(ResourceType, String), AtomicU64>,
    /// istiod's histograms and labelled counters, recorded as pushes happen.
    pub pilot: Arc<crate::metrics::PilotMetrics>,
}

impl XdsMetrics {
    /// Counts a response sent: its size (`pilot_xds_config_size_bytes{type}`), how long
    /// generating and sending it took since `started` (`pilot_xds_push_time{type}`) and how
    /// long handing it to the stream took (`pilot_xds_send_time`).
    pub fn count_push(
        &self,
        kind: ResourceType,
        bytes: usize,
        started: std::time::Instant,
        send: std::time::Duration,
    ) {
        let t = kind.metric_type();
        crate::metrics::PilotMetrics::observe(&self.pilot.config_size, t, bytes as f64);
        crate::metrics::PilotMetrics::observe(
            &self.pilot.push_time,
            t,
            started.elapsed().as_secs_f64(),
        );
        self.pilot.send_time.observe(send.as_secs_f64());
        self.pushes.fetch_add(1, Ordering::Relaxed);
        self.push_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.pushes_by_type[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A push taken from a connection's queue after `waited` (`pilot_proxy_queue_time`).
    pub fn count_dequeued(&self, waited: std::time::Duration) {
        self.pilot.queue_time.observe(waited.as_secs_f64());
    }

    /// `req` has reached a proxy (`pilot_proxy_convergence_time`, from its first change).
    pub fn count_converged(&self, req: &PushRequest) {
        if let Some(start) = req.start {
            self.pilot
                .convergence
                .observe(start.elapsed().as_secs_f64());
        }
    }

    /// Counts a NACK of `kind`, and one per Istio object it is traced to.
    pub fn count_reject(&self, kind: ResourceType, sources: &[String]) {
        self.rejects.fetch_add(1, Ordering::Relaxed);
        self.rejects_by_type[kind.index()].fetch_add(1, Ordering::Relaxed);
        for s in sources {
            self.rejects_by_config
                .entry((kind, s.clone()))
                .or_default()
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One live ADS stream, as the server and the debug API see it.
#[derive(Debug)]
pub struct ConnectionHandle {
    pub proxy: Arc<Proxy>,
    pub queue: PushQueue,
    pub status: Arc<ConnectionStatus>,
    /// The stream's outgoing responses (at most one waiting per type).
    pub outbox: Arc<grpc::Outbox>,
}

/// One push as the introspection page lists it.
#[derive(Debug, Clone)]
pub struct PushRecord {
    pub time: std::time::SystemTime,
    pub version: String,
    pub full: bool,
    /// Trigger → events merged into the push.
    pub triggers: std::collections::BTreeMap<&'static str, u32>,
    /// From the first change the push carries to the push.
    pub since_first_event: Option<std::time::Duration>,
}

/// How many pushes [`DiscoveryServer::recent_pushes`] keeps.
const PUSHES_KEPT: usize = 20;

/// Shared state of the discovery server: the current snapshot, the connected proxies' push
/// queues, sync status and the resource cache.
#[derive(Debug)]
pub struct DiscoveryServer {
    push_context: RwLock<Arc<PushContext>>,
    connections: DashMap<String, Arc<ConnectionHandle>>,
    pub status: Arc<SyncStatusStore>,
    pub cache: ResourceCache,
    pub metrics: XdsMetrics,
    /// This control plane's identity, sent in every response's `control_plane`.
    pub instance_id: String,
    /// istiod's control plane identifier JSON for `instance_id`.
    pub control_plane: String,
    connection_counter: AtomicU64,
    /// False until every source has delivered its first complete state.
    ready: AtomicBool,
    /// At most this many pushes are computed at once (istiod's PILOT_PUSH_THROTTLE).
    pub push_throttle: tokio::sync::Semaphore,
    /// New streams per second (istiod's PILOT_MAX_REQUESTS_PER_SECOND).
    pub connect_limiter: throttle::RateLimiter,
    /// Limits of the ADS transport.
    pub limits: AdsLimits,
    /// Recent endpoint-only snapshot changes: (from version, to version, hosts whose
    /// endpoints changed), newest last; what EDS encodings are spliced along.
    endpoint_changes: std::sync::Mutex<std::collections::VecDeque<EndpointChange>>,
    /// The last [`PUSHES_KEPT`] pushes, oldest first.
    recent_pushes: Mutex<std::collections::VecDeque<PushRecord>>,
}

/// An endpoint-only change between two snapshots.
#[derive(Debug)]
struct EndpointChange {
    from: String,
    to: String,
    hosts: std::collections::BTreeSet<String>,
}

/// Endpoint-only changes remembered (a splice may follow a short chain of them).
const ENDPOINT_CHANGES_KEPT: usize = 8;

/// Hosts whose endpoints differ between two registries.
fn changed_endpoint_hosts(
    old: &crate::model::registry::ServiceRegistry,
    new: &crate::model::registry::ServiceRegistry,
) -> std::collections::BTreeSet<String> {
    let mut hosts: std::collections::BTreeSet<String> = new
        .endpoints
        .iter()
        .filter(|(host, eps)| old.endpoints.get(*host) != Some(*eps))
        .map(|(host, _)| host.clone())
        .collect();
    hosts.extend(
        old.endpoints
            .keys()
            .filter(|host| !new.endpoints.contains_key(*host))
            .cloned(),
    );
    hosts
}

/// istiod's PILOT_PUSH_THROTTLE default.
pub const DEFAULT_PUSH_THROTTLE: usize = 100;
/// New ADS streams accepted per second (burst of one second's worth). istiod's default is 25;
/// ours is higher because a stream costs little here, and 10,000 proxies must converge
/// within a minute.
pub const DEFAULT_CONNECTIONS_PER_SECOND: f64 = 500.0;

impl DiscoveryServer {
    pub fn new(initial: PushContext, status: Arc<SyncStatusStore>, instance_id: String) -> Self {
        Self::with_limits(initial, status, instance_id, AdsLimits::default())
    }

    pub fn with_limits(
        initial: PushContext,
        status: Arc<SyncStatusStore>,
        instance_id: String,
        limits: AdsLimits,
    ) -> Self {
        DiscoveryServer {
            push_context: RwLock::new(Arc::new(initial)),
            connections: DashMap::new(),
            status,
            cache: ResourceCache::default(),
            metrics: XdsMetrics::default(),
            control_plane: server::control_plane_identifier(&instance_id),
            instance_id,
            connection_counter: AtomicU64::new(0),
            ready: AtomicBool::new(true),
            push_throttle: tokio::sync::Semaphore::new(DEFAULT_PUSH_THROTTLE),
            connect_limiter: throttle::RateLimiter::new(
                DEFAULT_CONNECTIONS_PER_SECOND,
                DEFAULT_CONNECTIONS_PER_SECOND,
            ),
            limits,
            endpoint_changes: Default::default(),
            recent_pushes: Default::default(),
        }
    }

    /// A NACK of `kind` from `proxy` with Envoy's `error` (of the response `nonce`): traced to
    /// the Istio objects behind the rejected config, counted and logged. Returns those objects
    /// for the connection's sync state. The proxy's current config of that type is generated
    /// again for it: NACKs are rare, and the rejected push is normally the current one.
    pub(crate) fn on_nack(
        &self,
        kind: ResourceType,
        proxy: &Proxy,
        error: &str,
        nonce: &str,
    ) -> Vec<String> {
        let push = self.push_context();
        let sources = crate::translate::origin::rejected_sources(
            &crate::translate::generate(kind, proxy, &push, None),
            error,
        );
        self.metrics.count_reject(kind, &sources);
        tracing::warn!(kind = %kind, nonce, error, sources = %sources.join(", "), "NACK: the proxy rejected config and keeps its last good config");
        sources
    }

    /// The last pushes, newest first.
    pub fn recent_pushes(&self) -> Vec<PushRecord> {
        let pushes = self.recent_pushes.lock().expect("recent pushes lock");
        pushes.iter().rev().cloned().collect()
    }

    /// Whether proxies are served (istiod's `IsServerReady`): not before the first complete
    /// state of every source, so a proxy never sees a half-listed mesh.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// The snapshot new responses are computed from.
    pub fn push_context(&self) -> Arc<PushContext> {
        self.push_context.read().expect("push context lock").clone()
    }

    /// `kind`'s resources for `proxy` in `push`: the encoding shared by every proxy of its
    /// scope, made on first use. Endpoints are keyed by the snapshot's full version, every
    /// other type by its config version (an endpoint-only change keeps them).
    ///
    /// After an endpoint-only change the endpoints are spliced: the previous encoding is kept
    /// but for the clusters of the services whose endpoints changed, which alone are encoded
    /// again.
    pub fn generate(
        &self,
        kind: ResourceType,
        proxy: &Proxy,
        push: &PushContext,
    ) -> Arc<EncodedSet> {
        let scope = crate::translate::scope_key(kind, proxy, push);
        if kind != ResourceType::Endpoint {
            return self.cache.get_or_generate(
                kind,
                scope,
                &push.config_version,
                &self.control_plane,
                || crate::translate::generate(kind, proxy, push, None),
            );
        }
        self.cache.get_or_make(
            kind,
            scope,
            &push.version,
            Box::new(|previous| {
                if let Some((generation, set)) = previous
                    && let Some(hosts) = self.endpoint_changes_between(generation, &push.version)
                {
                    return set.splice(
                        |name| {
                            crate::translate::parse_outbound_cluster_name(name)
                                .is_none_or(|(_, _, host)| hosts.contains(host))
                        },
                        |names| crate::translate::generate(kind, proxy, push, Some(names)),
                    );
                }
                EncodedSet::new(
                    kind,
                    crate::translate::generate(kind, proxy, push, None),
                    &self.control_plane,
                )
            }),
        )
    }

    /// The hosts whose endpoints changed from snapshot `from` to `to`, if every step between
    /// them was endpoint-only (and is still remembered).
    fn endpoint_changes_between(
        &self,
        from: &str,
        to: &str,
    ) -> Option<std::collections::BTreeSet<String>> {
        let changes = self.endpoint_changes.lock().expect("endpoint changes lock");
        let mut at = from;
        let mut hosts = std::collections::BTreeSet::new();
        while at != to {
            let step = changes.iter().find(|c| c.from == at)?;
            hosts.extend(step.hosts.iter().cloned());
            at = &step.to;
        }
        Some(hosts)
    }

    /// Installs a new snapshot and queues a push to every connected proxy.
    pub fn push(&self, ctx: PushContext, req: PushRequest) {
        let version = ctx.version.clone();
        let config_version = ctx.config_version.clone();
        let ctx = Arc::new(ctx);
        let previous = {
            let mut cur = self.push_context.write().expect("push context lock");
            std::mem::replace(&mut *cur, ctx.clone())
        };
        let changed = previous.version != version;
        if changed && !req.full && previous.config_version == config_version {
            let hosts = changed_endpoint_hosts(previous.registry(), ctx.registry());
            let mut changes = self.endpoint_changes.lock().expect("endpoint changes lock");
            if changes.len() >= ENDPOINT_CHANGES_KEPT {
                changes.pop_front();
            }
            changes.push_back(EndpointChange {
                from: previous.version.clone(),
                to: version.clone(),
                hosts,
            });
        }
        drop(previous);
        self.cache.retain(&config_version, &version);
        if !changed {
            tracing::debug!(version, "snapshot unchanged; nothing to push");
            return;
        }
        if req.full {
            self.metrics.full_pushes.fetch_add(1, Ordering::Relaxed);
        }
        for reason in req.reason.keys() {
            crate::metrics::PilotMetrics::count(&self.metrics.pilot.push_triggers, reason.as_str());
        }
        {
            let mut pushes = self.recent_pushes.lock().expect("recent pushes lock");
            if pushes.len() >= PUSHES_KEPT {
                pushes.pop_front();
            }
            pushes.push_back(PushRecord {
                time: std::time::SystemTime::now(),
                version: version.clone(),
                full: req.full,
                triggers: req.reason.iter().map(|(r, n)| (r.as_str(), *n)).collect(),
                since_first_event: req.start.map(|s| s.elapsed()),
            });
        }
        if let Some(start) = req.start {
            self.metrics
                .pilot
                .debounce_time
                .observe(start.elapsed().as_secs_f64());
        }
        tracing::info!(
            version,
            proxies = self.connections.len(),
            full = req.full,
            "pushing new snapshot"
        );
        for c in self.connections.iter() {
            c.queue.enqueue(req.clone());
        }
    }

    pub(crate) fn register(
        &self,
        proxy: Arc<Proxy>,
        outbox: Arc<grpc::Outbox>,
    ) -> (String, Arc<ConnectionHandle>) {
        let n = self.connection_counter.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("{}-{n}", proxy.name());
        let handle = Arc::new(ConnectionHandle {
            status: Arc::new(ConnectionStatus::new(proxy.clone())),
            proxy,
            queue: PushQueue::default(),
            outbox,
        });
        self.status.insert(&id, handle.status.clone());
        self.connections.insert(id.clone(), handle.clone());
        (id, handle)
    }

    /// A connected proxy by `pod.namespace`, full node id, or connection id.
    pub fn find_proxy(&self, id: &str) -> Option<Arc<Proxy>> {
        self.connections
            .iter()
            .find(|c| c.key() == id || c.proxy.name() == id || c.proxy.id == id)
            .map(|c| c.proxy.clone())
    }

    /// All live connections, sorted by proxy name.
    pub fn connections(&self) -> Vec<(String, Arc<ConnectionHandle>)> {
        let mut out: Vec<(String, Arc<ConnectionHandle>)> = self
            .connections
            .iter()
            .map(|c| (c.key().clone(), c.value().clone()))
            .collect();
        out.sort_by(|a, b| a.1.proxy.name().cmp(&b.1.proxy.name()).then(a.0.cmp(&b.0)));
        out
    }

    pub(crate) fn deregister(&self, connection_id: &str) {
        self.connections.remove(connection_id);
        self.status.remove(connection_id);
    }

    pub fn connected_proxies(&self) -> usize {
        self.connections.len()
    }
}
