//! `Gateway` (`networking.istio.io`): a load balancer at the edge of the
//! mesh and the ports, hosts and TLS settings it exposes.
//!
//! Owns the typed Gateway spec as of Istio 1.24 (servers, ports and server
//! TLS settings, the latter also used by Sidecar ingress listeners) and
//! istiod's validation of it.
//!
//! Pure data and checks: no I/O, no tonic/kube/Envoy types.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::common::{
    Protocol, UNIX_ADDRESS_PREFIX, is_default, nullable, validate_ip_address,
    validate_namespace_slash_wildcard_hostnames, validate_port, validate_unix_address,
};
use super::{Errors, FieldPath, ValidationError, validate_spec};

/// The spec of a `Gateway`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Gateway {
    /// Servers (listeners) the gateway exposes.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub servers: Vec<Server>,
    /// Labels selecting the gateway pods.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub selector: BTreeMap<String, String>,
}

/// One listener of a gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Server {
    /// Port to listen on (required).
    #[serde(skip_serializing_if = "is_default")]
    pub port: Option<Port>,
    /// Address to bind to: an IP or `unix://` socket path.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub bind: String,
    /// Hosts exposed, as `[namespace/]dnsName` (required).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub hosts: Vec<String>,
    /// TLS settings.
    #[serde(skip_serializing_if = "is_default")]
    pub tls: Option<ServerTlsSettings>,
    /// Where to forward traffic by default (`127.0.0.1:port` or `unix://`).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub default_endpoint: String,
    /// Optional server name, for monitoring.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub name: String,
}

/// A gateway port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Port {
    /// Port number (required; 0 for a Unix socket bind).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub number: u32,
    /// Protocol: HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP, TLS, ...
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub protocol: String,
    /// Port name (required).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub name: String,
    /// Deprecated: has no effect on gateways.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub target_port: u32,
}

/// Server-side TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServerTlsSettings {
    /// Redirect plain HTTP requests to HTTPS.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub https_redirect: bool,
    /// How TLS is handled.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub mode: ServerTlsMode,
    /// Server certificate file.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub server_certificate: String,
    /// Server private key file.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub private_key: String,
    /// CA bundle file to verify clients (MUTUAL).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub ca_certificates: String,
    /// Certificate revocation list file.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub ca_crl: String,
    /// Secret holding the certificate, key and CA.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub credential_name: String,
    /// Accepted client certificate subject alternative names.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub subject_alt_names: Vec<String>,
    /// Accepted client certificate SPKI hashes (base64).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub verify_certificate_spki: Vec<String>,
    /// Accepted client certificate hashes (hex).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub verify_certificate_hash: Vec<String>,
    /// Minimum TLS version.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub min_protocol_version: TlsProtocol,
    /// Maximum TLS version.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub max_protocol_version: TlsProtocol,
    /// Cipher suites, in order of preference.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub cipher_suites: Vec<String>,
}

/// Server TLS modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Forward the TLS connection by SNI, without terminating it.
    #[default]
    Passthrough,
    /// Terminate TLS.
    Simple,
    /// Terminate TLS and require a client certificate.
    Mutual,
    /// Passthrough routed by Istio's auto-generated SNI names.
    AutoPassthrough,
    /// Terminate Istio mutual TLS.
    IstioMutual,
    /// Terminate TLS, verifying a client certificate if one is sent.
    OptionalMutual,
}

/// TLS protocol versions.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum TlsProtocol {
    /// Envoy's default.
    #[default]
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    /// TLS 1.0.
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    /// TLS 1.1.
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

impl Gateway {
    /// Validates the spec as istiod does; empty means valid.
    ///
    /// The Gateway's own name must also be a DNS-1123 label; that is
    /// metadata, not spec, and is not checked here.
    pub fn validate(&self) -> Vec<ValidationError> {
        validate_spec(|path, errs| self.validate_at(path, errs))
    }

    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if self.servers.is_empty() {
            errs.add(
                &path.field("servers"),
                "gateway must have at least one server",
            );
        }
        let mut port_names = BTreeSet::new();
        for (i, server) in self.servers.iter().enumerate() {
            let at = path.field("servers").index(i);
            server.validate_at(&at, errs);
            if let Some(port) = &server.port
                && !port_names.insert(port.name.as_str())
            {
                errs.add(
                    &at.field("port").field("name"),
                    format!(
                        "port names in servers must be unique: duplicate name {}",
                        port.name
                    ),
                );
            }
        }
    }
}

impl Server {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        validate_namespace_slash_wildcard_hostnames(&self.hosts, true, &path.field("hosts"), errs);
        let port_ok = self.validate_port(path, errs);
        self.validate_bind(path, errs);
        if let Some(tls) = &self.tls {
            tls.validate_at(&path.field("tls"), errs);
        }
        if let (true, Some(port)) = (port_ok, &self.port) {
            self.validate_tls_for_protocol(Protocol::parse(&port.protocol), path, errs);
        }
    }

    /// Returns whether the port is valid.
    fn validate_port(&self, path: &FieldPath, errs: &mut Errors) -> bool {
        let at = path.field("port");
        let Some(port) = &self.port else {
            errs.add(&at, "port is required");
            return false;
        };
        let mut ok = true;
        if Protocol::parse(&port.protocol) == Protocol::Unsupported {
            errs.add(
                &at.field("protocol"),
                format!(
                    "invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
                    port.protocol
                ),
            );
            ok = false;
        }
        // A Unix socket server listens on port 0.
        if (port.number > 0 || !self.bind.starts_with(UNIX_ADDRESS_PREFIX))
            && let Err(message) = validate_port(port.number)
        {
            errs.add(&at.field("number"), message);
            ok = false;
        }
        if port.target_port > 0 {
            errs.add(
                &at.field("targetPort"),
                "targetPort has no impact on Gateways",
            );
            ok = false;
        }
        if port.name.is_empty() {
            errs.add(&at.field("name"), "port name must be set");
            ok = false;
        }
        ok
    }

    fn validate_bind(&self, path: &FieldPath, errs: &mut Errors) {
        if let Some(socket) = self.bind.strip_prefix(UNIX_ADDRESS_PREFIX) {
            errs.check(&path.field("bind"), validate_unix_address(socket));
            if let Some(port) = &self.port
                && port.number != 0
            {
                errs.add(
                    &path.field("port").field("number"),
                    "port number must be 0 for unix domain socket",
                );
            }
        } else if !self.bind.is_empty() {
            errs.check(&path.field("bind"), validate_ip_address(&self.bind));
        }
    }

    /// HTTPS/TLS servers need TLS settings; other servers must not have
    /// any, except HTTP servers using passthrough-only settings such as
    /// `httpsRedirect`.
    fn validate_tls_for_protocol(&self, protocol: Protocol, path: &FieldPath, errs: &mut Errors) {
        let at = path.field("tls");
        match &self.tls {
            None if protocol.is_tls() => {
                errs.add(&at, "server must have TLS settings for HTTPS/TLS protocols");
            }
            Some(tls) if !protocol.is_tls() => {
                if !protocol.is_http() {
                    errs.add(
                        &at,
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                    );
                } else if !tls.is_passthrough()
                    || !tls.ca_certificates.is_empty()
                    || !tls.private_key.is_empty()
                    || !tls.server_certificate.is_empty()
                {
                    errs.add(
                        &at,
                        "server cannot have TLS settings for plain text HTTP ports",
                    );
                }
            }
            _ => {}
        }
    }
}

impl ServerTlsMode {
    /// The mode's name in the API, e.g. `ISTIO_MUTUAL`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerTlsMode::Passthrough => "PASSTHROUGH",
            ServerTlsMode::Simple => "SIMPLE",
            ServerTlsMode::Mutual => "MUTUAL",
            ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
            ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
            ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
        }
    }
}

impl ServerTlsSettings {
    fn is_passthrough(&self) -> bool {
        matches!(
            self.mode,
            ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
        )
    }

    pub(super) fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        let mode = self.mode;
        if mode == ServerTlsMode::IstioMutual {
            for (field, value, what) in [
                (
                    "serverCertificate",
                    &self.server_certificate,
                    "server certificate",
                ),
                ("privateKey", &self.private_key, "private key"),
                ("caCertificates", &self.ca_certificates, "CA bundle"),
                ("credentialName", &self.credential_name, "credentialName"),
            ] {
                if !value.is_empty() {
                    errs.add(
                        &path.field(field),
                        format!("ISTIO_MUTUAL TLS cannot have associated {what}"),
                    );
                }
            }
            return;
        }
        let terminating = matches!(
            mode,
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
        );
        if terminating && !self.credential_name.is_empty() {
            // Certificates come from the secret.
            return;
        }
        let (label, needs_ca) = match mode {
            ServerTlsMode::Simple => ("SIMPLE", false),
            ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => ("MUTUAL", true),
            _ => ("", false),
        };
        if !label.is_empty() {
            if self.server_certificate.is_empty() {
                errs.add(
                    &path.field("serverCertificate"),
                    format!("{label} TLS requires a server certificate"),
                );
            }
            if self.private_key.is_empty() {
                errs.add(
                    &path.field("privateKey"),
                    format!("{label} TLS requires a private key"),
                );
            }
            if needs_ca && self.ca_certificates.is_empty() {
                errs.add(
                    &path.field("caCertificates"),
                    "MUTUAL TLS requires a client CA bundle",
                );
            }
        }
        if !self.ca_crl.is_empty() {
            if !self.credential_name.is_empty() {
                errs.add(
                    &path.field("caCrl"),
                    "CRL is not supported with credentialName. CRL has to be specified in the credential",
                );
            }
            if mode == ServerTlsMode::Simple {
                errs.add(&path.field("caCrl"), "CRL is not supported with SIMPLE TLS");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::istio::test_support::{assert_valid_and_round_trips, fields, parse_object};

    #[test]
    fn reference_example_parses_validates_and_round_trips() {
        let gw = parse_object::<Gateway>(
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: my-gateway
  namespace: some-config-namespace
spec:
  selector:
    app: my-gateway-controller
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - uk.bookinfo.com
    - eu.bookinfo.com
    tls:
      httpsRedirect: true # sends 301 redirect for http requests
  - port:
      number: 443
      name: https-443
      protocol: HTTPS
    hosts:
    - uk.bookinfo.com
    - eu.bookinfo.com
    tls:
      mode: SIMPLE # enables HTTPS on this port
      serverCertificate: /etc/certs/servercert.pem
      privateKey: /etc/certs/privatekey.pem
  - port:
      number: 9443
      name: https-9443
      protocol: HTTPS
    hosts:
    - "bookinfo-namespace/*.bookinfo.com"
    tls:
      mode: SIMPLE # enables HTTPS on this port
      credentialName: bookinfo-secret # fetches certs from Kubernetes secret
  - port:
      number: 9080
      name: http-wildcard
      protocol: HTTP
    hosts:
    - "*"
  - port:
      number: 2379 # to expose internal service via external port 2379
      name: mongo
      protocol: MONGO
    hosts:
    - "*"
"#,
        );
        assert_eq!(gw.selector["app"], "my-gateway-controller");
        assert_eq!(gw.servers.len(), 5);
        assert!(gw.servers[0].tls.as_ref().unwrap().https_redirect);
        assert_eq!(
            gw.servers[1].tls.as_ref().unwrap().mode,
            ServerTlsMode::Simple
        );
        assert_eq!(gw.servers[4].port.as_ref().unwrap().protocol, "MONGO");
        assert_valid_and_round_trips(&gw);
        let yaml = serde_saphyr::to_string(&gw).unwrap();
        assert_eq!(serde_saphyr::from_str::<Gateway>(&yaml).unwrap(), gw);
    }

    #[test]
    fn tls_versions_and_modes_serialize_as_reference_names() {
        let tls: ServerTlsSettings = serde_json::from_value(serde_json::json!({
            "mode": "OPTIONAL_MUTUAL",
            "minProtocolVersion": "TLSV1_2",
            "maxProtocolVersion": "TLSV1_3",
            "cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256"],
            "credentialName": "c",
            "verifyCertificateSpki": ["a"],
            "verifyCertificateHash": ["b"]
        }))
        .unwrap();
        assert_eq!(tls.min_protocol_version, TlsProtocol::TlsV1_2);
        let back = serde_json::to_value(&tls).unwrap();
        assert_eq!(back["maxProtocolVersion"], "TLSV1_3");
        assert_eq!(back["mode"], "OPTIONAL_MUTUAL");
    }

    #[test]
    fn validates_servers() {
        let gw: Gateway = serde_saphyr::from_str(
            r#"
servers:
- port: {number: 443, name: https, protocol: HTTPS}
  hosts: ["ns/foo*.com", "short", "bad_ns!/a.com"]
- port: {number: 80, name: https, protocol: HTTP, targetPort: 8080}
  hosts: ["*"]
  tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}
- port: {number: 0, name: uds, protocol: FOO}
  bind: unix://relative
  hosts: ["*"]
- hosts: ["*"]
  tls: {mode: ISTIO_MUTUAL, credentialName: x}
- port: {number: 8443, name: tls, protocol: TLS}
  hosts: ["*"]
  tls: {mode: MUTUAL, caCrl: /crl}
- port: {number: 9000, name: tcp, protocol: TCP}
  hosts: ["*"]
  tls: {}
"#,
        )
        .unwrap();
        let errs = gw.validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.servers[0].hosts[0]",
                "spec.servers[0].hosts[0]",
                "spec.servers[0].hosts[1]",
                "spec.servers[0].hosts[2]",
                "spec.servers[0].tls",
                "spec.servers[1].port.targetPort",
                "spec.servers[1].port.name",
                "spec.servers[2].port.protocol",
                "spec.servers[2].bind",
                "spec.servers[3].port",
                "spec.servers[3].tls.credentialName",
                "spec.servers[4].tls.serverCertificate",
                "spec.servers[4].tls.privateKey",
                "spec.servers[4].tls.caCertificates",
                "spec.servers[5].tls",
            ]
        );
        assert!(Gateway::default().validate()[0].field == "spec.servers");
    }
}
