//! The control plane under test, as a separate process: `navarch discovery` (on a config
//! directory or a cluster) or istiod (`pilot-discovery discovery` against a cluster, set up
//! for plain Envoy clients: no CA, no ALPN or metadata-exchange filters, no TLS ports). Also
//! what is read from outside the process: CPU seconds and RSS from /proc, readiness from
//! `/ready` on the HTTP port (both serve it), and allocation counts (navarch's benchmark build
//! prints them on SIGUSR1; istiod's Go runtime exports `go_memstats_mallocs_total`).
//!
//! Owns the process (killed on drop), its ports (free loopback ports) and its log. Must not
//! create cluster objects or drive proxies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::alloc_count::{AllocCounts, ENABLED_LINE};

/// Errors starting or reading the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} not ready within {secs}s; see {log}")]
    NotReady {
        name: &'static str,
        secs: u64,
        log: PathBuf,
    },
    #[error("{name} exited with {status} before it was ready; see {log}")]
    Exited {
        name: &'static str,
        status: std::process::ExitStatus,
        log: PathBuf,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ControlPlaneError {
    let what = what.into();
    move |source| ControlPlaneError::Io { what, source }
}

/// Which control plane, and how to reach its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Navarch,
    Istiod,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Navarch => "navarch",
            Kind::Istiod => "istiod",
        }
    }
}

/// Where the configuration comes from.
pub enum Source<'a> {
    ConfigDir(&'a Path),
    Kubeconfig(&'a Path),
}

pub struct StartOptions<'a> {
    pub kind: Kind,
    pub source: Source<'a>,
    /// The istiod binary (`pilot-discovery`).
    pub istiod_bin: Option<&'a Path>,
    /// Extra `KEY=VALUE` environment for istiod.
    pub istiod_env: &'a [String],
    pub debounce_max: &'a str,
    /// Whether endpoint-only changes are debounced (both control planes' default: true).
    pub eds_debounce: bool,
    pub work: &'a Path,
    pub ready_timeout: Duration,
}

pub struct ControlPlane {
    pub kind: Kind,
    child: tokio::process::Child,
    pub pid: u32,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub monitoring: SocketAddr,
    pub log: PathBuf,
    ticks: f64,
}

fn free_port() -> Result<SocketAddr, ControlPlaneError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    l.local_addr().map_err(io("finding a free port"))
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

impl ControlPlane {
    pub async fn start(o: StartOptions<'_>) -> Result<ControlPlane, ControlPlaneError> {
        let (grpc, http, monitoring) = (free_port()?, free_port()?, free_port()?);
        let log = o.work.join(format!("{}.log", o.kind.name()));
        let out = std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io("duplicating the log file"))?;
        let mut cmd = match o.kind {
            Kind::Navarch => {
                let exe = std::env::current_exe().map_err(io("locating the navarch binary"))?;
                let mut cmd = tokio::process::Command::new(exe);
                cmd.arg("discovery");
                match o.source {
                    Source::ConfigDir(dir) => cmd.arg("--config-dir").arg(dir),
                    Source::Kubeconfig(k) => cmd.arg("--kubeconfig").arg(k),
                };
                cmd.args(["--grpc-addr", &grpc.to_string()])
                    .args(["--http-addr", &http.to_string()])
                    .args(["--monitoring-addr", &monitoring.to_string()])
                    .args(["--webhook-addr", &free_port()?.to_string()])
                    .args(["--ctrlz-addr", &free_port()?.to_string()])
                    .args(["--log", "warn"])
                    .args(["--debounce-max", o.debounce_max])
                    .args(["--enable-eds-debounce", &o.eds_debounce.to_string()])
                    // Every simulated proxy connects from 127.0.0.1.
                    .args(["--xds-max-streams-per-peer", "0"]);
                cmd
            }
            Kind::Istiod => {
                let bin = o.istiod_bin.unwrap_or(Path::new("pilot-discovery"));
                let Source::Kubeconfig(kubeconfig) = o.source else {
                    return Err(ControlPlaneError::Io {
                        what: "istiod".into(),
                        source: std::io::Error::other("istiod needs a cluster (--kube)"),
                    });
                };
                let dir = o.work.join("istiod");
                std::fs::create_dir_all(&dir).map_err(io("creating istiod's directory"))?;
                let ctrlz = free_port()?;
                let mut cmd = tokio::process::Command::new(bin);
                cmd.current_dir(&dir)
                    .arg("discovery")
                    .arg(format!("--kubeconfig={}", kubeconfig.display()))
                    .arg(format!("--grpcAddr={grpc}"))
                    .arg(format!("--httpAddr={http}"))
                    .arg(format!("--monitoringAddr={monitoring}"))
                    .arg("--secureGRPCAddr=")
                    .arg("--httpsAddr=")
                    .arg("--ctrlz_address=127.0.0.1")
                    .arg(format!("--ctrlz_port={}", ctrlz.port()))
                    .arg("--log_output_level=all:warn")
                    .args(["--namespace", "istio-system"])
                    .env("POD_NAMESPACE", "istio-system")
                    .env("POD_NAME", "istiod-loadtest")
                    .env("ENABLE_CA_SERVER", "false")
                    .env("PILOT_ENABLE_ALPN_FILTER", "false")
                    .env("PILOT_ENABLE_METADATA_EXCHANGE", "false")
                    .env("PILOT_DEBOUNCE_MAX", o.debounce_max)
                    .env("PILOT_ENABLE_EDS_DEBOUNCE", o.eds_debounce.to_string())
                    .env("KUBECONFIG", kubeconfig);
                for kv in o.istiod_env {
                    if let Some((k, v)) = kv.split_once('=') {
                        cmd.env(k, v);
                    }
                }
                cmd
            }
        };
        let mut child = cmd
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(io(format!("starting {}", o.kind.name())))?;
        let pid = child.id().unwrap_or(0);
        let deadline = Instant::now() + o.ready_timeout;
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(format!("http://{http}/ready")).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ControlPlaneError::Exited {
                    name: o.kind.name(),
                    status,
                    log,
                });
            }
            if Instant::now() > deadline {
                return Err(ControlPlaneError::NotReady {
                    name: o.kind.name(),
                    secs: o.ready_timeout.as_secs(),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(ControlPlane {
            kind: o.kind,
            child,
            pid,
            grpc,
            http,
            monitoring,
            log,
            ticks: clock_ticks(),
        })
    }

    pub fn usage(&self) -> Usage {
        usage(self.pid, self.ticks)
    }

    /// Allocation counts since the process started, when it exposes them: navarch built with
    /// `alloc-count` (asked with SIGUSR1, read back from its log), istiod (Go's counters).
    pub async fn alloc_counts(&self) -> Option<AllocCounts> {
        match self.kind {
            Kind::Navarch => self.navarch_counts().await,
            Kind::Istiod => self.go_counts().await,
        }
    }

    async fn navarch_counts(&self) -> Option<AllocCounts> {
        let before = std::fs::read_to_string(&self.log).ok()?;
        // Only a binary that announced the handler gets the signal: to any other SIGUSR1
        // means "terminate".
        if !before.contains(ENABLED_LINE) {
            return None;
        }
        let lines_before = before.lines().count();
        let status = tokio::process::Command::new("kill")
            .args(["-USR1", &self.pid.to_string()])
            .status()
            .await
            .ok()?;
        if !status.success() {
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let text = std::fs::read_to_string(&self.log).ok()?;
            let new: String = text
                .lines()
                .skip(lines_before)
                .collect::<Vec<_>>()
                .join("\n");
            if let Some(c) = AllocCounts::last_in(&new) {
                return Some(c);
            }
        }
        None
    }

    async fn go_counts(&self) -> Option<AllocCounts> {
        let text = reqwest::get(format!("http://{}/metrics", self.monitoring))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let metric = |name: &str| -> Option<u64> {
            text.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| v as u64)
        };
        Some(AllocCounts {
            allocations: metric("go_memstats_mallocs_total")?,
            deallocations: metric("go_memstats_frees_total").unwrap_or(0),
            reallocations: 0,
            bytes_allocated: metric("go_memstats_alloc_bytes_total").unwrap_or(0),
        })
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A process's CPU seconds (user + system) and RSS / peak RSS in MiB, from /proc.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

pub fn usage(pid: u32, ticks: f64) -> Usage {
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
