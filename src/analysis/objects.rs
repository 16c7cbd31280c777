//! The objects analysis reads beside the model's [`ConfigStore`](crate::model::push_context::ConfigStore):
//! every document as it was given (kind, metadata, status), typed for the Kubernetes kinds the
//! analyzers look into (Pods, Services, Namespaces, Deployments, webhooks, ConfigMaps, Secrets)
//! and for the Istio kinds the server does not serve yet (security.istio.io,
//! telemetry.istio.io), with only the fields the analyzers read.
//!
//! Owns reading those shapes; it never validates (the model does, for the kinds it serves) and
//! never reports: a document of a known kind that does not deserialize is left out here and
//! reported by the model (or, for a kind the model does not read, as IST0106 by
//! [`super::analyze`] from [`Objects::errors`]).

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Resource;
use crate::model::mesh::LabelSelector;

/// One document as given: its kind, name, labels, annotations and the whole value.
#[derive(Debug, Clone)]
pub struct RawObject {
    pub api_version: String,
    pub resource: Resource,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub value: Value,
}

impl RawObject {
    fn new(value: Value) -> Option<RawObject> {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let kind = s(&value["kind"]);
        let name = s(&value["metadata"]["name"]);
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        let map = crate::model::config::string_map;
        Some(RawObject {
            api_version: s(&value["apiVersion"]),
            resource: Resource {
                kind,
                namespace: s(&value["metadata"]["namespace"]),
                name,
            },
            labels: map(&value["metadata"]["labels"]),
            annotations: map(&value["metadata"]["annotations"]),
            value,
        })
    }

    pub fn group(&self) -> &str {
        self.api_version
            .split_once('/')
            .map_or("", |(group, _)| group)
    }

    /// `namespace/name` (Istio's `FullName` string), or `name` for cluster-scoped objects.
    pub fn full_name(&self) -> String {
        if self.resource.namespace.is_empty() {
            self.resource.name.clone()
        } else {
            format!("{}/{}", self.resource.namespace, self.resource.name)
        }
    }
}

/// A typed object with the raw document it came from.
#[derive(Debug, Clone)]
pub struct Object<T> {
    pub raw: RawObject,
    pub spec: T,
}

/// A workload selector (`selector.matchLabels`) of the security and telemetry kinds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadSelector {
    pub match_labels: BTreeMap<String, String>,
}

/// security.istio.io AuthorizationPolicy: its selector and its rules' source namespaces.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthorizationPolicy {
    pub selector: Option<WorkloadSelector>,
    pub rules: Vec<AuthorizationRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthorizationRule {
    pub from: Vec<RuleFrom>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RuleFrom {
    pub source: RuleSource,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RuleSource {
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
}

/// A kind whose only field analysis reads is its workload selector (RequestAuthentication,
/// PeerAuthentication, Telemetry).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Selected {
    pub selector: Option<WorkloadSelector>,
}

/// Everything analysis reads beside the model.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub all: Vec<RawObject>,
    pub pods: Vec<Object<Pod>>,
    pub services: Vec<Object<Service>>,
    pub namespaces: Vec<Object<Namespace>>,
    pub deployments: Vec<Object<Deployment>>,
    pub config_maps: Vec<Object<ConfigMap>>,
    pub secrets: Vec<Object<Secret>>,
    pub mutating_webhooks: Vec<Object<MutatingWebhookConfiguration>>,
    pub validating_webhooks: Vec<Object<ValidatingWebhookConfiguration>>,
    pub authorization_policies: Vec<Object<AuthorizationPolicy>>,
    pub request_authentications: Vec<Object<Selected>>,
    pub peer_authentications: Vec<Object<Selected>>,
    pub telemetries: Vec<Object<Selected>>,
    /// Documents of a kind only analysis reads that do not deserialize: `(object, field,
    /// message)`.
    pub errors: Vec<(Resource, String, String)>,
}

impl Objects {
    /// Adds one document (a `List` is expanded); one without kind or name is left to the
    /// model's errors.
    pub fn add(&mut self, value: Value) {
        if value["kind"].as_str().is_some_and(|k| k.ends_with("List"))
            && let Some(items) = value["items"].as_array()
        {
            for item in items.clone() {
                self.add(item);
            }
            return;
        }
        let Some(raw) = RawObject::new(value) else {
            return;
        };
        match (raw.group(), raw.resource.kind.as_str()) {
            ("", "Pod") => push(&mut self.pods, &mut self.errors, &raw, false),
            ("", "Service") => push(&mut self.services, &mut self.errors, &raw, false),
            ("", "Namespace") => push(&mut self.namespaces, &mut self.errors, &raw, false),
            ("", "ConfigMap") => push(&mut self.config_maps, &mut self.errors, &raw, false),
            ("", "Secret") => push(&mut self.secrets, &mut self.errors, &raw, false),
            ("apps", "Deployment") => push(&mut self.deployments, &mut self.errors, &raw, true),
            ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
                push(&mut self.mutating_webhooks, &mut self.errors, &raw, true)
            }
            ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
                push(&mut self.validating_webhooks, &mut self.errors, &raw, true)
            }
            ("security.istio.io", "AuthorizationPolicy") => {
                push_spec(&mut self.authorization_policies, &mut self.errors, &raw)
            }
            ("security.istio.io", "RequestAuthentication") => {
                push_spec(&mut self.request_authentications, &mut self.errors, &raw)
            }
            ("security.istio.io", "PeerAuthentication") => {
                push_spec(&mut self.peer_authentications, &mut self.errors, &raw)
            }
            ("telemetry.istio.io", "Telemetry") => {
                push_spec(&mut self.telemetries, &mut self.errors, &raw)
            }
            _ => {}
        }
        self.all.push(raw);
    }

    /// A namespace's labels, if it was given.
    pub fn namespace_labels(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces
            .iter()
            .find(|n| n.raw.resource.name == name)
            .map(|n| &n.raw.labels)
    }

    pub fn service_exists(&self, namespace: &str, name: &str) -> bool {
        self.services
            .iter()
            .any(|s| s.raw.resource.namespace == namespace && s.raw.resource.name == name)
    }
}

/// A whole Kubernetes object; `report` for kinds the model does not read (its errors are
/// the model's otherwise).
fn push<T: DeserializeOwned>(
    list: &mut Vec<Object<T>>,
    errors: &mut Vec<(Resource, String, String)>,
    raw: &RawObject,
    report: bool,
) {
    match serde_path_to_error::deserialize::<_, T>(&raw.value) {
        Ok(spec) => list.push(Object {
            raw: raw.clone(),
            spec,
        }),
        Err(e) if report => errors.push((
            raw.resource.clone(),
            e.path().to_string(),
            e.inner().to_string(),
        )),
        Err(_) => {}
    }
}

/// An Istio object's `spec`.
fn push_spec<T: DeserializeOwned + Default>(
    list: &mut Vec<Object<T>>,
    errors: &mut Vec<(Resource, String, String)>,
    raw: &RawObject,
) {
    let spec = raw.value.get("spec").cloned().unwrap_or(Value::Null);
    if spec.is_null() {
        list.push(Object {
            raw: raw.clone(),
            spec: T::default(),
        });
        return;
    }
    match serde_path_to_error::deserialize::<_, T>(&spec) {
        Ok(spec) => list.push(Object {
            raw: raw.clone(),
            spec,
        }),
        Err(e) => errors.push((
            raw.resource.clone(),
            format!("spec.{}", e.path()),
            e.inner().to_string(),
        )),
    }
}

/// A Kubernetes `LabelSelector` (webhooks') in the model's shape; `None` (absent) matches
/// everything.
pub fn label_selector<S: serde::Serialize>(selector: Option<&S>) -> Option<LabelSelector> {
    selector.and_then(|s| {
        serde_json::to_value(s)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
    })
}

/// `k=v,k2=v2`, keys in order: Kubernetes' text form of a `matchLabels` selector.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
