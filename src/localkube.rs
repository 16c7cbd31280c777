//! A real Kubernetes control plane on loopback: etcd, kube-apiserver and, when asked,
//! kube-controller-manager, run from the binaries `integration/kube/build.sh` builds from the
//! official Go modules (cached under ~/.cache). The one home of this for the integration tests
//! and `navarch loadtest --kube`.
//!
//! Owns the processes (killed when the [`LocalCluster`] is dropped), their certificates, token
//! and kubeconfig in a temporary directory, and the readiness wait. Must not create any objects
//! in the cluster (that is the caller's job) and must never bind anything but the loopback
//! address it is given. There is no kubelet and no scheduler.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::Client;
use tempfile::TempDir;

/// The bearer token of the cluster's only user, a member of `system:masters`.
const TOKEN: &str = "navarch-test-admin-token";

/// Errors starting or driving a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum LocalKubeError {
    #[error("integration/kube/build.sh failed ({0}); run it by hand to see why")]
    Build(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd} failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("{what} not ready within {secs}s; see {log}")]
    NotReady {
        what: String,
        secs: u64,
        log: PathBuf,
    },
    #[error("{what} exited with {status}; see {log}")]
    Exited {
        what: String,
        status: std::process::ExitStatus,
        log: PathBuf,
    },
    #[error("a client for the local cluster: {0}")]
    Client(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalKubeError {
    let what = what.into();
    move |source| LocalKubeError::Io { what, source }
}

/// The directory holding etcd, kube-apiserver, kube-controller-manager and kubectl:
/// `NAVARCH_KUBE_BIN` when set, else what `integration/kube/build.sh` prints on its last line
/// (it builds on first use, several minutes on 2 cores, and is cached afterwards).
pub fn binaries() -> Result<PathBuf, LocalKubeError> {
    if let Some(dir) = std::env::var_os("NAVARCH_KUBE_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/kube/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(io(format!("running {}", script.display())))?;
    if !out.status.success() {
        return Err(LocalKubeError::Build(out.status.to_string()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| LocalKubeError::Build("it printed no directory".into()))
}

/// The address of a second API server on the same etcd: `.250` → `.251`.
pub fn second_ip(ip: &str) -> String {
    ip.replace(".0.250", ".0.251")
}

fn write_kubeconfig(dir: &Path, name: &str, ip: &str) -> Result<PathBuf, LocalKubeError> {
    let path = dir.join(name);
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://{ip}:6443
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {TOKEN}
contexts:
- name: local
  context: {{cluster: local, user: admin}}
current-context: local
",
        ca = dir.join("ca.crt").display()
    );
    std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
    Ok(path)
}

/// A kube-rs client for `kubeconfig`.
pub async fn client_for(kubeconfig: &Path) -> Result<Client, LocalKubeError> {
    let err = |e: &dyn std::fmt::Display| LocalKubeError::Client(e.to_string());
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| err(&e))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| err(&e))?;
    Client::try_from(config).map_err(|e| err(&e))
}

/// Runs `bin/kubectl --kubeconfig=KUBECONFIG ARGS`, `stdin` piped in when given.
pub fn kubectl(
    bin: &Path,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, LocalKubeError> {
    use std::io::Write;
    let mut child = Command::new(bin.join("kubectl"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("running kubectl"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(io("writing kubectl's stdin"))?;
    }
    drop(child.stdin.take());
    let out = child
        .wait_with_output()
        .map_err(io("waiting for kubectl"))?;
    if !out.status.success() {
        return Err(LocalKubeError::Command {
            cmd: format!("kubectl {args:?}"),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &mut Command) -> Result<(), LocalKubeError> {
    let out = cmd.output().map_err(io(format!("{cmd:?}")))?;
    if !out.status.success() {
        return Err(LocalKubeError::Command {
            cmd: format!("{cmd:?}"),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// How to start a [`LocalCluster`].
#[derive(Debug, Clone)]
pub struct LocalClusterOptions {
    /// The loopback address etcd (:2379, :2380) and the API server (:6443) bind, `127.N.0.250`
    /// by convention so that a second API server can take `.251`.
    pub ip: String,
    /// Run kube-controller-manager too (EndpointSlices, Deployments, namespace deletion).
    pub controller_manager: bool,
    /// Keep the directory with certificates, kubeconfig and logs when dropped.
    pub keep_files: bool,
    /// Where Services' cluster IPs come from ([`DEFAULT_SERVICE_CIDR`] unless a test needs
    /// them on loopback: there is no kube-proxy, so a test that wants the API server to reach a
    /// Service, as it does a webhook's, binds its cluster IP itself).
    pub service_cidr: String,
}

/// The usual cluster IP range.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/16";

/// A second API server on the same etcd; killed when dropped.
pub struct OtherApiServer {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    child: Option<Child>,
}

impl OtherApiServer {
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }
}

impl Drop for OtherApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One running cluster; every process is killed when it is dropped.
pub struct LocalCluster {
    pub dir: TempDir,
    pub ip: String,
    pub kubeconfig: PathBuf,
    pub bin: PathBuf,
    service_cidr: String,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    controller_manager: Option<Child>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        kill(&mut self.controller_manager);
        kill(&mut self.apiserver);
        kill(&mut self.etcd);
    }
}

impl LocalCluster {
    /// Makes certificates, starts etcd and the API server (and the controller manager when
    /// asked) and waits until the API server answers `/readyz`.
    pub async fn start(options: &LocalClusterOptions) -> Result<LocalCluster, LocalKubeError> {
        let bin = tokio::task::spawn_blocking(binaries)
            .await
            .map_err(|e| LocalKubeError::Build(e.to_string()))??;
        let mut dir = tempfile::tempdir().map_err(io("creating the cluster directory"))?;
        if options.keep_files {
            dir.disable_cleanup(true);
        }
        let ip = options.ip.clone();
        let d = dir.path();
        // A CA, the API server's serving certificate, the service-account signing key.
        run(Command::new("openssl")
            .current_dir(d)
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=navarch-local-ca", "-keyout", "ca.key"])
            .args(["-out", "ca.crt"]))?;
        run(Command::new("openssl")
            .current_dir(d)
            .args(["req", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-subj", "/CN=kube-apiserver"])
            .args(["-keyout", "apiserver.key", "-out", "apiserver.csr"]))?;
        std::fs::write(
            d.join("san.ext"),
            format!(
                "subjectAltName=IP:{ip},IP:{},DNS:localhost\n",
                second_ip(&ip)
            ),
        )
        .map_err(io("writing san.ext"))?;
        run(Command::new("openssl")
            .current_dir(d)
            .args(["x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt"])
            .args(["-CAkey", "ca.key", "-CAcreateserial", "-days", "2"])
            .args(["-extfile", "san.ext", "-out", "apiserver.crt"]))?;
        run(Command::new("openssl").current_dir(d).args([
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            "sa.key",
        ]))?;
        run(Command::new("openssl")
            .current_dir(d)
            .args(["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"]))?;
        std::fs::write(
            d.join("tokens.csv"),
            format!("{TOKEN},admin,admin,\"system:masters\"\n"),
        )
        .map_err(io("writing tokens.csv"))?;
        let kubeconfig = write_kubeconfig(d, "kubeconfig", &ip)?;
        let mut cluster = LocalCluster {
            ip,
            kubeconfig,
            bin,
            service_cidr: options.service_cidr.clone(),
            etcd: None,
            apiserver: None,
            controller_manager: None,
            dir,
        };
        cluster.start_etcd()?;
        cluster.start_apiserver().await?;
        if options.controller_manager {
            cluster.start_controller_manager()?;
        }
        Ok(cluster)
    }

    /// The path of one component's log in the cluster directory.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn log(&self, name: &str) -> Result<Stdio, LocalKubeError> {
        let path = self.log_path(name);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        Ok(Stdio::from(f))
    }

    /// Starts `what` by `command`, its output appended to the log `log`.
    fn spawn_logged(
        &self,
        command: &mut Command,
        log: &str,
        what: &str,
    ) -> Result<Child, LocalKubeError> {
        command
            .stdout(self.log(log)?)
            .stderr(self.log(log)?)
            .spawn()
            .map_err(io(format!("starting {what}")))
    }

    fn start_etcd(&mut self) -> Result<(), LocalKubeError> {
        let ip = &self.ip;
        let mut etcd = Command::new(self.bin.join("etcd"));
        etcd.args(["--name", "default", "--data-dir"])
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
            .args(["--quota-backend-bytes", "8589934592"]);
        self.etcd = Some(self.spawn_logged(&mut etcd, "etcd", "etcd")?);
        Ok(())
    }

    fn spawn_apiserver(&self, ip: &str, log: &str) -> Result<Child, LocalKubeError> {
        let d = self.dir.path();
        let file = |flag: &str, name: &str| format!("--{flag}={}", d.join(name).display());
        let mut apiserver = Command::new(self.bin.join("kube-apiserver"));
        apiserver
            .args(["--etcd-servers", &format!("http://{}:2379", self.ip)])
            .args(["--bind-address", ip, "--advertise-address", ip])
            .args(["--secure-port", "6443"])
            .arg(file("tls-cert-file", "apiserver.crt"))
            .arg(file("tls-private-key-file", "apiserver.key"))
            .arg(file("client-ca-file", "ca.crt"))
            .arg(file("token-auth-file", "tokens.csv"))
            .arg(file("service-account-key-file", "sa.pub"))
            .arg(file("service-account-signing-key-file", "sa.key"))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(file("cert-dir", "apiserver-certs"))
            .args(["--authorization-mode", "RBAC"])
            .args(["--service-cluster-ip-range", &self.service_cidr])
            .args(["--endpoint-reconciler-type", "none"])
            .args(["--enable-priority-and-fairness=false", "--v=1"])
            // A load test creates thousands of objects quickly; the defaults (400/200) would
            // turn it away with 429s.
            .args(["--max-requests-inflight", "3000"])
            .args(["--max-mutating-requests-inflight", "1000"]);
        self.spawn_logged(&mut apiserver, log, "kube-apiserver")
    }

    /// Waits until the API server behind `kubeconfig` answers `/readyz` with `ok`.
    async fn wait_ready(
        &self,
        kubeconfig: &Path,
        child: &mut Child,
        log: &str,
    ) -> Result<(), LocalKubeError> {
        let log = self.log_path(log);
        let secs = 90;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(client) = client_for(kubeconfig).await
                && let Ok(req) = http::Request::get("/readyz").body(Vec::new())
                && client
                    .request_text(req)
                    .await
                    .is_ok_and(|t| t.trim() == "ok")
            {
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(LocalKubeError::Exited {
                    what: "kube-apiserver".into(),
                    status,
                    log,
                });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LocalKubeError::NotReady {
                    what: "kube-apiserver".into(),
                    secs,
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Starts (or restarts) the API server and waits until it answers.
    pub async fn start_apiserver(&mut self) -> Result<(), LocalKubeError> {
        let mut child = self.spawn_apiserver(&self.ip.clone(), "apiserver")?;
        let ready = self
            .wait_ready(&self.kubeconfig.clone(), &mut child, "apiserver")
            .await;
        self.apiserver = Some(child);
        ready
    }

    /// Starts a second API server on the same etcd (at [`second_ip`]) and waits until it
    /// answers.
    pub async fn second_apiserver(&self) -> Result<OtherApiServer, LocalKubeError> {
        let ip = second_ip(&self.ip);
        let kubeconfig = write_kubeconfig(self.dir.path(), "kubeconfig-second", &ip)?;
        let mut child = self.spawn_apiserver(&ip, "apiserver-second")?;
        let mut other = OtherApiServer {
            bin: self.bin.clone(),
            kubeconfig: kubeconfig.clone(),
            child: None,
        };
        let ready = self
            .wait_ready(&kubeconfig, &mut child, "apiserver-second")
            .await;
        other.child = Some(child);
        ready.map(|()| other)
    }

    /// Kills the API server (etcd and the controller manager keep running).
    pub fn stop_apiserver(&mut self) {
        kill(&mut self.apiserver);
    }

    fn start_controller_manager(&mut self) -> Result<(), LocalKubeError> {
        let mut manager = Command::new(self.bin.join("kube-controller-manager"));
        manager
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(
                "--controllers=endpointslice-controller,endpointslice-mirroring-controller,\
deployment-controller,replicaset-controller,namespace-controller,\
garbage-collector-controller,serviceaccount-controller",
            )
            .args(["--leader-elect=false", "--secure-port=0"])
            .args(["--use-service-account-credentials=false", "--v=1"]);
        self.controller_manager = Some(self.spawn_logged(
            &mut manager,
            "controller-manager",
            "kube-controller-manager",
        )?);
        Ok(())
    }

    /// A kube-rs client for this cluster.
    pub async fn client(&self) -> Result<Client, LocalKubeError> {
        client_for(&self.kubeconfig).await
    }

    /// Runs the built kubectl against this cluster; `stdin` is piped in when given.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, LocalKubeError> {
        kubectl(&self.bin, &self.kubeconfig, args, stdin)
    }
}
