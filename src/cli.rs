//! Subcommands and their flags (names as in CONTRACT.md; every flag also reads
//! `NAVARCH_<FLAG>`). Parsing and dispatch only: each command's work lives in its module.

pub mod analyze;
pub mod demo;
pub mod install;
pub mod loadtest;
pub mod preview;
pub mod proxy_config;
pub mod proxy_status;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::bootstrap::{BootstrapOptions, parse_labels};
use crate::model::duration::Duration as GoDuration;
use crate::model::proxy::{InterceptionMode, NodeType};
use crate::xds::debounce::DebounceOptions;

#[derive(Debug, Parser)]
#[command(
    name = "navarch",
    version,
    about = "An Istio-compatible control plane for Envoy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (xDS server, watchers, debug endpoints).
    Discovery(DiscoveryArgs),
    /// Print an Envoy bootstrap (YAML) for one proxy.
    Bootstrap(BootstrapArgs),
    /// Write a bootstrap and exec Envoy with it: `navarch agent [flags] -- [envoy args]`.
    Agent(AgentArgs),
    /// Per-proxy xDS sync status, as `istioctl proxy-status`.
    ProxyStatus(proxy_status::ProxyStatusArgs),
    /// One proxy's Envoy config as istioctl proxy-config shows it (cluster, listener, route,
    /// endpoint, bootstrap, all), from the control plane or a live Envoy, or the two compared.
    ProxyConfig(proxy_config::ProxyConfigArgs),
    /// Which connected proxies' config a change would alter, and how, before it is applied
    /// (exit 79 when the change raises an error).
    Preview(preview::PreviewArgs),
    /// Static analysis of Istio configuration, as `istioctl analyze` (exit code 79 on errors).
    Analyze(analyze::AnalyzeArgs),
    /// Install manifests: `manifest generate`.
    #[command(subcommand)]
    Manifest(install::ManifestCommand),
    /// Install navarch into the cluster (CRDs, control plane, gateways) and wait for it.
    Install(install::InstallArgs),
    /// Check that everything an install has is present and ready.
    VerifyInstall(install::VerifyArgs),
    /// Remove a control plane revision, or everything (--purge).
    Uninstall(install::UninstallArgs),
    /// Add the sidecar to the pod templates of a file, as the injection webhook would.
    KubeInject(install::KubeInjectArgs),
    /// Revision tags: `tag set|list|remove`.
    #[command(subcommand)]
    Tag(install::TagCommand),
    /// The IstioOperator controller (`operator`), its install (`operator init`) and removal.
    Operator(install::OperatorArgs),
    /// Run the seed's sandbox on this machine end to end.
    Demo(demo::DemoArgs),
    /// Install Istio's REDIRECT rules in this network namespace (the `istio-init` container).
    Iptables(crate::iptables::IptablesArgs),
    /// Load-test a control plane with simulated proxies on a synthetic mesh.
    Loadtest(loadtest::LoadtestArgs),
    /// Print the version.
    Version,
}

pub(crate) fn parse_go_duration(s: &str) -> Result<Duration, String> {
    GoDuration::parse(s)
        .map(|d| d.as_std())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Args, Clone)]
pub struct DiscoveryArgs {
    /// Plaintext ADS (SotW and Delta on the same port).
    #[arg(long, env = "NAVARCH_GRPC_ADDR", default_value = "0.0.0.0:15010")]
    pub grpc_addr: SocketAddr,
    /// TLS ADS (off until certificates are configured).
    #[arg(
        long,
        env = "NAVARCH_SECURE_GRPC_ADDR",
        default_value = "0.0.0.0:15012"
    )]
    pub secure_grpc_addr: SocketAddr,
    /// /ready and /debug/*.
    #[arg(long, env = "NAVARCH_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// /metrics and /debug/*.
    #[arg(long, env = "NAVARCH_MONITORING_ADDR", default_value = "0.0.0.0:15014")]
    pub monitoring_addr: SocketAddr,
    /// HTTPS /inject and /validate (the admission webhooks; served when a cluster is watched).
    #[arg(long, env = "NAVARCH_WEBHOOK_ADDR", default_value = "0.0.0.0:15017")]
    pub webhook_addr: SocketAddr,
    /// The introspection page (ControlZ's): proxies, config, pushes, process, log levels.
    #[arg(long, env = "NAVARCH_CTRLZ_ADDR", default_value = "127.0.0.1:9876")]
    pub ctrlz_addr: SocketAddr,
    /// Read Kubernetes-style YAML/JSON from DIR, recursively, and watch it (repeatable).
    #[arg(long = "config-dir", env = "NAVARCH_CONFIG_DIR", value_delimiter = ',')]
    pub config_dirs: Vec<PathBuf>,
    /// Watch the cluster of this kubeconfig. Inside a pod (KUBERNETES_SERVICE_HOST set) the
    /// in-cluster config is used when this is not given.
    #[arg(long, env = "NAVARCH_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// MeshConfig YAML (the `mesh` key of the `istio` ConfigMap).
    #[arg(long, env = "NAVARCH_MESH_CONFIG")]
    pub mesh_config: Option<PathBuf>,
    #[arg(long, env = "NAVARCH_SYSTEM_NAMESPACE", default_value = "istio-system")]
    pub system_namespace: String,
    /// The control plane revision (istiod's REVISION): reads the mesh config from the
    /// `istio-<revision>` ConfigMap. Empty or `default` for the default control plane.
    #[arg(long, env = "NAVARCH_REVISION", default_value = "")]
    pub revision: String,
    /// Quiet period before a push (istiod's PILOT_DEBOUNCE_AFTER).
    #[arg(long, env = "NAVARCH_DEBOUNCE_AFTER", default_value = "100ms", value_parser = parse_go_duration)]
    pub debounce_after: Duration,
    /// Longest delay of a push after the first change (PILOT_DEBOUNCE_MAX).
    #[arg(long, env = "NAVARCH_DEBOUNCE_MAX", default_value = "10s", value_parser = parse_go_duration)]
    pub debounce_max: Duration,
    /// Whether endpoint-only changes wait like config changes (istiod's
    /// PILOT_ENABLE_EDS_DEBOUNCE). `false`: they are pushed --debounce-after from the first
    /// one however busy the churn (endpoints reach proxies within about that; at most one
    /// such push per --debounce-after).
    #[arg(long, env = "NAVARCH_ENABLE_EDS_DEBOUNCE", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_eds_debounce: bool,
    /// Lease duration for singleton work in a cluster (writing status), as istiod's 30s.
    #[arg(long, env = "NAVARCH_LEASE_DURATION", default_value = "30s", value_parser = parse_go_duration)]
    pub lease_duration: Duration,
    /// Close an ADS stream that has a response waiting and could send nothing of it for this
    /// long: its proxy stopped reading (istiod's PILOT_XDS_SEND_TIMEOUT, which is off by
    /// default; here on, so a stalled proxy cannot pin old config). 0s disables it.
    #[arg(long, env = "NAVARCH_XDS_SEND_TIMEOUT", default_value = "30s", value_parser = parse_go_duration)]
    pub xds_send_timeout: Duration,
    /// Live ADS streams accepted from one peer address (0 = unlimited); more are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "NAVARCH_XDS_MAX_STREAMS_PER_PEER", default_value_t = 1024)]
    pub xds_max_streams_per_peer: usize,
    /// Requests per second one ADS stream may send (0 = unlimited); faster senders are read
    /// more slowly, never busy-looped on.
    #[arg(long, env = "NAVARCH_XDS_REQUESTS_PER_SECOND", default_value_t = 100.0)]
    pub xds_requests_per_second: f64,
    /// Requests one ADS stream may send at once before its rate applies.
    #[arg(long, env = "NAVARCH_XDS_REQUEST_BURST", default_value_t = 1000.0)]
    pub xds_request_burst: f64,
    /// Largest ADS request accepted, in bytes (larger ones end the stream with OUT_OF_RANGE).
    #[arg(long, env = "NAVARCH_XDS_MAX_REQUEST_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub xds_max_request_bytes: usize,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `navarch=debug`.
    #[arg(long, env = "NAVARCH_LOG", default_value = "info")]
    pub log: String,
    /// Scope levels, istiod's `--log_output_level`: `scope:level,...` (scopes: default, ads,
    /// model, translate, kube, files, webhook, admin; levels: none, error, warn, info, debug,
    /// trace). They change at runtime on /debug/logging and the introspection page.
    #[arg(
        long = "log-output-level",
        env = "NAVARCH_LOG_OUTPUT_LEVEL",
        default_value = "default:info"
    )]
    pub log_output_level: String,
    /// `text` or `json` (one JSON object per line, istiod's `--log_as_json`).
    #[arg(long = "log-format", env = "NAVARCH_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl DiscoveryArgs {
    pub fn to_config(&self) -> crate::app::DiscoveryConfig {
        crate::app::DiscoveryConfig {
            grpc_addr: self.grpc_addr,
            http_addr: self.http_addr,
            monitoring_addr: Some(self.monitoring_addr),
            ctrlz_addr: Some(self.ctrlz_addr),
            config_dirs: self.config_dirs.clone(),
            cluster: match &self.kubeconfig {
                Some(path) => Some(Some(path.clone())),
                None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => Some(None),
                None => None,
            },
            mesh_config: self.mesh_config.clone(),
            system_namespace: self.system_namespace.clone(),
            revision: self.revision.clone(),
            debounce: DebounceOptions {
                after: self.debounce_after,
                max: self.debounce_max,
                eds_debounce: self.enable_eds_debounce,
            },
            instance_id: instance_id(),
            lease_ttl: self.lease_duration,
            ads_limits: crate::xds::grpc::AdsLimits {
                send_timeout: self.xds_send_timeout,
                max_streams_per_peer: self.xds_max_streams_per_peer,
                requests_per_second: self.xds_requests_per_second,
                request_burst: self.xds_request_burst,
                max_request_bytes: self.xds_max_request_bytes,
            },
            webhook_addr: Some(self.webhook_addr),
        }
    }
}

/// This control plane's ID (POD_NAME in a cluster, else `navarch-<hostname>`).
pub fn instance_id() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("navarch-{}", host.trim())
        })
}

#[derive(Debug, Args, Clone)]
pub struct BootstrapArgs {
    #[arg(long = "type", env = "NAVARCH_TYPE", default_value = "sidecar", value_parser = ["sidecar", "router"])]
    pub node_type: String,
    #[arg(long, env = "NAVARCH_IP", default_value = "127.0.0.1")]
    pub ip: IpAddr,
    #[arg(long, env = "NAVARCH_POD", default_value = "sleep")]
    pub pod: String,
    #[arg(long, env = "NAVARCH_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Workload labels, `k=v,k=v`.
    #[arg(long, env = "NAVARCH_LABELS", default_value = "")]
    pub labels: String,
    #[arg(long, env = "NAVARCH_INTERCEPTION_MODE", default_value = "REDIRECT", value_parser = ["REDIRECT", "NONE", "TPROXY"])]
    pub interception_mode: String,
    #[arg(
        long,
        env = "NAVARCH_XDS_ADDRESS",
        default_value = "istiod.istio-system.svc:15010"
    )]
    pub xds_address: String,
    /// Envoy admin port (0 = any).
    #[arg(long, env = "NAVARCH_ADMIN_PORT", default_value_t = 15000)]
    pub admin_port: u16,
    /// Use DELTA_GRPC instead of GRPC.
    #[arg(long, env = "NAVARCH_DELTA")]
    pub delta: bool,
    #[arg(long, env = "NAVARCH_CLUSTER_ID", default_value = "Kubernetes")]
    pub cluster_id: String,
    /// Write to FILE instead of stdout.
    #[arg(short = 'o', long = "output", env = "NAVARCH_OUTPUT")]
    pub output: Option<PathBuf>,
}

impl BootstrapArgs {
    pub fn options(&self) -> anyhow::Result<BootstrapOptions> {
        Ok(BootstrapOptions {
            node_type: self.node_type.parse::<NodeType>()?,
            ip: self.ip,
            pod: self.pod.clone(),
            namespace: self.namespace.clone(),
            labels: parse_labels(&self.labels)?,
            interception_mode: self.interception_mode.parse::<InterceptionMode>()?,
            xds_address: self.xds_address.clone(),
            admin_port: self.admin_port,
            delta: self.delta,
            cluster_id: self.cluster_id.clone(),
        })
    }
}

#[derive(Debug, Args, Clone)]
pub struct AgentArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    /// Arguments passed to Envoy after `--`.
    #[arg(last = true)]
    pub envoy_args: Vec<String>,
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Analyze(args) => return analyze::run(args),
        Command::Preview(args) => return preview::run(args),
        Command::Discovery(args) => {
            crate::logging::init(&args.log_format, &args.log_output_level, &args.log)
                .map_err(anyhow::Error::from)
                .and_then(|()| runtime())
                .and_then(|rt| rt.block_on(run_discovery(args)))
        }
        Command::Bootstrap(args) => run_bootstrap(&args),
        Command::Agent(args) => run_agent(&args),
        Command::ProxyStatus(args) => runtime().and_then(|rt| rt.block_on(proxy_status::run(args))),
        Command::ProxyConfig(args) => runtime().and_then(|rt| rt.block_on(proxy_config::run(args))),
        Command::Manifest(cmd) => install::run_manifest(cmd),
        Command::Install(args) => cli_runtime(install::run_install(args)),
        Command::VerifyInstall(args) => cli_runtime(install::run_verify(args)),
        Command::Uninstall(args) => cli_runtime(install::run_uninstall(args)),
        Command::Tag(cmd) => cli_runtime(install::run_tag(cmd)),
        Command::KubeInject(args) => install::run_kube_inject(args),
        Command::Operator(args) => {
            init_tracing("info,kube_client=warn");
            runtime().and_then(|rt| rt.block_on(install::run_operator(args)))
        }
        Command::Demo(args) => {
            init_tracing("warn");
            runtime().and_then(|rt| rt.block_on(demo::run(args)))
        }
        Command::Iptables(args) => crate::iptables::run(&args).map_err(Into::into),
        Command::Loadtest(args) => {
            // kube_client logs every refused connection while the API server starts.
            init_tracing("warn,kube_client=off");
            runtime().and_then(|rt| rt.block_on(loadtest::run(args)))
        }
        Command::Version => {
            println!(
                "navarch {} (Istio API and behaviour: 1.24)",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a one-shot cluster command: warnings only in the log, the command prints its own lines.
fn cli_runtime(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    init_tracing("warn,kube_client=off");
    runtime()?.block_on(fut)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn run_discovery(args: DiscoveryArgs) -> anyhow::Result<()> {
    let running = crate::app::start(args.to_config()).await?;
    tokio::select! {
        r = running.wait() => r,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; shutting down");
            Ok(())
        }
    }
}

fn run_bootstrap(args: &BootstrapArgs) -> anyhow::Result<()> {
    let yaml = crate::bootstrap::render_yaml(&args.options()?)?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            print!("{yaml}");
            Ok(())
        }
    }
}

fn run_agent(args: &AgentArgs) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let opts = args.bootstrap.options()?;
    let yaml = crate::bootstrap::render_yaml(&opts)?;
    let path = match &args.bootstrap.output {
        Some(p) => p.clone(),
        None => std::env::temp_dir().join(format!(
            "navarch-envoy-{}-{}.yaml",
            opts.pod,
            std::process::id()
        )),
    };
    std::fs::write(&path, yaml)
        .with_context(|| format!("writing the bootstrap to {}", path.display()))?;
    let envoy = crate::envoy::find_envoy()?;
    eprintln!(
        "navarch agent: exec {} -c {}",
        envoy.display(),
        path.display()
    );
    let err = std::process::Command::new(&envoy)
        .arg("-c")
        .arg(&path)
        .args(&args.envoy_args)
        .exec();
    Err(anyhow::anyhow!("exec {}: {err}", envoy.display()))
}
