//! Translation: pure functions from a proxy and a snapshot to Envoy resources
//! (`(&Proxy, &PushContext) -> Vec<Resource>`), with Istio's names and defaults.
//!
//! This is the one place that answers "what does this proxy get?"; the ADS server and
//! `/debug/config_dump` both call it. It reads only the model, does no I/O, and knows nothing
//! of streams, nonces or versions.

pub mod cluster;
pub mod common;
pub mod endpoint;
pub mod extract;
pub mod filters;
pub mod gateway;
pub mod http_policy;
pub mod inbound;
pub mod listener;
pub mod origin;
pub mod route;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod traffic_policy;

use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::{Message, Name};

use crate::model::proxy::{InterceptionMode, NodeType, Proxy};
use crate::model::push_context::PushContext;

pub use crate::resource_type::{
    CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, ResourceType, SECRET_TYPE,
};

pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
/// Istio binds inbound connections to the workload from this address, which iptables lets
/// through (no loop back into the sidecar).
pub(crate) const INBOUND_PASSTHROUGH_BIND_IP: &str = "127.0.0.6";

/// What of a proxy one type's output depends on (istiod's `XdsCacheEntry` key). Proxies with
/// equal keys get the same bytes, so the xds layer encodes once per key and every stream of
/// the scope shares it. Typed, and only as fine as the output needs: labels are part of it
/// only for routers (Gateway selection) and, for sidecars, only the label keys that some
/// VirtualService's `sourceLabels` looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScopeKey {
    node_type: NodeType,
    namespace: String,
    mode: InterceptionMode,
    /// The proxy's own address, where output binds it (no interception).
    ip: Option<IpAddr>,
    /// Position of the Sidecar that scopes the proxy in this snapshot's list.
    sidecar: Option<usize>,
    /// The labels output depends on.
    labels: Vec<(String, String)>,
    /// The DNS domain short host names expand in (route domains).
    dns_domain: Option<String>,
    /// Every address IPv6 (DNS lookup family of clusters).
    ipv6_only: bool,
    /// The ports the proxy's own workload serves (inbound listeners and clusters).
    inbound: Vec<inbound::InboundPort>,
    /// The literal tags of the HTTP connection managers' tracing (listeners).
    trace_literals: Vec<String>,
}

impl ScopeKey {
    /// A key that only names the proxy's kind, namespace and interception mode.
    fn new(node_type: NodeType, namespace: &str, mode: InterceptionMode) -> ScopeKey {
        ScopeKey {
            node_type,
            namespace: namespace.to_string(),
            mode,
            ip: None,
            sidecar: None,
            labels: Vec::new(),
            dns_domain: None,
            ipv6_only: false,
            inbound: Vec::new(),
            trace_literals: Vec::new(),
        }
    }

    /// A key that only names a namespace (tests of the cache).
    pub fn for_test(namespace: &str) -> ScopeKey {
        ScopeKey::new(NodeType::Sidecar, namespace, InterceptionMode::Redirect)
    }
}

/// The scope key of `kind` for `proxy` in `push`.
pub fn scope_key(kind: ResourceType, proxy: &Proxy, push: &PushContext) -> ScopeKey {
    let mut key = ScopeKey::new(proxy.node_type, &proxy.namespace, proxy.interception_mode);
    if kind == ResourceType::Listener {
        key.trace_literals = filters::trace_literals(proxy, push.mesh())
            .into_iter()
            .map(|(_, v)| v)
            .collect();
    }
    let no_interception = proxy.interception_mode == InterceptionMode::None;
    if proxy.node_type == NodeType::Router {
        // Gateways: which Gateways select the proxy (labels), port translation through its
        // Services (namespace), and, without interception, its bind address.
        key.labels = proxy
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if kind == ResourceType::Listener && no_interception {
            key.ip = proxy.ip_addresses.first().copied();
        }
        return key;
    }
    // The Sidecar that scopes the proxy (chosen by namespace and labels) decides which
    // services, VirtualServices, ingress listeners and catch-all policy it gets.
    let sidecar = push.sidecar_for(proxy);
    key.sidecar = sidecar.and_then(|s| {
        push.store
            .sidecars
            .iter()
            .position(|c| std::ptr::eq(&**c, s))
    });
    let source_labels = || {
        proxy
            .labels
            .iter()
            .filter(|(k, _)| push.source_label_keys().contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    match kind {
        // DestinationRule lookup and exportTo depend on the namespace; ingress clusters (a
        // Sidecar's `ingress` without interception) on the proxy IP.
        ResourceType::Cluster => {
            if no_interception && sidecar.is_some_and(|s| !s.spec.ingress.is_empty()) {
                key.ip = proxy.ip_addresses.first().copied();
            }
            key.ipv6_only =
                !proxy.ip_addresses.is_empty() && proxy.ip_addresses.iter().all(IpAddr::is_ipv6);
            key.inbound = inbound::inbound_ports(proxy, push);
        }
        // Subset labels come from the DestinationRule this namespace sees.
        ResourceType::Endpoint => {}
        // The layout depends on the interception mode; without interception listeners also
        // bind the proxy's own IP; tcp and tls routes may match sourceLabels.
        ResourceType::Listener => {
            if no_interception {
                key.ip = proxy.ip_addresses.first().copied();
            }
            key.labels = source_labels();
            key.inbound = inbound::inbound_ports(proxy, push);
        }
        // Short domains, VirtualService visibility and sourceLabels matches.
        ResourceType::Route => {
            key.dns_domain = Some(proxy.dns_domain.clone());
            key.labels = source_labels();
        }
        // Sidecars get no gateway secrets.
        ResourceType::Secret => {
            key.namespace.clear();
            key.mode = InterceptionMode::Redirect;
        }
    }
    key
}

/// One named, encoded resource, with a digest of its bytes (computed once, when generated,
/// so that versions never rehash the bytes per proxy).
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    pub resource: Any,
    pub digest: [u8; 16],
}

impl Resource {
    fn new<M: Message + Name>(name: impl Into<String>, msg: &M) -> Self {
        // Map fields in a fixed order: equal config, equal bytes and versions on every
        // replica.
        let value = crate::protojson::canonical_bytes(&M::full_name(), msg.encode_to_vec());
        Resource::from_any(
            name,
            Any {
                type_url: M::type_url(),
                value,
            },
        )
    }

    pub fn from_any(name: impl Into<String>, resource: Any) -> Self {
        use sha2::Digest;
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&sha2::Sha256::digest(&resource.value)[..16]);
        Resource {
            name: name.into(),
            resource,
            digest,
        }
    }
}

/// All resources of one type for `proxy`. For EDS and RDS `names` narrows the result to what
/// the proxy asked for (None = everything the proxy could ask for).
pub fn generate(
    kind: ResourceType,
    proxy: &Proxy,
    push: &PushContext,
    names: Option<&[String]>,
) -> Vec<Resource> {
    let wanted = |n: &str| names.is_none_or(|names| names.iter().any(|w| w == n));
    let all = |_: &str| true;
    let router = proxy.node_type == NodeType::Router;
    match kind {
        ResourceType::Cluster => named(sidecar_clusters(proxy, push), |c| &c.name, all),
        ResourceType::Listener if router => named(
            gateway::build_gateway_listeners(proxy, push),
            |l| &l.name,
            all,
        ),
        ResourceType::Listener => named(sidecar_listeners(proxy, push), |l| &l.name, all),
        ResourceType::Route if router => named(
            route::build_gateway_route_configs(proxy, push),
            |r| &r.name,
            wanted,
        ),
        ResourceType::Route => named(route::build_route_configs(proxy, push), |r| &r.name, wanted),
        ResourceType::Secret => named(gateway::build_secrets(proxy, push), |s| &s.name, wanted),
        ResourceType::Endpoint => {
            let names: Vec<String> = match names {
                Some(n) => n.to_vec(),
                None => cluster::eds_cluster_names(proxy, push),
            };
            names
                .iter()
                .filter_map(|n| endpoint::build_load_assignment(proxy, push, n))
                .map(|cla| Resource::new(cla.cluster_name.clone(), &cla))
                .collect()
        }
    }
}

/// The clusters of a sidecar or gateway: outbound and catch-all ones, then inbound ones.
fn sidecar_clusters(proxy: &Proxy, push: &PushContext) -> Vec<Cluster> {
    let mut out = cluster::build_clusters(proxy, push);
    out.extend(inbound::build_inbound_clusters(proxy, push));
    out
}

/// The listeners of a sidecar: outbound ones and `virtualOutbound`, then inbound ones.
fn sidecar_listeners(proxy: &Proxy, push: &PushContext) -> Vec<Listener> {
    let mut out = listener::build_listeners(proxy, push);
    out.extend(inbound::build_inbound_listeners(proxy, push));
    out
}

/// `items` as resources, each under its `name`, keeping those whose name `keep` accepts.
fn named<M: Message + Name>(
    items: Vec<M>,
    name: impl Fn(&M) -> &String,
    keep: impl Fn(&str) -> bool,
) -> Vec<Resource> {
    items
        .iter()
        .filter(|m| keep(name(m)))
        .map(|m| Resource::new(name(m).clone(), m))
        .collect()
}

/// Istio's outbound cluster name: `outbound|<port>|<subset>|<host>`.
pub fn outbound_cluster_name(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// Parses `outbound|<port>|<subset>|<host>`.
pub fn parse_outbound_cluster_name(name: &str) -> Option<(u16, &str, &str)> {
    let mut parts = name.splitn(4, '|');
    if parts.next()? != "outbound" {
        return None;
    }
    let port = parts.next()?.parse().ok()?;
    let subset = parts.next()?;
    let host = parts.next()?;
    Some((port, subset, host))
}

pub(crate) fn pb_duration(d: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// `{ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3}`, as istiod writes it.
pub(crate) fn ads_config_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        initial_fetch_timeout: Some(pb_duration(std::time::Duration::ZERO)),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

pub(crate) fn any<M: Message + Name>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: msg.encode_to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(id: &str, mode: &str) -> Proxy {
        let meta = serde_json::json!({"INTERCEPTION_MODE": mode});
        Proxy::from_node(id, meta.as_object().unwrap()).unwrap()
    }

    #[test]
    fn proxies_that_get_the_same_bytes_share_a_scope() {
        let a = proxy("sidecar~127.0.0.21~a.ns1~ns1.svc.cluster.local", "NONE");
        let b = proxy("sidecar~127.0.0.22~b.ns1~ns1.svc.cluster.local", "NONE");
        let other_ns = proxy("sidecar~127.0.0.23~c.ns2~ns2.svc.cluster.local", "NONE");
        let push = PushContext::new(Default::default());
        for kind in [
            ResourceType::Cluster,
            ResourceType::Endpoint,
            ResourceType::Route,
        ] {
            assert_eq!(
                scope_key(kind, &a, &push),
                scope_key(kind, &b, &push),
                "{kind}"
            );
            assert_ne!(
                scope_key(kind, &a, &push),
                scope_key(kind, &other_ns, &push),
                "{kind}"
            );
        }
        // Without interception listeners bind the proxy's own IP; with REDIRECT they do not.
        assert_ne!(
            scope_key(ResourceType::Listener, &a, &push),
            scope_key(ResourceType::Listener, &b, &push)
        );
        let ra = proxy("sidecar~10.0.0.1~a.ns1~ns1.svc.cluster.local", "REDIRECT");
        let rb = proxy("sidecar~10.0.0.2~b.ns1~ns1.svc.cluster.local", "REDIRECT");
        assert_eq!(
            scope_key(ResourceType::Listener, &ra, &push),
            scope_key(ResourceType::Listener, &rb, &push)
        );
    }

    /// Pods with different labels share route and listener encodings unless some
    /// VirtualService matches on those labels' keys.
    #[test]
    fn labels_split_scopes_only_where_source_labels_look_at_them() {
        let labelled = |id: &str, app: &str, version: &str| {
            let meta = serde_json::json!({
                "INTERCEPTION_MODE": "REDIRECT",
                "LABELS": {"app": app, "version": version},
            });
            Proxy::from_node(id, meta.as_object().unwrap()).unwrap()
        };
        let a = labelled("sidecar~10.0.0.1~a.ns1~ns1.svc.cluster.local", "a", "v1");
        let b = labelled("sidecar~10.0.0.2~b.ns1~ns1.svc.cluster.local", "b", "v1");
        let c = labelled("sidecar~10.0.0.3~c.ns1~ns1.svc.cluster.local", "b", "v2");
        let plain = PushContext::new(Default::default());
        for kind in [ResourceType::Route, ResourceType::Listener] {
            assert_eq!(scope_key(kind, &a, &plain), scope_key(kind, &b, &plain));
        }
        let vs: crate::model::istio::VirtualService = serde_json::from_value(serde_json::json!({
            "hosts": ["reviews"],
            "http": [{"match": [{"sourceLabels": {"version": "v2"}}], "route": [{"destination": {"host": "reviews"}}]}],
        }))
        .unwrap();
        let mut store = crate::model::push_context::ConfigStore::default();
        store
            .virtual_services
            .push(std::sync::Arc::new(crate::model::config::Config {
                meta: crate::model::config::ConfigMeta {
                    kind: crate::model::config::ConfigKind::VirtualService,
                    api_version: "networking.istio.io/v1".into(),
                    name: "reviews".into(),
                    namespace: "ns1".into(),
                    labels: Default::default(),
                    annotations: Default::default(),
                    creation_timestamp: None,
                    resource_version: None,
                    source: "test".into(),
                },
                spec: vs,
            }));
        let push = PushContext::new(store);
        for kind in [ResourceType::Route, ResourceType::Listener] {
            // `app` is not looked at: a and b still share; `version` is: b and c do not.
            assert_eq!(scope_key(kind, &a, &push), scope_key(kind, &b, &push));
            assert_ne!(scope_key(kind, &b, &push), scope_key(kind, &c, &push));
        }
        assert_eq!(
            scope_key(ResourceType::Cluster, &b, &push),
            scope_key(ResourceType::Cluster, &c, &push)
        );
    }

    #[test]
    fn cluster_names_round_trip() {
        let n = outbound_cluster_name(8000, "v1", "httpbin.testns1.svc.cluster.local");
        assert_eq!(n, "outbound|8000|v1|httpbin.testns1.svc.cluster.local");
        assert_eq!(
            parse_outbound_cluster_name(&n),
            Some((8000, "v1", "httpbin.testns1.svc.cluster.local"))
        );
        assert_eq!(parse_outbound_cluster_name("inbound|80||"), None);
    }
}
