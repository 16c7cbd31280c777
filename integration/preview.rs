//! `navarch preview` against a running control plane with real Envoys connected: a weight
//! change names exactly the proxy whose routes it changes, with the new weights; a change that
//! alters nothing says so; a change with a broken reference fails (exit 79) with the
//! analyzer's message; nothing is applied.

use std::process::Command;

use crate::support::*;

fn preview(cp: &ControlPlane, file: &std::path::Path) -> (String, Option<i32>) {
    let out = Command::new(navarch_bin())
        .args(["preview", "--server", &cp.http, "-f"])
        .arg(file)
        .output()
        .expect("navarch runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_change_names_the_proxies_it_changes_and_nothing_is_applied() {
    let net = 218;
    let sandbox = sandbox(net);
    let cp =
        ControlPlane::start(&[("sandbox.yaml", sandbox.as_str()), ("vs.yaml", VS_90_10)]).await;
    let _sleep = cp
        .sidecar(
            &format!("127.{net}.0.21"),
            "sleep",
            "testns1",
            "app=sleep",
            "NONE",
        )
        .await;
    let _gateway = cp
        .gateway(
            &format!("127.{net}.0.31"),
            "istio-ingressgateway-1",
            "istio-system",
            "istio=ingressgateway",
        )
        .await;
    let version = cp.snapshot_version();
    let dir = tempfile::tempdir().unwrap();

    let half = dir.path().join("half.yaml");
    std::fs::write(
        &half,
        VS_90_10
            .replace("weight: 90", "weight: 50")
            .replace("weight: 10", "weight: 50"),
    )
    .unwrap();
    let (text, code) = preview(&cp, &half);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("sleep.testns1 would change:"), "{text}");
    assert!(
        !text.contains("istio-ingressgateway-1.istio-system would change"),
        "{text}"
    );
    assert!(
        text.contains("Unchanged: istio-ingressgateway-1.istio-system"),
        "{text}"
    );
    assert!(text.contains("~ route 8000: changed"), "{text}");
    let weights = |sign: &str| {
        text.lines()
            .filter(|l| l.trim_start().starts_with(sign) && l.contains("\"weight\""))
            .map(|l| {
                l.split(':')
                    .nth(1)
                    .unwrap()
                    .trim()
                    .trim_end_matches(',')
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    // Each of the three matches is a route with the two weighted subsets.
    assert_eq!(weights("+"), ["50"; 6], "the new weights: {text}");
    assert_eq!(
        weights("-"),
        ["90", "10", "90", "10", "90", "10"],
        "the old ones: {text}"
    );
    assert_eq!(cp.snapshot_version(), version, "a preview applies nothing");

    let same = dir.path().join("same.yaml");
    std::fs::write(&same, VS_90_10).unwrap();
    let (text, code) = preview(&cp, &same);
    assert_eq!(code, Some(0));
    assert!(
        text.starts_with("No connected proxy's config would change."),
        "{text}"
    );

    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, VS_90_10.replace("subset: v2", "subset: v3")).unwrap();
    let (text, code) = preview(&cp, &broken);
    assert_eq!(code, Some(79), "{text}");
    assert!(
        text.contains("Error [IST0101] (VirtualService testns1/httpbin")
            && text.contains("Referenced host+subset in destinationrule not found: \"httpbin.testns1.svc.cluster.local+v3\""),
        "{text}"
    );
}
