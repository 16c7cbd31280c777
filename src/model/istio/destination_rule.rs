//! `DestinationRule` (`networking.istio.io`): policies for traffic to a host
//! after routing.
//!
//! Owns the complete typed schema of the DestinationRule spec as of Istio
//! 1.24 — subsets and traffic policies (load balancing, locality, connection
//! pools, outlier detection, client TLS, per-port settings, tunnelling,
//! PROXY protocol) — and istiod's validation of it. `TrafficPolicy` and its
//! parts are reused by other resources (e.g. the Sidecar's inbound
//! connection pool).
//!
//! Pure data and checks: no I/O, no tonic/kube/Envoy types.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::common::{
    ExportToOwner, MatchLabelsSelector, PortSelector, is_default, nullable, proto_u64,
    validate_duration, validate_export_to, validate_fqdn, validate_ip_address, validate_labels,
    validate_percent, validate_port, validate_subset_name, validate_wildcard_domain,
};
use super::{Errors, FieldPath, ValidationError, validate_spec};
use crate::model::duration::Duration;

/// The spec of a `DestinationRule`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DestinationRule {
    /// Service host from the registry this applies to (required).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub host: String,
    /// Policies for all traffic to the host.
    #[serde(skip_serializing_if = "is_default")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named sets of endpoints (by label), with optional policy overrides.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub subsets: Vec<Subset>,
    /// Namespaces this is visible in (`.`, `*` or names); empty means all.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub export_to: Vec<String>,
    /// Workloads in this namespace this applies to; all if unset.
    #[serde(skip_serializing_if = "is_default")]
    pub workload_selector: Option<MatchLabelsSelector>,
}

/// Policies applied to traffic to a host, subset or port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TrafficPolicy {
    /// Load balancing algorithm.
    #[serde(skip_serializing_if = "is_default")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool limits.
    #[serde(skip_serializing_if = "is_default")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of unhealthy endpoints.
    #[serde(skip_serializing_if = "is_default")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the upstream.
    #[serde(skip_serializing_if = "is_default")]
    pub tls: Option<ClientTlsSettings>,
    /// Overrides for specific ports.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnel TCP over HTTP CONNECT/POST to the upstream.
    #[serde(skip_serializing_if = "is_default")]
    pub tunnel: Option<TunnelSettings>,
    /// Send a PROXY protocol header to the upstream.
    #[serde(skip_serializing_if = "is_default")]
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// Policy overrides for one port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PortTrafficPolicy {
    /// The port these settings apply to.
    #[serde(skip_serializing_if = "is_default")]
    pub port: Option<PortSelector>,
    /// Load balancing algorithm.
    #[serde(skip_serializing_if = "is_default")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool limits.
    #[serde(skip_serializing_if = "is_default")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of unhealthy endpoints.
    #[serde(skip_serializing_if = "is_default")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the upstream.
    #[serde(skip_serializing_if = "is_default")]
    pub tls: Option<ClientTlsSettings>,
}

/// Tunnelling settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TunnelSettings {
    /// `CONNECT` (default) or `POST`.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub protocol: String,
    /// Host to tunnel to (required): FQDN or IP.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub target_host: String,
    /// Port to tunnel to (required).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub target_port: u32,
}

/// PROXY protocol settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyProtocol {
    /// Protocol version.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub version: ProxyProtocolVersion,
}

/// PROXY protocol version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProxyProtocolVersion {
    /// Human-readable version 1.
    #[default]
    #[serde(rename = "V1")]
    V1,
    /// Binary version 2.
    #[serde(rename = "V2")]
    V2,
}

/// A named set of endpoints of the host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Subset {
    /// Name referenced by routes (required).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub name: String,
    /// Endpoint labels selecting the subset.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub labels: BTreeMap<String, String>,
    /// Overrides of the rule's traffic policy.
    #[serde(skip_serializing_if = "is_default")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Load balancing: one of `simple` or `consistentHash`, plus locality and
/// warmup settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LoadBalancerSettings {
    /// A standard algorithm.
    #[serde(skip_serializing_if = "is_default")]
    pub simple: Option<SimpleLb>,
    /// Consistent hashing (session affinity).
    #[serde(skip_serializing_if = "is_default")]
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality-aware load balancing.
    #[serde(skip_serializing_if = "is_default")]
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// Slow-start window for new endpoints (see also `warmup`).
    #[serde(skip_serializing_if = "is_default")]
    pub warmup_duration_secs: Option<Duration>,
    /// Slow-start configuration.
    #[serde(skip_serializing_if = "is_default")]
    pub warmup: Option<WarmupConfiguration>,
}

/// Standard load balancing algorithms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Let Istio choose (currently least request).
    #[default]
    Unspecified,
    /// Deprecated alias of `LEAST_REQUEST`.
    LeastConn,
    /// A random healthy endpoint.
    Random,
    /// Forward to the original destination address.
    Passthrough,
    /// Round robin.
    RoundRobin,
    /// Fewest outstanding requests among two random choices.
    LeastRequest,
}

/// Consistent hashing: one hash key (`httpHeaderName`, `httpCookie`,
/// `useSourceIp`, `httpQueryParameterName`) and optionally one algorithm
/// (`ringHash`, `maglev`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsistentHashLb {
    /// Hash on this request header.
    #[serde(skip_serializing_if = "is_default")]
    pub http_header_name: Option<String>,
    /// Hash on this cookie, generating it if absent.
    #[serde(skip_serializing_if = "is_default")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the source IP.
    #[serde(skip_serializing_if = "is_default")]
    pub use_source_ip: Option<bool>,
    /// Hash on this query parameter.
    #[serde(skip_serializing_if = "is_default")]
    pub http_query_parameter_name: Option<String>,
    /// Ring hash algorithm.
    #[serde(skip_serializing_if = "is_default")]
    pub ring_hash: Option<RingHash>,
    /// Maglev algorithm.
    #[serde(skip_serializing_if = "is_default")]
    pub maglev: Option<MagLev>,
    /// Deprecated: ring size for ring hash (use `ringHash`).
    #[serde(deserialize_with = "proto_u64", skip_serializing_if = "is_default")]
    pub minimum_ring_size: u64,
}

/// Ring hash settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RingHash {
    /// Minimum number of virtual nodes; 1024 if zero.
    #[serde(deserialize_with = "proto_u64", skip_serializing_if = "is_default")]
    pub minimum_ring_size: u64,
}

/// Maglev settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MagLev {
    /// Lookup table size; must be prime.
    #[serde(deserialize_with = "proto_u64", skip_serializing_if = "is_default")]
    pub table_size: u64,
}

/// The cookie to hash on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpCookie {
    /// Cookie name (required).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub name: String,
    /// Cookie path.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub path: String,
    /// Lifetime of a generated cookie; `0s` makes a session cookie.
    #[serde(skip_serializing_if = "is_default")]
    pub ttl: Option<Duration>,
}

/// Slow-start ("warmup") for new endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WarmupConfiguration {
    /// Length of the warmup window (required).
    #[serde(skip_serializing_if = "is_default")]
    pub duration: Option<Duration>,
    /// Starting percentage of normal load, up to 100.
    #[serde(skip_serializing_if = "is_default")]
    pub minimum_percent: Option<f64>,
    /// Speed of the ramp-up; at least 1.
    #[serde(skip_serializing_if = "is_default")]
    pub aggression: Option<f64>,
}

/// Connection pool limits for TCP and HTTP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConnectionPoolSettings {
    /// Limits common to TCP and HTTP.
    #[serde(skip_serializing_if = "is_default")]
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    #[serde(skip_serializing_if = "is_default")]
    pub http: Option<HttpSettings>,
}

/// TCP connection pool settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpSettings {
    /// Maximum connections to a host.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub max_connections: i32,
    /// TCP connect timeout.
    #[serde(skip_serializing_if = "is_default")]
    pub connect_timeout: Option<Duration>,
    /// SO_KEEPALIVE settings.
    #[serde(skip_serializing_if = "is_default")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Maximum lifetime of a connection.
    #[serde(skip_serializing_if = "is_default")]
    pub max_connection_duration: Option<Duration>,
    /// Idle timeout of a connection; `0s` disables it.
    #[serde(skip_serializing_if = "is_default")]
    pub idle_timeout: Option<Duration>,
}

/// TCP keepalive settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dead.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub probes: u32,
    /// Idle time before the first probe.
    #[serde(skip_serializing_if = "is_default")]
    pub time: Option<Duration>,
    /// Time between probes.
    #[serde(skip_serializing_if = "is_default")]
    pub interval: Option<Duration>,
}

/// HTTP connection pool settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpSettings {
    /// Maximum requests queued waiting for a connection.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub http1_max_pending_requests: i32,
    /// Maximum active requests to a destination.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub http2_max_requests: i32,
    /// Maximum requests per connection; 0 is unlimited.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub max_requests_per_connection: i32,
    /// Maximum concurrent retries.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub max_retries: i32,
    /// Idle timeout of an upstream connection.
    #[serde(skip_serializing_if = "is_default")]
    pub idle_timeout: Option<Duration>,
    /// Whether to upgrade HTTP/1.1 connections to HTTP/2.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub h2_upgrade_policy: H2UpgradePolicy,
    /// Use the downstream request's protocol upstream.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub use_client_protocol: bool,
    /// Maximum concurrent streams per HTTP/2 connection.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub max_concurrent_streams: i32,
}

/// HTTP/1.1 to HTTP/2 upgrade policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// Use the mesh-wide default.
    #[default]
    Default,
    /// Do not upgrade.
    DoNotUpgrade,
    /// Upgrade.
    Upgrade,
}

/// Ejection of endpoints that keep failing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OutlierDetection {
    /// Deprecated: consecutive errors before ejection (use
    /// `consecutiveGatewayErrors` / `consecutive5xxErrors`).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub consecutive_errors: i32,
    /// Count local-origin failures (connection errors) separately.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub split_external_local_origin_errors: bool,
    /// Consecutive local-origin failures before ejection.
    #[serde(skip_serializing_if = "is_default")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// Consecutive 502/503/504s before ejection.
    #[serde(skip_serializing_if = "is_default")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Consecutive 5xxs before ejection.
    #[serde(skip_serializing_if = "is_default")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Time between ejection sweeps.
    #[serde(skip_serializing_if = "is_default")]
    pub interval: Option<Duration>,
    /// Minimum ejection duration.
    #[serde(skip_serializing_if = "is_default")]
    pub base_ejection_time: Option<Duration>,
    /// Maximum percentage of endpoints that may be ejected.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub max_ejection_percent: i32,
    /// Outlier detection is off below this healthy percentage.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub min_health_percent: i32,
}

/// Client-side TLS towards the upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClientTlsSettings {
    /// Whether and how to use TLS.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub mode: ClientTlsMode,
    /// Client certificate file (MUTUAL).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub client_certificate: String,
    /// Client private key file (MUTUAL).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub private_key: String,
    /// CA bundle file to verify the server.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub ca_certificates: String,
    /// Secret holding the client certificate/key/CA.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub credential_name: String,
    /// Accepted server certificate subject alternative names.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub subject_alt_names: Vec<String>,
    /// SNI to send.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub sni: String,
    /// Skip server certificate verification.
    #[serde(skip_serializing_if = "is_default")]
    pub insecure_skip_verify: Option<bool>,
    /// Certificate revocation list file.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub ca_crl: String,
}

/// Client TLS modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Plain text.
    #[default]
    Disable,
    /// TLS, verifying the server.
    Simple,
    /// Mutual TLS with the given client certificate.
    Mutual,
    /// Mutual TLS with Istio's workload certificates.
    IstioMutual,
}

/// Locality-aware load balancing: weighted distribution, or failover.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalityLoadBalancerSetting {
    /// Traffic shares per source locality.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub distribute: Vec<LocalityDistribute>,
    /// Region to fail over to, per region.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub failover: Vec<LocalityFailover>,
    /// Labels ordering endpoints for failover.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub failover_priority: Vec<String>,
    /// Enable or disable locality load balancing.
    #[serde(skip_serializing_if = "is_default")]
    pub enabled: Option<bool>,
}

/// Traffic shares from one locality.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalityDistribute {
    /// Source locality, `region/zone/subzone`, `*` allowed at the end.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub from: String,
    /// Destination locality to weight (weights sum to 100).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub to: BTreeMap<String, u32>,
}

/// Failover from one region to another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalityFailover {
    /// Source region.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub from: String,
    /// Region to fail over to.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub to: String,
}

mod validate;

#[cfg(test)]
mod tests {
    use super::validate::{is_prime, validate_localities};
    use super::*;
    use crate::model::istio::test_support::{
        assert_round_trip, assert_valid, fields, parse_object, parse_spec,
    };

    fn parse(yaml: &str) -> DestinationRule {
        parse_object(yaml)
    }

    #[test]
    fn reference_example_subsets_and_lb() {
        let dr = parse(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: bookinfo-ratings
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
  subsets:
  - name: testversion
    labels:
      version: v3
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
"#,
        );
        assert_eq!(dr.host, "ratings.prod.svc.cluster.local");
        let lb = dr
            .traffic_policy
            .as_ref()
            .unwrap()
            .load_balancer
            .as_ref()
            .unwrap();
        assert_eq!(lb.simple, Some(SimpleLb::LeastRequest));
        assert_eq!(dr.subsets[0].name, "testversion");
        assert_eq!(dr.subsets[0].labels["version"], "v3");
        let sub_lb = dr.subsets[0]
            .traffic_policy
            .as_ref()
            .unwrap()
            .load_balancer
            .as_ref()
            .unwrap();
        assert_eq!(sub_lb.simple, Some(SimpleLb::RoundRobin));
        assert_valid(&dr);
        assert_round_trip(&dr);
    }

    #[test]
    fn reference_example_port_level_and_selector() {
        let dr = parse(
            r#"
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy: # Apply to all ports
    portLevelSettings:
    - port:
        number: 80
      loadBalancer:
        simple: LEAST_REQUEST
    - port:
        number: 9080
      loadBalancer:
        simple: ROUND_ROBIN
"#,
        );
        let pls = &dr.traffic_policy.as_ref().unwrap().port_level_settings;
        assert_eq!(pls[1].port, Some(PortSelector { number: 9080 }));
        assert_valid(&dr);
        assert_round_trip(&dr);

        let dr = parse(
            r#"
spec:
  host: example.com
  workloadSelector:
    matchLabels:
      app: ratings
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    portLevelSettings:
    - port:
        number: 31443
      tls:
        credentialName: client-credential
        mode: MUTUAL
"#,
        );
        assert_eq!(
            dr.workload_selector.as_ref().unwrap().match_labels["app"],
            "ratings"
        );
        let tls = dr.traffic_policy.as_ref().unwrap().port_level_settings[0]
            .tls
            .as_ref()
            .unwrap();
        assert_eq!(tls.mode, ClientTlsMode::Mutual);
        assert_eq!(tls.credential_name, "client-credential");
        assert_valid(&dr);
        assert_round_trip(&dr);
    }

    #[test]
    fn reference_example_consistent_hash_and_pools() {
        let dr = parse(
            r#"
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie:
          name: user
          ttl: 0s
"#,
        );
        let hash = dr
            .traffic_policy
            .as_ref()
            .unwrap()
            .load_balancer
            .as_ref()
            .unwrap();
        let cookie = hash
            .consistent_hash
            .as_ref()
            .unwrap()
            .http_cookie
            .as_ref()
            .unwrap();
        assert_eq!(cookie.name, "user");
        assert_eq!(cookie.ttl, Some(Duration::ZERO));
        assert_valid(&dr);
        assert_round_trip(&dr);

        let dr = parse(
            r#"
spec:
  host: myredissrv.prod.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        tcpKeepalive:
          time: 7200s
          interval: 75s
"#,
        );
        let tcp = dr
            .traffic_policy
            .as_ref()
            .unwrap()
            .connection_pool
            .as_ref()
            .unwrap();
        let tcp = tcp.tcp.as_ref().unwrap();
        assert_eq!(tcp.max_connections, 100);
        assert_eq!(tcp.connect_timeout, Some(Duration::from_millis(30)));
        assert_eq!(
            tcp.tcp_keepalive.as_ref().unwrap().time,
            Some(Duration::from_secs(7200))
        );
        assert_valid(&dr);
        assert_round_trip(&dr);

        let dr = parse(
            r#"
spec:
  host: reviews.prod.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
      http:
        http2MaxRequests: 1000
        maxRequestsPerConnection: 10
    outlierDetection:
      consecutive5xxErrors: 7
      interval: 5m
      baseEjectionTime: 15m
"#,
        );
        let policy = dr.traffic_policy.as_ref().unwrap();
        let http = policy
            .connection_pool
            .as_ref()
            .unwrap()
            .http
            .as_ref()
            .unwrap();
        assert_eq!(http.http2_max_requests, 1000);
        assert_eq!(http.max_requests_per_connection, 10);
        let outlier = policy.outlier_detection.as_ref().unwrap();
        assert_eq!(outlier.consecutive_5xx_errors, Some(7));
        assert_eq!(outlier.interval, Some(Duration::from_secs(300)));
        assert_eq!(outlier.base_ejection_time, Some(Duration::from_secs(900)));
        assert_valid(&dr);
        assert_round_trip(&dr);
        let json = serde_json::to_value(&dr).unwrap();
        assert_eq!(
            json["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"],
            7
        );
        assert_eq!(
            json["trafficPolicy"]["outlierDetection"]["baseEjectionTime"],
            "900s"
        );
    }

    #[test]
    fn reference_example_tls() {
        let dr = parse(
            r#"
spec:
  host: mydbserver.prod.svc.cluster.local
  trafficPolicy:
    tls:
      mode: MUTUAL
      clientCertificate: /etc/certs/myclientcert.pem
      privateKey: /etc/certs/client_private_key.pem
      caCertificates: /etc/certs/rootcacerts.pem
"#,
        );
        let tls = dr.traffic_policy.as_ref().unwrap().tls.as_ref().unwrap();
        assert_eq!(tls.private_key, "/etc/certs/client_private_key.pem");
        assert_valid(&dr);
        assert_round_trip(&dr);

        for (host, mode) in [
            ("\"*.foo.com\"", ClientTlsMode::Simple),
            ("ratings.prod.svc.cluster.local", ClientTlsMode::IstioMutual),
        ] {
            let mode_name = serde_json::to_value(mode).unwrap();
            let dr: DestinationRule = parse_spec(&format!(
                "host: {host}\ntrafficPolicy:\n  tls:\n    mode: {}\n",
                mode_name.as_str().unwrap()
            ));
            assert_eq!(
                dr.traffic_policy
                    .as_ref()
                    .unwrap()
                    .tls
                    .as_ref()
                    .unwrap()
                    .mode,
                mode
            );
            assert_valid(&dr);
        }
    }

    #[test]
    fn reference_example_locality() {
        let dr: DestinationRule = parse_spec(
            r#"
host: a.example.com
trafficPolicy:
  outlierDetection:
    consecutive5xxErrors: 1
  loadBalancer:
    localityLbSetting:
      enabled: true
      distribute:
        - from: us-west/zone1/*
          to:
            "us-west/zone1/*": 80
            "us-west/zone2/*": 20
        - from: us-west/zone2/*
          to:
            "us-west/zone1/*": 20
            "us-west/zone2/*": 80
"#,
        );
        let locality = dr
            .traffic_policy
            .as_ref()
            .unwrap()
            .load_balancer
            .as_ref()
            .unwrap();
        let locality = locality.locality_lb_setting.as_ref().unwrap();
        assert_eq!(locality.enabled, Some(true));
        assert_eq!(locality.distribute[1].to["us-west/zone2/*"], 80);
        assert_valid(&dr);
        assert_round_trip(&dr);

        let dr: DestinationRule = parse_spec(
            r#"
host: a.example.com
trafficPolicy:
  loadBalancer:
    localityLbSetting:
      failover:
        - from: us-east
          to: eu-west
        - from: us-west
          to: us-east
      failoverPriority:
      - "version=v1"
      - "topology.istio.io/cluster=clusterA"
"#,
        );
        assert_valid(&dr);
        assert_round_trip(&dr);
    }

    #[test]
    fn every_field_parses_and_round_trips() {
        let dr: DestinationRule = parse_spec(
            r#"
host: reviews
exportTo: ["."]
workloadSelector: {matchLabels: {app: web}}
trafficPolicy:
  loadBalancer:
    consistentHash:
      httpQueryParameterName: user
      maglev: {tableSize: 65537}
    warmupDurationSecs: 60s
    warmup: {duration: 30s, minimumPercent: 10, aggression: 1.5}
  connectionPool:
    tcp:
      maxConnections: 10
      connectTimeout: 1s
      tcpKeepalive: {probes: 3, time: 10s, interval: 5s}
      maxConnectionDuration: 1h
      idleTimeout: 0s
    http:
      http1MaxPendingRequests: 1
      http2MaxRequests: 2
      maxRequestsPerConnection: 3
      maxRetries: 4
      idleTimeout: 5s
      h2UpgradePolicy: DO_NOT_UPGRADE
      useClientProtocol: true
      maxConcurrentStreams: 100
  outlierDetection:
    consecutiveErrors: 5
    splitExternalLocalOriginErrors: true
    consecutiveLocalOriginFailures: 2
    consecutiveGatewayErrors: 0
    consecutive5xxErrors: 3
    interval: 10s
    baseEjectionTime: 30s
    maxEjectionPercent: 50
    minHealthPercent: 10
  tls:
    mode: SIMPLE
    caCertificates: /etc/ca.pem
    subjectAltNames: [spiffe://a]
    sni: reviews.example.com
    insecureSkipVerify: false
    caCrl: /etc/crl.pem
  tunnel: {protocol: POST, targetHost: 10.0.0.1, targetPort: 8443}
subsets:
- name: v1
  labels: {version: v1}
  trafficPolicy:
    proxyProtocol: {version: V2}
    loadBalancer:
      consistentHash:
        useSourceIp: true
        ringHash: {minimumRingSize: 2048}
- name: legacy
  trafficPolicy:
    loadBalancer:
      simple: PASSTHROUGH
      consistentHash: null
    portLevelSettings:
    - port: {number: 8080}
      connectionPool: {http: {h2UpgradePolicy: UPGRADE}}
      outlierDetection: {consecutive5xxErrors: 1}
      tls: {mode: ISTIO_MUTUAL}
"#,
        );
        let policy = dr.traffic_policy.as_ref().unwrap();
        let lb = policy.load_balancer.as_ref().unwrap();
        assert_eq!(lb.warmup_duration_secs, Some(Duration::from_secs(60)));
        assert_eq!(lb.warmup.as_ref().unwrap().aggression, Some(1.5));
        let hash = lb.consistent_hash.as_ref().unwrap();
        assert_eq!(hash.maglev, Some(MagLev { table_size: 65537 }));
        let http = policy
            .connection_pool
            .as_ref()
            .unwrap()
            .http
            .as_ref()
            .unwrap();
        assert_eq!(http.h2_upgrade_policy, H2UpgradePolicy::DoNotUpgrade);
        let outlier = policy.outlier_detection.as_ref().unwrap();
        assert_eq!(outlier.consecutive_gateway_errors, Some(0));
        assert_eq!(outlier.consecutive_errors, 5);
        assert_eq!(
            policy.tls.as_ref().unwrap().insecure_skip_verify,
            Some(false)
        );
        assert_eq!(policy.tunnel.as_ref().unwrap().target_port, 8443);
        let v1 = dr.subsets[0].traffic_policy.as_ref().unwrap();
        assert_eq!(
            v1.proxy_protocol,
            Some(ProxyProtocol {
                version: ProxyProtocolVersion::V2
            })
        );
        assert_valid(&dr);
        assert_round_trip(&dr);
        let json = serde_json::to_value(&dr).unwrap();
        let pool = &json["trafficPolicy"]["connectionPool"];
        assert_eq!(pool["http"]["http1MaxPendingRequests"], 1);
        assert_eq!(pool["http"]["h2UpgradePolicy"], "DO_NOT_UPGRADE");
        assert_eq!(pool["tcp"]["idleTimeout"], "0s");
        // Wrapper values keep explicit zeros.
        assert_eq!(
            json["trafficPolicy"]["outlierDetection"]["consecutiveGatewayErrors"],
            0
        );
    }

    #[test]
    fn validates_host_and_subsets() {
        let dr: DestinationRule = parse_spec(
            r#"
host: ""
subsets:
- name: v1
  labels: {version: v1}
- name: v1
- labels: {"bad key": v}
- name: Bad_Name
  trafficPolicy: {}
exportTo: ["*", "ns"]
workloadSelector: {matchLabels: {"app": "*"}}
"#,
        );
        let errs = dr.validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.host",
                "spec.subsets[1].name",
                "spec.subsets[2].name",
                r#"spec.subsets[2].labels["bad key"]"#,
                "spec.subsets[3].name",
                "spec.subsets[3].trafficPolicy",
                "spec.exportTo",
                "spec.exportTo",
                r#"spec.workloadSelector.matchLabels["app"]"#,
            ]
        );
        assert_eq!(errs[0].message, "empty domain name not allowed");
        assert_eq!(errs[1].message, "duplicate subset names: v1");
        assert_eq!(errs[2].message, "subset name cannot be empty");
        assert_eq!(
            errs[5].message,
            "traffic policy must have at least one field"
        );
    }

    #[test]
    fn validates_traffic_policy_parts() {
        let dr: DestinationRule = parse_spec(
            r#"
host: a.example.com
trafficPolicy:
  loadBalancer:
    simple: ROUND_ROBIN
    consistentHash:
      httpHeaderName: x-user
      useSourceIp: true
      httpCookie: {name: ""}
      minimumRingSize: 1024
      maglev: {tableSize: 100}
    warmup: {minimumPercent: 101, aggression: 0.5}
  connectionPool:
    tcp: {maxConnections: -1, connectTimeout: 0s, idleTimeout: 0.5ms, tcpKeepalive: {time: 1.5ms}}
    http: {http2MaxRequests: -1, h2UpgradePolicy: UPGRADE, useClientProtocol: true, idleTimeout: 0s}
  outlierDetection:
    consecutiveLocalOriginFailures: 3
    maxEjectionPercent: 101
    minHealthPercent: -1
    baseEjectionTime: 0s
  tls: {mode: MUTUAL}
  portLevelSettings:
  - loadBalancer: {simple: RANDOM}
  - port: {number: 80}
  tunnel: {protocol: GET, targetHost: "bad host", targetPort: 0}
"#,
        );
        let errs = dr.validate();
        let p = "spec.trafficPolicy";
        let expected: Vec<String> = [
            ".outlierDetection.baseEjectionTime",
            ".outlierDetection.consecutiveLocalOriginFailures",
            ".outlierDetection.maxEjectionPercent",
            ".outlierDetection.minHealthPercent",
            ".connectionPool.http.http2MaxRequests",
            ".connectionPool.http.idleTimeout",
            ".connectionPool.http.useClientProtocol",
            ".connectionPool.tcp.maxConnections",
            ".connectionPool.tcp.connectTimeout",
            ".connectionPool.tcp.tcpKeepalive.time",
            ".loadBalancer",
            ".loadBalancer.consistentHash",
            ".loadBalancer.consistentHash.httpCookie.name",
            ".loadBalancer.consistentHash.minimumRingSize",
            ".loadBalancer.consistentHash.maglev.tableSize",
            ".loadBalancer.warmup.duration",
            ".loadBalancer.warmup.minimumPercent",
            ".loadBalancer.warmup.aggression",
            ".tls.clientCertificate",
            ".tls.privateKey",
            ".portLevelSettings[0].port",
            ".portLevelSettings[1]",
            ".tunnel.protocol",
            ".tunnel.targetHost",
            ".tunnel.targetPort",
        ]
        .iter()
        .map(|s| format!("{p}{s}"))
        .collect();
        assert_eq!(fields(&errs), expected);
        assert_eq!(errs[2].message, "percentage 101 is not in range 0..100");
        assert_eq!(
            errs[14].message,
            "tableSize must be a prime number for maglev"
        );
    }

    #[test]
    fn validates_tunnel_proxy_protocol_and_tls_combinations() {
        let dr: DestinationRule = parse_spec(
            r#"
host: a.example.com
trafficPolicy:
  tunnel: {targetHost: a.example.com, targetPort: 443}
  proxyProtocol: {}
"#,
        );
        assert_eq!(fields(&dr.validate()), ["spec.trafficPolicy"]);

        let dr: DestinationRule = parse_spec(
            r#"
host: a.example.com
subsets:
- name: a
  trafficPolicy:
    tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: /ca.pem}
- name: b
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: secret, privateKey: /key.pem}
"#,
        );
        assert_eq!(
            fields(&dr.validate()),
            [
                "spec.subsets[0].trafficPolicy.tls.insecureSkipVerify",
                "spec.subsets[1].trafficPolicy.tls.credentialName",
            ]
        );
    }

    #[test]
    fn validates_locality_settings() {
        let dr: DestinationRule = parse_spec(
            r#"
host: a.example.com
trafficPolicy:
  loadBalancer:
    localityLbSetting:
      distribute:
      - from: us-west/*
        to: {"us-west/zone1": 50, "us-west/zone2": 40}
"#,
        );
        let errs = dr.validate();
        assert_eq!(
            fields(&errs),
            ["spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to"]
        );
        assert_eq!(errs[0].message, "total locality weight 90 != 100");

        let dr: DestinationRule = parse_spec(
            r#"
host: a.example.com
trafficPolicy:
  loadBalancer:
    localityLbSetting:
      failover:
      - {from: us-east, to: us-east}
      - {from: us-east/zone1, to: "eu-*"}
"#,
        );
        assert_eq!(
            fields(&dr.validate()),
            [
                "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
                "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[1]",
                "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[1]",
            ]
        );

        let dr: DestinationRule = parse_spec(
            r#"
host: a.example.com
trafficPolicy:
  loadBalancer:
    localityLbSetting:
      failover: [{from: a, to: b}]
      failoverPriority: [topology.kubernetes.io/zone]
"#,
        );
        assert_eq!(
            fields(&dr.validate()),
            ["spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[0]"]
        );
    }

    #[test]
    fn locality_overlaps() {
        assert!(validate_localities(&["us-west/zone1/*", "us-west/zone2/*"]).is_ok());
        assert!(validate_localities(&["us-west", "us-east/zone1"]).is_ok());
        assert!(validate_localities(&["us-west", "us-west/zone1"]).is_err());
        assert!(validate_localities(&["us-west/zone1", "us-west"]).is_err());
        assert!(validate_localities(&["us-west/*", "us-west/zone1"]).is_err());
        assert!(validate_localities(&["*", "us-west"]).is_err());
        assert!(validate_localities(&["us-west/zone1/*", "us-west/zone1/a"]).is_err());
        assert!(validate_localities(&["us-*-west"]).is_err());
        assert!(validate_localities(&["us-west//a"]).is_err());
    }

    #[test]
    fn uint64_fields_accept_protobuf_json_strings() {
        let hash: ConsistentHashLb = serde_json::from_value(serde_json::json!({
            "useSourceIp": true, "maglev": {"tableSize": "65537"}, "minimumRingSize": null
        }))
        .unwrap();
        assert_eq!(hash.maglev, Some(MagLev { table_size: 65537 }));
        let ring: RingHash = serde_saphyr::from_str("minimumRingSize: 2048").unwrap();
        assert_eq!(ring.minimum_ring_size, 2048);
        assert_eq!(
            serde_json::to_value(&ring).unwrap()["minimumRingSize"],
            2048
        );
        assert!(serde_json::from_str::<RingHash>(r#"{"minimumRingSize": -1}"#).is_err());
        assert!(serde_json::from_str::<RingHash>(r#"{"minimumRingSize": "x"}"#).is_err());
    }

    #[test]
    fn primes_match_envoy() {
        assert!(is_prime(1));
        assert!(is_prime(2));
        assert!(is_prime(65537));
        assert!(!is_prime(0));
        assert!(!is_prime(100));
        assert!(!is_prime(9));
    }
}
