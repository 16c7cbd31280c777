//! Scoped pushes, counted on the server: a change reaches only the proxies whose config it
//! changes, and only the types it changes (an endpoint change is pushed as EDS alone).

use std::time::Duration;

use crate::support::*;

/// A namespace whose proxies see only their own namespace (Istio's Sidecar isolation).
const ISOLATED: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: isolated}
---
apiVersion: v1
kind: Service
metadata: {name: local, namespace: isolated}
spec:
  selector: {app: local}
  ports: [{name: http, port: 7000, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: local, namespace: isolated, labels: {app: local}}
status: {phase: Running, podIP: 127.221.0.41}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: isolated}
spec:
  egress:
  - hosts: ["./*"]
"#;

/// (CDS, EDS, LDS, RDS) nonces last sent to the proxy named `proxy`.
async fn sent(cp: &ControlPlane, proxy: &str) -> [String; 4] {
    let syncz = cp.syncz().await;
    let e = syncz
        .iter()
        .find(|e| e.proxy == proxy)
        .unwrap_or_else(|| panic!("{proxy} connected"));
    [
        e.cluster_sent.clone(),
        e.endpoint_sent.clone(),
        e.listener_sent.clone(),
        e.route_sent.clone(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_only_the_proxies_and_types_they_change() {
    let net = 221;
    let sandbox = sandbox(net);
    let cp = ControlPlane::start(&[
        ("sandbox.yaml", sandbox.as_str()),
        ("vs.yaml", VS_90_10),
        ("isolated.yaml", ISOLATED),
    ])
    .await;
    let _v1 = Upstream::start("v1", &format!("127.{net}.0.11:8080")).await;
    let _v2 = Upstream::start("v2", &format!("127.{net}.0.12:8080")).await;
    let sleep_ip = format!("127.{net}.0.21");
    let _sleep = cp
        .sidecar(&sleep_ip, "sleep", "testns1", "app=sleep", "NONE")
        .await;
    let _local = cp
        .sidecar(
            &format!("127.{net}.0.22"),
            "client",
            "isolated",
            "app=client",
            "NONE",
        )
        .await;
    let sleep_before = sent(&cp, "sleep.testns1").await;
    let isolated_before = sent(&cp, "client.isolated").await;

    // A VirtualService change in testns1: the sleep proxy gets new routes (RDS only); the
    // isolated proxy, which cannot see testns1, gets nothing at all.
    cp.write("vs.yaml", VS_ALL_V2);
    let listener = format!("{sleep_ip}:8000");
    let moved = eventually(Duration::from_secs(5), || async {
        send(&client(), "GET", &listener, HOST, "/headers", &[])
            .await
            .served_by
            .as_deref()
            == Some("v2")
    })
    .await;
    assert!(moved.is_some());
    // Envoy may apply the routes before the server has recorded the send: wait for it.
    let recorded = eventually(Duration::from_secs(5), || async {
        sent(&cp, "sleep.testns1").await[3] != sleep_before[3]
    })
    .await;
    assert!(recorded.is_some(), "RDS pushed to sleep");
    // Give every proxy's push time to finish (a push that sends nothing is quick).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sleep_after = sent(&cp, "sleep.testns1").await;
    assert_eq!(sleep_after[0], sleep_before[0], "no CDS push to sleep");
    assert_eq!(sleep_after[1], sleep_before[1], "no EDS push to sleep");
    assert_eq!(sleep_after[2], sleep_before[2], "no LDS push to sleep");
    assert_eq!(
        sent(&cp, "client.isolated").await,
        isolated_before,
        "nothing pushed to the proxy that cannot see testns1"
    );

    let full_pushes = || async {
        let status: serde_json::Value = reqwest::get(format!("{}/debug/push_status", cp.http))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status["fullPushes"].as_u64().unwrap()
    };
    let full_before = full_pushes().await;

    // An endpoint change (a third httpbin pod): an incremental push, EDS only, to the proxy
    // that sees it.
    let with_pod = format!(
        "{sandbox}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: httpbin-v2-b\n  namespace: testns1\n  labels: {{app: httpbin, version: v2}}\nstatus:\n  phase: Running\n  podIP: 127.{net}.0.13\n"
    );
    cp.write("sandbox.yaml", &with_pod);
    let pushed = eventually(Duration::from_secs(5), || async {
        sent(&cp, "sleep.testns1").await[1] != sleep_after[1]
    })
    .await;
    assert!(pushed.is_some(), "EDS pushed for the new endpoint");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sleep_eds = sent(&cp, "sleep.testns1").await;
    assert_eq!(
        [&sleep_eds[0], &sleep_eds[2], &sleep_eds[3]],
        [&sleep_after[0], &sleep_after[2], &sleep_after[3]],
        "only EDS was pushed for an endpoint change"
    );
    assert_eq!(sent(&cp, "client.isolated").await, isolated_before);
    assert_eq!(
        full_pushes().await,
        full_before,
        "an endpoint-only change is not a full push"
    );
}
