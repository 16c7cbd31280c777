//! The file source: Kubernetes-style YAML/JSON under one or more `--config-dir`s, read
//! recursively (multi-document files and `kind: List` included) and watched for changes.
//!
//! Owns reading and splitting files into documents; what a document means is
//! [`super::objects`]'s job. Any change reloads every directory: a full, consistent view is
//! cheap at file scale and never leaves stale objects behind.
//!
//! Hostile files cost one error each, never the source: a file larger than
//! [`MAX_FILE_BYTES`] is not read, a file that is not UTF-8 or not YAML/JSON is rejected whole,
//! and a parser that panics on some input rejects that file only.

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
    #[error("reading the config files {}", .0.as_deref().unwrap_or("was cancelled"))]
    Panicked(Option<String>),
}

/// Files larger than this are rejected unread (their objects are not served): Kubernetes keeps
/// each object under 1.5 MiB, so a config file this big is a mistake, and parsing it would hold
/// up every other file's changes.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The file extensions we read.
pub fn is_config_file(path: &Path) -> bool {
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

/// Splits one file's text into JSON documents; a syntax error fails the whole file, and so
/// does a parser panic (reported as an error of this file, never more).
pub fn parse_documents(path: &Path, text: &str) -> Result<Vec<Value>, Box<ConfigError>> {
    let is_json = path.extension().and_then(|e| e.to_str()) == Some("json");
    let parse = || -> Result<Vec<Value>, String> {
        if is_json {
            serde_json::from_str::<strict_json::Strict>(text)
                .map(|v| vec![v.0])
                .map_err(|e| e.to_string())
        } else {
            serde_saphyr::from_multiple::<Value>(text).map_err(|e| e.to_string())
        }
    };
    let parsed = std::panic::catch_unwind(parse).unwrap_or_else(|payload| {
        Err(format!(
            "the parser failed on this input ({})",
            crate::supervise::panic_message(&*payload)
        ))
    });
    parsed.map_err(|message| {
        Box::new(ConfigError::file(
            &path.display().to_string(),
            None,
            format!(
                "not valid {}: {message}",
                if is_json { "JSON" } else { "YAML" }
            ),
        ))
    })
}

/// JSON read like Kubernetes' strict decoding: a key given twice in one object is an error
/// (serde_json's `Value` would silently keep the last), as it is for YAML.
mod strict_json {
    use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Number, Value};

    pub struct Strict(pub Value);

    impl<'de> Deserialize<'de> for Strict {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(StrictVisitor).map(Strict)
        }
    }

    struct StrictVisitor;

    impl<'de> Visitor<'de> for StrictVisitor {
        type Value = Value;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
            Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_string()))
        }
        fn visit_string<E: Error>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E: Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E: Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            Strict::deserialize(d).map(|s| s.0)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut out = Vec::new();
            while let Some(Strict(v)) = seq.next_element()? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(A::Error::custom(format!("duplicate key {key:?}")));
                }
                let Strict(v) = map.next_value()?;
                out.insert(key, v);
            }
            Ok(Value::Object(out))
        }
    }
}

/// Reads every file under `dirs` into an [`ObjectSet`].
pub fn load_objects(dirs: &[PathBuf]) -> Result<ObjectSet, FileSourceError> {
    FileCache::default().load(dirs)
}

/// Reads every file under `dirs`; returns the objects and the cache that holds them (to seed
/// [`watch`] with).
pub fn load_cached(dirs: &[PathBuf]) -> Result<(ObjectSet, FileCache), FileSourceError> {
    let mut cache = FileCache::default();
    let set = cache.load(dirs)?;
    Ok((set, cache))
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
    let source = path.display().to_string();
    let file_error = |message: String| {
        let mut set = ObjectSet::default();
        set.store
            .errors
            .push(ConfigError::file(&source, None, message));
        set
    };
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_FILE_BYTES => {
            return file_error(format!(
                "file is {} bytes, more than the {MAX_FILE_BYTES} bytes navarch reads from one file; not read (split it into smaller files)",
                m.len()
            ));
        }
        _ => {}
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return file_error(format!("cannot read file: {e}")),
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
            return file_error(format!(
                "not UTF-8: invalid byte at offset {at} (line {line}); config files must be UTF-8"
            ));
        }
    };
    objects_from_text(path, &text)
}

/// The objects of one file's text (`path` names the file in errors and picks JSON or YAML).
pub fn objects_from_text(path: &Path, text: &str) -> ObjectSet {
    let mut set = ObjectSet::default();
    let source = path.display().to_string();
    match parse_documents(path, text) {
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
/// `settle` are coalesced so an editor's write-rename dance yields one reload); with
/// `send_first`, also once at the start (a restarted source: changes made while it was down).
/// Fails when a dir cannot be watched or read any more (it was removed).
///
/// `seed` is the cache the caller's first read filled (its parsed objects are what it already
/// holds): the watcher starts from it instead of parsing every file a second time.
pub async fn watch(
    dirs: Vec<PathBuf>,
    settle: Duration,
    updates: mpsc::Sender<ObjectSet>,
    send_first: bool,
    seed: Option<FileCache>,
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
    let cache = std::sync::Arc::new(std::sync::Mutex::new(seed.unwrap_or_default()));
    let load = |dirs: Vec<PathBuf>| {
        let cache = cache.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                // A panic while loading leaves a half-updated cache: start it over.
                let mut cache = cache.lock().unwrap_or_else(|e| {
                    let mut c = e.into_inner();
                    *c = FileCache::default();
                    c
                });
                cache.load(&dirs)
            })
            .await
            .map_err(|e| FileSourceError::Panicked(crate::supervise::join_error_cause(e)))?
        }
    };
    // Seed the cache with what is there now, so the first change re-reads one file.
    let first = load(dirs.clone()).await?;
    if send_first && updates.send(first).await.is_err() {
        return Ok(());
    }
    while rx.recv().await.is_some() {
        // Coalesce bursts.
        while let Ok(Some(())) = tokio::time::timeout(settle, rx.recv()).await {}
        let loaded = load(dirs.clone()).await;
        match loaded {
            Ok(objects) => {
                tracing::info!("config files changed; reloaded");
                if updates.send(objects).await.is_err() {
                    break;
                }
            }
            // A config dir that went away takes its watch with it: fail, so that the source is
            // restarted (and watches again) once the dir is back; the last good set stays
            // served meanwhile.
            Err(e) => return Err(e),
        }
    }
    drop(watcher);
    Ok(())
}
