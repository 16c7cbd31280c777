//! Sidecar injection and config validation with the real API server calling navarch's
//! webhooks: the API server calls the `istiod` Services at their cluster IPs (a loopback range
//! here; the test plays kube-proxy by having each navarch's webhook listen on its Service's
//! cluster IP and port 443), trusts the CA navarch patched into the webhook configurations,
//! and stores what navarch answered.

use std::time::Duration;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::install::{navarch_ok, words};
use crate::support::{ControlPlane, eventually};

fn pod_yaml(ns: &str, name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}{labels}}}}}\n\
         spec: {{containers: [{{name: app, image: app}}]}}\n"
    )
}

/// Creates a pod (retrying while the webhooks come up) and returns it as stored.
async fn create(cluster: &Cluster, ns: &str, name: &str, labels: &str) -> Value {
    let yaml = pod_yaml(ns, name, labels);
    let mut last = String::new();
    let created = eventually(Duration::from_secs(30), || {
        let r =
            navarch::localkube::LocalCluster::kubectl(cluster, &["create", "-f", "-"], Some(&yaml));
        let ok = r.is_ok();
        if let Err(e) = r {
            last = e.to_string();
        }
        async move { ok }
    })
    .await;
    assert!(created.is_some(), "{ns}/{name} never created: {last}");
    serde_json::from_str(&cluster.kubectl(&["get", "pod", "-n", ns, name, "-o", "json"], None))
        .unwrap()
}

fn containers(pod: &Value, key: &str) -> Vec<String> {
    pod["spec"][key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_injects_through_navarchs_webhook_by_istios_rules_and_validates() {
    let net = 243;
    let cluster = Cluster::start_with_service_cidr(net, &format!("127.{net}.128.0/20")).await;
    let kc = cluster.kubeconfig.clone();
    navarch_ok(&kc, &words("install -y --no-wait --set profile=minimal"));
    navarch_ok(
        &kc,
        &words("install -y --no-wait --set profile=minimal --revision canary"),
    );
    // The test plays kube-proxy: each webhook listens on its Service's cluster IP, port 443.
    let cluster_ip = |service: &str| {
        cluster.kubectl(
            &[
                "get",
                "service",
                "-n",
                "istio-system",
                service,
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
            None,
        )
    };
    let listen = |service: &str| Some(format!("{}:443", cluster_ip(service)).parse().unwrap());
    let default_cp =
        ControlPlane::start_cluster_revision(&kc, "istiod-a", "", listen("istiod")).await;
    let _canary_cp = ControlPlane::start_cluster_revision(
        &kc,
        "istiod-canary-a",
        "canary",
        listen("istiod-canary"),
    )
    .await;
    let bundled = eventually(Duration::from_secs(30), || async {
        ["istio-sidecar-injector", "istio-sidecar-injector-canary"]
            .iter()
            .all(|name| {
                !cluster
                    .kubectl(
                        &[
                            "get",
                            "mutatingwebhookconfiguration",
                            name,
                            "-o",
                            "jsonpath={.webhooks[*].clientConfig.caBundle}",
                        ],
                        None,
                    )
                    .trim()
                    .is_empty()
            })
    })
    .await;
    assert!(
        bundled.is_some(),
        "navarch never set the webhooks' caBundle"
    );

    for (ns, label) in [
        ("ns-inject", Some("istio-injection=enabled")),
        ("ns-plain", None),
        ("ns-canary", Some("istio.io/rev=canary")),
    ] {
        cluster.kubectl(&["create", "namespace", ns], None);
        if let Some(l) = label {
            cluster.kubectl(&["label", "namespace", ns, l], None);
        }
    }

    let injected = create(&cluster, "ns-inject", "web", "").await;
    assert_eq!(
        containers(&injected, "containers"),
        ["app", "istio-proxy"],
        "{injected}"
    );
    assert_eq!(containers(&injected, "initContainers"), ["istio-init"]);
    let proxy_args = injected["spec"]["containers"][1]["args"].to_string();
    assert!(
        proxy_args.contains("istiod.istio-system.svc:15010"),
        "{proxy_args}"
    );
    let status: Value = serde_json::from_str(
        injected["metadata"]["annotations"]["sidecar.istio.io/status"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["revision"], "default");

    // The seed's opt-out: `sidecar.istio.io/inject: "false"` on the pod.
    let opted_out = create(
        &cluster,
        "ns-inject",
        "sleep",
        ", sidecar.istio.io/inject: \"false\"",
    )
    .await;
    assert_eq!(containers(&opted_out, "containers"), ["app"]);
    let plain = create(&cluster, "ns-plain", "web", "").await;
    assert_eq!(
        containers(&plain, "containers"),
        ["app"],
        "an unlabelled namespace is untouched"
    );
    let canary = create(&cluster, "ns-canary", "web", "").await;
    assert_eq!(containers(&canary, "containers"), ["app", "istio-proxy"]);
    let canary_status: Value = serde_json::from_str(
        canary["metadata"]["annotations"]["sidecar.istio.io/status"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        canary_status["revision"], "canary",
        "the canary's webhook injected it"
    );
    assert!(
        canary["spec"]["containers"][1]["args"]
            .to_string()
            .contains("istiod-canary.istio-system.svc:15010")
    );

    // policy: disabled — only pods that ask for it.
    let config = "policy: disabled\nalwaysInjectSelector: []\nneverInjectSelector: []\ninjectedAnnotations: {}\ndefaultTemplates: [sidecar]\n";
    let patch = serde_json::json!({"data": {"config": config}}).to_string();
    cluster.kubectl(
        &[
            "patch",
            "configmap",
            "istio-sidecar-injector",
            "-n",
            "istio-system",
            "--type",
            "merge",
            "-p",
            &patch,
        ],
        None,
    );
    tokio::time::sleep(Duration::from_secs(6)).await; // the injector re-reads its ConfigMap after 5s
    let by_default = create(&cluster, "ns-inject", "web2", "").await;
    assert_eq!(
        containers(&by_default, "containers"),
        ["app"],
        "policy disabled: not injected"
    );
    let asked = create(
        &cluster,
        "ns-inject",
        "web3",
        ", sidecar.istio.io/inject: \"true\"",
    )
    .await;
    assert_eq!(
        containers(&asked, "containers"),
        ["app", "istio-proxy"],
        "policy disabled: opted in"
    );

    // Validation: the API server refuses what navarch rejects, with the field.
    let vs = |weight: i32| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: ns-inject}}\n\
         spec:\n  hosts: [web]\n  http:\n  - route:\n    - destination: {{host: web, subset: v1}}\n      weight: {weight}\n    \
         - destination: {{host: web, subset: v2}}\n      weight: {}\n",
            100 - weight
        )
    };
    let mut refusal = String::new();
    let refused = eventually(Duration::from_secs(30), || {
        let r = navarch::localkube::LocalCluster::kubectl(
            &cluster,
            &["apply", "-f", "-"],
            Some(&vs(-10)),
        );
        if let Err(e) = &r {
            refusal = e.to_string();
        }
        let ok = r.is_err();
        async move { ok }
    })
    .await;
    assert!(refused.is_some(), "a negative weight was stored");
    assert!(
        refusal.contains("spec.http[0].route[0].weight") && refusal.contains("weight -10 < 0"),
        "{refusal}"
    );
    assert!(refusal.contains("denied the request"), "{refusal}");
    cluster.apply(&vs(90));
    cluster.kubectl(&["get", "virtualservice", "-n", "ns-inject", "web"], None);

    let metrics = reqwest::get(format!("{}/metrics", default_cp.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or("0")
            .parse()
            .unwrap()
    };
    assert!(value("sidecar_injection_success_total") >= 2, "{metrics}");
    assert!(value("sidecar_injection_skip_total") >= 1, "{metrics}");
    assert!(value("galley_validation_failed") >= 1, "{metrics}");
    assert!(value("galley_validation_passed") >= 1, "{metrics}");
}
