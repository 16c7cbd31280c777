//! `WorkloadEntry` (`networking.istio.io`): a non-Kubernetes workload (VM,
//! bare metal) and its properties; also the shape of a ServiceEntry's
//! inline endpoints.
//!
//! Owns the typed WorkloadEntry spec as of Istio 1.24 and istiod's
//! validation of it, standalone and as a ServiceEntry endpoint.
//!
//! Pure data and checks: no I/O, no tonic/kube/Envoy types.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::common::{
    UNIX_ADDRESS_PREFIX, is_default, is_ip_address, nullable, validate_fqdn, validate_labels,
    validate_port, validate_port_name, validate_unix_address,
};
use super::{Errors, FieldPath, ValidationError, validate_spec};

/// The spec of a `WorkloadEntry`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadEntry {
    /// IP address, DNS name, or `unix://` socket path. May be empty only if
    /// `network` is set (reachable through a gateway).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub address: String,
    /// Port name to the workload's port number for that service port.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub ports: BTreeMap<String, u32>,
    /// Labels of the workload.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub labels: BTreeMap<String, String>,
    /// Network the workload is on.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub network: String,
    /// Locality, `region/zone/subzone`.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub locality: String,
    /// Load balancing weight; 1 if zero.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub weight: u32,
    /// Service account of the workload (in the entry's namespace).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub service_account: String,
}

/// How an entry is being validated.
#[derive(Clone, Copy, Debug)]
pub(super) struct EntryRules<'a> {
    /// Port names the owning ServiceEntry defines, if any.
    pub(super) service_ports: Option<&'a BTreeSet<&'a str>>,
    /// Whether the address may be a DNS name rather than an IP.
    pub(super) allow_fqdn_address: bool,
}

impl WorkloadEntry {
    /// Validates the spec as istiod does; empty means valid.
    pub fn validate(&self) -> Vec<ValidationError> {
        validate_spec(|path, errs| {
            self.validate_at(
                path,
                errs,
                EntryRules {
                    service_ports: None,
                    allow_fqdn_address: true,
                },
            );
        })
    }

    pub(super) fn validate_at(&self, path: &FieldPath, errs: &mut Errors, rules: EntryRules<'_>) {
        let at = path.field("address");
        let addr = self.address.as_str();
        if addr.is_empty() && self.network.is_empty() {
            errs.add(&at, "address is required");
            return;
        }
        let unix = addr.starts_with(UNIX_ADDRESS_PREFIX);
        if let Some(socket) = addr.strip_prefix(UNIX_ADDRESS_PREFIX) {
            errs.check(&at, validate_unix_address(socket));
            if !self.ports.is_empty() {
                errs.add(
                    &path.field("ports"),
                    format!("unix endpoint {addr} must not include ports"),
                );
            }
        } else if !addr.is_empty() && !is_ip_address(addr) {
            if !rules.allow_fqdn_address {
                errs.add(
                    &at,
                    format!("endpoint address {addr:?} is not a valid IP address"),
                );
            } else if validate_fqdn(addr).is_err() {
                errs.add(
                    &at,
                    format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
                );
            }
        }
        self.validate_ports(path, errs, rules.service_ports);
        validate_labels(&self.labels, &path.field("labels"), errs);
        if let Some(ports) = rules.service_ports
            && unix
            && ports.len() != 1
        {
            errs.add(&at, "exactly 1 service port required for unix endpoints");
        }
    }

    /// Port names must be DNS labels naming service ports (when known), and
    /// numbers valid ports.
    pub(super) fn validate_ports(
        &self,
        path: &FieldPath,
        errs: &mut Errors,
        service_ports: Option<&BTreeSet<&str>>,
    ) {
        for (name, port) in &self.ports {
            let at = path.field("ports").key(name);
            if let Some(defined) = service_ports
                && !defined.contains(name.as_str())
            {
                errs.add(
                    &at,
                    format!("endpoint port {port} is not defined by the service entry"),
                );
            }
            errs.check(&at, validate_port_name(name));
            errs.check(&at, validate_port(*port));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::istio::test_support::{assert_valid_and_round_trips, fields, parse_object};

    #[test]
    fn reference_example() {
        let we = parse_object::<WorkloadEntry>(
            r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: details-svc
spec:
  # use of the service account indicates that the workload has a
  # sidecar proxy bootstrapped with this service account. Pods with
  # sidecars will automatically communicate with the workload using
  # istio mutual TLS.
  serviceAccount: details-legacy
  address: 2.2.2.2
  labels:
    app: details-legacy
    instance-id: vm1
"#,
        );
        assert_eq!(we.service_account, "details-legacy");
        assert_eq!(we.address, "2.2.2.2");
        assert_eq!(we.labels["instance-id"], "vm1");
        assert_valid_and_round_trips(&we);
    }

    #[test]
    fn every_field_round_trips() {
        let we: WorkloadEntry = serde_json::from_value(serde_json::json!({
            "address": "vm1.example.com",
            "ports": {"http": 8080},
            "labels": {"app": "a"},
            "network": "net1",
            "locality": "us-west/zone1",
            "weight": 3,
            "serviceAccount": "sa"
        }))
        .unwrap();
        assert_eq!(we.ports["http"], 8080);
        assert_eq!(we.weight, 3);
        assert!(we.validate().is_empty());
        assert_eq!(
            serde_json::from_value::<WorkloadEntry>(serde_json::to_value(&we).unwrap()).unwrap(),
            we
        );
    }

    #[test]
    fn validates_addresses_ports_labels() {
        assert_eq!(
            fields(&WorkloadEntry::default().validate()),
            ["spec.address"]
        );
        let network_only = WorkloadEntry {
            network: "net1".into(),
            ..Default::default()
        };
        assert!(network_only.validate().is_empty());

        let we: WorkloadEntry = serde_json::from_value(serde_json::json!({
            "address": "unix://relative.sock",
            "ports": {"Bad_Name": 0},
            "labels": {"bad key": "v"}
        }))
        .unwrap();
        assert_eq!(
            fields(&we.validate()),
            [
                "spec.address",
                "spec.ports",
                r#"spec.ports["Bad_Name"]"#,
                r#"spec.ports["Bad_Name"]"#,
                r#"spec.labels["bad key"]"#,
            ]
        );

        let we = WorkloadEntry {
            address: "not a host".into(),
            ..Default::default()
        };
        assert_eq!(
            we.validate()[0].message,
            r#"endpoint address "not a host" is not a valid FQDN or an IP address"#
        );
    }
}
