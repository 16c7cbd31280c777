//! `navarch proxy-config` against a real Envoy fed by navarch: the control plane's tables are
//! the live Envoy's (the rows of its dynamic config; Envoy adds its bootstrap's static
//! clusters), filters narrow them, and `--diff` is silent while the two agree and shows the
//! route configuration Envoy rejected (it keeps its last good one) when they do not.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

fn proxy_config(args: &[&str]) -> String {
    let out = Command::new(navarch_bin())
        .arg("proxy-config")
        .args(args)
        .output()
        .expect("navarch runs");
    assert!(
        out.status.success(),
        "proxy-config {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn rows(table: &str) -> Vec<String> {
    table.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_match_the_live_envoy_and_diff_shows_a_rejected_route() {
    let sb = Sandbox::start(216, &[("vs.yaml", &all_to("v1"))], "NONE").await;
    let proxy = "sleep.testns1";
    let server = ["--server", sb.cp.http.as_str()];
    let admin = ["--envoy-admin", sb.envoy.admin.as_str()];
    let of = |kind: &str, from: &[&str], extra: &[&str]| {
        proxy_config(&[&[kind, proxy][..], from, extra].concat())
    };

    // Clusters: every row the control plane lists is the live Envoy's; Envoy's others are
    // its bootstrap's static clusters.
    let sent = rows(&of("cluster", &server, &[]));
    let live = rows(&of("cluster", &admin, &[]));
    assert!(sent[0].starts_with("SERVICE FQDN"), "{sent:?}");
    assert!(
        sent.iter()
            .any(|r| r.starts_with("httpbin.testns1.svc.cluster.local")
                && r.contains(" v1 ")
                && r.contains("outbound")
                && r.ends_with("httpbin.testns1")),
        "the v1 subset cluster, managed by DestinationRule httpbin.testns1: {sent:#?}"
    );
    let sent_names: Vec<String> = sent
        .iter()
        .map(|r| r.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .collect();
    let live_names: Vec<String> = live
        .iter()
        .map(|r| r.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .collect();
    for r in &sent_names {
        assert!(
            live_names.contains(r),
            "{r} is in the live Envoy: {live:#?}"
        );
    }
    // (Cells line up differently when Envoy's static clusters are wider; the cells are equal.)
    let dump: serde_json::Value =
        serde_json::from_str(&sb.envoy.admin_get("/config_dump").await.unwrap()).unwrap();
    let statics: Vec<String> = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["static_clusters"].as_array().into_iter().flatten())
        .map(|c| c["cluster"]["name"].as_str().unwrap().to_string())
        .collect();
    for r in live_names.iter().filter(|r| !sent_names.contains(r)) {
        assert!(
            statics.iter().any(|s| r.starts_with(s.as_str())),
            "{r}: only Envoy's static clusters are extra ({statics:?})"
        );
    }

    // Listeners, routes and endpoints: the same tables both ways (once RDS has arrived).
    let routed = eventually(Duration::from_secs(10), || async {
        of("route", &admin, &[]).lines().count() > 1
    })
    .await;
    assert!(routed.is_some(), "Envoy has its route configurations");
    for kind in ["listener", "route"] {
        assert_eq!(of(kind, &server, &[]), of(kind, &admin, &[]), "{kind}");
    }
    let listeners = of("listener", &server, &["--port", "8000"]);
    assert!(
        listeners.lines().skip(1).all(|l| l.contains(" 8000 "))
            && listeners.contains("Route: 8000"),
        "{listeners}"
    );
    let routes = of("route", &server, &["--name", "8000"]);
    assert!(
        routes.lines().any(|l| l.starts_with("8000 ")
            && l.contains("httpbin.testns1.svc.cluster.local:8000")
            && l.ends_with("httpbin.testns1")),
        "route 8000 names VirtualService httpbin.testns1: {routes}"
    );
    let v1 = "outbound|8000|v1|httpbin.testns1.svc.cluster.local";
    let ep_sent = of("endpoint", &server, &["--cluster", v1]);
    let ep_live = of("endpoint", &admin, &["--cluster", v1]);
    assert_eq!(ep_sent, ep_live);
    assert!(
        ep_live.contains(&format!("127.{}.0.11:8080     HEALTHY     OK", sb.net)),
        "{ep_live}"
    );

    // In sync: no difference.
    let d = proxy_config(&[&["all", proxy, "--diff"][..], &server, &admin].concat());
    assert!(d.contains("runs what"), "in sync: {d}");

    // Envoy rejects the new route configuration and keeps the old one: the diff shows it.
    sb.cp.write("vs.yaml", VS_ENVOY_REJECTS);
    let nacked = eventually(Duration::from_secs(10), || async {
        !sb.cp.syncz().await[0].resources[navarch::translate::ROUTE_TYPE]
            .last_error
            .is_empty()
    })
    .await;
    assert!(nacked.is_some(), "the route configuration is NACKed");
    let d = proxy_config(&[&["route", proxy, "--diff"][..], &server, &admin].concat());
    assert!(
        d.contains("~ route 8000: Envoy runs another version"),
        "{d}"
    );
    assert!(
        d.contains("+ ") && d.contains("abcdefghij"),
        "the rejected regex is what was sent: {d}"
    );
}
