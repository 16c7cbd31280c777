//! The file source: Kubernetes-style YAML/JSON under one or more `--config-dir`s, read
//! recursively (multi-document files and `kind: List` included) and watched for changes.
//!
//! Owns reading and splitting files into documents; what a document means is
//! [`super::objects`]'s job. Any change reloads every directory: a full, consistent view is
//! cheap at file scale and never leaves stale objects behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::model::config::ConfigError;
use crate::model::mesh::MeshConfig;
use crate::model::push_context::ConfigStore;
use crate::sources::objects::{ObjectSet, Origin};

/// Errors that stop the file source itself (not a bad document, which is only reported).
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error("config dir {0}: does not exist or is not a directory; pass an existing --config-dir")]
    NotADirectory(PathBuf),
    #[error("watching {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

/// The file extensions we read.
fn is_config_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// All config files under `dirs`, recursively, in a stable order.
pub fn config_files(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, FileSourceError> {
    let mut out = Vec::new();
    for dir in dirs {
        if !dir.is_dir() {
            return Err(FileSourceError::NotADirectory(dir.clone()));
        }
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name();
                // Editors' swap files and Kubernetes' ..data symlink dirs are skipped.
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                } else if is_config_file(&path) {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Splits one file's text into JSON documents; a syntax error fails the whole file.
pub fn parse_documents(path: &Path, text: &str) -> Result<Vec<Value>, Box<ConfigError>> {
    let is_json = path.extension().and_then(|e| e.to_str()) == Some("json");
    let parsed: Result<Vec<Value>, String> = if is_json {
        serde_json::from_str::<Value>(text)
            .map(|v| vec![v])
            .map_err(|e| e.to_string())
    } else {
        serde_saphyr::from_multiple::<Value>(text).map_err(|e| e.to_string())
    };
    parsed.map_err(|message| {
        Box::new(ConfigError {
            source: path.display().to_string(),
            document: None,
            kind: None,
            namespace: None,
            name: None,
            field: None,
            message: format!(
                "not valid {}: {message}",
                if is_json { "JSON" } else { "YAML" }
            ),
        })
    })
}

/// Reads every file under `dirs` into an [`ObjectSet`].
pub fn load_objects(dirs: &[PathBuf]) -> Result<ObjectSet, FileSourceError> {
    let mut set = ObjectSet::default();
    for path in config_files(dirs)? {
        let source = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                set.store.errors.push(ConfigError {
                    source,
                    document: None,
                    kind: None,
                    namespace: None,
                    name: None,
                    field: None,
                    message: format!("cannot read file: {e}"),
                });
                continue;
            }
        };
        match parse_documents(&path, &text) {
            Ok(docs) => {
                let many = docs.len() > 1;
                for (i, doc) in docs.into_iter().enumerate() {
                    let origin = Origin {
                        source: source.clone(),
                        document: many.then_some(i),
                    };
                    set.add_document(&origin, doc);
                }
            }
            Err(e) => set.store.errors.push(*e),
        }
    }
    Ok(set)
}

/// Loads `dirs` into a ConfigStore and logs every document error.
pub fn load_store(
    dirs: &[PathBuf],
    system_namespace: &str,
    mesh: Option<&MeshConfig>,
) -> Result<ConfigStore, FileSourceError> {
    let store = load_objects(dirs)?.into_store(system_namespace, mesh);
    for e in &store.errors {
        tracing::warn!(error = %e, "config rejected; fix the file, the rest is served");
    }
    Ok(store)
}

/// Watches `dirs` and sends a freshly read [`ObjectSet`] after every change (events closer than
/// `settle` are coalesced so an editor's write-rename dance yields one reload).
pub async fn watch(
    dirs: Vec<PathBuf>,
    settle: Duration,
    updates: mpsc::Sender<ObjectSet>,
) -> Result<(), FileSourceError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !ev.kind.is_access()
        {
            let _ = tx.send(());
        }
    })
    .map_err(|source| FileSourceError::Watch {
        path: PathBuf::new(),
        source,
    })?;
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .map_err(|source| FileSourceError::Watch {
                path: dir.clone(),
                source,
            })?;
    }
    while rx.recv().await.is_some() {
        // Coalesce bursts.
        while let Ok(Some(())) = tokio::time::timeout(settle, rx.recv()).await {}
        let dirs2 = dirs.clone();
        let loaded = tokio::task::spawn_blocking(move || load_objects(&dirs2))
            .await
            .expect("file loading task does not panic");
        match loaded {
            Ok(objects) => {
                tracing::info!("config files changed; reloaded");
                if updates.send(objects).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "reloading config files failed; keeping the last good set")
            }
        }
    }
    drop(watcher);
    Ok(())
}
