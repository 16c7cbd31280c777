//! Test helpers for translation that need no Envoy (istiod's `xdstest.Extract*` and
//! `simulation.Run`): a snapshot from a YAML string, proxies from node ids, every type generated
//! and decoded into typed Envoy messages, extractors by name, a consistency check (every route
//! configuration a listener names and every EDS cluster exists, as go-control-plane's
//! `Snapshot.Consistent`), and a small request simulator (host, port, path, headers → the
//! virtual host, route and cluster that answer).
//!
//! Built only for tests (`cfg(test)`) and the `testing` feature. It reads YAML through the file
//! source's parser (the one test-only arrow from translate back to sources); it must not be used
//! by the server's own code paths.

use std::collections::BTreeSet;
use std::path::Path;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use prost::Message;

use crate::model::mesh::MeshConfig;
use crate::model::proxy::Proxy;
use crate::model::push_context::PushContext;
use crate::sources::files::objects_from_text;
use crate::translate::{ResourceType, generate};

/// A snapshot of the objects in `yaml` (multi-document), with `mesh` as mesh config. Panics on
/// any rejected document: a test's input is meant to be valid.
pub fn push_from_yaml(yaml: &str, mesh: Option<&str>) -> PushContext {
    let mesh = mesh.map(|m| MeshConfig::from_yaml(m).expect("test mesh config parses"));
    let store =
        objects_from_text(Path::new("test.yaml"), yaml).into_store("istio-system", mesh.as_ref());
    assert!(
        store.errors.is_empty(),
        "test config is valid: {:#?}",
        store.errors
    );
    PushContext::new(store)
}

/// A proxy from its node id (`sidecar~IP~POD.NS~NS.svc.cluster.local` or `router~...`), with
/// `INTERCEPTION_MODE` `mode` and `labels`.
pub fn proxy(id: &str, mode: &str, labels: &[(&str, &str)]) -> Proxy {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let meta = serde_json::json!({"INTERCEPTION_MODE": mode, "LABELS": labels});
    Proxy::from_node(id, meta.as_object().expect("an object")).expect("a valid test node id")
}

/// A small mesh most builder tests share: namespace `shop` with an HTTP service `web` (port 80
/// → 8080, pods v1 at 10.0.0.1 and v2 at 10.0.0.2), a TCP service `db` (5432, pod 10.0.0.3), a
/// DestinationRule for `web` (subsets by `version`, RANDOM, at most 7 connections), a
/// VirtualService for `web` (header `end-user: jason` to v2, else 90/10), and an ingress Gateway
/// in istio-system (port 8080: `shop.example.com` to web v1; `secure.example.com` redirected
/// to HTTPS).
pub const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-v1, namespace: shop, labels: {app: web, version: v1}}
spec: {containers: [{name: web, image: web}]}
status: {phase: Running, podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: web-v2, namespace: shop, labels: {app: web, version: v2}}
spec: {containers: [{name: web, image: web}]}
status: {phase: Running, podIP: 10.0.0.2}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  selector: {app: db}
  ports: [{name: tcp-db, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: shop, labels: {app: db}}
spec: {containers: [{name: db, image: db}]}
status: {phase: Running, podIP: 10.0.0.3}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    connectionPool: {tcp: {maxConnections: 7}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: web, subset: v2}}]
  - name: split
    route:
    - {destination: {host: web, subset: v1}, weight: 90}
    - {destination: {host: web, subset: v2}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop-gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [shop.example.com]
  - port: {number: 8080, name: http-secure, protocol: HTTP}
    hosts: [secure.example.com]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop-ingress, namespace: shop}
spec:
  hosts: [shop.example.com, secure.example.com]
  gateways: [istio-system/shop-gw]
  http:
  - route: [{destination: {host: web.shop.svc.cluster.local, subset: v1}}]
"#;

/// A sidecar in `shop` (10.0.0.9, REDIRECT).
pub fn shop_sidecar() -> Proxy {
    proxy(
        "sidecar~10.0.0.9~client.shop~shop.svc.cluster.local",
        "REDIRECT",
        &[],
    )
}

/// The ingress gateway that `SHOP`'s Gateway selects.
pub fn shop_ingress() -> Proxy {
    proxy(
        "router~10.0.0.50~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local",
        "NONE",
        &[("istio", "ingressgateway")],
    )
}

/// Everything `proxy` is served from `SHOP`, checked consistent.
pub fn shop_config(proxy: &Proxy) -> Generated {
    let g = Generated::for_proxy(proxy, &push_from_yaml(SHOP, None));
    assert_eq!(
        g.consistency_errors(),
        Vec::<String>::new(),
        "served config is consistent"
    );
    g
}

/// A simulated request.
pub fn get<'a>(port: u16, host: &'a str, path: &'a str) -> Request<'a> {
    Request {
        port,
        host,
        path,
        headers: &[],
    }
}

/// Everything one proxy is served, decoded.
#[derive(Debug, Default)]
pub struct Generated {
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteConfiguration>,
}

/// What answered a simulated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub listener: String,
    pub route_config: String,
    pub virtual_host: String,
    /// The route's `name` (istiod names VirtualService routes; default routes are `default`).
    pub route: String,
    pub target: Target,
}

/// A route's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Cluster(String),
    /// (cluster, weight) pairs.
    Weighted(Vec<(String, u32)>),
    Redirect,
    DirectResponse(u32),
    Other,
}

/// A request to simulate.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub port: u16,
    pub host: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

impl Generated {
    /// Every type for `proxy` in `push`, decoded.
    pub fn for_proxy(proxy: &Proxy, push: &PushContext) -> Generated {
        fn decoded<M: Message + Default>(
            kind: ResourceType,
            proxy: &Proxy,
            push: &PushContext,
        ) -> Vec<M> {
            generate(kind, proxy, push, None)
                .iter()
                .map(|r| M::decode(r.resource.value.as_slice()).expect("generated bytes decode"))
                .collect()
        }
        Generated {
            clusters: decoded(ResourceType::Cluster, proxy, push),
            endpoints: decoded(ResourceType::Endpoint, proxy, push),
            listeners: decoded(ResourceType::Listener, proxy, push),
            routes: decoded(ResourceType::Route, proxy, push),
        }
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    pub fn cluster_names(&self) -> BTreeSet<&str> {
        self.clusters.iter().map(|c| c.name.as_str()).collect()
    }

    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    pub fn listener_names(&self) -> BTreeSet<&str> {
        self.listeners.iter().map(|l| l.name.as_str()).collect()
    }

    pub fn route_config(&self, name: &str) -> Option<&RouteConfiguration> {
        self.routes.iter().find(|r| r.name == name)
    }

    pub fn load_assignment(&self, cluster: &str) -> Option<&ClusterLoadAssignment> {
        self.endpoints.iter().find(|e| e.cluster_name == cluster)
    }

    /// `ip:port` of every endpoint of `cluster`, sorted.
    pub fn endpoint_addresses(&self, cluster: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .load_assignment(cluster)
            .into_iter()
            .flat_map(|cla| &cla.endpoints)
            .flat_map(|l| &l.lb_endpoints)
            .filter_map(|lb| match &lb.host_identifier {
                Some(
                    envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(e),
                ) => socket_address(e.address.as_ref()?),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// Every way the served config refers to something it does not hold: an EDS cluster
    /// without a load assignment (or one for no cluster), a listener's RDS name without a
    /// route configuration, a route to a cluster that is not served. Empty when consistent.
    pub fn consistency_errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let clusters = self.cluster_names();
        let eds: BTreeSet<&str> = self
            .clusters
            .iter()
            .filter(|c| {
                c.cluster_discovery_type
                    == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
            })
            .map(|c| c.name.as_str())
            .collect();
        let assignments: BTreeSet<&str> = self
            .endpoints
            .iter()
            .map(|e| e.cluster_name.as_str())
            .collect();
        for c in eds.difference(&assignments) {
            errors.push(format!("EDS cluster {c} has no load assignment"));
        }
        for c in assignments.difference(&eds) {
            errors.push(format!("load assignment for {c}, which is no EDS cluster"));
        }
        for l in &self.listeners {
            for chain in chains(l) {
                for c in tcp_targets(chain)
                    .iter()
                    .filter(|c| !clusters.contains(c.as_str()))
                {
                    errors.push(format!(
                        "listener {}: tcp_proxy to unknown cluster {c}",
                        l.name
                    ));
                }
                match hcm(chain).and_then(|h| h.route_specifier) {
                    Some(RouteSpecifier::Rds(rds))
                        if self.route_config(&rds.route_config_name).is_none() =>
                    {
                        errors.push(format!(
                            "listener {}: route configuration {:?} is not served",
                            l.name, rds.route_config_name
                        ));
                    }
                    Some(RouteSpecifier::RouteConfig(rc)) => {
                        route_cluster_errors(&rc, &clusters, &mut errors)
                    }
                    _ => {}
                }
            }
        }
        for rc in &self.routes {
            route_cluster_errors(rc, &clusters, &mut errors);
        }
        errors
    }

    /// The route configuration the HTTP connection manager of the listener on `port` uses
    /// (its name and the configuration), skipping the virtual listeners.
    fn route_config_for_port(&self, port: u16) -> Result<(&str, RouteConfiguration), String> {
        for l in &self.listeners {
            if l.name == "virtualOutbound" || l.name == "virtualInbound" {
                continue;
            }
            let on_port = l
                .address
                .as_ref()
                .and_then(socket_address)
                .is_some_and(|a| a.rsplit(':').next() == Some(port.to_string().as_str()));
            if !on_port {
                continue;
            }
            for chain in chains(l) {
                match hcm(chain).and_then(|h| h.route_specifier) {
                    Some(RouteSpecifier::Rds(rds)) => {
                        let rc = self.route_config(&rds.route_config_name).ok_or_else(|| {
                            format!("route configuration {} not served", rds.route_config_name)
                        })?;
                        return Ok((l.name.as_str(), rc.clone()));
                    }
                    Some(RouteSpecifier::RouteConfig(rc)) => return Ok((l.name.as_str(), rc)),
                    _ => {}
                }
            }
        }
        Err(format!("no HTTP listener on port {port}"))
    }

    /// Which listener, virtual host, route and cluster answer `req`, matched as Envoy matches
    /// (virtual hosts by domain: exact, then the longest `*.suffix`, then the longest
    /// `prefix.*`, then `*`; routes in order by path and headers). `Err` says why nothing does
    /// (Envoy's 404).
    pub fn simulate(&self, req: &Request<'_>) -> Result<Answer, String> {
        let (listener, rc) = self.route_config_for_port(req.port)?;
        let vh = select_virtual_host(&rc.virtual_hosts, req.host, rc.ignore_port_in_host_matching)
            .ok_or_else(|| format!("no virtual host of {} matches {:?}", rc.name, req.host))?;
        // A plain-text request to a virtual host that requires TLS is redirected to HTTPS
        // before any route is looked at (Gateway `httpsRedirect`).
        if vh.require_tls != 0 {
            return Ok(Answer {
                listener: listener.to_string(),
                route_config: rc.name.clone(),
                virtual_host: vh.name.clone(),
                route: String::new(),
                target: Target::Redirect,
            });
        }
        let route = vh
            .routes
            .iter()
            .find(|r| r.r#match.as_ref().is_some_and(|m| route_matches(m, req)))
            .ok_or_else(|| format!("no route of {} matches {}", vh.name, req.path))?;
        let target = match &route.action {
            Some(Action::Route(a)) => match &a.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) => Target::Cluster(c.clone()),
                Some(ClusterSpecifier::WeightedClusters(w)) => Target::Weighted(
                    w.clusters
                        .iter()
                        .map(|c| (c.name.clone(), c.weight.as_ref().map_or(0, |w| w.value)))
                        .collect(),
                ),
                _ => Target::Other,
            },
            Some(Action::Redirect(_)) => Target::Redirect,
            Some(Action::DirectResponse(d)) => Target::DirectResponse(d.status),
            _ => Target::Other,
        };
        Ok(Answer {
            listener: listener.to_string(),
            route_config: rc.name.clone(),
            virtual_host: vh.name.clone(),
            route: route.name.clone(),
            target,
        })
    }
}

/// Names of a chain's network filters, then of its HTTP connection manager's HTTP filters.
pub fn filter_names(chain: &FilterChain) -> Vec<String> {
    let mut out: Vec<String> = chain.filters.iter().map(|f| f.name.clone()).collect();
    if let Some(h) = hcm(chain) {
        out.extend(h.http_filters.into_iter().map(|f| f.name));
    }
    out
}

/// The filter chains of a listener, the default one last.
pub fn chains(l: &Listener) -> impl Iterator<Item = &FilterChain> {
    l.filter_chains.iter().chain(l.default_filter_chain.iter())
}

/// The clusters a chain's tcp_proxy filters send to.
pub fn tcp_targets(chain: &FilterChain) -> Vec<String> {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier as Tcp;
    let mut out = Vec::new();
    for f in &chain.filters {
        let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
            continue;
        };
        if !any.type_url.ends_with("TcpProxy") {
            continue;
        }
        match TcpProxy::decode(any.value.as_slice()).map(|t| t.cluster_specifier) {
            Ok(Some(Tcp::Cluster(c))) => out.push(c),
            Ok(Some(Tcp::WeightedClusters(w))) => {
                out.extend(w.clusters.into_iter().map(|c| c.name))
            }
            _ => {}
        }
    }
    out
}

/// The HTTP connection manager of a chain, if it has one.
pub fn hcm(chain: &FilterChain) -> Option<HttpConnectionManager> {
    chain.filters.iter().find_map(|f| match &f.config_type {
        Some(ConfigType::TypedConfig(any)) if any.type_url.ends_with("HttpConnectionManager") => {
            HttpConnectionManager::decode(any.value.as_slice()).ok()
        }
        _ => None,
    })
}

fn socket_address(a: &envoy_types::pb::envoy::config::core::v3::Address) -> Option<String> {
    match &a.address {
        Some(AddressKind::SocketAddress(s)) => match s.port_specifier {
            Some(PortSpecifier::PortValue(p)) => Some(format!("{}:{p}", s.address)),
            _ => Some(s.address.clone()),
        },
        _ => None,
    }
}

fn route_cluster_errors(
    rc: &RouteConfiguration,
    clusters: &BTreeSet<&str>,
    errors: &mut Vec<String>,
) {
    for vh in &rc.virtual_hosts {
        for r in &vh.routes {
            let targets: Vec<&str> = match &r.action {
                Some(Action::Route(a)) => match &a.cluster_specifier {
                    Some(ClusterSpecifier::Cluster(c)) => vec![c.as_str()],
                    Some(ClusterSpecifier::WeightedClusters(w)) => {
                        w.clusters.iter().map(|c| c.name.as_str()).collect()
                    }
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            for c in targets.into_iter().filter(|c| !clusters.contains(c)) {
                errors.push(format!(
                    "route configuration {}, virtual host {}: route to unknown cluster {c}",
                    rc.name, vh.name
                ));
            }
        }
    }
}

/// Envoy's virtual host selection by `:authority` (without its port when the route
/// configuration ignores the port in host matching).
fn select_virtual_host<'a>(
    hosts: &'a [VirtualHost],
    host: &str,
    ignore_port: bool,
) -> Option<&'a VirtualHost> {
    let mut host = host.to_ascii_lowercase();
    if ignore_port
        && let Some((name, port)) = host.rsplit_once(':')
        && port.parse::<u16>().is_ok()
    {
        host = name.to_string();
    }
    let exact = hosts
        .iter()
        .find(|vh| vh.domains.iter().any(|d| d.eq_ignore_ascii_case(&host)));
    if exact.is_some() {
        return exact;
    }
    let best = |f: &dyn Fn(&str) -> Option<usize>| {
        hosts
            .iter()
            .filter_map(|vh| {
                vh.domains
                    .iter()
                    .filter_map(|d| f(d))
                    .max()
                    .map(|n| (n, vh))
            })
            .max_by_key(|(n, _)| *n)
            .map(|(_, vh)| vh)
    };
    // `*.suffix` (at least one character before the suffix), longest first.
    let suffix = best(&|d: &str| {
        let s = d.strip_prefix('*').filter(|s| !s.is_empty())?;
        (host.len() > s.len() && host.ends_with(&s.to_ascii_lowercase())).then_some(s.len())
    });
    if suffix.is_some() {
        return suffix;
    }
    let prefix = best(&|d: &str| {
        let p = d.strip_suffix('*').filter(|p| !p.is_empty())?;
        (host.len() > p.len() && host.starts_with(&p.to_ascii_lowercase())).then_some(p.len())
    });
    if prefix.is_some() {
        return prefix;
    }
    hosts.iter().find(|vh| vh.domains.iter().any(|d| d == "*"))
}

fn route_matches(m: &RouteMatch, req: &Request<'_>) -> bool {
    let path = req.path.split('?').next().unwrap_or_default();
    let path_ok = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => path.starts_with(p.as_str()),
        Some(PathSpecifier::Path(p)) => path == p,
        Some(PathSpecifier::SafeRegex(r)) => full_match(&r.regex, path),
        Some(PathSpecifier::PathSeparatedPrefix(p)) => {
            path == p
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        }
        _ => false,
    };
    path_ok && m.headers.iter().all(|h| header_matches(h, req))
}

fn header_matches(h: &HeaderMatcher, req: &Request<'_>) -> bool {
    let value = if h.name.eq_ignore_ascii_case(":authority") {
        Some(req.host)
    } else if h.name.eq_ignore_ascii_case(":path") {
        Some(req.path)
    } else {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&h.name))
            .map(|(_, v)| *v)
    };
    let matched = match (&h.header_match_specifier, value) {
        (Some(HeaderMatchSpecifier::PresentMatch(present)), v) => v.is_some() == *present,
        (Some(HeaderMatchSpecifier::StringMatch(sm)), Some(v)) => string_matches(sm, v),
        (None, v) => v.is_some(),
        _ => false,
    };
    matched != h.invert_match
}

fn string_matches(sm: &StringMatcher, v: &str) -> bool {
    let norm = |s: &str| {
        if sm.ignore_case {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    let v = norm(v);
    match &sm.match_pattern {
        Some(MatchPattern::Exact(e)) => v == norm(e),
        Some(MatchPattern::Prefix(p)) => v.starts_with(&norm(p)),
        Some(MatchPattern::Suffix(s)) => v.ends_with(&norm(s)),
        Some(MatchPattern::Contains(c)) => v.contains(&norm(c)),
        Some(MatchPattern::SafeRegex(r)) => full_match(&r.regex, &v),
        _ => false,
    }
}

/// RE2's full match, approximated by the `regex` crate (the syntax Istio allows is common to
/// both).
fn full_match(re: &str, s: &str) -> bool {
    regex::Regex::new(&format!("^(?:{re})$")).is_ok_and(|r| r.is_match(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service with no VirtualService: only its default route.
    const PLAIN: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: plain, namespace: shop}\nspec: {ports: [{name: http, port: 80}]}\n";

    #[test]
    fn a_consistent_mesh_has_no_errors_and_simulates_its_default_route() {
        let push = push_from_yaml(&format!("{SHOP}---\n{PLAIN}"), None);
        let g = Generated::for_proxy(&shop_sidecar(), &push);
        assert_eq!(g.consistency_errors(), Vec::<String>::new());
        let answer = g.simulate(&get(80, "plain", "/")).unwrap();
        assert_eq!(answer.listener, "0.0.0.0_80");
        assert_eq!(answer.route_config, "80");
        assert_eq!(answer.route, "default");
        assert_eq!(
            answer.target,
            Target::Cluster("outbound|80||plain.shop.svc.cluster.local".into())
        );
        // ALLOW_ANY: a host the mesh does not know passes through.
        let unknown = g.simulate(&get(80, "nowhere.example", "/")).unwrap();
        assert_eq!(
            unknown.target,
            Target::Cluster(crate::translate::PASSTHROUGH_CLUSTER.into())
        );
    }

    #[test]
    fn the_consistency_check_names_what_is_missing() {
        let mut g = shop_config(&shop_sidecar());
        g.endpoints.clear();
        g.routes.retain(|r| r.name != "80");
        g.clusters.retain(|c| !c.name.contains("|db."));
        let errors = g.consistency_errors();
        for expected in [
            "EDS cluster outbound|80||web.shop.svc.cluster.local has no load assignment",
            "listener 0.0.0.0_80: route configuration \"80\" is not served",
            "listener 0.0.0.0_5432: tcp_proxy to unknown cluster outbound|5432||db.shop.svc.cluster.local",
        ] {
            assert!(
                errors.iter().any(|e| e == expected),
                "{expected} in {errors:#?}"
            );
        }
    }

    #[test]
    fn virtual_hosts_are_chosen_as_envoy_chooses_them() {
        let vh = |name: &str, domains: &[&str]| VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        };
        let hosts = [
            vh("any", &["*"]),
            vh("suffix-short", &["*.com"]),
            vh("suffix-long", &["*.example.com"]),
            vh("prefix", &["api.*"]),
            vh("exact", &["www.example.com"]),
        ];
        let pick = |h: &str| select_virtual_host(&hosts, h, false).map(|v| v.name.as_str());
        assert_eq!(pick("www.example.com"), Some("exact"));
        assert_eq!(pick("WWW.example.com"), Some("exact"));
        assert_eq!(pick("a.example.com"), Some("suffix-long"));
        assert_eq!(pick("a.other.com"), Some("suffix-short"));
        assert_eq!(pick("api.internal"), Some("prefix"));
        assert_eq!(pick("localhost"), Some("any"));
    }
}
