//! `/metrics` with istiod's names, types and labels (the list in
//! testdata/metrics/istiod-metrics.txt, checked against a Prometheus text parser), and the
//! push metrics moving with real Envoys: after one change, `pilot_proxy_convergence_time` has
//! one new sample per proxy and `pilot_xds` counts the proxies.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;

pub async fn scrape(http: &str) -> String {
    reqwest::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of the samples of `name` (every label set).
pub fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `name → (type, labels)` from testdata/metrics/istiod-metrics.txt.
fn istiod_metrics() -> BTreeMap<String, (String, Vec<String>)> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/metrics/istiod-metrics.txt"),
    )
    .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let labels = match f[2] {
                "-" => vec![],
                l => l.split(',').map(str::to_string).collect(),
            };
            (f[0].to_string(), (f[1].to_string(), labels))
        })
        .collect()
}

/// Every listed metric has istiod's type and, where it has series, exactly istiod's labels;
/// the text parses as Prometheus text.
pub fn assert_istiod_shapes(text: &str, needs_series: &[&str]) {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("/metrics parses as Prometheus text");
    for (name, (kind, labels)) in istiod_metrics() {
        let samples: Vec<&prometheus_parse::Sample> =
            scrape.samples.iter().filter(|s| s.metric == name).collect();
        if needs_series.contains(&name.as_str()) {
            assert!(!samples.is_empty(), "{name} has a series:\n{text}");
        }
        // A family without series yet (no watch events from files) has no lines at all.
        if !samples.is_empty() {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} is a {kind}:\n{text}"
            );
        }
        for s in samples {
            let mut got: Vec<&str> = s
                .labels
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "le")
                .collect();
            got.sort();
            let mut want: Vec<&str> = labels.iter().map(String::as_str).collect();
            want.sort();
            assert_eq!(got, want, "{name}'s labels");
            let typed = match s.value {
                prometheus_parse::Value::Counter(_) => "counter",
                prometheus_parse::Value::Gauge(_) => "gauge",
                prometheus_parse::Value::Histogram(_) => "histogram",
                _ => "other",
            };
            assert_eq!(typed, kind, "{name} parses as a {kind}");
        }
    }
}

/// Every series Istio's control plane dashboard queries (testdata/metrics/
/// pilot-dashboard-queries.txt) is on `/metrics`, with the label values it selects.
pub fn assert_dashboard_series(text: &str) {
    let queries = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/metrics/pilot-dashboard-queries.txt"),
    )
    .unwrap();
    for q in queries
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, selector) = q.split_once('{').unwrap_or((q, ""));
        let wanted: Vec<&str> = selector
            .trim_end_matches('}')
            .split(',')
            .filter(|s| !s.is_empty())
            .collect();
        let found = text.lines().any(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
                && wanted.iter().all(|w| l.contains(w))
        });
        assert!(found, "the dashboard's {q} finds a series:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_names_and_convergence_samples_per_proxy() {
    let net = 217;
    let sandbox = sandbox(net);
    let cp = ControlPlane::start(&[
        ("sandbox.yaml", sandbox.as_str()),
        ("vs.yaml", &all_to("v1")),
    ])
    .await;
    let _a = cp
        .sidecar(
            &format!("127.{net}.0.21"),
            "sleep",
            "testns1",
            "app=sleep",
            "NONE",
        )
        .await;
    let _b = cp
        .sidecar(
            &format!("127.{net}.0.22"),
            "sleep-2",
            "testns1",
            "app=sleep",
            "NONE",
        )
        .await;
    // Both proxies have acknowledged their first routes.
    let acked = eventually(Duration::from_secs(10), || async {
        let s = cp.syncz().await;
        s.len() == 2
            && s.iter().all(|p| {
                let r = &p.resources[navarch::translate::ROUTE_TYPE];
                !r.acked.is_empty() && r.acked == r.sent
            })
    })
    .await;
    assert!(acked.is_some(), "both proxies are synced");

    let before = scrape(&cp.http).await;
    assert_istiod_shapes(
        &before,
        &[
            "pilot_xds",
            "pilot_xds_pushes",
            "pilot_xds_push_time",
            "pilot_xds_config_size_bytes",
            "pilot_services",
            "pilot_virt_services",
            "pilot_total_xds_internal_errors",
            "istio_build",
            "process_resident_memory_bytes",
        ],
    );
    assert_eq!(total(&before, "pilot_xds"), 2.0, "two proxies connected");
    let converged = total(&before, "pilot_proxy_convergence_time_count");

    // One change reaches both proxies: one convergence sample each.
    let version = |s: &[navarch::proto::SyncStatus]| -> Vec<String> {
        s.iter()
            .map(|p| p.resources[navarch::translate::ROUTE_TYPE].sent.clone())
            .collect()
    };
    let sent_before = version(&cp.syncz().await);
    cp.write("vs.yaml", &all_to("v2"));
    let moved = eventually(Duration::from_secs(10), || async {
        let s = cp.syncz().await;
        let now = version(&s);
        now.iter().zip(&sent_before).all(|(a, b)| a != b)
            && s.iter().all(|p| {
                let r = &p.resources[navarch::translate::ROUTE_TYPE];
                r.acked == r.sent
            })
    })
    .await;
    assert!(moved.is_some(), "both proxies acknowledged the change");
    let after = scrape(&cp.http).await;
    assert_istiod_shapes(
        &after,
        &[
            "pilot_push_triggers",
            "pilot_inbound_updates",
            "pilot_pushcontext_init_seconds",
            "pilot_debounce_time",
            "pilot_proxy_queue_time",
            "pilot_xds_send_time",
        ],
    );
    assert_eq!(
        total(&after, "pilot_proxy_convergence_time_count") - converged,
        2.0,
        "one convergence sample per proxy:\n{after}"
    );
    assert!(
        total(&after, "pilot_push_triggers") > total(&before, "pilot_push_triggers"),
        "the change is a push trigger"
    );
    assert!(total(&after, "pilot_inbound_updates") >= 1.0);
    assert!(total(&after, "pilot_pushcontext_init_seconds_count") >= 1.0);
}
