//! Installing navarch into a cluster, as `istioctl install` installs istiod: the
//! IstioOperator-shaped install configuration ([`spec`]: profiles, `-f` files, `--set`
//! overrides, checked against the paths navarch knows), the manifest it renders ([`manifest`]:
//! the CRDs, the control plane and the gateways, in apply order), the revision tags
//! ([`tag`]), the operator's own install ([`operator`]) and the cluster side of all of it
//! ([`cluster`]: server-side apply, prune, readiness, verify, uninstall).
//!
//! `spec`, `manifest`, `tag` and `operator` only compute: YAML in, objects out, no I/O.
//! `cluster` is the one place that talks to the API server; it never decides what an install
//! contains.

mod crds;

pub mod cluster;
pub mod manifest;
pub mod operator;
pub mod spec;
pub mod tag;

pub use crds::{crds, crds_yaml, istio_crds, istio_operator_crd};

/// Labels every installed object carries (istioctl's names), so that prune, uninstall and
/// `verify-install` find them again.
pub mod labels {
    /// Which part of the install an object belongs to: `Base`, `Pilot`, `IngressGateways`,
    /// `EgressGateways` (istioctl's component names).
    pub const COMPONENT: &str = "operator.istio.io/component";
    /// The control plane revision (`default` for the unnamed one).
    pub const REVISION: &str = "istio.io/rev";
    /// Who applied it: the IstioOperator's name, or `installed-state` for the CLI.
    pub const OWNING_RESOURCE: &str = "install.operator.istio.io/owning-resource";
    /// The namespace of that IstioOperator.
    pub const OWNING_RESOURCE_NAMESPACE: &str =
        "install.operator.istio.io/owning-resource-namespace";
    /// `Reconcile`: the installer owns the object.
    pub const MANAGED: &str = "operator.istio.io/managed";
    /// The navarch version that applied it.
    pub const VERSION: &str = "operator.istio.io/version";
    /// A revision tag's name (on its MutatingWebhookConfiguration).
    pub const TAG: &str = "istio.io/tag";
}

/// The field manager of every server-side apply navarch makes.
pub const FIELD_MANAGER: &str = "navarch-installer";
