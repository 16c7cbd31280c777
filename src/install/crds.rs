//! The CustomResourceDefinitions: the networking.istio.io kinds navarch serves, and every
//! other kind istiod watches (security, telemetry, extensions and the rest of networking), so
//! that Istio resources users already have apply to a cluster navarch runs in, and istiod can
//! run beside or instead of navarch (`navarch loadtest --control-plane istiod`). Kept in this
//! one place so `manifest generate`, the tests and users apply the same definitions.
//!
//! Only renders objects; applying them is the caller's job.

use serde_json::{Value, json};

use crate::sources::kube::ISTIO_NETWORKING_GROUP;

/// The served versions of every kind but EnvoyFilter, and the stored one (Istio's choice:
/// v1beta1 is stored so that clusters can move between Istio releases).
const VERSIONS: [&str; 3] = ["v1", "v1alpha3", "v1beta1"];
const STORAGE_VERSION: &str = "v1beta1";

struct CrdKind {
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    /// (column name, JSON path, type)
    columns: &'static [(&'static str, &'static str, &'static str)],
    versions: &'static [&'static str],
}

const KINDS: [CrdKind; 7] = [
    crd_kind(
        ISTIO_NETWORKING_GROUP,
        "DestinationRule",
        "destinationrules",
        &["dr"],
        &[("Host", ".spec.host", "string")],
        &VERSIONS,
    ),
    crd_kind(
        ISTIO_NETWORKING_GROUP,
        "EnvoyFilter",
        "envoyfilters",
        &[],
        &[],
        &["v1alpha3"],
    ),
    crd_kind(
        ISTIO_NETWORKING_GROUP,
        "Gateway",
        "gateways",
        &["gw"],
        &[],
        &VERSIONS,
    ),
    crd_kind(
        ISTIO_NETWORKING_GROUP,
        "ServiceEntry",
        "serviceentries",
        &["se"],
        &[
            ("Hosts", ".spec.hosts", "string"),
            ("Location", ".spec.location", "string"),
            ("Resolution", ".spec.resolution", "string"),
        ],
        &VERSIONS,
    ),
    crd_kind(
        ISTIO_NETWORKING_GROUP,
        "Sidecar",
        "sidecars",
        &[],
        &[],
        &VERSIONS,
    ),
    crd_kind(
        ISTIO_NETWORKING_GROUP,
        "VirtualService",
        "virtualservices",
        &["vs"],
        &[
            ("Gateways", ".spec.gateways", "string"),
            ("Hosts", ".spec.hosts", "string"),
        ],
        &VERSIONS,
    ),
    crd_kind(
        ISTIO_NETWORKING_GROUP,
        "WorkloadEntry",
        "workloadentries",
        &["we"],
        &[("Address", ".spec.address", "string")],
        &VERSIONS,
    ),
];

/// The kinds istiod (1.31) watches beyond the ones navarch serves, with the versions its
/// clients use (stored: v1beta1 where served, as for the networking kinds, else the first).
/// navarch does not read these.
const OTHER_ISTIO_KINDS: [CrdKind; 8] = [
    other(
        "security.istio.io",
        "AuthorizationPolicy",
        "authorizationpolicies",
        &["v1", "v1beta1"],
    ),
    other(
        "security.istio.io",
        "PeerAuthentication",
        "peerauthentications",
        &["v1", "v1beta1"],
    ),
    other(
        "security.istio.io",
        "RequestAuthentication",
        "requestauthentications",
        &["v1", "v1beta1"],
    ),
    other(
        "telemetry.istio.io",
        "Telemetry",
        "telemetries",
        &["v1", "v1alpha1"],
    ),
    other(
        "extensions.istio.io",
        "WasmPlugin",
        "wasmplugins",
        &["v1alpha1"],
    ),
    other(
        "extensions.istio.io",
        "TrafficExtension",
        "trafficextensions",
        &["v1alpha1"],
    ),
    other(
        ISTIO_NETWORKING_GROUP,
        "ProxyConfig",
        "proxyconfigs",
        &["v1beta1"],
    ),
    other(
        ISTIO_NETWORKING_GROUP,
        "WorkloadGroup",
        "workloadgroups",
        &["v1", "v1alpha3", "v1beta1"],
    ),
];

const fn other(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    versions: &'static [&'static str],
) -> CrdKind {
    crd_kind(group, kind, plural, &[], &[], versions)
}

const fn crd_kind(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    columns: &'static [(&'static str, &'static str, &'static str)],
    versions: &'static [&'static str],
) -> CrdKind {
    CrdKind {
        group,
        kind,
        plural,
        short_names,
        columns,
        versions,
    }
}

fn crd(k: &CrdKind) -> Value {
    // Structural schema: typed top level, spec and status kept as written (navarch validates
    // specs itself and reports errors with the offending field).
    let schema = json!({
        "openAPIV3Schema": {
            "type": "object",
            "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            },
        }
    });
    let mut columns: Vec<Value> = k
        .columns
        .iter()
        .map(|(name, path, ty)| json!({"name": name, "jsonPath": path, "type": ty}))
        .collect();
    columns.push(json!({"name": "Age", "jsonPath": ".metadata.creationTimestamp", "type": "date"}));
    let storage = if k.versions.len() == 1 || !k.versions.contains(&STORAGE_VERSION) {
        k.versions[0]
    } else {
        STORAGE_VERSION
    };
    let versions: Vec<Value> = k
        .versions
        .iter()
        .map(|v| {
            json!({
                "name": v,
                "served": true,
                "storage": *v == storage,
                "schema": schema,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
            })
        })
        .collect();
    let singular = k.kind.to_lowercase();
    let group = k.group;
    let group_category = group.replace('.', "-");
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{group}", k.plural),
            "labels": {"app": "istio-pilot", "chart": "istio", "heritage": "Tiller", "release": "istio"},
        },
        "spec": {
            "group": group,
            "names": {
                "categories": ["istio-io", group_category],
                "kind": k.kind,
                "listKind": format!("{}List", k.kind),
                "plural": k.plural,
                "singular": singular,
                "shortNames": k.short_names,
            },
            "scope": "Namespaced",
            "versions": versions,
        }
    })
}

/// The CustomResourceDefinitions as JSON objects.
pub fn crds() -> Vec<Value> {
    KINDS.iter().map(crd).collect()
}

/// The CustomResourceDefinitions of every kind istiod watches: navarch's own and the others.
pub fn istio_crds() -> Vec<Value> {
    KINDS
        .iter()
        .chain(OTHER_ISTIO_KINDS.iter())
        .map(crd)
        .collect()
}

/// The IstioOperator definition (`install.istio.io/v1alpha1`), which `navarch operator init`
/// installs for the operator to watch.
pub fn istio_operator_crd() -> Value {
    crd(&CrdKind {
        group: "install.istio.io",
        kind: "IstioOperator",
        plural: "istiooperators",
        short_names: &["iop", "io"],
        columns: &[
            ("Revision", ".spec.revision", "string"),
            ("Status", ".status.status", "string"),
        ],
        versions: &["v1alpha1"],
    })
}

/// The CustomResourceDefinitions as one multi-document YAML stream.
pub fn crds_yaml() -> String {
    to_yaml(&crds())
}

fn to_yaml(crds: &[Value]) -> String {
    crds.iter()
        .map(|c| serde_saphyr::to_string(c).expect("a CRD renders as YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_read_kind_has_a_crd_with_one_storage_version() {
        let crds = crds();
        for kind in crate::model::config::ConfigKind::ALL {
            let crd = crds
                .iter()
                .find(|c| c["spec"]["names"]["kind"] == kind.as_str())
                .unwrap_or_else(|| panic!("no CRD for {}", kind.as_str()));
            let versions = crd["spec"]["versions"].as_array().unwrap();
            let stored = versions.iter().filter(|v| v["storage"] == true).count();
            assert_eq!(stored, 1, "{}: exactly one storage version", kind.as_str());
            for v in versions {
                let name = format!("networking.istio.io/{}", v["name"].as_str().unwrap());
                assert!(
                    crate::sources::objects::ISTIO_API_VERSIONS.contains(&name.as_str()),
                    "{name} is served by the CRD and read by navarch"
                );
            }
        }
        let yaml = crds_yaml();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(docs, crds, "the YAML round-trips");
    }

    #[test]
    fn istiods_kinds_add_other_groups_without_duplicates() {
        let all = istio_crds();
        let names: std::collections::BTreeSet<&str> = all
            .iter()
            .map(|c| c["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), all.len(), "no CRD twice: {names:?}");
        for name in [
            "peerauthentications.security.istio.io",
            "telemetries.telemetry.istio.io",
            "wasmplugins.extensions.istio.io",
            "workloadgroups.networking.istio.io",
            "virtualservices.networking.istio.io",
        ] {
            assert!(names.contains(name), "{name} in {names:?}");
        }
        let stored = |kind: &str| -> Vec<String> {
            let crd = all
                .iter()
                .find(|c| c["spec"]["names"]["kind"] == kind)
                .unwrap();
            crd["spec"]["versions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["storage"] == true)
                .map(|v| v["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            stored("PeerAuthentication"),
            ["v1beta1"],
            "v1beta1 where served"
        );
        assert_eq!(stored("Telemetry"), ["v1"], "else the first");
        let pa = all
            .iter()
            .find(|c| c["spec"]["names"]["kind"] == "PeerAuthentication")
            .unwrap();
        assert_eq!(pa["spec"]["group"], "security.istio.io");
        assert_eq!(pa["spec"]["names"]["categories"][1], "security-istio-io");
    }
}
