//! The Kubernetes source against a real kube-apiserver (with etcd and the real
//! kube-controller-manager making EndpointSlices): the seed's manifests applied with kubectl
//! route exactly as the file-source tests do; edits, pod deletions and namespaces labelled
//! later reach Envoy within 2 s; the API server away for 30 s under traffic loses neither a
//! request nor a change; two replicas agree.

use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::support::*;

/// The seed's install: namespaces, httpbin v1/v2 (Deployments, as in the seed; container port
/// 8080 instead of 80 so that upstreams need no privileges), the sleep client, and the v1/v2
/// DestinationRule.
const SEED: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: testns1
  labels:
    istio-injection: enabled
---
apiVersion: v1
kind: Namespace
metadata:
  name: testns2
  labels:
    istio-injection: enabled
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: httpbin
  namespace: testns1
---
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  namespace: testns1
  labels:
    app: httpbin
spec:
  ports:
  - name: http
    port: 8000
    targetPort: 8080
  selector:
    app: httpbin
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpbin-v1
  namespace: testns1
spec:
  replicas: 1
  selector:
    matchLabels: {app: httpbin, version: v1}
  template:
    metadata:
      labels: {app: httpbin, version: v1}
    spec:
      serviceAccountName: httpbin
      containers:
      - image: docker.io/kennethreitz/httpbin
        name: httpbin
        ports:
        - containerPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpbin-v2
  namespace: testns1
spec:
  replicas: 1
  selector:
    matchLabels: {app: httpbin, version: v2}
  template:
    metadata:
      labels: {app: httpbin, version: v2}
    spec:
      serviceAccountName: httpbin
      containers:
      - image: docker.io/kennethreitz/httpbin
        name: httpbin
        ports:
        - containerPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sleep
  namespace: testns1
spec:
  replicas: 1
  selector:
    matchLabels: {app: sleep}
  template:
    metadata:
      labels: {app: sleep}
    spec:
      containers:
      - name: sleep
        image: curlimages/curl
        command: ["/bin/sleep", "infinity"]
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: httpbin
  namespace: testns1
spec:
  host: httpbin.testns1.svc.cluster.local
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"#;

/// A cluster with the seed applied and its pods running on `127.<net>.0.{11,12,21}`.
async fn seeded_cluster(net: u8) -> Cluster {
    let cluster = Cluster::start(net).await;
    cluster.apply(SEED);
    cluster.apply(VS_90_10);
    cluster
        .run_pods(
            "testns1",
            "app=httpbin,version=v1",
            &[&format!("127.{net}.0.11")],
        )
        .await;
    cluster
        .run_pods(
            "testns1",
            "app=httpbin,version=v2",
            &[&format!("127.{net}.0.12")],
        )
        .await;
    cluster
        .run_pods("testns1", "app=sleep", &[&format!("127.{net}.0.21")])
        .await;
    cluster
}

/// Sends `GET /headers` until `pred` holds for `n` answers in a row; returns how long that took
/// from `since`, or None after `timeout`.
async fn converged(
    listener: &str,
    since: Instant,
    timeout: Duration,
    n: usize,
    pred: impl Fn(&Reply) -> bool,
) -> Option<Duration> {
    let c = client();
    let mut streak = 0;
    let mut first_ok = None;
    while since.elapsed() < timeout {
        let r = send(&c, "GET", listener, HOST, "/headers", &[]).await;
        if pred(&r) {
            first_ok.get_or_insert(since.elapsed());
            streak += 1;
            if streak >= n {
                return first_ok;
            }
        } else {
            streak = 0;
            first_ok = None;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_manifests_applied_with_kubectl_route_like_files() {
    let net = 200;
    let cluster = seeded_cluster(net).await;
    let v1 = Upstream::start("v1", &format!("127.{net}.0.11:8080")).await;
    let v2 = Upstream::start("v2", &format!("127.{net}.0.12:8080")).await;
    let cp = ControlPlane::start_cluster(&cluster.kubeconfig).await;
    let ip = format!("127.{net}.0.21");
    let _envoy = cp
        .sidecar(&ip, "sleep", "testns1", "app=sleep", "NONE")
        .await;
    let listener = format!("{ip}:8000");

    // The same traffic assertions as the file source's routing test.
    assert_seed_split(&listener, &v1, &v2).await;

    // An edit with kubectl reaches Envoy within 2 s.
    let t = Instant::now();
    cluster.apply(VS_ALL_V2);
    let took = converged(&listener, t, Duration::from_secs(5), 20, |r| {
        r.served_by.as_deref() == Some("v2")
    })
    .await;
    assert!(
        took.is_some_and(|d| d <= Duration::from_secs(2)),
        "VirtualService change took {took:?} to reach Envoy (want ≤ 2s)"
    );

    // Without the VirtualService both versions serve; deleting v1's pod removes its endpoint
    // within 2 s (the pod stays Terminating without a kubelet; the EndpointSlice controller
    // marks it not ready, and not-ready endpoints are not served).
    cluster.kubectl(
        &["delete", "virtualservice", "-n", "testns1", "httpbin"],
        None,
    );
    let both = converged(&listener, Instant::now(), Duration::from_secs(5), 1, |r| {
        r.served_by.as_deref() == Some("v1")
    })
    .await;
    assert!(
        both.is_some(),
        "v1 serves again once the VirtualService is gone"
    );
    let v1_pod = cluster.kubectl(
        &[
            "get",
            "pods",
            "-n",
            "testns1",
            "-l",
            "version=v1",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
        None,
    );
    let t = Instant::now();
    cluster.kubectl(
        &["delete", "pod", "-n", "testns1", &v1_pod, "--wait=false"],
        None,
    );
    let took = converged(&listener, t, Duration::from_secs(5), 40, |r| {
        r.served_by.as_deref() == Some("v2")
    })
    .await;
    assert!(
        took.is_some_and(|d| d <= Duration::from_secs(2)),
        "pod deletion took {took:?} to remove its endpoint (want ≤ 2s)"
    );

    // The watch events are counted as istiod counts them, and Istio's control plane
    // dashboard finds every series it queries.
    let text = crate::metrics::scrape(&cp.http).await;
    crate::metrics::assert_istiod_shapes(&text, &["pilot_k8s_cfg_events", "pilot_k8s_reg_events"]);
    crate::metrics::assert_dashboard_series(&text);
    assert!(
        text.contains("pilot_k8s_cfg_events{type=\"VirtualService\",event=\"delete\"} 1")
            || text.contains("pilot_k8s_cfg_events{event=\"delete\",type=\"VirtualService\"} 1"),
        "the VirtualService deletion is a config event:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_labelled_later_is_discovered_and_mesh_config_reloads() {
    let net = 201;
    let cluster = Cluster::start(net).await;
    let sleep_ip = format!("127.{net}.0.21");
    // Mesh config from the `istio` ConfigMap: only namespaces labelled for discovery.
    cluster.apply(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: istio-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |
    discoverySelectors:
    - matchLabels:
        istio-discovery: enabled
---
apiVersion: v1
kind: Namespace
metadata:
  name: testns1
  labels: {istio-discovery: enabled}
---
apiVersion: v1
kind: Namespace
metadata:
  name: testns3
---
apiVersion: v1
kind: Namespace
metadata:
  name: testns4
"#,
    );
    // A web Service with one running pod in each of testns3 and testns4.
    for (ns, last) in [("testns3", 31), ("testns4", 41)] {
        cluster.apply(&format!(
            r#"apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
spec:
  ports:
  - {{name: http, port: 9000, targetPort: 8080}}
  selector: {{app: web}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: {ns}
  labels: {{app: web}}
spec:
  nodeName: {node}
  containers:
  - {{name: web, image: web, ports: [{{containerPort: 8080}}]}}
"#,
            node = crate::cluster::NODE
        ));
        cluster
            .run_pods(ns, "app=web", &[&format!("127.{net}.0.{last}")])
            .await;
    }
    let _web3 = Upstream::start("web3", &format!("127.{net}.0.31:8080")).await;
    let _web4 = Upstream::start("web4", &format!("127.{net}.0.41:8080")).await;

    let cp = ControlPlane::start_cluster(&cluster.kubeconfig).await;
    let _envoy = cp
        .sidecar(&sleep_ip, "sleep", "testns1", "app=sleep", "NONE")
        .await;
    let c = client();
    let get = |host: &'static str| {
        let c = c.clone();
        let listener = format!("{sleep_ip}:9000");
        async move {
            let r = c
                .get(format!("http://{listener}/"))
                .header("host", host)
                .send()
                .await
                .ok()?;
            r.headers()
                .get("x-served-by")
                .map(|v| v.to_str().unwrap().to_string())
        }
    };
    // Not discovered: no listener on the web port at all.
    assert_eq!(get("web.testns3.svc.cluster.local").await, None);

    let t = Instant::now();
    cluster.kubectl(
        &["label", "namespace", "testns3", "istio-discovery=enabled"],
        None,
    );
    let seen = eventually(Duration::from_secs(5), || async {
        get("web.testns3.svc.cluster.local").await.as_deref() == Some("web3")
    })
    .await;
    assert!(
        seen.is_some() && t.elapsed() <= Duration::from_secs(2) + Duration::from_millis(500),
        "testns3 labelled later reached Envoy after {:?} (want ≤ 2s)",
        t.elapsed()
    );
    assert_eq!(get("web.testns4.svc.cluster.local").await, None);

    // The istio ConfigMap is hot-reloaded: with no selectors every namespace is discovered.
    cluster.apply(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |
    accessLogFile: ""
"#,
    );
    let seen = eventually(Duration::from_secs(5), || async {
        get("web.testns4.svc.cluster.local").await.as_deref() == Some("web4")
    })
    .await;
    assert!(seen.is_some(), "mesh config change reached Envoy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restart_keeps_serving_and_converges_to_changes_made_meanwhile() {
    let net = 202;
    let mut cluster = seeded_cluster(net).await;
    let v1 = Upstream::start("v1", &format!("127.{net}.0.11:8080")).await;
    let v2 = Upstream::start("v2", &format!("127.{net}.0.12:8080")).await;
    let cp = ControlPlane::start_cluster(&cluster.kubeconfig).await;
    let ip = format!("127.{net}.0.21");
    let _envoy = cp
        .sidecar(&ip, "sleep", "testns1", "app=sleep", "NONE")
        .await;
    let listener = format!("{ip}:8000");
    let c = client();
    assert_eq!(
        send(&c, "GET", &listener, HOST, "/headers", &[])
            .await
            .status,
        200
    );
    let version_before = cp.snapshot_version();
    // Requests without pause from here to the end: none may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u16>::new()));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let traffic = {
        let (stop, failed, sent, listener) =
            (stop.clone(), failed.clone(), sent.clone(), listener.clone());
        tokio::spawn(async move {
            let c = client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = send(&c, "GET", &listener, HOST, "/headers", &[]).await;
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if r.status != 200 {
                    failed.lock().unwrap().push(r.status);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // The API server navarch watches goes away for 30 s; a second one on the same etcd takes
    // changes meanwhile.
    let down = Instant::now();
    cluster.stop_apiserver();
    let mut other = cluster.second_apiserver().await;
    other.apply(VS_ALL_V2);
    other.kubectl(
        &["delete", "destinationrule", "-n", "testns1", "httpbin"],
        None,
    );
    other.apply(
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin-subsets
  namespace: testns1
spec:
  host: httpbin.testns1.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#,
    );
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    // Meanwhile navarch keeps serving its last config: still ready, still the 90/10 split.
    assert_eq!(
        cp.snapshot_version(),
        version_before,
        "nothing changed for navarch"
    );
    let r = reqwest::get(format!("{}/ready", cp.http)).await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "navarch stays ready while the API server is down"
    );
    let counts = split(&c, &listener, HOST, "/headers", 50, &[]).await;
    assert!(counts.contains_key("v1"), "still the old split: {counts:?}");
    other.stop_apiserver();

    // Back on its own API server, navarch relists and converges: the VirtualService change
    // arrives, and the deleted DestinationRule is gone (its replacement keeps v2 routable).
    cluster.start_apiserver().await;
    let t = Instant::now();
    let took = converged(&listener, t, Duration::from_secs(60), 20, |r| {
        r.served_by.as_deref() == Some("v2")
    })
    .await;
    assert!(
        took.is_some(),
        "navarch converged after the API server came back"
    );
    let drs_now = || async {
        let configz = cp.configz().await;
        let mut names: Vec<String> = configz["configs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kind"] == "DestinationRule")
            .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    let replaced = eventually(Duration::from_secs(30), || async {
        drs_now().await == ["httpbin-subsets"]
    })
    .await;
    assert!(
        replaced.is_some(),
        "the DestinationRule deleted meanwhile is gone and its replacement is served: {:?}",
        drs_now().await
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.await.unwrap();
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent > 500, "{sent} requests during the outage and after");
    assert_eq!(
        *failed.lock().unwrap(),
        Vec::<u16>::new(),
        "no request failed while the API server was away and after it came back ({sent} sent)"
    );
    let _ = (v1, v2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_serve_identical_versions() {
    let net = 203;
    let cluster = seeded_cluster(net).await;
    let a = ControlPlane::start_cluster(&cluster.kubeconfig).await;
    let b = ControlPlane::start_cluster(&cluster.kubeconfig).await;
    let same = eventually(Duration::from_secs(10), || async {
        a.snapshot_version() == b.snapshot_version()
    })
    .await;
    assert!(
        same.is_some(),
        "replicas disagree: {} vs {}",
        a.snapshot_version(),
        b.snapshot_version()
    );
    // The same proxy (REDIRECT mode: nothing bound to its address) on each replica is sent
    // the same resources under the same versions.
    let ip = format!("127.{net}.0.21");
    let _ea = a
        .sidecar(&ip, "sleep", "testns1", "app=sleep", "REDIRECT")
        .await;
    let _eb = b
        .sidecar(&ip, "sleep", "testns1", "app=sleep", "REDIRECT")
        .await;
    let versions = |cp: &ControlPlane| {
        let cp_http = cp.http.clone();
        async move {
            let v: serde_json::Value = reqwest::get(format!("{cp_http}/debug/syncz"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let mut out = Vec::new();
            for (type_url, r) in v[0]["resources"].as_object().cloned().unwrap_or_default() {
                out.push((
                    type_url,
                    r["sentVersion"].clone(),
                    r["ackedVersion"].clone(),
                ));
            }
            out
        }
    };
    let (va, vb) = (versions(&a).await, versions(&b).await);

    assert!(va.len() >= 4, "CDS, EDS, LDS and RDS sent: {va:?}");
    assert_eq!(va, vb, "a proxy gets the same versions from either replica");
}

/// A VirtualService whose weights do not sum to 100, and one naming an undefined subset.
const BAD_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bad-weights
  namespace: testns1
spec:
  hosts: [httpbin.testns1.svc.cluster.local]
  http:
  - route:
    - destination: {host: httpbin.testns1.svc.cluster.local, subset: v1}
      weight: 50
    - destination: {host: httpbin.testns1.svc.cluster.local, subset: v2}
      weight: 40
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bad-subset
  namespace: testns1
spec:
  hosts: [httpbin.testns1.svc.cluster.local]
  http:
  - route:
    - destination: {host: httpbin.testns1.svc.cluster.local, subset: v3}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_holder_writes_validation_messages_and_leadership_moves() {
    let net = 204;
    let cluster = seeded_cluster(net).await;
    cluster.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: istio-system\n");
    let a = ControlPlane::start_cluster_as(&cluster.kubeconfig, "navarch-a").await;
    let b = ControlPlane::start_cluster_as(&cluster.kubeconfig, "navarch-b").await;
    let holder = || {
        cluster.kubectl(
            &[
                "get",
                "lease",
                "-n",
                "istio-system",
                "istio-analyze-leader",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        )
    };
    let lease = eventually(Duration::from_secs(10), || async {
        cluster
            .kubectl(&["get", "lease", "-n", "istio-system", "-o", "name"], None)
            .contains("istio-analyze-leader")
    })
    .await;
    assert!(lease.is_some(), "a replica took the Lease");
    let first = holder();
    assert!(
        first == "navarch-a" || first == "navarch-b",
        "holder {first:?}"
    );

    cluster.apply(BAD_VS);
    let status = |name: &str, path: &str| {
        cluster.kubectl(
            &[
                "get",
                "virtualservice",
                "-n",
                "testns1",
                name,
                "-o",
                &format!("jsonpath={{.status.validationMessages{path}}}"),
            ],
            None,
        )
    };
    let written = eventually(Duration::from_secs(10), || async {
        status("bad-weights", "[0].type.code") == "IST0106"
            && status("bad-subset", "[0].type.code") == "IST0101"
    })
    .await;
    assert!(
        written.is_some(),
        "validation messages written: {:?} / {:?}",
        status("bad-weights", ""),
        status("bad-subset", "")
    );
    let message = status("bad-weights", "[0].message");
    assert!(
        message.contains("spec.http[0].route") && message.contains("100"),
        "the message names the field and the rule: {message}"
    );

    // The leader goes away; the other replica takes the Lease and keeps status current.
    let (mut leader, survivor, survivor_id) = if first == "navarch-a" {
        (a, b, "navarch-b")
    } else {
        (b, a, "navarch-a")
    };
    leader.running.take().unwrap().shutdown().await;
    let moved = eventually(Duration::from_secs(20), || async {
        holder() == survivor_id
    })
    .await;
    assert!(
        moved.is_some(),
        "the Lease moved to {survivor_id}: {:?}",
        holder()
    );
    cluster.apply(&BAD_VS.replace("weight: 40", "weight: 50"));
    let cleared = eventually(Duration::from_secs(10), || async {
        status("bad-weights", "").is_empty()
    })
    .await;
    assert!(
        cleared.is_some(),
        "fixed: the new leader cleared the messages: {}",
        status("bad-weights", "")
    );
    assert_eq!(status("bad-subset", "[0].type.code"), "IST0101");
    drop(survivor);
}

/// A VirtualService that the CRD's open schema lets through with every field of the wrong
/// type, and a DestinationRule likewise.
const WRONG_TYPES: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wrong-types, namespace: testns1}
spec:
  hosts: 5
  gateways: {mesh: true}
  http: "all of it"
  tcp: 7
  tls: false
  exportTo: "."
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wrong-dr, namespace: testns1}
spec: {host: [1, 2], subsets: "v1", trafficPolicy: 3}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_objects_from_the_api_server_are_rejected_by_name_and_the_rest_is_served() {
    let net = 206;
    let cluster = seeded_cluster(net).await;
    let v1 = Upstream::start("v1", &format!("127.{net}.0.11:8080")).await;
    let v2 = Upstream::start("v2", &format!("127.{net}.0.12:8080")).await;
    let cp = ControlPlane::start_cluster(&cluster.kubeconfig).await;
    let ip = format!("127.{net}.0.21");
    let _envoy = cp
        .sidecar(&ip, "sleep", "testns1", "app=sleep", "NONE")
        .await;
    let listener = format!("{ip}:8000");

    cluster.apply(WRONG_TYPES);
    // 10,000 routes, created (not applied: kubectl apply's last-applied annotation would
    // double the object past etcd's 1.5 MiB limit), on a Service of httpbin's pods.
    cluster.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: testns1}\nspec:\n  ports: [{name: http, port: 8000, targetPort: 8080}]\n  selector: {app: httpbin}\n",
    );
    let routes: Vec<serde_json::Value> = (0..10_000)
        .map(|i| {
            serde_json::json!({"match": [{"uri": {"prefix": format!("/r{i}/")}}],
                "route": [{"destination": {"host": "httpbin", "subset": "v2"}}]})
        })
        .collect();
    let big = serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "big", "namespace": "testns1"},
        "spec": {"hosts": ["big.testns1.svc.cluster.local"], "http": routes},
    });
    cluster.kubectl(&["create", "-f", "-"], Some(&big.to_string()));

    let rejected = |configz: &serde_json::Value| {
        let errors = configz["errors"].as_array().unwrap();
        let named = |needle: &str| {
            errors
                .iter()
                .any(|e| e["error"].as_str().unwrap().contains(needle))
        };
        // serde stops at the first wrong field; which one comes first is the map's order.
        named("kubernetes: VirtualService testns1/wrong-types: field spec.")
            && named("kubernetes: DestinationRule testns1/wrong-dr: field spec.")
            && errors.iter().all(|e| {
                !e["error"].as_str().unwrap().contains("wrong-")
                    || e["error"].as_str().unwrap().contains("invalid type")
            })
    };
    let started = Instant::now();
    let mut configz = cp.configz().await;
    while !rejected(&configz) && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        configz = cp.configz().await;
    }
    assert!(
        rejected(&configz),
        "wrong types rejected with kind, name and field: {:#}",
        configz["errors"]
    );

    let c = client();
    let served = eventually(Duration::from_secs(30), || async {
        let r = send(
            &c,
            "GET",
            &listener,
            "big.testns1.svc.cluster.local",
            "/r9999/x",
            &[],
        )
        .await;
        r.served_by.as_deref() == Some("v2")
    })
    .await;
    assert!(served.is_some(), "route 10,000 of 10,000 reaches v2");
    assert_seed_split(&listener, &v1, &v2).await;
    let r = reqwest::get(format!("{}/ready", cp.http)).await.unwrap();
    assert_eq!(r.status(), 200);
}
