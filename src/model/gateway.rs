//! Gateways as a router proxy sees them: the Gateway resources whose `selector` picks the proxy,
//! merged into one list of servers per listening port (istiod's `MergeGateways`), and the
//! VirtualServices bound to each gateway.
//!
//! Owns the Istio rules that decide *what* a gateway serves: port translation through the
//! gateway's own Service (`80` → targetPort `8080`), RDS route names (`http.8080`,
//! `https.443.<portName>.<gateway>.<namespace>`), `namespace/host` server hosts, and
//! VirtualService `gateways:` binding. How that becomes Envoy config is translate's job.

use std::collections::BTreeSet;

use crate::model::config::Config;
use crate::model::host::Hostname;
use crate::model::istio::gateway::{Server, ServerTlsMode};
use crate::model::istio::{Gateway, VirtualService};
use crate::model::proxy::{NodeType, Proxy};
use crate::model::push_context::{PushContext, is_exported_to};
use crate::model::registry::{Protocol, TargetPort, labels_match};

/// One Gateway server, placed on the port the proxy really listens on.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayServer {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    pub gateway_namespace: String,
    /// The server with its hosts sanitized (`./h` → `ns/h`, `*/h` → `h`).
    pub server: Server,
    /// The port the proxy listens on (the gateway Service's targetPort for the server port).
    pub listen_port: u16,
    /// The server's own port number (virtual host names and `match.port` use it).
    pub server_port: u16,
    pub protocol: Protocol,
    /// RDS name for HTTP and terminated HTTPS servers; empty for TCP and passthrough.
    pub route_name: String,
    /// SNI names for TLS servers (hosts without their namespace part).
    pub sni_hosts: Vec<String>,
}

impl GatewayServer {
    pub fn tls_mode(&self) -> Option<ServerTlsMode> {
        self.server.tls.as_ref().map(|t| t.mode)
    }

    /// Terminates or passes through TLS (an HTTP server with httpsRedirect is not one).
    pub fn is_tls(&self) -> bool {
        self.server.tls.is_some() && !self.protocol.is_http()
    }

    /// TLS that the gateway forwards untouched (PASSTHROUGH / AUTO_PASSTHROUGH).
    pub fn is_passthrough(&self) -> bool {
        matches!(
            self.tls_mode(),
            Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
        ) && self.server.tls.as_ref().is_some_and(|t| !t.https_redirect)
    }

    /// Served through an HTTP connection manager (HTTP, or HTTPS terminated here).
    pub fn is_http(&self) -> bool {
        self.protocol.is_http() || (self.protocol == Protocol::Https && !self.is_passthrough())
    }

    /// Whether `vs`'s namespace may bind to this server's hosts, and which of its hosts do.
    /// Returns the intersecting hosts (the more specific of each matching pair).
    pub fn matching_hosts(&self, vs: &Config<VirtualService>) -> Vec<String> {
        let server_hosts: Vec<&str> = self
            .server
            .hosts
            .iter()
            .filter_map(|h| match h.split_once('/') {
                Some((ns, host)) if ns == "*" || ns == vs.meta.namespace => Some(host),
                Some(_) => None,
                None => Some(h.as_str()),
            })
            .collect();
        let mut out = BTreeSet::new();
        for sh in &server_hosts {
            for vh in &vs.spec.hosts {
                if Hostname::new(vh).subset_of(*sh) {
                    out.insert(vh.to_ascii_lowercase());
                } else if Hostname::new(sh).subset_of(vh.as_str()) {
                    out.insert(sh.to_ascii_lowercase());
                }
            }
        }
        out.into_iter().collect()
    }
}

/// Every server of every Gateway that selects `proxy`, in Istio's order (oldest Gateway
/// first), placed on its listening port. Empty for sidecars. Servers that cannot share a port
/// with an earlier one (a plaintext server beside another protocol, duplicate TLS hosts) are
/// left out, as istiod does.
pub fn merged_servers(proxy: &Proxy, push: &PushContext) -> Vec<GatewayServer> {
    if proxy.node_type != NodeType::Router {
        return Vec::new();
    }
    let mut out: Vec<GatewayServer> = Vec::new();
    let mut tls_hosts: BTreeSet<(u16, String, String)> = BTreeSet::new();
    for gw in gateways_for(proxy, push) {
        let gateway = gw.meta.key();
        for server in &gw.spec.servers {
            let Some(port) = &server.port else { continue };
            let Ok(server_port) = u16::try_from(port.number) else {
                continue;
            };
            let protocol = Protocol::parse(&port.protocol).unwrap_or(Protocol::Unsupported);
            let server = sanitize_hosts(server, &gw.meta.namespace);
            let listen_port = resolve_port(proxy, push, server_port);
            // A TLS server terminates or passes TLS through; an HTTP server's `tls` only ever
            // carries httpsRedirect (istiod's `IsTLSServer`).
            let is_tls = server.tls.is_some() && !protocol.is_http();
            let sni_hosts: Vec<String> = if is_tls {
                server
                    .hosts
                    .iter()
                    .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h).to_string())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            } else {
                Vec::new()
            };
            if server.tls.is_some()
                && sni_hosts
                    .iter()
                    .any(|h| tls_hosts.contains(&(listen_port, server.bind.clone(), h.clone())))
            {
                tracing::warn!(
                    gateway,
                    port = listen_port,
                    "skipping gateway server: duplicate TLS host on this port"
                );
                continue;
            }
            let mut candidate = GatewayServer {
                gateway: gateway.clone(),
                gateway_namespace: gw.meta.namespace.clone(),
                server,
                listen_port,
                server_port,
                protocol,
                route_name: String::new(),
                sni_hosts,
            };
            candidate.route_name = route_name(&candidate, &gw.meta.name);
            // A port holds either plaintext HTTP servers (merged into one route config) or
            // TLS servers told apart by SNI; nothing else shares a port.
            let same_port: Vec<&GatewayServer> = out
                .iter()
                .filter(|s| s.listen_port == listen_port && s.server.bind == candidate.server.bind)
                .collect();
            let compatible = same_port.iter().all(|s| {
                let both_plain_http = s.protocol.is_http() && candidate.protocol.is_http();
                let both_tls = s.is_tls() && candidate.is_tls();
                both_plain_http || both_tls
            });
            if !compatible {
                tracing::warn!(
                    gateway,
                    port = listen_port,
                    "skipping gateway server: conflicts with another server on this port"
                );
                continue;
            }
            for h in &candidate.sni_hosts {
                tls_hosts.insert((listen_port, candidate.server.bind.clone(), h.clone()));
            }
            out.push(candidate);
        }
    }
    out
}

/// Gateways whose selector matches the proxy's labels (any namespace, as istiod with
/// PILOT_SCOPE_GATEWAY_TO_NAMESPACE off), oldest first.
pub fn gateways_for<'a>(proxy: &Proxy, push: &'a PushContext) -> Vec<&'a Config<Gateway>> {
    push.store
        .gateways
        .iter()
        .filter(|g| labels_match(&g.spec.selector, &proxy.labels))
        .map(|g| &**g)
        .collect()
}

/// istiod's `sanitizeServerHostNamespace`: `./h` → `<gateway ns>/h`, `*/h` → `h`, `*/*` → `*`.
fn sanitize_hosts(server: &Server, namespace: &str) -> Server {
    let mut s = server.clone();
    let mut hosts = Vec::new();
    for h in &server.hosts {
        match h.split_once('/') {
            Some((".", host)) => hosts.push(format!("{namespace}/{host}")),
            Some(("*", "*")) => {
                hosts = vec!["*".to_string()];
                break;
            }
            Some(("*", host)) => hosts.push(host.to_string()),
            _ => hosts.push(h.clone()),
        }
    }
    s.hosts = hosts;
    s
}

/// istiod's `resolvePorts` for selector-based gateways: a Service in the proxy's namespace
/// whose selector picks the proxy and has the server port maps it to its targetPort;
/// otherwise the port is used as it is.
fn resolve_port(proxy: &Proxy, push: &PushContext, number: u16) -> u16 {
    let mut services: Vec<_> = push
        .registry()
        .services
        .values()
        .filter(|s| {
            s.namespace == proxy.namespace
                && s.selector
                    .as_ref()
                    .is_some_and(|sel| !sel.is_empty() && labels_match(sel, &proxy.labels))
        })
        .collect();
    services.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    for s in services {
        if let Some(p) = s.ports.iter().find(|p| p.port == number) {
            return match p.target_port {
                TargetPort::Number(n) if n > 0 => n,
                _ => number,
            };
        }
    }
    number
}

/// istiod's `gatewayRDSRouteName`.
fn route_name(s: &GatewayServer, gateway_name: &str) -> String {
    let bind = if s.server.bind.is_empty() {
        String::new()
    } else {
        format!(".{}", s.server.bind)
    };
    if s.protocol.is_http() {
        format!("http.{}{bind}", s.listen_port)
    } else if s.protocol == Protocol::Https && !s.is_passthrough() {
        let port_name = s.server.port.as_ref().map_or("", |p| p.name.as_str());
        format!(
            "https.{}.{port_name}.{gateway_name}.{}{bind}",
            s.server_port, s.gateway_namespace
        )
    } else {
        String::new()
    }
}

/// VirtualServices bound to `gateway` (`namespace/name`) and visible from the proxy's
/// namespace, same-namespace ones first (istiod's `VirtualServicesForGateway`). A VirtualService
/// names gateways as `name` (its own namespace) or `namespace/name`.
pub fn virtual_services_for_gateway<'a>(
    proxy: &Proxy,
    push: &'a PushContext,
    gateway: &str,
) -> Vec<&'a Config<VirtualService>> {
    let mut out: Vec<&Config<VirtualService>> = push
        .store
        .virtual_services
        .iter()
        .filter(|vs| {
            names_gateway(&vs.spec.gateways, &vs.meta.namespace, gateway)
                && is_exported_to(&vs.spec.export_to, &vs.meta.namespace, &proxy.namespace)
        })
        .map(|vs| &**vs)
        .collect();
    out.sort_by_key(|vs| vs.meta.namespace != proxy.namespace);
    out
}

/// Whether a match's `gateways` (written in a VirtualService of `namespace`) name `gateway`
/// (`namespace/name`, or `mesh`).
pub fn names_gateway(gateways: &[String], namespace: &str, gateway: &str) -> bool {
    gateways
        .iter()
        .any(|g| resolve_gateway_name(g, namespace) == gateway)
}

/// `name` → `<namespace>/name`; `ns/name` stays; `mesh` stays `mesh`.
pub fn resolve_gateway_name(name: &str, namespace: &str) -> String {
    if name == "mesh" || name.contains('/') {
        name.to_string()
    } else {
        // `name.namespace` is the old form of `namespace/name`.
        match name.split_once('.') {
            Some((n, ns)) => format!("{ns}/{n}"),
            None => format!("{namespace}/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_names_resolve_in_the_virtual_service_namespace() {
        assert_eq!(resolve_gateway_name("gw", "ns1"), "ns1/gw");
        assert_eq!(resolve_gateway_name("other/gw", "ns1"), "other/gw");
        assert_eq!(resolve_gateway_name("gw.other", "ns1"), "other/gw");
        assert_eq!(resolve_gateway_name("mesh", "ns1"), "mesh");
    }

    #[test]
    fn server_hosts_are_sanitized_as_istiod_does() {
        let server = Server {
            hosts: vec![
                "./a.example.com".into(),
                "*/b.example.com".into(),
                "c.example.com".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            sanitize_hosts(&server, "gw-ns").hosts,
            ["gw-ns/a.example.com", "b.example.com", "c.example.com"]
        );
        let all = Server {
            hosts: vec!["x".into(), "*/*".into()],
            ..Default::default()
        };
        assert_eq!(sanitize_hosts(&all, "gw-ns").hosts, ["*"]);
    }
}
