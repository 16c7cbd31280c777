//! A real Kubernetes control plane on loopback for the tests: etcd, kube-apiserver and
//! kube-controller-manager (so EndpointSlices come from the real controller), built from the
//! official Go modules by `integration/kube/build.sh` and cached under ~/.cache.
//!
//! Each test gets its own cluster on `127.<net>.0.250` (etcd :2379/:2380, API server :6443),
//! so tests run in parallel. There is no kubelet: tests bind Pods to a Node object and set
//! their status (podIP, Running, Ready) through the status subresource.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tempfile::TempDir;

const TOKEN: &str = "navarch-test-admin-token";
pub const NODE: &str = "navarch-test-node";

/// The directory holding the built binaries (built on first use; cached afterwards).
fn binaries() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/kube/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run integration/kube/build.sh");
        assert!(
            out.status.success(),
            "integration/kube/build.sh failed; run it by hand to see why"
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("build.sh prints the bin dir")
                .trim(),
        )
    })
    .clone()
}

/// The address of the second API server a test may start on the same etcd.
fn second_ip(ip: &str) -> String {
    ip.replace(".0.250", ".0.251")
}

fn write_kubeconfig(dir: &Path, name: &str, ip: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://{ip}:6443
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {TOKEN}
contexts:
- name: test
  context: {{cluster: test, user: admin}}
current-context: test
",
            ca = dir.join("ca.crt").display()
        ),
    )
    .unwrap();
    path
}

async fn client_for(kubeconfig: &Path) -> Result<Client, Box<dyn std::error::Error>> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

fn kubectl(bin: &Path, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(bin.join("kubectl"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A second API server on the same etcd (at `127.<net>.0.251`), for changes made while the
/// one navarch watches is down. Killed when dropped.
pub struct OtherApiServer {
    bin: PathBuf,
    kubeconfig: PathBuf,
    child: Option<Child>,
}

impl OtherApiServer {
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        kubectl(&self.bin, &self.kubeconfig, args, stdin)
    }

    pub fn apply(&self, yaml: &str) {
        self.kubectl(&["apply", "-f", "-"], Some(yaml));
    }

    pub fn stop_apiserver(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OtherApiServer {
    fn drop(&mut self) {
        self.stop_apiserver();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One running cluster; every process is killed when it is dropped.
pub struct Cluster {
    pub dir: TempDir,
    pub ip: String,
    pub kubeconfig: PathBuf,
    bin: PathBuf,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    controller_manager: Option<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in [
            self.controller_manager.as_mut(),
            self.apiserver.as_mut(),
            self.etcd.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    /// Starts etcd, the API server and the controller manager on `127.<net>.0.250`, creates
    /// the Node pods are bound to, and installs navarch's Istio CRDs.
    pub async fn start(net: u8) -> Cluster {
        let bin = tokio::task::spawn_blocking(binaries).await.unwrap();
        let mut dir = tempfile::tempdir().unwrap();
        // NAVARCH_KEEP_CLUSTER_LOGS=1 keeps certificates, kubeconfig and logs for debugging.
        if std::env::var_os("NAVARCH_KEEP_CLUSTER_LOGS").is_some() {
            dir.disable_cleanup(true);
            eprintln!("test cluster files kept in {}", dir.path().display());
        }
        let ip = format!("127.{net}.0.250");
        let d = dir.path();
        // Certificates: a CA, the API server's serving cert, the service-account signing key.
        run(Command::new("openssl")
            .current_dir(d)
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args([
                "-subj",
                "/CN=navarch-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ]));
        run(Command::new("openssl")
            .current_dir(d)
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-subj", "/CN=kube-apiserver"])
            .args(["-keyout", "apiserver.key", "-out", "apiserver.csr"]));
        std::fs::write(
            d.join("san.ext"),
            format!(
                "subjectAltName=IP:{ip},IP:{},DNS:localhost\n",
                second_ip(&ip)
            ),
        )
        .unwrap();
        run(Command::new("openssl")
            .current_dir(d)
            .args(["x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt"])
            .args(["-CAkey", "ca.key", "-CAcreateserial", "-days", "2"])
            .args(["-extfile", "san.ext", "-out", "apiserver.crt"]));
        run(Command::new("openssl").current_dir(d).args([
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            "sa.key",
        ]));
        run(Command::new("openssl")
            .current_dir(d)
            .args(["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"]));
        std::fs::write(
            d.join("tokens.csv"),
            format!("{TOKEN},admin,admin,\"system:masters\"\n"),
        )
        .unwrap();
        let kubeconfig = write_kubeconfig(d, "kubeconfig", &ip);
        let mut cluster = Cluster {
            ip: ip.clone(),
            kubeconfig,
            bin,
            etcd: None,
            apiserver: None,
            controller_manager: None,
            dir,
        };
        cluster.start_etcd();
        cluster.start_apiserver().await;
        cluster.start_controller_manager();
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
        let crds = cluster.dir.path().join("crds.yaml");
        std::fs::write(&crds, navarch::install::crds_yaml()).unwrap();
        cluster.kubectl(&["apply", "-f", crds.to_str().unwrap()], None);
        cluster.kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=60s",
            ],
            None,
        );
        cluster
    }

    fn log(&self, name: &str) -> Stdio {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap();
        Stdio::from(f)
    }

    fn start_etcd(&mut self) {
        let ip = &self.ip;
        let child = Command::new(self.bin.join("etcd"))
            .args(["--name", "default", "--data-dir"])
            .arg(self.dir.path().join("etcd"))
            .args(["--listen-client-urls", &format!("http://{ip}:2379")])
            .args(["--advertise-client-urls", &format!("http://{ip}:2379")])
            .args(["--listen-peer-urls", &format!("http://{ip}:2380")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{ip}:2380"),
            ])
            .args(["--initial-cluster", &format!("default=http://{ip}:2380")])
            .args(["--log-level", "warn", "--unsafe-no-fsync"])
            .stdout(self.log("etcd"))
            .stderr(self.log("etcd"))
            .spawn()
            .expect("start etcd");
        self.etcd = Some(child);
    }

    fn spawn_apiserver(&self, ip: &str, log: &str) -> Child {
        let d = self.dir.path();
        Command::new(self.bin.join("kube-apiserver"))
            .args(["--etcd-servers", &format!("http://{}:2379", self.ip)])
            .args(["--bind-address", ip, "--advertise-address", ip])
            .args(["--secure-port", "6443"])
            .arg(format!(
                "--tls-cert-file={}",
                d.join("apiserver.crt").display()
            ))
            .arg(format!(
                "--tls-private-key-file={}",
                d.join("apiserver.key").display()
            ))
            .arg(format!("--client-ca-file={}", d.join("ca.crt").display()))
            .arg(format!(
                "--token-auth-file={}",
                d.join("tokens.csv").display()
            ))
            .arg(format!(
                "--service-account-key-file={}",
                d.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                d.join("sa.key").display()
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!(
                "--cert-dir={}",
                d.join("apiserver-certs").display()
            ))
            .args(["--authorization-mode", "RBAC"])
            .args(["--service-cluster-ip-range", "10.96.0.0/16"])
            .args(["--endpoint-reconciler-type", "none"])
            .args(["--enable-priority-and-fairness=false", "--v=1"])
            .stdout(self.log(log))
            .stderr(self.log(log))
            .spawn()
            .expect("start kube-apiserver")
    }

    /// Waits until the API server behind `kubeconfig` answers `/readyz`.
    async fn wait_ready(&self, kubeconfig: &Path, child: &mut Child, log: &str) {
        let log = self.dir.path().join(format!("{log}.log"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(client) = client_for(kubeconfig).await
                && client
                    .request_text(
                        http::Request::get("/readyz")
                            .body(Vec::new())
                            .expect("readyz request"),
                    )
                    .await
                    .is_ok_and(|t| t.trim() == "ok")
            {
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("kube-apiserver exited with {status}; see {}", log.display());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "kube-apiserver not ready within 90s; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Starts (or restarts) the API server navarch watches and waits until it answers.
    pub async fn start_apiserver(&mut self) {
        let mut child = self.spawn_apiserver(&self.ip.clone(), "apiserver");
        self.wait_ready(&self.kubeconfig.clone(), &mut child, "apiserver")
            .await;
        self.apiserver = Some(child);
    }

    /// Starts a second API server on the same etcd and waits until it answers.
    pub async fn second_apiserver(&self) -> OtherApiServer {
        let ip = second_ip(&self.ip);
        let kubeconfig = write_kubeconfig(self.dir.path(), "kubeconfig-second", &ip);
        let mut child = self.spawn_apiserver(&ip, "apiserver-second");
        self.wait_ready(&kubeconfig, &mut child, "apiserver-second")
            .await;
        OtherApiServer {
            bin: self.bin.clone(),
            kubeconfig,
            child: Some(child),
        }
    }

    /// Kills the API server (etcd and the controller manager keep running).
    pub fn stop_apiserver(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn start_controller_manager(&mut self) {
        let child = Command::new(self.bin.join("kube-controller-manager"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(
                "--controllers=endpointslice-controller,endpointslice-mirroring-controller,\
deployment-controller,replicaset-controller,namespace-controller,\
garbage-collector-controller,serviceaccount-controller",
            )
            .args(["--leader-elect=false", "--secure-port=0"])
            .args(["--use-service-account-credentials=false", "--v=1"])
            .stdout(self.log("controller-manager"))
            .stderr(self.log("controller-manager"))
            .spawn()
            .expect("start kube-controller-manager");
        self.controller_manager = Some(child);
    }

    pub async fn client(&self) -> Client {
        client_for(&self.kubeconfig)
            .await
            .expect("a client for the test cluster")
    }

    /// Runs the built kubectl against this cluster; `stdin` is piped in when given.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        kubectl(&self.bin, &self.kubeconfig, args, stdin)
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
                self.dir.path().join("controller-manager.log").display()
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
