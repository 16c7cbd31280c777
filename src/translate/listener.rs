//! LDS: outbound listeners per service port (an HTTP connection manager fed by RDS for HTTP
//! ports, a TCP proxy otherwise), in both interception layouts:
//! - `REDIRECT` / `TPROXY`: Istio's `virtualOutbound` (15001) and `virtualInbound` (15006) plus
//!   per-port `0.0.0.0_<port>` listeners with `bind_to_port: false`;
//! - `NONE`: per-port listeners that really bind on the proxy's first instance IP.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
    filter::ConfigType as FilterConfigType,
    listener_filter::ConfigType as ListenerFilterConfigType,
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
    TcpProxy, tcp_proxy::ClusterSpecifier,
};
use envoy_types::pb::google::protobuf::BoolValue;

use crate::model::mesh::OutboundTrafficMode;
use crate::model::proxy::{InterceptionMode, Proxy};
use crate::model::push_context::PushContext;
use crate::model::registry::{Protocol, Service};
use crate::translate::cluster::socket_address;
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
    for service in push.services_visible_to(&proxy.namespace) {
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
                let hcm = http_filter_chain(&name, port, false);
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
                let hcm = http_filter_chain(&name, port, true);
                let cluster = catch_all_cluster(push);
                let passthrough = FilterChain {
                    name: "PassthroughFilterChain".into(),
                    filters: vec![tcp_proxy_filter(cluster, cluster)],
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
                let hcm = http_filter_chain(&name, port, true);
                let cluster = outbound_cluster_name(port, "", &tcp_host);
                let tcp = FilterChain {
                    filters: vec![tcp_proxy_filter(&cluster, &cluster)],
                    ..Default::default()
                };
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
                    let cluster = outbound_cluster_name(port, "", &hostname);
                    let chain = FilterChain {
                        filters: vec![tcp_proxy_filter(&cluster, &cluster)],
                        ..Default::default()
                    };
                    out.push(outbound_listener(
                        format!("{bind}_{port}"),
                        &bind,
                        port,
                        vec![chain],
                        None,
                        false,
                        bind_for_real,
                    ));
                }
            }
        }
    }
    if !bind_for_real {
        out.push(virtual_outbound(push));
        out.push(virtual_inbound());
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

/// `tls_inspector` + `http_inspector`, as istiod adds them whenever a chain matches on
/// application protocols.
fn sniffing_listener_filters() -> Vec<ListenerFilter> {
    vec![
        ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".into(),
            config_type: Some(ListenerFilterConfigType::TypedConfig(any(
                &TlsInspector::default(),
            ))),
            ..Default::default()
        },
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
fn http_filter_chain(listener_name: &str, port: u16, sniffed: bool) -> FilterChain {
    FilterChain {
        filter_chain_match: sniffed.then(|| FilterChainMatch {
            transport_protocol: "raw_buffer".into(),
            application_protocols: vec!["http/1.1".into(), "h2c".into()],
            ..Default::default()
        }),
        filters: vec![network_filter(
            "envoy.filters.network.http_connection_manager",
            any(&http_connection_manager(listener_name, &port.to_string())),
        )],
        ..Default::default()
    }
}

/// The cluster that traffic to unknown destinations goes to under the mesh's policy.
fn catch_all_cluster(push: &PushContext) -> &'static str {
    match push.mesh().outbound_traffic_policy.mode {
        OutboundTrafficMode::AllowAny => PASSTHROUGH_CLUSTER,
        OutboundTrafficMode::RegistryOnly => BLACKHOLE_CLUSTER,
    }
}

/// 15001: receives all redirected outbound traffic and hands it to the listener that owns the
/// original destination; what no listener claims goes to the catch-all cluster.
fn virtual_outbound(push: &PushContext) -> Listener {
    let cluster = catch_all_cluster(push);
    Listener {
        name: VIRTUAL_OUTBOUND.into(),
        address: Some(socket_address("0.0.0.0", VIRTUAL_OUTBOUND_PORT)),
        use_original_dst: Some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![FilterChain {
            name: "virtualOutbound-catchall-tcp".into(),
            filters: vec![tcp_proxy_filter(cluster, cluster)],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// 15006: receives redirected inbound traffic and passes it to the original destination.
fn virtual_inbound() -> Listener {
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
                INBOUND_PASSTHROUGH_CLUSTER,
                INBOUND_PASSTHROUGH_CLUSTER,
            )],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn network_filter(name: &str, typed: envoy_types::pb::google::protobuf::Any) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(FilterConfigType::TypedConfig(typed)),
    }
}

fn tcp_proxy_filter(stat_prefix: &str, cluster: &str) -> Filter {
    network_filter(
        "envoy.filters.network.tcp_proxy",
        any(&TcpProxy {
            stat_prefix: stat_prefix.into(),
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        }),
    )
}

fn http_filter(name: &str, typed: envoy_types::pb::google::protobuf::Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(HttpFilterConfigType::TypedConfig(typed)),
        ..Default::default()
    }
}

/// The outbound HCM as istiod writes it for sidecars, minus Istio-proxy-only filters.
fn http_connection_manager(listener_name: &str, route_config_name: &str) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: format!("outbound_{listener_name}"),
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: route_config_name.into(),
        })),
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
