//! What `navarch operator init` installs: the IstioOperator CRD and the operator itself
//! (navarch running `navarch operator`) in its own namespace, watching IstioOperator
//! resources in the namespaces it is given. The reconcile loop is [`super::cluster`]'s
//! [`run_operator`](super::cluster::run_operator); this only renders objects.

use serde_json::{Value, json};

/// The operator's namespace and the name of its objects (istioctl's).
pub const NAMESPACE: &str = "istio-operator";
pub const NAME: &str = "istio-operator";
/// The port of its `/ready` and `/metrics`.
pub const PORT: u16 = 8383;
/// The label on every object `operator init` creates (what `operator remove` deletes).
pub const LABEL: (&str, &str) = ("operator.istio.io/component", "Operator");

/// The objects of the operator, for `watched` namespaces, with image `{hub}/navarch:{tag}`.
pub fn render(watched: &[String], hub: &str, tag: &str) -> Vec<Value> {
    let labels = json!({"app": NAME, LABEL.0: LABEL.1});
    let mut crd = super::istio_operator_crd();
    crd["metadata"]["labels"][LABEL.0] = LABEL.1.into();
    vec![
        crd,
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": labels}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels}}),
        // The operator applies RBAC, webhooks and CRDs for the installs it reconciles, so it
        // needs every verb on every kind it renders (istioctl's operator role is as broad).
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": NAME, "labels": labels},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"name": NAME}},
            "template": {
                "metadata": {"labels": {"name": NAME}},
                "spec": {
                    "serviceAccountName": NAME,
                    "containers": [{
                        "name": NAME,
                        "image": format!("{hub}/navarch:{tag}"),
                        "args": ["operator", "--watched-namespaces", watched.join(","),
                            "--addr", format!("0.0.0.0:{PORT}")],
                        "ports": [{"name": "http-metrics", "containerPort": PORT}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": PORT}},
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": false,
                            "runAsNonRoot": true, "runAsUser": 1337,
                            "capabilities": {"drop": ["ALL"]}},
                    }],
                },
            },
        }}),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
            "spec": {"ports": [{"name": "http-metrics", "port": PORT, "targetPort": PORT}],
                "selector": {"name": NAME}}}),
    ]
}
