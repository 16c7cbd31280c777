//! Hostile and broken config files beside a working mesh: an alias bomb, 100,000 levels of
//! nesting, invalid UTF-8, duplicate keys, a 100 MB document, objects whose every field has the
//! wrong type, names that are not DNS names, and a VirtualService with 10,000 routes. Each is
//! rejected with its file (and kind/name/field when it has them) on /debug/configz, or served;
//! the push loop keeps going (a later edit reaches Envoy), and the rest of the mesh is served
//! throughout.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// The rejected documents on /debug/configz whose source is the file `name`.
fn errors_of<'a>(configz: &'a Value, name: &str) -> Vec<&'a Value> {
    configz["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["source"]
                .as_str()
                .is_some_and(|s| s.ends_with(&format!("/{name}")))
        })
        .collect()
}

fn alias_bomb() -> String {
    let mut yaml = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        yaml.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    yaml
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// A VirtualService whose every spec field has the wrong type.
const WRONG_TYPES_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wrong-types, namespace: testns1}
spec:
  hosts: 5
  gateways: {mesh: true}
  http: "all of it"
  tcp: 7
  tls: false
  exportTo: "."
"#;

/// Each Istio kind with a spec of the wrong shape, and a Service whose ports are a string.
const WRONG_TYPES_OTHERS: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wrong-dr, namespace: testns1}
spec: {host: [1, 2], subsets: "v1", trafficPolicy: 3}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: wrong-gw, namespace: testns1}
spec: {servers: {port: 80}, selector: [a]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wrong-se, namespace: testns1}
spec: {hosts: "x", ports: 80, resolution: 5}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: wrong-sc, namespace: testns1}
spec: {egress: "all"}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: wrong-we, namespace: testns1}
spec: {address: [1], ports: "http"}
---
apiVersion: v1
kind: Service
metadata: {name: wrong-svc, namespace: testns1}
spec: {ports: "80", selector: 1}
"#;

const BAD_NAMES: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: Bad_Name!, namespace: testns1}
spec:
  hosts: [httpbin.testns1.svc.cluster.local]
  http:
  - route:
    - destination: {host: httpbin.testns1.svc.cluster.local}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: fine, namespace: "not a namespace"}
spec: {host: httpbin.testns1.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: 9lives, namespace: testns1}
spec:
  ports: [{name: http, port: 80}]
"#;

/// A Service `big` (httpbin's pods) and a VirtualService with 10,000 routes, /r0/ .. /r9999/,
/// each to httpbin's v2.
fn ten_thousand_routes() -> String {
    let mut yaml = String::from(
        r#"apiVersion: v1
kind: Service
metadata: {name: big, namespace: testns1}
spec:
  ports: [{name: http, port: 8000, targetPort: 8080}]
  selector: {app: httpbin}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: big, namespace: testns1}
spec:
  hosts: [big.testns1.svc.cluster.local]
  http:
"#,
    );
    for i in 0..10_000 {
        yaml.push_str(&format!(
            "  - match: [{{uri: {{prefix: /r{i}/}}}}]\n    route: [{{destination: {{host: httpbin.testns1.svc.cluster.local, subset: v2}}}}]\n"
        ));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_are_rejected_by_name_and_the_rest_of_the_mesh_is_served() {
    let sb = Sandbox::start(230, &[("vs.yaml", VS_90_10)], "NONE").await;
    let cp = &sb.cp;

    let mut huge =
        String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: huge}\ndata:\n  blob: \"");
    huge.push_str(&"x".repeat(100 * 1024 * 1024));
    huge.push_str("\"\n");
    cp.write("huge.yaml", &huge);
    drop(huge);
    cp.write("bomb.yaml", &alias_bomb());
    cp.write("deep.yaml", &nested(100_000));
    cp.write("deep.json", &nested(100_000));
    std::fs::write(
        cp.config_dir().join("latin1.yaml"),
        b"apiVersion: v1\nkind: Namespace\nmetadata: {name: caf\xe9}\n",
    )
    .unwrap();
    cp.write(
        "dup.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\nmetadata: {name: b}\n",
    );
    cp.write(
        "dup.json",
        r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "name": "b"}}"#,
    );
    cp.write("wrong-types.yaml", WRONG_TYPES_VS);
    cp.write("wrong-others.yaml", WRONG_TYPES_OTHERS);
    cp.write("bad-names.yaml", BAD_NAMES);
    let written = Instant::now();
    cp.write("big.yaml", &ten_thousand_routes());

    // All of it is read within seconds, each rejection naming what it rejects.
    let all_read = |configz: &Value| {
        !errors_of(configz, "bad-names.yaml").is_empty()
            && !errors_of(configz, "huge.yaml").is_empty()
            && configz["configs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["metadata"]["name"] == "big")
    };
    let mut configz = cp.configz().await;
    while !all_read(&configz) && written.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        configz = cp.configz().await;
    }
    assert!(
        all_read(&configz),
        "every file read within 30s: {configz:#}"
    );
    eprintln!("hostile files read in {:?}", written.elapsed());
    for e in configz["errors"].as_array().unwrap() {
        eprintln!("rejected: {}", e["error"].as_str().unwrap());
    }

    let one = |name: &str| -> String {
        let errs = errors_of(&configz, name);
        assert_eq!(errs.len(), 1, "{name}: exactly one error: {errs:#?}");
        errs[0]["error"].as_str().unwrap().to_string()
    };
    let huge = one("huge.yaml");
    assert!(
        huge.contains("more than the 16777216 bytes"),
        "huge.yaml: {huge}"
    );
    let bomb = one("bomb.yaml");
    assert!(bomb.contains("not valid YAML"), "bomb.yaml: {bomb}");
    let deep = one("deep.yaml");
    assert!(deep.contains("not valid YAML"), "deep.yaml: {deep}");
    let deep = one("deep.json");
    assert!(
        deep.contains("not valid JSON") && deep.contains("recursion limit"),
        "deep.json: {deep}"
    );
    let latin1 = one("latin1.yaml");
    assert!(
        latin1.contains("not UTF-8") && latin1.contains("line 3"),
        "latin1.yaml: {latin1}"
    );
    for f in ["dup.yaml", "dup.json"] {
        let dup = one(f);
        assert!(dup.contains("duplicate"), "{f}: {dup}");
    }
    let wrong = one("wrong-types.yaml");
    assert!(
        wrong.contains(": VirtualService testns1/wrong-types: field spec.")
            && wrong.contains("invalid type"),
        "wrong-types.yaml: {wrong}"
    );
    let others: Vec<String> = errors_of(&configz, "wrong-others.yaml")
        .iter()
        .map(|e| e["error"].as_str().unwrap().to_string())
        .collect();
    for (kind, name) in [
        ("DestinationRule", "wrong-dr"),
        ("Gateway", "wrong-gw"),
        ("ServiceEntry", "wrong-se"),
        ("Sidecar", "wrong-sc"),
        ("WorkloadEntry", "wrong-we"),
        ("Service", "wrong-svc"),
    ] {
        let prefix = format!(": {kind} testns1/{name}: field spec.");
        assert!(
            others
                .iter()
                .any(|e| e.contains(&prefix) && e.contains("invalid type")),
            "{kind} {name} rejected with its field: {others:#?}"
        );
    }
    let names: Vec<String> = errors_of(&configz, "bad-names.yaml")
        .iter()
        .map(|e| e["error"].as_str().unwrap().to_string())
        .collect();
    for expected in [
        "VirtualService testns1/Bad_Name!: field metadata.name: ",
        "DestinationRule not a namespace/fine: field metadata.namespace: ",
        "Service testns1/9lives: field metadata.name: ",
    ] {
        assert!(
            names.iter().any(|e| e.contains(expected)),
            "{expected}: {names:#?}"
        );
    }
    assert!(
        errors_of(&configz, "big.yaml").is_empty(),
        "10,000 routes are valid"
    );

    // The 10,000-route VirtualService is served, its last route too.
    let c = client();
    let served = eventually(Duration::from_secs(30), || async {
        let r = send(
            &c,
            "GET",
            &sb.listener,
            "big.testns1.svc.cluster.local",
            "/r9999/x",
            &[],
        )
        .await;
        r.served_by.as_deref() == Some("v2")
    })
    .await;
    assert!(served.is_some(), "route 10,000 of 10,000 reaches v2");

    // The rest of the mesh: the seed's split, and an edit still reaches Envoy within seconds.
    assert_seed_split(&sb.listener, &sb.v1, &sb.v2).await;
    cp.write("vs.yaml", VS_ALL_V2);
    let moved = eventually(Duration::from_secs(10), || async {
        let counts = split(&c, &sb.listener, HOST, "/headers", 20, &[]).await;
        counts.get("v2") == Some(&20)
    })
    .await;
    assert!(
        moved.is_some(),
        "an edit beside the hostile files is served"
    );
    let r = reqwest::get(format!("{}/ready", cp.http)).await.unwrap();
    assert_eq!(r.status(), 200, "bad files do not make navarch unready");
}
