//! The synthetic mesh of the load test: S services × P pods over N namespaces, each service
//! with a DestinationRule (subsets v1/v2) and a weighted VirtualService, optionally one
//! Sidecar per namespace limiting it to itself; the pod addresses and their churn.
//!
//! Owns names, addresses and the documents, as YAML files (for `--config-dir`) and as JSON
//! objects (for a real API server). Must not write anywhere or talk to a server: that is
//! `loadtest::cluster`'s and the orchestration's job. Pod addresses are 10.x: configuration
//! only, never a target of traffic (no Envoy forwards anything in the load test).

use serde_json::{Value, json};

/// The shape of a synthetic mesh.
#[derive(Debug, Clone, Copy)]
pub struct MeshShape {
    pub services: usize,
    pub pods_per_service: usize,
    pub namespaces: usize,
    pub sidecar_isolation: bool,
}

/// The node every synthetic pod is assigned to (nothing runs there).
pub const NODE: &str = "loadtest-node";

/// The port every synthetic service listens on.
pub const PORT: i32 = 8080;

pub fn namespace_of(i: usize, namespaces: usize) -> String {
    format!("ns-{}", i % namespaces)
}

pub fn service_name(i: usize) -> String {
    format!("svc-{i}")
}

pub fn pod_name(i: usize, p: usize) -> String {
    format!("svc-{i}-{p}")
}

/// Pod `pod` of service `service` at churn generation `generation` (only pod 0 churns).
pub fn pod_ip(service: usize, pod: usize, generation: usize) -> String {
    let n = service * 16 + pod;
    format!(
        "10.{}.{}.{}",
        (n / 250) % 250,
        n % 250,
        1 + (generation % 250)
    )
}

fn version_of(p: usize) -> &'static str {
    if p.is_multiple_of(2) { "v1" } else { "v2" }
}

/// One service's documents as YAML for a config directory: the Service, its Pods (endpoints
/// come from Pods in files), the DestinationRule and the VirtualService.
pub fn service_file(i: usize, shape: &MeshShape, weights: (u32, u32), generation: usize) -> String {
    let ns = namespace_of(i, shape.namespaces);
    let name = service_name(i);
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: {PORT}}}]\n"
    );
    for p in 0..shape.pods_per_service {
        let version = version_of(p);
        let ip = pod_ip(i, p, if p == 0 { generation } else { 0 });
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}-{p}, namespace: {ns}, labels: {{app: {name}, version: {version}}}}}\nstatus: {{phase: Running, podIP: {ip}}}\n"
        ));
    }
    for doc in [
        destination_rule(i, shape),
        virtual_service(i, shape, weights),
    ] {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&doc).expect("a document renders as YAML"));
    }
    out
}

/// The namespaces (and their Sidecars when isolated) as YAML.
pub fn namespaces_file(shape: &MeshShape) -> String {
    let mut out = String::new();
    for n in 0..shape.namespaces {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{n}}}\n"
        ));
        if shape.sidecar_isolation {
            out.push_str("---\n");
            out.push_str(
                &serde_saphyr::to_string(&sidecar(n)).expect("a document renders as YAML"),
            );
        }
    }
    out
}

/// The synthetic mesh as (file name, YAML) pairs: a namespaces file (with Sidecars when
/// isolated) and one file per service. Also used by the translation benchmark.
pub fn mesh_files(shape: &MeshShape) -> Vec<(String, String)> {
    let mut out = vec![("namespaces.yaml".to_string(), namespaces_file(shape))];
    for i in 0..shape.services {
        out.push((format!("svc-{i}.yaml"), service_file(i, shape, (90, 10), 0)));
    }
    out
}

/// The Sidecar of namespace `n`: egress to its own namespace only.
pub fn sidecar(n: usize) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": format!("ns-{n}")},
        "spec": {"egress": [{"hosts": ["./*"]}]},
    })
}

pub fn destination_rule(i: usize, shape: &MeshShape) -> Value {
    let name = service_name(i);
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": namespace_of(i, shape.namespaces)},
        "spec": {
            "host": name,
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}},
            ],
        },
    })
}

/// The `spec.http` of service `i`'s VirtualService: v1/v2 at `weights`.
pub fn http_routes(i: usize, weights: (u32, u32)) -> Value {
    let name = service_name(i);
    json!([{"route": [
        {"destination": {"host": name, "subset": "v1"}, "weight": weights.0},
        {"destination": {"host": name, "subset": "v2"}, "weight": weights.1},
    ]}])
}

pub fn virtual_service(i: usize, shape: &MeshShape, weights: (u32, u32)) -> Value {
    let name = service_name(i);
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace_of(i, shape.namespaces)},
        "spec": {"hosts": [name], "http": http_routes(i, weights)},
    })
}

/// Service `i` for an API server (the cluster IP is allocated by the server).
pub fn service(i: usize, shape: &MeshShape) -> Value {
    let name = service_name(i);
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace_of(i, shape.namespaces)},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}],
        },
    })
}

/// Pod `p` of service `i` for an API server (its status is set separately: see
/// [`pod_status`]). Assigned to [`NODE`]: nothing runs it.
pub fn pod(i: usize, p: usize, shape: &MeshShape) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name(i, p),
            "namespace": namespace_of(i, shape.namespaces),
            "labels": {"app": service_name(i), "version": version_of(p)},
        },
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "app", "image": "app", "ports": [{"containerPort": PORT}]}],
        },
    })
}

/// The status a kubelet would report for a running, ready pod at `ip`.
pub fn pod_status(ip: &str) -> Value {
    let now = "2026-01-01T00:00:00Z";
    json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": "10.255.0.1",
        "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ],
    }})
}

/// The endpoints of service `i`'s EndpointSlice, pod 0 at churn generation `generation`.
pub fn slice_endpoints(i: usize, shape: &MeshShape, generation: usize) -> Value {
    let ns = namespace_of(i, shape.namespaces);
    let endpoints: Vec<Value> = (0..shape.pods_per_service)
        .map(|p| {
            json!({
                "addresses": [pod_ip(i, p, if p == 0 { generation } else { 0 })],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "name": pod_name(i, p), "namespace": ns},
            })
        })
        .collect();
    Value::Array(endpoints)
}

/// Service `i`'s one EndpointSlice, written by the load test rather than the endpoint-slice
/// controller (whose managed-by label it does not carry, so the controller would leave it be).
pub fn endpoint_slice(i: usize, shape: &MeshShape) -> Value {
    let name = service_name(i);
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace_of(i, shape.namespaces),
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "navarch-loadtest",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}],
        "endpoints": slice_endpoints(i, shape, 0),
    })
}

/// The mesh config both control planes read from the `istio` ConfigMap: plain Envoy clients
/// have no certificates, so no automatic mTLS.
pub const MESH_CONFIG: &str = "enableAutoMtls: false\nrootNamespace: istio-system\n";

/// A root PeerAuthentication with mTLS off (istiod would otherwise configure mTLS on inbound).
pub fn peer_authentication() -> Value {
    json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "istio-system"},
        "spec": {"mtls": {"mode": "DISABLE"}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> MeshShape {
        MeshShape {
            services: 3,
            pods_per_service: 2,
            namespaces: 2,
            sidecar_isolation: true,
        }
    }

    #[test]
    fn churn_moves_only_pod_zero_and_addresses_stay_distinct() {
        let s = shape();
        let before = slice_endpoints(1, &s, 0);
        let after = slice_endpoints(1, &s, 7);
        assert_ne!(before[0]["addresses"], after[0]["addresses"]);
        assert_eq!(before[1]["addresses"], after[1]["addresses"]);
        let mut all = std::collections::BTreeSet::new();
        for i in 0..1000 {
            for p in 0..2 {
                assert!(all.insert(pod_ip(i, p, 0)), "{i}/{p} unique");
            }
        }
        assert!(all.iter().all(|ip| ip.starts_with("10.")));
        // The load test moves a pod to the next generation on every write: never a no-op.
        for g in 0..1000 {
            assert_ne!(pod_ip(3, 0, g), pod_ip(3, 0, g + 1), "generation {g}");
        }
    }

    #[test]
    fn files_and_objects_describe_the_same_service() {
        let s = shape();
        let file = service_file(2, &s, (90, 10), 0);
        let docs: Vec<Value> = serde_saphyr::from_multiple(&file).unwrap();
        assert_eq!(docs.len(), 5, "Service, 2 Pods, DR, VS: {file}");
        assert_eq!(docs[3], destination_rule(2, &s));
        assert_eq!(docs[4], virtual_service(2, &s, (90, 10)));
        assert_eq!(docs[0]["metadata"]["namespace"], "ns-0");
        assert_eq!(
            endpoint_slice(2, &s)["endpoints"][1]["addresses"][0],
            pod_ip(2, 1, 0)
        );
        let ns: Vec<Value> = serde_saphyr::from_multiple(&namespaces_file(&s)).unwrap();
        assert_eq!(ns.len(), 4, "2 namespaces and their Sidecars");
    }
}
