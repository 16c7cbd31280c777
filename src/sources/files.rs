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
    FileCache::default().load(dirs)
}

/// Each file's objects as last read, by path, with the size and modification time they were
/// read at: a reload parses only files that changed (at 1000 services, re-reading every file
/// for each edit would dominate convergence).
#[derive(Debug, Default)]
pub struct FileCache {
    files: std::collections::HashMap<PathBuf, (FileStamp, ObjectSet)>,
}

impl FileCache {
    /// Every file under `dirs`, re-reading only new and changed ones; deleted files drop out.
    pub fn load(&mut self, dirs: &[PathBuf]) -> Result<ObjectSet, FileSourceError> {
        let paths = config_files(dirs)?;
        let mut fresh = std::collections::HashMap::with_capacity(paths.len());
        let mut set = ObjectSet::default();
        for path in paths {
            let stamp = FileStamp::of(&path);
            let objects = match self.files.remove(&path) {
                Some((old, objects)) if stamp.is_some() && old == stamp => objects,
                _ => read_file(&path),
            };
            set.merge(objects.clone());
            fresh.insert(path, (stamp, objects));
        }
        self.files = fresh;
        Ok(set)
    }
}

/// What identifies a file's content without reading it: modification time, size and inode
/// (editors and kubectl-like tools replace files by renaming, which changes the inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp(Option<(std::time::SystemTime, u64, u64)>);

impl FileStamp {
    fn of(path: &Path) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp(
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino()))),
        )
    }

    fn is_some(&self) -> bool {
        self.0.is_some()
    }
}

/// One file's documents as an [`ObjectSet`] (errors included).
fn read_file(path: &Path) -> ObjectSet {
    let mut set = ObjectSet::default();
    let source = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
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
            return set;
        }
    };
    match parse_documents(path, &text) {
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
    set
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
    let cache = std::sync::Arc::new(std::sync::Mutex::new(FileCache::default()));
    {
        // Seed the cache with what is there now, so the first change re-reads one file.
        let (dirs2, cache2) = (dirs.clone(), cache.clone());
        let _ = tokio::task::spawn_blocking(move || {
            cache2.lock().expect("file cache lock").load(&dirs2)
        })
        .await;
    }
    while rx.recv().await.is_some() {
        // Coalesce bursts.
        while let Ok(Some(())) = tokio::time::timeout(settle, rx.recv()).await {}
        let (dirs2, cache2) = (dirs.clone(), cache.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            cache2.lock().expect("file cache lock").load(&dirs2)
        })
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
