//! Sidecar injection, as istiod's injector does it: whether a pod is injected (Istio's policy
//! rules) and what is added to it (the `istio-init` container that installs the REDIRECT rules
//! with `navarch iptables`, the `istio-proxy` container that runs `navarch agent`, their volume,
//! annotations and labels). The webhook ([`crate::webhook`]) and `navarch kube-inject` both use
//! it, so a pod is injected the same way online and offline.
//!
//! Pure: JSON objects in, JSON objects out; no I/O, no Kubernetes client.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::config::string_map;
use crate::model::mesh::LabelSelector;

/// Namespaces whose pods are never injected (istiod's `IgnoredNamespaces`).
pub const IGNORED_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];

/// The annotation an injected pod carries (what was added), which also marks it injected.
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// The pod label (or, older, annotation) that opts a pod in or out.
pub const INJECT_KEY: &str = "sidecar.istio.io/inject";

/// The `config` key of the `istio-sidecar-injector` ConfigMap.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InjectorConfig {
    /// `enabled`: pods in selected namespaces are injected unless they opt out; `disabled`:
    /// only pods that opt in (`sidecar.istio.io/inject: "true"`).
    pub policy: String,
    pub always_inject_selector: Vec<LabelSelector>,
    pub never_inject_selector: Vec<LabelSelector>,
    pub injected_annotations: BTreeMap<String, String>,
}

impl Default for InjectorConfig {
    fn default() -> Self {
        InjectorConfig {
            policy: "enabled".into(),
            always_inject_selector: Vec::new(),
            never_inject_selector: Vec::new(),
            injected_annotations: BTreeMap::new(),
        }
    }
}

/// Errors reading the injector's configuration or injecting.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("the injector config (istio-sidecar-injector `config`): {0}")]
    Config(String),
    #[error("the injector values (istio-sidecar-injector `values`): {0}")]
    Values(String),
    #[error("{0}")]
    Object(String),
}

/// Everything injection needs besides the pod.
#[derive(Debug, Clone)]
pub struct Injector {
    pub config: InjectorConfig,
    /// The Helm-style values of the install (`global.proxy.*`, `global.hub`, `global.tag`).
    pub values: Value,
    /// The revision injecting (`default` for the unnamed one), recorded in the status.
    pub revision: String,
    /// Where the sidecar's Envoy gets its config: the revision's `istiod` Service.
    pub xds_address: String,
}

impl Injector {
    /// From the two keys of the `istio-sidecar-injector` ConfigMap.
    pub fn from_config_map(
        config_yaml: &str,
        values_json: &str,
        revision: &str,
        xds_address: &str,
    ) -> Result<Injector, InjectError> {
        let config = if config_yaml.trim().is_empty() {
            InjectorConfig::default()
        } else {
            serde_saphyr::from_str(config_yaml).map_err(|e| InjectError::Config(e.to_string()))?
        };
        let values = if values_json.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(values_json).map_err(|e| InjectError::Values(e.to_string()))?
        };
        Ok(Injector {
            config,
            values,
            revision: crate::model::config::revision::label(revision).into(),
            xds_address: xds_address.into(),
        })
    }

    fn value(&self, path: &str) -> Option<&Value> {
        crate::install::spec::value_at(&self.values, path)
    }

    fn value_str(&self, path: &str, default: &str) -> String {
        match self.value(path) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => default.to_string(),
        }
    }

    /// The image of both injected containers: `{global.hub}/navarch:{global.tag}`.
    pub fn image(&self) -> String {
        format!(
            "{}/navarch:{}",
            self.value_str("global.hub", "navarch"),
            self.value_str("global.tag", env!("CARGO_PKG_VERSION"))
        )
    }
}

/// Whether a pod is injected, and why not when it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Inject,
    Skip(String),
}

/// Istio's rules (istiod's `injectRequired`) for a pod (`metadata` and `spec`) in `namespace`.
/// Which namespaces are asked at all is the webhook configuration's selectors' job.
pub fn decide(injector: &Injector, namespace: &str, metadata: &Value, spec: &Value) -> Decision {
    if spec["hostNetwork"] == true {
        return Decision::Skip("hostNetwork pod".into());
    }
    if IGNORED_NAMESPACES.contains(&namespace) {
        return Decision::Skip(format!("namespace {namespace} is never injected"));
    }
    let annotations = string_map(&metadata["annotations"]);
    let labels = string_map(&metadata["labels"]);
    if annotations.contains_key(STATUS_ANNOTATION) {
        return Decision::Skip("already injected".into());
    }
    // The label wins over the (deprecated) annotation.
    let wish = labels
        .get(INJECT_KEY)
        .or_else(|| annotations.get(INJECT_KEY))
        .map(|v| v.to_lowercase());
    let (mut use_default, mut inject) = match wish.as_deref() {
        None | Some("") => (true, false),
        Some("y" | "yes" | "true" | "on") => (false, true),
        Some(_) => (false, false),
    };
    let any_matches = |selectors: &[LabelSelector]| selectors.iter().any(|s| s.matches(&labels));
    if use_default && any_matches(&injector.config.never_inject_selector) {
        (use_default, inject) = (false, false);
    } else if use_default && any_matches(&injector.config.always_inject_selector) {
        (use_default, inject) = (false, true);
    }
    let required = match injector.config.policy.as_str() {
        "disabled" => !use_default && inject,
        _ => use_default || inject,
    };
    if required {
        Decision::Inject
    } else if use_default {
        Decision::Skip(format!("policy {}", injector.config.policy))
    } else {
        Decision::Skip(format!(
            "{INJECT_KEY} says no (or a neverInjectSelector matches)"
        ))
    }
}

/// The proxy's resources: the pod's `sidecar.istio.io/proxyCPU|proxyMemory[Limit]`
/// annotations over `global.proxy.resources`.
fn proxy_resources(injector: &Injector, annotations: &BTreeMap<String, String>) -> Value {
    let mut resources = injector
        .value("global.proxy.resources")
        .cloned()
        .unwrap_or_else(|| json!({}));
    for (annotation, section, key) in [
        ("sidecar.istio.io/proxyCPU", "requests", "cpu"),
        ("sidecar.istio.io/proxyMemory", "requests", "memory"),
        ("sidecar.istio.io/proxyCPULimit", "limits", "cpu"),
        ("sidecar.istio.io/proxyMemoryLimit", "limits", "memory"),
    ] {
        if let Some(v) = annotations.get(annotation) {
            resources[section][key] = v.clone().into();
        }
    }
    resources
}

/// The `navarch iptables` arguments: istio-iptables' flags, from the pod's
/// `traffic.sidecar.istio.io/*` annotations over `global.proxy.*`.
fn iptables_args(injector: &Injector, annotations: &BTreeMap<String, String>) -> Vec<String> {
    let pick = |annotation: &str, value: &str, default: &str| {
        annotations
            .get(&format!("traffic.sidecar.istio.io/{annotation}"))
            .cloned()
            .unwrap_or_else(|| injector.value_str(&format!("global.proxy.{value}"), default))
    };
    let mut exclude_inbound = "15090,15021,15020".to_string();
    let extra = pick("excludeInboundPorts", "excludeInboundPorts", "");
    if !extra.is_empty() {
        exclude_inbound = format!("{exclude_inbound},{extra}");
    }
    let mut args: Vec<String> = [
        "iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "-i".to_string(),
        pick("includeOutboundIPRanges", "includeIPRanges", "*"),
        "-x".to_string(),
        pick("excludeOutboundIPRanges", "excludeIPRanges", ""),
        "-b".to_string(),
        pick("includeInboundPorts", "includeInboundPorts", "*"),
        "-d".to_string(),
        exclude_inbound,
        "-o".to_string(),
        pick("excludeOutboundPorts", "excludeOutboundPorts", ""),
    ]);
    args
}

/// istiod's check of an injection annotation's value (its `AnnotationValidation`): `None` for
/// an annotation it does not check, else what is wrong. The injector refuses a pod with a bad
/// one, and `navarch analyze` reports it (IST0125).
pub fn validate_annotation(name: &str, value: &str) -> Option<Result<(), String>> {
    fn port(p: &str) -> Result<u16, String> {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("failed parsing port '{p}': {}", go_parse_error(p.trim())))
    }
    fn ports(what: &str, list: &str) -> Result<(), String> {
        let list = list.trim();
        if list.is_empty() {
            return Ok(());
        }
        for p in list.split(',') {
            port(p).map_err(|e| format!("{what} invalid: failed parsing port '{p}': {e}"))?;
        }
        Ok(())
    }
    fn cidrs(what: &str, list: &str) -> Result<(), String> {
        if list.is_empty() {
            return Ok(());
        }
        for c in list.split(',') {
            let ok = c.split_once('/').is_some_and(|(ip, bits)| {
                ip.parse::<std::net::IpAddr>().is_ok_and(|ip| {
                    bits.parse::<u8>()
                        .is_ok_and(|b| b <= if ip.is_ipv4() { 32 } else { 128 })
                })
            });
            if !ok {
                return Err(format!("{what} invalid: failed parsing cidr '{c}'"));
            }
        }
        Ok(())
    }
    fn go_parse_error(v: &str) -> String {
        format!("strconv.ParseUint: parsing {v:?}: invalid syntax")
    }
    let uint32 = |v: &str| v.parse::<u32>().map(|_| ()).map_err(|_| go_parse_error(v));
    Some(match name {
        "sidecar.istio.io/interceptionMode" => match value {
            "REDIRECT" | "TPROXY" | "NONE" => Ok(()),
            _ => Err(format!(
                "interceptionMode invalid, use REDIRECT,TPROXY,NONE: {value}"
            )),
        },
        "status.sidecar.istio.io/port" => port(value)
            .map(|_| ())
            .map_err(|e| format!("excludeInboundPorts invalid: {e}")),
        "readiness.status.sidecar.istio.io/initialDelaySeconds"
        | "readiness.status.sidecar.istio.io/periodSeconds"
        | "readiness.status.sidecar.istio.io/failureThreshold" => uint32(value),
        "traffic.sidecar.istio.io/includeOutboundIPRanges" if value == "*" => Ok(()),
        "traffic.sidecar.istio.io/includeOutboundIPRanges" => cidrs("includeIPRanges", value),
        "traffic.sidecar.istio.io/excludeOutboundIPRanges" => cidrs("excludeIPRanges", value),
        "traffic.sidecar.istio.io/includeInboundPorts" if value == "*" => Ok(()),
        "traffic.sidecar.istio.io/includeInboundPorts" => ports("includeInboundPorts", value),
        "traffic.sidecar.istio.io/excludeInboundPorts" => ports("excludeInboundPorts", value),
        "traffic.sidecar.istio.io/excludeOutboundPorts" => ports("excludeOutboundPorts", value),
        "prometheus.istio.io/merge-metrics" => match value {
            "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false"
            | "False" => Ok(()),
            _ => Err(format!(
                "strconv.ParseBool: parsing {value:?}: invalid syntax"
            )),
        },
        _ => return None,
    })
}

/// Every annotation of `annotations` the injector refuses, in istiod's words.
fn annotation_errors(annotations: &BTreeMap<String, String>) -> Vec<String> {
    annotations
        .iter()
        .filter_map(|(name, value)| match validate_annotation(name, value)? {
            Ok(()) => None,
            Err(e) => Some(format!(
                "invalid value '{value}' for annotation '{name}': {e}"
            )),
        })
        .collect()
}

/// `pod_template` (`metadata` + `spec` of a Pod or a workload's template) with the sidecar
/// added. The caller has decided that it is injected.
pub fn inject(injector: &Injector, pod_template: &Value) -> Result<Value, InjectError> {
    let mut pod = pod_template.clone();
    let containers = pod["spec"]["containers"]
        .as_array()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| InjectError::Object("spec.containers: a pod needs a container".into()))?;
    if containers.iter().any(|c| c["name"] == "istio-proxy") {
        return Err(InjectError::Object(
            "spec.containers: already has an istio-proxy container".into(),
        ));
    }
    let first_app = containers[0]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let annotations = string_map(&pod["metadata"]["annotations"]);
    let problems = annotation_errors(&annotations);
    if !problems.is_empty() {
        return Err(InjectError::Object(format!(
            "metadata.annotations: {}",
            problems.join("; ")
        )));
    }
    let labels = string_map(&pod["metadata"]["labels"]);
    let image = injector.image();
    let labels_arg = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let mut env = vec![
        json!({"name": "NAVARCH_IP", "valueFrom": field("status.podIP")}),
        json!({"name": "NAVARCH_POD", "valueFrom": field("metadata.name")}),
        json!({"name": "NAVARCH_NAMESPACE", "valueFrom": field("metadata.namespace")}),
        json!({"name": "NAVARCH_LABELS", "value": labels_arg}),
        json!({"name": "NAVARCH_INTERCEPTION_MODE", "value": "REDIRECT"}),
        json!({"name": "ISTIO_META_WORKLOAD_NAME", "value": labels.get("app").cloned().unwrap_or_else(|| first_app.clone())}),
    ];
    // Passed on as Istio's agent receives them; navarch's bootstrap keeps every Envoy stat, so
    // statsInclusionPrefixes has nothing to widen.
    for (annotation, name) in [
        ("proxy.istio.io/config", "PROXY_CONFIG"),
        (
            "sidecar.istio.io/statsInclusionPrefixes",
            "ISTIO_META_STATS_INCLUSION_PREFIXES",
        ),
    ] {
        if let Some(v) = annotations.get(annotation) {
            env.push(json!({"name": name, "value": v}));
        }
    }
    let log_level = annotations
        .get("sidecar.istio.io/logLevel")
        .cloned()
        .unwrap_or_else(|| injector.value_str("global.proxy.logLevel", "warning"));
    let proxy = json!({
        "name": "istio-proxy",
        "image": &image,
        "args": ["agent", "--type", "sidecar", "--xds-address", injector.xds_address,
            "--admin-port", "15000", "-o", "/etc/istio/proxy/envoy.yaml", "--",
            "--disable-hot-restart", "--log-level", log_level],
        "env": env,
        "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
        "resources": proxy_resources(injector, &annotations),
        "securityContext": {
            "allowPrivilegeEscalation": false, "privileged": false,
            "readOnlyRootFilesystem": true, "runAsNonRoot": true,
            "runAsUser": 1337, "runAsGroup": 1337, "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "istio-envoy", "mountPath": "/etc/istio/proxy"}],
    });
    let init = json!({
        "name": "istio-init",
        "image": image,
        "args": iptables_args(injector, &annotations),
        "resources": {"requests": {"cpu": "10m", "memory": "40Mi"},
            "limits": {"cpu": "2000m", "memory": "1024Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": false, "privileged": false,
            "readOnlyRootFilesystem": false, "runAsNonRoot": false,
            "runAsUser": 0, "runAsGroup": 0,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    });
    push(&mut pod["spec"], "initContainers", init);
    push(&mut pod["spec"], "containers", proxy);
    push(
        &mut pod["spec"],
        "volumes",
        json!({"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}),
    );
    let status = json!({
        "initContainers": ["istio-init"],
        "containers": ["istio-proxy"],
        "volumes": ["istio-envoy"],
        "imagePullSecrets": null,
        "revision": injector.revision,
    });
    let meta = &mut pod["metadata"];
    if !meta.is_object() {
        *meta = json!({});
    }
    for (k, v) in &injector.config.injected_annotations {
        meta["annotations"][k] = v.clone().into();
    }
    meta["annotations"][STATUS_ANNOTATION] = status.to_string().into();
    meta["annotations"]["kubectl.kubernetes.io/default-container"] = first_app.clone().into();
    meta["annotations"]["kubectl.kubernetes.io/default-logs-container"] = first_app.into();
    meta["annotations"]["sidecar.istio.io/interceptionMode"] = "REDIRECT".into();
    meta["labels"]["security.istio.io/tlsMode"] = "istio".into();
    let canonical_name = labels
        .get("service.istio.io/canonical-name")
        .or_else(|| labels.get("app.kubernetes.io/name"))
        .or_else(|| labels.get("app"))
        .cloned()
        .unwrap_or_else(|| {
            pod_template["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        });
    let canonical_revision = labels
        .get("service.istio.io/canonical-revision")
        .or_else(|| labels.get("app.kubernetes.io/version"))
        .or_else(|| labels.get("version"))
        .cloned()
        .unwrap_or_else(|| "latest".into());
    meta["labels"]["service.istio.io/canonical-name"] = canonical_name.into();
    meta["labels"]["service.istio.io/canonical-revision"] = canonical_revision.into();
    Ok(pod)
}

fn push(spec: &mut Value, key: &str, item: Value) {
    match spec[key].as_array_mut() {
        Some(list) => list.push(item),
        None => spec[key] = json!([item]),
    }
}

/// `kube-inject`: every pod template in `doc` (a Pod, Deployment, StatefulSet, DaemonSet,
/// ReplicaSet, Job, CronJob, or a List of them) injected where Istio's rules say so; other
/// kinds unchanged. Returns the document and, per template, what was decided.
pub fn inject_document(
    injector: &Injector,
    doc: &Value,
) -> Result<(Value, Vec<Decision>), InjectError> {
    let mut out = doc.clone();
    let mut decisions = Vec::new();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default");
    let template_path: &[&str] = match kind {
        "List" => {
            if let Some(items) = out["items"].as_array_mut() {
                for item in items {
                    let (injected, d) = inject_document(injector, item)?;
                    *item = injected;
                    decisions.extend(d);
                }
            }
            return Ok((out, decisions));
        }
        "Pod" => &[],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return Ok((out, decisions)),
    };
    let mut template = &mut out;
    for key in template_path {
        template = &mut template[*key];
    }
    let decision = decide(
        injector,
        namespace,
        &template["metadata"],
        &template["spec"],
    );
    if decision == Decision::Inject {
        let mut injected = inject(injector, template)?;
        if kind == "Pod" {
            // Keep the Pod's own fields (apiVersion, kind, status) around the injected parts.
            if let (Some(o), Some(i)) = (template.as_object_mut(), injected.as_object_mut()) {
                for (k, v) in std::mem::take(i) {
                    o.insert(k, v);
                }
            }
        } else {
            *template = injected;
        }
    }
    decisions.push(decision);
    Ok((out, decisions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injector(config: &str) -> Injector {
        Injector::from_config_map(
            config,
            r#"{"global": {"hub": "mirror.invalid/mesh", "tag": "1.2.3",
                "proxy": {"logLevel": "warning", "excludeOutboundPorts": "",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}}}"#,
            "",
            "istiod.istio-system.svc:15010",
        )
        .unwrap()
    }

    fn pod(labels: Value, annotations: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "testns1", "labels": labels,
                "annotations": annotations},
            "spec": {"containers": [{"name": "web", "image": "web"}]},
        })
    }

    fn decision(config: &str, labels: Value, annotations: Value) -> Decision {
        let p = pod(labels, annotations);
        decide(&injector(config), "testns1", &p["metadata"], &p["spec"])
    }

    #[test]
    fn every_policy_branch_of_istios_rules() {
        let enabled = "policy: enabled\n";
        let disabled = "policy: disabled\n";
        let opt_in = json!({"sidecar.istio.io/inject": "true"});
        let opt_out = json!({"sidecar.istio.io/inject": "false"});
        // enabled: everyone unless they opt out
        assert_eq!(decision(enabled, json!({}), json!({})), Decision::Inject);
        assert_eq!(
            decision(enabled, opt_in.clone(), json!({})),
            Decision::Inject
        );
        assert!(matches!(
            decision(enabled, opt_out.clone(), json!({})),
            Decision::Skip(_)
        ));
        assert!(
            matches!(
                decision(enabled, json!({}), opt_out.clone()),
                Decision::Skip(_)
            ),
            "the annotation works too"
        );
        assert_eq!(
            decision(enabled, opt_in.clone(), opt_out.clone()),
            Decision::Inject,
            "the label wins over the annotation"
        );
        // disabled: only those who opt in
        assert_eq!(
            decision(disabled, json!({}), json!({})),
            Decision::Skip("policy disabled".into())
        );
        assert_eq!(
            decision(disabled, opt_in.clone(), json!({})),
            Decision::Inject
        );
        assert_eq!(
            decision(
                disabled,
                json!({}),
                json!({"sidecar.istio.io/inject": "yes"})
            ),
            Decision::Inject
        );
        // selectors apply when the pod says nothing
        let never = "policy: enabled\nneverInjectSelector:\n- matchLabels: {batch: \"true\"}\n";
        assert!(matches!(
            decision(never, json!({"batch": "true"}), json!({})),
            Decision::Skip(_)
        ));
        assert_eq!(
            decision(
                never,
                json!({"batch": "true", "sidecar.istio.io/inject": "true"}),
                json!({})
            ),
            Decision::Inject
        );
        let always = "policy: disabled\nalwaysInjectSelector:\n- matchExpressions: [{key: app, operator: Exists}]\n";
        assert_eq!(
            decision(always, json!({"app": "web"}), json!({})),
            Decision::Inject
        );
        assert!(matches!(
            decision(always, json!({}), json!({})),
            Decision::Skip(_)
        ));
        // never: hostNetwork, kube-system, already injected
        let i = injector(enabled);
        let p = pod(json!({}), json!({}));
        let mut host = p["spec"].clone();
        host["hostNetwork"] = true.into();
        assert_eq!(
            decide(&i, "testns1", &p["metadata"], &host),
            Decision::Skip("hostNetwork pod".into())
        );
        assert!(matches!(
            decide(&i, "kube-system", &p["metadata"], &p["spec"]),
            Decision::Skip(_)
        ));
        let injected = inject(&i, &p).unwrap();
        assert_eq!(
            decide(&i, "testns1", &injected["metadata"], &injected["spec"]),
            Decision::Skip("already injected".into())
        );
    }

    #[test]
    fn the_sidecar_runs_navarch_agent_and_the_init_container_the_redirect_rules() {
        let p = pod(
            json!({"app": "web", "version": "v1"}),
            json!({"sidecar.istio.io/proxyCPU": "250m",
                "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
                "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8",
                "sidecar.istio.io/statsInclusionPrefixes": "cluster.outbound,listener"}),
        );
        let out = inject(&injector(""), &p).unwrap();
        let containers = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        let proxy = &containers[1];
        assert_eq!(proxy["name"], "istio-proxy");
        assert_eq!(proxy["image"], "mirror.invalid/mesh/navarch:1.2.3");
        assert_eq!(proxy["args"][0], "agent");
        assert!(
            proxy["args"]
                .as_array()
                .unwrap()
                .contains(&json!("istiod.istio-system.svc:15010"))
        );
        assert_eq!(
            proxy["resources"]["requests"]["cpu"], "250m",
            "the annotation wins"
        );
        assert_eq!(
            proxy["resources"]["requests"]["memory"], "128Mi",
            "values otherwise"
        );
        assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
        let env = proxy["env"].as_array().unwrap();
        assert!(
            env.iter()
                .any(|e| e["name"] == "NAVARCH_LABELS" && e["value"] == "app=web,version=v1")
        );
        assert!(
            env.iter()
                .any(|e| e["name"] == "ISTIO_META_STATS_INCLUSION_PREFIXES")
        );
        let init = &out["spec"]["initContainers"][0];
        assert_eq!(init["name"], "istio-init");
        let args: Vec<&str> = init["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let flag = |f: &str| args[args.iter().position(|a| *a == f).unwrap() + 1];
        assert_eq!(args[0], "iptables");
        assert_eq!(flag("-p"), "15001");
        assert_eq!(flag("-z"), "15006");
        assert_eq!(flag("-u"), "1337");
        assert_eq!(flag("-o"), "5432");
        assert_eq!(flag("-i"), "10.0.0.0/8");
        assert_eq!(flag("-d"), "15090,15021,15020");
        assert_eq!(
            init["securityContext"]["capabilities"]["add"],
            json!(["NET_ADMIN", "NET_RAW"])
        );
        assert_eq!(out["spec"]["volumes"][0]["name"], "istio-envoy");
        let status: Value = serde_json::from_str(
            out["metadata"]["annotations"][STATUS_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(status["containers"], json!(["istio-proxy"]));
        assert_eq!(status["revision"], "default");
        for (section, key, want) in [
            (
                "annotations",
                "kubectl.kubernetes.io/default-container",
                "web",
            ),
            ("labels", "service.istio.io/canonical-name", "web"),
            ("labels", "service.istio.io/canonical-revision", "v1"),
            ("labels", "security.istio.io/tlsMode", "istio"),
        ] {
            assert_eq!(out["metadata"][section][key], want, "{section} {key}");
        }
        assert!(inject(&injector(""), &out).is_err(), "never twice");
    }

    #[test]
    fn a_pod_with_an_annotation_value_istiod_refuses_is_not_injected() {
        let bad = pod(
            json!({}),
            json!({"traffic.sidecar.istio.io/excludeOutboundPorts": "80,x",
                   "sidecar.istio.io/interceptionMode": "TPROXY"}),
        );
        let err = inject(&injector(""), &bad).unwrap_err().to_string();
        assert!(
            err.contains("invalid value '80,x' for annotation 'traffic.sidecar.istio.io/excludeOutboundPorts'"),
            "{err}"
        );
        assert!(
            !err.contains("interceptionMode"),
            "a good value is not named: {err}"
        );
        assert_eq!(
            validate_annotation("sidecar.istio.io/interceptionMode", "SOMETIMES"),
            Some(Err(
                "interceptionMode invalid, use REDIRECT,TPROXY,NONE: SOMETIMES".into()
            ))
        );
        assert_eq!(
            validate_annotation(
                "traffic.sidecar.istio.io/includeOutboundIPRanges",
                "10.0.0.0/8,*"
            ),
            Some(Err(
                "includeIPRanges invalid: failed parsing cidr '*'".into()
            ))
        );
        assert_eq!(
            validate_annotation("sidecar.istio.io/proxyImage", "x"),
            None
        );
    }

    #[test]
    fn the_init_containers_arguments_are_ones_navarch_iptables_takes() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: crate::iptables::IptablesArgs,
        }
        let p = pod(
            json!({"app": "web"}),
            json!({"traffic.sidecar.istio.io/excludeOutboundPorts": "5432,6379",
                "traffic.sidecar.istio.io/includeInboundPorts": "8080"}),
        );
        let out = inject(&injector(""), &p).unwrap();
        let argv: Vec<String> = out["spec"]["initContainers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert_eq!(argv[0], "iptables");
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let rules = crate::iptables::render(&cli.args).unwrap();
        assert!(rules.contains("--dport 5432 -j RETURN"), "{rules}");
        assert!(
            rules.contains("--dport 8080 -j ISTIO_IN_REDIRECT"),
            "{rules}"
        );
        assert!(rules.contains("REDIRECT --to-ports 15001"), "{rules}");
    }

    #[test]
    fn golden_kube_inject_of_the_seeds_deployments() {
        let yaml = include_str!("../testdata/inject/deployments.yaml");
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap();
        let i = injector("policy: enabled\ninjectedAnnotations: {example.com/injected: \"yes\"}\n");
        let mut out = Vec::new();
        for doc in &docs {
            let (injected, decisions) = inject_document(&i, doc).unwrap();
            out.push(json!({"decisions": format!("{decisions:?}"), "object": injected}));
        }
        insta::assert_yaml_snapshot!("kube_inject_deployments", out);
    }
}
