//! LDS: outbound listeners per service port (an HTTP connection manager fed by RDS for HTTP
//! ports, a TCP proxy otherwise, routed by VirtualService `tcp` routes, or `tls` routes by SNI
//! on TLS/HTTPS ports), in both interception layouts:
//! - `REDIRECT` / `TPROXY`: Istio's `virtualOutbound` (15001) and `virtualInbound` (15006) plus
//!   per-port `0.0.0.0_<port>` listeners with `bind_to_port: false`;
//! - `NONE`: per-port listeners that really bind on the proxy's first instance IP.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, ResponseFlagFilter, access_log::ConfigType as AccessLogConfigType,
    access_log_filter::FilterSpecifier,
};
use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, CommonLbConfig, DiscoveryType},
};
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::core::v3::{
    Address, DataSource, JsonFormatOptions, Pipe, SubstitutionFormatString, TrafficDirection,
    address, data_source::Specifier as DataSourceSpecifier, substitution_format_string::Format,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
    filter::ConfigType as FilterConfigType,
    listener_filter::ConfigType as ListenerFilterConfigType,
};
use envoy_types::pb::envoy::config::route::v3::{
    Decorator, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier as RouteClusterSpecifier, route_action::MaxStreamDuration,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    FileAccessLog, file_access_log::AccessLogFormat,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
    http_connection_manager::{
        CodecType, PathWithEscapedSlashesAction, RouteSpecifier, UpgradeConfig,
    },
    http_filter::ConfigType as HttpFilterConfigType,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy,
    tcp_proxy::{ClusterSpecifier, WeightedCluster, weighted_cluster::ClusterWeight},
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    },
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::pb::google::protobuf::{BoolValue, ListValue, Struct, Value, value::Kind};

use crate::model::config::Config;
use crate::model::istio::virtual_service::{
    Destination, L4MatchAttributes, RouteDestination, VirtualService,
};
use crate::model::mesh::{AccessLogEncoding, MeshConfig, OutboundTrafficMode};
use crate::model::proxy::{InterceptionMode, Proxy};
use crate::model::push_context::PushContext;
use crate::model::registry::{Protocol, Service};
use crate::translate::cluster::socket_address;
use crate::translate::route::destination_cluster;
use crate::translate::{
    BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER, ads_config_source, any,
    outbound_cluster_name, pb_duration,
};

pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
pub const VIRTUAL_OUTBOUND_PORT: u32 = 15001;
pub const VIRTUAL_INBOUND_PORT: u32 = 15006;

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

/// Every listener `proxy` gets.
pub fn build_listeners(proxy: &Proxy, push: &PushContext) -> Vec<Listener> {
    let bind_for_real = proxy.interception_mode == InterceptionMode::None;
    let wildcard = if bind_for_real {
        proxy.primary_ip().to_string()
    } else {
        "0.0.0.0".to_string()
    };
    let mut out = Vec::new();
    for (port, kind) in outbound_ports(proxy, push) {
        match kind {
            OutboundPort::Http if bind_for_real => {
                let name = format!("{wildcard}_{port}");
                let hcm = http_filter_chain(push, &name, port, false);
                out.push(outbound_listener(
                    name,
                    &wildcard,
                    port,
                    vec![hcm],
                    None,
                    false,
                    true,
                ));
            }
            OutboundPort::Http => {
                // istiod sniffs on the wildcard HTTP listener: non-HTTP traffic to the port
                // falls through to the catch-all cluster.
                let name = format!("{wildcard}_{port}");
                let hcm = http_filter_chain(push, &name, port, true);
                let cluster = catch_all_cluster(proxy, push);
                let passthrough = FilterChain {
                    name: "PassthroughFilterChain".into(),
                    filters: vec![tcp_proxy_filter(push, cluster, cluster)],
                    ..Default::default()
                };
                out.push(outbound_listener(
                    name,
                    &wildcard,
                    port,
                    vec![hcm],
                    Some(passthrough),
                    true,
                    false,
                ));
            }
            OutboundPort::Auto { tcp_host } => {
                let name = format!("{wildcard}_{port}");
                let hcm = http_filter_chain(push, &name, port, true);
                // The default chain cannot match on addresses: only a catch-all tcp route fits.
                let tcp = outbound_tcp_chains(proxy, push, &tcp_host, port)
                    .into_iter()
                    .find(|c| c.filter_chain_match.is_none())
                    .unwrap_or_else(|| default_tcp_chain(push, &tcp_host, port));
                out.push(outbound_listener(
                    name,
                    &wildcard,
                    port,
                    vec![hcm],
                    Some(tcp),
                    true,
                    bind_for_real,
                ));
            }
            OutboundPort::Tcp { services } => {
                let mut wildcard_taken = false;
                for (hostname, vip) in services {
                    let bind = match vip {
                        Some(vip) if !bind_for_real => vip.to_string(),
                        _ if wildcard_taken => continue,
                        _ => {
                            wildcard_taken = true;
                            wildcard.clone()
                        }
                    };
                    let is_tls = push
                        .registry()
                        .service(&hostname)
                        .and_then(|s| s.port(port))
                        .is_some_and(|p| matches!(p.protocol, Protocol::Https | Protocol::Tls));
                    let chains = if is_tls {
                        outbound_tls_chains(proxy, push, &hostname, port)
                    } else {
                        outbound_tcp_chains(proxy, push, &hostname, port)
                    };
                    let by_sni = chains.iter().any(|c| {
                        c.filter_chain_match
                            .as_ref()
                            .is_some_and(|m| !m.server_names.is_empty())
                    });
                    let mut listener = outbound_listener(
                        format!("{bind}_{port}"),
                        &bind,
                        port,
                        chains,
                        None,
                        false,
                        bind_for_real,
                    );
                    if by_sni {
                        listener.listener_filters = vec![tls_inspector()];
                    }
                    out.push(listener);
                }
            }
        }
    }
    if !bind_for_real {
        out.push(virtual_outbound(proxy, push));
        out.push(virtual_inbound(push));
    }
    out.extend(sidecar_ingress_listeners(proxy, push));
    for listener in &mut out {
        listener.access_log = listener_access_logs(push.mesh());
    }
    out
}

/// An outbound listener; `bind_to_port: false` unless interception is off.
fn outbound_listener(
    name: String,
    bind: &str,
    port: u16,
    filter_chains: Vec<FilterChain>,
    default_filter_chain: Option<FilterChain>,
    sniff: bool,
    bind_for_real: bool,
) -> Listener {
    Listener {
        name,
        address: Some(socket_address(bind, u32::from(port))),
        filter_chains,
        default_filter_chain,
        listener_filters: if sniff {
            sniffing_listener_filters()
        } else {
            Vec::new()
        },
        listener_filters_timeout: Some(pb_duration(std::time::Duration::ZERO)),
        continue_on_listener_filters_timeout: true,
        traffic_direction: TrafficDirection::Outbound as i32,
        bind_to_port: (!bind_for_real).then_some(BoolValue { value: false }),
        ..Default::default()
    }
}

pub(crate) fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(ListenerFilterConfigType::TypedConfig(any(
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// `tls_inspector` + `http_inspector`, as istiod adds them whenever a chain matches on
/// application protocols.
fn sniffing_listener_filters() -> Vec<ListenerFilter> {
    vec![
        tls_inspector(),
        ListenerFilter {
            name: "envoy.filters.listener.http_inspector".into(),
            config_type: Some(ListenerFilterConfigType::TypedConfig(any(
                &HttpInspector::default(),
            ))),
            ..Default::default()
        },
    ]
}

/// The HCM chain of an outbound port; with `sniffed`, it only takes plaintext HTTP/1.1 and h2c.
fn http_filter_chain(
    push: &PushContext,
    listener_name: &str,
    port: u16,
    sniffed: bool,
) -> FilterChain {
    FilterChain {
        filter_chain_match: sniffed.then(|| FilterChainMatch {
            transport_protocol: "raw_buffer".into(),
            application_protocols: vec!["http/1.1".into(), "h2c".into()],
            ..Default::default()
        }),
        filters: vec![network_filter(
            "envoy.filters.network.http_connection_manager",
            any(&http_connection_manager(
                push,
                format!("outbound_{listener_name}"),
                RouteSpecifier::Rds(Rds {
                    config_source: Some(ads_config_source()),
                    route_config_name: port.to_string(),
                }),
            )),
        )],
        ..Default::default()
    }
}

/// The cluster that traffic to unknown destinations goes to under the mesh's policy.
fn catch_all_cluster(proxy: &Proxy, push: &PushContext) -> &'static str {
    match push.outbound_traffic_mode(proxy) {
        OutboundTrafficMode::AllowAny => PASSTHROUGH_CLUSTER,
        OutboundTrafficMode::RegistryOnly => BLACKHOLE_CLUSTER,
    }
}

/// 15001: receives all redirected outbound traffic and hands it to the listener that owns the
/// original destination; what no listener claims goes to the catch-all cluster.
fn virtual_outbound(proxy: &Proxy, push: &PushContext) -> Listener {
    let cluster = catch_all_cluster(proxy, push);
    Listener {
        name: VIRTUAL_OUTBOUND.into(),
        address: Some(socket_address("0.0.0.0", VIRTUAL_OUTBOUND_PORT)),
        use_original_dst: Some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![FilterChain {
            name: "virtualOutbound-catchall-tcp".into(),
            filters: vec![tcp_proxy_filter(push, cluster, cluster)],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// 15006: receives redirected inbound traffic and passes it to the original destination.
fn virtual_inbound(push: &PushContext) -> Listener {
    Listener {
        name: VIRTUAL_INBOUND.into(),
        address: Some(socket_address("0.0.0.0", VIRTUAL_INBOUND_PORT)),
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters: vec![ListenerFilter {
            name: "envoy.filters.listener.original_dst".into(),
            config_type: Some(ListenerFilterConfigType::TypedConfig(any(&OriginalDst {}))),
            ..Default::default()
        }],
        filter_chains: vec![FilterChain {
            name: "virtualInbound-catchall-tcp".into(),
            filters: vec![tcp_proxy_filter(
                push,
                INBOUND_PASSTHROUGH_CLUSTER,
                INBOUND_PASSTHROUGH_CLUSTER,
            )],
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(crate) fn network_filter(name: &str, typed: envoy_types::pb::google::protobuf::Any) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(FilterConfigType::TypedConfig(typed)),
    }
}

pub(crate) fn tcp_proxy_filter(push: &PushContext, stat_prefix: &str, cluster: &str) -> Filter {
    tcp_proxy_with(push, stat_prefix, ClusterSpecifier::Cluster(cluster.into()))
}

fn tcp_proxy_with(push: &PushContext, stat_prefix: &str, specifier: ClusterSpecifier) -> Filter {
    network_filter(
        "envoy.filters.network.tcp_proxy",
        any(&TcpProxy {
            stat_prefix: stat_prefix.into(),
            cluster_specifier: Some(specifier),
            access_log: file_access_logs(push.mesh(), None),
            ..Default::default()
        }),
    )
}

/// The chain to a service's own cluster on `port`, when no tcp route takes the traffic.
fn default_tcp_chain(push: &PushContext, hostname: &str, port: u16) -> FilterChain {
    let target = push.registry().destination_port(hostname, port);
    let cluster = outbound_cluster_name(target, "", hostname);
    FilterChain {
        filters: vec![tcp_proxy_filter(push, &cluster, &cluster)],
        ..Default::default()
    }
}

/// The outbound TCP filter chains for `hostname` on `port`, as istiod's
/// `buildSidecarOutboundTCPFilterChainOpts`: the `tcp` routes of the sidecar VirtualServices
/// for the host, in order, until one applies to any destination address (a route without
/// matches, or an applicable match without `destinationSubnets`); applicable matches with
/// subnets become chains matching those prefixes. Without a catch-all route, the service's
/// own cluster takes the rest.
fn outbound_tcp_chains(
    proxy: &Proxy,
    push: &PushContext,
    hostname: &str,
    port: u16,
) -> Vec<FilterChain> {
    let mut out: Vec<FilterChain> = Vec::new();
    for vs in virtual_services_for(proxy, push, hostname) {
        for tcp in &vs.spec.tcp {
            let Some(filter) = tcp_route_filter(push, vs, &tcp.route, port) else {
                continue;
            };
            let applicable: Vec<&L4MatchAttributes> = tcp
                .r#match
                .iter()
                .filter(|m| l4_match_applies(proxy, m, port))
                .collect();
            if tcp.r#match.is_empty() || applicable.iter().any(|m| m.destination_subnets.is_empty())
            {
                out.push(FilterChain {
                    filters: vec![filter],
                    ..Default::default()
                });
                return out;
            }
            let ranges: Vec<CidrRange> = applicable
                .iter()
                .flat_map(|m| m.destination_subnets.iter())
                .filter_map(|s| cidr_range(s))
                .collect();
            if ranges.is_empty() {
                continue;
            }
            let chain_match = FilterChainMatch {
                prefix_ranges: ranges,
                ..Default::default()
            };
            // Envoy rejects two chains with the same match; the first one wins.
            if out
                .iter()
                .any(|c| c.filter_chain_match.as_ref() == Some(&chain_match))
            {
                continue;
            }
            out.push(FilterChain {
                filter_chain_match: Some(chain_match),
                filters: vec![filter],
                ..Default::default()
            });
        }
    }
    out.push(default_tcp_chain(push, hostname, port));
    out
}

/// istiod's `matchTCP` for a sidecar (whose only gateway is `mesh`).
fn l4_match_applies(proxy: &Proxy, m: &L4MatchAttributes, port: u16) -> bool {
    source_applies(
        proxy,
        port,
        (&m.gateways, &m.source_labels, m.port, &m.source_namespace),
    )
}

/// The parts of an L4 or TLS match decided when config is built: gateways (`mesh` for a
/// sidecar), source labels, port and source namespace.
fn source_applies(
    proxy: &Proxy,
    port: u16,
    (gateways, labels, match_port, namespace): (&[String], &BTreeMap<String, String>, u32, &str),
) -> bool {
    (gateways.is_empty() || gateways.iter().any(|g| g == "mesh"))
        && labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v))
        && (match_port == 0 || match_port == u32::from(port))
        && (namespace.is_empty() || namespace == proxy.namespace)
}

/// The sidecar VirtualServices with a host matching `hostname`, the proxy's namespace first.
fn virtual_services_for<'a>(
    proxy: &Proxy,
    push: &'a PushContext,
    hostname: &str,
) -> Vec<&'a Config<VirtualService>> {
    push.virtual_services_for_host(proxy, hostname)
}

/// The outbound filter chains of a TLS/HTTPS port, as istiod's
/// `buildSidecarOutboundTLSFilterChainOpts`: one chain per applicable `tls` match (its SNI
/// hosts as `server_names`, its destination subnets as prefix ranges; repeats skipped), or,
/// without any, the service's own cluster.
fn outbound_tls_chains(
    proxy: &Proxy,
    push: &PushContext,
    hostname: &str,
    port: u16,
) -> Vec<FilterChain> {
    let mut out: Vec<FilterChain> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for vs in virtual_services_for(proxy, push, hostname) {
        for tls in &vs.spec.tls {
            for m in &tls.r#match {
                let applies = source_applies(
                    proxy,
                    port,
                    (&m.gateways, &m.source_labels, m.port, &m.source_namespace),
                );
                if !applies || !seen.insert((m.sni_hosts.clone(), m.destination_subnets.clone())) {
                    continue;
                }
                let Some(filter) = tcp_route_filter(push, vs, &tls.route, port) else {
                    continue;
                };
                let chain_match = FilterChainMatch {
                    server_names: m.sni_hosts.clone(),
                    prefix_ranges: m
                        .destination_subnets
                        .iter()
                        .filter_map(|s| cidr_range(s))
                        .collect(),
                    ..Default::default()
                };
                out.push(FilterChain {
                    filter_chain_match: (chain_match != FilterChainMatch::default())
                        .then_some(chain_match),
                    filters: vec![filter],
                    ..Default::default()
                });
            }
        }
    }
    if out.is_empty() {
        out.push(default_tcp_chain(push, hostname, port));
    }
    out
}

/// `10.0.0.0/8` or a bare address → an Envoy CIDR range; `None` when it does not parse.
pub(crate) fn cidr_range(s: &str) -> Option<CidrRange> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u32>().ok()?)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then(|| CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(UInt32Value { value: len }),
    })
}

/// A tcp route's destinations → a tcp_proxy, as istiod's `buildOutboundNetworkFilters`: one
/// destination → its cluster; several → weighted clusters (zero weights left out) under the
/// stat prefix `<vs name>.<vs namespace>`. `None` without any destination.
pub(crate) fn tcp_route_filter(
    push: &PushContext,
    vs: &Config<VirtualService>,
    routes: &[RouteDestination],
    port: u16,
) -> Option<Filter> {
    let dests: Vec<(&Destination, i32)> = routes
        .iter()
        .filter_map(|r| r.destination.as_ref().map(|d| (d, r.weight)))
        .collect();
    match dests.as_slice() {
        [] => None,
        [(d, _)] => {
            let cluster = destination_cluster(push, vs, d, port);
            Some(tcp_proxy_filter(push, &cluster, &cluster))
        }
        _ => {
            let clusters: Vec<ClusterWeight> = dests
                .iter()
                .filter(|(_, w)| *w > 0)
                .map(|(d, w)| ClusterWeight {
                    name: destination_cluster(push, vs, d, port),
                    weight: u32::try_from(*w).unwrap_or_default(),
                    ..Default::default()
                })
                .collect();
            if clusters.is_empty() {
                return None;
            }
            Some(tcp_proxy_with(
                push,
                &format!("{}.{}", vs.meta.name, vs.meta.namespace),
                ClusterSpecifier::WeightedClusters(WeightedCluster { clusters }),
            ))
        }
    }
}

pub(crate) fn http_filter(name: &str, typed: envoy_types::pb::google::protobuf::Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(HttpFilterConfigType::TypedConfig(typed)),
        ..Default::default()
    }
}

/// The outbound HCM as istiod writes it for sidecars, minus Istio-proxy-only filters.
pub(crate) fn http_connection_manager(
    push: &PushContext,
    stat_prefix: String,
    routes: RouteSpecifier,
) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix,
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(routes),
        access_log: file_access_logs(push.mesh(), None),
        http_filters: vec![
            http_filter("envoy.filters.http.fault", any(&HttpFault::default())),
            http_filter("envoy.filters.http.cors", any(&Cors::default())),
            http_filter("envoy.filters.http.router", any(&Router::default())),
        ],
        use_remote_address: Some(BoolValue { value: false }),
        normalize_path: Some(BoolValue { value: true }),
        path_with_escaped_slashes_action: PathWithEscapedSlashesAction::KeepUnchanged as i32,
        upgrade_configs: vec![UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        stream_idle_timeout: Some(pb_duration(std::time::Duration::ZERO)),
        proxy_100_continue: true,
        ..Default::default()
    }
}

/// istiod 1.24's default TEXT access log format (`model.EnvoyTextLogFormat`).
pub const ISTIO_TEXT_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// istiod 1.24's default JSON access log fields (`model.EnvoyJSONLogFormatIstio`).
pub const ISTIO_JSON_LOG_FIELDS: [(&str, &str); 24] = [
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
];

/// The MeshConfig access log (`accessLogFile`, `accessLogEncoding`, `accessLogFormat`) as an
/// `envoy.access_loggers.file` entry, as istiod's `FileAccessLogFromMeshConfig` builds it;
/// empty when `accessLogFile` is unset. `filter` restricts it (listener-level logs only log
/// `NR`).
pub fn file_access_logs(mesh: &MeshConfig, filter: Option<AccessLogFilter>) -> Vec<AccessLog> {
    if mesh.access_log_file.is_empty() {
        return Vec::new();
    }
    let format = match mesh.access_log_encoding {
        AccessLogEncoding::Text => {
            let text = if mesh.access_log_format.is_empty() {
                ISTIO_TEXT_LOG_FORMAT.to_string()
            } else if mesh.access_log_format.ends_with('\n') {
                mesh.access_log_format.clone()
            } else {
                // "Istio will insert a newline ('\n') on all formats (if missing)."
                format!("{}\n", mesh.access_log_format)
            };
            SubstitutionFormatString {
                format: Some(Format::TextFormatSource(DataSource {
                    specifier: Some(DataSourceSpecifier::InlineString(text)),
                    ..Default::default()
                })),
                ..Default::default()
            }
        }
        AccessLogEncoding::Json => SubstitutionFormatString {
            format: Some(Format::JsonFormat(json_log_struct(&mesh.access_log_format))),
            // istiod's `SortProperties: false`, the default.
            json_format_options: Some(JsonFormatOptions::default()),
            ..Default::default()
        },
    };
    vec![AccessLog {
        name: "envoy.access_loggers.file".into(),
        filter,
        config_type: Some(AccessLogConfigType::TypedConfig(any(&FileAccessLog {
            path: mesh.access_log_file.clone(),
            access_log_format: Some(AccessLogFormat::LogFormat(format)),
        }))),
    }]
}

/// Listener-level access logs: only connections no filter chain took (`NR`), as istiod's
/// `setListenerAccessLog`.
pub(crate) fn listener_access_logs(mesh: &MeshConfig) -> Vec<AccessLog> {
    file_access_logs(
        mesh,
        Some(AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::ResponseFlagFilter(ResponseFlagFilter {
                flags: vec!["NR".into()],
            })),
        }),
    )
}

/// A custom JSON `accessLogFormat` (an object of string fields), else Istio's default fields.
/// As istiod, an unparsable custom format falls back to the default.
fn json_log_struct(custom: &str) -> Struct {
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_string())),
    };
    let parsed: Option<serde_json::Map<String, serde_json::Value>> = (!custom.trim().is_empty())
        .then(|| serde_json::from_str(custom).ok())
        .flatten();
    let fields = match parsed {
        Some(map) if !map.is_empty() => map
            .into_iter()
            .map(|(k, v)| (k, json_to_pb_value(v)))
            .collect(),
        _ => ISTIO_JSON_LOG_FIELDS
            .iter()
            .map(|(k, v)| (k.to_string(), string(v)))
            .collect(),
    };
    Struct { fields }
}

fn json_to_pb_value(v: serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.into_iter().map(json_to_pb_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(Struct {
            fields: o
                .into_iter()
                .map(|(k, v)| (k, json_to_pb_value(v)))
                .collect(),
        }),
    };
    Value { kind: Some(kind) }
}

/// Istio's cluster name for a Sidecar ingress port: `inbound|<port>||`.
pub fn inbound_cluster_name(port: u32) -> String {
    format!("inbound|{port}||")
}

/// The Sidecar `ingress` listeners of a proxy without interception: each binds `bind` (else
/// the proxy's IP) at its port and forwards to its `defaultEndpoint` through the
/// `inbound|<port>||` cluster; HTTP ports get an HCM with an inline route, others a TCP proxy.
fn sidecar_ingress_listeners(proxy: &Proxy, push: &PushContext) -> Vec<Listener> {
    if proxy.interception_mode != InterceptionMode::None {
        return Vec::new();
    }
    let Some(sidecar) = push.sidecar_for(proxy) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ingress in &sidecar.spec.ingress {
        let Some(port) = &ingress.port else { continue };
        if ingress.default_endpoint.is_empty() {
            continue;
        }
        let bind = if ingress.bind.is_empty() {
            proxy.primary_ip().to_string()
        } else {
            ingress.bind.clone()
        };
        let name = format!("{bind}_{}", port.number);
        let cluster = inbound_cluster_name(port.number);
        let protocol = Protocol::parse(&port.protocol).unwrap_or(Protocol::Unsupported);
        let filter = if protocol.is_http() {
            let route = RouteConfiguration {
                name: cluster.clone(),
                validate_clusters: Some(BoolValue { value: false }),
                virtual_hosts: vec![VirtualHost {
                    name: format!("inbound|http|{}", port.number),
                    domains: vec!["*".into()],
                    routes: vec![Route {
                        name: "default".into(),
                        r#match: Some(RouteMatch {
                            path_specifier: Some(PathSpecifier::Prefix("/".into())),
                            ..Default::default()
                        }),
                        decorator: Some(Decorator {
                            operation: format!("{}/*", cluster),
                            ..Default::default()
                        }),
                        action: Some(Action::Route(RouteAction {
                            cluster_specifier: Some(RouteClusterSpecifier::Cluster(
                                cluster.clone(),
                            )),
                            timeout: Some(pb_duration(std::time::Duration::ZERO)),
                            max_stream_duration: Some(MaxStreamDuration {
                                max_stream_duration: Some(pb_duration(std::time::Duration::ZERO)),
                                grpc_timeout_header_max: Some(pb_duration(
                                    std::time::Duration::ZERO,
                                )),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            network_filter(
                "envoy.filters.network.http_connection_manager",
                any(&http_connection_manager(
                    push,
                    format!("inbound_{bind}_{}", port.number),
                    RouteSpecifier::RouteConfig(route),
                )),
            )
        } else {
            tcp_proxy_filter(push, &cluster, &cluster)
        };
        out.push(Listener {
            name,
            address: Some(socket_address(&bind, port.number)),
            filter_chains: vec![FilterChain {
                filters: vec![filter],
                ..Default::default()
            }],
            traffic_direction: TrafficDirection::Inbound as i32,
            ..Default::default()
        });
    }
    out
}

/// The STATIC `inbound|<port>||` clusters behind [`sidecar_ingress_listeners`]: one endpoint,
/// the `defaultEndpoint` (`0.0.0.0:<port>` means the proxy's own IP, `unix://` a socket).
pub fn sidecar_ingress_clusters(proxy: &Proxy, push: &PushContext) -> Vec<Cluster> {
    if proxy.interception_mode != InterceptionMode::None {
        return Vec::new();
    }
    let Some(sidecar) = push.sidecar_for(proxy) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ingress in &sidecar.spec.ingress {
        let Some(port) = &ingress.port else { continue };
        let address = if let Some(path) = ingress.default_endpoint.strip_prefix("unix://") {
            Address {
                address: Some(address::Address::Pipe(Pipe {
                    path: path.to_string(),
                    mode: 0,
                })),
            }
        } else {
            let Some((host, ep_port)) = ingress.default_endpoint.rsplit_once(':') else {
                continue;
            };
            let Ok(ep_port) = ep_port.parse::<u32>() else {
                continue;
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let host = match host {
                "0.0.0.0" | "::" | "" => proxy.primary_ip().to_string(),
                h => h.to_string(),
            };
            socket_address(&host, ep_port)
        };
        let name = inbound_cluster_name(port.number);
        let protocol = Protocol::parse(&port.protocol).unwrap_or(Protocol::Unsupported);
        let mut cluster = Cluster {
            name: name.clone(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            connect_timeout: Some(pb_duration(push.mesh().connect_timeout.as_std())),
            common_lb_config: Some(CommonLbConfig::default()),
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: name,
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![LbEndpoint {
                        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                            address: Some(address),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        if matches!(protocol, Protocol::Http2 | Protocol::Grpc) {
            cluster.typed_extension_protocol_options.insert(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
                any(&HttpProtocolOptions {
                    upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                        ExplicitHttpConfig {
                            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                                Default::default(),
                            )),
                        },
                    )),
                    ..Default::default()
                }),
            );
        }
        out.push(cluster);
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::translate::testing::{
        chains, filter_names, proxy, shop_config, shop_sidecar, tcp_targets,
    };

    #[test]
    fn a_redirect_sidecar_listens_per_port_with_http_and_tcp_chains() {
        let g = shop_config(&shop_sidecar());
        let names = g.listener_names();
        for name in ["virtualOutbound", "0.0.0.0_80", "0.0.0.0_5432"] {
            assert!(names.contains(name), "{name} in {names:?}");
        }
        let http = g.listener("0.0.0.0_80").unwrap();
        let filters = filter_names(chains(http).next().unwrap());
        assert_eq!(
            filters.first().map(String::as_str),
            Some("envoy.filters.network.http_connection_manager")
        );
        assert_eq!(
            filters.last().map(String::as_str),
            Some("envoy.filters.http.router")
        );
        let tcp = g.listener("0.0.0.0_5432").unwrap();
        assert!(
            chains(tcp).any(|c| filter_names(c) == ["envoy.filters.network.tcp_proxy"]),
            "{:?}",
            chains(tcp).map(filter_names).collect::<Vec<_>>()
        );
        assert!(
            chains(tcp).any(|c| tcp_targets(c) == ["outbound|5432||db.shop.svc.cluster.local"])
        );
    }

    #[test]
    fn without_interception_listeners_bind_the_proxys_own_address() {
        let p = proxy(
            "sidecar~127.0.0.9~client.shop~shop.svc.cluster.local",
            "NONE",
            &[],
        );
        let g = shop_config(&p);
        let names = g.listener_names();
        assert!(names.contains("127.0.0.9_80"), "{names:?}");
        assert!(!names.contains("virtualOutbound"), "{names:?}");
        let answer = g
            .simulate(&crate::translate::testing::get(80, "web", "/"))
            .unwrap();
        assert_eq!(answer.listener, "127.0.0.9_80");
    }
}
