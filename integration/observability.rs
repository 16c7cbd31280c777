//! MeshConfig access logs (`accessLogFile`, `accessLogEncoding`, `accessLogFormat`) through a
//! real Envoy: the seed's "Check Envoy Access Logs" with Istio's default TEXT format, the JSON
//! encoding, a custom format, `/dev/stdout`, and no logs when the file is unset.

use std::path::Path;
use std::time::Duration;

use crate::support::*;

/// All of `/headers` to subset v1 (a named route); other paths have no route (404 `NR`);
/// `/broken` goes to subset v2, whose Pod nobody listens on (503 `UF`).
const VS_V1: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  http:
  - name: to-v1
    match:
    - uri:
        exact: /headers
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
  - name: broken
    match:
    - uri:
        prefix: /broken
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v2
"#;

const V1_CLUSTER: &str = "outbound|8000|v1|httpbin.testns1.svc.cluster.local";

/// The sandbox with [`VS_V1`], only the v1 upstream, and the sleep sidecar (NONE) under `mesh`.
async fn start(net: u8, mesh: &str) -> (ControlPlane, Upstream, navarch::envoy::EnvoyProcess) {
    let sandbox = sandbox(net);
    let files = [("sandbox.yaml", sandbox.as_str()), ("vs.yaml", VS_V1)];
    let cp = ControlPlane::start_with_mesh(&files, Some(mesh)).await;
    let v1 = Upstream::start("v1", &format!("127.{net}.0.11:8080")).await;
    let ip = format!("127.{net}.0.21");
    let envoy = cp
        .sidecar(&ip, "sleep", "testns1", "app=sleep", "NONE")
        .await;
    (cp, v1, envoy)
}

/// Waits (Envoy flushes file logs about every second) until `path` holds `n` lines.
async fn log_lines(path: &Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    eventually(Duration::from_secs(15), || {
        lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        let done = lines.len() >= n;
        async move { done }
    })
    .await;
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_file_uses_istios_default_text_format() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    let mesh = format!("accessLogFile: {}\n", path.display());
    let (_cp, v1, envoy) = start(170, &mesh).await;
    let listener = "127.170.0.21:8000";
    let c = client();

    let ok = send(
        &c,
        "GET",
        listener,
        HOST,
        "/headers",
        &[("user-agent", "obs-test")],
    )
    .await;
    assert_eq!(ok.served_by.as_deref(), Some("v1"));
    let nr = send(&c, "GET", listener, HOST, "/nothing-here", &[]).await;
    assert_eq!((nr.status, nr.served_by), (404, None));
    let uf = send(&c, "GET", listener, HOST, "/broken", &[]).await;
    assert_eq!(uf.status, 503);
    assert_eq!(v1.count(), 1);

    let lines = log_lines(&path, 3).await;
    assert_eq!(lines.len(), 3, "{lines:#?}\n{}", envoy.log_path.display());
    // [time] "GET /headers HTTP/1.1" 200 - via_upstream - "-" 0 <bytes> <ms> <ms> "-"
    // "obs-test" "<id>" "httpbin..." "127.170.0.11:8080" outbound|8000|v1|httpbin... ...
    let ok_line = &lines[0];
    assert!(ok_line.starts_with('['), "{ok_line}");
    assert!(
        ok_line.contains("] \"GET /headers HTTP/1.1\" 200 - via_upstream - \"-\" 0 "),
        "{ok_line}"
    );
    let request_id = v1.seen.lock().unwrap()[0].headers["x-request-id"].clone();
    assert!(
        ok_line.contains(&format!(
            "\"obs-test\" \"{request_id}\" \"{HOST}\" \"127.170.0.11:8080\" {V1_CLUSTER} "
        )),
        "{ok_line}"
    );
    let fields: Vec<&str> = ok_line.split(' ').collect();
    assert_eq!(fields.last(), Some(&"to-v1"), "route name last: {ok_line}");
    assert!(
        ok_line.contains(" 127.170.0.21:8000 "),
        "downstream local address: {ok_line}"
    );

    let nr_line = &lines[1];
    assert!(
        nr_line.contains("\"GET /nothing-here HTTP/1.1\" 404 NR route_not_found "),
        "{nr_line}"
    );
    let uf_line = &lines[2];
    assert!(
        // Istio's default retry policy retries the refused connect: `URX,UF`.
        uf_line.contains("\"GET /broken HTTP/1.1\" 503 URX,UF "),
        "{uf_line}"
    );
    assert!(
        uf_line.contains(" outbound|8000|v2|httpbin.testns1.svc.cluster.local "),
        "{uf_line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_encoding_writes_istios_json_fields() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.json");
    let mesh = format!(
        "accessLogFile: {}\naccessLogEncoding: JSON\n",
        path.display()
    );
    let (_cp, _v1, _envoy) = start(171, &mesh).await;
    let c = client();
    let ok = send(&c, "GET", "127.171.0.21:8000", HOST, "/headers", &[]).await;
    assert_eq!(ok.status, 200);
    let nr = send(&c, "GET", "127.171.0.21:8000", HOST, "/none", &[]).await;
    assert_eq!(nr.status, 404);

    let lines = log_lines(&path, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let entries: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mut keys: Vec<&str> = entries[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut expected: Vec<&str> = navarch::translate::filters::ISTIO_JSON_LOG_FIELDS
        .iter()
        .map(|(k, _)| *k)
        .collect();
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(entries[0]["upstream_cluster"], V1_CLUSTER);
    assert_eq!(entries[0]["response_code"], 200);
    assert_eq!(entries[0]["method"], "GET");
    assert_eq!(entries[0]["path"], "/headers");
    assert_eq!(entries[0]["route_name"], "to-v1");
    assert_eq!(entries[0]["upstream_host"], "127.171.0.11:8080");
    assert_eq!(entries[1]["response_code"], 404);
    assert_eq!(entries[1]["response_flags"], "NR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_format_to_dev_stdout_lands_in_envoys_output() {
    let mesh = "accessLogFile: /dev/stdout\naccessLogFormat: \"navarch-log %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER_RAW%\"\n";
    let (_cp, _v1, envoy) = start(172, mesh).await;
    let c = client();
    assert_eq!(
        send(&c, "GET", "127.172.0.21:8000", HOST, "/headers", &[])
            .await
            .status,
        200
    );
    assert_eq!(
        send(&c, "GET", "127.172.0.21:8000", HOST, "/none", &[])
            .await
            .status,
        404
    );
    let mut text = String::new();
    let found = eventually(Duration::from_secs(15), || {
        text = std::fs::read_to_string(&envoy.log_path).unwrap_or_default();
        let done = text.contains("navarch-log 404 NR -");
        async move { done }
    })
    .await;
    assert!(found.is_some(), "{text}");
    // Istio appends the newline a custom format lacks: one entry per line.
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("navarch-log"))
        .collect();
    assert_eq!(
        ours,
        [
            format!("navarch-log 200 - {V1_CLUSTER}").as_str(),
            "navarch-log 404 NR -"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_access_log_file_nothing_is_logged() {
    let (_cp, _v1, envoy) = start(173, "outboundTrafficPolicy:\n  mode: ALLOW_ANY\n").await;
    let c = client();
    assert_eq!(
        send(&c, "GET", "127.173.0.21:8000", HOST, "/headers", &[])
            .await
            .status,
        200
    );
    let dump = envoy
        .admin_get("/config_dump?resource=dynamic_listeners")
        .await
        .unwrap();
    assert!(dump.contains("envoy.filters.network.http_connection_manager"));
    assert!(
        !dump.contains("access_log"),
        "no access log configured: {dump}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = std::fs::read_to_string(&envoy.log_path).unwrap();
    assert!(!text.contains("\"GET /headers"), "{text}");
}
