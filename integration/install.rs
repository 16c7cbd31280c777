//! The install chapter against a real kube-apiserver and controller manager: each profile's
//! manifest applies server-side, a second apply changes nothing, `verify-install` fails until
//! the pods run and passes after, `uninstall --purge` leaves nothing behind; the operator
//! reconciles an IstioOperator (a gateway appears, then is pruned); a canary revision runs
//! beside the default one, the API server sends each namespace's pods to its own revision's
//! webhook, and `tag set default` moves the default tag.
//!
//! There is no kubelet: the tests bind pods and report them running ([`Cluster::run_pods`]),
//! and force-delete pods the API server is waiting for a kubelet to finish deleting.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::Value;

use crate::cluster::Cluster;
use crate::support::{eventually, navarch_bin};

/// Every kind an install creates, for kubectl (`-A -l ...` lists what is left).
const KINDS: &str = "crd,namespace,serviceaccount,clusterrole,clusterrolebinding,role,\
                     rolebinding,configmap,deployment,service,poddisruptionbudget,\
                     horizontalpodautoscaler,mutatingwebhookconfiguration,\
                     validatingwebhookconfiguration";

fn navarch(kubeconfig: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(navarch_bin());
    cmd.args(args);
    if !matches!(args.first(), Some(&"manifest")) {
        cmd.arg("--kubeconfig").arg(kubeconfig);
    }
    cmd.stdin(Stdio::null())
        .output()
        .expect("run the navarch binary")
}

/// The words of a command line (`"install -y --no-wait"`), for arguments without spaces.
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn navarch_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = navarch(kubeconfig, args);
    assert!(
        out.status.success(),
        "navarch {args:?} failed:\n{}",
        text(&out)
    );
    text(&out)
}

/// `kubectl` with its exit status (the cluster helper panics on failure).
fn kubectl_status(cluster: &Cluster, args: &[&str]) -> Output {
    Command::new(cluster.bin.join("kubectl"))
        .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
        .args(args)
        .output()
        .expect("run kubectl")
}

/// Plays the kubelet's part in deletions: pods marked for deletion are removed at once.
fn reap_terminating_pods(client: kube::Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::all(client.clone());
        loop {
            if let Ok(list) = pods.list(&ListParams::default()).await {
                for p in list.items {
                    if p.metadata.deletion_timestamp.is_some() {
                        let ns = p.metadata.namespace.clone().unwrap_or_default();
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let _ = Api::<Pod>::namespaced(client.clone(), &ns)
                            .delete(&name, &DeleteParams::default().grace_period(0))
                            .await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// What is left of an install: objects with the component label, Istio CRDs, the namespace.
fn leftovers(cluster: &Cluster) -> Vec<String> {
    let labelled = cluster.kubectl(
        &[
            "get",
            KINDS,
            "-A",
            "-l",
            "operator.istio.io/component",
            "-o",
            "name",
        ],
        None,
    );
    let crds = cluster.kubectl(&["get", "crd", "-o", "name"], None);
    let namespaces = cluster.kubectl(&["get", "namespace", "-o", "name"], None);
    labelled
        .lines()
        .chain(crds.lines().filter(|l| l.contains("istio.io")))
        .chain(
            namespaces
                .lines()
                .filter(|l| *l == "namespace/istio-system"),
        )
        .map(str::to_string)
        .collect()
}

/// Deployments of a manifest, as (namespace, `app` label) pairs.
fn deployments(manifest: &str) -> Vec<(String, String)> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(manifest).unwrap();
    docs.iter()
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| {
            (
                d["metadata"]["namespace"].as_str().unwrap().to_string(),
                d["spec"]["selector"]["matchLabels"]["app"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_profile_applies_idempotently_verifies_and_purges_without_a_trace() {
    let net = 240;
    let cluster = Cluster::start_without_crds(net).await;
    let kc = cluster.kubeconfig.clone();
    let reaper = reap_terminating_pods(cluster.client().await);
    for profile in ["default", "demo", "minimal", "empty"] {
        let manifest = navarch_ok(
            &kc,
            &[
                "manifest",
                "generate",
                "--set",
                &format!("profile={profile}"),
            ],
        );
        if profile == "empty" {
            assert!(
                manifest.trim().is_empty(),
                "the empty profile installs nothing"
            );
            let out = navarch_ok(&kc, &["verify-install", "--set", "profile=empty"]);
            assert!(out.contains("Checked 0 Istio Deployments"), "{out}");
            continue;
        }
        let file = cluster.dir.path().join(format!("{profile}.yaml"));
        std::fs::write(&file, &manifest).unwrap();
        let file = file.to_str().unwrap();
        let applied = cluster.kubectl(&["apply", "--server-side", "-f", file], None);
        assert!(
            applied.contains("deployment.apps/istiod serverside-applied"),
            "{applied}"
        );
        let diff = kubectl_status(&cluster, &["diff", "--server-side", "-f", file]);
        assert_eq!(
            diff.status.code(),
            Some(0),
            "{profile}: a second apply would change:\n{}",
            text(&diff)
        );

        let before = navarch(&kc, &["verify-install", "-f", file]);
        assert!(
            !before.status.success(),
            "{profile}: verified before any pod ran"
        );
        assert!(
            text(&before).contains("✘ Deployment: istiod.istio-system: 0/1 replicas available"),
            "{profile}: {}",
            text(&before)
        );
        for (i, (ns, app)) in deployments(&manifest).iter().enumerate() {
            let ip = format!("127.{net}.1.{}", i + 1);
            cluster.run_pods(ns, &format!("app={app}"), &[&ip]).await;
        }
        let verified = eventually(Duration::from_secs(30), || async {
            navarch(&kc, &["verify-install", "-f", file])
                .status
                .success()
        })
        .await;
        let out = text(&navarch(&kc, &["verify-install", "-f", file]));
        assert!(
            verified.is_some(),
            "{profile}: verify-install never passed:\n{out}"
        );
        assert!(
            out.contains("✔ Deployment: istiod.istio-system checked successfully"),
            "{out}"
        );
        assert!(
            out.contains("✔ CustomResourceDefinition: virtualservices.networking.istio.io checked successfully"),
            "{out}"
        );
        assert!(
            out.contains("✔ Istio is installed and verified successfully"),
            "{out}"
        );

        let refused = navarch(&kc, &["uninstall"]);
        assert!(!refused.status.success());
        assert!(
            text(&refused).contains("--revision or --purge"),
            "{}",
            text(&refused)
        );
        let out = navarch_ok(&kc, &["uninstall", "--purge", "-y"]);
        assert!(
            out.contains("removed Deployment istio-system/istiod"),
            "{out}"
        );
        assert!(out.contains("✔ Uninstall complete"), "{out}");
        assert_eq!(
            leftovers(&cluster),
            Vec::<String>::new(),
            "{profile}: left behind"
        );
    }
    reaper.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_reconciles_an_istio_operator_and_prunes_what_it_drops() {
    let net = 241;
    let cluster = Cluster::start_without_crds(net).await;
    let kc = cluster.kubeconfig.clone();
    let out = navarch_ok(
        &kc,
        &words("operator init --watchedNamespaces istio-system,testns1"),
    );
    assert!(
        out.contains("Operator controller will watch namespaces: istio-system, testns1"),
        "{out}"
    );
    cluster.kubectl(
        &[
            "get",
            "deployment",
            "-n",
            "istio-operator",
            "istio-operator",
        ],
        None,
    );
    cluster.kubectl(&["create", "namespace", "istio-system"], None);
    cluster.kubectl(&["create", "namespace", "testns1"], None);

    // The controller itself, as its Deployment would run it.
    let addr = format!("127.{net}.0.1:18383");
    let log = cluster.dir.path().join("operator.log");
    let mut operator = Command::new(navarch_bin())
        .args([
            "operator",
            "--watched-namespaces",
            "istio-system,testns1",
            "--addr",
            &addr,
        ])
        .arg("--kubeconfig")
        .arg(&kc)
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let ready = eventually(Duration::from_secs(30), || {
        let url = format!("http://{addr}/ready");
        async move { reqwest::get(url).await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert!(
        ready.is_some(),
        "operator not ready: {}",
        std::fs::read_to_string(&log).unwrap()
    );

    let iop = |egress: bool| {
        format!(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata:\n  \
             namespace: istio-system\n  name: example-istiocontrolplane\nspec:\n  profile: minimal\n  \
             meshConfig:\n    accessLogFile: /dev/stdout\n  components:\n    egressGateways:\n    \
             - name: istio-egressgateway\n      enabled: {egress}\n"
        )
    };
    cluster.apply(&iop(true));
    let exists = |name: &str| {
        kubectl_status(&cluster, &["get", "deployment", "-n", "istio-system", name])
            .status
            .success()
    };
    let appeared = eventually(Duration::from_secs(60), || async {
        exists("istio-egressgateway")
    })
    .await;
    assert!(
        appeared.is_some(),
        "the egress gateway never appeared: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(exists("istiod"), "the control plane is installed too");
    let mesh = cluster.kubectl(
        &[
            "get",
            "configmap",
            "istio",
            "-n",
            "istio-system",
            "-o",
            "jsonpath={.data.mesh}",
        ],
        None,
    );
    assert!(mesh.contains("accessLogFile: /dev/stdout"), "{mesh}");
    let healthy = eventually(Duration::from_secs(30), || async {
        cluster.kubectl(
            &[
                "get",
                "istiooperator",
                "-n",
                "istio-system",
                "example-istiocontrolplane",
                "-o",
                "jsonpath={.status.status}",
            ],
            None,
        ) == "HEALTHY"
    })
    .await;
    assert!(healthy.is_some(), "status never HEALTHY");

    cluster.apply(&iop(false));
    let pruned = eventually(Duration::from_secs(60), || async {
        !exists("istio-egressgateway")
    })
    .await;
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        pruned.is_some(),
        "the egress gateway was never pruned: {log_text}"
    );
    assert!(
        log_text.contains("pruned")
            && log_text.contains("Deployment istio-system/istio-egressgateway"),
        "the operator's log shows the change: {log_text}"
    );
    assert!(exists("istiod"), "the rest stays");

    // A spec the operator cannot take is reported in the status, with the path.
    cluster.apply(&iop(false).replace("accessLogFile", "acessLogFile"));
    let reported = eventually(Duration::from_secs(30), || async {
        cluster
            .kubectl(
                &[
                    "get",
                    "istiooperator",
                    "-n",
                    "istio-system",
                    "example-istiocontrolplane",
                    "-o",
                    "jsonpath={.status.message}",
                ],
                None,
            )
            .contains("did you mean meshConfig.accessLogFile?")
    })
    .await;
    assert!(
        reported.is_some(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    let _ = operator.kill();
    let _ = operator.wait();
    let out = navarch_ok(&kc, &["operator", "remove"]);
    assert!(
        out.contains("removed Deployment istio-operator/istio-operator"),
        "{out}"
    );
    assert!(
        !kubectl_status(
            &cluster,
            &[
                "get",
                "deployment",
                "-n",
                "istio-operator",
                "istio-operator"
            ]
        )
        .status
        .success()
    );
}

/// Creates a pod in `ns` and returns the API server's answer: `Ok` when no webhook took it,
/// else the error (which names the webhook and the Service it called).
fn create_pod(cluster: &Cluster, ns: &str, name: &str) -> Result<(), String> {
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec: {{containers: [{{name: app, image: app}}]}}\n"
    );
    let out = Command::new(cluster.bin.join("kubectl"))
        .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
        .args(["create", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(pod.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run kubectl");
    if out.status.success() {
        Ok(())
    } else {
        Err(text(&out))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_revision_runs_beside_the_default_and_the_default_tag_moves_to_it() {
    let net = 242;
    let cluster = Cluster::start_without_crds(net).await;
    let kc = cluster.kubeconfig.clone();
    let reaper = reap_terminating_pods(cluster.client().await);

    // `install` waits for readiness: it finishes once the (test-played) kubelet runs istiod.
    let install = Command::new(navarch_bin())
        .args([
            "install",
            "-y",
            "--set",
            "profile=minimal",
            "--readiness-timeout",
            "60s",
        ])
        .arg("--kubeconfig")
        .arg(&kc)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cluster
        .run_pods(
            "istio-system",
            "app=istiod,istio.io/rev=default",
            &[&format!("127.{net}.1.1")],
        )
        .await;
    let out = install.wait_with_output().unwrap();
    let out_text = text(&out);
    assert!(out.status.success(), "{out_text}");
    for line in [
        "applied CustomResourceDefinition virtualservices.networking.istio.io",
        "✔ Istio core installed",
        "✔ Istiod installed",
        "waiting up to 60s for 1 Deployment(s) to become ready",
        "✔ Installation complete",
    ] {
        assert!(
            out_text.contains(line),
            "{line:?} missing from:\n{out_text}"
        );
    }

    let out = navarch_ok(
        &kc,
        &words(
            "install -y --no-wait --set profile=minimal --revision canary --set meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        ),
    );
    assert!(
        out.contains("applied Deployment istio-system/istiod-canary"),
        "{out}"
    );
    cluster
        .run_pods(
            "istio-system",
            "app=istiod,istio.io/rev=canary",
            &[&format!("127.{net}.1.2")],
        )
        .await;
    let verified = eventually(Duration::from_secs(30), || async {
        navarch(
            &kc,
            &[
                "verify-install",
                "--set",
                "profile=minimal",
                "--revision",
                "canary",
            ],
        )
        .status
        .success()
    })
    .await;
    assert!(verified.is_some(), "the canary never verified");
    navarch_ok(&kc, &["verify-install", "--set", "profile=minimal"]);

    // Both control planes serve, each with its own revision's mesh config.
    let default_cp =
        crate::support::ControlPlane::start_cluster_revision(&kc, "istiod-a", "", None).await;
    let canary_cp = crate::support::ControlPlane::start_cluster_revision(
        &kc,
        "istiod-canary-a",
        "canary",
        None,
    )
    .await;
    let mode = |cp: &crate::support::ControlPlane| {
        let url = format!("{}/debug/mesh", cp.http);
        async move {
            let mesh: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            mesh["outboundTrafficPolicy"]["mode"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    };
    let canary_mesh = eventually(Duration::from_secs(30), || async {
        mode(&canary_cp).await == "REGISTRY_ONLY"
    })
    .await;
    assert!(canary_mesh.is_some(), "the canary reads istio-canary");
    assert_eq!(
        mode(&default_cp).await,
        "ALLOW_ANY",
        "the default reads istio"
    );

    // The API server sends each namespace's pods to its own revision's webhook. (Nothing
    // answers /inject yet, so the webhook's failure names which one was called.)
    cluster.kubectl(&["create", "namespace", "ns-default"], None);
    cluster.kubectl(
        &[
            "label",
            "namespace",
            "ns-default",
            "istio-injection=enabled",
        ],
        None,
    );
    cluster.kubectl(&["create", "namespace", "ns-canary"], None);
    cluster.kubectl(
        &["label", "namespace", "ns-canary", "istio.io/rev=canary"],
        None,
    );
    cluster.kubectl(&["create", "namespace", "ns-plain"], None);
    let default_err = create_pod(&cluster, "ns-default", "a").unwrap_err();
    assert!(
        default_err.contains("namespace.sidecar-injector.istio.io"),
        "{default_err}"
    );
    assert!(
        default_err.contains("istiod.istio-system.svc"),
        "{default_err}"
    );
    let canary_err = create_pod(&cluster, "ns-canary", "a").unwrap_err();
    assert!(
        canary_err.contains("rev.namespace.sidecar-injector.istio.io"),
        "{canary_err}"
    );
    assert!(
        canary_err.contains("istiod-canary.istio-system.svc"),
        "{canary_err}"
    );
    create_pod(&cluster, "ns-plain", "a").expect("an unlabelled namespace is not injected");

    // `tag set default` moves the default tag: istio-injection=enabled now goes to the canary.
    let out = navarch_ok(&kc, &["tag", "set", "default", "--revision", "canary"]);
    assert!(
        out.contains(
            "Revision tag \"default\" created, referencing control plane revision \"canary\""
        ),
        "{out}"
    );
    assert!(
        out.contains("MutatingWebhookConfiguration istio-sidecar-injector (deactivated)"),
        "{out}"
    );
    let moved = create_pod(&cluster, "ns-default", "b").unwrap_err();
    assert!(moved.contains("istiod-canary.istio-system.svc"), "{moved}");
    assert!(
        !moved.contains("istiod.istio-system.svc"),
        "the default revision no longer injects: {moved}"
    );
    let list = navarch_ok(&kc, &["tag", "list"]);
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..2] == ["default", "canary"]),
        "{list}"
    );
    let refused = navarch(&kc, &["tag", "set", "default", "--revision", "other"]);
    assert!(text(&refused).contains("--overwrite"), "{}", text(&refused));
    navarch_ok(&kc, &["tag", "remove", "default"]);
    assert!(!navarch_ok(&kc, &["tag", "list"]).contains("default"));

    // An in-place upgrade of the default revision: the same objects, the new image.
    navarch_ok(
        &kc,
        &words("install -y --no-wait --set profile=minimal --set tag=9.9.9"),
    );
    let image = cluster.kubectl(
        &[
            "get",
            "deployment",
            "-n",
            "istio-system",
            "istiod",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
        None,
    );
    assert_eq!(image, "navarch/navarch:9.9.9");

    // Uninstalling the canary leaves the default control plane alone.
    navarch_ok(&kc, &["uninstall", "--revision", "canary", "-y"]);
    assert!(
        !kubectl_status(
            &cluster,
            &["get", "deployment", "-n", "istio-system", "istiod-canary"]
        )
        .status
        .success()
    );
    cluster.kubectl(&["get", "deployment", "-n", "istio-system", "istiod"], None);
    cluster.kubectl(&["get", "crd", "virtualservices.networking.istio.io"], None);
    reaper.abort();
}
