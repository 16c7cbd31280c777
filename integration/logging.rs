//! istiod's logging controls on a running `navarch discovery`: `--log-format json` writes one
//! JSON object per line, `--log-output-level` sets scope levels, and `/debug/logging` changes
//! a scope's level at runtime: the ADS scope's debug lines (ACKs) appear only after it is
//! raised.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_scope_levels_changed_at_runtime() {
    let d = DiscoveryProcess::start(&[
        "--log-format",
        "json",
        "--log-output-level",
        "default:info,ads:warn",
    ])
    .await;
    let (http, grpc) = (d.http, d.grpc);
    let base = format!("http://{http}");

    // Every line is a JSON object with istiod's fields.
    let first: serde_json::Value =
        serde_json::from_str(&d.log_lines()[0]).expect("a JSON log line");
    assert!(
        first["timestamp"].is_string() && first["level"] == "INFO",
        "{first}"
    );
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("bundled sandbox"),
        "{first}"
    );

    let dir = tempfile::tempdir().unwrap();
    let node = |pod: &'static str, ip: &'static str| ProxyNode {
        node_type: "sidecar",
        ip,
        pod,
        namespace: "testns1",
        labels: "app=sleep",
        mode: "NONE",
    };
    let acks = |d: &DiscoveryProcess| {
        d.log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] == "DEBUG" && v["message"] == "ACK")
            .count()
    };
    let _quiet = start_proxy(
        dir.path(),
        &grpc.to_string(),
        &node("sleep", "127.219.0.21"),
        &[],
        &[],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(acks(&d), 0, "ads is at warn: no ACK lines");

    let scopes: serde_json::Value = reqwest::get(format!("{base}/debug/logging"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ads = scopes
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ads")
        .unwrap();
    assert_eq!(ads["output_level"], "warn");

    let c = reqwest::Client::new();
    let r = c
        .put(format!("{base}/debug/logging/ads"))
        .json(&serde_json::json!({"output_level": "debug"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bad = c
        .put(format!("{base}/debug/logging/adz"))
        .json(&serde_json::json!({"output_level": "debug"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(
        bad.text()
            .await
            .unwrap()
            .contains("unknown log scope \"adz\"")
    );

    let _loud = start_proxy(
        dir.path(),
        &grpc.to_string(),
        &node("sleep-2", "127.219.0.22"),
        &[],
        &[],
    )
    .await;
    let logged = eventually(Duration::from_secs(5), || {
        let n = acks(&d);
        async move { n > 0 }
    })
    .await;
    assert!(logged.is_some(), "after the change the ACKs are logged");
}
