//! ServiceEntries, WorkloadEntries and the mesh's outboundTrafficPolicy through a real Envoy:
//! "external" hosts are loopback upstreams (127.<net>.0.x, or `localhost`), reached by
//! hostname through the sidecar's outbound listener (interception NONE).

use std::time::{Duration, Instant};

use navarch::envoy::EnvoyProcess;
use serde_json::Value;

use crate::support::*;

/// testns1 with the sleep Pod at 127.<net>.0.21, plus `extra` YAML.
fn namespace(net: u8, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: testns1}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: sleep, namespace: testns1, labels: {{app: sleep}}}}\nstatus: {{phase: Running, podIP: 127.{net}.0.21}}\n---\n{extra}"
    )
}

/// A STATIC MESH_EXTERNAL ServiceEntry `api.external.test:8080` with endpoints v1 at
/// 127.<net>.0.50 and v2 at 127.<net>.0.51.
fn static_entry(net: u8) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: testns1}}
spec:
  hosts: [api.external.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {{number: 8080, name: http, protocol: HTTP}}
  endpoints:
  - {{address: 127.{net}.0.50, labels: {{version: v1}}}}
  - {{address: 127.{net}.0.51, labels: {{version: v2}}}}
"#
    )
}

async fn sidecar(cp: &ControlPlane, net: u8) -> EnvoyProcess {
    cp.sidecar(
        &format!("127.{net}.0.21"),
        "sleep",
        "testns1",
        "app=sleep",
        "NONE",
    )
    .await
}

/// One section of Envoy's `/config_dump` by the suffix of its `@type`.
async fn dump_section(envoy: &EnvoyProcess, suffix: &str) -> Value {
    let dump: Value =
        serde_json::from_str(&envoy.admin_get("/config_dump").await.unwrap()).unwrap();
    dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(suffix)))
        .cloned()
        .unwrap_or_default()
}

fn active_cluster(clusters: &Value, name: &str) -> Option<Value> {
    clusters["dynamic_active_clusters"]
        .as_array()?
        .iter()
        .map(|c| c["cluster"].clone())
        .find(|c| c["name"] == name)
}

/// Sends until the answer is `want` (Envoy may still be warming a cluster), up to 10 s.
async fn wait_served(listener: &str, host: &str, want: &str) -> Reply {
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = send(&client, "GET", listener, host, "/", &[]).await;
        if r.served_by.as_deref() == Some(want) || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn static_service_entry_routes_by_hostname_with_vs_and_dr() {
    let net = 160;
    let files = namespace(net, &static_entry(net));
    let cp = ControlPlane::start(&[("se.yaml", &files)]).await;
    let _v1 = Upstream::start("ext-v1", &format!("127.{net}.0.50:8080")).await;
    let _v2 = Upstream::start("ext-v2", &format!("127.{net}.0.51:8080")).await;
    let envoy = sidecar(&cp, net).await;
    let listener = format!("127.{net}.0.21:8080");

    // Both endpoints serve the host; the cluster is EDS and marked external.
    let client = client();
    let counts = {
        wait_served(&listener, "api.external.test", "ext-v1").await;
        split(&client, &listener, "api.external.test", "/", 20, &[]).await
    };
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        ["ext-v1", "ext-v2"],
        "{counts:?}"
    );
    let clusters = dump_section(&envoy, ".ClustersConfigDump").await;
    let c = active_cluster(&clusters, "outbound|8080||api.external.test").unwrap();
    assert_eq!(c["type"], "EDS");
    assert_eq!(c["metadata"]["filter_metadata"]["istio"]["external"], true);

    // A VirtualService + DestinationRule on the SE host send everything to v2.
    cp.write(
        "vs.yaml",
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: testns1}
spec:
  host: api.external.test
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: testns1}
spec:
  hosts: [api.external.test]
  http:
  - route:
    - destination: {host: api.external.test, subset: v2}
"#,
    );
    let routed = eventually(Duration::from_secs(15), || async {
        split(&client, &listener, "api.external.test", "/", 10, &[]).await
            == [("ext-v2".to_string(), 10)].into()
    })
    .await;
    assert!(
        routed.is_some(),
        "the VirtualService routes the SE host to subset v2"
    );
}

#[tokio::test]
async fn dns_service_entry_resolves_names_and_ips() {
    let net = 161;
    let entry = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: dns, namespace: testns1}}
spec:
  hosts: [dns.external.test]
  resolution: DNS
  ports:
  - {{number: 8080, name: http, protocol: HTTP}}
  endpoints:
  - {{address: 127.{net}.0.50}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: local, namespace: testns1}}
spec:
  hosts: [local.external.test]
  resolution: DNS_ROUND_ROBIN
  ports:
  - {{number: 8080, name: http, protocol: HTTP}}
  endpoints:
  - {{address: localhost, ports: {{http: 16161}}}}
"#
    );
    let cp = ControlPlane::start(&[("se.yaml", &namespace(net, &entry))]).await;
    let _ip = Upstream::start("dns-ip", &format!("127.{net}.0.50:8080")).await;
    let _local = Upstream::start("dns-localhost", "127.0.0.1:16161").await;
    let envoy = sidecar(&cp, net).await;
    let listener = format!("127.{net}.0.21:8080");

    let r = wait_served(&listener, "dns.external.test", "dns-ip").await;
    assert_eq!(r.served_by.as_deref(), Some("dns-ip"), "{r:?}");
    let r = wait_served(&listener, "local.external.test", "dns-localhost").await;
    assert_eq!(r.served_by.as_deref(), Some("dns-localhost"), "{r:?}");

    let clusters = dump_section(&envoy, ".ClustersConfigDump").await;
    let strict = active_cluster(&clusters, "outbound|8080||dns.external.test").unwrap();
    assert_eq!(strict["type"], "STRICT_DNS");
    assert_eq!(strict["dns_lookup_family"], "V4_ONLY");
    assert_eq!(strict["respect_dns_ttl"], true);
    let logical = active_cluster(&clusters, "outbound|8080||local.external.test").unwrap();
    assert_eq!(logical["type"], "LOGICAL_DNS");
}

/// The seed's Connect Timeout case: a port-less headless Service with Endpoints, a DNS
/// ServiceEntry for the same host, `retries: {attempts: 0}` and a 4 s connect timeout. The
/// endpoint is a loopback listener whose accept queue is full, so SYNs go unanswered and the
/// request fails with 503 after the connect timeout.
#[tokio::test]
async fn non_existent_service_times_out_after_connect_timeout() {
    let net = 162;
    let host = "non-existent-service.testns1.svc.cluster.local";
    let dead = format!("127.{net}.0.99");
    let config = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: non-existent-service, namespace: testns1}}
spec: {{clusterIP: None}}
---
apiVersion: v1
kind: Endpoints
metadata: {{name: non-existent-service, namespace: testns1}}
subsets:
- addresses:
  - ip: {dead}
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {{name: non-existent-service, namespace: testns1}}
spec:
  hosts: [{host}]
  ports:
  - {{number: 8080, name: http, protocol: HTTP}}
  resolution: DNS
  location: MESH_EXTERNAL
  endpoints:
  - {{address: {dead}}}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {{name: non-existent-service, namespace: testns1}}
spec:
  hosts: [{host}]
  http:
  - route:
    - destination:
        host: {host}
        port: {{number: 8080}}
    retries: {{attempts: 0}}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {{name: non-existent-service, namespace: testns1}}
spec:
  host: {host}
  trafficPolicy:
    connectionPool:
      tcp: {{connectTimeout: 4s}}
"#
    );
    // A listener that never accepts, with its accept queue filled: further SYNs are dropped.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{dead}:8080").parse().unwrap())
        .unwrap();
    let _listener = socket.listen(0).unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        let connect = tokio::net::TcpStream::connect(format!("{dead}:8080"));
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(300), connect).await {
            held.push(s);
        }
    }

    let cp = ControlPlane::start(&[("seed.yaml", &namespace(net, &config))]).await;
    let envoy = sidecar(&cp, net).await;
    let clusters = dump_section(&envoy, ".ClustersConfigDump").await;
    let c = active_cluster(&clusters, &format!("outbound|8080||{host}")).unwrap();
    assert_eq!(c["type"], "STRICT_DNS");
    assert_eq!(c["connect_timeout"], "4s");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let start = Instant::now();
    let r = send(
        &client,
        "GET",
        &format!("127.{net}.0.21:8080"),
        host,
        "/",
        &[],
    )
    .await;
    let took = start.elapsed();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        took >= Duration::from_millis(3800) && took < Duration::from_secs(9),
        "503 after the 4 s connect timeout, took {took:?}: {}",
        r.body
    );
    drop(held);
}

#[tokio::test]
async fn registry_only_blocks_unknown_hosts_but_serves_service_entries() {
    let net = 163;
    let files = namespace(net, &static_entry(net));
    let cp = ControlPlane::start_with_mesh(
        &[("se.yaml", &files)],
        Some("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n"),
    )
    .await;
    let _v1 = Upstream::start("ext-v1", &format!("127.{net}.0.50:8080")).await;
    let _v2 = Upstream::start("ext-v2", &format!("127.{net}.0.51:8080")).await;
    let envoy = sidecar(&cp, net).await;
    let listener = format!("127.{net}.0.21:8080");

    let r = wait_served(&listener, "api.external.test", "ext-v1").await;
    assert!(r.served_by.is_some(), "the SE host is served: {r:?}");
    let blocked = send(&client(), "GET", &listener, "unknown.example.org", "/", &[]).await;
    assert_eq!(blocked.status, 502, "{blocked:?}");
    assert!(blocked.served_by.is_none());

    let routes = dump_section(&envoy, ".RoutesConfigDump").await.to_string();
    assert!(routes.contains("\"block_all\""), "block_all vhost served");
}

#[tokio::test]
async fn allow_any_serves_the_passthrough_layout() {
    let net = 164;
    let files = namespace(net, &static_entry(net));
    let cp = ControlPlane::start_with_mesh(
        &[("se.yaml", &files)],
        Some("outboundTrafficPolicy:\n  mode: ALLOW_ANY\n"),
    )
    .await;
    let envoy = sidecar(&cp, net).await;

    let clusters = dump_section(&envoy, ".ClustersConfigDump").await;
    let passthrough = clusters["static_clusters"]
        .as_array()
        .into_iter()
        .chain(clusters["dynamic_active_clusters"].as_array())
        .flatten()
        .map(|c| c["cluster"].clone())
        .find(|c| c["name"] == "PassthroughCluster")
        .expect("PassthroughCluster is active");
    assert_eq!(passthrough["type"], "ORIGINAL_DST");
    assert_eq!(passthrough["lb_policy"], "CLUSTER_PROVIDED");
    let routes = dump_section(&envoy, ".RoutesConfigDump").await.to_string();
    assert!(routes.contains("\"allow_any\""), "allow_any vhost served");
    assert!(routes.contains("PassthroughCluster"));
    // Envoy ACKed every type it was sent: syncz shows each acknowledged.
    let types = [
        navarch::translate::CLUSTER_TYPE,
        navarch::translate::LISTENER_TYPE,
        navarch::translate::ROUTE_TYPE,
    ];
    let synced = eventually(Duration::from_secs(10), || async {
        let s = cp.syncz().await;
        s.len() == 1
            && types.iter().all(|t| {
                let r = &s[0].resources[*t];
                r.sent == r.acked && !r.acked_version.is_empty()
            })
    })
    .await;
    assert!(synced.is_some(), "{:?}", cp.syncz().await);
}
