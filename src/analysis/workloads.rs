//! Analyzers of workloads and their Services, as istioctl's injection, deployment and service
//! analyzers: namespaces and pods outside the mesh (IST0102, IST0103, IST0123, IST0148),
//! `image: auto` without an injector (IST0146, IST0147), UID 1337 (IST0144), Services that
//! disagree about a Deployment's ports (IST0116, IST0137) and port names (IST0118, IST0150).
//!
//! Reads [`Objects`](super::objects::Objects) only; reports through [`Context`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::objects::{Object, label_selector};
use super::{Context, Message, SYSTEM_NAMESPACES, go_list, messages};
use crate::model::registry::{Protocol, labels_match};

const INJECTION_LABEL: &str = "istio-injection";
const REVISION_LABEL: &str = "istio.io/rev";
const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
const SIDECAR_INJECT: &str = "sidecar.istio.io/inject";
const PROXY_CONTAINER: &str = "istio-proxy";
const OPERATOR_CONTAINER: &str = "istio-operator";
/// The UID istio-proxy runs as; applications must not.
const PROXY_UID: i64 = 1337;

/// Whether a workload (its pod template's labels, annotations, namespace and containers) is in
/// the mesh, as istioctl decides: an istio-proxy container, else the `sidecar.istio.io/inject`
/// label, else the annotation, else its namespace's `istio-injection=enabled`.
fn in_mesh(
    cx: &Context,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    namespace: &str,
    containers: &[&Container],
) -> bool {
    if has_proxy(containers) {
        return true;
    }
    if let Some(v) = labels.get(SIDECAR_INJECT) {
        return v == "true";
    }
    if let Some(v) = annotations.get(SIDECAR_INJECT) {
        return v == "true";
    }
    cx.objects
        .namespace_labels(namespace)
        .is_some_and(|l| l.get(INJECTION_LABEL).is_some_and(|v| v == "enabled"))
}

fn has_proxy(containers: &[&Container]) -> bool {
    containers
        .iter()
        .any(|c| c.name == PROXY_CONTAINER && c.image.as_deref().is_some_and(|i| !i.is_empty()))
}

fn containers(spec: &PodSpec) -> Vec<&Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect()
}

/// Labels of the istio control plane (`istio=...` or `release=istio`): istioctl skips them.
fn control_plane(labels: &BTreeMap<String, String>) -> bool {
    labels.contains_key("istio") || labels.get("release").is_some_and(|r| r == "istio")
}

/// IST0123, IST0148, IST0102 and IST0103, as istioctl's injection analyzer.
pub fn injection(cx: &Context, out: &mut Vec<Message>) {
    let mut injected = BTreeSet::new();
    for ns in &cx.objects.namespaces {
        let name = ns.raw.resource.name.as_str();
        if name == "istio-system" || SYSTEM_NAMESPACES.contains(&name) {
            continue;
        }
        let labels = &ns.raw.labels;
        let injection = labels.get(INJECTION_LABEL);
        let mut istio_labels = Vec::new();
        if let Some(v) = injection {
            istio_labels.push(format!("{INJECTION_LABEL}={v}"));
        }
        for l in [REVISION_LABEL, DATAPLANE_MODE_LABEL] {
            if let Some(v) = labels.get(l)
                && injection.is_none_or(|i| i == "enabled")
            {
                istio_labels.push(format!("{l}={v}"));
            }
        }
        if istio_labels.len() > 1 {
            out.push(cx.raw_message(
                &messages::NAMESPACE_MULTIPLE_INJECTION_LABELS,
                &ns.raw,
                vec![go_list(&istio_labels)],
            ));
        }
        if labels
            .get(DATAPLANE_MODE_LABEL)
            .is_some_and(|m| m == "ambient")
        {
            continue;
        }
        let revision = labels.get(REVISION_LABEL);
        if injection.is_none_or(|i| i.is_empty()) && revision.is_none() {
            if enabled_by_default(cx, revision.map_or("", String::as_str)) {
                out.push(cx.raw_message(
                    &messages::NAMESPACE_INJECTION_ENABLED_BY_DEFAULT,
                    &ns.raw,
                    vec![],
                ));
            } else {
                out.push(cx.raw_message(
                    &messages::NAMESPACE_NOT_INJECTED,
                    &ns.raw,
                    vec![name.to_string(), name.to_string()],
                ));
            }
            continue;
        }
        if injection.is_some_and(|i| i == "enabled") {
            injected.insert(name);
        }
    }
    for pod in &cx.objects.pods {
        if !injected.contains(pod.raw.resource.namespace.as_str()) {
            continue;
        }
        let inject = pod
            .raw
            .labels
            .get(SIDECAR_INJECT)
            .or_else(|| pod.raw.annotations.get(SIDECAR_INJECT));
        let Some(spec) = &pod.spec.spec else {
            continue;
        };
        if inject.is_some_and(|v| v.eq_ignore_ascii_case("false"))
            || spec.host_network == Some(true)
        {
            continue;
        }
        if !has_proxy(&containers(spec)) {
            out.push(cx.raw_message(
                &messages::POD_MISSING_PROXY,
                &pod.raw,
                vec![pod.raw.full_name()],
            ));
        }
    }
}

/// `sidecarInjectorWebhook.enableNamespacesByDefault` of the injector's values
/// (`istio-sidecar-injector[-<revision>]` ConfigMap, `values` key).
fn enabled_by_default(cx: &Context, revision: &str) -> bool {
    let name = match revision {
        "" | "default" => "istio-sidecar-injector".to_string(),
        r => format!("istio-sidecar-injector-{r}"),
    };
    cx.objects
        .config_maps
        .iter()
        .find(|cm| cm.raw.resource.name == name)
        .and_then(|cm| cm.spec.data.as_ref()?.get("values").cloned())
        .and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
        .and_then(|v| v["sidecarInjectorWebhook"]["enableNamespacesByDefault"].as_bool())
        .unwrap_or(false)
}

/// IST0147 (a Pod) and IST0146 (a Deployment no Istio injection webhook selects) for an
/// istio-proxy container with `image: auto`, which only the injector fills in.
pub fn image_auto(cx: &Context, out: &mut Vec<Message>) {
    let auto = |spec: Option<&PodSpec>| {
        spec.is_some_and(|s| {
            s.containers
                .iter()
                .any(|c| c.name == PROXY_CONTAINER && c.image.as_deref() == Some("auto"))
        })
    };
    for pod in &cx.objects.pods {
        if auto(pod.spec.spec.as_ref()) {
            out.push(cx.raw_message(
                &messages::IMAGE_AUTO_WITHOUT_INJECTION_ERROR,
                &pod.raw,
                vec!["Pod".into(), pod.raw.resource.name.clone()],
            ));
        }
    }
    let webhooks: Vec<_> = cx
        .objects
        .mutating_webhooks
        .iter()
        .flat_map(|w| w.spec.webhooks.iter().flatten())
        .filter(|w| w.name.ends_with("istio.io"))
        .collect();
    let no_labels = BTreeMap::new();
    for d in &cx.objects.deployments {
        let Some(spec) = &d.spec.spec else { continue };
        if !auto(spec.template.spec.as_ref()) {
            continue;
        }
        let ns_labels = cx
            .objects
            .namespace_labels(&d.raw.resource.namespace)
            .unwrap_or(&no_labels);
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let selected = webhooks.iter().any(|w| {
            label_selector(w.namespace_selector.as_ref()).is_none_or(|s| s.matches(ns_labels))
                && label_selector(w.object_selector.as_ref()).is_none_or(|s| s.matches(&pod_labels))
        });
        if !selected {
            out.push(cx.raw_message(
                &messages::IMAGE_AUTO_WITHOUT_INJECTION_WARNING,
                &d.raw,
                vec!["Deployment".into(), d.raw.resource.name.clone()],
            ));
        }
    }
}

/// IST0144: a Pod or Deployment (not the control plane's) whose pod or application container
/// runs as UID 1337, the proxy's.
pub fn application_uid(cx: &Context, out: &mut Vec<Message>) {
    let runs_as_proxy = |spec: &PodSpec| {
        let pod = spec.security_context.as_ref().and_then(|s| s.run_as_user) == Some(PROXY_UID);
        let containers = spec
            .containers
            .iter()
            .filter(|c| c.name != PROXY_CONTAINER && c.name != OPERATOR_CONTAINER)
            .filter(|c| c.security_context.as_ref().and_then(|s| s.run_as_user) == Some(PROXY_UID))
            .count();
        usize::from(pod) + containers
    };
    for pod in &cx.objects.pods {
        if control_plane(&pod.raw.labels) {
            continue;
        }
        for _ in 0..pod.spec.spec.as_ref().map_or(0, runs_as_proxy) {
            out.push(cx.raw_message(&messages::INVALID_APPLICATION_UID, &pod.raw, vec![]));
        }
    }
    for d in &cx.objects.deployments {
        if control_plane(&d.raw.labels) {
            continue;
        }
        let spec = d.spec.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        for _ in 0..spec.map_or(0, runs_as_proxy) {
            out.push(cx.raw_message(&messages::INVALID_APPLICATION_UID, &d.raw, vec![]));
        }
    }
}

/// IST0116 and IST0137, as istioctl's service association analyzer: the Services of a
/// Deployment in the mesh must agree on each port's protocol and on each target port's port.
pub fn service_associations(cx: &Context, out: &mut Vec<Message>) {
    for d in &cx.objects.deployments {
        if d.raw
            .labels
            .get("gateway.istio.io/managed")
            .is_some_and(|v| v == "istio.io-mesh-controller")
        {
            continue;
        }
        let Some(spec) = &d.spec.spec else { continue };
        let meta = spec.template.metadata.clone().unwrap_or_default();
        let labels = meta.labels.unwrap_or_default();
        let annotations = meta.annotations.unwrap_or_default();
        let template_containers = spec
            .template
            .spec
            .as_ref()
            .map_or(Vec::new(), |s| s.containers.iter().collect::<Vec<_>>());
        if !in_mesh(
            cx,
            &labels,
            &annotations,
            &d.raw.resource.namespace,
            &template_containers,
        ) {
            continue;
        }
        let services: Vec<_> = cx
            .objects
            .services
            .iter()
            .filter(|s| s.raw.resource.namespace == d.raw.resource.namespace)
            .filter(|s| {
                s.spec
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .is_some_and(|sel| !sel.is_empty() && labels_match(sel, &labels))
            })
            .collect();
        // port → protocol → services; target port → port → service.
        let mut protocols: BTreeMap<i32, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        let mut targets: BTreeMap<String, BTreeMap<i32, String>> = BTreeMap::new();
        for s in &services {
            for p in s
                .spec
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
            {
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                protocols
                    .entry(p.port)
                    .or_default()
                    .entry(protocol)
                    .or_default()
                    .push(s.raw.full_name());
                let target = match &p.target_port {
                    Some(IntOrString::Int(0)) | None => p.port.to_string(),
                    Some(IntOrString::Int(n)) => n.to_string(),
                    Some(IntOrString::String(s)) if s.is_empty() => p.port.to_string(),
                    Some(IntOrString::String(s)) => s.clone(),
                };
                targets
                    .entry(target)
                    .or_default()
                    .insert(p.port, s.raw.full_name());
            }
        }
        for (port, by_protocol) in protocols.iter().filter(|(_, m)| m.len() > 1) {
            let mut names: Vec<&String> = by_protocol.values().flatten().collect();
            names.sort();
            out.push(cx.raw_message(
                &messages::DEPLOYMENT_ASSOCIATED_TO_MULTIPLE_SERVICES,
                &d.raw,
                vec![
                    d.raw.resource.name.clone(),
                    port.to_string(),
                    go_list(names),
                ],
            ));
        }
        for (target, ports) in targets.iter().filter(|(_, m)| m.len() > 1) {
            let mut names: Vec<&String> = ports.values().collect();
            names.sort();
            out.push(cx.raw_message(
                &messages::DEPLOYMENT_CONFLICTING_PORTS,
                &d.raw,
                vec![
                    d.raw.resource.name.clone(),
                    go_list(names),
                    target.clone(),
                    go_list(ports.keys()),
                ],
            ));
        }
    }
}

/// IST0118: a Service port whose name and appProtocol give no protocol (Istio sniffs it);
/// IST0150 instead for an ExternalName Service (also for a port named `tcp`). The control
/// plane's and gateway-managed Services are skipped, as istioctl does.
pub fn port_names(cx: &Context, out: &mut Vec<Message>) {
    for s in &cx.objects.services {
        let ns = s.raw.resource.namespace.as_str();
        if SYSTEM_NAMESPACES.contains(&ns)
            || control_plane(&s.raw.labels)
            || s.raw.labels.contains_key("gateway.istio.io/managed")
        {
            continue;
        }
        let Some(spec) = &s.spec.spec else { continue };
        let external_name = spec.type_.as_deref() == Some("ExternalName");
        for p in spec.ports.iter().flatten() {
            let name = p.name.clone().unwrap_or_default();
            let protocol = Protocol::select(
                u16::try_from(p.port).unwrap_or_default(),
                &name,
                p.app_protocol.as_deref(),
                p.protocol.as_deref(),
            );
            if protocol != Protocol::Unsupported && !(external_name && name == "tcp") {
                continue;
            }
            if external_name {
                out.push(cx.raw_message(
                    &messages::EXTERNAL_NAME_SERVICE_TYPE_INVALID_PORT_NAME,
                    &s.raw,
                    vec![],
                ));
                continue;
            }
            let target = match &p.target_port {
                Some(IntOrString::Int(n)) => n.to_string(),
                Some(IntOrString::String(t)) => t.clone(),
                None => p.port.to_string(),
            };
            out.push(cx.raw_message(
                &messages::PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION,
                &s.raw,
                vec![name, p.port.to_string(), target],
            ));
        }
    }
}

/// Whether a Pod is in the mesh (see `in_mesh`), its init containers counted.
pub fn pod_in_mesh(cx: &Context, pod: &Object<Pod>) -> bool {
    let containers = pod.spec.spec.as_ref().map(containers).unwrap_or_default();
    in_mesh(
        cx,
        &pod.raw.labels,
        &pod.raw.annotations,
        &pod.raw.resource.namespace,
        &containers,
    )
}
