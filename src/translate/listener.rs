//! LDS: outbound listeners per service port (an HTTP connection manager fed by RDS for HTTP
//! ports, a TCP proxy otherwise, routed by VirtualService `tcp` routes, or `tls` routes by SNI
//! on TLS/HTTPS ports), in both interception layouts:
//! - `REDIRECT` / `TPROXY`: Istio's `virtualOutbound` (15001, with its loop-protection
//!   blackhole chain) plus per-port `0.0.0.0_<port>` listeners with `bind_to_port: false`;
//! - `NONE`: per-port listeners that really bind on the proxy's first instance IP.
//!
//! The inbound listeners (`virtualInbound` 15006 and those that bind) are `inbound`'s;
//! `translate::generate` serves both.

use crate::model::config::Config;
use crate::model::istio::virtual_service::{L4MatchAttributes, VirtualService};
use crate::model::mesh::OutboundTrafficMode;
use crate::model::proxy::{InterceptionMode, Proxy};
use crate::model::push_context::PushContext;
use crate::model::registry::Protocol;
use crate::translate::common::{OutboundPort, outbound_ports, socket_address};
use crate::translate::filters::{
    PLAINTEXT_HTTP_ALPNS, TRANSPORT_SOCKET_CONNECT_TIMEOUT, blackhole_chain, cidr_range,
    http_connection_manager, inspector_filters, listener_access_logs, network_filter,
    plaintext_match, tcp_proxy_filter, tcp_route_filter, tls_inspector,
};
use envoy_types::pb::envoy::config::core::v3::{CidrRange, TrafficDirection};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    Rds, http_connection_manager::RouteSpecifier,
};

use crate::translate::{
    BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER, ads_config_source, any, outbound_cluster_name,
    pb_duration,
};

pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
pub const VIRTUAL_OUTBOUND_PORT: u32 = 15001;
/// The chain of `virtualOutbound` that drops traffic addressed to 15001 itself (a loop).
pub const VIRTUAL_OUTBOUND_BLACKHOLE: &str = "virtualOutbound-blackhole";

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
                let hcm = http_filter_chain(proxy, push, &name, port, false);
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
                let hcm = http_filter_chain(proxy, push, &name, port, true);
                let cluster = catch_all_cluster(proxy, push);
                let passthrough = FilterChain {
                    name: "PassthroughFilterChain".into(),
                    filter_chain_match: Some(FilterChainMatch::default()),
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
                let hcm = http_filter_chain(proxy, push, &name, port, true);
                // The default chain cannot match on addresses: only a catch-all tcp route fits.
                let service = TcpService::new(proxy, push, &tcp_host, port);
                let tcp = service
                    .tcp_chains()
                    .into_iter()
                    .find(|c| c.filter_chain_match.is_none())
                    .unwrap_or_else(|| service.default_chain());
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
                    let service = TcpService::new(proxy, push, &hostname, port);
                    let chains = if is_tls {
                        service.tls_chains()
                    } else {
                        service.tcp_chains()
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
    }
    for listener in &mut out {
        listener.access_log = listener_access_logs(push.mesh());
    }
    out
}

/// An outbound listener; `bind_to_port: false` unless interception is off. With `sniff`, the
/// inspectors its chains need (istiod's `populateListenerFilters`).
fn outbound_listener(
    name: String,
    bind: &str,
    port: u16,
    filter_chains: Vec<FilterChain>,
    default_filter_chain: Option<FilterChain>,
    sniff: bool,
    bind_for_real: bool,
) -> Listener {
    let listener_filters = if sniff {
        inspector_filters(filter_chains.iter().chain(default_filter_chain.as_ref()))
    } else {
        Vec::new()
    };
    Listener {
        name,
        address: Some(socket_address(bind, u32::from(port))),
        filter_chains,
        default_filter_chain,
        listener_filters,
        listener_filters_timeout: Some(pb_duration(std::time::Duration::ZERO)),
        continue_on_listener_filters_timeout: true,
        traffic_direction: TrafficDirection::Outbound as i32,
        bind_to_port: (!bind_for_real).then_some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// The HCM chain of an outbound port; with `sniffed`, it only takes plaintext HTTP/1.1 and h2c.
fn http_filter_chain(
    proxy: &Proxy,
    push: &PushContext,
    listener_name: &str,
    port: u16,
    sniffed: bool,
) -> FilterChain {
    service_chain(
        sniffed.then(|| plaintext_match(None, &PLAINTEXT_HTTP_ALPNS)),
        network_filter(
            "envoy.filters.network.http_connection_manager",
            any(&http_connection_manager(
                proxy,
                push,
                format!("outbound_{listener_name}"),
                RouteSpecifier::Rds(Rds {
                    config_source: Some(ads_config_source()),
                    route_config_name: port.to_string(),
                }),
            )),
        ),
    )
}

/// A chain towards a service: istiod 1.31 gives every one 15 s for its transport handshake.
fn service_chain(filter_chain_match: Option<FilterChainMatch>, filter: Filter) -> FilterChain {
    FilterChain {
        filter_chain_match,
        filters: vec![filter],
        transport_socket_connect_timeout: Some(pb_duration(TRANSPORT_SOCKET_CONNECT_TIMEOUT)),
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
        max_connections_to_accept_per_socket_event: Some(UInt32Value { value: 1 }),
        use_original_dst: Some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Outbound as i32,
        // As istiod: traffic addressed to 15001 itself would loop; it goes to the black hole.
        filter_chains: vec![
            blackhole_chain(VIRTUAL_OUTBOUND_BLACKHOLE, VIRTUAL_OUTBOUND_PORT),
            FilterChain {
                name: "virtualOutbound-catchall-tcp".into(),
                filters: vec![tcp_proxy_filter(push, cluster, cluster)],
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

/// A service port an outbound TCP or TLS listener serves: what its filter chains are built
/// from.
struct TcpService<'a> {
    proxy: &'a Proxy,
    push: &'a PushContext,
    hostname: &'a str,
    port: u16,
}

impl<'a> TcpService<'a> {
    fn new(proxy: &'a Proxy, push: &'a PushContext, hostname: &'a str, port: u16) -> Self {
        TcpService {
            proxy,
            push,
            hostname,
            port,
        }
    }

    /// The chain to the service's own cluster on the port, when no tcp route takes the traffic.
    fn default_chain(&self) -> FilterChain {
        let target = self
            .push
            .registry()
            .destination_port(self.hostname, self.port);
        let cluster = outbound_cluster_name(target, "", self.hostname);
        service_chain(None, tcp_proxy_filter(self.push, &cluster, &cluster))
    }

    /// The sidecar VirtualServices with a host matching the service, the proxy's namespace
    /// first.
    fn virtual_services(&self) -> Vec<&Config<VirtualService>> {
        self.push
            .virtual_services_for_host(self.proxy, self.hostname)
    }

    /// The outbound TCP filter chains of the service, as istiod's
    /// `buildSidecarOutboundTCPFilterChainOpts`: the `tcp` routes of the sidecar VirtualServices
    /// for the host, in order, until one applies to any destination address (a route without
    /// matches, or an applicable match without `destinationSubnets`); applicable matches with
    /// subnets become chains matching those prefixes. Without a catch-all route, the service's
    /// own cluster takes the rest.
    fn tcp_chains(&self) -> Vec<FilterChain> {
        let (proxy, push, port) = (self.proxy, self.push, self.port);
        let mut out: Vec<FilterChain> = Vec::new();
        for vs in self.virtual_services() {
            for tcp in &vs.spec.tcp {
                let Some(filter) = tcp_route_filter(push, vs, &tcp.route, port) else {
                    continue;
                };
                let applicable: Vec<&L4MatchAttributes> = tcp
                    .r#match
                    .iter()
                    .filter(|m| l4_match_applies(proxy, m, port))
                    .collect();
                if tcp.r#match.is_empty()
                    || applicable.iter().any(|m| m.destination_subnets.is_empty())
                {
                    out.push(service_chain(None, filter));
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
                out.push(service_chain(Some(chain_match), filter));
            }
        }
        out.push(self.default_chain());
        out
    }

    /// The outbound filter chains of a TLS/HTTPS port, as istiod's
    /// `buildSidecarOutboundTLSFilterChainOpts`: one chain per applicable `tls` match (its SNI
    /// hosts as `server_names`, its destination subnets as prefix ranges; repeats skipped), or,
    /// without any, the service's own cluster.
    fn tls_chains(&self) -> Vec<FilterChain> {
        let (proxy, push, port) = (self.proxy, self.push, self.port);
        let mut out: Vec<FilterChain> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for vs in self.virtual_services() {
            for tls in &vs.spec.tls {
                for m in &tls.r#match {
                    let applies = source_applies(
                        proxy,
                        port,
                        (&m.gateways, &m.source_labels, m.port, &m.source_namespace),
                    );
                    if !applies
                        || !seen.insert((m.sni_hosts.clone(), m.destination_subnets.clone()))
                    {
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
                    out.push(service_chain(
                        (chain_match != FilterChainMatch::default()).then_some(chain_match),
                        filter,
                    ));
                }
            }
        }
        if out.is_empty() {
            out.push(self.default_chain());
        }
        out
    }
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
