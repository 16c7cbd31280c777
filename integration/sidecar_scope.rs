//! The `Sidecar` resource for sidecars: egress `hosts` limit what a proxy sees (clusters,
//! listeners, routes), its `outboundTrafficPolicy` overrides the mesh's, exportTo composes with
//! it, and `ingress` listeners without interception forward to a `defaultEndpoint`.

use std::time::Duration;

use crate::support::*;

/// A second namespace with its own HTTP service on the httpbin port: `other.testns2`.
fn other_namespace(net: u8) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: other
  namespace: testns2
spec:
  ports:
  - name: http
    port: 8000
    targetPort: 8080
  selector:
    app: other
---
apiVersion: v1
kind: Pod
metadata:
  name: other-1
  namespace: testns2
  labels: {{app: other}}
status:
  phase: Running
  podIP: 127.{net}.0.31
"#
    )
}

const OTHER_HOST: &str = "other.testns2.svc.cluster.local";

/// Only the proxy's own namespace, and nothing unknown.
const SIDECAR_OWN_NS: &str = r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: sleep-scope
  namespace: testns1
spec:
  workloadSelector:
    labels:
      app: sleep
  egress:
  - hosts:
    - "./*"
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
"#;

async fn dynamic_cluster_names(envoy: &navarch::envoy::EnvoyProcess) -> Vec<String> {
    let dump: serde_json::Value =
        serde_json::from_str(&envoy.admin_get("/config_dump").await.unwrap()).unwrap();
    dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["@type"].as_str().unwrap().ends_with("ClustersConfigDump"))
        .flat_map(|c| {
            c["dynamic_active_clusters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| c["cluster"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_hosts_limit_what_the_proxy_sees() {
    let net = 175;
    let (sandbox, other) = (sandbox(net), other_namespace(net));
    let cp = ControlPlane::start(&[("sandbox.yaml", &sandbox), ("other.yaml", &other)]).await;
    let _v1 = Upstream::start("v1", &format!("127.{net}.0.11:8080")).await;
    let _v2 = Upstream::start("v2", &format!("127.{net}.0.12:8080")).await;
    let _other = Upstream::start("other", &format!("127.{net}.0.31:8080")).await;
    let envoy = cp
        .sidecar(
            &format!("127.{net}.0.21"),
            "sleep",
            "testns1",
            "app=sleep",
            "NONE",
        )
        .await;
    let listener = format!("127.{net}.0.21:8000");
    let c = client();

    // Without a Sidecar the proxy sees every namespace.
    let other_cluster = format!("outbound|8000||{OTHER_HOST}");
    assert!(dynamic_cluster_names(&envoy).await.contains(&other_cluster));
    let r = send(&c, "GET", &listener, OTHER_HOST, "/", &[]).await;
    assert_eq!(r.served_by.as_deref(), Some("other"));

    // `./*` keeps testns1 only; REGISTRY_ONLY makes the catch-all a 502.
    cp.write("sidecar.yaml", SIDECAR_OWN_NS);
    let gone = eventually(Duration::from_secs(20), || {
        let envoy = &envoy;
        let other_cluster = other_cluster.clone();
        async move { !dynamic_cluster_names(envoy).await.contains(&other_cluster) }
    })
    .await;
    assert!(gone.is_some(), "{:?}", dynamic_cluster_names(&envoy).await);
    let names = dynamic_cluster_names(&envoy).await;
    assert!(
        names.contains(&format!("outbound|8000||{HOST}")),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("outbound|8000|v1|{HOST}")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.ends_with(OTHER_HOST)), "{names:?}");
    let ok = eventually(Duration::from_secs(10), || {
        let (c, listener) = (&c, &listener);
        async move { send(c, "GET", listener, OTHER_HOST, "/", &[]).await.status == 502 }
    })
    .await;
    assert!(ok.is_some(), "out-of-scope host falls to block_all");
    let r = send(&c, "GET", &listener, HOST, "/get", &[]).await;
    assert_eq!(r.status, 200);
    assert!(matches!(r.served_by.as_deref(), Some("v1" | "v2")));

    // `*/other...` imports the other service by name (and `~/*` imports nothing).
    cp.write(
        "sidecar.yaml",
        &SIDECAR_OWN_NS.replace(
            "    - \"./*\"",
            &format!("    - \"*/{OTHER_HOST}\"\n    - \"~/*\""),
        ),
    );
    let back = eventually(Duration::from_secs(20), || {
        let (c, listener) = (&c, &listener);
        async move {
            send(c, "GET", listener, OTHER_HOST, "/", &[])
                .await
                .served_by
                .as_deref()
                == Some("other")
        }
    })
    .await;
    assert!(back.is_some());
    let names = dynamic_cluster_names(&envoy).await;
    assert!(!names.iter().any(|n| n.ends_with(HOST)), "{names:?}");
    assert_eq!(
        send(&c, "GET", &listener, HOST, "/get", &[]).await.status,
        502
    );
}

/// A VirtualService only testns1 sees: everything to v2.
const VS_LOCAL_V2: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin-local
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  exportTo:
  - "."
  http:
  - route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_to_dot_hides_a_virtual_service_from_other_namespaces() {
    let net = 176;
    let sandbox = sandbox(net);
    // The other namespace's proxy is scoped by a root-namespace default Sidecar that still
    // imports testns1: Sidecar scoping and exportTo compose.
    let root_default = r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: istio-system
spec:
  egress:
  - hosts:
    - "./*"
    - "testns1/*"
"#;
    let cp = ControlPlane::start(&[
        ("sandbox.yaml", &sandbox),
        ("vs.yaml", VS_LOCAL_V2),
        ("root-sidecar.yaml", root_default),
    ])
    .await;
    let _v1 = Upstream::start("v1", &format!("127.{net}.0.11:8080")).await;
    let _v2 = Upstream::start("v2", &format!("127.{net}.0.12:8080")).await;
    let _same = cp
        .sidecar(
            &format!("127.{net}.0.21"),
            "sleep",
            "testns1",
            "app=sleep",
            "NONE",
        )
        .await;
    let _elsewhere = cp
        .sidecar(
            &format!("127.{net}.0.22"),
            "client",
            "testns2",
            "app=client",
            "NONE",
        )
        .await;
    let c = client();

    let same = split(&c, &format!("127.{net}.0.21:8000"), HOST, "/get", 40, &[]).await;
    assert_eq!(
        same.get("v2"),
        Some(&40),
        "same namespace sees the VS: {same:?}"
    );
    let other = split(&c, &format!("127.{net}.0.22:8000"), HOST, "/get", 60, &[]).await;
    assert!(
        other.get("v1").is_some_and(|n| *n > 5) && other.get("v2").is_some_and(|n| *n > 5),
        "other namespace gets the default route over both subsets: {other:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_listener_without_interception_forwards_to_default_endpoint() {
    let net = 177;
    let sandbox = sandbox(net);
    let sidecar = r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: sleep-ingress
  namespace: testns1
spec:
  workloadSelector:
    labels:
      app: sleep
  ingress:
  - port:
      number: 9080
      protocol: HTTP
      name: http-in
    defaultEndpoint: 0.0.0.0:8080
    captureMode: NONE
  - port:
      number: 9090
      protocol: TCP
      name: tcp-in
    defaultEndpoint: 0.0.0.0:8080
"#;
    let cp = ControlPlane::start(&[("sandbox.yaml", &sandbox), ("sidecar.yaml", sidecar)]).await;
    let app = Upstream::start("app", &format!("127.{net}.0.21:8080")).await;
    let envoy = cp
        .sidecar(
            &format!("127.{net}.0.21"),
            "sleep",
            "testns1",
            "app=sleep",
            "NONE",
        )
        .await;
    for stat in [
        "listener_manager.lds.update_rejected",
        "cluster_manager.cds.update_rejected",
    ] {
        assert_eq!(envoy.counter(stat).await.unwrap(), 0, "{stat}");
    }
    let c = client();
    let r = send(
        &c,
        "GET",
        &format!("127.{net}.0.21:9080"),
        "anything",
        "/in",
        &[],
    )
    .await;
    assert_eq!(r.served_by.as_deref(), Some("app"), "{r:?}");
    let r = send(
        &c,
        "GET",
        &format!("127.{net}.0.21:9090"),
        "anything",
        "/tcp",
        &[],
    )
    .await;
    assert_eq!(r.served_by.as_deref(), Some("app"), "{r:?}");
    assert_eq!(app.count(), 2);
    let names = dynamic_cluster_names(&envoy).await;
    assert!(names.contains(&"inbound|9080||".to_string()), "{names:?}");
    // The control plane recorded ACKs, not NACKs.
    let syncz = format!("{:?}", cp.syncz().await);
    assert!(syncz.contains("last_error"), "{syncz}");
    assert!(
        syncz
            .split("last_error: \"")
            .skip(1)
            .all(|rest| rest.starts_with('"')),
        "{syncz}"
    );
}
