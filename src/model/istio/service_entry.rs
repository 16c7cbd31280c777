//! `ServiceEntry` (`networking.istio.io`): adds services, usually external
//! ones, to Istio's service registry.
//!
//! Owns the typed ServiceEntry spec as of Istio 1.24 (hosts, addresses,
//! ports, location, resolution, inline endpoints or a workload selector)
//! and istiod's validation of it.
//!
//! Pure data and checks: no I/O, no tonic/kube/Envoy types.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::common::{
    ExportToOwner, Protocol, WorkloadSelector, is_default, is_ip_address, nullable,
    validate_export_to, validate_fqdn, validate_ip_subnet, validate_labels, validate_port,
    validate_port_name, validate_protocol, validate_wildcard_domain,
};
use super::workload_entry::{EntryRules, WorkloadEntry};
use super::{Errors, FieldPath, ValidationError, validate_spec};

/// The spec of a `ServiceEntry`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceEntry {
    /// Host names of the service (required); wildcards allowed.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDRs of the service.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub addresses: Vec<String>,
    /// Ports of the service.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub ports: Vec<ServicePort>,
    /// Whether the service is inside or outside the mesh.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub location: ServiceEntryLocation,
    /// How endpoints are found.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub resolution: ServiceEntryResolution,
    /// Inline endpoints (exclusive with `workloadSelector`).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub endpoints: Vec<WorkloadEntry>,
    /// Pods and WorkloadEntries in the namespace backing the service.
    #[serde(skip_serializing_if = "is_default")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Namespaces this is visible in (`.`, `*`, `~` or names).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub export_to: Vec<String>,
    /// Accepted server certificate subject alternative names.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub subject_alt_names: Vec<String>,
}

/// A service port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServicePort {
    /// Port number (required).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub number: u32,
    /// Protocol: HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS, ...
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub protocol: String,
    /// Port name (required).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub name: String,
    /// Port on the endpoints, if different.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub target_port: u32,
}

/// Where the service lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceEntryLocation {
    /// Outside the mesh (no mTLS, treated as external).
    #[default]
    MeshExternal,
    /// Part of the mesh.
    MeshInternal,
}

/// How the service's endpoints are resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceEntryResolution {
    /// Forward to the original destination IP.
    #[default]
    None,
    /// Use the listed endpoint IPs.
    Static,
    /// Resolve the hosts (or endpoint names) with DNS, all addresses.
    Dns,
    /// Resolve with DNS, using the first address only.
    DnsRoundRobin,
}

impl ServiceEntryResolution {
    /// The resolution's name in the API, e.g. `DNS_ROUND_ROBIN`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceEntryResolution::None => "NONE",
            ServiceEntryResolution::Static => "STATIC",
            ServiceEntryResolution::Dns => "DNS",
            ServiceEntryResolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
        }
    }
}

impl ServiceEntry {
    /// Validates the spec as istiod does; empty means valid.
    pub fn validate(&self) -> Vec<ValidationError> {
        validate_spec(|path, errs| self.validate_at(path, errs))
    }

    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if let Some(selector) = &self.workload_selector {
            let at = path.field("workloadSelector");
            selector.validate_at(&at, errs);
            if !self.endpoints.is_empty() {
                errs.add(
                    &at,
                    "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
                );
            }
        }
        self.validate_hosts(path, errs);
        self.validate_addresses(path, errs);
        let port_names = self.validate_ports(path, errs);
        self.validate_endpoints(path, errs, &port_names);
        if self.resolution != ServiceEntryResolution::None && self.hosts.len() > 1 {
            let opaque = self.ports.iter().position(|p| {
                let protocol = Protocol::parse(&p.protocol);
                !protocol.is_http() && !protocol.is_tls()
            });
            if let Some(i) = opaque {
                errs.add(
                    &path.field("ports").index(i).field("protocol"),
                    "multiple hosts provided with non-HTTP, non-TLS ports",
                );
            }
        }
        validate_export_to(
            &self.export_to,
            ExportToOwner::ServiceEntry,
            &path.field("exportTo"),
            errs,
        );
    }

    fn validate_hosts(&self, path: &FieldPath, errs: &mut Errors) {
        if self.hosts.is_empty() {
            errs.add(
                &path.field("hosts"),
                "service entry must have at least one host",
            );
        }
        for (i, host) in self.hosts.iter().enumerate() {
            let at = path.field("hosts").index(i);
            if host == "*" {
                errs.add(&at, format!("invalid host {host}"));
            } else {
                errs.check(&at, validate_wildcard_domain(host));
            }
        }
    }

    fn validate_addresses(&self, path: &FieldPath, errs: &mut Errors) {
        for (i, address) in self.addresses.iter().enumerate() {
            errs.check(
                &path.field("addresses").index(i),
                validate_ip_subnet(address),
            );
        }
        let cidr = self.addresses.iter().any(|a| a.contains('/'));
        if cidr
            && !matches!(
                self.resolution,
                ServiceEntryResolution::None | ServiceEntryResolution::Static
            )
        {
            errs.add(
                &path.field("addresses"),
                "CIDR addresses are allowed only for NONE/STATIC resolution types",
            );
        }
    }

    /// Returns the defined port names.
    fn validate_ports<'a>(&'a self, path: &FieldPath, errs: &mut Errors) -> BTreeSet<&'a str> {
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            let at = path.field("ports").index(i);
            if !names.insert(port.name.as_str()) {
                errs.add(
                    &at.field("name"),
                    format!("service entry port name {:?} already defined", port.name),
                );
            }
            if !numbers.insert(port.number) {
                errs.add(
                    &at.field("number"),
                    format!("service entry port {} already defined", port.number),
                );
            }
            if port.target_port != 0 {
                errs.check(&at.field("targetPort"), validate_port(port.target_port));
            }
            errs.check(&at.field("name"), validate_port_name(&port.name));
            errs.check(&at.field("protocol"), validate_protocol(&port.protocol));
            errs.check(&at.field("number"), validate_port(port.number));
        }
        names
    }

    fn validate_endpoints(&self, path: &FieldPath, errs: &mut Errors, port_names: &BTreeSet<&str>) {
        let endpoints = path.field("endpoints");
        match self.resolution {
            ServiceEntryResolution::None => {
                if !self.endpoints.is_empty() {
                    errs.add(
                        &endpoints,
                        "no endpoints should be provided for resolution type none",
                    );
                }
            }
            ServiceEntryResolution::Static => {
                let rules = EntryRules {
                    service_ports: Some(port_names),
                    allow_fqdn_address: false,
                };
                for (i, endpoint) in self.endpoints.iter().enumerate() {
                    endpoint.validate_at(&endpoints.index(i), errs, rules);
                }
            }
            ServiceEntryResolution::Dns | ServiceEntryResolution::DnsRoundRobin => {
                self.validate_dns_endpoints(path, errs, port_names);
            }
        }
    }

    fn validate_dns_endpoints(
        &self,
        path: &FieldPath,
        errs: &mut Errors,
        port_names: &BTreeSet<&str>,
    ) {
        let resolution = self.resolution.as_str();
        if self.endpoints.is_empty() {
            for (i, host) in self.hosts.iter().enumerate() {
                if validate_fqdn(host).is_err() {
                    errs.add(
                        &path.field("hosts").index(i),
                        format!(
                            "hosts must be FQDN if no endpoints are provided for resolution mode {resolution}"
                        ),
                    );
                }
            }
        }
        if self.resolution == ServiceEntryResolution::DnsRoundRobin && self.endpoints.len() > 1 {
            errs.add(
                &path.field("endpoints"),
                format!("there must only be 0 or 1 endpoint for resolution mode {resolution}"),
            );
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let at = path.field("endpoints").index(i);
            let addr = &endpoint.address;
            if !is_ip_address(addr) && validate_fqdn(addr).is_err() {
                errs.add(
                    &at.field("address"),
                    format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
                );
            }
            validate_labels(&endpoint.labels, &at.field("labels"), errs);
            endpoint.validate_ports(&at, errs, Some(port_names));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::istio::test_support::{assert_valid_and_round_trips, fields, parse_object};

    #[test]
    fn reference_examples() {
        let se = parse_object::<ServiceEntry>(
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external-svc-https
spec:
  hosts:
  - api.dropboxapi.com
  - www.googleapis.com
  - api.facebook.com
  location: MESH_EXTERNAL
  ports:
  - number: 443
    name: https
    protocol: TLS
  resolution: DNS
"#,
        );
        assert_eq!(se.resolution, ServiceEntryResolution::Dns);
        assert_eq!(se.ports[0].protocol, "TLS");
        assert_valid_and_round_trips(&se);

        let se = parse_object::<ServiceEntry>(
            r#"
spec:
  hosts:
  - mymongodb.somedomain # not used
  addresses:
  - 192.192.192.192/24 # VIPs
  ports:
  - number: 27018
    name: mongodb
    protocol: MONGO
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 2.2.2.2
  - address: 3.3.3.3
"#,
        );
        assert_eq!(se.location, ServiceEntryLocation::MeshInternal);
        assert_eq!(se.endpoints[1].address, "3.3.3.3");
        assert_valid_and_round_trips(&se);

        let se = parse_object::<ServiceEntry>(
            r#"
spec:
  hosts:
  - foo.bar.com
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
  endpoints:
  - address: us.foo.bar.com
    ports:
      http: 8080
  - address: uk.foo.bar.com
    ports:
      http: 9080
"#,
        );
        assert_eq!(se.endpoints[0].ports["http"], 8080);
        assert_valid_and_round_trips(&se);

        let se = parse_object::<ServiceEntry>(
            r#"
spec:
  hosts:
  - "example.unix.local"
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: unix:///var/run/example/socket
"#,
        );
        assert_valid_and_round_trips(&se);

        let se = parse_object::<ServiceEntry>(
            r#"
spec:
  hosts:
  - details.bookinfo.com
  location: MESH_INTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  workloadSelector:
    labels:
      app: details
  exportTo: ["~"]
  subjectAltNames:
  - "spiffe://cluster.local/ns/httpbin-ns/sa/httpbin-service-account"
"#,
        );
        assert_eq!(
            se.workload_selector.as_ref().unwrap().labels["app"],
            "details"
        );
        assert_valid_and_round_trips(&se);

        let se = parse_object::<ServiceEntry>(
            r#"
spec:
  hosts:
  - wikipedia.org
  - "*.wikipedia.org"
  location: MESH_EXTERNAL
  ports:
  - number: 443
    name: https
    protocol: TLS
  resolution: NONE
"#,
        );
        assert_valid_and_round_trips(&se);
    }

    #[test]
    fn validates_service_entries() {
        let se: ServiceEntry = serde_saphyr::from_str(
            r#"
hosts: ["*", "a.example.com"]
addresses: [10.0.0.0/8, bogus]
ports:
- {number: 80, name: http, protocol: HTTP}
- {number: 80, name: http, protocol: TCP, targetPort: 70000}
- {number: 0, name: Bad_Name, protocol: FOO}
resolution: DNS_ROUND_ROBIN
endpoints:
- address: a.example.com
  ports: {grpc: 9090}
- address: "not valid"
workloadSelector: {labels: {app: a}}
exportTo: ["~", "ns"]
"#,
        )
        .unwrap();
        let errs = se.validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.workloadSelector",
                "spec.hosts[0]",
                "spec.addresses[1]",
                "spec.addresses",
                "spec.ports[1].name",
                "spec.ports[1].number",
                "spec.ports[1].targetPort",
                "spec.ports[2].name",
                "spec.ports[2].protocol",
                "spec.ports[2].number",
                "spec.endpoints",
                r#"spec.endpoints[0].ports["grpc"]"#,
                "spec.endpoints[1].address",
                "spec.ports[1].protocol",
                "spec.exportTo",
            ]
        );

        let se: ServiceEntry = serde_saphyr::from_str(
            r#"
hosts: ["*.example.com"]
ports: [{number: 80, name: http}]
resolution: DNS
"#,
        )
        .unwrap();
        assert_eq!(fields(&se.validate()), ["spec.hosts[0]"]);

        let se: ServiceEntry = serde_saphyr::from_str(
            r#"
hosts: [a.example.com]
resolution: STATIC
ports: [{number: 80, name: http}]
endpoints:
- address: a.example.com
  ports: {tcp: 81}
"#,
        )
        .unwrap();
        assert_eq!(
            fields(&se.validate()),
            [
                "spec.endpoints[0].address",
                r#"spec.endpoints[0].ports["tcp"]"#
            ]
        );
        assert_eq!(fields(&ServiceEntry::default().validate()), ["spec.hosts"]);
    }
}
