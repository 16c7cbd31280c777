//! Logging as istiod does it: named scopes with their own output level
//! (`--log-output-level ads:debug,model:info`), changed at runtime (`/debug/logging`, the
//! introspection page), and `--log_as_json`'s JSON lines (`--log-format json`).
//!
//! Owns the global subscriber and its reloadable filter; a scope is a set of module paths.
//! It never decides what is logged where: modules log with `tracing` as usual.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// The scopes: name, what it covers, the module paths it is.
pub const SCOPES: [(&str, &str, &[&str]); 8] = [
    ("default", "Unscoped logging messages.", &[]),
    (
        "ads",
        "ADS debugging: streams, pushes, ACKs and NACKs.",
        &["navarch::xds"],
    ),
    (
        "model",
        "The typed config, registry and snapshots.",
        &["navarch::model"],
    ),
    (
        "translate",
        "Envoy config generation.",
        &["navarch::translate"],
    ),
    (
        "kube",
        "The Kubernetes source, leader election and status writes.",
        &["navarch::sources::kube"],
    ),
    (
        "files",
        "The file source.",
        &["navarch::sources::files", "navarch::sources::objects"],
    ),
    (
        "webhook",
        "Sidecar injection and validation webhooks.",
        &["navarch::webhook", "navarch::inject"],
    ),
    (
        "admin",
        "The debug, metrics and introspection servers.",
        &["navarch::admin", "navarch::ctrlz"],
    ),
];

/// Levels as istiod names them.
const LEVELS: [&str; 6] = ["none", "error", "warn", "info", "debug", "trace"];

/// One scope's state (`/debug/logging`'s JSON, ControlZ's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub output_level: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoggingError {
    #[error("unknown log scope {0:?}: use one of {scopes}", scopes = scope_names())]
    UnknownScope(String),
    #[error("unknown log level {0:?}: use none, error, warn, info, debug or trace")]
    UnknownLevel(String),
    #[error("`{0}`: write scope:level pairs separated by commas, e.g. ads:debug,model:info")]
    Syntax(String),
    #[error("logging is not initialised in this process")]
    NotInitialised,
}

fn scope_names() -> String {
    SCOPES.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
}

/// Parses `--log-output-level`: `scope:level,...`, a bare level setting `default`.
pub fn parse_levels(spec: &str) -> Result<BTreeMap<String, String>, LoggingError> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (scope, level) = match part.split_once(':') {
            Some((s, l)) => (s.trim(), l.trim()),
            None if LEVELS.contains(&part) => ("default", part),
            None => return Err(LoggingError::Syntax(part.to_string())),
        };
        check(scope, level)?;
        out.insert(scope.to_string(), level.to_string());
    }
    Ok(out)
}

fn check(scope: &str, level: &str) -> Result<(), LoggingError> {
    if !SCOPES.iter().any(|s| s.0 == scope) {
        return Err(LoggingError::UnknownScope(scope.to_string()));
    }
    if !LEVELS.contains(&level) {
        return Err(LoggingError::UnknownLevel(level.to_string()));
    }
    Ok(())
}

/// The EnvFilter directives for `levels` (scopes not given are at `default`'s level), after
/// `extra` (raw EnvFilter directives, `--log`).
pub fn directives(levels: &BTreeMap<String, String>, extra: &str) -> String {
    let level = |l: &str| {
        if l == "none" {
            "off".to_string()
        } else {
            l.to_string()
        }
    };
    let default = levels.get("default").map_or("info", String::as_str);
    let mut parts = vec![level(default)];
    if !extra.trim().is_empty() && extra.trim() != "info" {
        parts.push(extra.trim().to_string());
    }
    for (name, _, targets) in SCOPES.iter().skip(1) {
        let l = levels.get(*name).map_or(default, String::as_str);
        for t in *targets {
            parts.push(format!("{t}={}", level(l)));
        }
    }
    parts.join(",")
}

struct Control {
    handle: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    levels: Mutex<BTreeMap<String, String>>,
    extra: String,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// Installs the global subscriber: `format` `json` or `text`, scope levels `levels`
/// (`--log-output-level`), `extra` EnvFilter directives (`--log`). A second call keeps the
/// first subscriber.
pub fn init(format: &str, levels: &str, extra: &str) -> Result<(), LoggingError> {
    let levels = parse_levels(levels)?;
    let filter =
        EnvFilter::try_new(directives(&levels, extra)).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if format == "json" {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    // Colours only on a terminal: piped logs stay plain text.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
    if installed.is_ok() {
        let _ = CONTROL.set(Control {
            handle,
            levels: Mutex::new(levels),
            extra: extra.to_string(),
        });
    }
    Ok(())
}

/// Every scope with its current level.
pub fn scopes() -> Vec<Scope> {
    let levels = CONTROL
        .get()
        .map(|c| c.levels.lock().expect("log levels lock").clone())
        .unwrap_or_default();
    let default = levels
        .get("default")
        .cloned()
        .unwrap_or_else(|| "info".into());
    SCOPES
        .iter()
        .map(|(name, description, _)| Scope {
            name: name.to_string(),
            description: description.to_string(),
            output_level: levels
                .get(*name)
                .cloned()
                .unwrap_or_else(|| default.clone()),
        })
        .collect()
}

/// Sets one scope's level, at once.
pub fn set_level(scope: &str, level: &str) -> Result<(), LoggingError> {
    check(scope, level)?;
    let c = CONTROL.get().ok_or(LoggingError::NotInitialised)?;
    let mut levels = c.levels.lock().expect("log levels lock");
    levels.insert(scope.to_string(), level.to_string());
    let filter = EnvFilter::try_new(directives(&levels, &c.extra))
        .map_err(|e| LoggingError::Syntax(e.to_string()))?;
    c.handle
        .reload(filter)
        .map_err(|_| LoggingError::NotInitialised)?;
    tracing::info!(scope, level, "log level changed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_levels_become_module_directives() {
        let levels = parse_levels("ads:debug,model:warn").unwrap();
        let d = directives(&levels, "info");
        assert!(d.starts_with("info,"), "{d}");
        assert!(d.contains("navarch::xds=debug"), "{d}");
        assert!(d.contains("navarch::model=warn"), "{d}");
        assert!(
            d.contains("navarch::translate=info"),
            "unset scopes follow default: {d}"
        );
        let quiet = directives(&parse_levels("none").unwrap(), "");
        assert!(quiet.starts_with("off,"), "{quiet}");
    }

    #[test]
    fn bad_scopes_and_levels_say_what_to_write() {
        assert_eq!(
            parse_levels("adz:debug"),
            Err(LoggingError::UnknownScope("adz".into()))
        );
        assert_eq!(
            parse_levels("ads:loud"),
            Err(LoggingError::UnknownLevel("loud".into()))
        );
        assert!(
            LoggingError::UnknownScope("x".into())
                .to_string()
                .contains("ads, model")
        );
    }
}
