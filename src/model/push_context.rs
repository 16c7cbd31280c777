//! The immutable snapshot a push is computed from (Istio's `PushContext`), and the
//! `ConfigStore` that sources fill to build it.
//!
//! Owns indexing and the visibility/precedence rules that say which VirtualService and
//! DestinationRule a proxy sees for a host. Never changes after construction; a new push builds
//! a new one. No I/O, no Envoy types.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::config::{Config, ConfigError, istio_order};
use crate::model::istio::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use crate::model::mesh::MeshConfig;
use crate::model::registry::{DEFAULT_DOMAIN_SUFFIX, Service, ServiceRegistry};

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
    pub virtual_services: Vec<Config<VirtualService>>,
    pub destination_rules: Vec<Config<DestinationRule>>,
    pub gateways: Vec<Config<Gateway>>,
    pub service_entries: Vec<Config<ServiceEntry>>,
    pub sidecars: Vec<Config<Sidecar>>,
    pub workload_entries: Vec<Config<WorkloadEntry>>,
    /// EnvoyFilters are kept verbatim until they are translated.
    pub envoy_filters: Vec<Config<serde_json::Value>>,
    /// Documents that failed to parse or validate (reported, never served).
    pub errors: Vec<ConfigError>,
}

impl ConfigStore {
    /// Puts every list in Istio's precedence order so that output is deterministic.
    pub fn normalize(&mut self) {
        self.virtual_services.sort_by(istio_order);
        self.destination_rules.sort_by(istio_order);
        self.gateways.sort_by(istio_order);
        self.service_entries.sort_by(istio_order);
        self.sidecars.sort_by(istio_order);
        self.workload_entries.sort_by(istio_order);
        self.envoy_filters.sort_by(istio_order);
        self.errors.sort();
        for eps in self.registry.endpoints.values_mut() {
            eps.sort();
            eps.dedup();
        }
    }
}

/// The frozen snapshot for one push.
#[derive(Debug)]
pub struct PushContext {
    /// Content hash of the store: equal stores give equal versions on every replica.
    pub version: String,
    pub store: ConfigStore,
}

impl PushContext {
    pub fn new(mut store: ConfigStore) -> Self {
        store.normalize();
        let bytes = serde_json::to_vec(&store).expect("ConfigStore serializes");
        let version = hex::encode(&Sha256::digest(&bytes)[..8]);
        PushContext { version, store }
    }

    pub fn mesh(&self) -> &MeshConfig {
        &self.store.mesh
    }

    pub fn registry(&self) -> &ServiceRegistry {
        &self.store.registry
    }

    /// Services visible from `namespace`, in hostname order.
    pub fn services_visible_to<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Service> + 'a {
        self.store
            .registry
            .services
            .values()
            .filter(move |s| is_exported_to(&s.export_to, &s.namespace, namespace))
    }

    /// VirtualServices bound to the mesh (sidecars) and visible from `namespace`, in Istio's
    /// precedence order.
    pub fn sidecar_virtual_services<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Config<VirtualService>> + 'a {
        self.store.virtual_services.iter().filter(move |vs| {
            let gateways = &vs.spec.gateways;
            let applies_to_mesh = gateways.is_empty() || gateways.iter().any(|g| g == "mesh");
            applies_to_mesh && is_exported_to(&vs.spec.export_to, &vs.meta.namespace, namespace)
        })
    }

    /// The first sidecar VirtualService (in precedence order) with a host that matches the
    /// service `hostname`, as istiod picks one per host for sidecars.
    pub fn virtual_service_for_host<'a>(
        &'a self,
        proxy_namespace: &'a str,
        hostname: &str,
    ) -> Option<&'a Config<VirtualService>> {
        // Istio prefers VirtualServices in the proxy's own namespace, then the rest.
        let mut candidates: Vec<&Config<VirtualService>> = self
            .sidecar_virtual_services(proxy_namespace)
            .filter(|vs| {
                vs.spec
                    .hosts
                    .iter()
                    .any(|h| host_matches(&resolve_short_name(h, &vs.meta.namespace), hostname))
            })
            .collect();
        candidates.sort_by_key(|vs| vs.meta.namespace != proxy_namespace);
        candidates.into_iter().next()
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
        for ns in order.into_iter().flatten() {
            let found = self.store.destination_rules.iter().find(|dr| {
                dr.meta.namespace == ns
                    && is_exported_to(&dr.spec.export_to, &dr.meta.namespace, proxy_namespace)
                    && host_matches(
                        &resolve_short_name(&dr.spec.host, &dr.meta.namespace),
                        hostname,
                    )
            });
            if found.is_some() {
                return found;
            }
        }
        None
    }
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

/// True when `pattern` (possibly `*` or `*.suffix`) matches the concrete `hostname`.
pub fn host_matches(pattern: &str, hostname: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => hostname.ends_with(suffix),
        None => pattern == hostname,
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
        assert!(host_matches(
            "*.testns1.svc.cluster.local",
            "httpbin.testns1.svc.cluster.local"
        ));
        assert!(!host_matches(
            "*.testns2.svc.cluster.local",
            "httpbin.testns1.svc.cluster.local"
        ));
        assert!(host_matches("*", "anything"));
    }
}
