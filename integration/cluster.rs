//! The tests' view of a real Kubernetes control plane on loopback ([`navarch::localkube`]:
//! etcd, kube-apiserver and kube-controller-manager, so EndpointSlices come from the real
//! controller), with panicking conveniences, the test Node and navarch's CRDs installed.
//!
//! Each test gets its own cluster on `127.<net>.0.250` (etcd :2379/:2380, API server :6443),
//! so tests run in parallel. There is no kubelet: tests bind Pods to a Node object and set
//! their status (podIP, Running, Ready) through the status subresource.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use navarch::localkube::{LocalCluster, LocalClusterOptions};
use serde_json::json;

pub const NODE: &str = "navarch-test-node";

/// A second API server on the same etcd (at `127.<net>.0.251`), for changes made while the
/// one navarch watches is down. Killed when dropped.
pub struct OtherApiServer(navarch::localkube::OtherApiServer);

impl OtherApiServer {
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        navarch::localkube::kubectl(&self.0.bin, &self.0.kubeconfig, args, stdin)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn apply(&self, yaml: &str) {
        self.kubectl(&["apply", "-f", "-"], Some(yaml));
    }

    pub fn stop_apiserver(&mut self) {
        self.0.stop();
    }
}

/// One running cluster; every process is killed when it is dropped.
pub struct Cluster(LocalCluster);

impl std::ops::Deref for Cluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.0
    }
}

impl Cluster {
    /// Starts etcd, the API server and the controller manager on `127.<net>.0.250`, creates
    /// the Node pods are bound to, and installs navarch's Istio CRDs.
    pub async fn start(net: u8) -> Cluster {
        let cluster = Cluster::start_without_crds(net).await;
        cluster.install_crds(&navarch::install::crds_yaml());
        cluster
    }

    /// [`Cluster::start`] without the CRDs: what an install starts from.
    pub async fn start_without_crds(net: u8) -> Cluster {
        Cluster::start_with_service_cidr(net, navarch::localkube::DEFAULT_SERVICE_CIDR).await
    }

    /// [`Cluster::start_without_crds`] with Services' cluster IPs from `cidr` (a loopback
    /// range when the test plays kube-proxy by binding a cluster IP itself).
    pub async fn start_with_service_cidr(net: u8, cidr: &str) -> Cluster {
        // NAVARCH_KEEP_CLUSTER_LOGS=1 keeps certificates, kubeconfig and logs for debugging.
        let keep_files = std::env::var_os("NAVARCH_KEEP_CLUSTER_LOGS").is_some();
        let inner = LocalCluster::start(&LocalClusterOptions {
            ip: format!("127.{net}.0.250"),
            controller_manager: true,
            keep_files,
            service_cidr: cidr.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("starting the test cluster: {e}"));
        if keep_files {
            eprintln!("test cluster files kept in {}", inner.dir.path().display());
        }
        let cluster = Cluster(inner);
        let client = cluster.client().await;
        Api::<Node>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
                }))
                .unwrap(),
            )
            .await
            .expect("create the test Node");
        cluster
    }

    /// Starts (or restarts) the API server navarch watches and waits until it answers.
    pub async fn start_apiserver(&mut self) {
        self.0
            .start_apiserver()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts a second API server on the same etcd and waits until it answers.
    pub async fn second_apiserver(&self) -> OtherApiServer {
        OtherApiServer(
            self.0
                .second_apiserver()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// Kills the API server (etcd and the controller manager keep running).
    pub fn stop_apiserver(&mut self) {
        self.0.stop_apiserver();
    }

    pub async fn client(&self) -> Client {
        self.0
            .client()
            .await
            .expect("a client for the test cluster")
    }

    /// Runs the built kubectl against this cluster; `stdin` is piped in when given.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        self.0
            .kubectl(args, stdin)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Applies the CustomResourceDefinitions in `yaml` and waits until every CRD is
    /// established.
    pub fn install_crds(&self, yaml: &str) {
        let crds = self.dir.path().join("crds.yaml");
        std::fs::write(&crds, yaml).unwrap();
        self.kubectl(&["apply", "-f", crds.to_str().unwrap()], None);
        self.kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=60s",
            ],
            None,
        );
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) {
        self.kubectl(&["apply", "-f", "-"], Some(yaml));
    }

    /// Plays the kubelet for the Pods `selector` picks in `ns`: waits until there are
    /// `ips.len()` of them (the ReplicaSet controller creates them), binds each to the test
    /// Node and reports it Running and Ready with the next IP of `ips` (pods in name order).
    /// Returns the pods' names.
    pub async fn run_pods(&self, ns: &str, selector: &str, ips: &[&str]) -> Vec<String> {
        let pods: Api<Pod> = Api::namespaced(self.client().await, ns);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut list = loop {
            let list = pods
                .list(&ListParams::default().labels(selector))
                .await
                .expect("list pods");
            let live: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            if live.len() >= ips.len() {
                break live;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{ns}: {} pods for {selector} within 30s (controller-manager log: {})",
                ips.len(),
                self.log_path("controller-manager").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        list.sort_by_key(|p| p.metadata.name.clone());
        let mut names = Vec::new();
        for (pod, ip) in list.iter().zip(ips) {
            let name = pod.metadata.name.clone().unwrap();
            if pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_none()
            {
                let binding = json!({
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
                });
                pods.create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
                .unwrap_or_else(|e| panic!("bind {ns}/{name}: {e}"));
            }
            let now = "2026-01-01T00:00:00Z";
            let status = json!({"status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "hostIP": self.ip,
                "startTime": now,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                ],
            }});
            pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap_or_else(|e| panic!("set {ns}/{name} running: {e}"));
            names.push(name);
        }
        names
    }
}
