//! VirtualService HTTP features through a real Envoy (faults, timeouts, retries, mirroring,
//! rewrites, headers, CORS, direct responses and redirects), with the seed's "Traffic
//! Management" configurations (Fault Injection, Timeout, Retries, Mirroring) at shorter
//! durations. Each test has its own loopback network (127.140–159.0.x).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::support::*;

/// Starts the sandbox with `files` and waits until Envoy has the route configuration.
async fn start(net: u8, files: &[(&str, &str)]) -> Sandbox {
    let sb = Sandbox::start(net, files, "NONE").await;
    let stat = format!("{}.rds.8000.version_text", hcm_stats(&sb));
    let ready = eventually(Duration::from_secs(10), || async {
        sb.envoy
            .stat(&stat)
            .await
            .ok()
            .flatten()
            .is_some_and(|v| !v.is_empty())
    })
    .await;
    assert!(ready.is_some(), "Envoy never got route configuration 8000");
    sb
}

/// The stats prefix of the sidecar's outbound HTTP connection manager.
fn hcm_stats(sb: &Sandbox) -> String {
    format!("http.outbound_127.{}.0.21_8000", sb.net)
}

fn cluster_stat(subset: &str, host: &str, stat: &str) -> String {
    format!("cluster.outbound|8000|{subset}|{host}.{stat}")
}

async fn timed(
    c: &reqwest::Client,
    sb: &Sandbox,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (Reply, Duration) {
    let start = Instant::now();
    let r = send(c, method, &sb.listener, HOST, path, headers).await;
    (r, start.elapsed())
}

/// `n` GETs of `path`, 20 at a time, each with its latency.
async fn concurrent(
    c: &reqwest::Client,
    sb: &Sandbox,
    path: &str,
    n: usize,
) -> Vec<(Reply, Duration)> {
    futures::stream::iter(0..n)
        .map(|_| timed(c, sb, "GET", path, &[]))
        .buffer_unordered(20)
        .collect()
        .await
}

/// Requests `upstream` saw whose path starts with `prefix`.
fn seen_with_prefix(upstream: &Upstream, prefix: &str) -> Vec<Seen> {
    upstream
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.starts_with(prefix))
        .cloned()
        .collect()
}

/// Requests `upstream` saw carrying `x-fail-id: id`.
fn seen_with_id(upstream: &Upstream, id: &str) -> Vec<Seen> {
    upstream
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.headers.get("x-fail-id").map(String::as_str) == Some(id))
        .cloned()
        .collect()
}

fn within(d: Duration, low_ms: u64, high_ms: u64) -> bool {
    d >= Duration::from_millis(low_ms) && d <= Duration::from_millis(high_ms)
}

// ---------------------------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------------------------

/// The seed's delay fault (deprecated integer `percent: 50`), and the same with a
/// `percentage` double, at 200ms instead of 3s.
const VS_DELAY: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  http:
  - match:
    - uri:
        prefix: /percentage
    fault:
      delay:
        percentage:
          value: 50
        fixedDelay: 200ms
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
  - fault:
      delay:
        percent: 50
        fixedDelay: 200ms
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
      weight: 100
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_fault_delays_about_half_of_the_requests() {
    let sb = start(140, &[("vs.yaml", VS_DELAY)]).await;
    let c = client();
    let delays = format!("{}.fault.delays_injected", hcm_stats(&sb));
    let n = 200;
    for path in ["/headers", "/percentage/x"] {
        let before = sb.envoy.counter(&delays).await.unwrap();
        let replies = concurrent(&c, &sb, path, n).await;
        assert!(
            replies
                .iter()
                .all(|(r, _)| r.status == 200 && r.served_by.as_deref() == Some("v1")),
            "{path}: every request reaches v1"
        );
        let injected = (sb.envoy.counter(&delays).await.unwrap() - before) as usize;
        let share = injected as f64 * 100.0 / n as f64;
        assert!(
            (40.0..=60.0).contains(&share),
            "{path}: {injected}/{n} delayed, not 50±10%"
        );
        // Every delayed request really waited the fixed delay (Envoy arms the timer from its
        // event loop's cached clock, so it may end a few ms early), and the others did not (a
        // few slow answers are allowed for a busy machine).
        let mut took: Vec<u128> = replies.iter().map(|(_, d)| d.as_millis()).collect();
        took.sort();
        let slow = took.iter().filter(|ms| **ms >= 180).count();
        assert!(
            slow >= injected && slow <= injected + n / 20,
            "{path}: {slow} requests took ≥180ms, {injected} were delayed: {took:?}"
        );
    }
}

/// The seed's abort fault (500 for `client-id: gogo123`), a gRPC abort, and a default route so
/// that other requests are answered.
const VS_ABORT: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  gateways:
  - mesh
  http:
  - fault:
      abort:
        httpStatus: 500
        percentage:
          value: 100
    match:
    - headers:
        client-id:
          exact: gogo123
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
  - fault:
      abort:
        grpcStatus: UNAVAILABLE
        percentage:
          value: 100
    match:
    - headers:
        client-id:
          exact: grpc
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
  - route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_fault_answers_500_for_the_matching_header_only() {
    let sb = start(141, &[("vs.yaml", VS_ABORT)]).await;
    let c = client();
    let aborts = format!("{}.fault.aborts_injected", hcm_stats(&sb));
    for _ in 0..20 {
        let r = send(
            &c,
            "GET",
            &sb.listener,
            HOST,
            "/headers",
            &[("client-id", "gogo123")],
        )
        .await;
        assert_eq!(r.status, 500);
        assert_eq!(r.body, "fault filter abort");
        assert_eq!(r.served_by, None);
    }
    assert_eq!(
        sb.v1.count(),
        0,
        "aborted requests never reach the upstream"
    );
    assert_eq!(sb.envoy.counter(&aborts).await.unwrap(), 20);

    for _ in 0..10 {
        let r = send(&c, "GET", &sb.listener, HOST, "/headers", &[]).await;
        assert_eq!((r.status, r.served_by.as_deref()), (200, Some("v1")));
        let r = send(
            &c,
            "GET",
            &sb.listener,
            HOST,
            "/headers",
            &[("client-id", "other")],
        )
        .await;
        assert_eq!((r.status, r.served_by.as_deref()), (200, Some("v1")));
    }
    assert_eq!(sb.v1.count(), 20);

    // A gRPC abort answers a gRPC request with its status (UNAVAILABLE = 14).
    let r = send(
        &c,
        "POST",
        &sb.listener,
        HOST,
        "/pkg.Service/Method",
        &[("client-id", "grpc"), ("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(r.served_by, None);
    assert_eq!(
        r.headers.get("grpc-status").map(|v| v.to_str().unwrap()),
        Some("14"),
        "{r:?}"
    );
    assert_eq!(sb.v1.count(), 20);
}

// ---------------------------------------------------------------------------------------------
// Timeouts and retries
// ---------------------------------------------------------------------------------------------

/// The seed's request timeout, 500ms instead of 10s.
const VS_TIMEOUT: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  http:
  - route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
    timeout: 500ms
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_answers_504_at_the_timeout() {
    let sb = start(142, &[("vs.yaml", VS_TIMEOUT)]).await;
    let c = client();
    let (r, took) = timed(&c, &sb, "GET", "/delay/0.1", &[("x-delay-ms", "100")]).await;
    assert_eq!((r.status, r.served_by.as_deref()), (200, Some("v1")));
    assert!(took >= Duration::from_millis(100), "{took:?}");

    for _ in 0..3 {
        let (r, took) = timed(&c, &sb, "GET", "/delay/2", &[("x-delay-ms", "2000")]).await;
        assert_eq!(r.status, 504);
        assert_eq!(r.body, "upstream request timeout");
        assert!(within(took, 400, 600), "504 after {took:?}, not 500ms±20%");
    }
    // A timeout is not retried (the default retry policy does not cover it).
    assert_eq!(seen_with_prefix(&sb.v1, "/delay/2").len(), 3);
}

/// The seed's retries (`5xx,connect-failure`, 3 attempts; the seed's `5xx, connect-failure`
/// with a space is rejected by Istio's validation), a numeric `retryOn`, and a route left to
/// Istio's default policy.
const VS_RETRIES: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  http:
  - match:
    - uri:
        prefix: /codes
    retries:
      attempts: 2
      retryOn: "429"
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
  - match:
    - uri:
        prefix: /default
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
  - route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: 5xx,connect-failure
"#;

/// A service whose only endpoint refuses connections, with and without retries.
fn flaky(net: u8) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: flaky, namespace: testns1}}
spec:
  ports: [{{name: http, port: 8000, targetPort: 8080}}]
  selector: {{app: flaky}}
---
apiVersion: v1
kind: Pod
metadata: {{name: flaky-1, namespace: testns1, labels: {{app: flaky}}}}
status: {{phase: Running, podIP: 127.{net}.0.31}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: flaky, namespace: testns1}}
spec:
  hosts: [flaky.testns1.svc.cluster.local]
  http:
  - match:
    - uri: {{prefix: /off}}
    retries:
      attempts: 0
    route:
    - destination: {{host: flaky.testns1.svc.cluster.local}}
  - route:
    - destination: {{host: flaky.testns1.svc.cluster.local}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_recover_from_failures_and_envoy_counts_them() {
    let net = 143;
    let flaky = flaky(net);
    let sb = start(net, &[("vs.yaml", VS_RETRIES), ("flaky.yaml", &flaky)]).await;
    let c = client();
    let retries = cluster_stat("v1", HOST, "upstream_rq_retry");
    let counter = |name: String| {
        let envoy = &sb.envoy;
        async move { envoy.counter(&name).await.unwrap() }
    };

    // Fails twice with 503, then succeeds: 5xx is retried.
    let r = send(
        &c,
        "GET",
        &sb.listener,
        HOST,
        "/get",
        &[("x-fail-id", "a"), ("x-fail-times", "2")],
    )
    .await;
    assert_eq!((r.status, r.served_by.as_deref()), (200, Some("v1")));
    assert_eq!(seen_with_id(&sb.v1, "a").len(), 3);
    assert_eq!(counter(retries.clone()).await, 2);
    // The attempt count reaches the upstream (include_request_attempt_count).
    let attempts: Vec<String> = seen_with_id(&sb.v1, "a")
        .iter()
        .map(|s| s.headers["x-envoy-attempt-count"].clone())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);

    // Always failing: 1 + 3 attempts, then the last answer.
    let r = send(
        &c,
        "GET",
        &sb.listener,
        HOST,
        "/get",
        &[("x-fail-id", "b"), ("x-fail-times", "100")],
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(seen_with_id(&sb.v1, "b").len(), 4);
    assert_eq!(counter(retries.clone()).await, 5);
    assert_eq!(
        counter(cluster_stat("v1", HOST, "upstream_rq_retry_limit_exceeded")).await,
        1
    );

    // retryOn "429": a status code becomes a retriable status code...
    let r = send(
        &c,
        "GET",
        &sb.listener,
        HOST,
        "/codes",
        &[
            ("x-fail-id", "c"),
            ("x-fail-times", "1"),
            ("x-fail-status", "429"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(seen_with_id(&sb.v1, "c").len(), 2);
    // ...and nothing else is retried.
    let r = send(
        &c,
        "GET",
        &sb.listener,
        HOST,
        "/codes",
        &[("x-fail-id", "d"), ("x-fail-times", "1")],
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(seen_with_id(&sb.v1, "d").len(), 1);

    // Istio 1.24's default policy does not retry a 503.
    let r = send(
        &c,
        "GET",
        &sb.listener,
        HOST,
        "/default",
        &[("x-fail-id", "e"), ("x-fail-times", "1")],
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(seen_with_id(&sb.v1, "e").len(), 1);
    assert_eq!(counter(retries.clone()).await, 6);

    // Connection failures: the default policy retries twice; attempts 0 disables retries.
    let flaky_host = "flaky.testns1.svc.cluster.local";
    let flaky_retries = cluster_stat("", flaky_host, "upstream_rq_retry");
    let r = send(&c, "GET", &sb.listener, flaky_host, "/x", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(counter(flaky_retries.clone()).await, 2);
    let r = send(&c, "GET", &sb.listener, flaky_host, "/off", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(counter(flaky_retries.clone()).await, 2);
    assert_eq!(
        counter(cluster_stat("", flaky_host, "upstream_cx_connect_fail")).await,
        4,
        "3 attempts with the default policy, 1 with attempts: 0"
    );
}

/// The seed's "retries and timeout" (3 attempts of 2s, 10s overall) at a fifth of the time.
const VS_RETRIES_TIMEOUT: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  http:
  - route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
    retries:
      attempts: 3
      perTryTimeout: 400ms
      retryOn: 5xx,connect-failure
    timeout: 2s
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeouts_add_up_before_the_overall_timeout() {
    let sb = start(144, &[("vs.yaml", VS_RETRIES_TIMEOUT)]).await;
    let c = client();
    let (r, took) = timed(&c, &sb, "GET", "/delay/3", &[("x-delay-ms", "3000")]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.body, "upstream request timeout");
    // 1 + 3 attempts of 400ms (plus jittered back-off), before the 2s timeout.
    assert!(within(took, 1550, 2150), "504 after {took:?}");
    let seen = seen_with_prefix(&sb.v1, "/delay/3");
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(
        sb.envoy
            .counter(&cluster_stat("v1", HOST, "upstream_rq_per_try_timeout"))
            .await
            .unwrap(),
        4
    );
    let (r, _) = timed(&c, &sb, "GET", "/delay/0.1", &[("x-delay-ms", "100")]).await;
    assert_eq!(r.status, 200);
}

/// The seed's "retry only for idempotent methods" at a fifth of the time: GET retried (2
/// attempts of 600ms, 2s overall), POST not (600ms overall, default policy).
const VS_IDEMPOTENT: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  http:
  - match:
    - uri:
        prefix: /status
      method:
        exact: GET
    - uri:
        prefix: /delay
      method:
        exact: GET
    timeout: 2s
    retries:
      attempts: 2
      perTryTimeout: 600ms
      retryOn: 5xx,connect-failure
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
  - match:
    - uri:
        prefix: /status
      method:
        exact: POST
    - uri:
        prefix: /delay
      method:
        exact: POST
    timeout: 600ms
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_requests_are_retried() {
    let sb = start(145, &[("vs.yaml", VS_IDEMPOTENT)]).await;
    let c = client();
    let count = |method: &str, path: &str| {
        sb.v1
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .count()
    };

    // Fast enough: 200 either way.
    for method in ["GET", "POST"] {
        let (r, _) = timed(&c, &sb, method, "/delay/0.4", &[("x-delay-ms", "400")]).await;
        assert_eq!(r.status, 200, "{method}");
    }
    // Too slow: GET tries 3 times (≈1.8s), POST gives up at its 600ms timeout.
    let (r, took) = timed(&c, &sb, "GET", "/delay/0.8", &[("x-delay-ms", "800")]).await;
    assert_eq!(r.status, 504);
    assert!(within(took, 1750, 2200), "GET 504 after {took:?}");
    assert_eq!(count("GET", "/delay/0.8"), 3);
    let (r, took) = timed(&c, &sb, "POST", "/delay/0.8", &[("x-delay-ms", "800")]).await;
    assert_eq!(r.status, 504);
    assert!(within(took, 500, 800), "POST 504 after {took:?}");
    assert_eq!(count("POST", "/delay/0.8"), 1);

    // A 503 is retried for GET, not for POST.
    let r = send(
        &c,
        "GET",
        &sb.listener,
        HOST,
        "/status/503",
        &[("x-fail-id", "get"), ("x-fail-times", "1")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(seen_with_id(&sb.v1, "get").len(), 2);
    let r = send(
        &c,
        "POST",
        &sb.listener,
        HOST,
        "/status/503",
        &[("x-fail-id", "post"), ("x-fail-times", "1")],
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(seen_with_id(&sb.v1, "post").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Mirroring
// ---------------------------------------------------------------------------------------------

/// The seed's mirror (v1 answers, 100% copied to v2 with `mirror_percent`), plus
/// `mirrorPercentage: 50` and `mirrors`.
const VS_MIRROR: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  gateways:
  - mesh
  http:
  - match:
    - uri:
        prefix: /half
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
    mirror:
      host: httpbin.testns1.svc.cluster.local
      port:
        number: 8000
      subset: v2
    mirrorPercentage:
      value: 50
  - match:
    - uri:
        prefix: /mirrors
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v1
    mirrors:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v2
  - route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
      weight: 100
    # Mirror 100% traffic for v1 to v2 service:
    mirror:
      host: httpbin.testns1.svc.cluster.local
      port:
        number: 8000
      subset: v2
    mirror_percent: 100
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_copies_requests_to_v2_with_a_shadow_host() {
    let sb = start(146, &[("vs.yaml", VS_MIRROR)]).await;
    let c = client();
    let mirrored = |prefix: &'static str, n: usize| {
        let v2 = &sb.v2;
        async move { seen_with_prefix(v2, prefix).len() >= n }
    };

    for _ in 0..50 {
        let r = send(&c, "GET", &sb.listener, HOST, "/headers", &[]).await;
        assert_eq!((r.status, r.served_by.as_deref()), (200, Some("v1")));
    }
    let r = send(
        &c,
        "GET",
        &sb.listener,
        &format!("{HOST}:8000"),
        "/headers-with-port",
        &[],
    )
    .await;
    assert_eq!(r.served_by.as_deref(), Some("v1"));
    assert!(
        eventually(Duration::from_secs(5), || mirrored("/headers", 51))
            .await
            .is_some(),
        "v2 got {} copies",
        seen_with_prefix(&sb.v2, "/headers").len()
    );
    let copies = seen_with_prefix(&sb.v2, "/headers");
    assert_eq!(copies.len(), 51);
    let hosts: BTreeMap<&str, usize> = copies.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.headers["host"].as_str()).or_default() += 1;
        m
    });
    // Envoy appends `-shadow` to the host, before any port.
    assert_eq!(
        hosts,
        BTreeMap::from([
            ("httpbin.testns1.svc.cluster.local-shadow", 50),
            ("httpbin.testns1.svc.cluster.local-shadow:8000", 1),
        ])
    );
    assert_eq!(seen_with_prefix(&sb.v1, "/headers").len(), 51);

    // `mirrors` without a percentage: every request.
    for _ in 0..20 {
        let r = send(&c, "GET", &sb.listener, HOST, "/mirrors", &[]).await;
        assert_eq!(r.served_by.as_deref(), Some("v1"));
    }
    assert!(
        eventually(Duration::from_secs(5), || mirrored("/mirrors", 20))
            .await
            .is_some()
    );

    // mirrorPercentage 50: about half.
    let n = 200;
    let replies = concurrent(&c, &sb, "/half", n).await;
    assert!(
        replies
            .iter()
            .all(|(r, _)| r.served_by.as_deref() == Some("v1"))
    );
    // Copies are fire-and-forget: let the last ones land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let copied = seen_with_prefix(&sb.v2, "/half").len();
    let share = copied as f64 * 100.0 / n as f64;
    assert!(
        (35.0..=65.0).contains(&share),
        "{copied}/{n} mirrored, not 50±15%"
    );
}

// ---------------------------------------------------------------------------------------------
// Rewrites and headers
// ---------------------------------------------------------------------------------------------

const VS_HEADERS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  http:
  - name: exact-rewrite
    match:
    - uri:
        exact: /old
    rewrite:
      uri: /new
      authority: rewritten.example
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v1
  - name: regex-match-rewrite
    match:
    - uri:
        regex: /re/[0-9]+
    rewrite:
      uri: /regexed
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v1
  - name: prefix-rewrite
    match:
    - uri:
        prefix: /api/
    rewrite:
      uri: /v2/
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v1
  - name: regex-rewrite
    match:
    - uri:
        prefix: /items/
    rewrite:
      uriRegexRewrite:
        match: ^/items/([0-9]+)$
        rewrite: /item/\1/details
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v1
  - name: single
    match:
    - uri:
        prefix: /single
    headers:
      request:
        set:
          host: via-header.example
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v1
      headers:
        request:
          add:
            x-dest: single
        response:
          set:
            x-dest-resp: single
  - name: weighted
    headers:
      request:
        set:
          x-set: route-set
        add:
          x-add: route-add
        remove:
        - x-remove
      response:
        set:
          x-resp-set: route-set
        add:
          x-resp-add: route-add
        remove:
        - x-resp-remove
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v1
      weight: 50
      headers:
        request:
          set:
            x-dest: v1
        response:
          set:
            x-dest-resp: v1
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v2
      weight: 50
      headers:
        request:
          set:
            x-dest: v2
            host: v2.example
          remove:
          - x-remove-v2
        response:
          add:
            x-dest-resp: v2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_and_header_operations_reach_upstream_and_client() {
    let sb = start(147, &[("vs.yaml", VS_HEADERS)]).await;
    let c = client();
    let last = |u: &Upstream| u.seen.lock().unwrap().last().cloned().unwrap();

    // Exact match: the whole path is replaced (the query string stays), and the authority.
    for (path, upstream_path) in [("/old", "/new"), ("/old?q=1", "/new?q=1")] {
        let r = send(&c, "GET", &sb.listener, HOST, path, &[]).await;
        assert_eq!(r.served_by.as_deref(), Some("v1"));
        let seen = last(&sb.v1);
        assert_eq!(seen.path, upstream_path);
        assert_eq!(seen.headers["host"], "rewritten.example");
    }
    // Regex match: the whole path is replaced too.
    send(&c, "GET", &sb.listener, HOST, "/re/12?x=1", &[]).await;
    assert_eq!(last(&sb.v1).path, "/regexed?x=1");
    assert_eq!(last(&sb.v1).headers["host"], HOST);
    // Prefix match: the prefix is replaced.
    send(&c, "GET", &sb.listener, HOST, "/api/users/7", &[]).await;
    assert_eq!(last(&sb.v1).path, "/v2/users/7");
    assert_eq!(last(&sb.v1).headers["host"], HOST);
    // Regex rewrite.
    send(&c, "GET", &sb.listener, HOST, "/items/42", &[]).await;
    assert_eq!(last(&sb.v1).path, "/item/42/details");

    // One destination: its header operations join the rule's; `host` in `set` rewrites the
    // authority.
    let r = send(&c, "GET", &sb.listener, HOST, "/single", &[]).await;
    assert_eq!(r.headers["x-dest-resp"], "single");
    let seen = last(&sb.v1);
    assert_eq!(seen.headers["host"], "via-header.example");
    assert_eq!(seen.headers["x-dest"], "single");

    // Several destinations: rule-level operations everywhere, each destination's own on its
    // cluster.
    let mut served = BTreeMap::<String, usize>::new();
    for _ in 0..40 {
        let r = send(
            &c,
            "GET",
            &sb.listener,
            HOST,
            "/headers",
            &[
                ("x-set", "client"),
                ("x-add", "client"),
                ("x-remove", "gone"),
                ("x-remove-v2", "kept-on-v1"),
                ("x-response-header", "x-resp-set=upstream"),
                ("x-response-header", "x-resp-add=upstream"),
                ("x-response-header", "x-resp-remove=upstream"),
            ],
        )
        .await;
        let who = r.served_by.clone().unwrap();
        assert_eq!(r.headers["x-resp-set"], "route-set");
        let added: Vec<&str> = r
            .headers
            .get_all("x-resp-add")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(added, ["upstream", "route-add"]);
        assert!(r.headers.get("x-resp-remove").is_none());
        assert_eq!(r.headers["x-dest-resp"], who.as_str());
        let upstream = if who == "v1" { &sb.v1 } else { &sb.v2 };
        let seen = last(upstream);
        assert_eq!(seen.headers["x-set"], "route-set");
        assert_eq!(seen.headers["x-add"], "client,route-add");
        assert!(!seen.headers.contains_key("x-remove"));
        assert_eq!(seen.headers["x-dest"], who);
        if who == "v1" {
            assert_eq!(seen.headers["x-remove-v2"], "kept-on-v1");
            assert_eq!(seen.headers["host"], HOST);
        } else {
            assert!(!seen.headers.contains_key("x-remove-v2"));
            assert_eq!(seen.headers["host"], "v2.example");
        }
        *served.entry(who).or_default() += 1;
    }
    assert_eq!(served.len(), 2, "both destinations served: {served:?}");
}

// ---------------------------------------------------------------------------------------------
// CORS
// ---------------------------------------------------------------------------------------------

const VS_CORS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  http:
  - match:
    - uri:
        prefix: /legacy
    corsPolicy:
      allowOrigin:
      - https://legacy.example
      allowMethods:
      - GET
      unmatchedPreflights: IGNORE
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v1
  - corsPolicy:
      allowOrigins:
      - exact: https://good.example
      - regex: https://.*\.ok\.example
      allowMethods:
      - POST
      - GET
      allowHeaders:
      - x-custom
      exposeHeaders:
      - x-exposed
      maxAge: 24h
      allowCredentials: true
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_with_the_policy() {
    let sb = start(148, &[("vs.yaml", VS_CORS)]).await;
    let c = client();
    let preflight = |path: &'static str, origin: &'static str| {
        let (c, l) = (c.clone(), sb.listener.clone());
        async move {
            send(
                &c,
                "OPTIONS",
                &l,
                HOST,
                path,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                ],
            )
            .await
        }
    };
    let header =
        |r: &Reply, name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_string());

    for origin in ["https://good.example", "https://a.ok.example"] {
        let r = preflight("/anything", origin).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.served_by, None,
            "Envoy answers a matching preflight itself"
        );
        assert_eq!(
            header(&r, "access-control-allow-origin").as_deref(),
            Some(origin)
        );
        assert_eq!(
            header(&r, "access-control-allow-methods").as_deref(),
            Some("POST,GET")
        );
        assert_eq!(
            header(&r, "access-control-allow-headers").as_deref(),
            Some("x-custom")
        );
        assert_eq!(
            header(&r, "access-control-max-age").as_deref(),
            Some("86400")
        );
        assert_eq!(
            header(&r, "access-control-allow-credentials").as_deref(),
            Some("true")
        );
    }
    assert_eq!(sb.v1.count(), 0);

    // A request from an allowed origin gets the allow-origin and expose headers.
    let r = send(
        &c,
        "GET",
        &sb.listener,
        HOST,
        "/anything",
        &[("origin", "https://good.example")],
    )
    .await;
    assert_eq!(r.served_by.as_deref(), Some("v1"));
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("https://good.example")
    );
    assert_eq!(
        header(&r, "access-control-expose-headers").as_deref(),
        Some("x-exposed")
    );

    // Other origins get no CORS headers; their preflights are forwarded by default...
    let r = preflight("/anything", "https://evil.example").await;
    assert_eq!(r.served_by.as_deref(), Some("v1"));
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    // ...and not with unmatchedPreflights: IGNORE.
    let before = sb.v1.count();
    let r = preflight("/legacy", "https://evil.example").await;
    assert_eq!(r.served_by, None);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(sb.v1.count(), before);
    // The deprecated exact `allowOrigin`.
    let r = preflight("/legacy", "https://legacy.example").await;
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("https://legacy.example")
    );
    assert_eq!(sb.v1.count(), before);
}

// ---------------------------------------------------------------------------------------------
// Direct responses and redirects
// ---------------------------------------------------------------------------------------------

const VS_DIRECT: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  http:
  - match:
    - uri:
        exact: /bytes
    directResponse:
      status: 200
      body:
        bytes: aGVsbG8gYnl0ZXM=
  - match:
    - uri:
        exact: /string
    directResponse:
      status: 418
      body:
        string: teapot
  - match:
    - uri:
        prefix: /derive
    redirect:
      uri: /elsewhere
      derivePort: FROM_REQUEST_PORT
  - match:
    - uri:
        prefix: /secure
    redirect:
      authority: secure.example
      scheme: https
      port: 443
      redirectCode: 308
  - match:
    - uri:
        prefix: /port
    redirect:
      authority: other.example
      port: 9090
      redirectCode: 307
  - match:
    - uri:
        prefix: /default-port
    redirect:
      authority: other.example
      port: 80
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_responses_and_redirects() {
    let sb = start(149, &[("vs.yaml", VS_DIRECT)]).await;
    let c = client();
    let r = send(&c, "GET", &sb.listener, HOST, "/bytes", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "hello bytes"));
    let r = send(&c, "GET", &sb.listener, HOST, "/string", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (418, "teapot"));

    let location = |r: &Reply| r.headers["location"].to_str().unwrap().to_string();
    let r = send(&c, "GET", &sb.listener, HOST, "/derive/x", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(location(&r), format!("http://{HOST}:8000/elsewhere"));
    let r = send(&c, "GET", &sb.listener, HOST, "/secure/x?a=1", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(location(&r), "https://secure.example/secure/x?a=1");
    let r = send(&c, "GET", &sb.listener, HOST, "/port/x", &[]).await;
    assert_eq!(r.status, 307);
    assert_eq!(location(&r), "http://other.example:9090/port/x");
    let r = send(&c, "GET", &sb.listener, HOST, "/default-port", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(location(&r), "http://other.example/default-port");
    assert_eq!(sb.v1.count() + sb.v2.count(), 0);
}
