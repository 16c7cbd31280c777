//! istiod's logging controls on a running `navarch discovery`: `--log-format json` writes one
//! JSON object per line, `--log-output-level` sets scope levels, and `/debug/logging` changes
//! a scope's level at runtime: the ADS scope's debug lines (ACKs) appear only after it is
//! raised.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_scope_levels_changed_at_runtime() {
    let (http, grpc) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(navarch_bin())
        .args(["discovery", "--monitoring-addr", "127.0.0.1:0"])
        .args([
            "--grpc-addr",
            &grpc.to_string(),
            "--http-addr",
            &http.to_string(),
        ])
        .args([
            "--log-format",
            "json",
            "--log-output-level",
            "default:info,ads:warn",
        ])
        .env_remove("NAVARCH_CONFIG_DIR")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run navarch discovery");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut reader = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let collected = lines.clone();
    tokio::spawn(async move {
        while let Ok(Some(l)) = reader.next_line().await {
            collected.lock().unwrap().push(l);
        }
    });
    let base = format!("http://{http}");
    let ready = eventually(Duration::from_secs(20), || {
        let url = format!("{base}/ready");
        async move { reqwest::get(url).await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert!(ready.is_some(), "/ready answers");

    // Every line is a JSON object with istiod's fields.
    let first: serde_json::Value =
        serde_json::from_str(&lines.lock().unwrap()[0]).expect("a JSON log line");
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
    let acks = |lines: &Arc<Mutex<Vec<String>>>| {
        lines
            .lock()
            .unwrap()
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
    assert_eq!(acks(&lines), 0, "ads is at warn: no ACK lines");

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
        let n = acks(&lines);
        async move { n > 0 }
    })
    .await;
    assert!(logged.is_some(), "after the change the ACKs are logged");
}
