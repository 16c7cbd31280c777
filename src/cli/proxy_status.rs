//! `navarch proxy-status`: istioctl 1.24's sync table from a control plane's `/debug/syncz`,
//! or `-o json`.

use std::time::SystemTime;

use anyhow::Context;
use clap::Args;

use crate::proto::SyncStatus;
use crate::status::{
    CLUSTER_TYPE, ENDPOINT_TYPE, EXTENSION_CONFIG_TYPE, LISTENER_TYPE, ROUTE_TYPE, status_cell,
};

#[derive(Debug, Args, Clone)]
pub struct ProxyStatusArgs {
    /// One proxy (`pod.namespace` or node id): only its row.
    pub proxy: Option<String>,
    /// The control plane's debug URL.
    #[arg(long, env = "NAVARCH_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Only proxies in this namespace.
    #[arg(short = 'n', long, env = "NAVARCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// `table` or `json`.
    #[arg(short = 'o', long, env = "NAVARCH_OUTPUT", default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

pub async fn run(args: ProxyStatusArgs) -> anyhow::Result<()> {
    let entries = fetch(&args.server, args.namespace.as_deref()).await?;
    let entries: Vec<SyncStatus> = entries
        .into_iter()
        .filter(|e| {
            args.proxy
                .as_deref()
                .is_none_or(|p| e.proxy == p || e.node_id == p)
        })
        .collect();
    if let Some(p) = &args.proxy
        && entries.is_empty()
    {
        anyhow::bail!(
            "proxy {p} is not connected to {}; run `navarch proxy-status` to list connected proxies",
            args.server
        );
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else if args.proxy.is_some() {
        print!("{}", render_detail(&entries[0], SystemTime::now()));
    } else {
        let istiod = fetch_instance(&args.server).await;
        print!("{}", render_table(&entries, &istiod, SystemTime::now()));
    }
    Ok(())
}

/// GET `/debug/syncz`.
pub async fn fetch(server: &str, namespace: Option<&str>) -> anyhow::Result<Vec<SyncStatus>> {
    let mut url = format!("{}/debug/syncz", server.trim_end_matches('/'));
    if let Some(ns) = namespace {
        url.push_str(&format!("?namespace={ns}"));
    }
    let resp = reqwest::get(&url).await.with_context(|| {
        format!("GET {url}: is `navarch discovery` running there? pass --server URL")
    })?;
    anyhow::ensure!(
        resp.status().is_success(),
        "GET {url}: HTTP {}",
        resp.status()
    );
    resp.json()
        .await
        .with_context(|| format!("GET {url}: not syncz JSON"))
}

async fn fetch_instance(server: &str) -> String {
    let url = format!("{}/debug/push_status", server.trim_end_matches('/'));
    let v: Option<serde_json::Value> = match reqwest::get(&url).await {
        Ok(r) => r.json().await.ok(),
        Err(_) => None,
    };
    v.and_then(|v| v["instance"].as_str().map(str::to_string))
        .unwrap_or_else(|| "MISSING".into())
}

/// The istioctl 1.24 table: `NAME CLUSTER CDS LDS EDS RDS ECDS ISTIOD VERSION`, columns padded
/// like Go's tabwriter (min width 0, padding 5).
pub fn render_table(entries: &[SyncStatus], istiod: &str, now: SystemTime) -> String {
    let mut rows = vec![
        [
            "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut sorted: Vec<&SyncStatus> = entries.iter().collect();
    sorted.sort_by(|a, b| a.proxy.cmp(&b.proxy));
    for e in sorted {
        let cell = |t: &str| status_cell(e.resources.get(t), now);
        rows.push(vec![
            e.proxy.clone(),
            e.cluster_id.clone(),
            cell(CLUSTER_TYPE),
            cell(LISTENER_TYPE),
            cell(ENDPOINT_TYPE),
            cell(ROUTE_TYPE),
            cell(EXTENSION_CONFIG_TYPE),
            istiod.to_string(),
            e.istio_version.clone(),
        ]);
    }
    tabulate(rows)
}

/// One proxy's detail: per type, its status, the versions and nonces sent and acknowledged,
/// and the last NACK's error.
pub fn render_detail(e: &SyncStatus, now: SystemTime) -> String {
    let mut out = format!(
        "Proxy: {} ({})\nCluster: {}  Type: {}  Istio version: {}\n\n",
        e.proxy, e.node_id, e.cluster_id, e.proxy_type, e.istio_version
    );
    let mut rows = vec![
        [
            "TYPE",
            "STATUS",
            "SENT VERSION",
            "ACKED VERSION",
            "SENT NONCE",
            "ACKED NONCE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut errors = Vec::new();
    for (short, url) in [
        ("CDS", CLUSTER_TYPE),
        ("LDS", LISTENER_TYPE),
        ("EDS", ENDPOINT_TYPE),
        ("RDS", ROUTE_TYPE),
        ("ECDS", EXTENSION_CONFIG_TYPE),
    ] {
        let r = e.resources.get(url);
        rows.push(vec![
            short.to_string(),
            status_cell(r, now),
            r.map(|r| r.sent_version.clone()).unwrap_or_default(),
            r.map(|r| r.acked_version.clone()).unwrap_or_default(),
            r.map(|r| r.sent.clone()).unwrap_or_default(),
            r.map(|r| r.acked.clone()).unwrap_or_default(),
        ]);
        if let Some(r) = r.filter(|r| !r.last_error.is_empty()) {
            let mut e = format!(
                "{short} rejected by the proxy (it keeps its last good config): {}",
                r.last_error
            );
            if !r.last_error_sources.is_empty() {
                e.push_str(&format!("\n  from: {}", r.last_error_sources.join(", ")));
            }
            errors.push(e);
        }
    }
    out.push_str(&tabulate(rows));
    for e in errors {
        out.push('\n');
        out.push_str(&e);
        out.push('\n');
    }
    out
}

/// Aligns rows like Go's tabwriter with padding 5.
fn tabulate(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == widths.len() {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[i] + 5)
                }
            })
            .collect();
        out.push_str(line.join("").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ResourceSyncStatus;

    #[test]
    fn table_layout() {
        let now = SystemTime::now();
        let sent =
            humantime::format_rfc3339_millis(now - std::time::Duration::from_secs(5)).to_string();
        let synced = ResourceSyncStatus {
            sent: "a".into(),
            acked: "a".into(),
            sent_time: sent.clone(),
            ..Default::default()
        };
        let mut e = SyncStatus {
            proxy: "sleep.testns1".into(),
            cluster_id: "Kubernetes".into(),
            istio_version: "1.24.0".into(),
            ..Default::default()
        };
        for t in [CLUSTER_TYPE, LISTENER_TYPE, ENDPOINT_TYPE] {
            e.resources.insert(t.into(), synced.clone());
        }
        e.resources.insert(
            ROUTE_TYPE.into(),
            ResourceSyncStatus {
                last_error: "bad".into(),
                ..synced.clone()
            },
        );
        let out = render_table(&[e], "navarch-x", now);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION"
            ]
        );
        assert!(
            lines[1].starts_with("sleep.testns1     Kubernetes"),
            "{out}"
        );
        assert!(
            lines[1]
                .contains("SYNCED (5s)     SYNCED (5s)     SYNCED (5s)     ERROR (5s)     IGNORED"),
            "{out}"
        );
        assert!(lines[1].ends_with("navarch-x     1.24.0"), "{out}");
    }
}
