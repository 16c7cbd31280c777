//! The manifest of an install: every object `manifest generate` prints and `install` applies,
//! rendered from an [`InstallSpec`], in apply order: the CRDs and the namespace (Base), the
//! control plane (Pilot: ServiceAccount, RBAC, the `istio` and `istio-sidecar-injector`
//! ConfigMaps, the navarch Deployment, the `istiod` Service, PodDisruptionBudget, autoscaler,
//! the injection and validation webhooks), then each enabled gateway.
//!
//! Names are istiod's chart's (`istiod`, `istio-sidecar-injector`, `istio-validator-...`),
//! suffixed with `-<revision>` for a revisioned control plane. Every object carries the
//! [`super::labels`] prune and uninstall select on. Pure: no I/O.

use serde_json::{Map, Value, json};

use super::labels;
use super::spec::{Component, GatewayComponent, InstallSpec, K8sSettings};

/// The ports of the `istiod` Service: (name, port, target port).
pub const ISTIOD_SERVICE_PORTS: [(&str, u16, u16); 4] = [
    ("grpc-xds", 15010, 15010),
    ("https-dns", 15012, 15012),
    ("https-webhook", 443, 15017),
    ("http-monitoring", 15014, 15014),
];

/// The istioctl component an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ComponentName {
    Base,
    Pilot,
    IngressGateways,
    EgressGateways,
}

impl ComponentName {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentName::Base => "Base",
            ComponentName::Pilot => "Pilot",
            ComponentName::IngressGateways => "IngressGateways",
            ComponentName::EgressGateways => "EgressGateways",
        }
    }

    /// What `install` prints when the component is in place (istioctl's words).
    pub fn installed_line(self) -> &'static str {
        match self {
            ComponentName::Base => "Istio core installed",
            ComponentName::Pilot => "Istiod installed",
            ComponentName::IngressGateways => "Ingress gateways installed",
            ComponentName::EgressGateways => "Egress gateways installed",
        }
    }
}

/// The rendered install: each component's objects, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub components: Vec<(ComponentName, Vec<Value>)>,
}

impl Manifest {
    /// Every object, in apply order.
    pub fn objects(&self) -> impl Iterator<Item = &Value> {
        self.components.iter().flat_map(|(_, objs)| objs.iter())
    }

    /// The manifest as one multi-document YAML stream, as `manifest generate` prints it.
    pub fn to_yaml(&self) -> String {
        self.objects()
            .map(|o| serde_saphyr::to_string(o).expect("an object renders as YAML"))
            .collect::<Vec<_>>()
            .join("---\n")
    }
}

/// Renders the manifest of `spec`.
pub fn render(spec: &InstallSpec) -> Manifest {
    let mut components = Vec::new();
    if spec.components.base.enabled {
        components.push((ComponentName::Base, base(spec)));
    }
    if spec.components.pilot.enabled {
        components.push((ComponentName::Pilot, pilot(spec, &spec.components.pilot)));
    }
    for (name, gateways, ingress) in [
        (
            ComponentName::IngressGateways,
            &spec.components.ingress_gateways,
            true,
        ),
        (
            ComponentName::EgressGateways,
            &spec.components.egress_gateways,
            false,
        ),
    ] {
        let objects: Vec<Value> = gateways
            .iter()
            .filter(|g| g.enabled)
            .flat_map(|g| gateway(spec, g, name, ingress))
            .collect();
        if !objects.is_empty() {
            components.push((name, objects));
        }
    }
    Manifest { components }
}

/// The labels every object of `component` carries. Base objects (CRDs, the namespace) are
/// shared by every revision, so they carry no `istio.io/rev`.
fn install_labels(spec: &InstallSpec, component: ComponentName) -> Map<String, Value> {
    let mut l = Map::new();
    l.insert(labels::COMPONENT.into(), component.as_str().into());
    l.insert(labels::OWNING_RESOURCE.into(), spec.owner.clone().into());
    l.insert(
        labels::OWNING_RESOURCE_NAMESPACE.into(),
        spec.owner_namespace.clone().into(),
    );
    l.insert(labels::MANAGED.into(), "Reconcile".into());
    l.insert(labels::VERSION.into(), env!("CARGO_PKG_VERSION").into());
    if component != ComponentName::Base {
        l.insert(labels::REVISION.into(), spec.revision_label().into());
    }
    l
}

/// Adds `extra` and the install labels to `obj.metadata.labels`.
fn labelled(mut obj: Value, spec: &InstallSpec, component: ComponentName) -> Value {
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("every rendered object has metadata");
    let labels = meta
        .entry("labels")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("labels are a map");
    for (k, v) in install_labels(spec, component) {
        labels.entry(k).or_insert(v);
    }
    obj
}

fn base(spec: &InstallSpec) -> Vec<Value> {
    let mut objects: Vec<Value> = super::istio_crds()
        .into_iter()
        .map(|crd| labelled(crd, spec, ComponentName::Base))
        .collect();
    objects.push(labelled(
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": spec.namespace},
        }),
        spec,
        ComponentName::Base,
    ));
    objects
}

fn image(spec: &InstallSpec) -> String {
    format!("{}/navarch:{}", spec.hub, spec.tag)
}

/// The labels the control plane's pods carry and its Service selects.
fn istiod_selector(spec: &InstallSpec) -> Value {
    json!({"app": "istiod", labels::REVISION: spec.revision_label()})
}

fn pilot(spec: &InstallSpec, component: &Component) -> Vec<Value> {
    let ns = &spec.namespace;
    let name = spec.revisioned("istiod");
    let cluster_role = format!("{}-{ns}", spec.revisioned("istiod-clusterrole"));
    let pilot_labels =
        json!({"app": "istiod", "istio": "pilot", labels::REVISION: spec.revision_label()});
    let sa = json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "istiod"}},
    });
    let get_list_watch = json!(["get", "list", "watch"]);
    let cluster_role_obj = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": cluster_role, "labels": {"app": "istiod"}},
        "rules": [
            {"apiGroups": [""], "resources": ["namespaces", "services", "endpoints", "pods",
                "nodes", "configmaps", "secrets"], "verbs": get_list_watch},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                "verbs": get_list_watch},
            {"apiGroups": ["networking.istio.io", "security.istio.io", "telemetry.istio.io",
                "extensions.istio.io"], "resources": ["*"], "verbs": get_list_watch},
            {"apiGroups": ["networking.istio.io", "security.istio.io", "telemetry.istio.io",
                "extensions.istio.io"], "resources": ["*/status"],
                "verbs": ["get", "update", "patch"]},
            {"apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["mutatingwebhookconfigurations",
                    "validatingwebhookconfigurations"],
                "verbs": ["get", "list", "watch", "update", "patch"]},
            {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                "verbs": get_list_watch},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
                "verbs": ["create"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"],
                "verbs": ["create"]},
        ],
    });
    let subjects = json!([{"kind": "ServiceAccount", "name": name, "namespace": ns}]);
    let cluster_binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": cluster_role, "labels": {"app": "istiod"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
            "name": cluster_role},
        "subjects": subjects,
    });
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "istiod"}},
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps", "secrets"],
                "verbs": ["create", "get", "list", "watch", "update", "delete"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
        ],
    });
    let role_binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "istiod"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": subjects,
    });
    let mesh = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": spec.revisioned("istio"), "namespace": ns,
            "labels": {"istio.io/config": "true"}},
        "data": {"mesh": spec.mesh_yaml(), "meshNetworks": "networks: {}"},
    });
    let injector = injector_config_map(spec);
    let deployment = istiod_deployment(spec, component, &name, &pilot_labels);
    let ports: Vec<Value> = ISTIOD_SERVICE_PORTS
        .iter()
        .map(|(n, p, t)| json!({"name": n, "port": p, "targetPort": t, "protocol": "TCP"}))
        .collect();
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": pilot_labels},
        "spec": {"ports": ports, "selector": istiod_selector(spec)},
    });
    let mut objects = vec![
        sa,
        cluster_role_obj,
        cluster_binding,
        role,
        role_binding,
        mesh,
        injector,
        deployment,
        service,
    ];
    if pdb_enabled(spec) {
        objects.push(pdb(&name, ns, &istiod_selector(spec), &component.k8s));
    }
    if autoscale(spec, "pilot", &component.k8s) {
        objects.push(hpa(spec, &name, ns, &component.k8s));
    }
    objects.push(injection_webhook(spec));
    objects.extend(validation_webhooks(spec));
    objects
        .into_iter()
        .map(|o| labelled(o, spec, ComponentName::Pilot))
        .collect()
}

/// `values.<key>.autoscaleEnabled` (default on), and a `k8s.hpaSpec` to size it.
fn autoscale(spec: &InstallSpec, key: &str, k8s: &K8sSettings) -> bool {
    spec.value(&format!("{key}.autoscaleEnabled")) != Some(&Value::Bool(false))
        && k8s.hpa_spec.is_some()
}

fn injector_config_map(spec: &InstallSpec) -> Value {
    let webhook = |key: &str, default: Value| {
        spec.value(&format!("sidecarInjectorWebhook.{key}"))
            .cloned()
            .unwrap_or(default)
    };
    let policy = spec
        .value("global.proxy.autoInject")
        .and_then(Value::as_str)
        .unwrap_or("enabled");
    let mut default_templates = webhook("defaultTemplates", json!([]));
    if default_templates.as_array().is_none_or(Vec::is_empty) {
        default_templates = json!(["sidecar"]);
    }
    let config = json!({
        "policy": policy,
        "alwaysInjectSelector": webhook("alwaysInjectSelector", json!([])),
        "neverInjectSelector": webhook("neverInjectSelector", json!([])),
        "injectedAnnotations": webhook("injectedAnnotations", json!({})),
        "defaultTemplates": default_templates,
    });
    // The injected containers' image comes from `global.hub`/`global.tag`, as in istiod's
    // chart; the spec's hub and tag fill them when the values do not say.
    let mut values = spec.values.clone();
    if !values.is_object() {
        values = json!({});
    }
    for (key, value) in [("hub", &spec.hub), ("tag", &spec.tag)] {
        if values["global"][key].is_null() {
            values["global"][key] = value.clone().into();
        }
    }
    let values = serde_json::to_string_pretty(&values).unwrap_or_else(|_| "{}".into());
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": spec.revisioned("istio-sidecar-injector"),
            "namespace": spec.namespace},
        "data": {
            "config": serde_saphyr::to_string(&config).unwrap_or_default(),
            "values": values,
        },
    })
}

/// `k8s` settings that apply to any pod template: resources, env, scheduling, annotations.
fn apply_k8s(container: &mut Value, pod: &mut Value, k8s: &K8sSettings) {
    if let Some(r) = &k8s.resources {
        container["resources"] = r.clone();
    }
    if !k8s.env.is_empty()
        && let Some(env) = container["env"].as_array_mut()
    {
        for item in &k8s.env {
            env.retain(|e| e["name"] != item["name"]);
            env.push(item.clone());
        }
    }
    if let Some(p) = &k8s.readiness_probe {
        container["readinessProbe"] = p.clone();
    }
    if let Some(p) = &k8s.image_pull_policy {
        container["imagePullPolicy"] = p.clone().into();
    }
    for (key, value) in [
        ("nodeSelector", &k8s.node_selector),
        ("affinity", &k8s.affinity),
        ("tolerations", &k8s.tolerations),
        ("securityContext", &k8s.security_context),
    ] {
        if let Some(v) = value {
            pod["spec"][key] = v.clone();
        }
    }
    if let Some(p) = &k8s.priority_class_name {
        pod["spec"]["priorityClassName"] = p.clone().into();
    }
    for (k, v) in &k8s.pod_annotations {
        pod["metadata"]["annotations"][k] = v.clone().into();
    }
}

fn istiod_deployment(
    spec: &InstallSpec,
    component: &Component,
    name: &str,
    pod_labels: &Value,
) -> Value {
    let ns = &spec.namespace;
    let log_level = spec
        .value("global.logging.level")
        .and_then(Value::as_str)
        .map(log_filter)
        .unwrap_or_else(|| "info".into());
    let mut args = vec![
        "discovery".to_string(),
        "--system-namespace".into(),
        ns.clone(),
        "--log".into(),
        log_level,
    ];
    if !spec.revision.is_empty() {
        args.extend(["--revision".into(), spec.revision.clone()]);
    }
    let mut env = vec![
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "POD_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
        json!({"name": "REVISION", "value": spec.revision_label()}),
    ];
    if let Some(Value::Object(extra)) = spec.value("pilot.env") {
        for (k, v) in extra {
            let value = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            env.push(json!({"name": k, "value": value}));
        }
    }
    let mut container = json!({
        "name": "discovery",
        "image": image(spec),
        "imagePullPolicy": pull_policy(spec),
        "args": args,
        "ports": [
            {"name": "http-debug", "containerPort": 8080, "protocol": "TCP"},
            {"name": "grpc-xds", "containerPort": 15010, "protocol": "TCP"},
            {"name": "tls-xds", "containerPort": 15012, "protocol": "TCP"},
            {"name": "https-webhooks", "containerPort": 15017, "protocol": "TCP"},
            {"name": "http-monitoring", "containerPort": 15014, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": 8080},
            "initialDelaySeconds": 1, "periodSeconds": 3, "timeoutSeconds": 5,
        },
        "env": env,
        "securityContext": {
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337,
            "capabilities": {"drop": ["ALL"]},
        },
    });
    if let Some(r) = spec.value("pilot.resources") {
        container["resources"] = r.clone();
    }
    let workload = Workload {
        name,
        labels: pod_labels,
        selector: &istiod_selector(spec),
        service_account: name,
        values_key: "pilot",
        k8s: &component.k8s,
    };
    workload.deployment(spec, ns, container)
}

/// What the control plane's and each gateway's Deployment have in common.
struct Workload<'a> {
    name: &'a str,
    /// The Deployment's and its pods' labels.
    labels: &'a Value,
    /// What the Deployment (and the Service, PDB, anti-affinity) select.
    selector: &'a Value,
    service_account: &'a str,
    /// Where its replica count and autoscaling live in `values` (`pilot`, `gateways.<name>`).
    values_key: &'a str,
    k8s: &'a K8sSettings,
}

impl Workload<'_> {
    /// The Deployment running `container`: pods opted out of injection and spread across
    /// nodes, the `k8s` settings applied, istiod's chart's rollout strategy, and `replicas`
    /// unless an autoscaler owns the count.
    fn deployment(&self, spec: &InstallSpec, ns: &str, mut container: Value) -> Value {
        let mut pod = json!({
            "metadata": {"labels": no_injection(self.labels)},
            "spec": {
                "serviceAccountName": self.service_account,
                "affinity": anti_affinity(self.selector),
            },
        });
        apply_k8s(&mut container, &mut pod, self.k8s);
        pod["spec"]["containers"] = json!([container]);
        let mut deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": self.name, "namespace": ns, "labels": self.labels},
            "spec": {
                "selector": {"matchLabels": self.selector},
                "strategy": self.k8s.strategy.clone().unwrap_or_else(|| json!({
                    "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"},
                })),
                "template": pod,
            },
        });
        set_replicas(&mut deployment, spec, self.values_key, self.k8s);
        deployment
    }
}

/// `global.imagePullPolicy`, else `IfNotPresent`.
fn pull_policy(spec: &InstallSpec) -> Value {
    spec.value("global.imagePullPolicy")
        .cloned()
        .unwrap_or_else(|| "IfNotPresent".into())
}

/// Whether PodDisruptionBudgets are rendered (`global.defaultPodDisruptionBudget.enabled`,
/// on unless set false).
fn pdb_enabled(spec: &InstallSpec) -> bool {
    spec.value("global.defaultPodDisruptionBudget.enabled") != Some(&Value::Bool(false))
}

/// A control plane or gateway pod's labels: the given ones, and the opt-out of injection
/// (they run their own Envoy, or none), which every injection webhook honours.
fn no_injection(labels: &Value) -> Value {
    let mut labels = labels.clone();
    labels["sidecar.istio.io/inject"] = "false".into();
    labels
}

/// `replicas` unless an autoscaler owns the count (as istiod's chart does).
fn set_replicas(deployment: &mut Value, spec: &InstallSpec, key: &str, k8s: &K8sSettings) {
    if autoscale(spec, key, k8s) {
        return;
    }
    let replicas = k8s
        .replica_count
        .map(Value::from)
        .or_else(|| spec.value(&format!("{key}.replicaCount")).cloned())
        .unwrap_or_else(|| 1.into());
    deployment["spec"]["replicas"] = replicas;
}

/// Istio's `default:info` / `ads:debug,default:warn` scopes as our tracing filter: the
/// `default` scope sets the level; other scopes have no navarch equivalent and are dropped.
fn log_filter(level: &str) -> String {
    level
        .split(',')
        .find_map(|s| {
            let (scope, lvl) = s.split_once(':').unwrap_or(("default", s));
            (scope.trim() == "default").then(|| match lvl.trim() {
                "none" => "off".to_string(),
                "fatal" => "error".to_string(),
                other => other.to_string(),
            })
        })
        .unwrap_or_else(|| "info".into())
}

fn anti_affinity(selector: &Value) -> Value {
    json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100,
        "podAffinityTerm": {
            "labelSelector": {"matchLabels": selector},
            "topologyKey": "kubernetes.io/hostname",
        },
    }]}})
}

fn pdb(name: &str, ns: &str, selector: &Value, k8s: &K8sSettings) -> Value {
    let mut spec = json!({"selector": {"matchLabels": selector}});
    match &k8s.pod_disruption_budget {
        Some(Value::Object(custom)) => {
            for (k, v) in custom {
                spec[k] = v.clone();
            }
        }
        _ => spec["minAvailable"] = 1.into(),
    }
    json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}

fn hpa(spec: &InstallSpec, name: &str, ns: &str, k8s: &K8sSettings) -> Value {
    let hpa = k8s.hpa_spec.clone().unwrap_or_default();
    let utilization = spec
        .value("pilot.cpu.targetAverageUtilization")
        .cloned()
        .unwrap_or_else(|| 80.into());
    let metrics = hpa.metrics.unwrap_or_else(|| {
        json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": utilization}}}])
    });
    json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": hpa.min_replicas.unwrap_or(1),
            "maxReplicas": hpa.max_replicas.unwrap_or(5),
            "metrics": metrics,
        },
    })
}

/// A label selector expression.
fn expr(key: &str, operator: &str, values: &[&str]) -> Value {
    if values.is_empty() {
        json!({"key": key, "operator": operator})
    } else {
        json!({"key": key, "operator": operator, "values": values})
    }
}

/// One injection webhook entry (istiod's chart: CREATE of Pods, `/inject` on the revision's
/// Service, failing closed).
pub fn injection_webhook_entry(
    name: &str,
    service: &str,
    namespace: &str,
    namespace_selector: Vec<Value>,
    object_selector: Vec<Value>,
    reinvocation: &str,
) -> Value {
    json!({
        "name": name,
        "clientConfig": {"service": {"name": service, "namespace": namespace,
            "path": "/inject", "port": 443}},
        "sideEffects": "None",
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
            "resources": ["pods"]}],
        "failurePolicy": "Fail",
        "reinvocationPolicy": reinvocation,
        "admissionReviewVersions": ["v1"],
        "namespaceSelector": {"matchExpressions": namespace_selector},
        "objectSelector": {"matchExpressions": object_selector},
    })
}

/// The four webhooks of the default revision (or of the `default` tag): by `istio.io/rev=rev`
/// on the namespace or the pod, by `istio-injection=enabled` on the namespace, and by
/// `sidecar.istio.io/inject=true` on a pod in an unlabelled namespace. A pod labelled
/// `sidecar.istio.io/inject=false` is never injected.
pub fn default_webhooks(
    service: &str,
    namespace: &str,
    rev: &str,
    reinvocation: &str,
) -> Vec<Value> {
    let not_false = expr("sidecar.istio.io/inject", "NotIn", &["false"]);
    vec![
        injection_webhook_entry(
            "rev.namespace.sidecar-injector.istio.io",
            service,
            namespace,
            vec![
                expr(labels::REVISION, "In", &[rev]),
                expr("istio-injection", "DoesNotExist", &[]),
            ],
            vec![not_false.clone()],
            reinvocation,
        ),
        injection_webhook_entry(
            "rev.object.sidecar-injector.istio.io",
            service,
            namespace,
            vec![
                expr(labels::REVISION, "DoesNotExist", &[]),
                expr("istio-injection", "DoesNotExist", &[]),
            ],
            vec![not_false.clone(), expr(labels::REVISION, "In", &[rev])],
            reinvocation,
        ),
        injection_webhook_entry(
            "namespace.sidecar-injector.istio.io",
            service,
            namespace,
            vec![expr("istio-injection", "In", &["enabled"])],
            vec![not_false],
            reinvocation,
        ),
        injection_webhook_entry(
            "object.sidecar-injector.istio.io",
            service,
            namespace,
            vec![
                expr("istio-injection", "DoesNotExist", &[]),
                expr(labels::REVISION, "DoesNotExist", &[]),
            ],
            vec![
                expr("sidecar.istio.io/inject", "In", &["true"]),
                expr(labels::REVISION, "DoesNotExist", &[]),
            ],
            reinvocation,
        ),
    ]
}

/// The two webhooks of a named revision (or tag): `istio.io/rev=rev` on the namespace, or on
/// the pod in a namespace without an injection label.
pub fn revision_webhooks(
    service: &str,
    namespace: &str,
    rev: &str,
    reinvocation: &str,
) -> Vec<Value> {
    let all = default_webhooks(service, namespace, rev, reinvocation);
    all.into_iter().take(2).collect()
}

fn injection_webhook(spec: &InstallSpec) -> Value {
    let service = spec.revisioned("istiod");
    let reinvocation = spec
        .value("sidecarInjectorWebhook.reinvocationPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Never");
    let webhooks = if spec.revision.is_empty() {
        default_webhooks(&service, &spec.namespace, "default", reinvocation)
    } else {
        revision_webhooks(&service, &spec.namespace, &spec.revision, reinvocation)
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": spec.revisioned("istio-sidecar-injector"),
            "labels": {"app": "sidecar-injector"}},
        "webhooks": webhooks,
    })
}

/// The API groups whose objects the validation webhook checks.
pub const VALIDATED_GROUPS: [&str; 4] = [
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
    "extensions.istio.io",
];

/// A validating webhook config for objects labelled `istio.io/rev` as `object_selector` says,
/// sent to `service`'s `/validate`. It fails open (`Ignore`), as istiod's chart installs it.
pub fn validating_webhook(
    name: &str,
    service: &str,
    namespace: &str,
    object_selector: Vec<Value>,
) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app": "istiod"}},
        "webhooks": [{
            "name": "rev.validation.istio.io",
            "clientConfig": {"service": {"name": service, "namespace": namespace,
                "path": "/validate", "port": 443}},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": VALIDATED_GROUPS,
                "apiVersions": ["*"], "resources": ["*"]}],
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "objectSelector": {"matchExpressions": object_selector},
        }],
    })
}

/// The revision's validator (objects labelled with its revision) and, for the default
/// revision, `istiod-default-validator` for objects without a revision label.
fn validation_webhooks(spec: &InstallSpec) -> Vec<Value> {
    let service = spec.revisioned("istiod");
    let ns = &spec.namespace;
    let mut hooks = vec![validating_webhook(
        &format!("{}-{ns}", spec.revisioned("istio-validator")),
        &service,
        ns,
        vec![expr(labels::REVISION, "In", &[spec.revision_label()])],
    )];
    if spec.revision.is_empty() {
        hooks.push(validating_webhook(
            "istiod-default-validator",
            &service,
            ns,
            vec![expr(labels::REVISION, "DoesNotExist", &[])],
        ));
    }
    hooks
}

fn gateway(
    spec: &InstallSpec,
    gw: &GatewayComponent,
    component: ComponentName,
    ingress: bool,
) -> Vec<Value> {
    let ns = if gw.namespace.is_empty() {
        &spec.namespace
    } else {
        &gw.namespace
    };
    let name = &gw.name;
    let sa = format!("{name}-service-account");
    let selector = Value::Object(
        gw.label
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    );
    let mut pod_labels = selector.clone();
    pod_labels[labels::REVISION] = spec.revision_label().into();
    let labels_arg = gw
        .label
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let service_account = json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": sa, "namespace": ns, "labels": selector},
    });
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": format!("{name}-sds"), "namespace": ns, "labels": selector},
        "rules": [{"apiGroups": [""], "resources": ["secrets"],
            "verbs": ["get", "watch", "list"]}],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("{name}-sds"), "namespace": ns, "labels": selector},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
            "name": format!("{name}-sds")},
        "subjects": [{"kind": "ServiceAccount", "name": sa}],
    });
    let xds = spec.xds_address();
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let service_ports = gw
        .k8s
        .service
        .as_ref()
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let container_ports: Vec<Value> = service_ports
        .iter()
        .filter_map(|p| {
            let target = p.get("targetPort").or_else(|| p.get("port"))?;
            Some(json!({"containerPort": target, "protocol": "TCP"}))
        })
        .chain([json!({"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"})])
        .collect();
    let container = json!({
        "name": "istio-proxy",
        "image": image(spec),
        "imagePullPolicy": pull_policy(spec),
        "args": ["agent", "--type", "router", "--xds-address", xds, "--admin-port", "15000",
            "--interception-mode", "NONE", "--", "--disable-hot-restart",
            "--log-level", "warning"],
        "env": [
            {"name": "NAVARCH_IP", "valueFrom": field("status.podIP")},
            {"name": "NAVARCH_POD", "valueFrom": field("metadata.name")},
            {"name": "NAVARCH_NAMESPACE", "valueFrom": field("metadata.namespace")},
            {"name": "NAVARCH_LABELS", "value": labels_arg},
        ],
        "ports": container_ports,
        "securityContext": {
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": false,
            "runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337,
            "capabilities": {"drop": ["ALL"]},
        },
    });
    let values_key = format!("gateways.{name}");
    let workload = Workload {
        name,
        labels: &pod_labels,
        selector: &selector,
        service_account: &sa,
        values_key: &values_key,
        k8s: &gw.k8s,
    };
    let deployment = workload.deployment(spec, ns, container);
    let service_type = gw
        .k8s
        .service
        .as_ref()
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or(if ingress { "LoadBalancer" } else { "ClusterIP" });
    let mut service_spec = gw.k8s.service.clone().unwrap_or_else(|| json!({}));
    service_spec["type"] = service_type.into();
    service_spec["selector"] = selector.clone();
    let mut service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": pod_labels},
        "spec": service_spec,
    });
    for (k, v) in &gw.k8s.service_annotations {
        service["metadata"]["annotations"][k] = v.clone().into();
    }
    let mut objects = vec![service_account, role, binding, deployment, service];
    if pdb_enabled(spec) {
        objects.push(pdb(name, ns, &selector, &gw.k8s));
    }
    if autoscale(spec, &values_key, &gw.k8s) {
        objects.push(hpa(spec, name, ns, &gw.k8s));
    }
    objects
        .into_iter()
        .map(|o| labelled(o, spec, component))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::install::spec::{self, Source};
    use crate::model::mesh::LabelSelector;

    fn spec_of(sets: &[&str]) -> InstallSpec {
        let sources: Vec<Source> = sets.iter().map(|s| Source::Set(s)).collect();
        spec::build(&sources).unwrap()
    }

    /// The names of `config`'s webhooks that a pod with `pod` labels in a namespace with
    /// `ns` labels is sent to (the API server's selector rules).
    pub(crate) fn selected_by(
        config: &Value,
        ns: &[(&str, &str)],
        pod: &[(&str, &str)],
    ) -> Vec<String> {
        let map = |l: &[(&str, &str)]| -> BTreeMap<String, String> {
            l.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let sel = |v: &Value| -> LabelSelector { serde_json::from_value(v.clone()).unwrap() };
        config["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| {
                sel(&h["namespaceSelector"]).matches(&map(ns))
                    && sel(&h["objectSelector"]).matches(&map(pod))
            })
            .map(|h| h["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn find<'a>(m: &'a Manifest, kind: &str, name: &str) -> &'a Value {
        m.objects()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    #[test]
    fn golden_manifest_of_each_profile() {
        for profile in spec::PROFILES {
            let yaml = render(&spec_of(&[&format!("profile={profile}")])).to_yaml();
            insta::assert_snapshot!(format!("manifest_{profile}"), yaml);
        }
    }

    #[test]
    fn the_default_install_has_istiods_objects_in_apply_order() {
        let m = render(&spec_of(&[]));
        let kinds: Vec<&str> = m.objects().map(|o| o["kind"].as_str().unwrap()).collect();
        let first = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
        assert!(first("CustomResourceDefinition") < first("Namespace"));
        assert!(first("Namespace") < first("ServiceAccount"));
        assert!(
            first("ConfigMap") < first("Deployment"),
            "config before the pods that read it"
        );
        let service = find(&m, "Service", "istiod");
        let ports: Vec<(u64, u64)> = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["port"].as_u64().unwrap(),
                    p["targetPort"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [(15010, 15010), (15012, 15012), (443, 15017), (15014, 15014)]
        );
        let deployment = find(&m, "Deployment", "istiod");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(container["args"][0], "discovery");
        assert_eq!(
            container["image"],
            format!("navarch/navarch:{}", env!("CARGO_PKG_VERSION"))
        );
        assert!(
            deployment["spec"]["replicas"].is_null(),
            "the autoscaler owns the count"
        );
        find(&m, "HorizontalPodAutoscaler", "istiod");
        find(&m, "PodDisruptionBudget", "istiod");
        find(&m, "ConfigMap", "istio");
        find(&m, "ConfigMap", "istio-sidecar-injector");
        find(
            &m,
            "ValidatingWebhookConfiguration",
            "istio-validator-istio-system",
        );
        find(&m, "Deployment", "istio-ingressgateway");
        assert!(
            !m.objects()
                .any(|o| o["metadata"]["name"] == "istio-egressgateway"),
            "the default profile has no egress gateway"
        );
        for obj in m.objects() {
            let l = &obj["metadata"]["labels"];
            assert!(
                l[crate::install::labels::COMPONENT].is_string(),
                "{}",
                obj["metadata"]
            );
            let shared = matches!(
                obj["kind"].as_str(),
                Some("CustomResourceDefinition" | "Namespace")
            );
            assert_eq!(
                l[crate::install::labels::REVISION].is_null(),
                shared,
                "{}",
                obj["metadata"]
            );
        }
    }

    #[test]
    fn the_injection_webhook_selects_the_label_namespaces_and_honours_the_pod_opt_out() {
        let m = render(&spec_of(&[]));
        let mwc = find(&m, "MutatingWebhookConfiguration", "istio-sidecar-injector");
        assert_eq!(
            selected_by(mwc, &[("istio-injection", "enabled")], &[("app", "web")]),
            ["namespace.sidecar-injector.istio.io"]
        );
        assert!(
            selected_by(
                mwc,
                &[("istio-injection", "enabled")],
                &[("sidecar.istio.io/inject", "false")]
            )
            .is_empty()
        );
        assert!(selected_by(mwc, &[("istio-injection", "disabled")], &[]).is_empty());
        assert_eq!(
            selected_by(mwc, &[], &[("sidecar.istio.io/inject", "true")]),
            ["object.sidecar-injector.istio.io"]
        );
        assert!(selected_by(mwc, &[("istio.io/rev", "canary")], &[]).is_empty());
        for hook in mwc["webhooks"].as_array().unwrap() {
            assert_eq!(hook["clientConfig"]["service"]["name"], "istiod");
            assert_eq!(hook["clientConfig"]["service"]["path"], "/inject");
        }
    }

    #[test]
    fn a_revision_names_its_objects_and_selects_only_its_namespaces() {
        let m = render(&spec_of(&["revision=canary", "profile=minimal"]));
        for (kind, name) in [
            ("Deployment", "istiod-canary"),
            ("Service", "istiod-canary"),
            ("ConfigMap", "istio-canary"),
            ("ConfigMap", "istio-sidecar-injector-canary"),
            (
                "MutatingWebhookConfiguration",
                "istio-sidecar-injector-canary",
            ),
            (
                "ValidatingWebhookConfiguration",
                "istio-validator-canary-istio-system",
            ),
            ("ClusterRole", "istiod-clusterrole-canary-istio-system"),
        ] {
            let obj = find(&m, kind, name);
            assert_eq!(
                obj["metadata"]["labels"]["istio.io/rev"], "canary",
                "{kind} {name}"
            );
        }
        assert!(
            !m.objects()
                .any(|o| o["metadata"]["name"] == "istiod-default-validator"),
            "only the default revision validates unlabelled objects"
        );
        let mwc = find(
            &m,
            "MutatingWebhookConfiguration",
            "istio-sidecar-injector-canary",
        );
        assert_eq!(
            selected_by(mwc, &[("istio.io/rev", "canary")], &[]),
            ["rev.namespace.sidecar-injector.istio.io"]
        );
        assert!(selected_by(mwc, &[("istio-injection", "enabled")], &[]).is_empty());
        let args = &find(&m, "Deployment", "istiod-canary")["spec"]["template"]["spec"]["containers"]
            [0]["args"];
        assert!(
            args.as_array()
                .unwrap()
                .windows(2)
                .any(|w| w[0] == "--revision" && w[1] == "canary")
        );
    }

    #[test]
    fn set_values_reach_the_objects_that_use_them() {
        let m = render(&spec_of(&[
            "meshConfig.accessLogFile=/dev/stdout",
            "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
            "hub=mirror.invalid/mesh",
            "tag=1.2.3",
            "components.pilot.k8s.replicaCount=2",
            "values.pilot.autoscaleEnabled=false",
            "values.pilot.env.PILOT_ENABLE_X=true",
            "components.egressGateways[name:istio-egressgateway].enabled=true",
        ]));
        let mesh = find(&m, "ConfigMap", "istio")["data"]["mesh"]
            .as_str()
            .unwrap()
            .to_string();
        let mesh = crate::model::mesh::MeshConfig::from_yaml(&mesh).unwrap();
        assert_eq!(mesh.access_log_file, "/dev/stdout");
        let istiod = find(&m, "Deployment", "istiod");
        assert_eq!(istiod["spec"]["replicas"], 2);
        let container = &istiod["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "mirror.invalid/mesh/navarch:1.2.3");
        assert!(
            container["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "PILOT_ENABLE_X" && e["value"] == "true")
        );
        assert!(
            !m.objects().any(
                |o| o["kind"] == "HorizontalPodAutoscaler" && o["metadata"]["name"] == "istiod"
            ),
            "autoscaling off: no HPA"
        );
        let egress = find(&m, "Deployment", "istio-egressgateway");
        assert_eq!(egress["metadata"]["labels"]["istio"], "egressgateway");
        assert_eq!(
            find(&m, "Service", "istio-egressgateway")["spec"]["type"],
            "ClusterIP"
        );
        assert_eq!(
            find(&m, "Service", "istio-ingressgateway")["spec"]["type"],
            "LoadBalancer"
        );
        let gw_args = &egress["spec"]["template"]["spec"]["containers"][0]["args"];
        assert!(
            gw_args
                .as_array()
                .unwrap()
                .contains(&json!("istiod.istio-system.svc:15010"))
        );
    }

    #[test]
    fn every_profile_passes_the_schema_it_enforces_on_files() {
        for profile in spec::PROFILES {
            let mut doc =
                json!({"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator"});
            doc["spec"] = spec::profile_tree(profile).unwrap();
            spec::build(&[Source::Object {
                origin: profile,
                doc: &doc,
            }])
            .unwrap_or_else(|e| panic!("{profile}: {e}"));
        }
    }
}
