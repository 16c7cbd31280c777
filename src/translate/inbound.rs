//! The sidecar's inbound side, as istiod's `listener_inbound.go` and its inbound clusters build
//! it: which ports of the proxy's own workload take traffic ([`inbound_ports`]: the service
//! ports that select the workload, or the Sidecar's `ingress` listeners), the `virtualInbound`
//! listener on 15006 (the blackhole chain against loops, the catch-all chains, then per port an
//! HTTP chain with an HTTP connection manager or a TCP chain, matched by destination port,
//! transport protocol and ALPN), the listeners that really bind (interception off, or a
//! Sidecar ingress with `captureMode: NONE`), and the `inbound|<port>||` clusters behind them.
//!
//! mTLS is not served yet (no certificates), so every chain is the plaintext variant istiod
//! builds under PeerAuthentication `DISABLE`. Uses `common`, `filters` and `traffic_policy`;
//! it must not import a sibling builder (`translate::generate` serves its output with
//! `listener`'s and `cluster`'s).

use std::net::IpAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, CommonLbConfig, DiscoveryType, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, Pipe, TrafficDirection, address,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::config::route::v3::{
    Decorator, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    route::Action,
    route_action::ClusterSpecifier as RouteClusterSpecifier, route_action::MaxStreamDuration,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::original_src::v3::OriginalSrc;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
    ForwardClientCertDetails, RouteSpecifier, SetCurrentClientCertDetails,
};
use envoy_types::pb::google::protobuf::{
    BoolValue, Duration as PbDuration, UInt32Value,
};

use crate::model::istio::sidecar::CaptureMode;
use crate::model::proxy::{InterceptionMode, NodeType, Proxy};
use crate::model::push_context::PushContext;
use crate::model::registry::Protocol;
use crate::translate::common::{
    http_protocol_options_map, inbound_cluster_name, istio_metadata, istio_services_struct,
    socket_address, source_bind, upstream_protocol_options,
};
use crate::translate::filters::{
    PLAINTEXT_HTTP_ALPNS, blackhole_chain, http_connection_manager, inspector_filters,
    listener_access_logs, listener_filter, network_filter, plaintext_match, tcp_proxy_filter,
};
use crate::translate::{
    INBOUND_PASSTHROUGH_BIND_IP, INBOUND_PASSTHROUGH_CLUSTER, any, pb_duration, traffic_policy,
};

pub const VIRTUAL_INBOUND: &str = "virtualInbound";
pub const VIRTUAL_INBOUND_PORT: u32 = 15006;
/// The chain of `virtualInbound` that drops traffic addressed to 15006 itself (a loop).
pub const VIRTUAL_INBOUND_BLACKHOLE: &str = "virtualInbound-blackhole";
/// The catch-all HTTP chain of `virtualInbound` (plaintext HTTP to a port no service declares).
pub const VIRTUAL_INBOUND_CATCHALL_HTTP: &str = "virtualInbound-catchall-http";
/// istiod's "never" for the cleanup of inbound ORIGINAL_DST hosts: the most whole seconds a Go
/// `time.Duration` holds (about 292 years; Envoy rejects longer ones).
const MAX_DURATION_SECONDS: i64 = 9_223_372_035;

/// One port the proxy's own workload takes traffic on (istiod's `inboundChainConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InboundPort {
    /// The port on the workload: what the chains match and the cluster is named by.
    pub target_port: u16,
    /// The service (or Sidecar ingress) port: the virtual host's name and the trace operation.
    pub service_port: u16,
    pub protocol: Protocol,
    /// The first service's hostname, or `<sidecar>.<namespace>` for a Sidecar ingress port.
    pub hostname: String,
    /// Every service behind the port as (hostname, name, namespace): the cluster's metadata.
    pub services: Vec<(String, String, String)>,
    /// The address in the chain's name, and the address a bound listener binds.
    pub bind: String,
    /// A listener of its own that binds `bind:target_port`, instead of a chain of
    /// `virtualInbound`.
    pub bind_to_port: bool,
    /// The Sidecar ingress `defaultEndpoint`; empty: the original destination.
    pub default_endpoint: String,
}

impl InboundPort {
    fn cluster(&self) -> String {
        inbound_cluster_name(u32::from(self.target_port))
    }

    fn chain_name(&self) -> String {
        format!("{}_{}", self.bind, self.target_port)
    }
}

/// The ports `proxy` serves inbound, by target port (the first service or ingress entry of a
/// port wins it, as istiod resolves conflicts), as istiod's `buildInboundChainConfigs`: with a
/// Sidecar that has `ingress` listeners, those; otherwise, under interception, the service
/// ports that select the workload; without interception and ingress, none (the application
/// owns its ports).
pub fn inbound_ports(proxy: &Proxy, push: &PushContext) -> Vec<InboundPort> {
    if proxy.node_type != NodeType::Sidecar {
        return Vec::new();
    }
    let targets = push.service_targets(proxy);
    let mut out: Vec<InboundPort> = Vec::new();
    let sidecar = push.sidecar_for(proxy);
    let ingress: Vec<_> = sidecar
        .map(|s| s.spec.ingress.iter().filter(|i| i.port.is_some()).collect())
        .unwrap_or_default();
    if let Some(sidecar) = sidecar.filter(|_| !ingress.is_empty()) {
        for i in ingress {
            let Some(port) = i.port.as_ref() else {
                continue;
            };
            let Ok(number) = u16::try_from(port.number) else {
                continue;
            };
            let bind_to_port = match i.capture_mode {
                CaptureMode::Default => proxy.interception_mode == InterceptionMode::None,
                CaptureMode::None => true,
                CaptureMode::Iptables => false,
            };
            // A bound listener forwarding to its original destination would be a loop.
            if bind_to_port && i.default_endpoint.is_empty() {
                continue;
            }
            if out.iter().any(|p| p.target_port == number) {
                continue;
            }
            let bind = match (i.bind.as_str(), bind_to_port) {
                ("", true) => proxy.primary_ip().to_string(),
                ("", false) => inbound_bind_ip(proxy),
                (b, _) => b.to_string(),
            };
            let services = match targets.iter().find(|t| t.target_port == number) {
                Some(t) => vec![service_triple(t.service)],
                None => vec![(
                    format!("{}.{}", sidecar.meta.name, sidecar.meta.namespace),
                    sidecar.meta.name.clone(),
                    sidecar.meta.namespace.clone(),
                )],
            };
            out.push(InboundPort {
                target_port: number,
                service_port: number,
                protocol: Protocol::parse(&port.protocol).unwrap_or(Protocol::Unsupported),
                hostname: format!("{}.{}", sidecar.meta.name, sidecar.meta.namespace),
                services,
                bind,
                bind_to_port,
                default_endpoint: i.default_endpoint.clone(),
            });
        }
    } else if proxy.interception_mode != InterceptionMode::None {
        for t in &targets {
            if let Some(p) = out.iter_mut().find(|p| p.target_port == t.target_port) {
                let triple = service_triple(t.service);
                if !p.services.contains(&triple) {
                    p.services.push(triple);
                }
                continue;
            }
            out.push(InboundPort {
                target_port: t.target_port,
                service_port: t.port.port,
                protocol: t.port.protocol,
                hostname: t.service.hostname.clone(),
                services: vec![service_triple(t.service)],
                bind: "0.0.0.0".into(),
                bind_to_port: false,
                default_endpoint: String::new(),
            });
        }
    }
    out.sort_by_key(|p| p.target_port);
    out
}

fn service_triple(s: &crate::model::registry::Service) -> (String, String, String) {
    (s.hostname.clone(), s.name.clone(), s.namespace.clone())
}

/// istiod's `getSidecarInboundBindIPs`: the proxy's address when it is a global unicast one
/// (Go's `IsGlobalUnicast`: not loopback, link-local, multicast or unspecified), else the
/// wildcard.
fn inbound_bind_ip(proxy: &Proxy) -> String {
    let global = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || v6.is_unicast_link_local())
        }
    };
    proxy
        .ip_addresses
        .iter()
        .find(|ip| global(ip))
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "0.0.0.0".into())
}

/// How a port's chains handle traffic (istiod's `ListenerProtocol`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ChainProtocol {
    Http,
    Tcp,
    /// Unknown protocol: an HTTP chain for sniffed plaintext HTTP, a TCP chain for the rest.
    Auto,
}

impl From<Protocol> for ChainProtocol {
    fn from(p: Protocol) -> Self {
        if p.is_http() {
            ChainProtocol::Http
        } else if p == Protocol::Unsupported {
            ChainProtocol::Auto
        } else {
            ChainProtocol::Tcp
        }
    }
}

/// The inbound listeners of `proxy`: `virtualInbound` under interception, and one listener
/// per port that binds for real.
pub fn build_inbound_listeners(proxy: &Proxy, push: &PushContext) -> Vec<Listener> {
    let ports = inbound_ports(proxy, push);
    let mut out = Vec::new();
    if proxy.interception_mode != InterceptionMode::None {
        let mut chains = passthrough_chains(proxy, push);
        for port in ports.iter().filter(|p| !p.bind_to_port) {
            chains.extend(port_chains(proxy, push, port));
        }
        out.push(inbound_listener(
            proxy,
            push,
            VIRTUAL_INBOUND.into(),
            socket_address("0.0.0.0", VIRTUAL_INBOUND_PORT),
            false,
            chains,
        ));
    }
    for port in ports.iter().filter(|p| p.bind_to_port) {
        out.push(inbound_listener(
            proxy,
            push,
            port.chain_name(),
            socket_address(&port.bind, u32::from(port.target_port)),
            true,
            port_chains(proxy, push, port),
        ));
    }
    out
}

/// istiod's `buildInboundListener`.
fn inbound_listener(
    proxy: &Proxy,
    push: &PushContext,
    name: String,
    address: Address,
    bind_to_port: bool,
    filter_chains: Vec<FilterChain>,
) -> Listener {
    let tproxy = !bind_to_port && proxy.interception_mode == InterceptionMode::Tproxy;
    Listener {
        name,
        address: Some(address),
        traffic_direction: TrafficDirection::Inbound as i32,
        continue_on_listener_filters_timeout: true,
        max_connections_to_accept_per_socket_event: Some(UInt32Value { value: 1 }),
        transparent: tproxy.then_some(BoolValue { value: true }),
        listener_filters: listener_filters(&filter_chains, bind_to_port, tproxy),
        listener_filters_timeout: Some(pb_duration(
            push.mesh().protocol_detection_timeout.as_std(),
        )),
        access_log: listener_access_logs(push.mesh()),
        filter_chains,
        ..Default::default()
    }
}

/// istiod's `populateListenerFilters`: the original destination (and source, under TPROXY)
/// for a listener that does not bind, then the inspectors its chains need.
fn listener_filters(
    chains: &[FilterChain],
    bind_to_port: bool,
    tproxy: bool,
) -> Vec<ListenerFilter> {
    let mut out = Vec::new();
    if !bind_to_port {
        out.push(listener_filter(
            "envoy.filters.listener.original_dst",
            any(&OriginalDst {}),
        ));
    }
    if tproxy {
        out.push(listener_filter(
            "envoy.filters.listener.original_src",
            any(&OriginalSrc::default()),
        ));
    }
    out.extend(inspector_filters(chains));
    out
}

/// The chains every `virtualInbound` starts with (istiod's `buildInboundPassthroughChains`,
/// plaintext): the blackhole for traffic to 15006 itself, plaintext HTTP and then any other
/// traffic to a port no service declares, both to the original destination.
fn passthrough_chains(proxy: &Proxy, push: &PushContext) -> Vec<FilterChain> {
    vec![
        blackhole_chain(VIRTUAL_INBOUND_BLACKHOLE, VIRTUAL_INBOUND_PORT),
        FilterChain {
            name: VIRTUAL_INBOUND_CATCHALL_HTTP.into(),
            filter_chain_match: Some(plaintext_match(None, &PLAINTEXT_HTTP_ALPNS)),
            filters: vec![inbound_hcm(
                proxy,
                push,
                INBOUND_PASSTHROUGH_CLUSTER.into(),
                INBOUND_PASSTHROUGH_CLUSTER,
                0,
                // istiod's passthrough chains have no service: the operation is `:0/*`.
                "",
                Protocol::Unsupported,
            )],
            ..Default::default()
        },
        FilterChain {
            name: VIRTUAL_INBOUND.into(),
            filter_chain_match: Some(plaintext_match(None, &[])),
            filters: vec![tcp_proxy_filter(
                push,
                INBOUND_PASSTHROUGH_CLUSTER,
                INBOUND_PASSTHROUGH_CLUSTER,
            )],
            ..Default::default()
        },
    ]
}

/// The plaintext chains of one port (istiod's `inboundPlainText*FilterChainMatchOptions`):
/// HTTP → an HCM, TCP → a TCP proxy, unknown → both (HTTP for sniffed plaintext HTTP first).
fn port_chains(proxy: &Proxy, push: &PushContext, port: &InboundPort) -> Vec<FilterChain> {
    let cluster = port.cluster();
    let chain_match = |alpns: &[&str]| plaintext_match(Some(u32::from(port.target_port)), alpns);
    let http = |alpns: &[&str]| FilterChain {
        name: port.chain_name(),
        filter_chain_match: Some(chain_match(alpns)),
        filters: vec![inbound_hcm(
            proxy,
            push,
            format!("inbound_{}", port.chain_name()),
            &cluster,
            port.service_port,
            &port.hostname,
            port.protocol,
        )],
        ..Default::default()
    };
    let tcp = || FilterChain {
        name: port.chain_name(),
        filter_chain_match: Some(chain_match(&[])),
        filters: vec![tcp_proxy_filter(push, &cluster, &cluster)],
        ..Default::default()
    };
    match ChainProtocol::from(port.protocol) {
        ChainProtocol::Http => vec![http(&[])],
        ChainProtocol::Tcp => vec![tcp()],
        ChainProtocol::Auto => vec![http(&PLAINTEXT_HTTP_ALPNS), tcp()],
    }
}

/// The inbound HTTP connection manager (istiod's `buildSidecarInboundHTTPOpts`): the sidecar's
/// HCM with the client certificate forwarded (`APPEND_FORWARD`, subject, URI and DNS SANs) and
/// an inline route configuration with one route to `cluster`.
fn inbound_hcm(
    proxy: &Proxy,
    push: &PushContext,
    stat_prefix: String,
    cluster: &str,
    service_port: u16,
    hostname: &str,
    protocol: Protocol,
) -> envoy_types::pb::envoy::config::listener::v3::Filter {
    let operation = format!("{hostname}:{service_port}/*");
    let mut hcm = http_connection_manager(
        proxy,
        push,
        stat_prefix,
        RouteSpecifier::RouteConfig(inbound_route_config(cluster, service_port, operation)),
    );
    hcm.server_name = "istio-envoy".into();
    hcm.forward_client_cert_details = ForwardClientCertDetails::AppendForward as i32;
    hcm.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
        subject: Some(BoolValue { value: true }),
        uri: true,
        dns: true,
        ..Default::default()
    });
    if protocol.is_http2() {
        hcm.http2_protocol_options = Some(Http2ProtocolOptions::default());
    }
    network_filter("envoy.filters.network.http_connection_manager", any(&hcm))
}

/// istiod's `buildSidecarInboundHTTPRouteConfig`: `inbound|http|<port>` with one route to
/// `cluster`, no timeout.
fn inbound_route_config(cluster: &str, service_port: u16, operation: String) -> RouteConfiguration {
    let no_timeout = || pb_duration(Duration::ZERO);
    RouteConfiguration {
        name: cluster.to_string(),
        validate_clusters: Some(BoolValue { value: false }),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{service_port}"),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                decorator: Some(Decorator {
                    operation,
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(RouteClusterSpecifier::Cluster(cluster.to_string())),
                    timeout: Some(no_timeout()),
                    // istiod retries a request the workload reset before answering anything.
                    retry_policy: Some(RetryPolicy {
                        retry_on: "reset-before-request".into(),
                        num_retries: Some(UInt32Value { value: 2 }),
                        ..Default::default()
                    }),
                    max_stream_duration: Some(MaxStreamDuration {
                        max_stream_duration: Some(no_timeout()),
                        grpc_timeout_header_max: Some(no_timeout()),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The `inbound|<port>||` clusters (istiod's `buildInboundCluster`): to the original
/// destination with connections from 127.0.0.6 (which iptables lets through) when the port has
/// no `defaultEndpoint`, else STATIC to it (`0.0.0.0:<port>` is the proxy's own address,
/// `unix://` a socket; only a non-loopback endpoint binds 127.0.0.6).
pub fn build_inbound_clusters(proxy: &Proxy, push: &PushContext) -> Vec<Cluster> {
    let mut out = Vec::new();
    for port in inbound_ports(proxy, push) {
        let name = port.cluster();
        let mut cluster = Cluster {
            name: name.clone(),
            connect_timeout: Some(pb_duration(push.mesh().connect_timeout.as_std())),
            common_lb_config: Some(CommonLbConfig::default()),
            circuit_breakers: Some(traffic_policy::default_circuit_breakers()),
            metadata: Some(istio_metadata(istio_services_struct(
                port.services
                    .iter()
                    .map(|(h, n, ns)| (h.as_str(), n.as_str(), ns.as_str())),
            ))),
            ..Default::default()
        };
        let bind_from_passthrough_ip = if port.default_endpoint.is_empty() {
            cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            cluster.lb_policy = LbPolicy::ClusterProvided as i32;
            cluster.cleanup_interval = Some(PbDuration {
                seconds: MAX_DURATION_SECONDS,
                nanos: 0,
            });
            true
        } else {
            let Some((address, loopback)) = default_endpoint_address(proxy, &port.default_endpoint)
            else {
                continue;
            };
            cluster.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
            cluster.load_assignment = Some(ClusterLoadAssignment {
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
            });
            !loopback
        };
        if bind_from_passthrough_ip {
            cluster.upstream_bind_config = Some(source_bind(INBOUND_PASSTHROUGH_BIND_IP));
        }
        if let Some(options) = upstream_protocol_options(port.protocol) {
            cluster.typed_extension_protocol_options = http_protocol_options_map(&options);
        }
        out.push(cluster);
    }
    out
}

/// A Sidecar ingress `defaultEndpoint` as an address, and whether it is a loopback one (or a
/// socket); `None` when it does not parse (validation rejects those).
fn default_endpoint_address(proxy: &Proxy, endpoint: &str) -> Option<(Address, bool)> {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        let pipe = Address {
            address: Some(address::Address::Pipe(Pipe {
                path: path.to_string(),
                mode: 0,
            })),
        };
        return Some((pipe, true));
    }
    let (host, port) = endpoint.rsplit_once(':')?;
    let port = port.parse::<u32>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "0.0.0.0" | "::" | "" => proxy.primary_ip().to_string(),
        h => h.to_string(),
    };
    // istiod compares with the literal localhost addresses: the proxy's own address (even a
    // loopback one) still binds 127.0.0.6.
    let localhost = host == "127.0.0.1" || host == "::1";
    Some((socket_address(&host, port), localhost))
}

#[cfg(test)]
mod tests {
    use crate::translate::testing::{
        SHOP, chains, filter_names, hcm, proxy, push_from_yaml, shop_config, shop_sidecar,
        tcp_targets, Generated,
    };
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
    use envoy_types::pb::envoy::config::core::v3::address;
    use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;

    fn web_v1(mode: &str) -> crate::model::proxy::Proxy {
        proxy(
            "sidecar~10.0.0.1~web-v1.shop~shop.svc.cluster.local",
            mode,
            &[("app", "web"), ("version", "v1")],
        )
    }

    fn chain_names(g: &Generated) -> Vec<String> {
        chains(g.listener("virtualInbound").expect("virtualInbound"))
            .map(|c| c.name.clone())
            .collect()
    }

    #[test]
    fn a_workload_a_service_selects_gets_a_chain_and_a_cluster_for_its_target_port() {
        let g = shop_config(&web_v1("REDIRECT"));
        // The loop guard first, the catch-all chains, then the service's target port.
        assert_eq!(
            chain_names(&g),
            [
                "virtualInbound-blackhole",
                "virtualInbound-catchall-http",
                "virtualInbound",
                "0.0.0.0_8080"
            ]
        );
        let listener = g.listener("virtualInbound").unwrap();
        let web = chains(listener).find(|c| c.name == "0.0.0.0_8080").unwrap();
        let m = web.filter_chain_match.as_ref().unwrap();
        assert_eq!(m.destination_port.as_ref().map(|p| p.value), Some(8080));
        assert_eq!(m.transport_protocol, "raw_buffer");
        let Some(RouteSpecifier::RouteConfig(rc)) = hcm(web).and_then(|h| h.route_specifier) else {
            panic!("an inline route configuration: {:?}", filter_names(web));
        };
        assert_eq!(rc.name, "inbound|8080||");
        assert_eq!(rc.virtual_hosts[0].name, "inbound|http|80");
        let cluster = g.cluster("inbound|8080||").expect("the inbound cluster");
        assert_eq!(
            cluster.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32
            ))
        );
        let bind = cluster.upstream_bind_config.as_ref().unwrap();
        assert_eq!(bind.source_address.as_ref().unwrap().address, "127.0.0.6");
        // The blackhole takes 15006 itself; the HTTP inspector runs only for the catch-all.
        let blackhole = chains(listener).next().unwrap();
        assert_eq!(tcp_targets(blackhole), ["BlackHoleCluster"]);
        let inspector = listener
            .listener_filters
            .iter()
            .find(|f| f.name == "envoy.filters.listener.http_inspector")
            .unwrap();
        let disabled = format!("{:?}", inspector.filter_disabled);
        assert!(
            disabled.contains("start: 8080") && disabled.contains("start: 15006"),
            "{disabled}"
        );
    }

    /// A named `targetPort` resolves through the workload's own container ports, before its
    /// pod is an endpoint (a pod is ready only after its sidecar got its config).
    #[test]
    fn a_named_target_port_resolves_through_the_container_ports() {
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{name: grpc, port: 9090, targetPort: grpc-port}]
"#;
        let push = push_from_yaml(yaml, None);
        let mut api = proxy(
            "sidecar~10.0.0.7~api-1.shop~shop.svc.cluster.local",
            "REDIRECT",
            &[("app", "api")],
        );
        let g = Generated::for_proxy(&api, &push);
        assert!(g.cluster("inbound|9443||").is_none(), "unresolved: no port");
        api.container_ports.insert("grpc-port".into(), 9443);
        let g = Generated::for_proxy(&api, &push);
        let chain = chains(g.listener("virtualInbound").unwrap())
            .find(|c| c.name == "0.0.0.0_9443")
            .expect("the chain of the resolved port");
        let h = hcm(chain).unwrap();
        assert!(
            h.http2_protocol_options.is_some(),
            "gRPC is HTTP/2 inbound too"
        );
        assert!(g.cluster("inbound|9443||").is_some());
    }

    #[test]
    fn a_tcp_service_port_gets_a_tcp_chain_to_its_inbound_cluster() {
        let db = proxy(
            "sidecar~10.0.0.3~db-1.shop~shop.svc.cluster.local",
            "REDIRECT",
            &[("app", "db")],
        );
        let g = shop_config(&db);
        let listener = g.listener("virtualInbound").unwrap();
        let chain = chains(listener).find(|c| c.name == "0.0.0.0_5432").unwrap();
        assert_eq!(tcp_targets(chain), ["inbound|5432||"]);
    }

    #[test]
    fn a_proxy_no_service_selects_has_only_the_catch_all_chains() {
        let g = shop_config(&shop_sidecar());
        assert_eq!(
            chain_names(&g),
            [
                "virtualInbound-blackhole",
                "virtualInbound-catchall-http",
                "virtualInbound"
            ]
        );
        assert!(!g.cluster_names().iter().any(|c| c.starts_with("inbound|")));
    }

    #[test]
    fn without_interception_service_ports_make_no_inbound_listener() {
        let g = shop_config(&web_v1("NONE"));
        assert!(g.listener("virtualInbound").is_none());
        assert!(!g.cluster_names().iter().any(|c| c.starts_with("inbound|")));
    }

    #[test]
    fn a_sidecar_ingress_replaces_the_service_ports_and_capture_none_binds() {
        let yaml = format!(
            "{SHOP}---\n{}",
            r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: web, namespace: shop}
spec:
  workloadSelector: {labels: {app: web}}
  ingress:
  - port: {number: 9000, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:9001
  - port: {number: 9100, protocol: TCP, name: tcp}
    defaultEndpoint: 127.0.0.1:9101
    captureMode: NONE
"#
        );
        let g = Generated::for_proxy(&web_v1("REDIRECT"), &push_from_yaml(&yaml, None));
        assert_eq!(g.consistency_errors(), Vec::<String>::new());
        // 10.0.0.1 is a global unicast address: it names the chain.
        assert_eq!(
            chain_names(&g),
            [
                "virtualInbound-blackhole",
                "virtualInbound-catchall-http",
                "virtualInbound",
                "10.0.0.1_9000"
            ]
        );
        let bound = g.listener("10.0.0.1_9100").expect("captureMode NONE binds");
        assert!(
            bound.listener_filters.is_empty(),
            "{:?}",
            bound.listener_filters
        );
        assert!(
            g.cluster("inbound|8080||").is_none(),
            "the service port gave way"
        );
        let cluster = g.cluster("inbound|9000||").unwrap();
        assert!(
            cluster.upstream_bind_config.is_none(),
            "no 127.0.0.6 towards 127.0.0.1"
        );
        assert_eq!(
            g.endpoint_addresses("inbound|9000||"),
            Vec::<String>::new(),
            "a STATIC cluster, not EDS"
        );
        let assignment = cluster.load_assignment.as_ref().unwrap();
        let endpoint = &assignment.endpoints[0].lb_endpoints[0];
        let Some(HostIdentifier::Endpoint(e)) = &endpoint.host_identifier else {
            panic!("an endpoint: {endpoint:?}");
        };
        let Some(address::Address::SocketAddress(a)) =
            e.address.as_ref().and_then(|a| a.address.as_ref())
        else {
            panic!("a socket address: {e:?}");
        };
        assert_eq!(
            (a.address.as_str(), a.port_specifier.clone()),
            ("127.0.0.1", Some(PortSpecifier::PortValue(9001)))
        );
    }
}
