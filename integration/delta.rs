//! Delta xDS (`api_type: DELTA_GRPC`) with a real Envoy: the foundation's routing through a
//! delta stream, live edits sent as deltas, and removals (a deleted service's cluster and
//! listener disappear from Envoy).

use std::time::Duration;

use crate::support::*;

const EXTRA: &str = r#"apiVersion: v1
kind: Service
metadata: {name: extra, namespace: testns1}
spec:
  selector: {app: extra}
  ports: [{name: http, port: 9000, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: extra, namespace: testns1, labels: {app: extra}}
status: {phase: Running, podIP: 127.220.0.31}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_envoy_routes_like_state_of_the_world_and_sees_removals() {
    let net = 220;
    let sandbox = sandbox(net);
    let cp = ControlPlane::start(&[
        ("sandbox.yaml", sandbox.as_str()),
        ("vs.yaml", VS_90_10),
        ("extra.yaml", EXTRA),
    ])
    .await;
    let v1 = Upstream::start("v1", &format!("127.{net}.0.11:8080")).await;
    let v2 = Upstream::start("v2", &format!("127.{net}.0.12:8080")).await;
    let _extra = Upstream::start("extra", &format!("127.{net}.0.31:8080")).await;
    let ip = format!("127.{net}.0.21");
    let envoy = cp
        .sidecar_delta(&ip, "sleep", "testns1", "app=sleep", "NONE")
        .await;
    let listener = format!("{ip}:8000");

    // The same routing as over State of the World.
    assert_seed_split(&listener, &v1, &v2).await;
    let c = client();
    let r = send(
        &c,
        "GET",
        &format!("{ip}:9000"),
        "extra.testns1.svc.cluster.local",
        "/",
        &[],
    )
    .await;
    assert_eq!(r.served_by.as_deref(), Some("extra"));

    // It is a delta stream, and every type was sent and ACKed on it.
    let status: serde_json::Value = reqwest::get(format!("{}/debug/push_status", cp.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["deltaConnections"], 1, "{status}");
    let syncz = cp.syncz().await;
    let entry = &syncz[0];
    for (sent, acked) in [
        (&entry.cluster_sent, &entry.cluster_acked),
        (&entry.listener_sent, &entry.listener_acked),
        (&entry.route_sent, &entry.route_acked),
        (&entry.endpoint_sent, &entry.endpoint_acked),
    ] {
        assert!(
            !sent.is_empty() && sent == acked,
            "sent {sent:?} acked {acked:?}"
        );
    }

    // An edit arrives as a delta.
    cp.write("vs.yaml", VS_ALL_V2);
    let moved = eventually(Duration::from_secs(5), || async {
        send(&client(), "GET", &listener, HOST, "/headers", &[])
            .await
            .served_by
            .as_deref()
            == Some("v2")
    })
    .await;
    assert!(
        moved.is_some(),
        "the VirtualService change reached the delta Envoy"
    );

    // A deleted service: its cluster and its listener are removed from Envoy.
    let cluster = "outbound|9000||extra.testns1.svc.cluster.local";
    assert!(
        envoy
            .admin_get("/clusters")
            .await
            .unwrap()
            .contains(cluster)
    );
    std::fs::remove_file(cp.config_dir().join("extra.yaml")).unwrap();
    let gone = eventually(Duration::from_secs(5), || async {
        let clusters = envoy.admin_get("/clusters").await.unwrap_or_default();
        let listeners = envoy.admin_get("/listeners").await.unwrap_or_default();
        !clusters.contains(cluster) && !listeners.contains(&format!("{ip}_9000"))
    })
    .await;
    assert!(
        gone.is_some(),
        "the deleted service's cluster and listener were removed"
    );
    // The rest keeps working.
    let r = send(&c, "GET", &listener, HOST, "/headers", &[]).await;
    assert_eq!(r.served_by.as_deref(), Some("v2"));
}
