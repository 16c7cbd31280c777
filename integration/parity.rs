//! Parity with istiod, kept as a test: what navarch generates for Bookinfo's productpage
//! sidecar, compared item by item (clusters, listeners, their filter chains, route
//! configurations, virtual hosts, routes) with what istiod 1.31-dev generated for the same
//! proxy from the same objects (`testdata/parity/istiod-productpage.json`, stored).
//!
//! `refresh_the_stored_istiod_config_dump` (ignored; `bench/istiod-parity.sh` runs it) makes
//! that file again: a real kube-apiserver with the input, istiod on it, a real Envoy connected
//! as productpage-v1, and istiod's own `/debug/config_dump` of that proxy.
//!
//! What the comparison leaves out, on purpose, is listed in [`IGNORED`]: Istio-proxy-only
//! filters and fields (navarch feeds upstream Envoy) and istiod's bookkeeping metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use navarch::model::proxy::Proxy;
use navarch::model::push_context::PushContext;
use serde_json::{Value, json};

const INPUT: &str = "testdata/parity/bookinfo.yaml";
const ISTIOD_ONLY: &str = "testdata/parity/istiod-only.yaml";
/// What the API server holds for istiod without being asked (the `kubernetes` Service), for
/// navarch's side.
const CLUSTER: &str = "testdata/parity/cluster.yaml";
const STORED: &str = "testdata/parity/istiod-productpage.json";
const NODE_ID: &str = "sidecar~10.244.0.16~productpage-v1-1.default~default.svc.cluster.local";
/// The Istio version both sides are told the proxy runs.
const PROXY_VERSION: &str = "1.31.0";

/// Filters only Istio's own proxy understands (navarch feeds upstream Envoy): left out of both
/// sides before comparing. (istiod runs with metadata exchange and the ALPN filter off, as
/// for any upstream Envoy, so these normally do not appear.)
const IGNORED: &[&str] = &[
    "istio.stats",
    "istio.metadata_exchange",
    "istio.alpn",
    "istio.metadata_exchange_network",
];

/// The deliberate difference, normalized before comparing: istiod ends stat prefixes and
/// `alt_stat_name`s with `;`, a delimiter for the stats tag extraction of Istio's own
/// bootstrap; with upstream Envoy it would end up in every stat name, so navarch names stats
/// plainly (and without `alt_stat_name`).
fn normalize(side: Side, v: &mut Value) {
    match v {
        Value::Object(map) => {
            if side == Side::Istiod {
                map.remove("alt_stat_name");
                if let Some(Value::String(p)) = map.get_mut("stat_prefix")
                    && p.ends_with(';')
                {
                    p.pop();
                }
            }
            map.values_mut().for_each(|v| normalize(side, v));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| normalize(side, v)),
        _ => {}
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Navarch,
    Istiod,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn navarch_proxy() -> Proxy {
    let meta = json!({
        "INTERCEPTION_MODE": "REDIRECT",
        "LABELS": {"app": "productpage", "version": "v1"},
        "ISTIO_VERSION": PROXY_VERSION,
        "NAMESPACE": "default",
    });
    Proxy::from_node(NODE_ID, meta.as_object().unwrap()).unwrap()
}

/// navarch's resources for the proxy, as Envoy JSON by type.
fn navarch_resources() -> Value {
    // The file source reads directories: the input alone in one.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join(INPUT), dir.path().join("bookinfo.yaml")).unwrap();
    std::fs::copy(root().join(CLUSTER), dir.path().join("cluster.yaml")).unwrap();
    let store =
        navarch::sources::files::load_store(&[dir.path().to_path_buf()], "istio-system", None)
            .expect("the parity input loads");
    assert!(store.errors.is_empty(), "{:#?}", store.errors);
    let push = PushContext::new(store);
    crate::golden::translate_all(&navarch_proxy(), &push)
}

/// istiod's stored resources, by type, from its config dump.
fn istiod_resources() -> Value {
    let path = root().join(STORED);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run bench/istiod-parity.sh to make it",
            path.display()
        )
    });
    let mut dump: Value = serde_json::from_str(&text).unwrap();
    snake_case_keys(&mut dump);
    let mut out = json!({"clusters": [], "listeners": [], "routes": []});
    for config in dump["configs"].as_array().into_iter().flatten() {
        let kind = config["@type"].as_str().unwrap_or_default();
        let (key, list, field) = if kind.ends_with("ClustersConfigDump") {
            ("clusters", "dynamic_active_clusters", "cluster")
        } else if kind.ends_with("ListenersConfigDump") {
            ("listeners", "dynamic_listeners", "active_state")
        } else if kind.ends_with("RoutesConfigDump") {
            ("routes", "dynamic_route_configs", "route_config")
        } else {
            continue;
        };
        for item in config[list].as_array().into_iter().flatten() {
            let mut resource = item[field].clone();
            if key == "listeners" {
                resource = resource["listener"].clone();
            }
            out[key].as_array_mut().unwrap().push(resource);
        }
    }
    out
}

/// istiod writes protobuf JSON with camelCase field names, navarch with the proto names:
/// field names become snake_case; map keys with a `.` (extension names) stay.
fn snake_case_keys(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut v) in old {
                snake_case_keys(&mut v);
                let key = if k.contains('.') || k.starts_with('@') {
                    k
                } else if k == "proxy100Continue" {
                    "proxy_100_continue".to_string()
                } else {
                    let mut s = String::with_capacity(k.len() + 4);
                    for c in k.chars() {
                        if c.is_ascii_uppercase() {
                            s.push('_');
                            s.push(c.to_ascii_lowercase());
                        } else {
                            s.push(c);
                        }
                    }
                    s
                };
                map.insert(key, v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(snake_case_keys),
        _ => {}
    }
}

/// Removes every `@type`-tagged object or `name`d filter listed in [`IGNORED`], recursively,
/// and the keys no comparison should see.
fn strip(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("@type");
            // istiod's bookkeeping: where config came from, and the resources' versions.
            map.remove("last_updated");
            map.remove("version_info");
            for list in map.values_mut() {
                if let Value::Array(items) = list {
                    items.retain(|i| !i["name"].as_str().is_some_and(|n| IGNORED.contains(&n)));
                }
            }
            map.values_mut().for_each(strip);
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        // Go writes `100` where prost-reflect writes `100.0` for a double.
        Value::Number(n) => {
            if let Some(f) = n.as_f64()
                && let Some(as_float) = serde_json::Number::from_f64(f)
            {
                *n = as_float;
            }
        }
        _ => {}
    }
}

/// The compared items of one side: `kind name` → JSON. A listener is compared without its
/// chains, each chain on its own; a route configuration without its virtual hosts, each virtual
/// host without its routes, each route on its own.
fn items(side: Side, resources: &Value) -> BTreeMap<String, Value> {
    let mut resources = resources.clone();
    strip(&mut resources);
    normalize(side, &mut resources);
    let mut out = BTreeMap::new();
    for c in resources["clusters"].as_array().into_iter().flatten() {
        out.insert(
            format!("cluster {}", c["name"].as_str().unwrap()),
            c.clone(),
        );
    }
    for l in resources["listeners"].as_array().into_iter().flatten() {
        let name = l["name"].as_str().unwrap().to_string();
        let (mut top, mut all) = split_off(l, "filter_chains");
        if let Some(d) = top.as_object_mut().unwrap().remove("default_filter_chain") {
            all.push(d);
        }
        out.insert(format!("listener {name}"), top);
        for (i, chain) in all.iter().enumerate() {
            let chain_name = chain["name"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| {
                    // Unnamed chains: by their match, else by position.
                    chain
                        .get("filter_chain_match")
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| format!("#{i}"))
                });
            let key = format!("chain {name}/{chain_name}/{}", chain_match_key(chain));
            out.insert(key, chain.clone());
        }
    }
    for r in resources["routes"].as_array().into_iter().flatten() {
        let name = r["name"].as_str().unwrap().to_string();
        let (top, vhosts) = split_off(r, "virtual_hosts");
        out.insert(format!("route_config {name}"), top);
        for vh in &vhosts {
            let vh_name = vh["name"].as_str().unwrap_or_default().to_string();
            let (mut vtop, routes) = split_off(vh, "routes");
            if let Some(Value::Array(domains)) = vtop.get_mut("domains") {
                domains.sort_by_key(|d| d.to_string());
            }
            out.insert(format!("virtual_host {name}/{vh_name}"), vtop);
            for (i, route) in routes.iter().enumerate() {
                let route_name = route["name"].as_str().unwrap_or_default();
                out.insert(
                    format!("route {name}/{vh_name}/{i}:{route_name}"),
                    route.clone(),
                );
            }
        }
    }
    out
}

/// `v` without its list `key`, and that list.
fn split_off(v: &Value, key: &str) -> (Value, Vec<Value>) {
    let mut top = v.clone();
    let list = top
        .as_object_mut()
        .and_then(|m| m.remove(key))
        .and_then(|l| l.as_array().cloned())
        .unwrap_or_default();
    (top, list)
}

fn chain_match_key(chain: &Value) -> String {
    let m = &chain["filter_chain_match"];
    let port = m["destination_port"].as_u64().map(|p| p.to_string());
    let tp = m["transport_protocol"].as_str().map(str::to_string);
    let alpn = m["application_protocols"].as_array().map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(",")
    });
    [port, tp, alpn]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(";")
}

/// The paths (`a.b[2].c`) at which two JSON values differ, at most `limit` of them.
fn differences(a: &Value, b: &Value, path: String, out: &mut Vec<String>, limit: usize) {
    if out.len() >= limit {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                differences(va, vb, format!("{path}.{k}"), out, limit);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differences(va, vb, format!("{path}[{i}]"), out, limit);
            }
        }
        _ if a != b => out.push(format!("{path}: navarch {a} / istiod {b}")),
        _ => {}
    }
}

/// At least 95% of istiod's items for Bookinfo's productpage (every cluster, listener, filter
/// chain, route configuration, virtual host and route) are equal in navarch's output; the
/// rest are printed with the fields that differ.
#[test]
fn bookinfo_productpage_matches_istiod_item_by_item() {
    let ours = items(Side::Navarch, &navarch_resources());
    let theirs = items(Side::Istiod, &istiod_resources());
    assert!(
        theirs.len() >= 30,
        "the stored dump has items: {:?}",
        theirs.keys()
    );
    let mut equal = 0;
    let mut report = Vec::new();
    for (key, want) in &theirs {
        match ours.get(key) {
            Some(got) if got == want => equal += 1,
            Some(got) => {
                let mut diffs = Vec::new();
                differences(got, want, String::new(), &mut diffs, 8);
                report.push(format!("DIFFERENT {key}:\n    {}", diffs.join("\n    ")));
            }
            None => report.push(format!("MISSING in navarch: {key}")),
        }
    }
    for key in ours.keys().filter(|k| !theirs.contains_key(*k)) {
        report.push(format!("EXTRA in navarch: {key}"));
    }
    let share = equal as f64 / theirs.len() as f64;
    eprintln!(
        "parity with istiod: {equal} of {} items equal ({:.1}%)\n{}",
        theirs.len(),
        share * 100.0,
        report.join("\n")
    );
    assert!(
        share >= 0.95,
        "only {equal} of {} items equal istiod's ({:.1}%):\n{}",
        theirs.len(),
        share * 100.0,
        report.join("\n")
    );
}

/// Runs `cmd`, panicking with its output when it fails.
fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes `testdata/parity/istiod-productpage.json` again from a real istiod (`ISTIOD_BIN`, else
/// `pilot-discovery` from `go env GOPATH`/bin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs istiod (pilot-discovery); bench/istiod-parity.sh runs it"]
async fn refresh_the_stored_istiod_config_dump() {
    use navarch::cli::loadtest::control_plane::{ControlPlane, Kind, Source, StartOptions};

    let istiod_bin = std::env::var_os("ISTIOD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let gopath = run(std::process::Command::new("go").args(["env", "GOPATH"]));
            Path::new(gopath.trim()).join("bin/pilot-discovery")
        });
    assert!(
        istiod_bin.exists(),
        "{} not found: build it as bench/istiod-parity.sh says",
        istiod_bin.display()
    );
    let envoy = navarch::envoy::find_envoy().expect("Envoy is installed (.venv)");
    // etcd, kube-apiserver and the controller manager, with navarch's Istio CRDs.
    let cluster = crate::cluster::Cluster::start(77).await;
    // Every Istio kind istiod watches (security.istio.io and the rest too).
    let crds = json!({"apiVersion": "v1", "kind": "List", "items": navarch::install::istio_crds()});
    cluster.install_crds(&crds.to_string());
    eprintln!("[parity] kube-apiserver up");
    for file in [ISTIOD_ONLY, INPUT] {
        cluster.apply(&std::fs::read_to_string(root().join(file)).unwrap());
    }
    // No kubelet: the Pods' status (address, Ready) as the input states it.
    let input: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root().join(INPUT)).unwrap()).unwrap();
    for item in input["items"].as_array().unwrap() {
        if item["kind"] == "Pod" {
            let patch = json!({"status": item["status"]}).to_string();
            cluster.kubectl(
                &[
                    "patch",
                    "pod",
                    item["metadata"]["name"].as_str().unwrap(),
                    "-n",
                    item["metadata"]["namespace"].as_str().unwrap(),
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &patch,
                ],
                None,
            );
        }
    }
    eprintln!("[parity] Bookinfo applied; starting istiod");
    let work = tempfile::tempdir().unwrap();
    let istiod = ControlPlane::start(StartOptions {
        kind: Kind::Istiod,
        source: Source::Kubeconfig(&cluster.kubeconfig),
        istiod_bin: Some(&istiod_bin),
        istiod_env: &[],
        debounce_max: "10s",
        eds_debounce: true,
        work: work.path(),
        ready_timeout: Duration::from_secs(180),
    })
    .await
    .expect("istiod starts");
    eprintln!("[parity] istiod ready; connecting Envoy as productpage-v1");
    let bootstrap = work.path().join("bootstrap.yaml");
    run(std::process::Command::new(crate::support::navarch_bin())
        .args([
            "bootstrap",
            "--ip",
            "10.244.0.16",
            "--pod",
            "productpage-v1-1",
        ])
        .args([
            "--namespace",
            "default",
            "--labels",
            "app=productpage,version=v1",
        ])
        .args(["--interception-mode", "REDIRECT", "--admin-port", "0"])
        .args(["--xds-address", &istiod.grpc.to_string(), "-o"])
        .arg(&bootstrap));
    let text = std::fs::read_to_string(&bootstrap)
        .unwrap()
        .replace(navarch::bootstrap::ISTIO_VERSION, PROXY_VERSION);
    std::fs::write(&bootstrap, text).unwrap();
    let log = std::fs::File::create(work.path().join("envoy.log")).unwrap();
    let mut envoy = std::process::Command::new(envoy)
        .arg("-c")
        .arg(&bootstrap)
        .args(["--disable-hot-restart", "--base-id", "77"])
        .arg("--admin-address-path")
        .arg(work.path().join("admin.txt"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let url = format!(
        "http://{}/debug/config_dump?proxyID=productpage-v1-1.default",
        istiod.http
    );
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let dump = loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
            && let Ok(text) = r.text().await
            && text.contains("ListenersConfigDump")
            && text.contains("inbound|9080||")
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "istiod has no config dump for productpage-v1 after 60s; see {}",
            istiod.log.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let _ = envoy.kill();
    let _ = envoy.wait();
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&dump).unwrap()).unwrap();
    std::fs::write(root().join(STORED), pretty + "\n").unwrap();
    eprintln!("[parity] wrote {STORED}");
    istiod.stop().await;
}
