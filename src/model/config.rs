//! Istio configuration objects as stored in a snapshot: kind, metadata and typed spec, plus the
//! errors found while reading them.
//!
//! Owns the "which object, from where" vocabulary shared by every source. No parsing here; the
//! sources produce these values and the model only stores them.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// istiod's naming of a control plane revision: `""` and `default` are the default one.
pub mod revision {
    fn is_default(revision: &str) -> bool {
        revision.is_empty() || revision == "default"
    }

    /// What `istio.io/rev` says: `default`, or the revision.
    pub fn label(revision: &str) -> &str {
        if is_default(revision) {
            "default"
        } else {
            revision
        }
    }

    /// `base` for the default revision, `base-<revision>` otherwise (`istiod-canary`,
    /// `istio-canary`, `istio-sidecar-injector-canary`, ...).
    pub fn named(base: &str, revision: &str) -> String {
        if is_default(revision) {
            base.to_string()
        } else {
            format!("{base}-{revision}")
        }
    }

    /// Where a revision's proxies get their config: its `istiod` Service's plaintext xDS port.
    pub fn xds_address(namespace: &str, revision: &str) -> String {
        format!("{}.{namespace}.svc:15010", named("istiod", revision))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_default_revision_is_unnamed_and_others_suffix_every_name() {
            for default in ["", "default"] {
                assert_eq!(super::named("istiod", default), "istiod");
                assert_eq!(super::label(default), "default");
            }
            assert_eq!(super::named("istio", "canary"), "istio-canary");
            assert_eq!(super::label("canary"), "canary");
            assert_eq!(
                super::xds_address("istio-system", "canary"),
                "istiod-canary.istio-system.svc:15010"
            );
        }
    }
}

/// The Istio kinds navarch reads (networking.istio.io, v1alpha3 / v1beta1 / v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ConfigKind {
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
    EnvoyFilter,
}

impl ConfigKind {
    pub const ALL: [ConfigKind; 7] = [
        ConfigKind::VirtualService,
        ConfigKind::DestinationRule,
        ConfigKind::Gateway,
        ConfigKind::ServiceEntry,
        ConfigKind::Sidecar,
        ConfigKind::WorkloadEntry,
        ConfigKind::EnvoyFilter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::VirtualService => "VirtualService",
            ConfigKind::DestinationRule => "DestinationRule",
            ConfigKind::Gateway => "Gateway",
            ConfigKind::ServiceEntry => "ServiceEntry",
            ConfigKind::Sidecar => "Sidecar",
            ConfigKind::WorkloadEntry => "WorkloadEntry",
            ConfigKind::EnvoyFilter => "EnvoyFilter",
        }
    }

    pub fn from_kind(kind: &str) -> Option<Self> {
        ConfigKind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl fmt::Display for ConfigKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Metadata of one stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigMeta {
    pub kind: ConfigKind,
    /// The apiVersion it was written in (e.g. `networking.istio.io/v1alpha3`).
    pub api_version: String,
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 creation time when known; older objects win conflicts, as in Istio.
    pub creation_timestamp: Option<String>,
    pub resource_version: Option<String>,
    /// Where it came from: a file path, or `kubernetes`.
    pub source: String,
}

impl ConfigMeta {
    /// `namespace/name`
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A typed Istio object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config<T> {
    pub meta: ConfigMeta,
    pub spec: T,
}

/// Orders objects as Istio does when several apply: oldest first, then namespace/name.
/// A document's string map (`metadata.labels`, `metadata.annotations`): the string values of
/// a JSON object; anything else is empty.
pub fn string_map(v: &serde_json::Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn istio_order<T, C: std::ops::Deref<Target = Config<T>>>(a: &C, b: &C) -> std::cmp::Ordering {
    let ts = |c: &Config<T>| c.meta.creation_timestamp.clone().unwrap_or_default();
    ts(a)
        .cmp(&ts(b))
        .then_with(|| a.meta.namespace.cmp(&b.meta.namespace))
        .then_with(|| a.meta.name.cmp(&b.meta.name))
}

/// A document that could not be read or validated. It names everything a user needs to find
/// the mistake: the file, the kind, namespace/name and the offending field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct ConfigError {
    /// File path (or `kubernetes` for cluster objects).
    pub source: String,
    /// Index of the document in its file (0-based), when the file holds several.
    pub document: Option<usize>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Field path such as `spec.http[0].route[1].weight`, when known.
    pub field: Option<String>,
    pub message: String,
    /// What the object names that does not exist, when that is the error (istioctl's
    /// IST0101).
    pub missing: Option<MissingReference>,
}

impl ConfigError {
    /// An error about a file, or one of its documents, that names no object (it could not be
    /// read or parsed).
    pub fn file(source: &str, document: Option<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            source: source.to_string(),
            document,
            kind: None,
            namespace: None,
            name: None,
            field: None,
            message: message.into(),
            missing: None,
        }
    }
}

/// A reference to an object that does not exist: what kind of thing (`host+subset in
/// destinationrule`, istioctl's words) and the value that names it (`httpbin+v3`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct MissingReference {
    pub what: String,
    pub value: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(d) = self.document {
            write!(f, " (document {})", d + 1)?;
        }
        if let Some(kind) = &self.kind {
            write!(f, ": {kind}")?;
        }
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => write!(f, " {ns}/{name}")?,
            (None, Some(name)) => write!(f, " {name}")?,
            _ => {}
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}
