//! The introspection page (ControlZ's job) on `--ctrlz-addr`: one HTML page with no external
//! assets, refreshed from `/api/state`: the connected proxies and their sync state per type
//! (with a NACK's error and the Istio objects it is traced to), config counts by kind,
//! rejected documents, recent pushes with their triggers and durations, process facts, and
//! the log scopes, whose levels change from the page (`PUT /api/logging/<scope>`).
//!
//! Owns the page and its JSON; it reads the server's state and never changes it (log levels
//! are the logging module's).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};

use crate::supervise::Health;
use crate::xds::DiscoveryServer;

#[derive(Clone)]
struct CtrlzState {
    server: Arc<DiscoveryServer>,
    health: Arc<Health>,
    started: Instant,
}

/// The page and its API.
pub fn router(server: Arc<DiscoveryServer>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/state", get(state))
        .route("/api/logging", get(crate::admin::logging_scopes))
        .route("/api/logging/{scope}", put(crate::admin::set_logging_level))
        .with_state(CtrlzState {
            server,
            health,
            started: Instant::now(),
        })
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// `VmRSS` and `Threads` of `/proc/self/status` (Linux).
fn process_status() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:") * 1024, field("Threads:"))
}

async fn state(State(s): State<CtrlzState>) -> Response {
    let push = s.server.push_context();
    let store = &push.store;
    let syncz = s.server.status.syncz(None);
    let (rss, threads) = process_status();
    let pushes: Vec<Value> = s
        .server
        .recent_pushes()
        .into_iter()
        .map(|p| {
            json!({
                "time": humantime::format_rfc3339_seconds(p.time).to_string(),
                "version": p.version,
                "full": p.full,
                "triggers": p.triggers,
                "seconds": p.since_first_event.map(|d| d.as_secs_f64()),
            })
        })
        .collect();
    let counts = json!({
        "VirtualService": store.virtual_services.len(),
        "DestinationRule": store.destination_rules.len(),
        "Gateway": store.gateways.len(),
        "ServiceEntry": store.service_entries.len(),
        "Sidecar": store.sidecars.len(),
        "WorkloadEntry": store.workload_entries.len(),
        "EnvoyFilter": store.envoy_filters.len(),
        "Service": store.registry.services.len(),
    });
    Json(json!({
        "version": push.version,
        "proxies": syncz,
        "configCounts": counts,
        "rejected": store.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "pushes": pushes,
        "process": {
            "version": env!("CARGO_PKG_VERSION"),
            "uptimeSeconds": s.started.elapsed().as_secs(),
            "residentBytes": rss,
            "threads": threads,
            "pid": std::process::id(),
            "args": std::env::args().collect::<Vec<_>>(),
            "time": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            "ready": s.server.is_ready() && s.health.down().is_empty(),
        },
        "scopes": crate::logging::scopes(),
    }))
    .into_response()
}

/// The page: tables filled from `/api/state` every second; the scope selects change levels.
const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>navarch introspection</title>
<style>
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; font-size: 0.9em; }
th { background: #f0f0f0; } .error { color: #b00; font-weight: bold; } .synced { color: #070; }
</style>
</head>
<body>
<h1>navarch <span id="version"></span></h1>
<p id="process"></p>
<h2>Proxies</h2>
<table id="proxies"><thead><tr><th>PROXY</th><th>CDS</th><th>LDS</th><th>EDS</th><th>RDS</th><th>REJECTED CONFIG</th></tr></thead><tbody></tbody></table>
<h2>Config</h2>
<table id="configs"><thead><tr><th>KIND</th><th>COUNT</th></tr></thead><tbody></tbody></table>
<h2>Rejected documents</h2>
<ul id="rejected"></ul>
<h2>Recent pushes</h2>
<table id="pushes"><thead><tr><th>TIME</th><th>VERSION</th><th>FULL</th><th>TRIGGERS</th><th>SECONDS SINCE THE FIRST CHANGE</th></tr></thead><tbody></tbody></table>
<h2>Log scopes</h2>
<table id="scopes"><thead><tr><th>SCOPE</th><th>LEVEL</th><th>DESCRIPTION</th></tr></thead><tbody></tbody></table>
<script>
const TYPES = {CDS: "type.googleapis.com/envoy.config.cluster.v3.Cluster", LDS: "type.googleapis.com/envoy.config.listener.v3.Listener",
  EDS: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", RDS: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"};
const LEVELS = ["none", "error", "warn", "info", "debug", "trace"];
function cell(row, text, cls) { const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; return td; }
function fill(id, rows, render) { const body = document.querySelector("#" + id + " tbody"); body.innerHTML = ""; rows.forEach(r => render(body.insertRow(), r)); }
function status(r) { if (!r || !r.sent) return ["NOT SENT", ""]; if (r.lastError) return ["ERROR", "error"]; return [r.acked === r.sent ? "SYNCED" : "STALE", r.acked === r.sent ? "synced" : ""]; }
let editing = false;
async function refresh() {
  const s = await (await fetch("/api/state")).json();
  document.getElementById("version").textContent = "snapshot " + s.version;
  const p = s.process;
  document.getElementById("process").textContent = `version ${p.version}, pid ${p.pid}, up ${p.uptimeSeconds} s, ${(p.residentBytes / 1048576).toFixed(1)} MiB resident, ${p.threads} threads, ${p.ready ? "ready" : "NOT READY"}; flags: ${p.args.slice(1).join(" ")}`;
  fill("proxies", s.proxies, (row, x) => {
    cell(row, x.proxy);
    const errors = [];
    for (const [short, url] of Object.entries(TYPES)) {
      const r = (x.resources || {})[url]; const [word, cls] = status(r); cell(row, word, cls);
      if (r && r.lastError) errors.push(`${short}: ${r.lastError}` + (r.lastErrorSources && r.lastErrorSources.length ? ` (from ${r.lastErrorSources.join(", ")})` : ""));
    }
    cell(row, errors.join("; "), errors.length ? "error" : "");
  });
  fill("configs", Object.entries(s.configCounts), (row, [k, n]) => { cell(row, k); cell(row, n); });
  const ul = document.getElementById("rejected"); ul.innerHTML = "";
  s.rejected.forEach(e => { const li = document.createElement("li"); li.textContent = e; ul.appendChild(li); });
  fill("pushes", s.pushes, (row, x) => { cell(row, x.time); cell(row, x.version); cell(row, x.full); cell(row, Object.entries(x.triggers).map(([k, n]) => `${k}: ${n}`).join(", ")); cell(row, x.seconds === null ? "" : x.seconds.toFixed(3)); });
  if (!editing) fill("scopes", s.scopes, (row, x) => {
    cell(row, x.name);
    const sel = document.createElement("select"); sel.dataset.scope = x.name;
    LEVELS.forEach(l => { const o = document.createElement("option"); o.value = l; o.textContent = l; o.selected = l === x.output_level; sel.appendChild(o); });
    sel.onfocus = () => { editing = true; };
    sel.onchange = async () => {
      await fetch("/api/logging/" + x.name, {method: "PUT", headers: {"content-type": "application/json"}, body: JSON.stringify({output_level: sel.value})});
      editing = false; refresh();
    };
    row.insertCell().appendChild(sel); cell(row, x.description);
  });
  document.body.dataset.loaded = "true";
}
refresh(); setInterval(() => refresh().catch(() => {}), 1000);
</script>
</body>
</html>
"##;
