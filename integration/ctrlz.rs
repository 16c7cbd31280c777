//! The introspection page in a real headless browser (Debian's chromium driven over WebDriver
//! by chromedriver): it renders the sandbox's proxy and its sync state, shows a NACK with the
//! VirtualService it is traced to when Envoy rejects a route configuration, and changing a log
//! scope's level on the page changes what the server logs.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// A WebDriver session on chromedriver.
struct Browser {
    _driver: tokio::process::Child,
    base: String,
    http: reqwest::Client,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port().port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect(
                "chromedriver runs: install Debian's chromium and chromium-driver (.ci/run does)",
            );
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        let up = eventually(Duration::from_secs(20), || {
            let (http, root) = (http.clone(), root.clone());
            async move {
                http.get(format!("{root}/status"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        })
        .await;
        assert!(up.is_some(), "chromedriver answers");
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        }}}});
        let session: Value = http
            .post(format!("{root}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a WebDriver session: {session}"))
            .to_string();
        Browser {
            _driver: driver,
            base: format!("{root}/session/{id}"),
            http,
        }
    }

    async fn open(&self, url: &str) {
        self.http
            .post(format!("{}/url", self.base))
            .json(&json!({ "url": url }))
            .send()
            .await
            .unwrap();
    }

    /// Runs `script` in the page and returns its value.
    async fn run(&self, script: &str) -> Value {
        let v: Value = self
            .http
            .post(format!("{}/execute/sync", self.base))
            .json(&json!({"script": script, "args": []}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["value"].clone()
    }

    /// The text the page shows in the element `css` selects.
    async fn text(&self, css: &str) -> String {
        self.run(&format!(
            "const e = document.querySelector({css:?}); return e ? e.innerText : '';"
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_proxies_a_nack_and_changes_log_levels_in_a_real_browser() {
    let net = 220;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("sandbox.yaml"), sandbox(net)).unwrap();
    let write = |name: &str, text: &str| {
        let tmp = config.join(format!("{name}.tmp~"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, config.join(name)).unwrap();
    };
    write("vs.yaml", &all_to("v1"));
    let d = DiscoveryProcess::start(&[
        "--config-dir",
        config.to_str().unwrap(),
        "--ctrlz-addr",
        "127.0.0.1:0",
        "--log-output-level",
        "default:info,ads:warn",
    ])
    .await;
    let (grpc, http) = (d.grpc, d.http);
    let ctrlz = d.ctrlz.expect("the page listens");
    let logs = || d.log_lines().join("\n");
    let node = ProxyNode {
        node_type: "sidecar",
        ip: "127.220.0.21",
        pod: "sleep",
        namespace: "testns1",
        labels: "app=sleep",
        mode: "NONE",
    };
    let _envoy = start_proxy(dir.path(), &grpc.to_string(), &node, &[], &[]).await;

    let browser = Browser::start().await;
    browser.open(&format!("http://{ctrlz}/")).await;
    let shown = eventually(Duration::from_secs(15), || async {
        let proxies = browser.text("#proxies").await;
        proxies.contains("sleep.testns1") && proxies.matches("SYNCED").count() == 4
    })
    .await;
    assert!(
        shown.is_some(),
        "the page renders the proxy, synced on four types: {}",
        browser.text("body").await
    );
    let configs = browser.text("#configs").await;
    assert!(configs.contains("VirtualService\t1"), "{configs}");
    assert!(browser.text("#pushes").await.contains("VERSION"));

    // Envoy rejects a route configuration: the page shows the NACK and its VirtualService.
    write("vs.yaml", VS_ENVOY_REJECTS);
    let nack = eventually(Duration::from_secs(15), || async {
        let proxies = browser.text("#proxies").await;
        proxies.contains("ERROR") && proxies.contains("from VirtualService testns1/httpbin")
    })
    .await;
    assert!(
        nack.is_some(),
        "the NACK is on the page: {}",
        browser.text("#proxies").await
    );
    let traced = eventually(Duration::from_secs(5), || {
        let found = logs()
            .lines()
            .any(|l| l.contains("NACK") && l.contains("sources=VirtualService testns1/httpbin"));
        async move { found }
    })
    .await;
    assert!(
        traced.is_some(),
        "the NACK's log line names the VirtualService:\n{}",
        logs()
    );

    // The ADS scope is at warn: no ACK lines. Raise it on the page, then the next ACKs show.
    assert!(!logs().contains(" ACK"), "no ACK lines at warn");
    let changed = browser
        .run("const s = document.querySelector('select[data-scope=ads]'); s.focus(); s.value = 'debug'; s.dispatchEvent(new Event('change')); return s.value;")
        .await;
    assert_eq!(changed, "debug");
    let raised = eventually(Duration::from_secs(5), || async move {
        let scopes: Value = reqwest::get(format!("http://{http}/debug/logging"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        scopes
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "ads" && s["output_level"] == "debug")
    })
    .await;
    assert!(raised.is_some(), "the server's ads scope is at debug");
    write("vs.yaml", &all_to("v2"));
    let logged = eventually(Duration::from_secs(10), || {
        let has = logs()
            .lines()
            .any(|l| l.contains("DEBUG") && l.contains(" ACK"));
        async move { has }
    })
    .await;
    assert!(
        logged.is_some(),
        "ACKs are logged once the page raised the level:\n{}",
        logs()
    );
}
