//! `navarch demo` end to end: the built binary, its own control plane, gunicorn httpbin on
//! 127.0.0.11/12:80 and the sleep sidecar on 127.0.0.21 (the bundled sandbox's addresses).

use std::process::Stdio;
use std::time::Duration;

/// The percentage in a line like `subset v1: 181 requests (90.5%)`.
fn subset_percent(stdout: &str, subset: &str) -> f64 {
    percent(stdout, &format!("subset {subset}: "))
}

/// The percentage in the line starting with `prefix`.
fn percent(stdout: &str, prefix: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in the demo's output:\n{stdout}"));
    let pct = line
        .rsplit_once('(')
        .and_then(|(_, rest)| rest.strip_suffix("%)"))
        .unwrap_or_else(|| panic!("no (N%) in {line:?}"));
    pct.parse()
        .unwrap_or_else(|e| panic!("{pct:?} in {line:?} is not a number: {e}"))
}

#[tokio::test]
async fn demo_runs_end_to_end() {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_navarch"))
        .args(["demo", "--requests", "200"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting navarch demo");
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("navarch demo did not finish within 180s")
        .expect("waiting for navarch demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "navarch demo failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );

    let v1 = subset_percent(&stdout, "v1");
    let v2 = subset_percent(&stdout, "v2");
    assert!(
        (80.0..=100.0).contains(&v1),
        "v1 got {v1}%, expected 90±10:\n{stdout}"
    );
    assert!(
        (v1 + v2 - 100.0).abs() < 0.2,
        "v1 {v1}% + v2 {v2}% is not 100%:\n{stdout}"
    );

    // The same split through the ingress gateway, and the egress gateway carried every
    // external request.
    let gw_v1 = percent(&stdout, "ingress gateway subset v1: ");
    assert!(
        (80.0..=100.0).contains(&gw_v1),
        "ingress gateway v1 got {gw_v1}%, expected 90±10:\n{stdout}"
    );
    assert!(
        stdout.contains("egress: 10 of 10 requests answered; 10 left through the egress gateway"),
        "{stdout}"
    );
    for proxy in [
        "istio-ingressgateway.istio-system",
        "istio-egressgateway.istio-system",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(proxy) && l.contains("SYNCED")),
            "{proxy} in the proxy-status table:\n{stdout}"
        );
    }

    // The table's columns start where its header's words do (tabwriter layout).
    let header = stdout
        .lines()
        .find(|l| l.starts_with("NAME "))
        .unwrap_or_else(|| panic!("no proxy-status table in the demo's output:\n{stdout}"));
    let row = stdout
        .lines()
        .find(|l| l.starts_with("sleep.testns1 "))
        .unwrap_or_else(|| panic!("no proxy-status row for sleep.testns1:\n{stdout}"));
    let cell = |column: &str| -> &str {
        let start = header
            .find(&format!(" {column} "))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("no {column} column in {header:?}"));
        let end = header[start..]
            .find(' ')
            .map(|n| start + n)
            .and_then(|e| header[e..].find(|c: char| c != ' ').map(|n| e + n))
            .unwrap_or(row.len());
        row.get(start..end.min(row.len())).unwrap_or("").trim()
    };
    for xds in ["CDS", "LDS", "EDS", "RDS"] {
        assert!(
            cell(xds).starts_with("SYNCED"),
            "{xds} of sleep.testns1 is {:?}, not SYNCED:\n{stdout}",
            cell(xds)
        );
    }
}
