//! What navarch installs into a cluster besides itself: the CustomResourceDefinitions of the
//! networking.istio.io kinds it serves. Kept in this one place so `manifest generate`, the tests
//! and users apply the same definitions.
//!
//! Only renders YAML; applying it is the caller's job (`kubectl apply -f -`).

use serde_json::{Value, json};

use crate::sources::kube::ISTIO_NETWORKING_GROUP;

/// The served versions of every kind but EnvoyFilter, and the stored one (Istio's choice:
/// v1beta1 is stored so that clusters can move between Istio releases).
const VERSIONS: [&str; 3] = ["v1", "v1alpha3", "v1beta1"];
const STORAGE_VERSION: &str = "v1beta1";

struct CrdKind {
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    /// (column name, JSON path, type)
    columns: &'static [(&'static str, &'static str, &'static str)],
    versions: &'static [&'static str],
}

const KINDS: [CrdKind; 7] = [
    CrdKind {
        kind: "DestinationRule",
        plural: "destinationrules",
        short_names: &["dr"],
        columns: &[("Host", ".spec.host", "string")],
        versions: &VERSIONS,
    },
    CrdKind {
        kind: "EnvoyFilter",
        plural: "envoyfilters",
        short_names: &[],
        columns: &[],
        versions: &["v1alpha3"],
    },
    CrdKind {
        kind: "Gateway",
        plural: "gateways",
        short_names: &["gw"],
        columns: &[],
        versions: &VERSIONS,
    },
    CrdKind {
        kind: "ServiceEntry",
        plural: "serviceentries",
        short_names: &["se"],
        columns: &[
            ("Hosts", ".spec.hosts", "string"),
            ("Location", ".spec.location", "string"),
            ("Resolution", ".spec.resolution", "string"),
        ],
        versions: &VERSIONS,
    },
    CrdKind {
        kind: "Sidecar",
        plural: "sidecars",
        short_names: &[],
        columns: &[],
        versions: &VERSIONS,
    },
    CrdKind {
        kind: "VirtualService",
        plural: "virtualservices",
        short_names: &["vs"],
        columns: &[
            ("Gateways", ".spec.gateways", "string"),
            ("Hosts", ".spec.hosts", "string"),
        ],
        versions: &VERSIONS,
    },
    CrdKind {
        kind: "WorkloadEntry",
        plural: "workloadentries",
        short_names: &["we"],
        columns: &[("Address", ".spec.address", "string")],
        versions: &VERSIONS,
    },
];

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
    let storage = if k.versions.len() == 1 {
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
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{ISTIO_NETWORKING_GROUP}", k.plural),
            "labels": {"app": "istio-pilot", "chart": "istio", "heritage": "Tiller", "release": "istio"},
        },
        "spec": {
            "group": ISTIO_NETWORKING_GROUP,
            "names": {
                "categories": ["istio-io", "networking-istio-io"],
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

/// The CustomResourceDefinitions as one multi-document YAML stream.
pub fn crds_yaml() -> String {
    crds()
        .iter()
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
}
