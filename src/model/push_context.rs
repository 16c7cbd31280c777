//! The immutable snapshot a push is computed from (Istio's `PushContext`), and the
//! `ConfigStore` that sources fill to build it.
//!
//! Owns indexing and the visibility/precedence rules that say which VirtualService and
//! DestinationRule a proxy sees for a host. Never changes after construction; a new push builds
//! a new one. No I/O, no Envoy types.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::config::{Config, ConfigError, istio_order};
use crate::model::host::Hostname;
use crate::model::istio::sidecar::OutboundTrafficPolicyMode;
use crate::model::istio::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use crate::model::mesh::{MeshConfig, OutboundTrafficMode};
use crate::model::proxy::{NodeType, Proxy};
use crate::model::registry::{
    DEFAULT_DOMAIN_SUFFIX, Protocol, Service, ServicePort, ServiceRegistry, labels_match,
};

/// One port of a service that a proxy's own workload serves (istiod's `ServiceTarget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceTarget<'a> {
    pub service: &'a Service,
    pub port: &'a ServicePort,
    /// The port on the workload (the resolved `targetPort`).
    pub target_port: u16,
}

/// Everything the sources know, in source-neutral form. Sources replace or edit it; the push
/// loop freezes a copy into a [`PushContext`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConfigStore {
    pub mesh: MeshConfig,
    pub registry: ServiceRegistry,
    /// Namespace labels by namespace name.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Pod labels by `name.namespace`, for proxies whose metadata carries no LABELS.
    pub pod_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Pods' named container ports by `name.namespace`, for proxies whose metadata carries no
    /// POD_PORTS.
    pub pod_ports: BTreeMap<String, BTreeMap<String, u16>>,
    pub virtual_services: Vec<Arc<Config<VirtualService>>>,
    pub destination_rules: Vec<Arc<Config<DestinationRule>>>,
    pub gateways: Vec<Arc<Config<Gateway>>>,
    pub service_entries: Vec<Arc<Config<ServiceEntry>>>,
    pub sidecars: Vec<Arc<Config<Sidecar>>>,
    pub workload_entries: Vec<Arc<Config<WorkloadEntry>>>,
    /// TLS credentials from Secrets, by `namespace/name` (gateway `credentialName`s).
    pub secrets: BTreeMap<String, crate::model::credential::TlsCredential>,
    /// EnvoyFilters are kept verbatim until they are translated.
    pub envoy_filters: Vec<Arc<Config<serde_json::Value>>>,
    /// Documents that failed to parse or validate (reported, never served).
    pub errors: Vec<ConfigError>,
}

impl ConfigStore {
    /// `changes`' routing configs (VirtualServices, DestinationRules, Gateways, Sidecars,
    /// EnvoyFilters) laid over this store's: one with the same kind, namespace and name
    /// replaces this store's, the others are added; `changes`' errors are added. The registry
    /// (Services, ServiceEntries, WorkloadEntries, endpoints) stays this store's.
    pub fn overlay(&mut self, changes: ConfigStore) {
        fn lay<T>(mine: &mut Vec<Arc<Config<T>>>, theirs: Vec<Arc<Config<T>>>) {
            for c in theirs {
                mine.retain(|m| {
                    !(m.meta.namespace == c.meta.namespace && m.meta.name == c.meta.name)
                });
                mine.push(c);
            }
        }
        lay(&mut self.virtual_services, changes.virtual_services);
        lay(&mut self.destination_rules, changes.destination_rules);
        lay(&mut self.gateways, changes.gateways);
        lay(&mut self.sidecars, changes.sidecars);
        lay(&mut self.envoy_filters, changes.envoy_filters);
        self.errors.extend(changes.errors);
    }

    /// Puts every list in Istio's precedence order so that output is deterministic.
    pub fn normalize(&mut self) {
        self.virtual_services.sort_by(istio_order);
        self.destination_rules.sort_by(istio_order);
        crate::model::references::reject_dangling_subsets(self);
        self.gateways.sort_by(istio_order);
        self.service_entries.sort_by(istio_order);
        self.sidecars.sort_by(istio_order);
        self.workload_entries.sort_by(istio_order);
        self.envoy_filters.sort_by(istio_order);
        self.errors.sort();
        self.normalize_endpoints();
    }

    /// Endpoints sorted and without duplicates, so equal endpoints give equal versions.
    pub fn normalize_endpoints(&mut self) {
        for eps in self.registry.endpoints.values_mut() {
            eps.sort();
            eps.dedup();
        }
    }
}

/// Feeds what serde writes straight into a hash (no buffer of the whole serialization).
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Feeds `value`'s JSON into `h`.
fn digest_of<T: Serialize + ?Sized>(h: &mut Sha256, value: &T) {
    serde_json::to_writer(HashWriter(h), value).expect("serializes");
}

/// The frozen snapshot for one push.
#[derive(Debug)]
pub struct PushContext {
    /// Content hash of the store: equal stores give equal versions on every replica.
    pub version: String,
    /// Content hash of everything but endpoints (and pod labels, which only name connecting
    /// proxies): equal between two snapshots when only endpoints changed, so the push can be
    /// EDS-only (istiod's incremental push).
    pub config_version: String,
    pub store: ConfigStore,
    /// Lookup indices over `store` (resolved hosts), so per-service lookups stay cheap at
    /// thousands of services.
    /// (Shared with the snapshots of later endpoint-only changes, which keep the config.)
    index: Arc<HostIndex>,
    /// Label keys some VirtualService's `sourceLabels` matches on: the only proxy labels
    /// route and listener output can depend on.
    source_label_keys: Arc<BTreeSet<String>>,
}

/// Resolved hosts of DestinationRules and VirtualServices: exact hosts in a map, wildcard ones
/// in a list (both hold positions in the store's lists, in precedence order).
#[derive(Debug, Default)]
struct HostIndex {
    dr_exact: std::collections::HashMap<String, Vec<usize>>,
    dr_wildcard: Vec<(String, usize)>,
    vs_exact: std::collections::HashMap<String, Vec<usize>>,
    vs_wildcard: Vec<(String, usize)>,
    /// Hostnames of the services with a pod selector, by namespace (the candidates for a
    /// proxy's service targets).
    selecting: std::collections::HashMap<String, Vec<String>>,
}

impl HostIndex {
    fn build(store: &ConfigStore) -> HostIndex {
        let mut index = HostIndex::default();
        for s in store.registry.services.values() {
            if s.selector.as_ref().is_some_and(|sel| !sel.is_empty()) {
                index
                    .selecting
                    .entry(s.namespace.clone())
                    .or_default()
                    .push(s.hostname.clone());
            }
        }
        for (i, dr) in store.destination_rules.iter().enumerate() {
            let host = resolve_short_name(&dr.spec.host, &dr.meta.namespace);
            if host.starts_with('*') {
                index.dr_wildcard.push((host, i));
            } else {
                index.dr_exact.entry(host).or_default().push(i);
            }
        }
        for (i, vs) in store.virtual_services.iter().enumerate() {
            let mut seen = BTreeSet::new();
            for h in &vs.spec.hosts {
                let host = resolve_short_name(h, &vs.meta.namespace);
                if !seen.insert(host.clone()) {
                    continue;
                }
                if host.starts_with('*') {
                    index.vs_wildcard.push((host, i));
                } else {
                    index.vs_exact.entry(host).or_default().push(i);
                }
            }
        }
        index
    }

    /// Positions (sorted, deduplicated) of the configs whose host matches `hostname`.
    fn matching(
        exact: &std::collections::HashMap<String, Vec<usize>>,
        wildcard: &[(String, usize)],
        hostname: &str,
    ) -> Vec<usize> {
        let mut out: Vec<usize> = exact.get(hostname).cloned().unwrap_or_default();
        out.extend(
            wildcard
                .iter()
                .filter(|(h, _)| Hostname::new(hostname).subset_of(h.as_str()))
                .map(|(_, i)| *i),
        );
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl PushContext {
    pub fn new(mut store: ConfigStore) -> Self {
        store.normalize();
        let endpoints = std::mem::take(&mut store.registry.endpoints);
        let pod_labels = std::mem::take(&mut store.pod_labels);
        let pod_ports = std::mem::take(&mut store.pod_ports);
        let mut h = Sha256::new();
        digest_of(&mut h, &store);
        let config_version = hex::encode(&h.finalize()[..8]);
        store.registry.endpoints = endpoints;
        store.pod_labels = pod_labels;
        store.pod_ports = pod_ports;
        let version = Self::full_version(&config_version, &store);
        let index = Arc::new(HostIndex::build(&store));
        let source_label_keys = store
            .virtual_services
            .iter()
            .flat_map(|vs| vs.spec.source_label_keys())
            .cloned()
            .collect::<BTreeSet<_>>()
            .into();
        PushContext {
            version,
            config_version,
            store,
            index,
            source_label_keys,
        }
    }

    /// A snapshot of an endpoint-only change: `store` holds `previous`'s config (the same
    /// shared objects) with endpoints and pod labels computed again. The config version,
    /// index and label keys are `previous`'s; only the endpoints are hashed.
    pub fn with_endpoints(previous: &PushContext, mut store: ConfigStore) -> Self {
        store.normalize_endpoints();
        let version = Self::full_version(&previous.config_version, &store);
        PushContext {
            version,
            config_version: previous.config_version.clone(),
            store,
            index: previous.index.clone(),
            source_label_keys: previous.source_label_keys.clone(),
        }
    }

    /// The full version: the config version, the endpoints and the pod labels.
    fn full_version(config_version: &str, store: &ConfigStore) -> String {
        let mut h = Sha256::new();
        h.update(config_version.as_bytes());
        digest_of(&mut h, &store.registry.endpoints);
        digest_of(&mut h, &store.pod_labels);
        digest_of(&mut h, &store.pod_ports);
        hex::encode(&h.finalize()[..8])
    }

    /// Label keys that some VirtualService's `sourceLabels` matches on.
    pub fn source_label_keys(&self) -> &BTreeSet<String> {
        &self.source_label_keys
    }

    pub fn mesh(&self) -> &MeshConfig {
        &self.store.mesh
    }

    pub fn registry(&self) -> &ServiceRegistry {
        &self.store.registry
    }

    /// The `Sidecar` that applies to a sidecar `proxy`, as istiod picks it: in the proxy's
    /// namespace, the first (oldest, then by name) whose `workloadSelector` the proxy's labels
    /// satisfy, else the namespace's selector-less one, else the root namespace's selector-less
    /// one. Routers never get one.
    pub fn sidecar_for(&self, proxy: &Proxy) -> Option<&Config<Sidecar>> {
        if proxy.node_type != NodeType::Sidecar {
            return None;
        }
        let in_ns = |ns: &str| {
            let ns = ns.to_string();
            self.store
                .sidecars
                .iter()
                .map(|s| &**s)
                .filter(move |s| s.meta.namespace == ns)
        };
        let selected = in_ns(&proxy.namespace).find(|s| {
            s.spec.workload_selector.as_ref().is_some_and(|sel| {
                sel.labels
                    .iter()
                    .all(|(k, v)| proxy.labels.get(k) == Some(v))
            })
        });
        selected
            .or_else(|| in_ns(&proxy.namespace).find(|s| s.spec.workload_selector.is_none()))
            .or_else(|| {
                in_ns(&self.store.mesh.root_namespace).find(|s| s.spec.workload_selector.is_none())
            })
    }

    /// `namespace/name` of the Sidecar that scopes `proxy` (`-` for none): what translate's
    /// scope keys carry so that proxies sharing it share encodings.
    pub fn sidecar_key(&self, proxy: &Proxy) -> String {
        self.sidecar_for(proxy)
            .map_or_else(|| "-".to_string(), |s| s.meta.key())
    }

    /// The egress `hosts` of the proxy's Sidecar as (namespace, host) pairs, with `.`
    /// resolved to the proxy's namespace; `None` means no restriction (no Sidecar, or one
    /// without egress listeners: istiod's implicit `*/*`).
    pub fn egress_hosts(&self, proxy: &Proxy) -> Option<Vec<(String, String)>> {
        let sidecar = self.sidecar_for(proxy)?;
        if sidecar.spec.egress.is_empty() {
            return None;
        }
        let hosts = sidecar
            .spec
            .egress
            .iter()
            .flat_map(|l| &l.hosts)
            .filter_map(|h| h.split_once('/'))
            .map(|(ns, host)| {
                let ns = if ns == "." {
                    proxy.namespace.as_str()
                } else {
                    ns
                };
                (ns.to_string(), host.to_string())
            })
            .collect();
        Some(hosts)
    }

    /// The outbound traffic mode for `proxy`: its Sidecar's `outboundTrafficPolicy` when set,
    /// else the mesh's.
    pub fn outbound_traffic_mode(&self, proxy: &Proxy) -> OutboundTrafficMode {
        match self
            .sidecar_for(proxy)
            .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
        {
            Some(p) => match p.mode {
                OutboundTrafficPolicyMode::AllowAny => OutboundTrafficMode::AllowAny,
                OutboundTrafficPolicyMode::RegistryOnly => OutboundTrafficMode::RegistryOnly,
            },
            None => self.store.mesh.outbound_traffic_policy.mode,
        }
    }

    /// Services `proxy` sees, in hostname order: those exported to its namespace and, under a
    /// Sidecar with egress hosts, imported by one of them (`ns/host`, `*/host`, `./host`;
    /// `~/*` imports nothing) or named as a destination by a VirtualService the Sidecar imports,
    /// as istiod's `SidecarScope` collects them.
    pub fn services_visible_to<'a>(&'a self, proxy: &Proxy) -> Vec<&'a Service> {
        let exported = self
            .store
            .registry
            .services
            .values()
            .filter(|s| is_exported_to(&s.export_to, &s.namespace, &proxy.namespace));
        let Some(hosts) = self.egress_hosts(proxy) else {
            return exported.collect();
        };
        let mut destinations = BTreeSet::new();
        for vs in self.sidecar_virtual_services(proxy) {
            for d in vs_destination_hosts(&vs.spec) {
                destinations.insert(resolve_short_name(d, &vs.meta.namespace));
            }
        }
        exported
            .filter(|s| {
                destinations.contains(&s.hostname)
                    || hosts.iter().any(|(ns, host)| {
                        (ns == "*" || *ns == s.namespace)
                            && Hostname::new(&s.hostname).subset_of(host.as_str())
                    })
            })
            .collect()
    }

    /// The service ports `proxy`'s own workload serves (istiod's `ServiceTargets`): every port
    /// (UDP aside) of each service in the proxy's namespace whose selector its labels satisfy, in
    /// hostname order, with the port on the workload it targets. A named `targetPort` resolves
    /// through the workload's container ports (known when its proxy connects), else through
    /// the service's endpoint at one of the proxy's addresses; unresolved, the port is left out. Routers serve no inbound traffic: none.
    pub fn service_targets<'a>(&'a self, proxy: &Proxy) -> Vec<ServiceTarget<'a>> {
        if proxy.node_type != NodeType::Sidecar {
            return Vec::new();
        }
        let mut out = Vec::new();
        let candidates = self.index.selecting.get(&proxy.namespace);
        for service in candidates
            .into_iter()
            .flatten()
            .filter_map(|h| self.store.registry.services.get(h))
        {
            let selects = service
                .selector
                .as_ref()
                .is_some_and(|s| labels_match(s, &proxy.labels));
            if !selects {
                continue;
            }
            for port in service.ports.iter().filter(|p| p.protocol != Protocol::Udp) {
                // A named port the container ports do not resolve: the workload's endpoint.
                let target_port = port.target_on(&proxy.container_ports).or_else(|| {
                    self.store
                        .registry
                        .endpoints_for(&service.hostname, &port.name)
                        .find(|e| proxy.ip_addresses.contains(&e.address))
                        .map(|e| e.port)
                });
                if let Some(target_port) = target_port {
                    out.push(ServiceTarget {
                        service,
                        port,
                        target_port,
                    });
                }
            }
        }
        out
    }

    /// VirtualServices bound to the mesh (sidecars) and visible to `proxy`: exported to its
    /// namespace and, under a Sidecar with egress hosts, imported by one of them. In Istio's
    /// precedence order.
    pub fn sidecar_virtual_services<'a>(
        &'a self,
        proxy: &Proxy,
    ) -> impl Iterator<Item = &'a Config<VirtualService>> + 'a {
        let hosts = self.egress_hosts(proxy);
        let proxy = proxy.clone();
        self.store
            .virtual_services
            .iter()
            .filter(move |vs| self.vs_visible(&proxy, vs, hosts.as_deref()))
            .map(|vs| &**vs)
    }

    /// Whether a VirtualService applies to sidecar `proxy`: bound to the mesh, exported to its
    /// namespace and, under a Sidecar with egress `hosts`, imported by one of them.
    fn vs_visible(
        &self,
        proxy: &Proxy,
        vs: &Config<VirtualService>,
        hosts: Option<&[(String, String)]>,
    ) -> bool {
        let gateways = &vs.spec.gateways;
        let applies_to_mesh = gateways.is_empty() || gateways.iter().any(|g| g == "mesh");
        applies_to_mesh
            && is_exported_to(&vs.spec.export_to, &vs.meta.namespace, &proxy.namespace)
            && hosts.is_none_or(|hosts| {
                hosts.iter().any(|(ns, host)| {
                    (ns == "*" || *ns == vs.meta.namespace)
                        && vs.spec.hosts.iter().any(|h| {
                            let h = resolve_short_name(h, &vs.meta.namespace);
                            Hostname::new(host).matches(h.as_str())
                        })
                })
            })
    }

    /// The first sidecar VirtualService (in precedence order) with a host that matches the
    /// service `hostname`, as istiod picks one per host for sidecars.
    pub fn virtual_service_for_host<'a>(
        &'a self,
        proxy: &Proxy,
        hostname: &str,
    ) -> Option<&'a Config<VirtualService>> {
        self.virtual_services_for_host(proxy, hostname)
            .into_iter()
            .next()
    }

    /// Every sidecar VirtualService with a host matching `hostname` that `proxy` sees, in
    /// Istio's precedence order: the proxy's own namespace first, then the rest.
    pub fn virtual_services_for_host<'a>(
        &'a self,
        proxy: &Proxy,
        hostname: &str,
    ) -> Vec<&'a Config<VirtualService>> {
        let hosts = self.egress_hosts(proxy);
        let mut candidates: Vec<&Config<VirtualService>> =
            HostIndex::matching(&self.index.vs_exact, &self.index.vs_wildcard, hostname)
                .into_iter()
                .map(|i| &*self.store.virtual_services[i])
                .filter(|vs| self.vs_visible(proxy, vs, hosts.as_deref()))
                .collect();
        candidates.sort_by_key(|vs| vs.meta.namespace != proxy.namespace);
        candidates
    }

    /// The DestinationRule that applies to `hostname` for a proxy in `proxy_namespace`:
    /// the proxy's namespace first, then the service's namespace, then the root namespace.
    pub fn destination_rule_for(
        &self,
        proxy_namespace: &str,
        hostname: &str,
    ) -> Option<&Config<DestinationRule>> {
        let service_ns = self
            .store
            .registry
            .service(hostname)
            .map(|s| s.namespace.as_str());
        let root = self.store.mesh.root_namespace.as_str();
        let order = [Some(proxy_namespace), service_ns, Some(root)];
        let candidates =
            HostIndex::matching(&self.index.dr_exact, &self.index.dr_wildcard, hostname);
        for ns in order.into_iter().flatten() {
            let found = candidates
                .iter()
                .map(|i| &self.store.destination_rules[*i])
                .find(|dr| {
                    dr.meta.namespace == ns
                        && is_exported_to(&dr.spec.export_to, &dr.meta.namespace, proxy_namespace)
                });
            if found.is_some() {
                return found.map(|v| &**v);
            }
        }
        None
    }
}

/// Hosts a VirtualService routes or mirrors to (HTTP, TLS and TCP routes).
pub fn vs_destination_hosts(vs: &VirtualService) -> Vec<&str> {
    let mut out = Vec::new();
    for r in &vs.http {
        out.extend(r.route.iter().filter_map(|d| d.destination.as_ref()));
        out.extend(r.mirror.as_ref());
        out.extend(r.mirrors.iter().filter_map(|m| m.destination.as_ref()));
    }
    for r in &vs.tls {
        out.extend(r.route.iter().filter_map(|d| d.destination.as_ref()));
    }
    for r in &vs.tcp {
        out.extend(r.route.iter().filter_map(|d| d.destination.as_ref()));
    }
    out.into_iter().map(|d| d.host.as_str()).collect()
}

/// `exportTo` semantics: empty or `*` = everywhere, `.` = own namespace, else listed namespaces.
pub fn is_exported_to(export_to: &[String], config_namespace: &str, to_namespace: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|e| {
            e == "*" || (e == "." && config_namespace == to_namespace) || e == to_namespace
        })
}

/// Istio resolves a short host (`reviews`) in the namespace of the object that names it.
pub fn resolve_short_name(host: &str, namespace: &str) -> String {
    if host.contains('.') || host == "*" || host.starts_with('*') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{DEFAULT_DOMAIN_SUFFIX}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_rules() {
        assert!(is_exported_to(&[], "a", "b"));
        assert!(is_exported_to(&["*".into()], "a", "b"));
        assert!(is_exported_to(&[".".into()], "a", "a"));
        assert!(!is_exported_to(&[".".into()], "a", "b"));
        assert!(is_exported_to(&["b".into()], "a", "b"));
    }

    #[test]
    fn host_resolution() {
        assert_eq!(
            resolve_short_name("httpbin", "testns1"),
            "httpbin.testns1.svc.cluster.local"
        );
        assert_eq!(resolve_short_name("a.b.c", "x"), "a.b.c");
    }

    fn sidecar(ns: &str, name: &str, yaml: &str) -> Config<Sidecar> {
        Config {
            meta: crate::model::config::ConfigMeta {
                kind: crate::model::config::ConfigKind::Sidecar,
                api_version: "networking.istio.io/v1".into(),
                name: name.into(),
                namespace: ns.into(),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                creation_timestamp: None,
                resource_version: None,
                source: "test".into(),
            },
            spec: serde_saphyr::from_str(yaml).unwrap(),
        }
    }

    fn proxy(ns: &str, app: &str) -> Proxy {
        let meta = serde_json::json!({"LABELS": {"app": app}});
        Proxy::from_node(
            &format!("sidecar~10.0.0.1~p.{ns}~{ns}.svc.cluster.local"),
            meta.as_object().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn sidecar_selection_and_egress_hosts() {
        let store = ConfigStore {
            sidecars: vec![
                sidecar("istio-system", "default", "egress: [{hosts: [\"./*\"]}]").into(),
                sidecar("a", "default", "egress: [{hosts: [\"*/*\"]}]").into(),
                sidecar(
                    "a",
                    "web",
                    "workloadSelector: {labels: {app: web}}\negress: [{hosts: [\"./*\", \"b/x.b.svc.cluster.local\"]}]\noutboundTrafficPolicy: {mode: ALLOW_ANY}",
                )
                .into(),
            ],
            ..Default::default()
        };
        let mut store = store;
        store.mesh.outbound_traffic_policy.mode = OutboundTrafficMode::RegistryOnly;
        let push = PushContext::new(store);
        assert_eq!(push.sidecar_key(&proxy("a", "web")), "a/web");
        assert_eq!(push.sidecar_key(&proxy("a", "other")), "a/default");
        assert_eq!(push.sidecar_key(&proxy("c", "web")), "istio-system/default");
        assert_eq!(
            push.egress_hosts(&proxy("a", "web")).unwrap(),
            [
                ("a".to_string(), "*".to_string()),
                ("b".to_string(), "x.b.svc.cluster.local".to_string())
            ]
        );
        // `.` in the root-namespace default means the proxy's own namespace.
        assert_eq!(
            push.egress_hosts(&proxy("c", "x")).unwrap(),
            [("c".to_string(), "*".to_string())]
        );
        assert_eq!(
            push.outbound_traffic_mode(&proxy("a", "web")),
            OutboundTrafficMode::AllowAny
        );
        assert_eq!(
            push.outbound_traffic_mode(&proxy("a", "other")),
            OutboundTrafficMode::RegistryOnly
        );
    }
}
