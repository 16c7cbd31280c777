//! `navarch loadtest`: measures the control plane the way the scale issue asks.
//!
//! Writes a synthetic mesh (S services × P pods over N namespaces, each service with a
//! DestinationRule and a 90/10 VirtualService, optionally Sidecar namespace isolation) into a
//! config directory, starts `navarch discovery` on it as a separate process, and connects M
//! simulated proxies as real ADS clients (State of the World or Delta) that request CDS, EDS,
//! LDS and RDS like Envoy, ACK every response and record when each arrives. Then it measures:
//! connecting every proxy at once, a VirtualService change, and endpoint churn at R changes/s,
//! reporting convergence (change → the response at every proxy that should get it) p50/p99/max,
//! pushes, bytes, and the server's CPU seconds and RSS (from /proc), with a progress line.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster::ClusterDiscoveryType};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter::ConfigType};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value::Kind};
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::translate::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};

#[derive(Debug, Args, Clone)]
pub struct LoadtestArgs {
    /// Services in the synthetic mesh.
    #[arg(long, default_value_t = 100)]
    pub services: usize,
    /// Pods per service.
    #[arg(long, default_value_t = 2)]
    pub pods_per_service: usize,
    /// Namespaces the services and proxies are spread over.
    #[arg(long, default_value_t = 10)]
    pub namespaces: usize,
    /// Simulated proxies (sidecars) to connect.
    #[arg(long, default_value_t = 200)]
    pub proxies: usize,
    /// Connect with delta xDS instead of State of the World.
    #[arg(long)]
    pub delta: bool,
    /// A Sidecar per namespace limiting each proxy to its own namespace (Istio's figure).
    #[arg(long)]
    pub sidecar_isolation: bool,
    /// Endpoint changes per second during the churn phase (0 skips it).
    #[arg(long, default_value_t = 50)]
    pub churn_rate: u32,
    /// How long the churn phase lasts, in seconds.
    #[arg(long, default_value_t = 20)]
    pub churn_seconds: u64,
    /// Proxies per HTTP/2 connection to the server.
    #[arg(long, default_value_t = 50)]
    pub proxies_per_connection: usize,
    /// Passed to the server: longest delay of a push after the first change of a batch
    /// (istiod's PILOT_DEBOUNCE_MAX; 10s by default).
    #[arg(long, default_value = "10s")]
    pub debounce_max: String,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Per simulated proxy: its namespace and when responses of each type arrived.
struct ProxyRecord {
    namespace: String,
    connected: Mutex<Option<Instant>>,
    initial_done: Mutex<Option<Instant>>,
    arrivals: Mutex<BTreeMap<&'static str, Vec<Instant>>>,
    errors: AtomicUsize,
}

impl ProxyRecord {
    fn arrived(&self, kind: &'static str, at: Instant) {
        let mut a = self.arrivals.lock().expect("arrivals lock");
        a.entry(kind).or_default().push(at);
        if a.len() >= 4 {
            let mut done = self.initial_done.lock().expect("initial lock");
            done.get_or_insert(at);
        }
    }

    /// The first arrival of `kind` at or after `t`.
    fn first_after(&self, kind: &str, t: Instant) -> Option<Instant> {
        let a = self.arrivals.lock().expect("arrivals lock");
        a.get(kind)?.iter().copied().find(|x| *x >= t)
    }
}

fn short(type_url: &str) -> &'static str {
    match type_url {
        CLUSTER_TYPE => "CDS",
        ENDPOINT_TYPE => "EDS",
        LISTENER_TYPE => "LDS",
        ROUTE_TYPE => "RDS",
        _ => "other",
    }
}

// ---- the synthetic mesh ----

fn namespace_of(i: usize, namespaces: usize) -> String {
    format!("ns-{}", i % namespaces)
}

fn pod_ip(service: usize, pod: usize, generation: usize) -> String {
    // 10.x.y.z, never a target of traffic (no Envoy forwards anything in the load test).
    let n = service * 16 + pod;
    format!(
        "10.{}.{}.{}",
        (n / 250) % 250,
        n % 250,
        1 + (generation % 250)
    )
}

fn service_file(i: usize, args: &LoadtestArgs, weights: (u32, u32), generation: usize) -> String {
    let ns = namespace_of(i, args.namespaces);
    let name = format!("svc-{i}");
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 8080}}]\n"
    );
    for p in 0..args.pods_per_service {
        let version = if p % 2 == 0 { "v1" } else { "v2" };
        let ip = pod_ip(i, p, if p == 0 { generation } else { 0 });
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}-{p}, namespace: {ns}, labels: {{app: {name}, version: {version}}}}}\nstatus: {{phase: Running, podIP: {ip}}}\n"
        ));
    }
    out.push_str(&format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  host: {name}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{name}]\n  http:\n  - route:\n    - destination: {{host: {name}, subset: v1}}\n      weight: {}\n    - destination: {{host: {name}, subset: v2}}\n      weight: {}\n",
        weights.0, weights.1
    ));
    out
}

/// The synthetic mesh as (file name, YAML) pairs: a namespaces file (with Sidecars when
/// isolated) and one file per service (Service, Pods, DestinationRule, 90/10 VirtualService).
/// Also used by the translation benchmark.
pub fn mesh_files(
    services: usize,
    pods_per_service: usize,
    namespaces: usize,
    sidecar_isolation: bool,
) -> Vec<(String, String)> {
    let args = LoadtestArgs {
        services,
        pods_per_service,
        namespaces,
        proxies: 0,
        delta: false,
        sidecar_isolation,
        churn_rate: 0,
        churn_seconds: 0,
        proxies_per_connection: 1,
        debounce_max: "10s".into(),
        json: None,
    };
    let mut out = vec![("namespaces.yaml".to_string(), namespaces_file(&args))];
    for i in 0..services {
        out.push((format!("svc-{i}.yaml"), service_file(i, &args, (90, 10), 0)));
    }
    out
}

fn namespaces_file(args: &LoadtestArgs) -> String {
    let mut ns = String::new();
    for n in 0..args.namespaces {
        ns.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{n}}}\n"
        ));
        if args.sidecar_isolation {
            ns.push_str(&format!(
                "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: ns-{n}}}\nspec:\n  egress:\n  - hosts: [\"./*\"]\n"
            ));
        }
    }
    ns
}

fn write_mesh(dir: &Path, args: &LoadtestArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("namespaces.yaml"), namespaces_file(args))?;
    for i in 0..args.services {
        write_atomic(
            &dir.join(format!("svc-{i}.yaml")),
            &service_file(i, args, (90, 10), 0),
        )?;
    }
    Ok(())
}

fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

// ---- the server under test ----

struct Server {
    child: tokio::process::Child,
    pid: u32,
    grpc: SocketAddr,
    http: SocketAddr,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

async fn start_server(config: &Path, log: &Path, debounce_max: &str) -> anyhow::Result<Server> {
    let (grpc, http, monitoring) = (free_port()?, free_port()?, free_port()?);
    let exe = std::env::current_exe().context("locating the navarch binary")?;
    let out = std::fs::File::create(log)?;
    let child = tokio::process::Command::new(exe)
        .arg("discovery")
        .arg("--config-dir")
        .arg(config)
        .args(["--grpc-addr", &grpc.to_string()])
        .args(["--http-addr", &http.to_string()])
        .args(["--monitoring-addr", &monitoring.to_string()])
        .args(["--log", "warn"])
        .args(["--debounce-max", debounce_max])
        // Every simulated proxy connects from 127.0.0.1.
        .args(["--xds-max-streams-per-peer", "0"])
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .context("starting navarch discovery")?;
    let pid = child.id().context("the server's pid")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = reqwest::get(format!("http://{http}/ready")).await
            && r.status().is_success()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "navarch discovery not ready within 120s; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Server {
        child,
        pid,
        grpc,
        http,
    })
}

/// The server's CPU seconds (user + system) and RSS / peak RSS in MiB, from /proc.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu_seconds: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn usage(pid: u32, ticks: f64) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the state field.
    let cpu_seconds = (num(11) + num(12)) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Usage {
        cpu_seconds,
        rss_mib: kib("VmRSS:") / 1024.0,
        peak_rss_mib: kib("VmHWM:") / 1024.0,
    }
}

async fn push_status(http: SocketAddr) -> serde_json::Value {
    match reqwest::get(format!("http://{http}/debug/push_status")).await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

// ---- simulated proxies ----

fn node(k: usize, namespaces: usize) -> Node {
    let ns = format!("ns-{}", k % namespaces);
    let ip = format!("10.200.{}.{}", (k / 250) % 250, k % 250 + 1);
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.to_string())),
    };
    let mut labels = Struct::default();
    labels.fields.insert("app".into(), s("client"));
    let mut md = Struct::default();
    md.fields.insert("NAMESPACE".into(), s(&ns));
    md.fields.insert("INTERCEPTION_MODE".into(), s("REDIRECT"));
    md.fields.insert("ISTIO_VERSION".into(), s("1.24.0"));
    md.fields.insert("INSTANCE_IPS".into(), s(&ip));
    md.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    Node {
        id: format!("sidecar~{ip}~client-{k}.{ns}~{ns}.svc.cluster.local"),
        cluster: "Kubernetes".into(),
        metadata: Some(md),
        ..Default::default()
    }
}

/// EDS cluster names in a CDS response.
fn eds_names(resources: &[Any]) -> BTreeSet<String> {
    resources
        .iter()
        .filter_map(|a| Cluster::decode(a.value.as_slice()).ok())
        .filter(|c| {
            c.cluster_discovery_type
                == Some(ClusterDiscoveryType::Type(
                    envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType::Eds as i32,
                ))
        })
        .map(|c| c.name)
        .collect()
}

/// RDS names the HTTP connection managers of an LDS response use.
fn rds_names(resources: &[Any]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in resources
        .iter()
        .filter_map(|a| Listener::decode(a.value.as_slice()).ok())
    {
        for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            for f in &chain.filters {
                if let Some(ConfigType::TypedConfig(any)) = &f.config_type
                    && any.type_url.ends_with("HttpConnectionManager")
                    && let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice())
                    && let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier
                {
                    out.insert(rds.route_config_name);
                }
            }
        }
    }
    out
}

fn request(node: Option<Node>, type_url: &str, names: &BTreeSet<String>) -> DiscoveryRequest {
    DiscoveryRequest {
        node,
        type_url: type_url.into(),
        resource_names: names.iter().cloned().collect(),
        ..Default::default()
    }
}

/// One State-of-the-World proxy: CDS then LDS, EDS/RDS by name, every response ACKed.
async fn run_sotw(
    mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    node: Node,
    record: Arc<ProxyRecord>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    tx.send(request(Some(node), CLUSTER_TYPE, &BTreeSet::new()))
        .await?;
    tx.send(request(None, LISTENER_TYPE, &BTreeSet::new()))
        .await?;
    let mut inbound = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    *record.connected.lock().expect("lock") = Some(Instant::now());
    let mut subscribed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    while let Some(resp) = inbound.message().await? {
        let now = Instant::now();
        record.arrived(short(&resp.type_url), now);
        let names = subscribed.get(&resp.type_url).cloned().unwrap_or_default();
        tx.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            resource_names: names.into_iter().collect(),
            ..Default::default()
        })
        .await?;
        let (dependent, wanted) = match resp.type_url.as_str() {
            CLUSTER_TYPE => (ENDPOINT_TYPE, eds_names(&resp.resources)),
            LISTENER_TYPE => (ROUTE_TYPE, rds_names(&resp.resources)),
            _ => continue,
        };
        if subscribed.get(dependent) != Some(&wanted) {
            subscribed.insert(dependent.to_string(), wanted.clone());
            tx.send(request(None, dependent, &wanted)).await?;
        }
    }
    Ok(())
}

/// One delta proxy: wildcard CDS and LDS, EDS/RDS subscriptions following them.
async fn run_delta(
    mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    node: Node,
    record: Arc<ProxyRecord>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    for (i, t) in [CLUSTER_TYPE, LISTENER_TYPE].into_iter().enumerate() {
        tx.send(DeltaDiscoveryRequest {
            node: (i == 0).then(|| node.clone()),
            type_url: t.into(),
            ..Default::default()
        })
        .await?;
    }
    let mut inbound = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    *record.connected.lock().expect("lock") = Some(Instant::now());
    // Resources held per type, to know the full set after each delta.
    let mut held: BTreeMap<String, BTreeMap<String, Any>> = BTreeMap::new();
    let mut subscribed: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    while let Some(resp) = inbound.message().await? {
        record.arrived(short(&resp.type_url), Instant::now());
        let set = held.entry(resp.type_url.clone()).or_default();
        for r in &resp.resources {
            if let Some(a) = &r.resource {
                set.insert(r.name.clone(), a.clone());
            }
        }
        for name in &resp.removed_resources {
            set.remove(name);
        }
        let all: Vec<Any> = set.values().cloned().collect();
        let mut ack = DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        };
        let (dependent, wanted) = match resp.type_url.as_str() {
            CLUSTER_TYPE => (ENDPOINT_TYPE, eds_names(&all)),
            LISTENER_TYPE => (ROUTE_TYPE, rds_names(&all)),
            _ => {
                tx.send(ack).await?;
                continue;
            }
        };
        tx.send(std::mem::take(&mut ack)).await?;
        let have = subscribed.entry(dependent).or_default();
        let subscribe: Vec<String> = wanted.difference(have).cloned().collect();
        let unsubscribe: Vec<String> = have.difference(&wanted).cloned().collect();
        if !subscribe.is_empty() || !unsubscribe.is_empty() {
            *have = wanted;
            tx.send(DeltaDiscoveryRequest {
                type_url: dependent.into(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                ..Default::default()
            })
            .await?;
        }
    }
    Ok(())
}

// ---- measurements ----

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Summary {
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        ms(samples[i])
    };
    Summary {
        count: samples.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: samples.last().map(|d| ms(*d)).unwrap_or(0.0),
    }
}

/// Waits until every proxy in `expected` received `kind` at or after `t0` (or `timeout`);
/// returns each one's delay and how many never got it.
async fn converge(
    records: &[Arc<ProxyRecord>],
    expected: &[usize],
    kind: &str,
    t0: Instant,
    timeout: Duration,
) -> (Vec<Duration>, usize) {
    let deadline = t0 + timeout;
    loop {
        let got: Vec<Option<Instant>> = expected
            .iter()
            .map(|k| records[*k].first_after(kind, t0))
            .collect();
        let missing = got.iter().filter(|g| g.is_none()).count();
        if missing == 0 || Instant::now() > deadline {
            let delays = got.into_iter().flatten().map(|t| t - t0).collect();
            return (delays, missing);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn progress(phase: &str, text: String) {
    println!("[loadtest] {phase}: {text}");
}

pub async fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    if args.services == 0 || args.proxies == 0 || args.namespaces == 0 {
        bail!("--services, --proxies and --namespaces must be at least 1");
    }
    let work = tempfile::tempdir().context("creating a work directory")?;
    let config = work.path().join("config");
    progress(
        "setup",
        format!(
            "writing {} services × {} pods over {} namespaces{} to {}",
            args.services,
            args.pods_per_service,
            args.namespaces,
            if args.sidecar_isolation {
                " with Sidecar isolation"
            } else {
                ""
            },
            config.display()
        ),
    );
    write_mesh(&config, &args)?;
    let log = work.path().join("discovery.log");
    let mut server = start_server(&config, &log, &args.debounce_max).await?;
    let ticks = clock_ticks();
    let idle = usage(server.pid, ticks);
    progress(
        "setup",
        format!(
            "navarch discovery pid {} ready: RSS {:.1} MiB, {:.2} CPU s",
            server.pid, idle.rss_mib, idle.cpu_seconds
        ),
    );

    // Phase 1: every proxy connects at once.
    let records: Vec<Arc<ProxyRecord>> = (0..args.proxies)
        .map(|k| {
            Arc::new(ProxyRecord {
                namespace: format!("ns-{}", k % args.namespaces),
                connected: Mutex::new(None),
                initial_done: Mutex::new(None),
                arrivals: Mutex::new(BTreeMap::new()),
                errors: AtomicUsize::new(0),
            })
        })
        .collect();
    let per_conn = args.proxies_per_connection.max(1);
    let mut channels = Vec::new();
    for _ in 0..args.proxies.div_ceil(per_conn) {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))?
            .connect_timeout(Duration::from_secs(10))
            .http2_adaptive_window(true)
            .connect_lazy();
        channels.push(ch);
    }
    let start = Instant::now();
    for (k, record) in records.iter().enumerate() {
        let client = AggregatedDiscoveryServiceClient::new(channels[k / per_conn].clone())
            .max_decoding_message_size(256 * 1024 * 1024);
        let node = node(k, args.namespaces);
        let record = record.clone();
        let delta = args.delta;
        tokio::spawn(async move {
            let r = if delta {
                run_delta(client, node, record.clone()).await
            } else {
                run_sotw(client, node, record.clone()).await
            };
            if let Err(e) = r {
                record.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "simulated proxy stream ended");
            }
        });
    }
    let connect_timeout = Duration::from_secs(120);
    loop {
        let done = records
            .iter()
            .filter(|r| r.initial_done.lock().expect("lock").is_some())
            .count();
        let u = usage(server.pid, ticks);
        progress(
            "connect",
            format!(
                "{done}/{} proxies have CDS, EDS, LDS and RDS after {:.1}s; server RSS {:.1} MiB, {:.2} CPU s",
                args.proxies,
                start.elapsed().as_secs_f64(),
                u.rss_mib,
                u.cpu_seconds - idle.cpu_seconds
            ),
        );
        if done == args.proxies || start.elapsed() > connect_timeout {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let connect: Vec<Duration> = records
        .iter()
        .filter_map(|r| r.initial_done.lock().expect("lock").map(|t| t - start))
        .collect();
    let connected = connect.len();
    let connect_summary = summarize(connect);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let steady = usage(server.pid, ticks);
    let status_before = push_status(server.http).await;

    // Phase 2: one VirtualService change.
    let target = 0usize;
    let target_ns = namespace_of(target, args.namespaces);
    let expected: Vec<usize> = (0..args.proxies)
        .filter(|k| !args.sidecar_isolation || records[*k].namespace == target_ns)
        .collect();
    let t0 = Instant::now();
    write_atomic(
        &config.join(format!("svc-{target}.yaml")),
        &service_file(target, &args, (50, 50), 0),
    )?;
    let (vs_delays, vs_missing) =
        converge(&records, &expected, "RDS", t0, Duration::from_secs(30)).await;
    let vs_summary = summarize(vs_delays);
    progress(
        "virtualservice",
        format!(
            "svc-0's VirtualService changed: {} of {} proxies had new routes, p99 {:.0} ms, max {:.0} ms",
            vs_summary.count,
            expected.len(),
            vs_summary.p99_ms,
            vs_summary.max_ms
        ),
    );
    let status_after_vs = push_status(server.http).await;

    // Phase 3: endpoint churn.
    let mut churn = Vec::new();
    let mut churn_missing = 0;
    let churn_cpu_before = usage(server.pid, ticks);
    if args.churn_rate > 0 && args.churn_seconds > 0 {
        let interval = Duration::from_secs_f64(1.0 / f64::from(args.churn_rate));
        let total = args.churn_rate as usize * args.churn_seconds as usize;
        let mut changes: Vec<(usize, Instant)> = Vec::new();
        let mut ticker = tokio::time::interval(interval);
        let churn_start = Instant::now();
        for i in 0..total {
            ticker.tick().await;
            let svc = (i * 7 + 1) % args.services;
            write_atomic(
                &config.join(format!("svc-{svc}.yaml")),
                &service_file(
                    svc,
                    &args,
                    if svc == target { (50, 50) } else { (90, 10) },
                    i + 1,
                ),
            )?;
            changes.push((svc, Instant::now()));
            if (i + 1) % (args.churn_rate as usize).max(1) == 0 {
                let u = usage(server.pid, ticks);
                progress(
                    "churn",
                    format!(
                        "{}/{total} endpoint changes in {:.0}s; server RSS {:.1} MiB",
                        i + 1,
                        churn_start.elapsed().as_secs_f64(),
                        u.rss_mib
                    ),
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (svc, t) in changes {
            let ns = namespace_of(svc, args.namespaces);
            let expected: Vec<usize> = (0..args.proxies)
                .filter(|k| !args.sidecar_isolation || records[*k].namespace == ns)
                .collect();
            let (delays, missing) =
                converge(&records, &expected, "EDS", t, Duration::from_millis(1)).await;
            churn_missing += missing;
            if let Some(max) = delays.iter().max() {
                churn.push(*max);
            }
        }
    }
    let churn_summary = summarize(churn);
    let end = usage(server.pid, ticks);
    let status_end = push_status(server.http).await;
    let num = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let errors: usize = records
        .iter()
        .map(|r| r.errors.load(Ordering::Relaxed))
        .sum();

    let result = serde_json::json!({
        "mesh": {"services": args.services, "podsPerService": args.pods_per_service,
                 "namespaces": args.namespaces, "sidecarIsolation": args.sidecar_isolation},
        "proxies": args.proxies,
        "xds": if args.delta { "delta" } else { "sotw" },
        "debounceMax": args.debounce_max,
        "connect": {"connected": connected, "summary": connect_summary, "streamErrors": errors},
        "steadyRssMiB": steady.rss_mib,
        "virtualServiceChange": {"expected": expected.len(), "missing": vs_missing, "summary": vs_summary,
                                 "pushes": num(&status_after_vs, "pushes") - num(&status_before, "pushes")},
        "endpointChurn": {"ratePerSecond": args.churn_rate, "seconds": args.churn_seconds,
                          "summary": churn_summary, "missingProxyUpdates": churn_missing,
                          "fullPushes": num(&status_end, "fullPushes") - num(&status_after_vs, "fullPushes"),
                          "pushes": num(&status_end, "pushes") - num(&status_after_vs, "pushes"),
                          "cpuSeconds": end.cpu_seconds - churn_cpu_before.cpu_seconds},
        "server": {"cpuSeconds": end.cpu_seconds, "peakRssMiB": end.peak_rss_mib, "endRssMiB": end.rss_mib,
                   "pushes": num(&status_end, "pushes"), "pushBytes": num(&status_end, "pushBytes")},
    });
    println!();
    println!(
        "proxies:            {} ({}), {connected} converged on connect, {errors} stream errors",
        args.proxies,
        if args.delta { "delta" } else { "SotW" }
    );
    println!(
        "connect storm:      p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (all at once)",
        connect_summary.p50_ms, connect_summary.p99_ms, connect_summary.max_ms
    );
    println!("steady RSS:         {:.1} MiB", steady.rss_mib);
    println!(
        "VS change:          {} proxies, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({vs_missing} missed)",
        vs_summary.count, vs_summary.p50_ms, vs_summary.p99_ms, vs_summary.max_ms
    );
    if args.churn_rate > 0 && args.churn_seconds > 0 {
        println!(
            "endpoint churn:     {}/s for {}s, per-change EDS convergence p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; full pushes {}",
            args.churn_rate,
            args.churn_seconds,
            churn_summary.p50_ms,
            churn_summary.p99_ms,
            churn_summary.max_ms,
            result["endpointChurn"]["fullPushes"]
        );
    }
    println!(
        "server:             {:.1} CPU s, peak RSS {:.1} MiB, {} pushes, {:.1} MiB sent",
        end.cpu_seconds,
        end.peak_rss_mib,
        num(&status_end, "pushes"),
        num(&status_end, "pushBytes") as f64 / 1048576.0
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let _ = server.child.kill().await;
    if connected < args.proxies {
        bail!(
            "{} of {} proxies never received their initial config; see {}",
            args.proxies - connected,
            args.proxies,
            log.display()
        );
    }
    Ok(())
}
