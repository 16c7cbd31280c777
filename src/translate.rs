//! Translation: pure functions from a proxy and a snapshot to Envoy resources
//! (`(&Proxy, &PushContext) -> Vec<Resource>`), with Istio's names and defaults.
//!
//! This is the one place that answers "what does this proxy get?"; the ADS server and
//! `/debug/config_dump` both call it. It reads only the model, does no I/O, and knows nothing
//! of streams, nonces or versions.

pub mod cluster;
pub mod endpoint;
pub mod gateway;
pub mod http_policy;
pub mod listener;
pub mod route;
pub mod traffic_policy;

use std::fmt;

use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::{Message, Name};

use crate::model::proxy::{InterceptionMode, NodeType, Proxy};
use crate::model::push_context::PushContext;

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";

/// The xDS resource types navarch generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Cluster,
    Endpoint,
    Listener,
    Route,
    /// SDS: TLS certificates gateways terminate with.
    Secret,
}

impl ResourceType {
    /// Istio's push order: CDS, EDS, LDS, RDS (clusters before the listeners that use them),
    /// then the secrets listeners wait for.
    pub const PUSH_ORDER: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => CLUSTER_TYPE,
            ResourceType::Endpoint => ENDPOINT_TYPE,
            ResourceType::Listener => LISTENER_TYPE,
            ResourceType::Route => ROUTE_TYPE,
            ResourceType::Secret => SECRET_TYPE,
        }
    }

    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::PUSH_ORDER.into_iter().find(|t| t.type_url() == url)
    }

    /// CDS and LDS are wildcard types (the proxy gets everything); EDS and RDS are requested by
    /// name.
    pub fn is_wildcard(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    /// Short name as istioctl shows it.
    pub fn short(self) -> &'static str {
        match self {
            ResourceType::Cluster => "CDS",
            ResourceType::Endpoint => "EDS",
            ResourceType::Listener => "LDS",
            ResourceType::Route => "RDS",
            ResourceType::Secret => "SDS",
        }
    }

    /// The proxy properties this type's output depends on. Proxies with equal keys get the
    /// same bytes, so the xds layer encodes once per key.
    pub fn scope_key(self, proxy: &Proxy, push: &PushContext) -> String {
        // The Sidecar that scopes the proxy (chosen by namespace and labels) decides which
        // services, VirtualServices, ingress listeners and catch-all policy it gets.
        if proxy.node_type == NodeType::Router {
            // Gateways: which Gateways select the proxy (labels), port translation through
            // its Services (namespace), and, without interception, its bind address.
            let base = format!(
                "router|{}|{:?}|{}",
                proxy.namespace,
                proxy.labels,
                proxy.interception_mode.as_str()
            );
            return match self {
                ResourceType::Listener if proxy.interception_mode == InterceptionMode::None => {
                    format!("{base}|{}", proxy.primary_ip())
                }
                _ => base,
            };
        }
        let sidecar = push.sidecar_key(proxy);
        match self {
            // DestinationRule lookup and exportTo depend on the proxy namespace; ingress
            // clusters (no interception) on the proxy IP.
            // clusters (a Sidecar's `ingress` without interception) on the proxy IP.
            ResourceType::Cluster => {
                let with_ingress = proxy.interception_mode == InterceptionMode::None
                    && push
                        .sidecar_for(proxy)
                        .is_some_and(|s| !s.spec.ingress.is_empty());
                let ip = if with_ingress {
                    proxy.primary_ip().to_string()
                } else {
                    String::new()
                };
                format!(
                    "{}|{}|{ip}|{sidecar}",
                    proxy.namespace,
                    proxy.interception_mode.as_str()
                )
            }
            // Subset labels come from the DestinationRule this namespace sees.
            ResourceType::Endpoint => format!("{}|{sidecar}", proxy.namespace),
            // The layout depends on the interception mode; without interception listeners
            // also bind the proxy's own IP.
            ResourceType::Listener => match proxy.interception_mode {
                InterceptionMode::None => {
                    format!("{}|NONE|{}|{sidecar}", proxy.namespace, proxy.primary_ip())
                }
                mode => format!("{}|{}|{sidecar}", proxy.namespace, mode.as_str()),
            },
            // Short domains, VirtualService visibility and sourceLabels matches.
            ResourceType::Route => format!(
                "{}|{}|{:?}|{sidecar}",
                proxy.namespace, proxy.dns_domain, proxy.labels
            ),
            // Sidecars get no gateway secrets.
            ResourceType::Secret => "sidecar".to_string(),
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
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
    match kind {
        ResourceType::Cluster => cluster::build_clusters(proxy, push)
            .iter()
            .map(|c| Resource::new(c.name.clone(), c))
            .collect(),
        ResourceType::Listener if proxy.node_type == NodeType::Router => {
            gateway::build_gateway_listeners(proxy, push)
                .iter()
                .map(|l| Resource::new(l.name.clone(), l))
                .collect()
        }
        ResourceType::Listener => listener::build_listeners(proxy, push)
            .iter()
            .map(|l| Resource::new(l.name.clone(), l))
            .collect(),
        ResourceType::Route if proxy.node_type == NodeType::Router => {
            gateway::build_gateway_route_configs(proxy, push)
                .iter()
                .filter(|r| wanted(&r.name))
                .map(|r| Resource::new(r.name.clone(), r))
                .collect()
        }
        ResourceType::Route => route::build_route_configs(proxy, push)
            .iter()
            .filter(|r| wanted(&r.name))
            .map(|r| Resource::new(r.name.clone(), r))
            .collect(),
        ResourceType::Secret => gateway::build_secrets(proxy, push)
            .iter()
            .filter(|s| wanted(&s.name))
            .map(|s| Resource::new(s.name.clone(), s))
            .collect(),
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
                kind.scope_key(&a, &push),
                kind.scope_key(&b, &push),
                "{kind}"
            );
            assert_ne!(
                kind.scope_key(&a, &push),
                kind.scope_key(&other_ns, &push),
                "{kind}"
            );
        }
        // Without interception listeners bind the proxy's own IP; with REDIRECT they do not.
        assert_ne!(
            ResourceType::Listener.scope_key(&a, &push),
            ResourceType::Listener.scope_key(&b, &push)
        );
        let ra = proxy("sidecar~10.0.0.1~a.ns1~ns1.svc.cluster.local", "REDIRECT");
        let rb = proxy("sidecar~10.0.0.2~b.ns1~ns1.svc.cluster.local", "REDIRECT");
        assert_eq!(
            ResourceType::Listener.scope_key(&ra, &push),
            ResourceType::Listener.scope_key(&rb, &push)
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
