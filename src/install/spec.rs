//! The install configuration, as istioctl builds it: a profile (an IstioOperator spec
//! navarch ships), overlaid with `-f` IstioOperator files in order, then with `--set PATH=VALUE`
//! overrides. Every path is checked against the paths navarch knows ([`schema`]); an unknown
//! one is an error naming the path, where it came from and the nearest valid path.
//!
//! Owns the profiles, the overlay rule (objects merge, lists of named objects merge by `name`,
//! other lists are replaced), the `--set` syntax and the typed [`InstallSpec`] the manifest is
//! rendered from. Pure: no I/O beyond what the caller reads for it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::model::config::revision;
use crate::model::mesh::MeshConfig;

/// The profiles, as `istioctl profile list` shows them.
pub const PROFILES: [&str; 4] = ["default", "demo", "empty", "minimal"];

const DEFAULT_PROFILE: &str = include_str!("profiles/default.yaml");
const DEMO_PROFILE: &str = include_str!("profiles/demo.yaml");
const MINIMAL_PROFILE: &str = include_str!("profiles/minimal.yaml");
const EMPTY_PROFILE: &str = include_str!("profiles/empty.yaml");

/// What can be wrong with an install configuration.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("unknown profile {0:?}: choose one of {profiles}", profiles = PROFILES.join(", "))]
    UnknownProfile(String),
    #[error("{origin}: unknown path {path}{}", nearest.as_ref().map(|n| format!(" (did you mean {n}?)")).unwrap_or_default())]
    UnknownPath {
        origin: String,
        path: String,
        nearest: Option<String>,
    },
    #[error("--set {0:?}: expected PATH=VALUE, e.g. --set meshConfig.accessLogFile=/dev/stdout")]
    SetSyntax(String),
    #[error("{origin}: {path}: {message}")]
    Invalid {
        origin: String,
        path: String,
        message: String,
    },
    #[error("{origin}: {message}")]
    Document { origin: String, message: String },
}

/// The typed install configuration the manifest is rendered from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallSpec {
    /// The profile it was built from.
    pub profile: String,
    /// Image registry and repository prefix: the images are `{hub}/navarch:{tag}`.
    pub hub: String,
    pub tag: String,
    /// The control plane revision; empty for the default one.
    #[serde(default)]
    pub revision: String,
    /// The control plane's namespace.
    pub namespace: String,
    /// The mesh config, verbatim (it becomes the `istio` ConfigMap's `mesh`).
    #[serde(default)]
    pub mesh_config: Map<String, Value>,
    pub components: Components,
    /// Helm-style values, verbatim (the injector's ConfigMap carries them).
    #[serde(default)]
    pub values: Value,
    /// Who applies it: an IstioOperator's `metadata.name`, else `installed-state`.
    #[serde(skip)]
    pub owner: String,
    /// That IstioOperator's namespace, else the control plane's.
    #[serde(skip)]
    pub owner_namespace: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Components {
    pub base: Component,
    pub pilot: Component,
    #[serde(default)]
    pub ingress_gateways: Vec<GatewayComponent>,
    #[serde(default)]
    pub egress_gateways: Vec<GatewayComponent>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Component {
    pub enabled: bool,
    pub k8s: K8sSettings,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayComponent {
    pub name: String,
    pub enabled: bool,
    /// Where it runs; empty means the control plane's namespace.
    pub namespace: String,
    /// Its pods' labels (what Gateway resources select); istioctl's default is
    /// `app: <name>, istio: <name without "istio-">`.
    pub label: BTreeMap<String, String>,
    pub k8s: K8sSettings,
}

/// Kubernetes settings of a component (the `k8s` block of IstioOperator).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct K8sSettings {
    pub replica_count: Option<u32>,
    pub resources: Option<Value>,
    pub hpa_spec: Option<HpaSpec>,
    pub env: Vec<Value>,
    pub node_selector: Option<Value>,
    pub affinity: Option<Value>,
    pub tolerations: Option<Value>,
    pub pod_annotations: BTreeMap<String, String>,
    pub pod_disruption_budget: Option<Value>,
    pub readiness_probe: Option<Value>,
    pub security_context: Option<Value>,
    pub service: Option<Value>,
    pub service_annotations: BTreeMap<String, String>,
    pub strategy: Option<Value>,
    pub priority_class_name: Option<String>,
    pub image_pull_policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HpaSpec {
    pub min_replicas: Option<u32>,
    pub max_replicas: Option<u32>,
    pub metrics: Option<Value>,
}

impl InstallSpec {
    /// `default` for the unnamed revision, else the revision (what `istio.io/rev` says).
    pub fn revision_label(&self) -> &str {
        revision::label(&self.revision)
    }

    /// `base` for the default revision, `base-<revision>` otherwise (istiod's naming).
    pub fn revisioned(&self, base: &str) -> String {
        revision::named(base, &self.revision)
    }

    /// Where this revision's proxies get their config.
    pub fn xds_address(&self) -> String {
        revision::xds_address(&self.namespace, &self.revision)
    }

    /// The mesh config as the YAML the `istio` ConfigMap carries.
    pub fn mesh_yaml(&self) -> String {
        serde_saphyr::to_string(&Value::Object(self.mesh_config.clone()))
            .unwrap_or_else(|_| "{}\n".to_string())
    }

    /// The value at a dotted path of `values` (e.g. `global.logging.level`), if set.
    pub fn value(&self, path: &str) -> Option<&Value> {
        value_at(&self.values, path)
    }
}

/// The value at a dotted path of Helm-style `values` (`global.proxy.logLevel`), if set: what
/// the manifest and the injector read from the install's values.
pub fn value_at<'a>(values: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(values, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

/// Where one piece of the configuration came from, for error messages.
pub enum Source<'a> {
    /// An IstioOperator document (`-f FILE`, or the operator's resource).
    File { origin: &'a str, text: &'a str },
    /// An IstioOperator already read (the operator's watched resource).
    Object { origin: &'a str, doc: &'a Value },
    /// One `--set PATH=VALUE`.
    Set(&'a str),
}

/// Builds the install configuration: the profile named by the sources (`spec.profile` or
/// `--set profile=...`, the last one wins; `default` when none does), then each source in order.
pub fn build(sources: &[Source<'_>]) -> Result<InstallSpec, SpecError> {
    let mut overlays = Vec::new();
    let mut owner = None;
    for source in sources {
        let (origin, (spec, meta)) = match source {
            Source::File { origin, text } => (*origin, read_operator(origin, text)?),
            Source::Object { origin, doc } => (*origin, operator_spec(origin, doc)?),
            Source::Set(set) => {
                overlays.push(parse_set(set)?);
                continue;
            }
        };
        check_tree(origin, &spec)?;
        if meta.is_some() {
            owner = meta;
        }
        overlays.push(spec);
    }
    let profile = overlays
        .iter()
        .rev()
        .find_map(|o| o.get("profile").and_then(Value::as_str))
        .unwrap_or("default")
        .to_string();
    let mut tree = profile_tree(&profile)?;
    for overlay in overlays {
        overlay_into(&mut tree, overlay);
    }
    tree["profile"] = Value::String(profile);
    finish(tree, owner)
}

/// The spec of a profile, before any overlay: `default` is the base every other profile
/// overlays, as in istioctl.
pub fn profile_tree(profile: &str) -> Result<Value, SpecError> {
    let overlay = match profile {
        "default" => None,
        "demo" => Some(DEMO_PROFILE),
        "minimal" => Some(MINIMAL_PROFILE),
        "empty" => Some(EMPTY_PROFILE),
        other => return Err(SpecError::UnknownProfile(other.to_string())),
    };
    let origin = format!("profile {profile}");
    let (mut tree, _) = read_operator(&origin, DEFAULT_PROFILE)?;
    if let Some(text) = overlay {
        overlay_into(&mut tree, read_operator(&origin, text)?.0);
    }
    tree["tag"] = Value::String(env!("CARGO_PKG_VERSION").to_string());
    Ok(tree)
}

/// The `spec` of an IstioOperator document, and its `(name, namespace)` when it has a name.
fn read_operator(origin: &str, text: &str) -> Result<(Value, Option<(String, String)>), SpecError> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| SpecError::Document {
        origin: origin.to_string(),
        message: format!("not YAML: {e}"),
    })?;
    operator_spec(origin, &doc)
}

/// The `spec` of an IstioOperator object, and its `(name, namespace)` when it has a name.
fn operator_spec(
    origin: &str,
    doc: &Value,
) -> Result<(Value, Option<(String, String)>), SpecError> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind != "IstioOperator" {
        return Err(SpecError::Document {
            origin: origin.to_string(),
            message: format!(
                "kind {kind:?}: expected an IstioOperator (apiVersion install.istio.io/v1alpha1)"
            ),
        });
    }
    let meta = doc["metadata"]["name"].as_str().map(|name| {
        let ns = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or("istio-system");
        (name.to_string(), ns.to_string())
    });
    let spec = match doc.get("spec") {
        None | Some(Value::Null) => json!({}),
        Some(spec @ Value::Object(_)) => spec.clone(),
        Some(_) => {
            return Err(SpecError::Invalid {
                origin: origin.to_string(),
                path: "spec".into(),
                message: "must be a mapping".into(),
            });
        }
    };
    Ok((spec, meta))
}

fn finish(mut tree: Value, owner: Option<(String, String)>) -> Result<InstallSpec, SpecError> {
    let origin = "the merged configuration";
    if tree["revision"].as_str() == Some("default") {
        tree["revision"] = Value::String(String::new());
    }
    let mut spec: InstallSpec =
        serde_path_to_error::deserialize(&tree).map_err(|e| SpecError::Invalid {
            origin: origin.into(),
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    if !spec.revision.is_empty() && !is_dns_label(&spec.revision) {
        return Err(SpecError::Invalid {
            origin: origin.into(),
            path: "revision".into(),
            message: format!(
                "{:?} is not a valid revision: lower-case letters, digits and '-', at most 63, \
                 starting and ending with a letter or digit (e.g. canary, 1-24-0)",
                spec.revision
            ),
        });
    }
    let mesh_yaml = spec.mesh_yaml();
    if let Err(e) = MeshConfig::from_yaml(&mesh_yaml) {
        return Err(SpecError::Invalid {
            origin: origin.into(),
            path: "meshConfig".into(),
            message: e.to_string(),
        });
    }
    for gw in spec
        .components
        .ingress_gateways
        .iter_mut()
        .chain(spec.components.egress_gateways.iter_mut())
    {
        if gw.name.is_empty() {
            return Err(SpecError::Invalid {
                origin: origin.into(),
                path: "components.*Gateways".into(),
                message: "every gateway needs a name".into(),
            });
        }
        if gw.label.is_empty() {
            let short = gw.name.strip_prefix("istio-").unwrap_or(&gw.name);
            gw.label = BTreeMap::from([
                ("app".to_string(), gw.name.clone()),
                ("istio".to_string(), short.to_string()),
            ]);
        }
    }
    let (name, ns) = owner.unwrap_or_else(|| ("installed-state".into(), spec.namespace.clone()));
    spec.owner = name;
    spec.owner_namespace = ns;
    Ok(spec)
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Overlays `over` onto `base`: objects merge key by key; a list of named objects (gateways,
/// env) takes each overlay item into the item of the same `name`, or, for an item without a
/// name (`--set list[N]...`), into the item at its position; anything else is replaced.
pub fn overlay_into(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if !v.is_null() => overlay_into(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if named(b) && o.iter().all(Value::is_object) => {
            for (i, item) in o.into_iter().enumerate() {
                let target = match item.get("name") {
                    Some(name) => b.iter().position(|x| x.get("name") == Some(name)),
                    None => (i < b.len()).then_some(i),
                };
                match target {
                    Some(t) => overlay_into(&mut b[t], item),
                    None => b.push(item),
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn named(items: &[Value]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|i| i.get("name").is_some_and(Value::is_string))
}

// ---- paths ----

/// One step of a path: a key, a list index, or the list item with a given `name`.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    Named(String),
}

/// Splits `a.b[0].c`, `a.[name:x].c` and `a\.b` (a key with a dot) into steps.
fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut key = String::new();
    let mut chars = path.chars().peekable();
    let flush = |key: &mut String, steps: &mut Vec<Step>| {
        if !key.is_empty() {
            steps.push(Step::Key(std::mem::take(key)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                key.push('.');
                chars.next();
            }
            '.' => {
                if key.is_empty()
                    && !matches!(steps.last(), Some(Step::Index(_) | Step::Named(_)))
                    && chars.peek() != Some(&'[')
                {
                    return Err("empty path segment".into());
                }
                flush(&mut key, &mut steps);
            }
            '[' => {
                flush(&mut key, &mut steps);
                let inner: String = chars.by_ref().take_while(|c| *c != ']').collect();
                if let Some(name) = inner.strip_prefix("name:") {
                    steps.push(Step::Named(name.to_string()));
                } else {
                    let index = inner
                        .parse()
                        .map_err(|_| format!("[{inner}]: expected [N] or [name:NAME]"))?;
                    steps.push(Step::Index(index));
                }
            }
            c => key.push(c),
        }
    }
    flush(&mut key, &mut steps);
    if steps.is_empty() {
        return Err("empty path".into());
    }
    Ok(steps)
}

fn render_path(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&k.replace('.', "\\."));
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::Named(n) => out.push_str(&format!("[name:{n}]")),
        }
    }
    out
}

/// The kind of value a known path holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Leaf {
    Bool,
    Int,
    Str,
    /// Anything, including a structure navarch passes through as written.
    Any,
}

/// The known paths of an IstioOperator spec (`schema.yaml`, which says how to read it).
pub fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_saphyr::from_str(include_str!("schema.yaml")).expect("schema.yaml is valid YAML")
    })
}

fn leaf_of(schema: &Value) -> Option<Leaf> {
    match schema.as_str()? {
        "bool" => Some(Leaf::Bool),
        "int" => Some(Leaf::Int),
        "string" => Some(Leaf::Str),
        _ => Some(Leaf::Any),
    }
}

/// Walks `steps` down the schema: the leaf kind at the end (`Any` below an `any`), or the
/// error for the first step that is not known.
fn resolve(origin: &str, steps: &[Step]) -> Result<Option<Leaf>, SpecError> {
    let mut node = schema();
    for (i, step) in steps.iter().enumerate() {
        if let Some(leaf) = leaf_of(node) {
            if leaf == Leaf::Any {
                return Ok(Some(Leaf::Any));
            }
            return Err(unknown(origin, steps, i, None));
        }
        node = match (step, node) {
            (Step::Key(k), Value::Object(map)) => match map.get(k) {
                Some(next) => next,
                None => return Err(unknown(origin, steps, i, Some(map))),
            },
            (Step::Index(_) | Step::Named(_), Value::Array(items)) => &items[0],
            _ => return Err(unknown(origin, steps, i, None)),
        };
    }
    Ok(leaf_of(node))
}

/// The error for `steps[i]`: the nearest valid path replaces that step with the closest known
/// key at that level, keeping the rest when it is valid there.
fn unknown(
    origin: &str,
    steps: &[Step],
    i: usize,
    siblings: Option<&Map<String, Value>>,
) -> SpecError {
    let path = render_path(steps);
    let nearest = siblings.and_then(|map| {
        let Step::Key(wanted) = &steps[i] else {
            return None;
        };
        let best = map
            .keys()
            .min_by_key(|k| strsim::levenshtein(&k.to_lowercase(), &wanted.to_lowercase()))?;
        let mut fixed = steps.to_vec();
        fixed[i] = Step::Key(best.clone());
        if resolve("", &fixed).is_err() {
            fixed.truncate(i + 1);
        }
        Some(render_path(&fixed))
    });
    SpecError::UnknownPath {
        origin: origin.to_string(),
        path,
        nearest,
    }
}

/// Checks every path of a spec tree (from a file) against the schema.
fn check_tree(origin: &str, tree: &Value) -> Result<(), SpecError> {
    fn walk(origin: &str, steps: &mut Vec<Step>, value: &Value) -> Result<(), SpecError> {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    steps.push(Step::Key(k.clone()));
                    let leaf = resolve(origin, steps)?;
                    match leaf {
                        Some(Leaf::Any) => {}
                        Some(leaf) => check_leaf(origin, steps, leaf, v)?,
                        None => walk(origin, steps, v)?,
                    }
                    steps.pop();
                }
                Ok(())
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    steps.push(Step::Index(i));
                    resolve(origin, steps)?;
                    walk(origin, steps, item)?;
                    steps.pop();
                }
                Ok(())
            }
            Value::Null => Ok(()),
            _ => Err(SpecError::Invalid {
                origin: origin.to_string(),
                path: render_path(steps),
                message: "expected a mapping or a list here".into(),
            }),
        }
    }
    walk(origin, &mut Vec::new(), tree)
}

fn check_leaf(origin: &str, steps: &[Step], leaf: Leaf, value: &Value) -> Result<(), SpecError> {
    let ok = match leaf {
        Leaf::Bool => value.is_boolean(),
        Leaf::Int => value.is_u64() || value.is_i64(),
        Leaf::Str => value.is_string() || value.is_number(),
        Leaf::Any => true,
    } || value.is_null();
    if ok {
        return Ok(());
    }
    Err(SpecError::Invalid {
        origin: origin.to_string(),
        path: render_path(steps),
        message: format!("expected {}, got {value}", leaf_name(leaf)),
    })
}

fn leaf_name(leaf: Leaf) -> &'static str {
    match leaf {
        Leaf::Bool => "true or false",
        Leaf::Int => "an integer",
        Leaf::Str => "a string",
        Leaf::Any => "a value",
    }
}

/// `--set PATH=VALUE` as a spec overlay. The value is read by the path's kind: a string stays
/// a string (`--set tag=1.24`), a boolean or integer must be one, and below an `any` path it is
/// read as YAML would read a scalar.
fn parse_set(set: &str) -> Result<Value, SpecError> {
    let (path, raw) = set
        .split_once('=')
        .ok_or_else(|| SpecError::SetSyntax(set.to_string()))?;
    let origin = format!("--set {set}");
    let steps = parse_path(path.trim()).map_err(|message| SpecError::Invalid {
        origin: origin.clone(),
        path: path.to_string(),
        message,
    })?;
    let leaf = resolve(&origin, &steps)?;
    let value = match leaf {
        Some(Leaf::Str) => Value::String(raw.to_string()),
        Some(Leaf::Bool) => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(invalid_set(&origin, &steps, Leaf::Bool, raw)),
        },
        Some(Leaf::Int) => raw
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| invalid_set(&origin, &steps, Leaf::Int, raw))?,
        Some(Leaf::Any) => scalar(raw),
        None => {
            return Err(SpecError::Invalid {
                origin,
                path: render_path(&steps),
                message: "this path holds a structure; set one of the paths below it, or use -f"
                    .into(),
            });
        }
    };
    Ok(nest(&steps, value))
}

fn invalid_set(origin: &str, steps: &[Step], leaf: Leaf, raw: &str) -> SpecError {
    SpecError::Invalid {
        origin: origin.to_string(),
        path: render_path(steps),
        message: format!("expected {}, got {raw:?}", leaf_name(leaf)),
    }
}

fn scalar(raw: &str) -> Value {
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" | "~" => Value::Null,
        _ => raw
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| raw.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(raw.to_string())),
    }
}

/// The overlay that sets `value` at `steps`. A `[N]` step makes a list whose earlier items are
/// empty overlays; a `[name:X]` step makes the one item named X (lists of named items merge by
/// name).
fn nest(steps: &[Step], value: Value) -> Value {
    let Some((first, rest)) = steps.split_first() else {
        return value;
    };
    let inner = nest(rest, value);
    match first {
        Step::Key(k) => json!({ k.clone(): inner }),
        Step::Index(i) => {
            let mut items = vec![json!({}); *i];
            items.push(inner);
            Value::Array(items)
        }
        Step::Named(name) => {
            let mut item = inner;
            if let Value::Object(map) = &mut item {
                map.insert("name".into(), Value::String(name.clone()));
            }
            Value::Array(vec![item])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(list: &[&str]) -> Result<InstallSpec, SpecError> {
        let sources: Vec<Source> = list.iter().map(|s| Source::Set(s)).collect();
        build(&sources)
    }

    #[test]
    fn profiles_differ_in_the_components_and_mesh_istioctl_documents() {
        let spec = |p: &str| sets(&[&format!("profile={p}")]).unwrap();
        let default = spec("default");
        assert!(default.components.base.enabled && default.components.pilot.enabled);
        assert!(default.components.ingress_gateways[0].enabled);
        assert!(!default.components.egress_gateways[0].enabled);
        assert_eq!(default.namespace, "istio-system");
        assert_eq!(default.tag, env!("CARGO_PKG_VERSION"));
        let demo = spec("demo");
        assert!(demo.components.egress_gateways[0].enabled);
        assert_eq!(demo.mesh_config["accessLogFile"], "/dev/stdout");
        let minimal = spec("minimal");
        assert!(minimal.components.pilot.enabled);
        assert!(!minimal.components.ingress_gateways[0].enabled);
        let empty = spec("empty");
        assert!(!empty.components.base.enabled && !empty.components.pilot.enabled);
        assert_eq!(
            sets(&["profile=large"]).unwrap_err(),
            SpecError::UnknownProfile("large".into())
        );
    }

    #[test]
    fn the_seeds_set_flags_land_in_the_mesh_config() {
        let spec = sets(&[
            "profile=default",
            "meshConfig.accessLogFile=/dev/stdout",
            "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        ])
        .unwrap();
        assert_eq!(spec.mesh_config["accessLogFile"], "/dev/stdout");
        assert_eq!(
            spec.mesh_config["outboundTrafficPolicy"]["mode"],
            "REGISTRY_ONLY"
        );
        let mesh = MeshConfig::from_yaml(&spec.mesh_yaml()).unwrap();
        assert_eq!(mesh.access_log_file, "/dev/stdout");
        assert_eq!(mesh.root_namespace, "istio-system", "profile defaults kept");
    }

    #[test]
    fn unknown_set_paths_name_the_path_and_the_nearest_valid_one() {
        let err = |s: &str| sets(&[s]).unwrap_err().to_string();
        assert_eq!(
            err("meshConfig.accesLogFile=/dev/stdout"),
            "--set meshConfig.accesLogFile=/dev/stdout: unknown path meshConfig.accesLogFile \
             (did you mean meshConfig.accessLogFile?)"
        );
        assert_eq!(
            err("meshconfig.outboundTrafficPolicy.mode=ALLOW_ANY"),
            "--set meshconfig.outboundTrafficPolicy.mode=ALLOW_ANY: unknown path \
             meshconfig.outboundTrafficPolicy.mode (did you mean \
             meshConfig.outboundTrafficPolicy.mode?)"
        );
        assert!(
            err("components.pilot.k8s.replicas=2")
                .ends_with("(did you mean components.pilot.k8s.replicaCount?)"),
        );
        assert!(
            err("values.global.proxy.loglevel=debug")
                .ends_with("(did you mean values.global.proxy.logLevel?)")
        );
        assert!(err("components.pilot.enabled=yes").contains("expected true or false"));
        assert!(err("meshConfig=x").contains("holds a structure"));
        assert!(err("nonsense").contains("expected PATH=VALUE"));
        assert!(
            err("meshConfig.outboundTrafficPolicy.mode=SOMETIMES").contains("meshConfig"),
            "a value our mesh config parser refuses is refused here"
        );
    }

    #[test]
    fn set_reaches_list_items_by_index_and_by_name_and_free_form_maps() {
        let spec = sets(&[
            "components.egressGateways[0].enabled=true",
            "components.ingressGateways[name:istio-ingressgateway].k8s.replicaCount=3",
            "values.pilot.env.PILOT_TRACE_SAMPLING=100",
            "tag=1.24",
            "revision=canary",
        ])
        .unwrap();
        assert!(spec.components.egress_gateways[0].enabled);
        assert_eq!(
            spec.components.egress_gateways[0].name,
            "istio-egressgateway"
        );
        assert_eq!(
            spec.components.ingress_gateways[0].k8s.replica_count,
            Some(3)
        );
        assert_eq!(
            spec.value("pilot.env.PILOT_TRACE_SAMPLING"),
            Some(&json!(100))
        );
        assert_eq!(spec.tag, "1.24", "a string path keeps the text");
        assert_eq!(spec.revisioned("istiod"), "istiod-canary");
        assert_eq!(spec.revision_label(), "canary");
        assert!(sets(&["revision=Canary_1"]).is_err());
        assert_eq!(sets(&["revision=default"]).unwrap().revision, "");
    }

    #[test]
    fn operator_files_overlay_the_profile_and_the_sets_overlay_the_files() {
        let file = "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\n\
                    metadata:\n  name: example-istiocontrolplane\n  namespace: istio-system\n\
                    spec:\n  profile: demo\n  meshConfig:\n    accessLogFile: /tmp/a.log\n\
                    \x20 components:\n    egressGateways:\n    - name: istio-egressgateway\n\
                    \x20     enabled: false\n    - name: extra-egress\n      enabled: true\n";
        let spec = build(&[
            Source::File {
                origin: "op.yaml",
                text: file,
            },
            Source::Set("meshConfig.accessLogFile=/dev/stdout"),
        ])
        .unwrap();
        assert_eq!(spec.profile, "demo");
        assert_eq!(spec.mesh_config["accessLogFile"], "/dev/stdout");
        let egress: Vec<(&str, bool)> = spec
            .components
            .egress_gateways
            .iter()
            .map(|g| (g.name.as_str(), g.enabled))
            .collect();
        assert_eq!(
            egress,
            [("istio-egressgateway", false), ("extra-egress", true)]
        );
        assert_eq!(
            spec.components.egress_gateways[1].label["istio"],
            "extra-egress"
        );
        assert_eq!(spec.owner, "example-istiocontrolplane");
        let typo = file.replace("accessLogFile: /tmp/a.log", "acessLogFile: /tmp/a.log");
        assert_eq!(
            build(&[Source::File {
                origin: "op.yaml",
                text: &typo
            }])
            .unwrap_err()
            .to_string(),
            "op.yaml: unknown path meshConfig.acessLogFile (did you mean meshConfig.accessLogFile?)"
        );
        let wrong_kind = "apiVersion: v1\nkind: ConfigMap\n";
        assert!(
            build(&[Source::File {
                origin: "cm.yaml",
                text: wrong_kind
            }])
            .unwrap_err()
            .to_string()
            .contains("expected an IstioOperator")
        );
    }

    #[test]
    fn paths_parse_escapes_indexes_and_names() {
        assert_eq!(
            parse_path(r"values.gateways.istio-ingressgateway.podAnnotations.a\.b/c").unwrap(),
            [
                Step::Key("values".into()),
                Step::Key("gateways".into()),
                Step::Key("istio-ingressgateway".into()),
                Step::Key("podAnnotations".into()),
                Step::Key("a.b/c".into()),
            ]
        );
        assert_eq!(
            parse_path("components.ingressGateways.[name:x].enabled").unwrap(),
            parse_path("components.ingressGateways[name:x].enabled").unwrap()
        );
        assert!(parse_path("a..b").is_err());
        assert!(parse_path("a[x]").is_err());
    }
}
