//! Turns Kubernetes-style documents (from files, from a cluster) into the model: Istio kinds
//! into typed, validated configs; the `istio` ConfigMap into MeshConfig; Secrets into gateway
//! credentials; discoverySelectors applied. The registry is built in `registry` (Services,
//! EndpointSlices, Endpoints, Pods) and `service_entry` (ServiceEntries); names and metadata are
//! checked in `names`.
//!
//! Every source funnels through [`ObjectSet`] so files and clusters behave identically. Errors
//! name source, kind, namespace/name and field; a bad document is reported and skipped, never
//! fatal for the rest.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Pod, Secret, Service as KubeService,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::config::{Config, ConfigError, ConfigKind, ConfigMeta, istio_order};
use crate::model::istio::service_entry::ServiceEntryResolution;
use crate::model::istio::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, ValidationError, VirtualService, WorkloadEntry,
};
use crate::model::mesh::MeshConfig;
use crate::model::push_context::ConfigStore;
use crate::model::registry::{
    Endpoint, Protocol, Resolution, Service, ServicePort, ServiceSource, TargetPort, labels_match,
    service_hostname,
};

mod names;
mod registry;
mod service_entry;

use names::{check_names, config_meta, dns1035_label, dns1123_subdomain};
pub use registry::convert_service;
use registry::{check_service, entry_address, namespace_of};

/// The Istio API versions we accept for networking.istio.io kinds.
pub const ISTIO_API_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1alpha3",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1",
];

/// Label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// Where the mesh config lives: the `istio` ConfigMap of the system namespace, or
/// `istio-<revision>` for a revisioned control plane (istiod's naming).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfigMap {
    pub namespace: String,
    pub name: String,
}

impl MeshConfigMap {
    pub fn for_revision(namespace: &str, revision: &str) -> MeshConfigMap {
        MeshConfigMap {
            namespace: namespace.to_string(),
            name: crate::model::config::revision::named("istio", revision),
        }
    }
}

/// The objects read from one source, before they become a `ConfigStore`. Kubernetes objects
/// are shared (`Arc`): the cluster source hands over its watchers' objects without copying
/// them, and merging or keeping a source's latest set costs a reference each.
#[derive(Debug, Default, Clone)]
pub struct ObjectSet {
    pub services: Vec<Arc<KubeService>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub endpoints: Vec<Arc<Endpoints>>,
    pub pods: Vec<Arc<Pod>>,
    pub namespaces: Vec<Arc<Namespace>>,
    pub config_maps: Vec<Arc<ConfigMap>>,
    pub secrets: Vec<Arc<Secret>>,
    pub store: ConfigStore,
    /// Set by a source that knows only endpoints (EndpointSlices, Pods) changed since the set
    /// it sent before: the push can recompute endpoints alone.
    pub endpoints_only: bool,
}

/// Where a document came from, for error messages.
#[derive(Debug, Clone)]
pub struct Origin {
    pub source: String,
    pub document: Option<usize>,
}

impl Origin {
    fn error(&self, doc: &Value, field: Option<String>, message: impl Into<String>) -> ConfigError {
        let meta = doc.get("metadata");
        let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        ConfigError {
            source: self.source.clone(),
            document: self.document,
            kind: s(doc.get("kind")),
            namespace: s(meta.and_then(|m| m.get("namespace"))).or(Some("default".into())),
            name: s(meta.and_then(|m| m.get("name"))),
            field,
            message: message.into(),
            missing: None,
        }
    }
}

/// What is wrong with one document on its own (schema and validation, not references to
/// other objects): what the validation webhook refuses.
pub fn document_errors(origin: &Origin, doc: Value) -> Vec<ConfigError> {
    let mut set = ObjectSet::default();
    set.add_document(origin, doc);
    set.store.errors
}

impl ObjectSet {
    /// Adds one Kubernetes-style document (already parsed into JSON). `kind: List` is expanded.
    pub fn add_document(&mut self, origin: &Origin, doc: Value) {
        if doc.is_null() {
            return;
        }
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let api_version = doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if kind.is_empty() {
            self.store
                .errors
                .push(origin.error(&doc, Some("kind".into()), "document has no kind"));
            return;
        }
        if kind == "List" || kind.ends_with("List") && doc.get("items").is_some() {
            let items = doc
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for item in items {
                self.add_document(origin, item);
            }
            return;
        }
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Service") => self.push_kube_checked(origin, doc, check_service, |s, o| {
                s.services.push(Arc::new(o))
            }),
            ("v1", "Pod") => self.push_kube(origin, doc, |s, o| s.pods.push(Arc::new(o))),
            ("v1", "Namespace") => {
                self.push_kube(origin, doc, |s, o| s.namespaces.push(Arc::new(o)))
            }
            ("v1", "ConfigMap") => {
                self.push_kube(origin, doc, |s, o| s.config_maps.push(Arc::new(o)))
            }
            ("v1", "Endpoints") => {
                self.push_kube(origin, doc, |s, o| s.endpoints.push(Arc::new(o)))
            }
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                self.push_kube(origin, doc, |s, o| s.endpoint_slices.push(Arc::new(o)))
            }
            ("v1", "Secret") => self.push_kube(origin, doc, |s, o| s.secrets.push(Arc::new(o))),
            (av, k) if av.starts_with("networking.istio.io/") => {
                self.add_istio(origin, &api_version, k, doc)
            }
            _ => {
                tracing::debug!(source = %origin.source, kind, api_version, "ignoring kind navarch does not read")
            }
        }
    }

    fn push_kube<T: DeserializeOwned>(
        &mut self,
        origin: &Origin,
        doc: Value,
        add: impl FnOnce(&mut Self, T),
    ) {
        self.push_kube_checked(origin, doc, |_| Vec::new(), add);
    }

    /// A Kubernetes object, rejected (every problem reported with its field) when `check`
    /// finds what the API server would refuse.
    fn push_kube_checked<T: DeserializeOwned>(
        &mut self,
        origin: &Origin,
        doc: Value,
        check: fn(&T) -> Vec<(String, String)>,
        add: impl FnOnce(&mut Self, T),
    ) {
        // Kubernetes' own name rules: a Service name becomes a DNS label of its hostname.
        let name_rule = if doc.get("kind").and_then(Value::as_str) == Some("Service") {
            dns1035_label
        } else {
            dns1123_subdomain
        };
        if let Err(e) = check_names(origin, &doc, name_rule) {
            self.store.errors.push(*e);
            return;
        }
        match serde_path_to_error::deserialize::<_, T>(&doc) {
            Ok(obj) => {
                let problems = check(&obj);
                if problems.is_empty() {
                    add(self, obj);
                }
                for (field, message) in problems {
                    self.store
                        .errors
                        .push(origin.error(&doc, Some(field), message));
                }
            }
            Err(e) => {
                let field = e.path().to_string();
                let message = e.inner().to_string();
                self.store
                    .errors
                    .push(origin.error(&doc, Some(field), message));
            }
        }
    }

    fn add_istio(&mut self, origin: &Origin, api_version: &str, kind: &str, doc: Value) {
        let Some(config_kind) = ConfigKind::from_kind(kind) else {
            tracing::debug!(source = %origin.source, kind, "ignoring Istio kind navarch does not read");
            return;
        };
        if !ISTIO_API_VERSIONS.contains(&api_version) {
            self.store.errors.push(origin.error(
                &doc,
                Some("apiVersion".into()),
                format!(
                    "{api_version} is not served; use one of {}",
                    ISTIO_API_VERSIONS.join(", ")
                ),
            ));
            return;
        }
        let meta = match config_meta(origin, config_kind, api_version, &doc) {
            Ok(m) => m,
            Err(e) => {
                self.store.errors.push(*e);
                return;
            }
        };
        let spec = doc
            .get("spec")
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        let object = IstioObject {
            store: &mut self.store,
            origin,
            doc: &doc,
            meta,
            spec,
        };
        match config_kind {
            ConfigKind::VirtualService => {
                object.push(VirtualService::validate, |s| &mut s.virtual_services)
            }
            ConfigKind::DestinationRule => {
                object.push(DestinationRule::validate, |s| &mut s.destination_rules)
            }
            ConfigKind::Gateway => object.push(Gateway::validate, |s| &mut s.gateways),
            ConfigKind::ServiceEntry => {
                object.push(ServiceEntry::validate, |s| &mut s.service_entries)
            }
            ConfigKind::Sidecar => object.push(Sidecar::validate, |s| &mut s.sidecars),
            ConfigKind::WorkloadEntry => {
                object.push(WorkloadEntry::validate, |s| &mut s.workload_entries)
            }
            ConfigKind::EnvoyFilter => object.store.envoy_filters.push(Arc::new(Config {
                meta: object.meta,
                spec: object.spec,
            })),
        }
    }

    /// Builds the ConfigStore: registry from Services + endpoints, namespaces, mesh config.
    /// `mesh_override` (from `--mesh-config`) wins over an `istio` ConfigMap.
    pub fn into_store(
        self,
        system_namespace: &str,
        mesh_override: Option<&MeshConfig>,
    ) -> ConfigStore {
        self.into_store_with(
            &MeshConfigMap::for_revision(system_namespace, ""),
            mesh_override,
        )
    }

    /// [`ObjectSet::into_store`] reading the mesh config from `mesh_map` (a revisioned
    /// control plane reads `istio-<revision>`).
    pub fn into_store_with(
        mut self,
        mesh_map: &MeshConfigMap,
        mesh_override: Option<&MeshConfig>,
    ) -> ConfigStore {
        let system_namespace = mesh_map.namespace.as_str();
        let mut store = std::mem::take(&mut self.store);
        if let Some(mesh) = mesh_override {
            store.mesh = mesh.clone();
        } else if let Some(cm) = self.config_maps.iter().find(|cm| {
            cm.metadata.name.as_deref() == Some(mesh_map.name.as_str())
                && cm.metadata.namespace.as_deref().unwrap_or("default") == system_namespace
        }) {
            let text = cm
                .data
                .as_ref()
                .and_then(|d| d.get("mesh"))
                .cloned()
                .unwrap_or_default();
            match MeshConfig::from_yaml(&text) {
                Ok(mesh) => store.mesh = mesh,
                Err(e) => store.errors.push(ConfigError {
                    source: "ConfigMap".into(),
                    document: None,
                    kind: Some("ConfigMap".into()),
                    namespace: Some(system_namespace.into()),
                    name: Some(mesh_map.name.clone()),
                    field: Some("data.mesh".into()),
                    message: format!("{e}; keeping the default mesh config"),
                    missing: None,
                }),
            }
        }
        for ns in &self.namespaces {
            if let Some(name) = &ns.metadata.name {
                store
                    .namespaces
                    .insert(name.clone(), ns.metadata.labels.clone().unwrap_or_default());
            }
        }
        self.sort_objects();
        if !store.mesh.discovery_selectors.is_empty() {
            retain_discovered(&mut self, &mut store);
        }
        self.fill_registry(&mut store, true);
        self.add_service_entries(&mut store);
        for secret in &self.secrets {
            if let (Some(name), Some(credential)) = (&secret.metadata.name, tls_credential(secret))
            {
                store.secrets.insert(
                    format!("{}/{name}", namespace_of(&secret.metadata)),
                    credential,
                );
            }
        }
        store.normalize();
        store
    }

    /// A store like `previous` (built from the same objects but for EndpointSlices, Endpoints
    /// and Pods) with pod labels and every service's endpoints computed again from this set:
    /// the snapshot of an endpoint-only change, which leaves every config object, the mesh
    /// config and the services as they were. `PushContext::with_endpoints` normalizes it.
    pub fn endpoints_into(mut self, previous: &ConfigStore) -> ConfigStore {
        let mut store = previous.clone();
        store.pod_labels.clear();
        store.pod_ports.clear();
        store.registry.endpoints.clear();
        // ServiceEntry hosts are added again below, with their (workload) endpoints.
        store
            .registry
            .services
            .retain(|_, s| s.source != ServiceSource::ServiceEntry);
        self.sort_objects();
        if !store.mesh.discovery_selectors.is_empty() {
            retain_discovered(&mut self, &mut store);
        }
        self.fill_registry(&mut store, false);
        self.add_service_entries(&mut store);
        store
    }

    /// Pod labels, and each Kubernetes Service's endpoints (and, with `services`, the
    /// Service itself) into `store`'s registry.
    fn fill_registry(&self, store: &mut ConfigStore, services: bool) {
        for pod in &self.pods {
            let (Some(name), ns) = (&pod.metadata.name, namespace_of(&pod.metadata)) else {
                continue;
            };
            store.pod_labels.insert(
                format!("{name}.{ns}"),
                pod.metadata.labels.clone().unwrap_or_default(),
            );
            let ports: BTreeMap<String, u16> = pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
                .collect();
            if !ports.is_empty() {
                store.pod_ports.insert(format!("{name}.{ns}"), ports);
            }
        }
        for svc in &self.services {
            let Some(service) = convert_service(svc) else {
                continue;
            };
            let endpoints = self.endpoints_of(svc, &service);
            store
                .registry
                .endpoints
                .insert(service.hostname.clone(), endpoints);
            if services {
                store
                    .registry
                    .services
                    .insert(service.hostname.clone(), service);
            }
        }
    }

    /// Puts every Kubernetes list in (namespace, name) order, so that the same objects give the
    /// same snapshot (and the same version) whatever order a source delivered them in.
    fn sort_objects(&mut self) {
        fn key(meta: &ObjectMeta) -> (String, String) {
            (namespace_of(meta), meta.name.clone().unwrap_or_default())
        }
        self.services.sort_by_key(|o| key(&o.metadata));
        self.endpoint_slices.sort_by_key(|o| key(&o.metadata));
        self.endpoints.sort_by_key(|o| key(&o.metadata));
        self.pods.sort_by_key(|o| key(&o.metadata));
        self.namespaces.sort_by_key(|o| key(&o.metadata));
        self.config_maps.sort_by_key(|o| key(&o.metadata));
        self.secrets.sort_by_key(|o| key(&o.metadata));
    }

    /// Appends another source's objects (files and a cluster served together).
    pub fn merge(&mut self, other: ObjectSet) {
        self.services.extend(other.services);
        self.endpoint_slices.extend(other.endpoint_slices);
        self.endpoints.extend(other.endpoints);
        self.pods.extend(other.pods);
        self.namespaces.extend(other.namespaces);
        self.config_maps.extend(other.config_maps);
        self.secrets.extend(other.secrets);
        let (a, b) = (&mut self.store, other.store);
        a.virtual_services.extend(b.virtual_services);
        a.destination_rules.extend(b.destination_rules);
        a.gateways.extend(b.gateways);
        a.service_entries.extend(b.service_entries);
        a.sidecars.extend(b.sidecars);
        a.workload_entries.extend(b.workload_entries);
        a.envoy_filters.extend(b.envoy_filters);
        a.errors.extend(b.errors);
    }
}

/// The TLS material of a Secret, under the keys Istio reads: `tls.crt`/`tls.key`/`ca.crt`
/// (kubernetes.io/tls) or `cert`/`key`/`cacert` (generic). `stringData` counts as in a file
/// that was never applied. `None` when it holds neither a key pair nor a CA.
fn tls_credential(secret: &Secret) -> Option<crate::model::credential::TlsCredential> {
    let get = |key: &str| -> Option<Vec<u8>> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| s.clone().into_bytes())
            })
            .filter(|b| !b.is_empty())
    };
    let credential = crate::model::credential::TlsCredential {
        certificate_chain: get("tls.crt").or_else(|| get("cert")).unwrap_or_default(),
        private_key: get("tls.key").or_else(|| get("key")).unwrap_or_default(),
        ca_certificate: get("ca.crt").or_else(|| get("cacert")),
    };
    (credential.has_key_pair() || credential.ca_certificate.is_some()).then_some(credential)
}

/// Drops every namespaced object outside the namespaces `discoverySelectors` selects (istiod's
/// discovery namespace filter, which also scopes Istio config since 1.22). Namespaces without a
/// Namespace object have no labels, so a selector only picks them when it matches empty labels.
fn retain_discovered(set: &mut ObjectSet, store: &mut ConfigStore) {
    let mesh = store.mesh.clone();
    let no_labels = BTreeMap::new();
    let namespaces = store.namespaces.clone();
    let discovered = |ns: &str| mesh.namespace_discovered(namespaces.get(ns).unwrap_or(&no_labels));
    set.services
        .retain(|o| discovered(&namespace_of(&o.metadata)));
    set.endpoint_slices
        .retain(|o| discovered(&namespace_of(&o.metadata)));
    set.endpoints
        .retain(|o| discovered(&namespace_of(&o.metadata)));
    set.pods.retain(|o| discovered(&namespace_of(&o.metadata)));
    set.secrets
        .retain(|o| discovered(&namespace_of(&o.metadata)));
    store
        .virtual_services
        .retain(|c| discovered(&c.meta.namespace));
    store
        .destination_rules
        .retain(|c| discovered(&c.meta.namespace));
    store.gateways.retain(|c| discovered(&c.meta.namespace));
    store
        .service_entries
        .retain(|c| discovered(&c.meta.namespace));
    store.sidecars.retain(|c| discovered(&c.meta.namespace));
    store
        .workload_entries
        .retain(|c| discovered(&c.meta.namespace));
    store
        .envoy_filters
        .retain(|c| discovered(&c.meta.namespace));
}

/// An Istio object on its way into the store: the document it came from
/// (for error positions), its metadata and its raw spec.
struct IstioObject<'a> {
    store: &'a mut ConfigStore,
    origin: &'a Origin,
    doc: &'a Value,
    meta: ConfigMeta,
    spec: Value,
}

impl IstioObject<'_> {
    /// Reads the spec as a `T` and validates it; stores it in `list` if it
    /// is valid, else records why not.
    fn push<T: DeserializeOwned>(
        self,
        validate: fn(&T) -> Vec<ValidationError>,
        list: fn(&mut ConfigStore) -> &mut Vec<Arc<Config<T>>>,
    ) {
        let IstioObject {
            store,
            origin,
            doc,
            meta,
            spec,
        } = self;
        let spec: T = match serde_path_to_error::deserialize(&spec) {
            Ok(spec) => spec,
            Err(e) => {
                let path = e.path().to_string();
                let field = if path == "." {
                    "spec".to_string()
                } else {
                    format!("spec.{path}")
                };
                store
                    .errors
                    .push(origin.error(doc, Some(field), e.inner().to_string()));
                return;
            }
        };
        let problems = validate(&spec);
        if !problems.is_empty() {
            for p in problems {
                store
                    .errors
                    .push(origin.error(doc, Some(p.field.clone()), p.message.clone()));
            }
            return;
        }
        list(store).push(Arc::new(Config { meta, spec }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(yaml: &str) -> ObjectSet {
        let mut set = ObjectSet::default();
        let origin = Origin {
            source: "test.yaml".into(),
            document: None,
        };
        for doc in serde_saphyr::from_multiple::<Value>(yaml).unwrap() {
            set.add_document(&origin, doc);
        }
        set
    }

    const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: a}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
  selector: {app: web}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-x
  namespace: a
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.5]
  conditions: {ready: true}
---
apiVersion: v1
kind: Pod
metadata: {name: web-loop, namespace: a, labels: {app: web}}
status:
  phase: Running
  podIP: 127.0.0.9
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-slice, namespace: a, labels: {app: web}}
status:
  phase: Running
  podIP: 10.0.0.5
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-leaving, namespace: a, labels: {app: web}, deletionTimestamp: "2026-01-01T00:00:00Z"}
status:
  phase: Running
  podIP: 127.0.0.10
  conditions: [{type: Ready, status: "True"}]
"#;

    fn endpoints(store: &ConfigStore, host: &str) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = store.registry.endpoints[host]
            .iter()
            .map(|e| (format!("{}:{}", e.address, e.port), e.ready))
            .collect();
        out.sort();
        out
    }

    /// The endpoint-only snapshot (endpoints recomputed on the previous config) is the
    /// snapshot a full rebuild makes: same versions, same registry.
    #[test]
    fn endpoint_only_snapshot_equals_a_full_rebuild() {
        use crate::model::push_context::PushContext;
        let se = r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: a}
spec:
  hosts: [ext.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: web}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: a}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: web}}]}]
"#;
        let before = format!("{WEB}{se}");
        let previous = PushContext::new(set_of(&before).into_store("istio-system", None));
        let after = before
            .replace("addresses: [10.0.0.5]", "addresses: [10.0.0.6]")
            .replace("podIP: 127.0.0.9", "podIP: 127.0.0.19");
        assert_ne!(after, before);
        let full = PushContext::new(set_of(&after).into_store("istio-system", None));
        let incremental =
            PushContext::with_endpoints(&previous, set_of(&after).endpoints_into(&previous.store));
        assert_eq!(incremental.config_version, previous.config_version);
        assert_eq!(
            full.config_version, previous.config_version,
            "only endpoints changed"
        );
        assert_eq!(incremental.version, full.version);
        assert_ne!(incremental.version, previous.version);
        assert_eq!(incremental.store.registry, full.store.registry);
        assert_eq!(incremental.store.pod_labels, full.store.pod_labels);
        assert!(
            endpoints(&incremental.store, "web.a.svc.cluster.local")
                .contains(&("10.0.0.6:8080".to_string(), true))
        );
        assert!(
            endpoints(&incremental.store, "ext.example.com")
                .iter()
                .any(|(a, _)| a.starts_with("127.0.0.19")),
            "the ServiceEntry's workload endpoints follow the pod"
        );
    }

    #[test]
    fn loopback_pods_are_read_beside_endpoint_slices() {
        let store = set_of(WEB).into_store("istio-system", None);
        assert_eq!(
            endpoints(&store, "web.a.svc.cluster.local"),
            [
                ("10.0.0.5:8080".to_string(), true),
                ("127.0.0.10:8080".to_string(), false),
                ("127.0.0.9:8080".to_string(), true),
            ],
            "the slice's address once, loopback pods from the Pods, a terminating pod not ready"
        );
    }

    #[test]
    fn discovery_selectors_drop_objects_of_unselected_namespaces() {
        let mesh = MeshConfig::from_yaml(
            "discoverySelectors:\n- matchLabels: {istio-discovery: enabled}\n",
        )
        .unwrap();
        let yaml = format!(
            "{WEB}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: a}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: web, namespace: a}}\nspec: {{host: web.a.svc.cluster.local}}\n"
        );
        let store = set_of(&yaml).into_store("istio-system", Some(&mesh));
        assert!(store.registry.services.is_empty());
        assert!(store.destination_rules.is_empty());

        let labelled = yaml.replace(
            "metadata: {name: a}",
            "metadata: {name: a, labels: {istio-discovery: enabled}}",
        );
        let store = set_of(&labelled).into_store("istio-system", Some(&mesh));
        assert!(
            store
                .registry
                .services
                .contains_key("web.a.svc.cluster.local")
        );
        assert_eq!(store.destination_rules.len(), 1);
    }

    /// Found by the property tests: a Service whose ports have no numbers gave a proxy two
    /// clusters named `outbound|0||...`, and Envoy rejects a CDS response holding both.
    #[test]
    fn service_ports_the_api_server_would_refuse_are_rejected_with_their_field() {
        let store = set_of(
            "apiVersion: v1\nkind: Service\nmetadata: {name: shadow, namespace: web}\nspec:\n  ports: [{}, {}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: twice, namespace: web}\nspec:\n  ports: [{name: a, port: 80, targetPort: 70000}, {name: a, port: 81}, {name: b, port: 80}]\n",
        )
        .into_store("istio-system", None);
        assert!(store.registry.services.is_empty(), "both rejected whole");
        let errors: Vec<String> = store.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            errors,
            [
                "test.yaml: Service web/shadow: field spec.ports[0].port: 0 is not a port: must be 1-65535",
                "test.yaml: Service web/shadow: field spec.ports[1]: duplicate port 0/TCP",
                "test.yaml: Service web/shadow: field spec.ports[1].port: 0 is not a port: must be 1-65535",
                "test.yaml: Service web/twice: field spec.ports[0].targetPort: 70000 is not a port: must be 1-65535",
                "test.yaml: Service web/twice: field spec.ports[1].name: duplicate port name \"a\"",
                "test.yaml: Service web/twice: field spec.ports[2]: duplicate port 80/TCP",
            ]
        );
    }

    #[test]
    fn object_order_does_not_change_the_store() {
        let docs: Vec<&str> = WEB.split("\n---\n").collect();
        let reversed: Vec<&str> = docs.iter().rev().copied().collect();
        let a = set_of(&docs.join("\n---\n")).into_store("istio-system", None);
        let b = set_of(&reversed.join("\n---\n")).into_store("istio-system", None);
        assert_eq!(
            serde_json::to_string(&a.registry).unwrap(),
            serde_json::to_string(&b.registry).unwrap()
        );
    }
}
