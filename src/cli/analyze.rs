//! `navarch analyze`: istioctl analyze's interface over files (`-f`, `-R`): the documents are
//! read as the file source reads them, analyzed by `analysis`, and printed as istioctl prints
//! them (`-o log|json|yaml`), with `--suppress`, the output and failure thresholds and exit
//! code 79 when a message at or above the failure threshold remains.
//!
//! Owns reading files (with each document's line) and printing. The checks are `analysis`'s.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::analysis::{self, Level, Locations, Message, Objects};
use crate::model::config::ConfigError;
use crate::model::mesh::MeshConfig;
use crate::sources::objects::{ObjectSet, Origin};

/// istioctl's exit code when analysis found a message at or above the failure threshold.
pub const ANALYZE_FAILURE: u8 = 79;

#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Files or directories to analyze (repeatable; `-` is not supported).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// Descend into the directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Analyze the cluster's objects too (istioctl's default when a kubeconfig is found).
    #[arg(long = "use-kube", num_args = 0..=1, default_missing_value = "true")]
    pub use_kube: Option<bool>,
    /// The cluster's kubeconfig with --use-kube (default: $KUBECONFIG, ~/.kube/config, or
    /// in-cluster).
    #[arg(short = 'c', long)]
    pub kubeconfig: Option<PathBuf>,
    /// Report on every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// The namespace to report on (objects without one are in it).
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// A MeshConfig file to analyze with (else the default mesh config).
    #[arg(long = "meshConfigFile")]
    pub mesh_config_file: Option<PathBuf>,
    /// log, json or yaml.
    #[arg(short = 'o', long = "output", default_value = "log", value_parser = ["log", "json", "yaml"])]
    pub output: String,
    /// Hide a message: `CODE=Kind name[.namespace]`, `*` matches anything (repeatable).
    #[arg(short = 'S', long)]
    pub suppress: Vec<String>,
    /// The lowest level printed: Info, Warning or Error.
    #[arg(long = "output-threshold", default_value = "Info")]
    pub output_threshold: String,
    /// The lowest level that makes the exit code 79.
    #[arg(long = "failure-threshold", default_value = "Error")]
    pub failure_threshold: String,
}

/// Runs `navarch analyze`; the exit code is istioctl's (0, 79, or 1 for a usage error).
pub fn run(args: AnalyzeArgs) -> ExitCode {
    match analyze(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn analyze(args: &AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let level = |flag: &str, word: &str| {
        Level::parse(word).with_context(|| format!("{flag} {word:?}: use Info, Warning or Error"))
    };
    let output_threshold = level("--output-threshold", &args.output_threshold)?;
    let failure_threshold = level("--failure-threshold", &args.failure_threshold)?;
    let suppressions = args
        .suppress
        .iter()
        .map(|s| Suppression::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let use_kube = args.use_kube.unwrap_or_else(kubeconfig_found);
    if args.files.is_empty() && !use_kube {
        bail!("nothing to analyze: give files or directories with -f, or a cluster (--use-kube)");
    }
    let mesh = match &args.mesh_config_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))
                .and_then(|t| {
                    MeshConfig::from_yaml(&t).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
                })?,
        ),
        None => None,
    };
    let mut input = Input::default();
    for path in files(&args.files, args.recursive)? {
        input.read(&path, &args.namespace);
    }
    if use_kube {
        let cluster =
            crate::cli::runtime()?.block_on(cluster_documents(args.kubeconfig.as_deref()))?;
        input.add_cluster(cluster);
    }
    let Input {
        set,
        objects,
        locations,
    } = input;
    // The model refuses a VirtualService whose subsets no DestinationRule defines (IST0101,
    // from its error); the other checks still look at it, as istioctl's do.
    let mut virtual_services = set.store.virtual_services.clone();
    let mut store = set.into_store("istio-system", mesh.as_ref());
    virtual_services.sort_by(crate::model::config::istio_order);
    store.virtual_services = virtual_services;
    let messages: Vec<Message> = analysis::analyze(&store, &objects, &locations)
        .into_iter()
        .filter(|m| {
            args.all_namespaces
                || m.resource
                    .as_ref()
                    .is_none_or(|r| r.namespace.is_empty() || r.namespace == args.namespace)
        })
        .filter(|m| !suppressions.iter().any(|s| s.hides(m)))
        .collect();
    let failed = messages.iter().any(|m| m.kind.level >= failure_threshold);
    let shown: Vec<&Message> = messages
        .iter()
        .filter(|m| m.kind.level >= output_threshold)
        .collect();
    match args.output.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&as_json(&shown))?),
        "yaml" => print!("{}", serde_saphyr::to_string(&as_json(&shown))?),
        _ if shown.is_empty() => {
            let scope = if args.all_namespaces {
                "all namespaces".to_string()
            } else {
                format!("namespace: {}", args.namespace)
            };
            eprintln!("\u{2714} No validation issues found when analyzing {scope}.");
        }
        _ => {
            for m in &shown {
                println!("{}", m.log_line());
            }
        }
    }
    Ok(if failed {
        ExitCode::from(ANALYZE_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

/// Whether istioctl would find a cluster to analyze: `KUBECONFIG`, `~/.kube/config`, or the
/// in-cluster environment.
fn kubeconfig_found() -> bool {
    std::env::var_os("KUBECONFIG").is_some_and(|k| !k.is_empty())
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("HOME").is_some_and(|h| Path::new(&h).join(".kube/config").is_file())
}

/// The files of `paths`: files as given, the config files of directories (their
/// subdirectories too with `recursive`), each once, in order.
fn files(paths: &[PathBuf], recursive: bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = if recursive {
                crate::sources::files::config_files(std::slice::from_ref(p))?
            } else {
                std::fs::read_dir(p)
                    .with_context(|| format!("reading {}", p.display()))?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|f| f.is_file() && crate::sources::files::is_config_file(f))
                    .collect()
            };
            found.sort();
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    out.dedup();
    Ok(out)
}

/// What analysis reads: the documents for the model, the same documents as given, and where
/// each stands.
#[derive(Default)]
struct Input {
    set: ObjectSet,
    objects: Objects,
    locations: Locations,
}

impl Input {
    /// Reads one file's documents, each with the line it starts on; a document that does not
    /// parse becomes an error of the set (analysis goes on with the others).
    fn read(&mut self, path: &Path, namespace: &str) {
        let Input {
            set,
            objects,
            locations,
        } = self;
        let source = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                set.store.errors.push(ConfigError::file(
                    &source,
                    None,
                    format!("cannot read: {e}"),
                ));
                return;
            }
        };
        for (i, (line, doc)) in documents(&text).into_iter().enumerate() {
            locations.documents.insert((source.clone(), i), line);
            let value: Value = match serde_saphyr::from_str::<Value>(doc) {
                Ok(v) => v,
                Err(e) => {
                    set.store.errors.push(ConfigError::file(
                        &source,
                        Some(i),
                        format!("not valid YAML: {e}"),
                    ));
                    continue;
                }
            };
            let value = with_namespace(value, namespace);
            let items = match value.get("kind").and_then(Value::as_str) {
                Some("List") => value["items"].as_array().cloned().unwrap_or_default(),
                _ => vec![value.clone()],
            };
            for item in &items {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                let meta = &item["metadata"];
                locations.objects.insert(
                    (s(&item["kind"]), s(&meta["namespace"]), s(&meta["name"])),
                    format!("{source}:{line}"),
                );
            }
            let origin = Origin {
                source: source.clone(),
                document: Some(i),
            };
            objects.add(value.clone());
            set.add_document(&origin, value);
        }
    }

    /// The cluster's objects, except those a file given with -f defines too (the file's wins:
    /// istioctl analyzes files as changes to the cluster). The files' objects are those with a
    /// place in a file.
    fn add_cluster(&mut self, documents: Vec<Value>) {
        let key = |v: &Value| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&v["kind"]),
                s(&v["metadata"]["namespace"]),
                s(&v["metadata"]["name"]),
            )
        };
        let origin = Origin {
            source: "cluster".into(),
            document: None,
        };
        for value in documents
            .into_iter()
            .filter(|v| !self.locations.objects.contains_key(&key(v)))
        {
            self.objects.add(value.clone());
            self.set.add_document(&origin, value);
        }
    }
}

/// The kinds `--use-kube` reads: `(apiVersion, kind, plural)`. Istio kinds whose
/// CRD is not installed are skipped.
const CLUSTER_KINDS: [(&str, &str, &str); 22] = [
    ("v1", "Namespace", "namespaces"),
    ("v1", "Service", "services"),
    ("v1", "Pod", "pods"),
    ("v1", "ConfigMap", "configmaps"),
    ("v1", "Secret", "secrets"),
    ("discovery.k8s.io/v1", "EndpointSlice", "endpointslices"),
    ("apps/v1", "Deployment", "deployments"),
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
    ),
    (
        "networking.istio.io/v1",
        "VirtualService",
        "virtualservices",
    ),
    (
        "networking.istio.io/v1",
        "DestinationRule",
        "destinationrules",
    ),
    ("networking.istio.io/v1", "Gateway", "gateways"),
    ("networking.istio.io/v1", "ServiceEntry", "serviceentries"),
    ("networking.istio.io/v1", "Sidecar", "sidecars"),
    ("networking.istio.io/v1", "WorkloadEntry", "workloadentries"),
    (
        "networking.istio.io/v1alpha3",
        "EnvoyFilter",
        "envoyfilters",
    ),
    (
        "security.istio.io/v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    ),
    (
        "security.istio.io/v1",
        "PeerAuthentication",
        "peerauthentications",
    ),
    (
        "security.istio.io/v1",
        "RequestAuthentication",
        "requestauthentications",
    ),
    ("telemetry.istio.io/v1", "Telemetry", "telemetries"),
    ("networking.istio.io/v1", "WorkloadGroup", "workloadgroups"),
    ("networking.istio.io/v1beta1", "ProxyConfig", "proxyconfigs"),
];

/// Every object of [`CLUSTER_KINDS`] in the cluster, as documents (`apiVersion` and `kind`
/// set, which list items lack).
async fn cluster_documents(kubeconfig: Option<&Path>) -> anyhow::Result<Vec<Value>> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
    let client = crate::install::cluster::client(kubeconfig)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (or analyze files only with --use-kube=false)"))?;
    let mut out = Vec::new();
    for (api_version, kind, plural) in CLUSTER_KINDS {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            // The kind's CRD is not installed: nothing of it to analyze.
            Err(kube::Error::Api(e)) if e.code == 404 && !group.is_empty() && group != "apps" => {
                tracing::debug!(kind, "not served by this cluster");
                continue;
            }
            Err(e) => bail!(
                "listing {kind} objects in the cluster: {e}; check the kubeconfig (-c/--kubeconfig, KUBECONFIG) or analyze files only with --use-kube=false"
            ),
        };
        for item in list.items {
            let mut value = serde_json::to_value(&item)?;
            value["apiVersion"] = api_version.into();
            value["kind"] = kind.into();
            if let Some(meta) = value["metadata"].as_object_mut() {
                meta.remove("managedFields");
            }
            out.push(value);
        }
    }
    Ok(out)
}

/// An object without a namespace is in the analyzed one (istioctl's `-n`); cluster-scoped
/// kinds keep none.
fn with_namespace(mut v: Value, namespace: &str) -> Value {
    const CLUSTER_SCOPED: [&str; 4] = [
        "Namespace",
        "CustomResourceDefinition",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind == "List" {
        if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
            for item in items.iter_mut() {
                *item = with_namespace(item.take(), namespace);
            }
        }
        return v;
    }
    if !CLUSTER_SCOPED.contains(&kind)
        && let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut)
        && meta
            .get("namespace")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        meta.insert("namespace".into(), namespace.into());
    }
    v
}

/// The YAML documents of `text` (split at `---` lines), each with the line its content starts
/// on; empty documents are left out.
fn documents(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---#") {
            out.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = n + 2;
        }
        offset += line.len();
    }
    out.push((start_line, &text[start..]));
    out.into_iter()
        .filter(|(_, d)| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|(line, d)| {
            // The first line with content, not a comment above it.
            let skip = d
                .lines()
                .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
                .count();
            (line + skip, d)
        })
        .collect()
}

/// istioctl's JSON (and YAML) rows.
fn as_json(messages: &[&Message]) -> Value {
    Value::Array(messages.iter().map(|m| m.to_json()).collect())
}

/// One `--suppress CODE=Kind name[.namespace]`, `*` a wildcard in either part.
struct Suppression {
    code: String,
    resource: String,
}

impl Suppression {
    fn parse(s: &str) -> anyhow::Result<Suppression> {
        let (code, resource) = s.split_once('=').with_context(|| {
            format!("--suppress {s:?}: write it as CODE=Kind name[.namespace], e.g. \"IST0102=Namespace frod\"")
        })?;
        Ok(Suppression {
            code: code.trim().to_string(),
            resource: resource.trim().to_string(),
        })
    }

    fn hides(&self, m: &Message) -> bool {
        let Some(r) = &m.resource else {
            return false;
        };
        let full = if r.namespace.is_empty() {
            format!("{} {}", r.kind, r.name)
        } else {
            format!("{} {}.{}", r.kind, r.name, r.namespace)
        };
        glob(&self.code, m.kind.code) && glob(&self.resource, &full)
    }
}

/// `pattern` with `*` matching any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_start_on_their_first_line_of_content() {
        let text = "# header\napiVersion: v1\nkind: A\n---\n\n# about B\nkind: B\n---\n";
        let docs = documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].0, 2);
        assert_eq!(docs[1].0, 7);
    }

    #[test]
    fn suppressions_match_code_kind_name_and_namespace_with_wildcards() {
        assert!(glob("IST01*", "IST0102"));
        assert!(glob("Namespace *", "Namespace frod"));
        assert!(glob("Pod *.baz", "Pod web.baz"));
        assert!(!glob("Pod *.baz", "Pod web.qux"));
        assert!(glob("*", "anything"));
    }
}
