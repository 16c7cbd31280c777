//! `navarch loadtest`: measures a control plane the way the scale issues ask.
//!
//! Builds a synthetic mesh (S services × P pods over N namespaces, each service with a
//! DestinationRule and a 90/10 VirtualService, optionally Sidecar namespace isolation), either
//! as files in a config directory or, with `--kube`, in a real kube-apiserver on loopback;
//! starts the control plane under test as a separate process (`navarch discovery`, or istiod
//! with `--control-plane istiod`; several `--control-plane`s run one after the other on the
//! same mesh) and connects M simulated proxies, one HTTP/2 connection each by default (Envoy's
//! layout). Then it measures: connecting every proxy at once (in waves when `--rss-at` asks
//! for RSS at intermediate counts, for the RSS slope per proxy), a VirtualService change, and
//! endpoint churn at R changes/s, reporting convergence (change → the response at every proxy
//! that should get it) p50/p99/max, the server's CPU seconds and RSS (from /proc), allocations
//! (navarch's `alloc-count` build, istiod's Go counters), with a progress line per phase.
//!
//! This module owns the flags, the phases and the report. The mesh is `mesh`'s, the cluster
//! `cluster`'s, the server process `control_plane`'s, the clients `proxies`'. Everything is
//! measured from outside the server or on the client side, so both control planes are
//! measured the same way; navarch's `/debug/push_status` only adds push counts to its rows.

mod cluster;
pub mod control_plane;
mod mesh;
pub(crate) mod proxies;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use control_plane::Kind as ControlPlaneKind;
use control_plane::{ControlPlane, Source, StartOptions};
pub use mesh::MeshShape;
use mesh::namespace_of;
use proxies::{ProxyRecord, Summary, converge, summarize};

use crate::alloc_count::AllocCounts;

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
    /// Also measure steady RSS after connecting this many proxies (repeatable, below
    /// --proxies): the proxies then connect in waves, and the report gives the RSS slope per
    /// proxy between the first and the last point.
    #[arg(long = "rss-at")]
    pub rss_at: Vec<usize>,
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
    /// Proxies per HTTP/2 connection to the server (1: Envoy's layout).
    #[arg(long, default_value_t = 1)]
    pub proxies_per_connection: usize,
    /// Passed to the server: longest delay of a push after the first change of a batch
    /// (istiod's PILOT_DEBOUNCE_MAX; 10s by default).
    #[arg(long, default_value = "10s")]
    pub debounce_max: String,
    /// Passed to the server: whether endpoint-only changes are debounced like config ones
    /// (navarch's --enable-eds-debounce, istiod's PILOT_ENABLE_EDS_DEBOUNCE; both default to
    /// true).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub eds_debounce: bool,
    /// Put the mesh in a real kube-apiserver on loopback (etcd and kube-apiserver from
    /// integration/kube/build.sh, or NAVARCH_KUBE_BIN) instead of a config directory.
    #[arg(long)]
    pub kube: bool,
    /// The loopback address of that API server (and etcd).
    #[arg(long, default_value = "127.77.0.250")]
    pub kube_ip: String,
    /// Keep the cluster's directory (certificates, kubeconfig, logs) and the servers' logs.
    #[arg(long)]
    pub keep_files: bool,
    /// The control plane under test; repeat to measure several, one after the other, on the
    /// same mesh (istiod needs --kube).
    #[arg(long = "control-plane", value_enum, default_values_t = [ControlPlaneKind::Navarch])]
    pub control_planes: Vec<ControlPlaneKind>,
    /// The istiod binary (`pilot-discovery`, Istio 1.31-dev).
    #[arg(long, env = "NAVARCH_ISTIOD_BIN")]
    pub istiod_bin: Option<PathBuf>,
    /// Extra environment for istiod, KEY=VALUE (repeatable).
    #[arg(long = "istiod-env")]
    pub istiod_env: Vec<String>,
    /// How long to wait for every proxy's initial config, in seconds.
    #[arg(long, default_value_t = 300)]
    pub connect_timeout: u64,
    /// How long to wait for a change to reach every proxy, in seconds.
    #[arg(long, default_value_t = 120)]
    pub change_timeout: u64,
    /// Seconds to wait after the proxies synced before reading the steady RSS.
    #[arg(long, default_value_t = 5)]
    pub settle_seconds: u64,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The synthetic mesh as (file name, YAML) pairs; also used by the translation benchmark.
pub fn mesh_files(
    services: usize,
    pods_per_service: usize,
    namespaces: usize,
    sidecar_isolation: bool,
) -> Vec<(String, String)> {
    mesh::mesh_files(&MeshShape {
        services,
        pods_per_service,
        namespaces,
        sidecar_isolation,
    })
}

/// Endpoint changes written at once at most, when the API server is slower than the rate.
const CHURN_IN_FLIGHT: usize = 64;

fn progress(phase: &str, text: impl AsRef<str>) {
    println!("[loadtest] {phase}: {}", text.as_ref());
}

fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A service's VirtualService weights and its pod 0's churn generation, in files.
type FileState = BTreeMap<usize, ((u32, u32), usize)>;

/// Where the mesh lives and how the load test changes it.
enum Mesh {
    Files {
        dir: PathBuf,
        shape: MeshShape,
        /// Per service: (weights, generation of pod 0) when not the initial (90/10, 0).
        state: Mutex<FileState>,
    },
    Kube(Box<cluster::KubeMesh>),
}

/// Per service, how many times its pod 0 moved (across every control plane's run on the same
/// mesh): each move takes the next generation, so every write changes the address (addresses
/// cycle through 250 generations; consecutive ones always differ).
#[derive(Default)]
struct Generations(Mutex<BTreeMap<usize, usize>>);

impl Generations {
    fn next(&self, svc: usize) -> usize {
        let mut g = self.0.lock().expect("generations lock");
        let n = g.entry(svc).or_default();
        *n += 1;
        *n
    }
}

impl Mesh {
    fn file_state(&self, i: usize) -> ((u32, u32), usize) {
        match self {
            Mesh::Files { state, .. } => state
                .lock()
                .expect("state lock")
                .get(&i)
                .copied()
                .unwrap_or(((90, 10), 0)),
            Mesh::Kube(_) => ((90, 10), 0),
        }
    }

    fn write_file(&self, i: usize, weights: (u32, u32), generation: usize) -> anyhow::Result<()> {
        if let Mesh::Files { dir, shape, state } = self {
            state
                .lock()
                .expect("state lock")
                .insert(i, (weights, generation));
            write_atomic(
                &dir.join(format!("svc-{i}.yaml")),
                &mesh::service_file(i, shape, weights, generation),
            )?;
        }
        Ok(())
    }

    async fn set_weights(&self, i: usize, weights: (u32, u32)) -> anyhow::Result<()> {
        match self {
            Mesh::Files { .. } => self.write_file(i, weights, self.file_state(i).1),
            Mesh::Kube(k) => Ok(k.set_weights(i, weights).await?),
        }
    }

    /// Moves service `i`'s pod 0; returns when the write that proxies see began.
    async fn churn(&self, i: usize, generation: usize) -> anyhow::Result<Instant> {
        match self {
            Mesh::Files { .. } => {
                let t = Instant::now();
                self.write_file(i, self.file_state(i).0, generation)?;
                Ok(t)
            }
            Mesh::Kube(k) => Ok(k.churn(i, generation).await?),
        }
    }
}

/// What one control plane's run produced, for the table.
#[derive(Debug, Clone, Default)]
struct Row {
    name: String,
    connected: usize,
    proxies: usize,
    all_synced_s: f64,
    sync_cpu_s: f64,
    steady_rss: f64,
    peak_rss: f64,
    rss_slope_kib: Option<f64>,
    vs: Summary,
    vs_missing: usize,
    churn: Option<Summary>,
    churn_missing: usize,
    churn_non_eds: usize,
    churn_rate: f64,
    allocs_per_vs_response: Option<f64>,
    allocs_per_churn_change: Option<f64>,
    cpu_total: f64,
}

/// Runs the load test; on Ctrl-C (or SIGINT from a script) everything it started is stopped
/// (the cluster and the control plane are killed when dropped).
pub async fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    tokio::select! {
        r = run_all(args) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; the cluster and the control plane were stopped"),
    }
}

async fn run_all(args: LoadtestArgs) -> anyhow::Result<()> {
    if args.services == 0 || args.proxies == 0 || args.namespaces == 0 {
        bail!("--services, --proxies and --namespaces must be at least 1");
    }
    if !args.kube && args.control_planes.contains(&ControlPlaneKind::Istiod) {
        bail!("--control-plane istiod needs --kube (istiod's file-only mode is not usable)");
    }
    let shape = MeshShape {
        services: args.services,
        pods_per_service: args.pods_per_service,
        namespaces: args.namespaces,
        sidecar_isolation: args.sidecar_isolation,
    };
    let mut work = tempfile::tempdir().context("creating a work directory")?;
    if args.keep_files {
        work.disable_cleanup(true);
    }
    let isolation = if args.sidecar_isolation {
        " with Sidecar isolation"
    } else {
        ""
    };
    let mesh = if args.kube {
        progress(
            "setup",
            format!(
                "a kube-apiserver with {} services × {} pods over {} namespaces{isolation}",
                args.services, args.pods_per_service, args.namespaces
            ),
        );
        let k = cluster::KubeMesh::start(&args.kube_ip, args.keep_files, shape, |t| {
            progress("setup", t)
        })
        .await?;
        Mesh::Kube(Box::new(k))
    } else {
        let dir = work.path().join("config");
        progress(
            "setup",
            format!(
                "writing {} services × {} pods over {} namespaces{isolation} to {}",
                args.services,
                args.pods_per_service,
                args.namespaces,
                dir.display()
            ),
        );
        std::fs::create_dir_all(&dir)?;
        for (name, text) in mesh::mesh_files(&shape) {
            write_atomic(&dir.join(name), &text)?;
        }
        Mesh::Files {
            dir,
            shape,
            state: Mutex::new(BTreeMap::new()),
        }
    };
    let mut rows = Vec::new();
    let mut runs = Vec::new();
    let generations = Generations::default();
    for (r, kind) in args.control_planes.iter().enumerate() {
        let (row, result) = run_one(&args, &mesh, &generations, *kind, r, work.path()).await?;
        rows.push(row);
        runs.push(result);
    }
    let result = json!({
        "mesh": {"services": args.services, "podsPerService": args.pods_per_service,
                 "namespaces": args.namespaces, "sidecarIsolation": args.sidecar_isolation,
                 "source": if args.kube { "kube-apiserver" } else { "files" }},
        "proxies": args.proxies,
        "proxiesPerConnection": args.proxies_per_connection,
        "xds": if args.delta { "delta" } else { "sotw" },
        "debounceMax": args.debounce_max,
        "edsDebounce": args.eds_debounce,
        "runs": runs,
    });
    println!();
    print_table(&args, &rows);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.keep_files {
        println!("files kept in {}", work.path().display());
    }
    for row in &rows {
        if row.connected < row.proxies {
            bail!(
                "{}: {} of {} proxies never received their initial config (rerun with --keep-files for the logs)",
                row.name,
                row.proxies - row.connected,
                row.proxies
            );
        }
    }
    Ok(())
}

fn connect_proxies(
    args: &LoadtestArgs,
    cp: &ControlPlane,
    records: &[Arc<ProxyRecord>],
    range: std::ops::Range<usize>,
    tasks: &mut JoinSet<()>,
    channels: &mut Vec<tonic::transport::Channel>,
) -> anyhow::Result<()> {
    let per_conn = args.proxies_per_connection.max(1);
    for k in range {
        if k / per_conn >= channels.len() {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", cp.grpc))?
                .connect_timeout(Duration::from_secs(10))
                .http2_adaptive_window(true)
                .tcp_nodelay(true)
                .connect_lazy();
            channels.push(ch);
        }
        tasks.spawn(proxies::run_proxy(
            channels[k / per_conn].clone(),
            proxies::node(k, args.namespaces),
            records[k].clone(),
            args.delta,
        ));
    }
    Ok(())
}

async fn push_status(cp: &ControlPlane) -> Option<serde_json::Value> {
    if cp.kind != ControlPlaneKind::Navarch {
        return None;
    }
    reqwest::get(format!("http://{}/debug/push_status", cp.http))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

fn per(a: Option<AllocCounts>, b: Option<AllocCounts>, n: usize) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if n > 0 => Some(b.since(&a).allocations as f64 / n as f64),
        _ => None,
    }
}

async fn run_one(
    args: &LoadtestArgs,
    mesh: &Mesh,
    generations: &Generations,
    kind: ControlPlaneKind,
    r: usize,
    work: &Path,
) -> anyhow::Result<(Row, serde_json::Value)> {
    let name = kind.name();
    let phase = |p: &str| format!("{name} {p}");
    let kubeconfig = match mesh {
        Mesh::Kube(k) => Some(k.cluster.kubeconfig.clone()),
        Mesh::Files { .. } => None,
    };
    let source = match (&kubeconfig, mesh) {
        (Some(k), _) => Source::Kubeconfig(k),
        (None, Mesh::Files { dir, .. }) => Source::ConfigDir(dir),
        (None, Mesh::Kube(_)) => unreachable!("a cluster has a kubeconfig"),
    };
    let t_start = Instant::now();
    let cp = ControlPlane::start(StartOptions {
        kind,
        source,
        istiod_bin: args.istiod_bin.as_deref(),
        istiod_env: &args.istiod_env,
        debounce_max: &args.debounce_max,
        eds_debounce: args.eds_debounce,
        work,
        ready_timeout: Duration::from_secs(300),
    })
    .await?;
    let idle = cp.usage();
    progress(
        &phase("setup"),
        format!(
            "pid {} ready after {:.1}s: RSS {:.1} MiB, {:.2} CPU s (log {})",
            cp.pid,
            t_start.elapsed().as_secs_f64(),
            idle.rss_mib,
            idle.cpu_seconds,
            cp.log.display()
        ),
    );

    // Phase 1: the proxies connect, all at once (or in waves for --rss-at).
    let records: Vec<Arc<ProxyRecord>> = (0..args.proxies)
        .map(|k| Arc::new(ProxyRecord::new(namespace_of(k, args.namespaces))))
        .collect();
    let mut steps: Vec<usize> = args
        .rss_at
        .iter()
        .copied()
        .filter(|n| *n > 0 && *n < args.proxies)
        .collect();
    steps.push(args.proxies);
    steps.sort_unstable();
    steps.dedup();
    let mut tasks = JoinSet::new();
    let mut channels = Vec::new();
    let mut connect_delays = Vec::new();
    let mut points = Vec::new();
    let mut all_synced_s: f64 = 0.0;
    let mut sync_cpu = 0.0;
    let mut prev = 0;
    for &step in &steps {
        let wave_start = Instant::now();
        connect_proxies(args, &cp, &records, prev..step, &mut tasks, &mut channels)?;
        let wave = &records[prev..step];
        let timeout = Duration::from_secs(args.connect_timeout);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let done = wave
                .iter()
                .filter(|r| r.initial_done.lock().expect("lock").is_some())
                .count();
            let u = cp.usage();
            let retries: usize = wave
                .iter()
                .map(|r| r.reconnects.load(Ordering::Relaxed))
                .sum();
            progress(
                &phase("connect"),
                format!(
                    "{}/{step} proxies have CDS, EDS, LDS and RDS after {:.1}s ({retries} streams retried); server RSS {:.1} MiB, {:.2} CPU s",
                    prev + done,
                    wave_start.elapsed().as_secs_f64(),
                    u.rss_mib,
                    u.cpu_seconds - idle.cpu_seconds
                ),
            );
            if done == wave.len() || wave_start.elapsed() > timeout {
                break;
            }
        }
        let delays: Vec<Duration> = wave
            .iter()
            .filter_map(|r| r.initial_done.lock().expect("lock").map(|t| t - wave_start))
            .collect();
        all_synced_s =
            all_synced_s.max(delays.iter().max().map(|d| d.as_secs_f64()).unwrap_or(0.0));
        sync_cpu = cp.usage().cpu_seconds - idle.cpu_seconds;
        connect_delays.extend(delays);
        tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
        let u = cp.usage();
        progress(
            &phase("connect"),
            format!(
                "{step} proxies connected: steady RSS {:.1} MiB (peak so far {:.1} MiB)",
                u.rss_mib, u.peak_rss_mib
            ),
        );
        points.push(
            json!({"proxies": step, "rssMiB": u.rss_mib, "peakRssMiB": u.peak_rss_mib,
                           "cpuSeconds": u.cpu_seconds}),
        );
        prev = step;
    }
    let connected = connect_delays.len();
    let connect_summary = summarize(connect_delays);
    let steady = cp.usage();
    let rss_slope_kib = (points.len() >= 2).then(|| {
        let (a, b) = (&points[0], &points[points.len() - 1]);
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
        (f(b, "rssMiB") - f(a, "rssMiB")) * 1024.0 / (f(b, "proxies") - f(a, "proxies"))
    });
    if let Some(s) = rss_slope_kib {
        progress(
            &phase("connect"),
            format!("RSS slope {s:.1} KiB per proxy between the first and last point"),
        );
    }
    let status_before = push_status(&cp).await;

    // Phase 2: one VirtualService change.
    let target = 0usize;
    let target_ns = namespace_of(target, args.namespaces);
    let expected: Vec<usize> = (0..args.proxies)
        .filter(|k| !args.sidecar_isolation || records[*k].namespace == target_ns)
        .collect();
    let shift = (r % 30) as u32;
    let weights = (40 - shift, 60 + shift);
    let alloc_before_vs = cp.alloc_counts().await;
    let t0 = Instant::now();
    mesh.set_weights(target, weights).await?;
    let (vs_delays, vs_missing) = converge(
        &records,
        &expected,
        "RDS",
        t0,
        Duration::from_secs(args.change_timeout),
        |have, of| {
            progress(
                &phase("virtualservice"),
                format!(
                    "{have}/{of} proxies have the new routes after {:.1}s",
                    t0.elapsed().as_secs_f64()
                ),
            )
        },
    )
    .await;
    let vs_summary = summarize(vs_delays);
    // Let the push finish everywhere (proxies that do not see the change get one too).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let alloc_after_vs = cp.alloc_counts().await;
    let vs_responses: usize = proxies::responses_since(&records, t0).values().sum();
    let allocs_per_vs_response = per(alloc_before_vs, alloc_after_vs, vs_responses);
    progress(
        &phase("virtualservice"),
        format!(
            "svc-0's VirtualService set to {}/{}: {} of {} proxies had new routes, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            weights.0,
            weights.1,
            vs_summary.count,
            expected.len(),
            vs_summary.p50_ms,
            vs_summary.p99_ms,
            vs_summary.max_ms
        ),
    );
    let status_after_vs = push_status(&cp).await;

    // Phase 3: endpoint churn.
    let mut churn = Vec::new();
    let mut churn_missing = 0;
    let churn_before = cp.usage();
    let alloc_before_churn = cp.alloc_counts().await;
    let churn_start = Instant::now();
    let total = args.churn_rate as usize * args.churn_seconds as usize;
    let mut churn_rate_achieved = 0.0;
    if total > 0 {
        let interval = Duration::from_secs_f64(1.0 / f64::from(args.churn_rate));
        let mut changes: Vec<(usize, Instant)> = Vec::new();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Writes go out on the ticker's beat whatever the API server's latency (a few may be
        // in flight at once), so the rate holds on a loaded machine.
        let mut inflight = futures::stream::FuturesUnordered::new();
        let mut issued = 0;
        while issued < total || !inflight.is_empty() {
            tokio::select! {
                _ = ticker.tick(), if issued < total && inflight.len() < CHURN_IN_FLIGHT => {
                    let i = issued;
                    issued += 1;
                    let svc = (i * 7 + 1) % args.services;
                    let generation = generations.next(svc);
                    inflight.push(async move { mesh.churn(svc, generation).await.map(|t| (svc, t)) });
                    if issued % (args.churn_rate as usize).max(1) == 0 {
                        let u = cp.usage();
                        progress(
                            &phase("churn"),
                            format!(
                                "{issued}/{total} endpoint changes in {:.0}s; server RSS {:.1} MiB",
                                churn_start.elapsed().as_secs_f64(),
                                u.rss_mib
                            ),
                        );
                    }
                }
                Some(done) = futures::StreamExt::next(&mut inflight), if !inflight.is_empty() => {
                    changes.push(done?);
                }
            }
        }
        churn_rate_achieved = total as f64 / churn_start.elapsed().as_secs_f64();
        let expected_for = |svc: usize| -> Vec<usize> {
            let ns = namespace_of(svc, args.namespaces);
            (0..args.proxies)
                .filter(|k| !args.sidecar_isolation || records[*k].namespace == ns)
                .collect()
        };
        // A change counts as converged once every proxy that sees it got an EDS response
        // after it: wait for the last change (up to --change-timeout), then judge them all.
        if let Some((svc, t)) = changes.last().copied() {
            progress(
                &phase("churn"),
                format!(
                    "waiting up to {}s for the last change to reach every proxy that sees it",
                    args.change_timeout
                ),
            );
            converge(
                &records,
                &expected_for(svc),
                "EDS",
                t,
                Duration::from_secs(args.change_timeout),
                |have, of| {
                    progress(
                        &phase("churn"),
                        format!("{have}/{of} proxies have the last change's EDS"),
                    )
                },
            )
            .await;
        }
        for (svc, t) in changes {
            let (delays, missing) = converge(
                &records,
                &expected_for(svc),
                "EDS",
                t,
                Duration::ZERO,
                |_, _| {},
            )
            .await;
            churn_missing += missing;
            if let Some(max) = delays.iter().max() {
                churn.push(*max);
            }
        }
    }
    let churn_responses = proxies::responses_since(&records, churn_start);
    let churn_non_eds: usize = churn_responses
        .iter()
        .filter(|(k, _)| **k != "EDS")
        .map(|(_, n)| n)
        .sum();
    let churn_eds = churn_responses.get("EDS").copied().unwrap_or(0);
    let alloc_after_churn = cp.alloc_counts().await;
    let allocs_per_churn_change = per(alloc_before_churn, alloc_after_churn, total);
    let churn_summary = summarize(churn);
    if total > 0 {
        progress(
            &phase("churn"),
            format!(
                "{churn_rate_achieved:.1} changes/s; per-change EDS convergence p50 {:.0} ms, p99 {:.0} ms; {churn_missing} proxy updates missed; {churn_eds} EDS and {churn_non_eds} other responses",
                churn_summary.p50_ms, churn_summary.p99_ms
            ),
        );
    }
    let end = cp.usage();
    let status_end = push_status(&cp).await;
    let reconnects: usize = records
        .iter()
        .map(|r| r.reconnects.load(Ordering::Relaxed))
        .sum();
    let resource_bytes: u64 = records
        .iter()
        .map(|r| r.resource_bytes.load(Ordering::Relaxed))
        .sum();
    drop(tasks);
    cp.stop().await;

    let num = |v: &Option<serde_json::Value>, k: &str| {
        v.as_ref()
            .and_then(|v| v[k].as_u64())
            .map(serde_json::Value::from)
            .unwrap_or(serde_json::Value::Null)
    };
    let diff = |a: &Option<serde_json::Value>, b: &Option<serde_json::Value>, k: &str| match (
        num(a, k).as_u64(),
        num(b, k).as_u64(),
    ) {
        (Some(a), Some(b)) => serde_json::Value::from(b.saturating_sub(a)),
        _ => serde_json::Value::Null,
    };
    let result = json!({
        "controlPlane": name,
        "connect": {"connected": connected, "summary": connect_summary, "allSyncedSeconds": all_synced_s,
                    "syncCpuSeconds": sync_cpu, "streamsRetried": reconnects},
        "rssPoints": points,
        "rssSlopeKiBPerProxy": rss_slope_kib,
        "steadyRssMiB": steady.rss_mib,
        "virtualServiceChange": {"expected": expected.len(), "missing": vs_missing, "summary": vs_summary,
                                 "responses": vs_responses, "allocationsPerResponse": allocs_per_vs_response,
                                 "allocations": alloc_before_vs.zip(alloc_after_vs).map(|(a, b)| b.since(&a)),
                                 "pushes": diff(&status_before, &status_after_vs, "pushes")},
        "endpointChurn": {"ratePerSecond": args.churn_rate, "seconds": args.churn_seconds,
                          "achievedRatePerSecond": churn_rate_achieved,
                          "summary": churn_summary, "missingProxyUpdates": churn_missing,
                          "edsResponses": churn_eds, "nonEdsResponses": churn_non_eds,
                          "allocationsPerChange": allocs_per_churn_change,
                          "fullPushes": diff(&status_after_vs, &status_end, "fullPushes"),
                          "pushes": diff(&status_after_vs, &status_end, "pushes"),
                          "cpuSeconds": end.cpu_seconds - churn_before.cpu_seconds},
        "server": {"cpuSeconds": end.cpu_seconds, "peakRssMiB": end.peak_rss_mib, "endRssMiB": end.rss_mib,
                   "resourceBytesReceived": resource_bytes,
                   "pushes": num(&status_end, "pushes"), "pushBytes": num(&status_end, "pushBytes")},
    });
    let row = Row {
        name: name.to_string(),
        connected,
        proxies: args.proxies,
        all_synced_s,
        sync_cpu_s: sync_cpu,
        steady_rss: steady.rss_mib,
        peak_rss: end.peak_rss_mib,
        rss_slope_kib,
        vs: vs_summary,
        vs_missing,
        churn: (total > 0).then_some(churn_summary),
        churn_missing,
        churn_non_eds,
        churn_rate: churn_rate_achieved,
        allocs_per_vs_response,
        allocs_per_churn_change,
        cpu_total: end.cpu_seconds,
    };
    Ok((row, result))
}

fn print_table(args: &LoadtestArgs, rows: &[Row]) {
    println!(
        "{} services × {} pods, {} namespaces{}, {} proxies ({}, {} per connection){}",
        args.services,
        args.pods_per_service,
        args.namespaces,
        if args.sidecar_isolation {
            ", one Sidecar per namespace"
        } else {
            ", no Sidecar isolation"
        },
        args.proxies,
        if args.delta { "delta" } else { "SotW" },
        args.proxies_per_connection,
        if args.kube {
            ", config in kube-apiserver"
        } else {
            ", config in files"
        }
    );
    println!();
    let mut header = String::from("| |");
    let mut rule = String::from("|---|");
    for r in rows {
        header.push_str(&format!(" {} |", r.name));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    let line = |label: &str, f: &dyn Fn(&Row) -> String| {
        let mut s = format!("| {label} |");
        for r in rows {
            s.push_str(&format!(" {} |", f(r)));
        }
        println!("{s}");
    };
    line("steady RSS (MiB)", &|r: &Row| {
        format!("{:.0}", r.steady_rss)
    });
    line("peak RSS (MiB)", &|r: &Row| format!("{:.0}", r.peak_rss));
    line("all synced (s)", &|r: &Row| {
        format!("{:.1} ({}/{})", r.all_synced_s, r.connected, r.proxies)
    });
    line("server CPU s to sync", &|r: &Row| {
        format!("{:.1}", r.sync_cpu_s)
    });
    if rows.iter().any(|r| r.rss_slope_kib.is_some()) {
        line("RSS slope (KiB/proxy)", &|r: &Row| {
            r.rss_slope_kib
                .map(|s| format!("{s:.1}"))
                .unwrap_or_else(|| "-".into())
        });
    }
    line("VS change p50 / p99 (ms)", &|r: &Row| {
        let missed = if r.vs_missing > 0 {
            format!(", {} missed", r.vs_missing)
        } else {
            String::new()
        };
        format!("{:.0} / {:.0}{missed}", r.vs.p50_ms, r.vs.p99_ms)
    });
    if rows.iter().any(|r| r.churn.is_some()) {
        line(
            &format!("churn {}/s EDS p50 / p99 (ms)", args.churn_rate),
            &|r: &Row| match r.churn {
                Some(s) => format!(
                    "{:.0} / {:.0} (at {:.1}/s; {} missed, {} non-EDS responses)",
                    s.p50_ms, s.p99_ms, r.churn_rate, r.churn_missing, r.churn_non_eds
                ),
                None => "-".into(),
            },
        );
    }
    let allocs = |v: Option<f64>| v.map(|a| format!("{a:.0}")).unwrap_or_else(|| "-".into());
    line("allocations per VS-change response", &|r: &Row| {
        allocs(r.allocs_per_vs_response)
    });
    if rows.iter().any(|r| r.churn.is_some()) {
        line("allocations per churn change", &|r: &Row| {
            allocs(r.allocs_per_churn_change)
        });
    }
    line("server CPU s, whole run", &|r: &Row| {
        format!("{:.1}", r.cpu_total)
    });
}
