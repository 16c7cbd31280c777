//! The debug HTTP API (istiod's `/debug/*` on the http and monitoring ports), `/ready` and
//! `/metrics`.
//!
//! Views: it renders what xds, status and translate already know and never changes the served
//! state or computes config of its own (config dumps call translate, like the ADS server; a
//! preview builds a snapshot beside the served one and drops it). The one thing it changes is
//! log levels (`/debug/logging`, through the logging module).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::proxy::Proxy;
use crate::protojson;
use crate::resource_type::ResourceType;
use crate::supervise::Health;
use crate::translate;
use crate::xds::DiscoveryServer;

#[derive(Clone)]
struct AppState {
    server: Arc<DiscoveryServer>,
    health: Arc<Health>,
    webhook: Arc<crate::webhook::WebhookMetrics>,
}

/// The debug router, served on `--http-addr` and `--monitoring-addr`; `/ready` and `/metrics`
/// include what `health` knows of the supervised tasks.
pub fn router(
    server: Arc<DiscoveryServer>,
    health: Arc<Health>,
    webhook: Arc<crate::webhook::WebhookMetrics>,
) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/preview", axum::routing::post(preview))
        .route("/debug/logging", get(logging_scopes))
        .route(
            "/debug/logging/{scope}",
            axum::routing::put(set_logging_level),
        )
        .route("/debug/configz", get(configz))
        .route("/debug/adsz", get(adsz))
        .route("/debug/registryz", get(registryz))
        .route("/debug/mesh", get(mesh))
        .route("/debug/endpointz", get(endpointz))
        .route("/debug/push_status", get(push_status))
        .with_state(AppState {
            server,
            health,
            webhook,
        })
}

/// 200 while proxies are served and every part works; else 503 with one line per reason.
async fn ready(State(s): State<AppState>) -> Response {
    let mut reasons = Vec::new();
    if !s.server.is_ready() {
        reasons.push("waiting for the first complete list from the Kubernetes API server".into());
    }
    for (task, cause) in s.health.down() {
        reasons.push(format!("{task}: {cause}"));
    }
    if reasons.is_empty() {
        return "ready\n".into_response();
    }
    let mut body = String::from("not ready:");
    if let [only] = reasons.as_slice() {
        let _ = writeln!(body, " {only}");
    } else {
        body.push('\n');
        for r in &reasons {
            let _ = writeln!(body, "- {r}");
        }
    }
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

#[derive(Deserialize)]
struct NamespaceQuery {
    namespace: Option<String>,
}

async fn syncz(State(s): State<AppState>, Query(q): Query<NamespaceQuery>) -> Response {
    Json(s.server.status.syncz(q.namespace.as_deref())).into_response()
}

#[derive(Deserialize)]
struct ProxyQuery {
    #[serde(rename = "proxyID")]
    proxy_id: Option<String>,
}

async fn config_dump(State(s): State<AppState>, Query(q): Query<ProxyQuery>) -> Response {
    let Some(id) = q.proxy_id else {
        return (StatusCode::BAD_REQUEST, "You must provide a proxyID in the query string, e.g. /debug/config_dump?proxyID=sleep.testns1\n").into_response();
    };
    let Some(proxy) = s.server.find_proxy(&id) else {
        return (
            StatusCode::NOT_FOUND,
            format!("Proxy not connected to this navarch instance: {id}; list connected proxies at /debug/syncz\n"),
        )
            .into_response();
    };
    match render_config_dump(&proxy, &s.server) {
        Ok(v) => Json(v).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering config dump: {e}\n"),
        )
            .into_response(),
    }
}

/// Envoy's ConfigDump JSON for what this proxy is served now.
pub fn render_config_dump(
    proxy: &Proxy,
    server: &DiscoveryServer,
) -> Result<Value, protojson::ProtoJsonError> {
    render_config_dump_of(proxy, &server.push_context())
}

/// Envoy's ConfigDump JSON for what `push` serves this proxy.
pub fn render_config_dump_of(
    proxy: &Proxy,
    push: &crate::model::push_context::PushContext,
) -> Result<Value, protojson::ProtoJsonError> {
    let render = |kind: ResourceType| -> Result<Vec<Value>, protojson::ProtoJsonError> {
        translate::generate(kind, proxy, push, None)
            .iter()
            .map(|r| protojson::any_to_json(&r.resource))
            .collect()
    };
    let wrap = |items: Vec<Value>, key: &str| -> Vec<Value> {
        items
            .into_iter()
            .map(|v| json!({ "version_info": push.version, key: v }))
            .collect()
    };
    let clusters = render(ResourceType::Cluster)?;
    let listeners = render(ResourceType::Listener)?;
    let routes = render(ResourceType::Route)?;
    let endpoints = render(ResourceType::Endpoint)?;
    // Private keys are redacted, as Envoy redacts them in its own dump.
    let secrets: Vec<Value> = render(ResourceType::Secret)?
        .into_iter()
        .map(|mut s| {
            if s["tls_certificate"]["private_key"].is_object() {
                s["tls_certificate"]["private_key"] = json!({"inline_string": "[redacted]"});
            }
            json!({"name": s["name"], "version_info": push.version, "secret": s})
        })
        .collect();
    Ok(json!({
        "configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "dynamic_active_clusters": wrap(clusters, "cluster")},
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "dynamic_listeners": listeners.into_iter().map(|l| json!({"name": l["name"], "active_state": {"version_info": push.version, "listener": l}})).collect::<Vec<_>>()},
            {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "dynamic_route_configs": wrap(routes, "route_config")},
            {"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump", "dynamic_endpoint_configs": wrap(endpoints, "endpoint_config")},
            {"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump", "dynamic_active_secrets": secrets},
        ]
    }))
}

/// The log scopes and their levels.
pub(crate) async fn logging_scopes() -> Response {
    Json(crate::logging::scopes()).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct LevelChange {
    output_level: String,
}

/// `PUT /debug/logging/<scope>` `{"output_level": "debug"}`: changes a scope's level at once
/// (also the introspection page's).
pub(crate) async fn set_logging_level(
    axum::extract::Path(scope): axum::extract::Path<String>,
    Json(change): Json<LevelChange>,
) -> Response {
    match crate::logging::set_level(&scope, &change.output_level) {
        Ok(()) => Json(crate::logging::scopes()).into_response(),
        Err(e @ crate::logging::LoggingError::NotInitialised) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

/// One file of a preview request.
#[derive(Debug, Deserialize)]
struct PreviewFile {
    name: String,
    text: String,
}

#[derive(Debug, Deserialize)]
struct PreviewRequest {
    files: Vec<PreviewFile>,
}

/// `POST /debug/preview` (`navarch preview`): the routing config of the files laid over the
/// current snapshot; for each connected proxy whose config would change, its config dump
/// before and after; the analyzer messages the change adds; and what was not previewed.
async fn preview(State(s): State<AppState>, Json(req): Json<PreviewRequest>) -> Response {
    let current = s.server.push_context();
    let mut changes = crate::sources::objects::ObjectSet::default();
    for f in &req.files {
        changes.merge(crate::sources::files::objects_from_text(
            std::path::Path::new(&f.name),
            &f.text,
        ));
    }
    // Workloads and the registry are not laid over: they are listed as not previewed.
    let kube = |kind: &str, m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        format!(
            "{kind} {}/{}",
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or_default()
        )
    };
    let istio = |kind: &str, m: &crate::model::config::ConfigMeta| {
        format!("{kind} {}/{}", m.namespace, m.name)
    };
    let skipped: Vec<String> = (changes.services.iter())
        .map(|o| kube("Service", &o.metadata))
        .chain(changes.pods.iter().map(|o| kube("Pod", &o.metadata)))
        .chain(
            changes
                .namespaces
                .iter()
                .map(|o| kube("Namespace", &o.metadata)),
        )
        .chain(
            changes
                .store
                .service_entries
                .iter()
                .map(|c| istio("ServiceEntry", &c.meta)),
        )
        .chain(
            changes
                .store
                .workload_entries
                .iter()
                .map(|c| istio("WorkloadEntry", &c.meta)),
        )
        .collect();
    let mut store = current.store.clone();
    store.overlay(std::mem::take(&mut changes.store));
    let candidate = crate::model::push_context::PushContext::new(store);

    let no_objects = crate::analysis::Objects::default();
    let no_locations = crate::analysis::Locations::default();
    let before: std::collections::BTreeSet<String> =
        crate::analysis::analyze(&current.store, &no_objects, &no_locations)
            .iter()
            .map(|m| m.log_line())
            .collect();
    let messages: Vec<Value> =
        crate::analysis::analyze(&candidate.store, &no_objects, &no_locations)
            .iter()
            .filter(|m| !before.contains(&m.log_line()))
            .map(|m| m.to_json())
            .collect();

    let mut changed = Vec::new();
    let mut unchanged = Vec::new();
    for (_, c) in s.server.connections() {
        let proxy = &c.proxy;
        let same = ResourceType::PUSH_ORDER.iter().all(|kind| {
            let digests = |push: &crate::model::push_context::PushContext| {
                translate::generate(*kind, proxy, push, None)
                    .into_iter()
                    .map(|r| (r.name, r.digest))
                    .collect::<BTreeMap<_, _>>()
            };
            digests(&current) == digests(&candidate)
        });
        if same {
            unchanged.push(proxy.name());
            continue;
        }
        match (
            render_config_dump_of(proxy, &current),
            render_config_dump_of(proxy, &candidate),
        ) {
            (Ok(before), Ok(after)) => changed.push(json!({
                "proxy": proxy.name(),
                "before": before,
                "after": after,
            })),
            (Err(e), _) | (_, Err(e)) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("rendering {}'s config: {e}\n", proxy.name()),
                )
                    .into_response();
            }
        }
    }
    Json(json!({
        "changed": changed,
        "unchanged": unchanged,
        "skipped": skipped,
        "messages": messages,
    }))
    .into_response()
}

/// Every stored config object and every rejected document.
async fn configz(State(s): State<AppState>) -> Response {
    let push = s.server.push_context();
    let store = &push.store;
    let mut configs = Vec::new();
    let mut add = |meta: &crate::model::config::ConfigMeta, spec: Value| {
        configs.push(json!({
            "kind": meta.kind.as_str(),
            "apiVersion": meta.api_version,
            "metadata": {"name": meta.name, "namespace": meta.namespace, "labels": meta.labels, "annotations": meta.annotations, "creationTimestamp": meta.creation_timestamp, "resourceVersion": meta.resource_version},
            "source": meta.source,
            "spec": spec,
        }));
    };
    macro_rules! each {
        ($list:expr) => {
            for c in &$list {
                add(
                    &c.meta,
                    serde_json::to_value(&c.spec).unwrap_or(Value::Null),
                );
            }
        };
    }
    each!(store.virtual_services);
    each!(store.destination_rules);
    each!(store.gateways);
    each!(store.service_entries);
    each!(store.sidecars);
    each!(store.workload_entries);
    each!(store.envoy_filters);
    Json(json!({
        "version": push.version,
        "configs": configs,
        "errors": store.errors.iter().map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
            v["error"] = Value::String(e.to_string());
            v
        }).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn adsz(State(s): State<AppState>) -> Response {
    let clients: Vec<Value> = s
        .server
        .connections()
        .into_iter()
        .map(|(conn, c)| {
            let p = &c.proxy;
            let watches: Vec<&str> = s
                .server
                .status
                .watched_types(&conn)
                .into_iter()
                .map(|k| k.type_url())
                .collect();
            json!({
                "connectionId": conn,
                "node": p.id,
                "proxy": p.name(),
                "namespace": p.namespace,
                "interceptionMode": p.interception_mode.as_str(),
                "ips": p.ip_addresses,
                "labels": p.labels,
                "watches": watches,
                "pendingResponses": c.outbox.pending(),
            })
        })
        .collect();
    Json(json!({"totalClients": clients.len(), "clients": clients})).into_response()
}

async fn registryz(State(s): State<AppState>) -> Response {
    let push = s.server.push_context();
    Json(push.registry().services.values().collect::<Vec<_>>()).into_response()
}

/// The mesh config in force (istiod's `/debug/mesh`).
async fn mesh(State(s): State<AppState>) -> Response {
    let push = s.server.push_context();
    Json(&push.store.mesh).into_response()
}

async fn endpointz(State(s): State<AppState>) -> Response {
    let push = s.server.push_context();
    Json(&push.registry().endpoints).into_response()
}

async fn push_status(State(s): State<AppState>) -> Response {
    let push = s.server.push_context();
    let m = &s.server.metrics;
    Json(json!({
        "instance": s.server.instance_id,
        "version": push.version,
        "connectedProxies": s.server.connected_proxies(),
        "configErrors": push.store.errors.len(),
        "pushes": m.pushes.load(Ordering::Relaxed),
        "pushBytes": m.push_bytes.load(Ordering::Relaxed),
        "fullPushes": m.full_pushes.load(Ordering::Relaxed),
        "pushesByType": ResourceType::PUSH_ORDER
            .iter()
            .zip(&m.pushes_by_type)
            .map(|(k, n)| (k.short().to_string(), json!(n.load(Ordering::Relaxed))))
            .collect::<serde_json::Map<_, _>>(),
        "deltaConnections": m.delta_connections.load(Ordering::Relaxed),
        "rejectsByType": ResourceType::PUSH_ORDER
            .iter()
            .zip(&m.rejects_by_type)
            .map(|(k, n)| (k.short().to_string(), json!(n.load(Ordering::Relaxed))))
            .collect::<serde_json::Map<_, _>>(),
        "encodings": s.server.cache.encodings(),
        "encodedResources": s.server.cache.encoded_resources(),
        "cachedSets": s.server.cache.size().0,
        "cachedBytes": s.server.cache.size().1,
        "heapAllocatedBytes": heap().0,
        "heapResidentBytes": heap().1,
        "refusedStreams": m.refused_streams.load(Ordering::Relaxed),
        "stalledStreams": m.stalled_streams.load(Ordering::Relaxed),
    }))
    .into_response()
}

/// The allocator's view of the heap: bytes allocated by the program and bytes it keeps
/// resident (jemalloc's `stats.allocated` and `stats.resident`; zero when jemalloc is not the
/// allocator, as in unit tests).
fn heap() -> (u64, u64) {
    if tikv_jemalloc_ctl::epoch::advance().is_err() {
        return (0, 0);
    }
    let allocated = tikv_jemalloc_ctl::stats::allocated::read().unwrap_or(0) as u64;
    let resident = tikv_jemalloc_ctl::stats::resident::read().unwrap_or(0) as u64;
    (allocated, resident)
}

/// Prometheus text with istiod's metric names, types, labels and buckets
/// ([`crate::metrics`]), then navarch's own series (heap, cache, webhook, supervised tasks).
async fn metrics(State(s): State<AppState>) -> Response {
    let m = &s.server.metrics;
    let (hits, misses) = s.server.cache.stats();
    let push = s.server.push_context();
    let (allocated, resident) = heap();
    let mut by_version: BTreeMap<String, i64> = BTreeMap::new();
    for (_, c) in s.server.connections() {
        *by_version.entry(c.proxy.istio_version.clone()).or_default() += 1;
    }
    let per_type = |counts: &[AtomicU64; ResourceType::COUNT]| -> Vec<(&'static str, u64)> {
        [
            ResourceType::Cluster,
            ResourceType::Endpoint,
            ResourceType::Listener,
            ResourceType::Route,
        ]
        .iter()
        .map(|k| (k.metric_type(), counts[k.index()].load(Ordering::Relaxed)))
        .collect()
    };
    let mut rejects_by_config: Vec<(String, String, u64)> = m
        .rejects_by_config
        .iter()
        .map(|e| {
            let (kind, config) = e.key();
            (
                kind.metric_type().to_string(),
                config.clone(),
                e.value().load(Ordering::Relaxed),
            )
        })
        .collect();
    rejects_by_config.sort();
    #[rustfmt::skip]
    let mut extra: Vec<(&'static str, &'static str, &'static str, u64)> = vec![
        ("navarch_xds_push_bytes", "counter", "Bytes of resources sent.", m.push_bytes.load(Ordering::Relaxed)),
        ("navarch_heap_allocated_bytes", "gauge", "Bytes the control plane has allocated (jemalloc stats.allocated).", allocated),
        ("navarch_heap_resident_bytes", "gauge", "Bytes of heap kept resident (jemalloc stats.resident).", resident),
        ("navarch_xds_acks", "counter", "ACKs received.", m.acks.load(Ordering::Relaxed)),
        ("pilot_xds_expired_nonce", "counter", "Total number of XDS requests with an expired nonce.", m.expired_nonces.load(Ordering::Relaxed)),
        ("navarch_full_pushes", "counter", "Full pushes started.", m.full_pushes.load(Ordering::Relaxed)),
        ("navarch_xds_cache_hits", "counter", "Encoded resource cache hits.", hits),
        ("navarch_xds_cache_misses", "counter", "Encoded resource cache misses.", misses),
        ("navarch_rejected_configs", "gauge", "Config documents rejected by validation now.", push.store.errors.len() as u64),
    ];
    extra.extend(
        s.webhook
            .counters()
            .map(|(name, help, value)| (name, "counter", help, value)),
    );
    let snapshot = crate::metrics::Snapshot {
        proxies_by_version: by_version.into_iter().collect(),
        services: push.store.registry.services.len() as i64,
        virtual_services: push.store.virtual_services.len() as i64,
        pushes: per_type(&m.pushes_by_type),
        rejects: per_type(&m.rejects_by_type),
        rejects_by_config,
        extra,
    };
    let mut out = crate::metrics::render(&m.pilot, &snapshot);
    s.health.write_metrics(&mut out);
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}
