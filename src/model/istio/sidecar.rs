//! `Sidecar` (`networking.istio.io`): the inbound and outbound listeners and
//! the reachable services of a workload's proxy.
//!
//! Owns the typed Sidecar spec as of Istio 1.24 (ingress and egress
//! listeners, capture modes, inbound connection pools and the outbound
//! traffic policy) and istiod's validation of it.
//!
//! Pure data and checks: no I/O, no tonic/kube/Envoy types.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::common::{
    Protocol, UNIX_ADDRESS_PREFIX, WorkloadSelector, is_default, nullable, validate_fqdn,
    validate_ip_address, validate_namespace_slash_wildcard_hostnames, validate_port,
    validate_port_name, validate_protocol, validate_unix_address,
};
use super::destination_rule::ConnectionPoolSettings;
use super::gateway::{ServerTlsMode, ServerTlsSettings};
use super::virtual_service::Destination;
use super::{Errors, FieldPath, ValidationError, validate_spec};

/// The spec of a `Sidecar`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Sidecar {
    /// Workloads this applies to; the whole namespace if unset.
    #[serde(skip_serializing_if = "is_default")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Inbound listeners.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub ingress: Vec<IstioIngressListener>,
    /// Outbound listeners and the hosts reachable through them.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub egress: Vec<IstioEgressListener>,
    /// Connection pool for inbound connections on all ports.
    #[serde(skip_serializing_if = "is_default")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    /// Handling of outbound traffic to unknown destinations.
    #[serde(skip_serializing_if = "is_default")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// An inbound listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IstioIngressListener {
    /// Port to listen on (required).
    #[serde(skip_serializing_if = "is_default")]
    pub port: Option<SidecarPort>,
    /// Address to bind to.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub bind: String,
    /// How traffic reaches the listener.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub capture_mode: CaptureMode,
    /// Where to forward (`127.0.0.1:port`, `0.0.0.0:port`, `unix://...`).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub default_endpoint: String,
    /// TLS termination on this port.
    #[serde(skip_serializing_if = "is_default")]
    pub tls: Option<ServerTlsSettings>,
    /// Connection pool for this port.
    #[serde(skip_serializing_if = "is_default")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// An outbound listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IstioEgressListener {
    /// Port to listen on; the catch-all listener (last) has none.
    #[serde(skip_serializing_if = "is_default")]
    pub port: Option<SidecarPort>,
    /// Address or `unix://` socket to bind to.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub bind: String,
    /// How traffic reaches the listener.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub capture_mode: CaptureMode,
    /// Reachable hosts as `namespace/dnsName` (required).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub hosts: Vec<String>,
}

/// How traffic is captured into a listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// The environment's default.
    #[default]
    Default,
    /// iptables redirection.
    Iptables,
    /// No capture: applications connect to the listener directly.
    None,
}

/// Outbound traffic policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OutboundTrafficPolicy {
    /// Whether unknown destinations are allowed.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub mode: OutboundTrafficPolicyMode,
    /// Send unknown traffic through this egress proxy (ALLOW_ANY only).
    #[serde(skip_serializing_if = "is_default")]
    pub egress_proxy: Option<Destination>,
}

/// Outbound traffic policy mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicyMode {
    /// Only services in the registry are reachable.
    #[default]
    RegistryOnly,
    /// Unknown destinations are passed through.
    AllowAny,
}

/// A listener port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SidecarPort {
    /// Port number (0 for a Unix socket).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub number: u32,
    /// Protocol, or empty for detection.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub protocol: String,
    /// Port name.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub name: String,
    /// Deprecated: has no effect on sidecars.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub target_port: u32,
}

impl Sidecar {
    /// Validates the spec as istiod does; empty means valid.
    pub fn validate(&self) -> Vec<ValidationError> {
        validate_spec(|path, errs| self.validate_at(path, errs))
    }

    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if let Some(selector) = &self.workload_selector {
            selector.validate_at(&path.field("workloadSelector"), errs);
        }
        if self.egress.is_empty()
            && self.ingress.is_empty()
            && self.outbound_traffic_policy.is_none()
            && self.inbound_connection_pool.is_none()
        {
            errs.add(
                &path.field("egress"),
                "sidecar: empty configuration provided",
            );
            return;
        }
        let mut ports = BTreeSet::new();
        for (i, listener) in self.ingress.iter().enumerate() {
            listener.validate_at(&path.field("ingress").index(i), &mut ports, errs);
        }
        if let Some(pool) = &self.inbound_connection_pool {
            pool.validate_at(&path.field("inboundConnectionPool"), errs);
        }
        self.validate_egress(path, errs);
        if let Some(policy) = &self.outbound_traffic_policy {
            policy.validate_at(&path.field("outboundTrafficPolicy"), errs);
        }
    }

    fn validate_egress(&self, path: &FieldPath, errs: &mut Errors) {
        let mut ports = BTreeSet::new();
        let mut sockets = BTreeSet::new();
        let mut catch_all_seen = false;
        let last = self.egress.len().saturating_sub(1);
        for (i, listener) in self.egress.iter().enumerate() {
            let at = path.field("egress").index(i);
            match &listener.port {
                None if catch_all_seen => {
                    errs.add(
                        &at.field("port"),
                        "sidecar: egress can have only one listener with empty port",
                    );
                    continue;
                }
                None if i == last => catch_all_seen = true,
                None => errs.add(
                    &at.field("port"),
                    "sidecar: the egress listener with empty port should be the last listener in the list",
                ),
                Some(port) => {
                    listener.validate_port(port, &at, errs);
                    let unique = if port.number == 0 {
                        sockets.insert(listener.bind.as_str())
                    } else {
                        ports.insert(port.number)
                    };
                    if !unique {
                        let message = if port.number == 0 {
                            "sidecar: unix domain socket values for listeners must be unique"
                        } else {
                            "sidecar: ports on IP bound listeners must be unique"
                        };
                        errs.add(&at.field("port"), message);
                    }
                }
            }
            validate_namespace_slash_wildcard_hostnames(
                &listener.hosts,
                false,
                &at.field("hosts"),
                errs,
            );
        }
    }
}

impl SidecarPort {
    /// Name (if set) and protocol checks shared by both listener kinds.
    fn validate_name_and_protocol(&self, path: &FieldPath, errs: &mut Errors) {
        if !self.name.is_empty() {
            errs.check(&path.field("name"), validate_port_name(&self.name));
        }
        errs.check(&path.field("protocol"), validate_protocol(&self.protocol));
        if self.target_port > 0 {
            errs.add(
                &path.field("targetPort"),
                "targetPort has no impact on Sidecars",
            );
        }
    }
}

impl IstioIngressListener {
    fn validate_at(&self, path: &FieldPath, ports: &mut BTreeSet<u32>, errs: &mut Errors) {
        let Some(port) = &self.port else {
            errs.add(
                &path.field("port"),
                "sidecar: port is required for ingress listeners",
            );
            return;
        };
        let port_path = path.field("port");
        port.validate_name_and_protocol(&port_path, errs);
        errs.check(&port_path.field("number"), validate_port(port.number));
        if !self.bind.is_empty() {
            errs.check(&path.field("bind"), validate_ip_address(&self.bind));
        }
        if !ports.insert(port.number) {
            errs.add(
                &port_path.field("number"),
                "sidecar: ports on IP bound listeners must be unique",
            );
        }
        if !self.default_endpoint.is_empty() {
            errs.check(
                &path.field("defaultEndpoint"),
                validate_default_endpoint(&self.default_endpoint),
            );
        }
        if let Some(tls) = &self.tls {
            self.validate_tls(tls, port, &path.field("tls"), errs);
        }
        if let Some(pool) = &self.connection_pool {
            pool.validate_at(&path.field("connectionPool"), errs);
        }
    }

    fn validate_tls(
        &self,
        tls: &ServerTlsSettings,
        port: &SidecarPort,
        path: &FieldPath,
        errs: &mut Errors,
    ) {
        if !tls.subject_alt_names.is_empty() {
            errs.add(
                &path.field("subjectAltNames"),
                "sidecar: subjectAltNames is not supported in ingress tls",
            );
        }
        if tls.https_redirect {
            errs.add(
                &path.field("httpsRedirect"),
                "sidecar: httpsRedirect is not supported",
            );
        }
        if !tls.credential_name.is_empty() {
            errs.add(
                &path.field("credentialName"),
                "sidecar: credentialName is not currently supported",
            );
        }
        if matches!(
            tls.mode,
            ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough
        ) {
            errs.add(
                &path.field("mode"),
                format!(
                    "configuration is invalid: cannot set mode to {} in sidecar ingress tls",
                    tls.mode.as_str()
                ),
            );
        }
        if !Protocol::parse(&port.protocol).is_tls() {
            errs.add(
                path,
                "server cannot have TLS settings for non HTTPS/TLS ports",
            );
        }
        tls.validate_at(path, errs);
    }
}

/// `127.0.0.1:<port>`, `0.0.0.0:<port>`, `[::1]:<port>`, `[::]:<port>`,
/// `:<port>` or `unix://<path>`.
fn validate_default_endpoint(endpoint: &str) -> Result<(), String> {
    if let Some(socket) = endpoint.strip_prefix(UNIX_ADDRESS_PREFIX) {
        return validate_unix_address(socket);
    }
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err(format!("address {endpoint}: missing port in address"));
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        return Err("sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset".to_owned());
    }
    match port.parse::<u32>() {
        Ok(n) => validate_port(n),
        Err(e) => Err(format!(
            "sidecar: defaultEndpoint port ({port}) is not a number: {e}"
        )),
    }
}

impl IstioEgressListener {
    fn validate_port(&self, port: &SidecarPort, path: &FieldPath, errs: &mut Errors) {
        let port_path = path.field("port");
        port.validate_name_and_protocol(&port_path, errs);
        if port.number == 0 {
            // A Unix domain socket listener.
            match self.bind.strip_prefix(UNIX_ADDRESS_PREFIX) {
                None => errs.add(
                    &path.field("bind"),
                    "sidecar: ports with 0 value must have a unix domain socket bind address",
                ),
                Some(socket) => errs.check(&path.field("bind"), validate_unix_address(socket)),
            }
            if !matches!(self.capture_mode, CaptureMode::Default | CaptureMode::None) {
                errs.add(
                    &path.field("captureMode"),
                    "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
                );
            }
        } else {
            errs.check(&port_path.field("number"), validate_port(port.number));
            if !self.bind.is_empty() {
                errs.check(&path.field("bind"), validate_ip_address(&self.bind));
            }
        }
    }
}

impl OutboundTrafficPolicy {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        let Some(proxy) = &self.egress_proxy else {
            return;
        };
        let at = path.field("egressProxy");
        if self.mode != OutboundTrafficPolicyMode::AllowAny {
            errs.add(
                &at,
                "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
            );
            return;
        }
        errs.check(&at.field("host"), validate_fqdn(&proxy.host));
        if proxy.port.is_none() {
            errs.add(
                &at.field("port"),
                "sidecar: egress_proxy port must be non-nil",
            );
            return;
        }
        proxy.validate_at(&at, errs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::istio::test_support::{assert_valid_and_round_trips, fields, parse_object};

    #[test]
    fn reference_examples() {
        let sidecar = parse_object::<Sidecar>(
            r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: istio-config
spec:
  egress:
  - hosts:
    - "./*"
    - "istio-system/*"
"#,
        );
        assert_eq!(sidecar.egress[0].hosts, ["./*", "istio-system/*"]);
        assert_valid_and_round_trips(&sidecar);

        let sidecar = parse_object::<Sidecar>(
            r#"
spec:
  workloadSelector:
    labels:
      app: ratings
  ingress:
  - port:
      number: 9080
      protocol: HTTP
      name: somename
    defaultEndpoint: unix:///var/run/someuds.sock
  egress:
  - port:
      number: 9080
      protocol: HTTP
      name: egresshttp
    hosts:
    - "prod-us1/*"
  - hosts:
    - "istio-system/*"
"#,
        );
        assert_eq!(
            sidecar.workload_selector.as_ref().unwrap().labels["app"],
            "ratings"
        );
        assert_eq!(
            sidecar.ingress[0].default_endpoint,
            "unix:///var/run/someuds.sock"
        );
        assert_valid_and_round_trips(&sidecar);

        let sidecar = parse_object::<Sidecar>(
            r#"
spec:
  workloadSelector:
    labels:
      app: productpage
  ingress:
  - port:
      number: 9080 # binds to proxy_instance_ip:9080
      protocol: HTTP
      name: somename
    defaultEndpoint: 127.0.0.1:8080
    captureMode: NONE # not needed if metadata is set for entire proxy
  egress:
  - port:
      number: 3306
      protocol: MYSQL
      name: egressmysql
    captureMode: NONE # not needed if metadata is set for entire proxy
    bind: 127.0.0.1
    hosts:
    - "*/mysql.foo.com"
"#,
        );
        assert_eq!(sidecar.ingress[0].capture_mode, CaptureMode::None);
        assert_eq!(sidecar.egress[0].bind, "127.0.0.1");
        assert_valid_and_round_trips(&sidecar);

        let sidecar = parse_object::<Sidecar>(
            r#"
spec:
  workloadSelector:
    labels:
      app: ratings
  ingress:
  - port:
      number: 80
      protocol: HTTPS
      name: somename
    defaultEndpoint: unix:///var/run/someuds.sock
    tls:
      mode: SIMPLE
      privateKey: "/etc/certs/privatekey.pem"
      serverCertificate: "/etc/certs/servercert.pem"
"#,
        );
        assert_valid_and_round_trips(&sidecar);

        let sidecar = parse_object::<Sidecar>(
            r#"
spec:
  workloadSelector:
    labels:
      app: productpage
  inboundConnectionPool:
      http:
        http1MaxPendingRequests: 1024
        http2MaxRequests: 1024
        maxRequestsPerConnection: 1024
        maxRetries: 100
  ingress:
  - port:
      number: 80
      protocol: HTTP
      name: somename
    connectionPool:
      http:
        http1MaxPendingRequests: 1024
        http2MaxRequests: 1024
        maxRequestsPerConnection: 1024
        maxRetries: 100
      tcp:
        maxConnections: 100
"#,
        );
        let pool = sidecar.inbound_connection_pool.as_ref().unwrap();
        assert_eq!(pool.http.as_ref().unwrap().max_retries, 100);
        assert_valid_and_round_trips(&sidecar);

        let sidecar: Sidecar = serde_saphyr::from_str(
            r#"
outboundTrafficPolicy:
  mode: ALLOW_ANY
  egressProxy:
    host: egress.example.com
    subset: v1
    port: {number: 443}
"#,
        )
        .unwrap();
        assert_eq!(
            sidecar.outbound_traffic_policy.as_ref().unwrap().mode,
            OutboundTrafficPolicyMode::AllowAny
        );
        assert_valid_and_round_trips(&sidecar);
    }

    #[test]
    fn validates_listeners() {
        let sidecar: Sidecar = serde_saphyr::from_str(
            r#"
workloadSelector: {labels: {"app": "*"}}
ingress:
- port: {number: 80, protocol: HTTP, name: a}
  defaultEndpoint: "10.0.0.1:8080"
  tls: {mode: ISTIO_MUTUAL}
- port: {number: 80, protocol: FOO, name: Bad_Name}
  bind: not-an-ip
- {}
egress:
- hosts: ["*/*"]
- port: {number: 0, protocol: HTTP}
  captureMode: IPTABLES
  hosts: ["foo", "ns/short"]
- port: {number: 8080}
  hosts: []
outboundTrafficPolicy:
  egressProxy: {host: egress.example.com}
"#,
        )
        .unwrap();
        let errs = sidecar.validate();
        assert_eq!(
            fields(&errs),
            [
                r#"spec.workloadSelector.labels["app"]"#,
                "spec.ingress[0].defaultEndpoint",
                "spec.ingress[0].tls.mode",
                "spec.ingress[0].tls",
                "spec.ingress[1].port.name",
                "spec.ingress[1].port.protocol",
                "spec.ingress[1].bind",
                "spec.ingress[1].port.number",
                "spec.ingress[2].port",
                "spec.egress[0].port",
                "spec.egress[1].bind",
                "spec.egress[1].captureMode",
                "spec.egress[1].hosts[0]",
                "spec.egress[1].hosts[1]",
                "spec.egress[2].hosts",
                "spec.outboundTrafficPolicy.egressProxy",
            ]
        );
        assert_eq!(
            Sidecar::default().validate()[0].message,
            "sidecar: empty configuration provided"
        );
    }
}
