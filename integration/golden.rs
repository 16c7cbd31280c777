//! Golden translations: every field translate emits, for fixed inputs, kept as insta
//! snapshots (integration/snapshots/), and each one fed to `envoy --mode validate` as a static
//! bootstrap so no snapshot can hold config Envoy would reject.

use std::path::{Path, PathBuf};

use navarch::model::mesh::MeshConfig;
use navarch::model::proxy::Proxy;
use navarch::model::push_context::PushContext;
use navarch::translate::{self, ResourceType};
use serde_json::{Value, json};

fn proxy(id: &str, mode: &str, labels: Value) -> Proxy {
    let meta = json!({"INTERCEPTION_MODE": mode, "LABELS": labels, "ISTIO_VERSION": "1.24.0"});
    Proxy::from_node(id, meta.as_object().unwrap()).unwrap()
}

fn load(dir: &str, mesh: Option<&str>) -> PushContext {
    let mesh = mesh.map(|m| MeshConfig::from_yaml(m).unwrap());
    let store =
        navarch::sources::files::load_store(&[PathBuf::from(dir)], "istio-system", mesh.as_ref())
            .unwrap();
    assert!(
        store.errors.is_empty(),
        "golden inputs are valid: {:#?}",
        store.errors
    );
    PushContext::new(store)
}

/// All four types for `proxy`, as Envoy JSON.
pub(crate) fn translate_all(proxy: &Proxy, push: &PushContext) -> Value {
    let render = |kind: ResourceType| -> Vec<Value> {
        translate::generate(kind, proxy, push, None)
            .iter()
            .map(|r| navarch::protojson::any_to_json(&r.resource).unwrap())
            .collect()
    };
    let mut out = json!({
        "clusters": render(ResourceType::Cluster),
        "endpoints": render(ResourceType::Endpoint),
        "listeners": render(ResourceType::Listener),
        "routes": render(ResourceType::Route),
    });
    let secrets = render(ResourceType::Secret);
    if !secrets.is_empty() {
        out["secrets"] = json!(secrets);
    }
    out
}

/// SDS references become references to static secrets (a name without a config source).
fn strip_sds_config(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.contains_key("name") && map.contains_key("sds_config") {
                map.remove("sds_config");
            }
            map.values_mut().for_each(strip_sds_config);
        }
        Value::Array(list) => list.iter_mut().for_each(strip_sds_config),
        _ => {}
    }
}

/// Turns the dynamic resources into a static bootstrap: RDS inlined into each HCM, EDS
/// clusters made STATIC with their load assignment.
pub(crate) fn static_bootstrap(resources: &Value) -> Value {
    let mut secrets = resources.get("secrets").cloned().unwrap_or(json!([]));
    // Top-level resources lose the `@type` that marks them as `Any` in xDS responses.
    let untyped = |list: &Value| -> Value {
        let mut list = list.clone();
        for v in list.as_array_mut().unwrap() {
            v.as_object_mut().unwrap().remove("@type");
        }
        list
    };
    let resources = &json!({
        "routes": untyped(&resources["routes"]),
        "endpoints": untyped(&resources["endpoints"]),
        "listeners": untyped(&resources["listeners"]),
        "clusters": untyped(&resources["clusters"]),
    });
    let routes = resources["routes"].as_array().unwrap();
    let endpoints = resources["endpoints"].as_array().unwrap();
    let mut listeners = resources["listeners"].clone();
    for l in listeners.as_array_mut().unwrap() {
        for chain in l["filter_chains"].as_array_mut().into_iter().flatten() {
            for f in chain["filters"].as_array_mut().into_iter().flatten() {
                let tc = &mut f["typed_config"];
                if let Some(rds) = tc.get("rds").cloned() {
                    let name = rds["route_config_name"].as_str().unwrap();
                    let rc = routes
                        .iter()
                        .find(|r| r["name"] == name)
                        .unwrap_or_else(|| panic!("route config {name} generated"));
                    let obj = tc.as_object_mut().unwrap();
                    obj.remove("rds");
                    obj.insert("route_config".into(), rc.clone());
                }
            }
        }
    }
    let mut clusters = resources["clusters"].clone();
    for c in clusters.as_array_mut().unwrap() {
        if c["type"] == "EDS" {
            let name = c["name"].as_str().unwrap().to_string();
            let cla = endpoints
                .iter()
                .find(|e| e["cluster_name"] == name.as_str())
                .unwrap_or_else(|| panic!("endpoints for {name}"));
            let obj = c.as_object_mut().unwrap();
            obj.remove("eds_cluster_config");
            obj.insert("type".into(), json!("STATIC"));
            obj.insert("load_assignment".into(), cla.clone());
        }
    }
    strip_sds_config(&mut listeners);
    for secret in secrets.as_array_mut().unwrap() {
        secret.as_object_mut().unwrap().remove("@type");
    }
    json!({"static_resources": {"listeners": listeners, "clusters": clusters, "secrets": secrets}})
}

pub(crate) fn envoy_validate(bootstrap: &Value, work: &Path) {
    let path = work.join("bootstrap.json");
    std::fs::write(&path, serde_json::to_vec_pretty(bootstrap).unwrap()).unwrap();
    crate::support::envoy_validate(&path);
}

/// The snapshot of `case`: needs no Envoy. That Envoy accepts every stored snapshot is
/// `every_golden_snapshot_passes_envoy_validate`.
fn golden(case: &str, proxy: &Proxy, push: &PushContext) {
    let resources = translate_all(proxy, push);
    insta::with_settings!({snapshot_suffix => case, prepend_module_to_snapshot => false}, {
        insta::assert_yaml_snapshot!("translation", resources);
    });
}

/// Every stored golden translation, made a static bootstrap, passes `envoy --mode validate`:
/// no snapshot holds config Envoy would reject. (The snapshot tests above prove the code
/// still produces exactly these.)
#[test]
fn every_golden_snapshot_passes_envoy_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/snapshots");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("translation@") && name.ends_with(".snap")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // insta writes a header document (source, expression), then the snapshot.
        let body = text
            .splitn(3, "---\n")
            .nth(2)
            .unwrap_or_else(|| panic!("{name} is an insta snapshot"));
        let resources: Value = serde_saphyr::from_str(body)
            .unwrap_or_else(|e| panic!("{name} does not parse as YAML: {e}"));
        let work = tempfile::tempdir().unwrap();
        envoy_validate(&static_bootstrap(&resources), work.path());
        checked.push(name);
    }
    assert!(
        checked.len() >= 10,
        "the golden snapshots are found in {}: {checked:?}",
        dir.display()
    );
}

#[test]
fn every_gateway_server_form() {
    let push = load("testdata/golden/gateways", None);
    let p = proxy(
        "router~10.9.0.5~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local",
        "REDIRECT",
        json!({"istio": "ingressgateway"}),
    );
    golden("gateways-ingress", &p, &push);
}

#[test]
fn sandbox_ingress_and_egress_gateways() {
    let push = load("testdata/sandbox", None);
    let ingress = proxy(
        "router~127.0.0.31~istio-ingressgateway.istio-system~istio-system.svc.cluster.local",
        "NONE",
        json!({"istio": "ingressgateway"}),
    );
    golden("sandbox-ingress-gateway", &ingress, &push);
    let egress = proxy(
        "router~127.0.0.32~istio-egressgateway.istio-system~istio-system.svc.cluster.local",
        "NONE",
        json!({"istio": "egressgateway"}),
    );
    golden("sandbox-egress-gateway", &egress, &push);
}

#[test]
fn sandbox_sidecar_without_interception() {
    let push = load("testdata/sandbox", None);
    let p = proxy(
        "sidecar~127.0.0.21~sleep.testns1~testns1.svc.cluster.local",
        "NONE",
        json!({"app": "sleep"}),
    );
    golden("sandbox-none", &p, &push);
}

#[test]
fn sandbox_sidecar_redirect_layout() {
    let push = load("testdata/sandbox", None);
    let p = proxy(
        "sidecar~10.1.0.21~sleep.testns1~testns1.svc.cluster.local",
        "REDIRECT",
        json!({"app": "sleep"}),
    );
    golden("sandbox-redirect", &p, &push);
}

#[test]
fn every_routing_field_same_namespace() {
    let push = load("testdata/golden/everything", None);
    let p = proxy(
        "sidecar~10.1.0.99~productpage-1.bookinfo~bookinfo.svc.cluster.local",
        "REDIRECT",
        json!({"app": "productpage"}),
    );
    golden("everything-bookinfo", &p, &push);
}

/// The inbound side of a workload that services select: `virtualInbound` with the blackhole
/// and catch-all chains, then an HTTP chain (9080, shared by two services), a chain for the
/// named gRPC target port its pod resolves (9443), a TCP chain (9100) and, for the port of
/// unknown protocol, an HTTP chain for sniffed plaintext HTTP before a TCP one (9201); the
/// `inbound|<port>||` clusters to the original destination from 127.0.0.6.
#[test]
fn inbound_service_ports_under_redirect() {
    let push = load(
        "testdata/golden/inbound",
        Some("accessLogFile: /dev/stdout\n"),
    );
    let p = proxy(
        "sidecar~10.1.0.11~reviews-v1.bookinfo~bookinfo.svc.cluster.local",
        "REDIRECT",
        json!({"app": "reviews", "version": "v1"}),
    );
    golden("inbound-reviews", &p, &push);
}

/// Under TPROXY `virtualInbound` is transparent and restores the original source.
#[test]
fn inbound_service_ports_under_tproxy() {
    let push = load("testdata/golden/inbound", None);
    let p = proxy(
        "sidecar~10.1.0.11~reviews-v1.bookinfo~bookinfo.svc.cluster.local",
        "TPROXY",
        json!({"app": "reviews", "version": "v1"}),
    );
    golden("inbound-reviews-tproxy", &p, &push);
}

/// A Sidecar's `ingress` replaces the service ports: chains on `virtualInbound` named by the
/// workload's address (a global unicast one), STATIC clusters to `defaultEndpoint`s (no
/// 127.0.0.6 bind towards 127.0.0.1), the original destination where there is none, and
/// `captureMode: NONE` as a listener of its own that binds.
#[test]
fn inbound_sidecar_ingress_under_redirect() {
    let push = load("testdata/golden/inbound", None);
    let p = proxy(
        "sidecar~10.1.0.40~legacy-1.bookinfo~bookinfo.svc.cluster.local",
        "REDIRECT",
        json!({"app": "legacy"}),
    );
    golden("inbound-sidecar-ingress", &p, &push);
}

#[test]
fn every_routing_field_other_namespace_registry_only() {
    let push = load(
        "testdata/golden/everything",
        Some("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\nconnectTimeout: 2.5s\n"),
    );
    let p = proxy(
        "sidecar~127.0.0.99~client.elsewhere~elsewhere.svc.cluster.local",
        "NONE",
        json!({"app": "client"}),
    );
    golden("everything-elsewhere", &p, &push);
}

#[test]
fn every_traffic_policy_field() {
    let push = load("testdata/golden/traffic-policy", None);
    let p = proxy(
        "sidecar~10.2.0.99~client-1.shop~shop.svc.cluster.local",
        "REDIRECT",
        json!({"app": "client"}),
    );
    golden("traffic-policy-shop", &p, &push);
}

#[test]
fn every_virtual_service_http_feature() {
    let push = load("testdata/golden/http-features", None);
    let p = proxy(
        "sidecar~10.2.0.99~client.web~web.svc.cluster.local",
        "REDIRECT",
        json!({"app": "client"}),
    );
    golden("http-features", &p, &push);
}

#[test]
fn every_service_entry_field() {
    let push = load("testdata/golden/service-entries", None);
    let p = proxy(
        "sidecar~10.3.0.99~client.egress~egress.svc.cluster.local",
        "REDIRECT",
        json!({"app": "client"}),
    );
    golden("service-entries-egress", &p, &push);
}

#[test]
fn service_entries_registry_only_without_interception() {
    let push = load(
        "testdata/golden/service-entries",
        Some("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n"),
    );
    let p = proxy(
        "sidecar~127.0.0.99~client.elsewhere~elsewhere.svc.cluster.local",
        "NONE",
        json!({"app": "client"}),
    );
    golden("service-entries-elsewhere", &p, &push);
}

#[test]
fn sidecar_selected_by_workload_with_ingress_and_text_access_log() {
    let push = load(
        "testdata/golden/sidecar-scope",
        Some("accessLogFile: /dev/stdout\n"),
    );
    let p = proxy(
        "sidecar~127.0.0.99~web-1.shop~shop.svc.cluster.local",
        "NONE",
        json!({"app": "web"}),
    );
    golden("sidecar-scope-web", &p, &push);
}

#[test]
fn sidecar_namespace_default_with_json_access_log() {
    let push = load(
        "testdata/golden/sidecar-scope",
        Some("accessLogFile: /dev/stderr\naccessLogEncoding: JSON\n"),
    );
    let p = proxy(
        "sidecar~10.3.0.12~cart-1.shop~shop.svc.cluster.local",
        "REDIRECT",
        json!({"app": "cart"}),
    );
    golden("sidecar-scope-cart", &p, &push);
}

#[test]
fn sidecar_root_namespace_default_with_custom_formats() {
    let push = load(
        "testdata/golden/sidecar-scope",
        Some(concat!(
            "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n",
            "accessLogFile: /tmp/access.log\n",
            "accessLogFormat: \"%RESPONSE_CODE% %UPSTREAM_CLUSTER_RAW%\"\n",
        )),
    );
    let p = proxy(
        "sidecar~10.3.0.31~audit-1.ops~ops.svc.cluster.local",
        "REDIRECT",
        json!({"app": "audit"}),
    );
    golden("sidecar-scope-ops", &p, &push);
    let json = load(
        "testdata/golden/sidecar-scope",
        Some(concat!(
            "accessLogFile: /tmp/access.json\n",
            "accessLogEncoding: JSON\n",
            "accessLogFormat: '{\"code\": \"%RESPONSE_CODE%\", \"cluster\": \"%UPSTREAM_CLUSTER_RAW%\"}'\n",
        )),
    );
    golden("sidecar-scope-ops-json", &p, &json);
}

#[test]
fn tcp_and_tls_routes_and_delegates() {
    let push = load("testdata/golden/tcp-tls", None);
    let p = proxy(
        "sidecar~10.4.0.99~client-1.shop~shop.svc.cluster.local",
        "REDIRECT",
        json!({"app": "client"}),
    );
    golden("tcp-tls-redirect", &p, &push);
    let p = proxy(
        "sidecar~10.4.0.99~client-1.shop~shop.svc.cluster.local",
        "NONE",
        json!({"app": "client"}),
    );
    golden("tcp-tls-none", &p, &push);
}
