//! The seed's "Condition match routing" through a real Envoy fed by navarch: the 90/10 split,
//! header and method matches, live edits, NACK handling, broken files, and the REDIRECT layout.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_90_10_on_matched_paths_only() {
    let sb = Sandbox::start(101, &[("vs.yaml", VS_90_10)], "NONE").await;
    let c = client();
    assert_seed_split(&sb.listener, &sb.v1, &sb.v2).await;

    // Short names resolve in the proxy's own namespace.
    let r = send(&c, "GET", &sb.listener, "httpbin:8000", "/headers", &[]).await;
    assert_eq!(r.status, 200);
    let r = send(&c, "GET", &sb.listener, "httpbin.testns1", "/headers", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_virtual_service_the_default_route_balances_all_endpoints() {
    let sb = Sandbox::start(102, &[], "NONE").await;
    let c = client();
    let counts = split(&c, &sb.listener, HOST, "/anything", 100, &[]).await;
    assert!(
        counts.get("v1").is_some_and(|n| *n > 10) && counts.get("v2").is_some_and(|n| *n > 10),
        "{counts:?}"
    );
    // Unknown hosts go to the PassthroughCluster (ALLOW_ANY): the original destination is the
    // listener itself here, so the request does not reach an upstream of ours.
    let r = send(&c, "GET", &sb.listener, "unknown.example", "/", &[]).await;
    assert_eq!(r.served_by, None);
}

const VS_MATCHES: &str = r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin
  http:
  - name: jason
    match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: httpbin
        subset: v2
  - name: by-method
    match:
    - method:
        exact: POST
    route:
    - destination:
        host: httpbin
        subset: v2
  - name: prefix-and-regex
    match:
    - headers:
        x-team:
          prefix: blue
      uri:
        regex: "/items/[0-9]+"
    - queryParams:
        canary:
          exact: "yes"
    route:
    - destination:
        host: httpbin
        subset: v2
  - name: default
    route:
    - destination:
        host: httpbin
        subset: v1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_method_uri_and_query_matches() {
    let sb = Sandbox::start(103, &[("vs.yaml", VS_MATCHES)], "NONE").await;
    let c = client();
    let via = |method: &'static str,
               path: &'static str,
               headers: &'static [(&'static str, &'static str)]| {
        let (c, l) = (c.clone(), sb.listener.clone());
        async move { send(&c, method, &l, HOST, path, headers).await.served_by }
    };
    for _ in 0..10 {
        assert_eq!(
            via("GET", "/headers", &[("end-user", "jason")])
                .await
                .as_deref(),
            Some("v2")
        );
        assert_eq!(
            via("GET", "/headers", &[("end-user", "bob")])
                .await
                .as_deref(),
            Some("v1")
        );
        assert_eq!(via("GET", "/headers", &[]).await.as_deref(), Some("v1"));
        assert_eq!(via("POST", "/post", &[]).await.as_deref(), Some("v2"));
        assert_eq!(
            via("GET", "/items/42", &[("x-team", "blue-7")])
                .await
                .as_deref(),
            Some("v2")
        );
        assert_eq!(
            via("GET", "/items/abc", &[("x-team", "blue-7")])
                .await
                .as_deref(),
            Some("v1")
        );
        assert_eq!(
            via("GET", "/items/42", &[("x-team", "red")])
                .await
                .as_deref(),
            Some("v1")
        );
        assert_eq!(
            via("GET", "/x?canary=yes", &[]).await.as_deref(),
            Some("v2")
        );
        assert_eq!(via("GET", "/x?canary=no", &[]).await.as_deref(), Some("v1"));
    }
    // The upstream sees the request as sent (method, path, the matched header).
    let seen = sb.v2.seen.lock().unwrap().clone();
    assert!(seen.iter().any(|s| s.method == "POST" && s.path == "/post"));
    assert!(
        seen.iter()
            .any(|s| s.headers.get("end-user").map(String::as_str) == Some("jason"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_file_changes_routing_within_2s_and_proxy_status_is_synced() {
    let sb = Sandbox::start(104, &[("vs.yaml", &all_to("v1"))], "NONE").await;
    let c = client();
    assert_eq!(
        send(&c, "GET", &sb.listener, HOST, "/", &[])
            .await
            .served_by
            .as_deref(),
        Some("v1")
    );
    let rds_stat = "http.outbound_127.104.0.21_8000.rds.8000.version_text";
    let old_rds = sb.envoy.stat(rds_stat).await.unwrap().unwrap();

    sb.cp.write("vs.yaml", &all_to("v2"));
    let took = eventually(Duration::from_secs(5), || {
        let (c, l) = (c.clone(), sb.listener.clone());
        async move {
            send(&c, "GET", &l, HOST, "/", &[])
                .await
                .served_by
                .as_deref()
                == Some("v2")
        }
    })
    .await
    .expect("Envoy routes to v2 after the edit");
    assert!(took < Duration::from_secs(2), "took {took:?}");

    let new_rds = sb.envoy.stat(rds_stat).await.unwrap().unwrap();
    assert_ne!(new_rds, old_rds, "Envoy got a new route config version");
    // proxy-status: SYNCED everywhere, and the acked RDS version is the one Envoy runs.
    let ok = eventually(Duration::from_secs(3), || async {
        let s = sb.cp.syncz().await;
        let r = &s[0].resources[navarch::translate::ROUTE_TYPE];
        r.sent == r.acked && r.acked_version == new_rds
    })
    .await;
    assert!(
        ok.is_some(),
        "syncz shows the new RDS version acknowledged: {:?}",
        sb.cp.syncz().await
    );
    let table = sb.cp.proxy_status(&[]);
    let row = table
        .lines()
        .find(|l| l.starts_with("sleep.testns1"))
        .expect("a row for sleep.testns1");
    assert_eq!(row.matches("SYNCED").count(), 4, "{table}");
    assert!(row.contains("IGNORED"), "ECDS is not subscribed: {table}");
    let json: serde_json::Value =
        serde_json::from_str(&sb.cp.proxy_status(&["-o", "json"])).unwrap();
    assert_eq!(json[0]["proxy"], "sleep.testns1");
    assert_eq!(json[0]["route_sent"], json[0]["route_acked"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_nack_is_recorded_and_traffic_keeps_the_last_good_config() {
    let sb = Sandbox::start(105, &[("vs.yaml", &all_to("v1"))], "NONE").await;
    let c = client();
    assert_eq!(
        send(&c, "GET", &sb.listener, HOST, "/", &[])
            .await
            .served_by
            .as_deref(),
        Some("v1")
    );

    sb.cp.write("vs.yaml", VS_ENVOY_REJECTS);
    let nacked = eventually(Duration::from_secs(5), || async {
        let s = sb.cp.syncz().await;
        !s[0].resources[navarch::translate::ROUTE_TYPE]
            .last_error
            .is_empty()
    })
    .await;
    assert!(
        nacked.is_some(),
        "the NACK is recorded in syncz: {:?}",
        sb.cp.syncz().await
    );
    let s = sb.cp.syncz().await;
    let err = &s[0].resources[navarch::translate::ROUTE_TYPE].last_error;
    assert!(
        err.contains("regex") || err.contains("program size"),
        "lastError carries Envoy's error_detail: {err}"
    );
    assert!(
        sb.envoy
            .counter("http.outbound_127.105.0.21_8000.rds.8000.update_rejected")
            .await
            .unwrap()
            >= 1
    );

    // The NACK is traced to the VirtualService behind the rejected route: in syncz, the
    // proxy-status detail and the metrics.
    assert_eq!(
        s[0].resources[navarch::translate::ROUTE_TYPE].last_error_sources,
        ["VirtualService testns1/httpbin"],
        "{s:?}"
    );
    let metrics = reqwest::get(format!("{}/metrics", sb.cp.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "navarch_xds_rejects_by_config{type=\"rds\",config=\"VirtualService testns1/httpbin\"} 1"
        ),
        "{metrics}"
    );

    let table = sb.cp.proxy_status(&[]);
    let row = table
        .lines()
        .find(|l| l.starts_with("sleep.testns1"))
        .unwrap();
    assert!(
        row.contains("ERROR"),
        "proxy-status shows the rejection: {table}"
    );
    let detail = sb.cp.proxy_status(&["sleep.testns1"]);
    assert!(
        detail.contains("RDS rejected by the proxy (it keeps its last good config):"),
        "{detail}"
    );
    assert!(
        detail.contains("  from: VirtualService testns1/httpbin"),
        "{detail}"
    );
    assert!(
        detail
            .lines()
            .any(|l| l.starts_with("CDS") && l.contains("SYNCED")),
        "{detail}"
    );

    // Traffic keeps flowing on the previous (v1) config.
    let counts = split(&c, &sb.listener, HOST, "/", 20, &[]).await;
    assert_eq!(counts.get("v1"), Some(&20), "{counts:?}");

    // A good config afterwards is accepted and clears the error.
    sb.cp.write("vs.yaml", &all_to("v2"));
    let healed = eventually(Duration::from_secs(5), || {
        let (c, l) = (c.clone(), sb.listener.clone());
        async move {
            send(&c, "GET", &l, HOST, "/", &[])
                .await
                .served_by
                .as_deref()
                == Some("v2")
        }
    })
    .await;
    assert!(healed.is_some());
    let cleared = eventually(Duration::from_secs(3), || async {
        sb.cp.syncz().await[0].resources[navarch::translate::ROUTE_TYPE]
            .last_error
            .is_empty()
    })
    .await;
    assert!(cleared.is_some());
}

const BROKEN_YAML: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: broken\n  namespace: testns1\nspec:\n  hosts: [a\n  http: {{\n";

const BAD_FIELD: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bad-weight
  namespace: testns1
spec:
  hosts: [other.testns1.svc.cluster.local]
  http:
  - route:
    - destination:
        host: httpbin
      weight: "ninety"
"#;

/// Two destinations whose weights do not sum to 100.
const BAD_SUM: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bad-sum
  namespace: testns1
spec:
  hosts: [httpbin]
  http:
  - route:
    - destination: {host: httpbin, subset: v1}
      weight: 60
    - destination: {host: httpbin, subset: v2}
      weight: 60
"#;

/// Valid on its own, but routes to a subset no DestinationRule defines.
const DANGLING_SUBSET: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: dangling
  namespace: testns1
spec:
  hosts: [httpbin.testns1.svc.cluster.local]
  http:
  - route:
    - destination:
        host: httpbin
        subset: v3
"#;

const BAD_VALUE: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: bad-dr
  namespace: testns1
spec:
  host: ""
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_files_are_reported_and_the_rest_is_served() {
    let sb = Sandbox::start(
        106,
        &[("vs.yaml", VS_90_10), ("zz-broken.yaml", BROKEN_YAML), ("sub/bad-weight.yaml", BAD_FIELD),
            ("dangling.yaml", DANGLING_SUBSET),
            ("bad-sum.yaml", BAD_SUM), ("bad-dr.json", "{\"apiVersion\": \"networking.istio.io/v1\", \"kind\": \"DestinationRule\", \"metadata\": {\"name\": \"bad-dr\", \"namespace\": \"testns1\"}, \"spec\": {\"host\": \"\"}}")],
        "NONE",
    )
    .await;
    let _ = BAD_VALUE;
    let c = client();
    let counts = split(&c, &sb.listener, HOST, "/headers", 100, &[]).await;
    assert!(
        counts.contains_key("v1") && counts.contains_key("v2"),
        "the good VirtualService is served: {counts:?}"
    );

    let configz = sb.cp.configz().await;
    let errors = configz["errors"].as_array().unwrap();
    let find = |needle: &str| {
        errors
            .iter()
            .find(|e| e["source"].as_str().unwrap().ends_with(needle))
            .unwrap_or_else(|| panic!("no error for {needle}: {errors:#?}"))
    };
    let broken = find("zz-broken.yaml");
    assert!(
        broken["message"]
            .as_str()
            .unwrap()
            .contains("not valid YAML"),
        "{broken}"
    );
    let weight = find("bad-weight.yaml");
    assert_eq!(weight["kind"], "VirtualService");
    assert_eq!(weight["namespace"], "testns1");
    assert_eq!(weight["name"], "bad-weight");
    assert_eq!(weight["field"], "spec.http[0].route[0].weight");
    let sum = find("bad-sum.yaml");
    assert_eq!(sum["field"], "spec.http[0].route");
    assert!(
        sum["message"]
            .as_str()
            .unwrap()
            .contains("total destination weight 120 != 100"),
        "{sum}"
    );
    let dangling = find("dangling.yaml");
    assert_eq!(
        dangling["field"],
        "spec.http[0].route[0].destination.subset"
    );
    assert!(
        dangling["message"]
            .as_str()
            .unwrap()
            .contains("subset \"v3\""),
        "{dangling}"
    );
    let dr = find("bad-dr.json");
    assert_eq!(dr["kind"], "DestinationRule");
    assert_eq!(dr["field"], "spec.host");
    assert!(
        dr["error"]
            .as_str()
            .unwrap()
            .contains("bad-dr.json: DestinationRule testns1/bad-dr: field spec.host"),
        "{dr}"
    );
    // Only the good VirtualService is in the snapshot.
    let names: Vec<&str> = configz["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"httpbin")
            && !names.contains(&"bad-weight")
            && !names.contains(&"bad-dr")
            && !names.contains(&"dangling"),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_mode_layout_is_accepted_by_envoy() {
    let cp = ControlPlane::start(&[("sandbox.yaml", &sandbox(107)), ("vs.yaml", VS_90_10)]).await;
    let envoy = cp
        .sidecar("127.107.0.21", "sleep", "testns1", "app=sleep", "REDIRECT")
        .await;
    for stat in [
        "listener_manager.lds.update_rejected",
        "cluster_manager.cds.update_rejected",
    ] {
        assert_eq!(envoy.counter(stat).await.unwrap(), 0, "{stat}");
    }
    let dump: serde_json::Value =
        serde_json::from_str(&envoy.admin_get("/config_dump").await.unwrap()).unwrap();
    let listeners: Vec<serde_json::Value> = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["@type"]
                .as_str()
                .unwrap()
                .ends_with("ListenersConfigDump")
        })
        .flat_map(|c| {
            c["dynamic_listeners"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let find = |name: &str| {
        listeners.iter().find(|l| l["name"] == name).unwrap_or_else(|| panic!("listener {name} in {listeners:#?}"))["active_state"]["listener"].clone()
    };
    let outbound = find("virtualOutbound");
    assert_eq!(outbound["address"]["socket_address"]["port_value"], 15001);
    assert_eq!(outbound["use_original_dst"], true);
    let inbound = find("virtualInbound");
    assert_eq!(inbound["address"]["socket_address"]["port_value"], 15006);
    let http = find("0.0.0.0_8000");
    assert_eq!(http["bind_to_port"], false);
    // The route config for the port arrives too and is accepted.
    let ok = eventually(Duration::from_secs(5), || async {
        envoy
            .stat("http.outbound_0.0.0.0_8000.rds.8000.version_text")
            .await
            .ok()
            .flatten()
            .is_some_and(|v| !v.is_empty())
    })
    .await;
    assert!(ok.is_some());
    // The control plane's config_dump for the proxy shows the same layout, in Envoy's JSON.
    let cd: serde_json::Value = reqwest::get(format!(
        "{}/debug/config_dump?proxyID=sleep.testns1",
        cp.http
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let types: Vec<&str> = cd["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["@type"].as_str().unwrap())
        .collect();
    assert!(
        types.iter().any(|t| t.ends_with("ClustersConfigDump"))
            && types.iter().any(|t| t.ends_with("RoutesConfigDump")),
        "{types:?}"
    );
    let cds = &cd["configs"][0]["dynamic_active_clusters"];
    assert!(
        cds.as_array()
            .unwrap()
            .iter()
            .any(|c| c["cluster"]["name"] == "outbound|8000|v1|httpbin.testns1.svc.cluster.local")
    );
    let missing = reqwest::get(format!(
        "{}/debug/config_dump?proxyID=nobody.nowhere",
        cp.http
    ))
    .await
    .unwrap();
    assert_eq!(missing.status(), 404);

    let syncz = cp.syncz().await;
    for (t, r) in &syncz[0].resources {
        assert!(r.last_error.is_empty(), "{t} NACKed: {}", r.last_error);
        assert_eq!(r.sent, r.acked, "{t} acknowledged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_ports_proxy_bytes_and_unknown_protocols_are_sniffed() {
    let net = 109;
    let services = format!(
        r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {{name: echo, namespace: testns1}}
  spec:
    selector: {{app: echo}}
    ports: [{{name: tcp-echo, port: 9000, targetPort: 9000}}]
- apiVersion: v1
  kind: Service
  metadata: {{name: web, namespace: testns1}}
  spec:
    selector: {{app: web}}
    ports: [{{name: web, port: 7070, targetPort: 7070}}]
- apiVersion: v1
  kind: Pod
  metadata: {{name: echo-1, namespace: testns1, labels: {{app: echo}}}}
  status: {{phase: Running, podIP: 127.{net}.0.31}}
- apiVersion: v1
  kind: Pod
  metadata: {{name: web-1, namespace: testns1, labels: {{app: web}}}}
  status: {{phase: Running, podIP: 127.{net}.0.41}}
"#
    );
    let sb = Sandbox::start(net, &[("tcp.yaml", &services)], "NONE").await;
    let _echo = tcp_echo("echo", &format!("127.{net}.0.31:9000")).await;
    let web = Upstream::start("web", &format!("127.{net}.0.41:7070")).await;
    let ip = format!("127.{net}.0.21");

    // A tcp- port: bytes in, bytes out, through the TCP proxy to the service's endpoint.
    assert_eq!(
        tcp_roundtrip(&format!("{ip}:9000"), b"hello", Duration::from_secs(5))
            .await
            .expect("a TCP reply"),
        "echo:hello"
    );

    // An unnamed-protocol port: HTTP is recognised and routed by Host...
    let c = client();
    let r = send(
        &c,
        "GET",
        &format!("{ip}:7070"),
        "web.testns1.svc.cluster.local",
        "/x",
        &[],
    )
    .await;
    assert_eq!((r.status, r.served_by.as_deref()), (200, Some("web")));
    assert_eq!(web.count(), 1);
    // ...and anything else is proxied as TCP to the same service.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(format!("{ip}:7070"))
        .await
        .unwrap();
    s.write_all(b"PING\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("a reply from the TCP path")
        .unwrap();
    assert!(
        n > 0,
        "the TCP chain reached the web upstream (which answers with an HTTP error)"
    );
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let _ = sb;
}
