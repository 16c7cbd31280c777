//! The typed Istio networking API (`networking.istio.io`, reference Istio 1.24).
//!
//! Owns the Rust model of the *spec* of Istio's networking resources —
//! [`VirtualService`], [`DestinationRule`], [`Sidecar`], [`ServiceEntry`],
//! [`Gateway`] and [`WorkloadEntry`] — with serde mappings that follow the
//! Kubernetes/protobuf JSON field names (`camelCase`, enums as their
//! `UPPER_CASE` names), and the semantic validation istiod applies to them
//! (`validate()` on each top-level spec, returning [`ValidationError`]s whose
//! `field` is a path such as `spec.http[0].route[1].weight`).
//!
//! Modelling conventions:
//! * proto3 scalars are plain Rust values (`String`, `u32`, `bool`, ...) that
//!   default to the zero value and are omitted when serializing if zero;
//! * wrapper types (`UInt32Value`, `BoolValue`, `DoubleValue`) and members of
//!   a proto `oneof` are `Option`s, so presence is kept;
//! * messages are `Option<T>`, repeated fields `Vec<T>`, maps `BTreeMap`s
//!   (so serialization and validation order are deterministic);
//! * `google.protobuf.Duration` is [`crate::model::duration::Duration`];
//! * an explicit `null` reads as the field's default, as in protobuf JSON;
//! * unknown fields are ignored, never rejected.
//!
//! This module must stay pure data: no I/O, and it must not import tonic,
//! kube or Envoy types. Translating these types to xDS, or reading them from
//! Kubernetes, belongs elsewhere.

use std::fmt;

pub mod common;
pub mod destination_rule;
pub mod gateway;
pub mod headers;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;
pub mod workload_entry;

pub use destination_rule::DestinationRule;
pub use gateway::Gateway;
pub use service_entry::ServiceEntry;
pub use sidecar::Sidecar;
pub use virtual_service::VirtualService;
pub use workload_entry::WorkloadEntry;

/// One problem found by a spec's `validate()`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ValidationError {
    /// Path of the offending field, always starting with `spec.`, using
    /// the API's JSON names, `[i]` for list items and `["key"]` for map
    /// entries, e.g. `spec.http[0].route[1].weight` or
    /// `spec.http[0].match[0].headers["x-user"]`.
    pub field: String,
    /// What is wrong, in istiod's words where it has some.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// A field path under construction while validating.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldPath(String);

impl FieldPath {
    /// The root every path starts from.
    fn spec() -> Self {
        FieldPath("spec".to_owned())
    }

    /// The path of a named field below this one.
    fn field(&self, name: &str) -> Self {
        FieldPath(format!("{}.{name}", self.0))
    }

    /// The path of a list item below this one.
    fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{i}]", self.0))
    }

    /// The path of a map entry below this one.
    fn key(&self, key: &str) -> Self {
        FieldPath(format!("{}[{key:?}]", self.0))
    }
}

/// Collects validation errors.
#[derive(Debug, Default)]
struct Errors(Vec<ValidationError>);

impl Errors {
    /// Records that the field at `at` is wrong.
    fn add(&mut self, at: &FieldPath, message: impl Into<String>) {
        self.0.push(ValidationError {
            field: at.0.clone(),
            message: message.into(),
        });
    }

    /// Records `result`'s error, if any, against the field at `at`.
    fn check(&mut self, at: &FieldPath, result: Result<(), String>) {
        if let Err(message) = result {
            self.add(at, message);
        }
    }

    fn finish(self) -> Vec<ValidationError> {
        self.0
    }
}

/// Runs `validate` against a fresh collector rooted at `spec`.
fn validate_spec(validate: impl FnOnce(&FieldPath, &mut Errors)) -> Vec<ValidationError> {
    let mut errs = Errors::default();
    validate(&FieldPath::spec(), &mut errs);
    errs.finish()
}

/// Helpers shared by the spec modules' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::fmt::Debug;

    use serde::{Deserialize, Serialize, de::DeserializeOwned};

    use super::{
        DestinationRule, Gateway, ServiceEntry, Sidecar, ValidationError, VirtualService,
        WorkloadEntry,
    };

    /// A spec type: what the tests of every spec module check alike.
    pub trait Spec: Serialize + DeserializeOwned + PartialEq + Debug {
        /// The spec's own `validate`.
        fn validate(&self) -> Vec<ValidationError>;
    }

    /// Implements [`Spec`] for each type by its inherent `validate`.
    macro_rules! specs {
        ($($spec:ty),*) => {
            $(impl Spec for $spec {
                fn validate(&self) -> Vec<ValidationError> {
                    <$spec>::validate(self)
                }
            })*
        };
    }

    specs!(
        VirtualService,
        DestinationRule,
        Gateway,
        ServiceEntry,
        Sidecar,
        WorkloadEntry
    );

    /// The `spec` of a whole Kubernetes object written in YAML.
    pub fn parse_object<T: DeserializeOwned>(yaml: &str) -> T {
        #[derive(Deserialize)]
        struct Resource<T> {
            spec: T,
        }
        serde_saphyr::from_str::<Resource<T>>(yaml)
            .unwrap_or_else(|e| panic!("parse failed: {e}\n{yaml}"))
            .spec
    }

    /// A bare spec (no object around it) written in YAML.
    pub fn parse_spec<T: DeserializeOwned>(yaml: &str) -> T {
        serde_saphyr::from_str::<T>(yaml).unwrap_or_else(|e| panic!("parse failed: {e}\n{yaml}"))
    }

    /// The spec validates without errors.
    pub fn assert_valid<T: Spec>(spec: &T) {
        let errs = spec.validate();
        assert!(errs.is_empty(), "unexpected errors: {errs:#?}");
    }

    /// The spec validates without errors and survives a JSON round trip.
    pub fn assert_valid_and_round_trips<T: Spec>(spec: &T) {
        assert_valid(spec);
        assert_json_round_trip(spec);
    }

    /// Serializing and parsing again yields the same value, through JSON
    /// and through YAML.
    pub fn assert_round_trip<T: Spec>(spec: &T) {
        assert_json_round_trip(spec);
        let yaml = serde_saphyr::to_string(spec).unwrap();
        assert_eq!(&serde_saphyr::from_str::<T>(&yaml).unwrap(), spec);
    }

    /// The field paths of validation errors, in order.
    pub fn fields(errs: &[ValidationError]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    /// Serializing to JSON and parsing again yields the same value.
    pub fn assert_json_round_trip<T>(value: &T)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let json = serde_json::to_string(value).unwrap();
        assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_render_like_json_paths() {
        let p = FieldPath::spec()
            .field("http")
            .index(0)
            .field("match")
            .index(2)
            .field("headers")
            .key("x-user");
        assert_eq!(p.0, r#"spec.http[0].match[2].headers["x-user"]"#);
    }

    #[test]
    fn validation_error_display() {
        let errs = validate_spec(|p, errs| {
            errs.add(&p.field("host"), "empty domain name not allowed");
            errs.check(&p.field("ok"), Ok(()));
        });
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "spec.host: empty domain name not allowed"
        );
        assert_eq!(
            serde_json::to_value(&errs[0]).unwrap(),
            serde_json::json!({"field": "spec.host", "message": "empty domain name not allowed"})
        );
    }
}
