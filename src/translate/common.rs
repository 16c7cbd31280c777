//! What every builder shares: socket addresses, upstream protocol options, string matchers,
//! cluster names of a destination, and which outbound ports a proxy has. A leaf: it uses the
//! model and Envoy's types, never a sibling builder (listener, route, cluster, gateway,
//! endpoint), so no builder reaches into another.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, BindConfig, Http1ProtocolOptions, Http2ProtocolOptions, Metadata, SocketAddress,
    address,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::explicit_http_config::ProtocolConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};

use crate::model::config::Config;
use crate::model::istio::VirtualService;
use crate::model::istio::common::StringMatch;
use crate::model::istio::virtual_service::Destination;
use crate::model::proxy::Proxy;
use crate::model::push_context::{PushContext, resolve_short_name};
use crate::model::registry::{Protocol, Service};
use crate::translate::{any, outbound_cluster_name};

/// A protobuf `Value` holding `kind`.
pub(crate) fn pb_value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

/// Metadata whose `filter_metadata.istio` is `istio`, as istiod tags clusters and routes.
pub(crate) fn istio_metadata(istio: Struct) -> Metadata {
    Metadata {
        filter_metadata: HashMap::from([("istio".to_string(), istio)]),
        ..Default::default()
    }
}

/// `filter_metadata.istio.services`: the services a cluster serves, each as
/// `{host, name, namespace}` (how istiod records them).
pub(crate) fn istio_services_struct<'a>(
    services: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> Struct {
    let s = |v: &str| pb_value(Kind::StringValue(v.to_string()));
    let values = services
        .into_iter()
        .map(|(host, name, namespace)| {
            let mut svc = Struct::default();
            svc.fields.insert("host".into(), s(host));
            svc.fields.insert("name".into(), s(name));
            svc.fields.insert("namespace".into(), s(namespace));
            pb_value(Kind::StructValue(svc))
        })
        .collect();
    let mut istio = Struct::default();
    istio.fields.insert(
        "services".into(),
        pb_value(Kind::ListValue(ListValue { values })),
    );
    istio
}

/// A cluster's `typed_extension_protocol_options` holding `options`.
pub(crate) fn http_protocol_options_map(
    options: &HttpProtocolOptions,
) -> HashMap<String, envoy_types::pb::google::protobuf::Any> {
    HashMap::from([(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
        any(options),
    )])
}

/// Upstream connections bound to `ip` (any port), as istiod binds inbound traffic to 127.0.0.6.
pub(crate) fn source_bind(ip: &str) -> BindConfig {
    BindConfig {
        source_address: Some(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(0)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A socket address as Envoy wants it.
pub(crate) fn socket_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// HTTP/2 ports talk HTTP/2 upstream; HTTP/1.1 ports keep Envoy's default; unknown protocols
/// follow the downstream.
pub(crate) fn upstream_protocol_options(protocol: Protocol) -> Option<HttpProtocolOptions> {
    let options = if protocol.is_http2() {
        UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                Http2ProtocolOptions::default(),
            )),
        })
    } else if protocol == Protocol::Unsupported {
        UpstreamProtocolOptions::UseDownstreamProtocolConfig(downstream_protocol())
    } else {
        return None;
    };
    Some(HttpProtocolOptions {
        upstream_protocol_options: Some(options),
        ..Default::default()
    })
}

pub(crate) fn downstream_protocol() -> UseDownstreamHttpConfig {
    UseDownstreamHttpConfig {
        http_protocol_options: Some(Http1ProtocolOptions::default()),
        http2_protocol_options: Some(Http2ProtocolOptions::default()),
        ..Default::default()
    }
}

/// A `StringMatch` as an Envoy `StringMatcher`; `None` for the empty match (`{}`).
pub(crate) fn string_matcher(m: &StringMatch, ignore_case: bool) -> Option<StringMatcher> {
    let pattern = match m {
        StringMatch::Any => return None,
        StringMatch::Exact(s) => MatchPattern::Exact(s.clone()),
        StringMatch::Prefix(s) => MatchPattern::Prefix(s.clone()),
        StringMatch::Regex(r) => MatchPattern::SafeRegex(regex_matcher(r)),
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    })
}

pub(crate) fn regex_matcher(regex: &str) -> RegexMatcher {
    RegexMatcher {
        regex: regex.to_string(),
        ..Default::default()
    }
}

/// The cluster a VirtualService destination names, from the listener port `port`'s point of view.
pub(crate) fn destination_cluster(
    push: &PushContext,
    vs: &Config<VirtualService>,
    dest: &Destination,
    port: u16,
) -> String {
    let host = resolve_short_name(&dest.host, &vs.meta.namespace);
    let dest_port = match dest.port.as_ref().map(|p| p.number).filter(|n| *n != 0) {
        Some(n) => u16::try_from(n).unwrap_or(port),
        None => push.registry().destination_port(&host, port),
    };
    outbound_cluster_name(dest_port, &dest.subset, &host)
}

/// What one outbound port carries for this proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundPort {
    /// HTTP: all HTTP services on the port share one listener and the route config `<port>`.
    Http,
    /// TCP only: each service with a ClusterIP gets its own `<vip>_<port>` listener under
    /// REDIRECT; otherwise (and always without interception) the first service in hostname
    /// order owns the port, as istiod resolves conflicts it cannot tell apart by address.
    Tcp {
        services: Vec<(String, Option<IpAddr>)>,
    },
    /// Unknown protocol, or HTTP and TCP services sharing the port: Istio sniffs. HTTP goes
    /// through the route config `<port>`, everything else to `tcp_host`.
    Auto { tcp_host: String },
}

impl OutboundPort {
    /// Whether the port has an HTTP route configuration.
    pub fn has_routes(&self) -> bool {
        !matches!(self, OutboundPort::Tcp { .. })
    }
}

/// The outbound ports this proxy serves, by port number.
pub fn outbound_ports(proxy: &Proxy, push: &PushContext) -> BTreeMap<u16, OutboundPort> {
    let mut by_port: BTreeMap<u16, Vec<(&Service, Protocol)>> = BTreeMap::new();
    for service in push.services_visible_to(proxy) {
        for port in &service.ports {
            if port.protocol != Protocol::Udp {
                by_port
                    .entry(port.port)
                    .or_default()
                    .push((service, port.protocol));
            }
        }
    }
    by_port
        .into_iter()
        .map(|(port, services)| {
            let all_http = services.iter().all(|(_, p)| p.is_http());
            let any_http_or_auto = services
                .iter()
                .any(|(_, p)| p.is_http() || *p == Protocol::Unsupported);
            let kind = if all_http {
                OutboundPort::Http
            } else if any_http_or_auto {
                let tcp_host = services
                    .iter()
                    .find(|(_, p)| !p.is_http())
                    .map(|(s, _)| s.hostname.clone())
                    .unwrap_or_default();
                OutboundPort::Auto { tcp_host }
            } else {
                OutboundPort::Tcp {
                    services: services
                        .iter()
                        .map(|(s, _)| (s.hostname.clone(), s.cluster_ip))
                        .collect(),
                }
            };
            (port, kind)
        })
        .collect()
}

/// Istio's cluster name for a Sidecar ingress port: `inbound|<port>||`.
pub fn inbound_cluster_name(port: u32) -> String {
    format!("inbound|{port}||")
}
