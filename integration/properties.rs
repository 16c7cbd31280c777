//! Property tests (proptest, on stable Rust) standing in for fuzz targets:
//!
//! - documents: arbitrary text, arbitrary Kubernetes-shaped documents and mutations of the
//!   golden inputs, read as a config file: reading, validation, the snapshot build and
//!   translation never panic, and every error names the file it came from;
//! - translation: any valid generated mesh (Services, Pods, DestinationRules, VirtualServices)
//!   is accepted whole, and translates into Envoy resources that decode, with every RDS name a
//!   listener uses generated; a few cases also pass `envoy --mode validate`;
//! - ADS: arbitrary request sequences through `WatchedResources::on_request` never panic, a
//!   NACK never moves the acknowledged nonce, and only the nonce sent last is ever ACKed.
//!
//! Case counts are small so `.ci/run` stays quick (about 10 s in all); `PROPTEST_CASES=N` runs
//! N cases of every target; see ARCHITECTURE.md for the long run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use navarch::model::proxy::Proxy;
use navarch::model::push_context::PushContext;
use navarch::sources::objects::{ObjectSet, Origin};
use navarch::status::Nonce;
use navarch::translate::{self, ResourceType};
use navarch::xds::connection::{Decision, RequestInfo, WatchedResources};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use prost::Message;
use serde_json::{Value, json};

/// `default` cases (proptest's `PROPTEST_CASES`, when set, overrides it), failures saved to
/// `integration/properties.regressions` and replayed first on every run.
fn config(default: u32) -> Config {
    Config {
        cases: default,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..Config::default()
    }
}

fn sidecar(ns: &str, ip: &str, mode: &str) -> Proxy {
    let meta =
        json!({"INTERCEPTION_MODE": mode, "ISTIO_VERSION": "1.24.0", "LABELS": {"app": "client"}});
    Proxy::from_node(
        &format!("sidecar~{ip}~client.{ns}~{ns}.svc.cluster.local"),
        meta.as_object().unwrap(),
    )
    .unwrap()
}

/// Every type for `proxy`: never panics; each resource decodes as its Envoy message; every
/// route configuration a listener names is generated.
fn translate_checked(proxy: &Proxy, push: &PushContext) -> Result<(), TestCaseError> {
    let mut rds_wanted = BTreeSet::new();
    let mut rds_made = BTreeSet::new();
    for kind in [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ] {
        let resources = translate::generate(kind, proxy, push, None);
        let mut names = BTreeSet::new();
        for r in &resources {
            prop_assert!(names.insert(r.name.clone()), "{kind:?} {} twice", r.name);
            let bytes = r.resource.value.as_slice();
            let decoded = match kind {
                ResourceType::Cluster => Cluster::decode(bytes).map(|_| ()),
                ResourceType::Endpoint => ClusterLoadAssignment::decode(bytes).map(|_| ()),
                ResourceType::Route => RouteConfiguration::decode(bytes).map(|rc| {
                    rds_made.insert(rc.name);
                }),
                ResourceType::Listener => Listener::decode(bytes).map(|_| ()),
                ResourceType::Secret => Ok(()),
            };
            prop_assert!(decoded.is_ok(), "{kind:?} {} does not decode", r.name);
        }
        if kind == ResourceType::Listener {
            let json: Vec<Value> = resources
                .iter()
                .map(|r| navarch::protojson::any_to_json(&r.resource).unwrap())
                .collect();
            collect_rds(&Value::Array(json), &mut rds_wanted);
        }
    }
    let missing: Vec<_> = rds_wanted.difference(&rds_made).collect();
    prop_assert!(
        missing.is_empty(),
        "listeners name missing routes {missing:?}"
    );
    Ok(())
}

fn collect_rds(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            if let Some(name) = map
                .get("rds")
                .and_then(|r| r.get("route_config_name"))
                .and_then(Value::as_str)
            {
                out.insert(name.to_string());
            }
            map.values().for_each(|v| collect_rds(v, out));
        }
        Value::Array(list) => list.iter().for_each(|v| collect_rds(v, out)),
        _ => {}
    }
}

// ---- documents ----

/// Arbitrary JSON values, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|n| json!(n)),
        "[a-zA-Z0-9./*_~:|-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("80"),
            Just("http"),
            Just("v1"),
            Just("10s"),
            Just("-1s"),
            Just("^(/"),
            Just("*.example.com"),
            Just("127.0.0.1"),
            Just("::1"),
            Just("0.0.0.0/0"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Kubernetes-shaped documents of the kinds navarch reads, with arbitrary contents.
fn any_document() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        Just(("networking.istio.io/v1", "VirtualService")),
        Just(("networking.istio.io/v1", "DestinationRule")),
        Just(("networking.istio.io/v1beta1", "Gateway")),
        Just(("networking.istio.io/v1alpha3", "ServiceEntry")),
        Just(("networking.istio.io/v1", "Sidecar")),
        Just(("networking.istio.io/v1", "WorkloadEntry")),
        Just(("networking.istio.io/v1alpha3", "EnvoyFilter")),
        Just(("networking.istio.io/v2", "VirtualService")),
        Just(("v1", "Service")),
        Just(("v1", "Pod")),
        Just(("v1", "Namespace")),
        Just(("v1", "ConfigMap")),
        Just(("v1", "Endpoints")),
        Just(("v1", "Secret")),
        Just(("discovery.k8s.io/v1", "EndpointSlice")),
        Just(("v1", "List")),
    ];
    let name = prop_oneof!["[a-z][a-z0-9-]{0,8}", "[ -~]{0,12}", Just(String::new())];
    (kind, name, "[a-z]{1,6}", any_json(), any_json()).prop_map(
        |((api_version, kind), name, ns, spec, extra)| {
            let mut doc = json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"name": name, "namespace": ns, "labels": {"app": "x"}},
                "spec": spec,
            });
            match kind {
                "List" => doc["items"] = json!([extra]),
                "ConfigMap" => doc["data"] = json!({"mesh": extra.to_string()}),
                "EndpointSlice" => doc["endpoints"] = extra,
                "Pod" => doc["status"] = extra,
                _ => {}
            }
            doc
        },
    )
}

/// The golden inputs (valid meshes of Istio and Kubernetes objects), one list per directory.
fn golden_meshes() -> Vec<Vec<Value>> {
    let mut meshes = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir("testdata/golden")
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut docs = Vec::new();
        for path in navarch::sources::files::config_files(&[dir]).unwrap() {
            let text = std::fs::read_to_string(&path).unwrap();
            docs.extend(navarch::sources::files::parse_documents(&path, &text).unwrap());
        }
        docs.retain(|d| !d.is_null());
        meshes.push(docs);
    }
    meshes
}

/// Every position in `doc` (as JSON pointers), the root included.
fn pointers(doc: &Value, at: String, out: &mut Vec<String>) {
    match doc {
        Value::Object(map) => {
            for (k, v) in map {
                pointers(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(list) => {
            for (i, v) in list.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// A golden mesh with one value (anywhere in one of its documents) replaced by an arbitrary
/// one.
fn mutated_golden() -> impl Strategy<Value = Vec<Value>> {
    let meshes = golden_meshes();
    assert!(meshes.len() >= 5, "golden inputs found");
    (
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        any_json(),
    )
        .prop_map(move |(m, d, at, value)| {
            let mut docs = meshes[m.index(meshes.len())].clone();
            let d = d.index(docs.len());
            let mut all = Vec::new();
            pointers(&docs[d], String::new(), &mut all);
            let ptr = &all[at.index(all.len())];
            if ptr.is_empty() {
                docs[d] = value;
            } else if let Some(slot) = docs[d].pointer_mut(ptr) {
                *slot = value;
            }
            docs
        })
}

/// Reads `text` as the file `name` and builds a snapshot; checks what every reader of a
/// config file must guarantee. `docs`: the documents `text` holds, when known.
fn read_as_file(name: &str, text: &str, docs: Option<&[Value]>) -> Result<(), TestCaseError> {
    let path = Path::new("fuzz").join(name);
    let set = navarch::sources::files::objects_from_text(&path, text);
    let store = set.into_store("istio-system", None);
    let source = path.display().to_string();
    for e in &store.errors {
        prop_assert_eq!(&e.source, &source, "an error names its file: {}", e);
        prop_assert!(e.to_string().starts_with(&source), "{}", e);
        // An object's error names its document, kind and name as the document gave them.
        let Some(docs) = docs else { continue };
        let doc = match (docs.len(), e.document) {
            (1, None) => &docs[0],
            (n, Some(i)) if i < n => &docs[i],
            (_, None) => continue,
            (n, Some(i)) => return Err(TestCaseError::fail(format!("document {i} of {n}: {e}"))),
        };
        if e.kind.is_some() && doc["kind"] != "List" {
            prop_assert_eq!(e.kind.as_deref(), doc["kind"].as_str(), "{}", e);
            if let Some(name) = doc["metadata"]["name"].as_str() {
                prop_assert_eq!(e.name.as_deref(), Some(name), "{}", e);
            }
        }
    }
    let push = PushContext::new(store);
    translate_checked(&sidecar("testns1", "10.1.0.21", "REDIRECT"), &push)?;
    Ok(())
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn arbitrary_text_never_panics_and_errors_name_the_file(
        text in prop_oneof![
            any::<String>(),
            "[a-z:&*!|>'\"{}\\[\\], #\n-]{0,160}",
            "(apiVersion: v1\nkind: (Service|Namespace|Pod)\nmetadata: \\{name: [a-z&*]{1,4}\\}\n---\n){1,3}",
        ]
    ) {
        read_as_file("text.yaml", &text, None)?;
        read_as_file("text.json", &text, None)?;
    }

    #[test]
    fn arbitrary_documents_never_panic_and_errors_name_the_document(doc in any_document()) {
        let text = doc.to_string();
        read_as_file("doc.json", &text, Some(std::slice::from_ref(&doc)))?;
        // The same document twice in a YAML file (JSON is YAML's flow style).
        let twice = [doc.clone(), doc];
        read_as_file("doc.yaml", &format!("{text}\n---\n{text}\n"), Some(&twice))?;
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn golden_meshes_with_one_value_changed_never_panic_and_errors_name_the_document(
        docs in mutated_golden()
    ) {
        let text: Vec<String> = docs.iter().map(Value::to_string).collect();
        read_as_file("mesh.yaml", &text.join("\n---\n"), Some(&docs))?;
    }
}

// ---- translation of valid meshes ----

const NAMESPACES: [&str; 2] = ["a", "b"];
const PROTOCOLS: [&str; 4] = ["http", "grpc", "tcp", "http2"];

#[derive(Debug, Clone)]
struct GenService {
    name: String,
    ns: &'static str,
    /// (port, protocol prefix of its name)
    ports: Vec<(u16, &'static str)>,
    pods: Vec<&'static str>,
}

impl GenService {
    fn host(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.ns)
    }
}

fn gen_service(i: usize) -> impl Strategy<Value = GenService> {
    (
        prop::sample::select(NAMESPACES.to_vec()),
        prop::collection::btree_map(
            prop::sample::select(vec![80u16, 443, 8000, 8080, 9000, 15000, 5432]),
            prop::sample::select(PROTOCOLS.to_vec()),
            1..3,
        ),
        prop::collection::vec(prop::sample::select(vec!["v1", "v2", "v3"]), 0..3),
    )
        .prop_map(move |(ns, ports, pods)| GenService {
            name: format!("svc{i}"),
            ns,
            ports: ports.into_iter().collect(),
            pods,
        })
}

#[derive(Debug, Clone)]
struct GenRoute {
    uri: Option<(&'static str, String)>,
    header: Option<String>,
    /// (service index, subset, weight share)
    destinations: Vec<(usize, Option<&'static str>, u32)>,
    timeout: Option<u32>,
    retries: Option<u32>,
    fault_delay: bool,
    rewrite: bool,
}

fn gen_route() -> impl Strategy<Value = GenRoute> {
    (
        prop::option::of((
            prop::sample::select(vec!["prefix", "exact", "regex"]),
            "[a-z0-9]{1,6}",
        )),
        prop::option::of("[a-z]{1,6}"),
        prop::collection::vec(
            (
                0usize..4,
                prop::option::of(prop::sample::select(vec!["v1", "v2"])),
                1u32..10,
            ),
            1..4,
        ),
        prop::option::of(1u32..30),
        prop::option::of(1u32..5),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(uri, header, destinations, timeout, retries, fault_delay, rewrite)| GenRoute {
                uri,
                header,
                destinations,
                timeout,
                retries,
                fault_delay,
                rewrite,
            },
        )
}

#[derive(Debug, Clone)]
struct GenMesh {
    services: Vec<GenService>,
    /// Per service: a DestinationRule with subsets v1/v2 and this traffic policy variant.
    rules: Vec<Option<u8>>,
    /// Per service: a VirtualService with these routes.
    routes: Vec<Vec<GenRoute>>,
}

fn gen_mesh() -> impl Strategy<Value = GenMesh> {
    (1usize..5)
        .prop_flat_map(|n| {
            (
                (0..n).map(gen_service).collect::<Vec<_>>(),
                prop::collection::vec(prop::option::of(0u8..6), n),
                prop::collection::vec(prop::collection::vec(gen_route(), 0..4), n),
            )
        })
        .prop_map(|(services, rules, routes)| GenMesh {
            services,
            rules,
            routes,
        })
}

fn traffic_policy(variant: u8) -> Value {
    match variant {
        0 => json!({"loadBalancer": {"simple": "ROUND_ROBIN"}}),
        1 => json!({"loadBalancer": {"simple": "LEAST_REQUEST"}}),
        2 => {
            json!({"connectionPool": {"tcp": {"maxConnections": 7, "connectTimeout": "3s"}, "http": {"http1MaxPendingRequests": 3, "maxRequestsPerConnection": 2}}})
        }
        3 => {
            json!({"outlierDetection": {"consecutive5xxErrors": 2, "interval": "5s", "baseEjectionTime": "30s", "maxEjectionPercent": 50}})
        }
        4 => json!({"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}),
        _ => json!({"tls": {"mode": "DISABLE"}, "loadBalancer": {"simple": "RANDOM"}}),
    }
}

/// The mesh as Kubernetes and Istio documents; valid by construction.
fn mesh_documents(mesh: &GenMesh) -> Vec<Value> {
    let mut docs = Vec::new();
    for ns in NAMESPACES {
        docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    for (i, s) in mesh.services.iter().enumerate() {
        let ports: Vec<Value> = s
            .ports
            .iter()
            .map(|(port, proto)| json!({"name": format!("{proto}-{port}"), "port": port, "targetPort": port + 1}))
            .collect();
        docs.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": s.name, "namespace": s.ns},
            "spec": {"ports": ports, "selector": {"app": s.name}},
        }));
        for (j, version) in s.pods.iter().enumerate() {
            docs.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{}-{j}", s.name), "namespace": s.ns, "labels": {"app": s.name, "version": version}},
                "status": {"phase": "Running", "podIP": format!("10.2.{i}.{}", j + 1)},
            }));
        }
        if let Some(variant) = mesh.rules[i] {
            docs.push(json!({
                "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": {"name": s.name, "namespace": s.ns},
                "spec": {
                    "host": s.host(),
                    "trafficPolicy": traffic_policy(variant),
                    "subsets": [
                        {"name": "v1", "labels": {"version": "v1"}},
                        {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": traffic_policy((variant + 1) % 6)},
                    ],
                },
            }));
        }
        let routes = &mesh.routes[i];
        if routes.is_empty() {
            continue;
        }
        let http: Vec<Value> = routes
            .iter()
            .map(|r| {
                let n = mesh.services.len();
                let dests: Vec<(usize, Option<&str>, u32)> = r
                    .destinations
                    .iter()
                    .map(|(d, subset, w)| (d % n, *subset, *w))
                    .collect();
                // Weights that sum to 100, the last one taking the rest.
                let total: u32 = dests.iter().map(|d| d.2).sum();
                let mut left = 100;
                let mut route = Vec::new();
                for (k, (d, subset, w)) in dests.iter().enumerate() {
                    let weight = if k + 1 == dests.len() { left } else { w * 100 / total };
                    left -= weight;
                    let target = &mesh.services[*d];
                    let mut dest = json!({"host": target.host(), "port": {"number": target.ports[0].0}});
                    if let Some(subset) = subset
                        && mesh.rules[*d].is_some()
                    {
                        dest["subset"] = json!(subset);
                    }
                    let mut entry = json!({"destination": dest});
                    if dests.len() > 1 {
                        entry["weight"] = json!(weight);
                    }
                    route.push(entry);
                }
                let mut rule = json!({"route": route});
                let mut m = serde_json::Map::new();
                if let Some((how, path)) = &r.uri {
                    let value = match *how {
                        "regex" => format!("^/{path}[0-9]*$"),
                        _ => format!("/{path}"),
                    };
                    m.insert("uri".into(), json!({ *how: value }));
                }
                if let Some(h) = &r.header {
                    m.insert("headers".into(), json!({"x-test": {"exact": h}}));
                }
                if !m.is_empty() {
                    rule["match"] = json!([m]);
                }
                if let Some(t) = r.timeout {
                    rule["timeout"] = json!(format!("{t}s"));
                }
                if let Some(a) = r.retries {
                    rule["retries"] = json!({"attempts": a, "perTryTimeout": "2s", "retryOn": "5xx,connect-failure"});
                }
                if r.fault_delay {
                    rule["fault"] = json!({"delay": {"percentage": {"value": 10.0}, "fixedDelay": "1s"}});
                }
                if r.rewrite {
                    rule["rewrite"] = json!({"uri": "/"});
                }
                rule
            })
            .collect();
        docs.push(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": s.name, "namespace": s.ns},
            "spec": {"hosts": [s.host()], "http": http},
        }));
    }
    docs
}

fn mesh_push(mesh: &GenMesh) -> Result<PushContext, TestCaseError> {
    let mut set = ObjectSet::default();
    let origin = Origin {
        source: "generated".into(),
        document: None,
    };
    for doc in mesh_documents(mesh) {
        set.add_document(&origin, doc);
    }
    let store = set.into_store("istio-system", None);
    prop_assert!(
        store.errors.is_empty(),
        "a valid mesh is accepted whole: {:#?}",
        store.errors
    );
    Ok(PushContext::new(store))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_valid_mesh_translates_into_envoy_resources(mesh in gen_mesh()) {
        let push = mesh_push(&mesh)?;
        for proxy in [
            sidecar("a", "10.1.0.21", "REDIRECT"),
            sidecar("b", "127.0.0.21", "NONE"),
        ] {
            translate_checked(&proxy, &push)?;
        }
    }
}

proptest! {
    // Each case runs `envoy --mode validate` (about 0.1 s).
    #![proptest_config(config(8))]

    #[test]
    fn valid_meshes_pass_envoy_validate(mesh in gen_mesh()) {
        let push = mesh_push(&mesh)?;
        let proxy = sidecar("a", "10.1.0.21", "REDIRECT");
        let resources = crate::golden::translate_all(&proxy, &push);
        let work = tempfile::tempdir().unwrap();
        crate::golden::envoy_validate(&crate::golden::static_bootstrap(&resources), work.path());
    }
}

// ---- the ADS request state machine ----

const KINDS: [ResourceType; 5] = ResourceType::PUSH_ORDER;

#[derive(Debug, Clone)]
enum NonceChoice {
    Empty,
    /// The n-th most recent nonce sent for the type (0 = the last one).
    Sent(usize),
    /// Shaped like ours, never sent.
    Forged(u64, u64),
    Garbage(String),
}

#[derive(Debug, Clone)]
enum Op {
    Request {
        ty: usize,
        nonce: NonceChoice,
        names: Vec<String>,
        error: Option<String>,
    },
    /// The server sends a response for the type (when the proxy watches it).
    Send { ty: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let nonce = prop_oneof![
        Just(NonceChoice::Empty),
        (0usize..3).prop_map(NonceChoice::Sent),
        (0u64..4, 0u64..4).prop_map(|(v, s)| NonceChoice::Forged(v, s)),
        "[ -~]{0,20}".prop_map(NonceChoice::Garbage),
    ];
    prop_oneof![
        3 => (
            0..KINDS.len(),
            nonce,
            prop::collection::vec("[a-c]", 0..3),
            prop::option::of("[a-z ]{0,10}"),
        )
            .prop_map(|(ty, nonce, names, error)| Op::Request { ty, nonce, names, error }),
        2 => (0..KINDS.len()).prop_map(|ty| Op::Send { ty }),
    ]
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn ads_requests_never_panic_and_a_nack_never_moves_the_acked_nonce(
        ops in prop::collection::vec(op(), 1..40)
    ) {
        let mut w = WatchedResources::default();
        // Every nonce sent per type, oldest first.
        let mut sent: BTreeMap<usize, Vec<Nonce>> = BTreeMap::new();
        let now = SystemTime::UNIX_EPOCH;
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Send { ty } => {
                    let nonce = Nonce { version: 7, seq: step as u64 + 10 };
                    if let Some(watched) = w.get_mut(KINDS[ty]) {
                        watched.sync.on_sent(nonce, now);
                        sent.entry(ty).or_default().push(nonce);
                    }
                }
                Op::Request { ty, nonce, names, error } => {
                    let kind = KINDS[ty];
                    let history = sent.get(&ty).cloned().unwrap_or_default();
                    let response_nonce = match nonce {
                        NonceChoice::Empty => String::new(),
                        NonceChoice::Sent(back) => history
                            .iter()
                            .rev()
                            .nth(back)
                            .map(|n| n.to_string())
                            .unwrap_or_default(),
                        NonceChoice::Forged(version, seq) => Nonce { version, seq }.to_string(),
                        NonceChoice::Garbage(g) => g,
                    };
                    let before = w.clone();
                    let last_sent = before.get(kind).and_then(|s| s.sync.nonce_sent);
                    let info = RequestInfo {
                        kind,
                        response_nonce: &response_nonce,
                        resource_names: &names,
                        error_detail: error.as_deref(),
                    };
                    let decision = w.on_request(&info, now);
                    if error.is_some() {
                        prop_assert!(matches!(decision, Decision::Nack | Decision::StaleNonce), "{decision:?}");
                        for k in KINDS {
                            prop_assert_eq!(
                                w.get(k).map(|s| s.sync.nonce_acked),
                                before.get(k).map(|s| s.sync.nonce_acked),
                                "a NACK moved the acked nonce of {:?}", k
                            );
                        }
                        if decision == Decision::Nack {
                            prop_assert_eq!(
                                Some(response_nonce.clone()),
                                last_sent.map(|n| n.to_string()),
                                "only the last push is NACKed"
                            );
                            prop_assert_eq!(
                                w.get(kind).unwrap().sync.last_error.as_deref(),
                                error.as_deref()
                            );
                        }
                    }
                    match decision {
                        Decision::Ack => {
                            let s = &w.get(kind).unwrap().sync;
                            prop_assert_eq!(s.nonce_acked.map(|n| n.to_string()), Some(response_nonce.clone()));
                            prop_assert_eq!(s.nonce_acked, last_sent, "only the last push is ACKed");
                            prop_assert_eq!(s.last_error.as_deref(), None);
                        }
                        Decision::StaleNonce => {
                            for k in KINDS {
                                prop_assert_eq!(w.get(k), before.get(k), "a stale request changes nothing");
                            }
                        }
                        Decision::Respond => prop_assert!(w.get(kind).is_some()),
                        Decision::Unsubscribe => prop_assert!(w.get(kind).is_none()),
                        Decision::Nack => {}
                    }
                }
            }
            // Whatever happened: an acknowledged nonce is one that was sent for its type.
            for (ty, kind) in KINDS.iter().enumerate() {
                if let Some(acked) = w.get(*kind).and_then(|s| s.sync.nonce_acked) {
                    prop_assert!(
                        sent.get(&ty).is_some_and(|h| h.contains(&acked)),
                        "acked nonce {} was never sent for {:?}", acked, kind
                    );
                }
            }
        }
    }
}
