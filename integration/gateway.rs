//! Gateways through a real Envoy router proxy fed by navarch: the seed's ingress (Gateway +
//! 90/10 VirtualService, `Host: httpbin.example.com`), 404 for unknown hosts, httpsRedirect,
//! HTTPS SIMPLE/MUTUAL with certificates from Secrets over SDS (and their rotation), SNI
//! passthrough, and the egress gateway pattern.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// The ingress gateway's Service (as `istioctl install` creates it): 80 → 8080, 443 → 8443,
/// 81 → 8081 for the redirect test, 15443 → 15443 for passthrough.
const INGRESS_SERVICE: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: istio-system
---
apiVersion: v1
kind: Service
metadata:
  name: istio-ingressgateway
  namespace: istio-system
  labels: {istio: ingressgateway}
spec:
  selector: {istio: ingressgateway}
  ports:
  - {name: http2, port: 80, targetPort: 8080}
  - {name: https, port: 443, targetPort: 8443}
  - {name: http-redirect, port: 81, targetPort: 8081}
  - {name: tls, port: 15443, targetPort: 15443}
"#;

/// The seed's gateway-httpbin.yaml.
const GATEWAY_HTTPBIN: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: httpbin-gateway
  namespace: testns1
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "httpbin.example.com"
"#;

/// The seed's 90/10 VirtualService, bound to the gateway as well as the mesh.
const VS_90_10_GATEWAY: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: httpbin
  namespace: testns1
spec:
  hosts:
  - httpbin.testns1.svc.cluster.local
  - httpbin.example.com
  gateways:
  - httpbin-gateway
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

/// httpsRedirect on another server port of a second Gateway.
const GATEWAY_REDIRECT: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: redirect-gateway
  namespace: testns1
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 81, name: http-redirect, protocol: HTTP}
    hosts: ["testns1/httpbin.example.com"]
    tls:
      httpsRedirect: true
"#;

const GATEWAY_POD: &str = "istio-ingressgateway-5d4f8d7b9c-x2x9p";

fn share_of(counts: &std::collections::BTreeMap<String, usize>, key: &str) -> f64 {
    let total: usize = counts.values().sum();
    *counts.get(key).unwrap_or(&0) as f64 * 100.0 / total as f64
}

async fn read_lines(path: &Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    eventually(Duration::from_secs(15), || {
        lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        let done = lines.len() >= n;
        async move { done }
    })
    .await;
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_gateway_serves_the_seed_split_404s_unknown_hosts_and_redirects() {
    let net = 210;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("gateway-access.log");
    let sandbox = sandbox(net);
    let cp = ControlPlane::start_with_mesh(
        &[
            ("sandbox.yaml", sandbox.as_str()),
            ("ingress.yaml", INGRESS_SERVICE),
            ("gateway.yaml", GATEWAY_HTTPBIN),
            ("redirect.yaml", GATEWAY_REDIRECT),
            ("vs.yaml", VS_90_10_GATEWAY),
        ],
        Some(&format!("accessLogFile: {}\n", log.display())),
    )
    .await;
    let v1 = Upstream::start("v1", &format!("127.{net}.0.11:8080")).await;
    let v2 = Upstream::start("v2", &format!("127.{net}.0.12:8080")).await;
    let gw_ip = format!("127.{net}.0.50");
    let gw = cp
        .gateway(&gw_ip, GATEWAY_POD, "istio-system", "istio=ingressgateway")
        .await;

    // istiod's names: the Service port 80 is listened on as its targetPort 8080.
    let dump: serde_json::Value =
        serde_json::from_str(&gw.admin_get("/config_dump").await.unwrap()).unwrap();
    let text = dump.to_string();
    assert!(
        text.contains("\"name\":\"0.0.0.0_8080\""),
        "listener 0.0.0.0_8080"
    );
    assert!(
        text.contains("\"route_config_name\":\"http.8080\""),
        "RDS http.8080"
    );
    assert!(
        text.contains("\"name\":\"httpbin.example.com:80\""),
        "virtual host"
    );

    let listener = format!("{gw_ip}:8080");
    let c = client();
    let counts = split(&c, &listener, "httpbin.example.com", "/headers", 300, &[]).await;
    assert_eq!(
        counts.get("v1").unwrap_or(&0) + counts.get("v2").unwrap_or(&0),
        300,
        "every request through the gateway reached httpbin: {counts:?}"
    );
    let v1_share = share_of(&counts, "v1");
    assert!(
        (84.0..=96.0).contains(&v1_share),
        "v1 share {v1_share:.1}% not within 90±6: {counts:?}"
    );
    assert!(v1.count() > 0 && v2.count() > 0);

    // An unknown host: 404 from the gateway itself.
    let before = v1.count() + v2.count();
    let r = send(&c, "GET", &listener, "unknown.example.com", "/headers", &[]).await;
    assert_eq!((r.status, r.served_by), (404, None));
    assert_eq!(v1.count() + v2.count(), before);

    // httpsRedirect: 301 to https.
    let r = c
        .get(format!("http://{gw_ip}:8081/headers"))
        .header("host", "httpbin.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        "https://httpbin.example.com/headers"
    );

    // The gateway's access log lines look like the seed's.
    let lines = read_lines(&log, 300).await;
    let line = lines
        .iter()
        .find(|l| l.contains("outbound|8000|v1|httpbin.testns1.svc.cluster.local"))
        .unwrap_or_else(|| panic!("no v1 line in {lines:#?}"));
    assert!(line.contains("\"GET /headers HTTP/1.1\" 200 "), "{line}");
    assert!(
        line.contains("\"httpbin.example.com\" \"127.210.0.11:8080\""),
        "{line}"
    );
    assert!(
        line.contains(&format!(" {gw_ip}:8080 ")),
        "downstream local address: {line}"
    );
    let nr = lines.iter().find(|l| l.contains("unknown.example.com"));
    assert!(
        nr.is_some_and(|l| l.contains("\" 404 NR route_not_found ")),
        "{nr:?}"
    );
}

/// A CA and certificates made with openssl for the test.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=navarch-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        pki
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Issues `<name>.crt`/`<name>.key` for `cn` (also its DNS SAN), signed by the CA.
    fn issue(&self, name: &str, cn: &str) {
        self.run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        std::fs::write(
            self.dir.path().join(format!("{name}.ext")),
            format!("subjectAltName=DNS:{cn}\n"),
        )
        .unwrap();
        self.run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(file)).unwrap()
    }

    /// A kubernetes.io/tls Secret with `name`'s key pair (and the CA when `with_ca`).
    fn secret(&self, secret: &str, namespace: &str, name: &str, with_ca: bool) -> String {
        let indent = |s: String| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
        let mut out = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {secret}\n  namespace: {namespace}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(self.read(&format!("{name}.crt"))),
            indent(self.read(&format!("{name}.key")))
        );
        if with_ca {
            out.push_str(&format!("  ca.crt: |\n{}", indent(self.read("ca.crt"))));
        }
        out
    }

    /// The subject and serial of the certificate served at `addr` for SNI `host`.
    fn served_certificate(&self, addr: &str, host: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect {addr} -servername {host} </dev/null 2>/dev/null | openssl x509 -noout -subject -serial"
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// `curl https://<host>:<port><path>` resolved to `ip`, trusting the test CA; returns the HTTP
/// status, or 0 when the connection or handshake failed.
fn curl_https(pki: &Pki, host: &str, ip: &str, port: u16, path: &str, client: Option<&str>) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
    ])
    .args(["--cacert", &pki.path("ca.crt")])
    .args(["--resolve", &format!("{host}:{port}:{ip}")]);
    if let Some(name) = client {
        cmd.args(["--cert", &pki.path(&format!("{name}.crt"))])
            .args(["--key", &pki.path(&format!("{name}.key"))]);
    }
    let out = cmd
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

const GATEWAY_HTTPS: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: httpbin-gateway
  namespace: testns1
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["httpbin.example.com"]
    tls:
      mode: SIMPLE
      credentialName: httpbin-credential
  - port: {number: 443, name: https-mtls, protocol: HTTPS}
    hosts: ["mtls.example.com"]
    tls:
      mode: MUTUAL
      credentialName: mtls-credential
"#;

const VS_GATEWAY_HOSTS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin-gateway-hosts
  namespace: testns1
spec:
  hosts: ["httpbin.example.com", "mtls.example.com"]
  gateways: ["httpbin-gateway"]
  http:
  - route:
    - destination:
        host: httpbin.testns1.svc.cluster.local
        subset: v1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_from_secrets_over_sds_rotates_and_mutual_requires_a_client_certificate() {
    let net = 211;
    let pki = Pki::new();
    pki.issue("server1", "httpbin.example.com");
    pki.issue("server2", "httpbin.example.com");
    pki.issue("mtls", "mtls.example.com");
    pki.issue("client", "client.example.com");
    let sandbox = sandbox(net);
    let secret1 = pki.secret("httpbin-credential", "istio-system", "server1", false);
    let mtls_secret = pki.secret("mtls-credential", "istio-system", "mtls", true);
    let cp = ControlPlane::start(&[
        ("sandbox.yaml", sandbox.as_str()),
        ("ingress.yaml", INGRESS_SERVICE),
        ("gateway.yaml", GATEWAY_HTTPS),
        ("vs.yaml", VS_GATEWAY_HOSTS),
        ("secret.yaml", secret1.as_str()),
        ("mtls-secret.yaml", mtls_secret.as_str()),
    ])
    .await;
    let _v1 = Upstream::start("v1", &format!("127.{net}.0.11:8080")).await;
    let gw_ip = format!("127.{net}.0.50");
    let _gw = cp
        .gateway(&gw_ip, GATEWAY_POD, "istio-system", "istio=ingressgateway")
        .await;

    assert_eq!(
        curl_https(&pki, "httpbin.example.com", &gw_ip, 8443, "/headers", None),
        200,
        "HTTPS with the Secret's certificate, trusted through the test CA"
    );
    let addr = format!("{gw_ip}:8443");
    let first = pki.served_certificate(&addr, "httpbin.example.com");
    assert!(
        first.contains("CN = httpbin.example.com") || first.contains("CN=httpbin.example.com"),
        "{first}"
    );

    // Rotating the Secret changes the served certificate without restarting Envoy.
    cp.write(
        "secret.yaml",
        &pki.secret("httpbin-credential", "istio-system", "server2", false),
    );
    let rotated = eventually(Duration::from_secs(10), || async {
        let now = pki.served_certificate(&addr, "httpbin.example.com");
        !now.is_empty() && now != first
    })
    .await;
    assert!(
        rotated.is_some(),
        "the served certificate changed after the Secret did"
    );

    // proxy-config secret: the control plane's and the live Envoy's tables agree, and show
    // the credentials with their certificates (istioctl's columns).
    let secrets = |from: &[&str]| {
        let out = std::process::Command::new(navarch_bin())
            .args([
                "proxy-config",
                "secret",
                &format!("{GATEWAY_POD}.istio-system"),
            ])
            .args(from)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let sent = secrets(&["--server", &cp.http]);
    let live = secrets(&["--envoy-admin", &_gw.admin]);
    assert!(sent.starts_with("RESOURCE NAME "), "{sent}");
    let row = sent
        .lines()
        .find(|l| l.starts_with("kubernetes://httpbin-credential "))
        .unwrap_or_else(|| panic!("the rotated credential: {sent}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..5], ["Cert", "Chain", "ACTIVE", "true"], "{sent}");
    assert!(
        cells[5].len() >= 32 && cells[5].chars().all(|c| c.is_ascii_hexdigit()),
        "the serial in hex, at least 32 digits as istioctl prints it: {sent}"
    );
    assert!(
        sent.lines()
            .any(|l| l.starts_with("kubernetes://mtls-credential-cacert ") && l.contains(" CA ")),
        "MUTUAL's CA: {sent}"
    );
    let names = |t: &str| {
        let mut rows: Vec<String> = t
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().take(6).collect::<Vec<_>>().join(" "))
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(names(&sent), names(&live), "sent:\n{sent}\nlive:\n{live}");
    let dump = reqwest::get(format!(
        "{}/debug/config_dump?proxyID={GATEWAY_POD}.istio-system",
        cp.http
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        dump.contains("\"private_key\":{\"inline_string\":\"[redacted]\"}"),
        "the control plane's dump redacts private keys, as Envoy's does"
    );
    assert_eq!(
        curl_https(&pki, "httpbin.example.com", &gw_ip, 8443, "/headers", None),
        200
    );

    // MUTUAL: no client certificate, no service; with one signed by the Secret's CA, 200.
    assert_eq!(
        curl_https(&pki, "mtls.example.com", &gw_ip, 8443, "/headers", None),
        0,
        "the handshake fails without a client certificate"
    );
    assert_eq!(
        curl_https(
            &pki,
            "mtls.example.com",
            &gw_ip,
            8443,
            "/headers",
            Some("client")
        ),
        200
    );
}

/// Two TLS backends that tell themselves apart by their certificate (`openssl s_server`).
struct TlsBackend {
    child: std::process::Child,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsBackend {
    async fn start(pki: &Pki, name: &str, addr: &str) -> TlsBackend {
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-accept", addr, "-www"])
            .args(["-cert", &pki.path(&format!("{name}.crt"))])
            .args(["-key", &pki.path(&format!("{name}.key"))])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        let up = eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        assert!(up.is_some(), "openssl s_server on {addr}");
        TlsBackend { child }
    }
}

const PASSTHROUGH: &str = r#"apiVersion: v1
kind: Service
metadata: {name: a-tls, namespace: testns1}
spec:
  selector: {app: a-tls}
  ports: [{name: tls, port: 443, targetPort: 9443}]
---
apiVersion: v1
kind: Pod
metadata: {name: a-tls, namespace: testns1, labels: {app: a-tls}}
status: {phase: Running, podIP: 127.212.0.31}
---
apiVersion: v1
kind: Service
metadata: {name: b-tls, namespace: testns1}
spec:
  selector: {app: b-tls}
  ports: [{name: tls, port: 443, targetPort: 9443}]
---
apiVersion: v1
kind: Pod
metadata: {name: b-tls, namespace: testns1, labels: {app: b-tls}}
status: {phase: Running, podIP: 127.212.0.32}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tls-gateway, namespace: testns1}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ["a.example.com", "b.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: by-sni, namespace: testns1}
spec:
  hosts: ["a.example.com", "b.example.com"]
  gateways: ["tls-gateway"]
  tls:
  - match:
    - sniHosts: ["a.example.com"]
    route:
    - destination: {host: a-tls, port: {number: 443}}
  - match:
    - sniHosts: ["b.example.com"]
    route:
    - destination: {host: b-tls, port: {number: 443}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_passthrough_reaches_the_backend_named_by_sni() {
    let net = 212;
    let pki = Pki::new();
    pki.issue("a", "a.example.com");
    pki.issue("b", "b.example.com");
    let _a = TlsBackend::start(&pki, "a", &format!("127.{net}.0.31:9443")).await;
    let _b = TlsBackend::start(&pki, "b", &format!("127.{net}.0.32:9443")).await;
    let cp = ControlPlane::start(&[
        ("ingress.yaml", INGRESS_SERVICE),
        ("passthrough.yaml", PASSTHROUGH),
    ])
    .await;
    let gw_ip = format!("127.{net}.0.50");
    let _gw = cp
        .gateway(&gw_ip, GATEWAY_POD, "istio-system", "istio=ingressgateway")
        .await;
    let addr = format!("{gw_ip}:15443");
    // The gateway does not terminate: the certificate comes from the backend SNI picked.
    for (sni, cn) in [
        ("a.example.com", "a.example.com"),
        ("b.example.com", "b.example.com"),
    ] {
        let served = pki.served_certificate(&addr, sni);
        assert!(
            served.contains(&format!("CN = {cn}")) || served.contains(&format!("CN={cn}")),
            "SNI {sni} reached the backend with {cn}'s certificate: {served:?}"
        );
    }
    // An SNI no route names matches no filter chain: the connection is closed.
    assert_eq!(pki.served_certificate(&addr, "c.example.com"), "");
}

/// Istio's egress gateway task on one machine: the sleep sidecar's request for an external
/// host goes to the egress gateway (mesh VirtualService rule), which sends it on to the
/// external ServiceEntry host (gateway rule).
const EGRESS: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: istio-egressgateway
  namespace: istio-system
spec:
  selector: {istio: egressgateway}
  ports:
  - {name: http2, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Pod
metadata:
  name: istio-egressgateway-1
  namespace: istio-system
  labels: {istio: egressgateway}
status: {phase: Running, podIP: 127.213.0.60}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: edition, namespace: testns1}
spec:
  hosts: [edition.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http-port, protocol: HTTP}]
  endpoints: [{address: 127.213.0.40}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway, namespace: testns1}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [edition.example.com]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egressgateway-for-edition, namespace: testns1}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: edition
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: direct-edition-through-egress-gateway, namespace: testns1}
spec:
  hosts: [edition.example.com]
  gateways: [istio-egressgateway, mesh]
  http:
  - match:
    - gateways: [mesh]
      port: 80
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: edition
        port: {number: 80}
  - match:
    - gateways: [istio-egressgateway]
      port: 80
    route:
    - destination:
        host: edition.example.com
        port: {number: 80}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_gateway_carries_mesh_traffic_to_an_external_host() {
    let net = 213;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let sandbox = sandbox(net);
    let cp = ControlPlane::start_with_mesh(
        &[("sandbox.yaml", sandbox.as_str()), ("egress.yaml", EGRESS)],
        Some(&format!("accessLogFile: {}\n", log.display())),
    )
    .await;
    let external = Upstream::start("external", &format!("127.{net}.0.40:80")).await;
    let gw_ip = format!("127.{net}.0.60");
    let _gw = cp
        .gateway(
            &gw_ip,
            "istio-egressgateway-1",
            "istio-system",
            "istio=egressgateway",
        )
        .await;
    let sleep_ip = format!("127.{net}.0.21");
    let _sleep = cp
        .sidecar(&sleep_ip, "sleep", "testns1", "app=sleep", "NONE")
        .await;

    let c = client();
    let r = send(
        &c,
        "GET",
        &format!("{sleep_ip}:80"),
        "edition.example.com",
        "/politics",
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.served_by.as_deref(), Some("external"));
    assert_eq!(external.count(), 1);
    // It arrived from the gateway, not straight from the sidecar.
    let seen = external.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/politics");

    // Both hops are in the access log: the sidecar's to the gateway's cluster, the gateway's
    // (on its own address) to the external host.
    let lines = read_lines(&log, 2).await;
    assert!(
        lines.iter().any(|l| l
            .contains("outbound|80|edition|istio-egressgateway.istio-system.svc.cluster.local")
            && l.contains(&format!("\"127.{net}.0.60:8080\""))),
        "sidecar → egress gateway: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("outbound|80||edition.example.com")
                && l.contains(&format!(" {gw_ip}:8080 "))
                && l.contains(&format!("\"127.{net}.0.40:80\""))),
        "egress gateway → external host: {lines:#?}"
    );
}
