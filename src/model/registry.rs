//! The service registry: services, their ports and protocols, and the endpoints behind them.
//!
//! Owns the source-neutral shapes that Kubernetes Services / EndpointSlices / Pods (from files
//! or from a cluster) are turned into. Must not know where they came from, and does no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// The DNS suffix of the mesh's cluster (Istio's default).
pub const DEFAULT_DOMAIN_SUFFIX: &str = "cluster.local";

/// Application protocol of a service port, as Istio selects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Mongo,
    Mysql,
    Redis,
    Udp,
    /// Unrecognised name: Istio sniffs the protocol.
    Unsupported,
}

impl Protocol {
    /// Parses one protocol word as Istio's `protocol.Parse` does (case-insensitive).
    pub fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "mongo" => Protocol::Mongo,
            "mysql" => Protocol::Mysql,
            "redis" => Protocol::Redis,
            "udp" => Protocol::Udp,
            _ => return None,
        })
    }

    /// Istio's `ConvertProtocol` for Kubernetes service ports: UDP stays UDP; a set
    /// `appProtocol` decides alone (Kubernetes' `kubernetes.io/h2c`, `/ws`, `/wss` included);
    /// otherwise the port name's prefix before the first `-` (`http`, `http-web`, `grpc-x`;
    /// `grpc-web` as a whole). Unknown protocols are sniffed, except on the server-first
    /// well-known ports (SMTP 25, DNS 53, MySQL 3306, MongoDB 27017), which are TCP.
    pub fn select(
        port: u16,
        port_name: &str,
        app_protocol: Option<&str>,
        kube_protocol: Option<&str>,
    ) -> Self {
        if kube_protocol.is_some_and(|p| p.eq_ignore_ascii_case("UDP")) {
            return Protocol::Udp;
        }
        let selected = match app_protocol.filter(|ap| !ap.is_empty()) {
            Some(ap) => match ap.to_ascii_lowercase().as_str() {
                "kubernetes.io/h2c" => Protocol::Http2,
                "kubernetes.io/ws" => Protocol::Http,
                "kubernetes.io/wss" => Protocol::Https,
                other => Protocol::parse(other).unwrap_or(Protocol::Unsupported),
            },
            None => {
                let lower = port_name.to_ascii_lowercase();
                if lower.starts_with("grpc-web") {
                    Protocol::GrpcWeb
                } else {
                    let prefix = lower.split('-').next().unwrap_or_default();
                    Protocol::parse(prefix).unwrap_or(Protocol::Unsupported)
                }
            }
        };
        if selected == Protocol::Unsupported && matches!(port, 25 | 53 | 3306 | 27017) {
            return Protocol::Tcp;
        }
        selected
    }

    /// HTTP-family protocols get an HTTP connection manager and route configuration.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
        )
    }

    /// Protocols whose upstream speaks HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-Web",
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
            Protocol::Mongo => "Mongo",
            Protocol::Mysql => "MySQL",
            Protocol::Redis => "Redis",
            Protocol::Udp => "UDP",
            Protocol::Unsupported => "UnsupportedProtocol",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a service port sends traffic on the workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum TargetPort {
    Number(u16),
    /// A named container port, resolved per pod.
    Named(String),
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub target_port: TargetPort,
    pub protocol: Protocol,
}

impl ServicePort {
    /// The port on a workload with these named container ports that this service port sends
    /// traffic to: a numbered `targetPort` (the port itself when unset), or a named one looked
    /// up in `container_ports` (`None` when the workload has no such port).
    pub fn target_on(&self, container_ports: &BTreeMap<String, u16>) -> Option<u16> {
        match &self.target_port {
            TargetPort::Number(0) => Some(self.port),
            TargetPort::Number(n) => Some(*n),
            TargetPort::Named(name) => container_ports.get(name).copied(),
        }
    }
}

/// How a service's endpoints are found (istiod's `model.Resolution`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub enum Resolution {
    /// Endpoints are known to the mesh and sent over EDS (Kubernetes services, STATIC
    /// ServiceEntries).
    #[default]
    ClientSideLb,
    /// Forward to the original destination (ServiceEntry resolution NONE).
    Passthrough,
    /// Envoy resolves every endpoint name with DNS and balances over all addresses (DNS).
    DnsLb,
    /// Envoy resolves one name and connects to its first address (DNS_ROUND_ROBIN).
    DnsRoundRobinLb,
}

/// Which registry a service came from; a Kubernetes service wins a hostname it shares with a
/// ServiceEntry in the same namespace (istiod's "domain squatting" rule).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub enum ServiceSource {
    #[default]
    Kubernetes,
    ServiceEntry,
}

/// A service in the mesh, keyed by its fully qualified hostname.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// e.g. `httpbin.testns1.svc.cluster.local`
    pub hostname: String,
    pub name: String,
    pub namespace: String,
    /// ClusterIP when it has one (used for the address forms of virtual host domains).
    pub cluster_ip: Option<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// Pod selector; `None` when the service has no selector (endpoints come from slices).
    pub selector: Option<BTreeMap<String, String>>,
    /// `networking.istio.io/exportTo` annotation, kept for the visibility rules.
    pub export_to: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub resolution: Resolution,
    /// ServiceEntry `location: MESH_EXTERNAL` (clusters carry istio `external: true`).
    pub mesh_external: bool,
    /// Virtual IPs / CIDRs (ServiceEntry `addresses`); `cluster_ip` holds the first plain IP.
    pub addresses: Vec<String>,
    pub source: ServiceSource,
}

impl Service {
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// The hostname of a Kubernetes service.
pub fn service_hostname(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc.{DEFAULT_DOMAIN_SUFFIX}")
}

/// One address serving one port of one service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Endpoint {
    /// The endpoint's IP; unspecified (`0.0.0.0`) when `hostname` names it instead.
    pub address: IpAddr,
    /// A DNS name to resolve (endpoints of DNS-resolved ServiceEntries may be names).
    pub hostname: Option<String>,
    /// The port on the workload (the service port's target).
    pub port: u16,
    /// Name of the service port this endpoint serves.
    pub service_port_name: String,
    /// Labels of the workload (pod labels), used for subset selection.
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    /// The workload's name (pod name) when known.
    pub workload: Option<String>,
    pub namespace: String,
    /// Load-balancing weight (ServiceEntry / WorkloadEntry `weight`; 1 when unset).
    pub weight: u32,
}

impl Endpoint {
    /// The address Envoy connects to or resolves: the name when there is one, else the IP.
    pub fn target(&self) -> String {
        self.hostname
            .clone()
            .unwrap_or_else(|| self.address.to_string())
    }
}

/// The registry part of a snapshot: services by hostname and their endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceRegistry {
    pub services: BTreeMap<String, Service>,
    /// Endpoints by service hostname, sorted for deterministic output.
    pub endpoints: BTreeMap<String, Vec<Endpoint>>,
}

impl ServiceRegistry {
    /// The port a destination that names none is reached on, as istiod picks it: the
    /// service's only port, else `fallback` (the port the traffic came in on).
    pub fn destination_port(&self, hostname: &str, fallback: u16) -> u16 {
        match self.service(hostname) {
            Some(s) if s.ports.len() == 1 => s.ports[0].port,
            _ => fallback,
        }
    }

    pub fn service(&self, hostname: &str) -> Option<&Service> {
        self.services.get(hostname)
    }

    /// Endpoints of `hostname` serving the service port named `port_name`.
    pub fn endpoints_for<'a>(
        &'a self,
        hostname: &str,
        port_name: &'a str,
    ) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints
            .get(hostname)
            .into_iter()
            .flatten()
            .filter(move |e| e.service_port_name == port_name)
    }
}

/// True when every selector label is present with the same value in `labels`.
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_from_port_name_and_app_protocol() {
        let sel = |name: &str, ap: Option<&str>| Protocol::select(8000, name, ap, None);
        assert_eq!(sel("http", None), Protocol::Http);
        assert_eq!(sel("http-web", None), Protocol::Http);
        assert_eq!(sel("HTTP2", None), Protocol::Http2);
        assert_eq!(sel("grpc-web", None), Protocol::GrpcWeb);
        assert_eq!(sel("grpc-web-x", None), Protocol::GrpcWeb);
        assert_eq!(sel("grpc-api", None), Protocol::Grpc);
        assert_eq!(sel("tcp-db", None), Protocol::Tcp);
        assert_eq!(sel("httpx", None), Protocol::Unsupported);
        assert_eq!(sel("web", None), Protocol::Unsupported);
        assert_eq!(sel("", None), Protocol::Unsupported);
        assert_eq!(sel("web", Some("http")), Protocol::Http);
        assert_eq!(sel("tcp", Some("kubernetes.io/h2c")), Protocol::Http2);
        assert_eq!(sel("http", Some("tcp")), Protocol::Tcp);
        // appProtocol replaces the name entirely, even when it is not a protocol we know.
        assert_eq!(sel("http", Some("weird")), Protocol::Unsupported);
        assert_eq!(sel("x", Some("h2c")), Protocol::Unsupported);
        assert_eq!(
            Protocol::select(8000, "http", None, Some("UDP")),
            Protocol::Udp
        );
        assert_eq!(Protocol::select(3306, "db", None, None), Protocol::Tcp);
        assert_eq!(Protocol::select(3306, "http", None, None), Protocol::Http);
    }

    #[test]
    fn selector_matching() {
        let sel: BTreeMap<_, _> = [("app".to_string(), "httpbin".to_string())].into();
        let mut labels = sel.clone();
        labels.insert("version".into(), "v1".into());
        assert!(labels_match(&sel, &labels));
        assert!(!labels_match(&labels, &sel));
        assert!(labels_match(&BTreeMap::new(), &sel));
    }
}
