//! DestinationRule traffic policies on outbound clusters, as istiod 1.24 applies them
//! (`applyTrafficPolicy` and friends), and the route `hash_policy` a consistent-hash
//! destination needs.
//!
//! - Which policy applies to a cluster: the rule's top-level policy, replaced as a whole by a
//!   matching `portLevelSettings` entry (port-level settings do not inherit), then a subset's
//!   policy overriding component by component (`MergeSubsetTrafficPolicy`): see
//!   [`cluster_policy`] and [`subset_policy`].
//! - `connectionPool` → `circuit_breakers` (one DEFAULT threshold, every limit 2^32-1 unless
//!   set), `connect_timeout`, `upstream_connection_options.tcp_keepalive`, and the
//!   `envoy.extensions.upstreams.http.v3.HttpProtocolOptions` common options (idle timeout,
//!   requests per connection, connection duration, HTTP/2 concurrent streams),
//!   `useClientProtocol` and `h2UpgradePolicy`.
//! - `outlierDetection` → `outlier_detection` (success-rate ejection off, 5xx/gateway/local-origin
//!   enforcement at 100%) and `common_lb_config.healthy_panic_threshold` = `minHealthPercent`;
//!   the deprecated `consecutiveErrors` is ignored, as istiod 1.24 ignores it.
//! - `loadBalancer` → `lb_policy` (`LEAST_CONN` and unset mean `LEAST_REQUEST`; `PASSTHROUGH`
//!   makes an `ORIGINAL_DST` cluster), slow start from `warmup`/`warmupDurationSecs`,
//!   `RING_HASH`/`MAGLEV` with their table sizes for `consistentHash`; [`hash_policies`] gives
//!   the route side.
//! - `tls` → an `envoy.transport_sockets.tls` `UpstreamTlsContext` for `SIMPLE` and `MUTUAL`.
//!   istiod hands file certificates to the proxy through its agent's SDS; upstream Envoy has no
//!   such agent, so the files (certificate, key, CA, CRL) are referenced directly (`filename`
//!   data sources), and the "system" CA istiod uses when `caCertificates` is empty is the
//!   Debian/Ubuntu bundle path istio-agent tries first. `sni` / `subjectAltNames` as given,
//!   else Envoy's `auto_sni` / `auto_san_validation`.
//!
//! Not translated (yet): `ISTIO_MUTUAL` and `credentialName` (need SDS and workload
//! certificates), locality load balancing, `tunnel`, `proxyProtocol`, and the mesh-wide
//! `h2UpgradePolicy` / `tcpKeepalive` (not in our MeshConfig; treated as unset).

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlierDetection, UpstreamConnectionOptions,
    circuit_breakers::Thresholds,
    cluster::{
        ClusterDiscoveryType, CommonLbConfig, DiscoveryType, LbConfig, LbPolicy,
        LeastRequestLbConfig, MaglevLbConfig, RingHashLbConfig, RoundRobinLbConfig,
        SlowStartConfig,
    },
};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HttpProtocolOptions as CommonHttpProtocolOptions, RuntimeDouble, TcpKeepalive,
    TransportSocket, UpstreamHttpProtocolOptions, data_source::Specifier as DataSpecifier,
    transport_socket::ConfigType,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{
    HashPolicy,
    hash_policy::{ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter},
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, TlsCertificate, TlsParameters,
    UpstreamTlsContext, common_tls_context::ValidationContextType, tls_parameters::TlsProtocol,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    },
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{UInt32Value, UInt64Value};

use crate::model::istio::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb, DestinationRule,
    H2UpgradePolicy, LoadBalancerSettings, OutlierDetection, PortTrafficPolicy, SimpleLb,
    TcpKeepalive as IstioTcpKeepalive, TrafficPolicy, WarmupConfiguration,
};
use crate::model::mesh::MeshConfig;
use crate::model::proxy::Proxy;
use crate::model::push_context::PushContext;
use crate::translate::{any, parse_outbound_cluster_name, pb_duration};

/// The CA bundle istio-agent reads for `caCertificates: system` (its first candidate).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

// ---------------------------------------------------------------------------
// Which policy applies
// ---------------------------------------------------------------------------

/// The port-level view of `policy` for `port` (istiod's `GetPortLevelTrafficPolicy`): a
/// matching `portLevelSettings` entry replaces the load balancer, connection pool, outlier
/// detection and TLS as a whole (unset parts fall back to defaults, not to the top level).
/// The bool says whether a port-level entry matched.
fn port_level(policy: &TrafficPolicy, port: u16) -> (TrafficPolicy, bool) {
    let matched = policy
        .port_level_settings
        .iter()
        .find(|p| p.port.as_ref().is_some_and(|s| s.number == u32::from(port)));
    match matched {
        Some(PortTrafficPolicy {
            load_balancer,
            connection_pool,
            outlier_detection,
            tls,
            ..
        }) => (
            TrafficPolicy {
                load_balancer: load_balancer.clone(),
                connection_pool: connection_pool.clone(),
                outlier_detection: outlier_detection.clone(),
                tls: tls.clone(),
                ..Default::default()
            },
            true,
        ),
        None => (policy.clone(), false),
    }
}

/// The policy for the service cluster of `port` (no subset).
pub fn cluster_policy(dr: &DestinationRule, port: u16) -> Option<TrafficPolicy> {
    dr.traffic_policy.as_ref().map(|p| port_level(p, port).0)
}

/// The policy for a subset cluster: `base` (the rule's policy for the port, from
/// [`cluster_policy`]) overridden by the subset's own policy (its port-level view), component by
/// component; a subset port-level entry replaces all four components (istiod's
/// `MergeSubsetTrafficPolicy`). Tunnel and PROXY protocol are taken when the subset sets them.
pub fn subset_policy(
    base: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
    port: u16,
) -> Option<TrafficPolicy> {
    let base = base.map(|b| port_level(b, port).0);
    let Some(subset) = subset else {
        return base;
    };
    let (sub, port_level_matched) = port_level(subset, port);
    let Some(base) = base else {
        return Some(sub);
    };
    let mut merged = TrafficPolicy {
        port_level_settings: Vec::new(),
        ..base
    };
    if sub.connection_pool.is_some() || port_level_matched {
        merged.connection_pool = sub.connection_pool;
    }
    if sub.outlier_detection.is_some() || port_level_matched {
        merged.outlier_detection = sub.outlier_detection;
    }
    if sub.load_balancer.is_some() || port_level_matched {
        merged.load_balancer = sub.load_balancer;
    }
    if sub.tls.is_some() || port_level_matched {
        merged.tls = sub.tls;
    }
    if sub.tunnel.is_some() {
        merged.tunnel = sub.tunnel;
    }
    if sub.proxy_protocol.is_some() {
        merged.proxy_protocol = sub.proxy_protocol;
    }
    Some(merged)
}

// ---------------------------------------------------------------------------
// Applying a policy to a cluster
// ---------------------------------------------------------------------------

/// Applies `policy` (None = no DestinationRule) to the outbound `cluster` for `port`, in
/// istiod's order: connection pool (defaults included), HTTP/2 upgrade, outlier detection,
/// load balancer, TLS. `http` holds the cluster's upstream HTTP protocol options as built so
/// far (the port protocol's); the caller serializes it into `typed_extension_protocol_options`.
pub fn apply(
    cluster: &mut Cluster,
    http: &mut Option<HttpProtocolOptions>,
    policy: Option<&TrafficPolicy>,
    mesh: &MeshConfig,
) {
    let default_pool = ConnectionPoolSettings::default();
    let pool = policy
        .and_then(|p| p.connection_pool.as_ref())
        .unwrap_or(&default_pool);
    apply_connection_pool(cluster, http, pool, mesh);
    if should_h2_upgrade(pool) {
        set_h2(http);
    }
    if let Some(outlier) = policy.and_then(|p| p.outlier_detection.as_ref()) {
        apply_outlier_detection(cluster, outlier);
    }
    apply_load_balancer(cluster, policy.and_then(|p| p.load_balancer.as_ref()));
    if let Some(tls) = policy.and_then(|p| p.tls.as_ref())
        && let Some(context) = upstream_tls_context(tls, http)
    {
        cluster.transport_socket = Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(ConfigType::TypedConfig(any(&context))),
        });
    }
    if is_original_dst(cluster) {
        cluster.lb_policy = LbPolicy::ClusterProvided as i32;
    }
}

/// Whether `policy`'s TLS mode makes istiod tag the cluster `alpn_override: "false"`.
pub fn overrides_alpn(policy: Option<&TrafficPolicy>) -> bool {
    matches!(
        policy.and_then(|p| p.tls.as_ref()).map(|t| t.mode),
        Some(ClientTlsMode::Simple | ClientTlsMode::Mutual)
    )
}

/// Whether `policy` asks for the original destination (`simple: PASSTHROUGH`).
pub fn is_passthrough(policy: Option<&TrafficPolicy>) -> bool {
    policy
        .and_then(|p| p.load_balancer.as_ref())
        .and_then(|lb| lb.simple)
        == Some(SimpleLb::Passthrough)
}

fn is_original_dst(cluster: &Cluster) -> bool {
    cluster.cluster_discovery_type
        == Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ))
}

fn u32_value(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

/// istiod's circuit breakers when nothing is set: the default thresholds.
pub fn default_circuit_breakers() -> CircuitBreakers {
    CircuitBreakers {
        thresholds: vec![default_thresholds()],
        ..Default::default()
    }
}

/// istiod's thresholds when nothing is set: effectively unlimited (Envoy's own defaults, e.g.
/// 3 retries, are too low during pod churn).
pub fn default_thresholds() -> Thresholds {
    Thresholds {
        max_connections: u32_value(u32::MAX),
        max_pending_requests: u32_value(u32::MAX),
        max_requests: u32_value(u32::MAX),
        max_retries: u32_value(u32::MAX),
        ..Default::default()
    }
}

/// `applyConnectionPool`. Zero means "unset" for the numeric limits, as in istiod (the API
/// cannot tell them apart).
fn apply_connection_pool(
    cluster: &mut Cluster,
    http: &mut Option<HttpProtocolOptions>,
    pool: &ConnectionPoolSettings,
    mesh: &MeshConfig,
) {
    let mut threshold = default_thresholds();
    let mut idle_timeout = None;
    let mut max_requests_per_connection = 0u32;
    let mut max_concurrent_streams = 0u32;
    let mut max_connection_duration = None;
    let positive = |v: i32| u32::try_from(v).ok().filter(|v| *v > 0);

    if let Some(h) = &pool.http {
        // Envoy applies max_requests to HTTP/2 and max_pending_requests to HTTP/1.1.
        if let Some(v) = positive(h.http2_max_requests) {
            threshold.max_requests = u32_value(v);
        }
        if let Some(v) = positive(h.http1_max_pending_requests) {
            threshold.max_pending_requests = u32_value(v);
        }
        if let Some(v) = positive(h.max_retries) {
            threshold.max_retries = u32_value(v);
        }
        idle_timeout = h.idle_timeout;
        max_requests_per_connection = positive(h.max_requests_per_connection).unwrap_or(0);
        max_concurrent_streams = positive(h.max_concurrent_streams).unwrap_or(0);
    }
    cluster.connect_timeout = Some(pb_duration(mesh.connect_timeout.as_std()));
    if let Some(tcp) = &pool.tcp {
        if let Some(t) = tcp.connect_timeout {
            cluster.connect_timeout = Some(pb_duration(t.as_std()));
        }
        if let Some(v) = positive(tcp.max_connections) {
            threshold.max_connections = u32_value(v);
        }
        if tcp.max_connection_duration.is_some() {
            max_connection_duration = tcp.max_connection_duration;
        }
        if idle_timeout.is_none() {
            idle_timeout = tcp.idle_timeout;
        }
        if let Some(keepalive) = &tcp.tcp_keepalive {
            apply_tcp_keepalive(cluster, keepalive);
        }
    }
    cluster.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![threshold],
        ..Default::default()
    });

    if max_connection_duration.is_some()
        || idle_timeout.is_some()
        || max_requests_per_connection > 0
        || max_concurrent_streams > 0
    {
        let options = http.get_or_insert_with(HttpProtocolOptions::default);
        let common = options
            .common_http_protocol_options
            .get_or_insert_with(CommonHttpProtocolOptions::default);
        if let Some(t) = idle_timeout {
            common.idle_timeout = Some(pb_duration(t.as_std()));
        }
        if max_requests_per_connection > 0 {
            common.max_requests_per_connection = u32_value(max_requests_per_connection);
        }
        if let Some(t) = max_connection_duration {
            common.max_connection_duration = Some(pb_duration(t.as_std()));
        }
        // Only a cluster that already speaks HTTP/2 (by its port protocol) gets the limit.
        if max_concurrent_streams > 0
            && let Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(h2)),
            })) = &mut options.upstream_protocol_options
        {
            h2.max_concurrent_streams = u32_value(max_concurrent_streams);
        }
    }
    if pool.http.as_ref().is_some_and(|h| h.use_client_protocol) {
        let options = http.get_or_insert_with(HttpProtocolOptions::default);
        options.upstream_protocol_options =
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                crate::translate::common::downstream_protocol(),
            ));
    }
}

/// SO_KEEPALIVE with the OS defaults, overridden field by field (whole seconds, as istiod).
fn apply_tcp_keepalive(cluster: &mut Cluster, keepalive: &IstioTcpKeepalive) {
    let options =
        cluster
            .upstream_connection_options
            .get_or_insert_with(|| UpstreamConnectionOptions {
                tcp_keepalive: Some(TcpKeepalive::default()),
                ..Default::default()
            });
    let ka = options
        .tcp_keepalive
        .get_or_insert_with(TcpKeepalive::default);
    if keepalive.probes > 0 {
        ka.keepalive_probes = u32_value(keepalive.probes);
    }
    let secs = |d: crate::model::duration::Duration| {
        u32_value(u32::try_from(d.as_std().as_secs()).unwrap_or(u32::MAX))
    };
    if let Some(t) = keepalive.time {
        ka.keepalive_time = secs(t);
    }
    if let Some(t) = keepalive.interval {
        ka.keepalive_interval = secs(t);
    }
}

/// `shouldH2Upgrade`: `useClientProtocol` never upgrades; `UPGRADE`/`DO_NOT_UPGRADE` decide for
/// any port (even sniffed ones); otherwise HTTP ports would follow the mesh-wide
/// `h2UpgradePolicy`, whose default (`DO_NOT_UPGRADE`) is the only value we model.
fn should_h2_upgrade(pool: &ConnectionPoolSettings) -> bool {
    if let Some(h) = &pool.http {
        if h.use_client_protocol {
            return false;
        }
        match h.h2_upgrade_policy {
            H2UpgradePolicy::Upgrade => return true,
            H2UpgradePolicy::DoNotUpgrade => return false,
            H2UpgradePolicy::Default => {}
        }
    }
    false
}

/// `setH2Options`: the cluster speaks HTTP/2 upstream (replacing any protocol selection made
/// before, as istiod does).
fn set_h2(http: &mut Option<HttpProtocolOptions>) {
    let options = http.get_or_insert_with(HttpProtocolOptions::default);
    options.upstream_protocol_options = Some(UpstreamProtocolOptions::ExplicitHttpConfig(
        ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Default::default())),
        },
    ));
}

/// `applyOutlierDetection`. The deprecated `consecutiveErrors` is ignored, as istiod 1.24
/// ignores it (validation only warns): Envoy's own defaults (5 consecutive 5xx) apply unless
/// `consecutive5xxErrors` / `consecutiveGatewayErrors` are set.
fn apply_outlier_detection(cluster: &mut Cluster, outlier: &OutlierDetection) {
    let enforcing = |v: u32| u32_value(if v > 0 { 100 } else { 0 });
    let mut out = EnvoyOutlierDetection {
        // Success-rate ejection stays off.
        enforcing_success_rate: u32_value(0),
        ..Default::default()
    };
    if let Some(v) = outlier.consecutive_5xx_errors {
        out.consecutive_5xx = u32_value(v);
        out.enforcing_consecutive_5xx = enforcing(v);
    }
    if let Some(v) = outlier.consecutive_gateway_errors {
        out.consecutive_gateway_failure = u32_value(v);
        out.enforcing_consecutive_gateway_failure = enforcing(v);
    }
    if let Some(t) = outlier.interval {
        out.interval = Some(pb_duration(t.as_std()));
    }
    if let Some(t) = outlier.base_ejection_time {
        out.base_ejection_time = Some(pb_duration(t.as_std()));
    }
    if let Ok(v) = u32::try_from(outlier.max_ejection_percent)
        && v > 0
    {
        out.max_ejection_percent = u32_value(v);
    }
    if outlier.split_external_local_origin_errors {
        out.split_external_local_origin_errors = true;
        if let Some(v) = outlier.consecutive_local_origin_failures.filter(|v| *v > 0) {
            out.consecutive_local_origin_failure = u32_value(v);
            out.enforcing_consecutive_local_origin_failure = u32_value(100);
        }
        out.enforcing_local_origin_success_rate = u32_value(0);
    }
    cluster.outlier_detection = Some(out);
    // Envoy's panic mode (default below 50% healthy) would send traffic to ejected hosts;
    // istiod disables it unless minHealthPercent says otherwise (0 = disabled).
    if outlier.min_health_percent >= 0 {
        cluster
            .common_lb_config
            .get_or_insert_with(CommonLbConfig::default)
            .healthy_panic_threshold = Some(Percent {
            value: f64::from(outlier.min_health_percent),
        });
    }
}

/// `applyLoadBalancer` (locality settings not translated).
fn apply_load_balancer(cluster: &mut Cluster, lb: Option<&LoadBalancerSettings>) {
    if is_original_dst(cluster) {
        cluster.lb_policy = LbPolicy::ClusterProvided as i32;
        return;
    }
    match lb.and_then(|lb| lb.simple).unwrap_or_default() {
        SimpleLb::LeastConn | SimpleLb::LeastRequest | SimpleLb::Unspecified => {
            // LEAST_REQUEST is also istiod's default algorithm.
            cluster.lb_policy = LbPolicy::LeastRequest as i32;
            if let Some(slow_start) = lb.and_then(slow_start) {
                cluster.lb_config = Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
                    slow_start_config: Some(slow_start),
                    ..Default::default()
                }));
            }
        }
        SimpleLb::Random => cluster.lb_policy = LbPolicy::Random as i32,
        SimpleLb::RoundRobin => {
            cluster.lb_policy = LbPolicy::RoundRobin as i32;
            if let Some(slow_start) = lb.and_then(slow_start) {
                cluster.lb_config = Some(LbConfig::RoundRobinLbConfig(RoundRobinLbConfig {
                    slow_start_config: Some(slow_start),
                }));
            }
        }
        SimpleLb::Passthrough => {
            cluster.lb_policy = LbPolicy::ClusterProvided as i32;
            cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            cluster.load_assignment = None;
        }
    }
    if let Some(hash) = lb.and_then(|lb| lb.consistent_hash.as_ref()) {
        apply_consistent_hash(cluster, hash);
    }
}

/// Slow start from `warmup` (aggression 1 and 10% minimum weight unless set), else from the
/// deprecated `warmupDurationSecs` (window only).
fn slow_start(lb: &LoadBalancerSettings) -> Option<SlowStartConfig> {
    if let Some(WarmupConfiguration {
        duration,
        minimum_percent,
        aggression,
    }) = &lb.warmup
    {
        return Some(SlowStartConfig {
            slow_start_window: duration.map(|d| pb_duration(d.as_std())),
            aggression: Some(RuntimeDouble {
                default_value: aggression.unwrap_or(1.0),
                // istiod's fixed, never-present runtime key: the value is not tunable.
                runtime_key: "(".into(),
            }),
            min_weight_percent: Some(Percent {
                value: minimum_percent.unwrap_or(10.0),
            }),
        });
    }
    lb.warmup_duration_secs.map(|d| SlowStartConfig {
        slow_start_window: Some(pb_duration(d.as_std())),
        ..Default::default()
    })
}

/// `ApplyRingHashLoadBalancer`: maglev (table size if set), ring hash (minimum ring size if
/// set), or without an algorithm a ring hash with the deprecated `minimumRingSize` (1024 if 0).
fn apply_consistent_hash(cluster: &mut Cluster, hash: &ConsistentHashLb) {
    if let Some(maglev) = &hash.maglev {
        cluster.lb_policy = LbPolicy::Maglev as i32;
        if maglev.table_size != 0 {
            cluster.lb_config = Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
                table_size: Some(UInt64Value {
                    value: maglev.table_size,
                }),
            }));
        }
    } else if let Some(ring) = &hash.ring_hash {
        cluster.lb_policy = LbPolicy::RingHash as i32;
        if ring.minimum_ring_size != 0 {
            cluster.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                minimum_ring_size: Some(UInt64Value {
                    value: ring.minimum_ring_size,
                }),
                ..Default::default()
            }));
        }
    } else {
        let size = if hash.minimum_ring_size != 0 {
            hash.minimum_ring_size
        } else {
            1024
        };
        cluster.lb_policy = LbPolicy::RingHash as i32;
        cluster.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
            minimum_ring_size: Some(UInt64Value { value: size }),
            ..Default::default()
        }));
    }
}

fn file(path: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(DataSpecifier::Filename(path.to_string())),
        ..Default::default()
    })
}

/// The upstream TLS context for `SIMPLE` / `MUTUAL` with file certificates; None for
/// `DISABLE`, and for what needs SDS:
/// - `ISTIO_MUTUAL` needs the mesh's workload certificates and root (istiod: SDS `default` and
///   `ROOTCA` from the agent). navarch has no CA/SDS yet, so the cluster stays plaintext.
/// - `credentialName`: istiod ignores it on sidecars unless the rule has a workloadSelector
///   (then plaintext, as here); with a selector it would come over SDS, which we lack.
///
/// May set `auto_sni` / `auto_san_validation` on `http` when no SNI is given, as istiod does.
// `match_subject_alt_names` is deprecated in favour of typed matchers, but it is what istiod
// emits (exact match on any SAN type) and Envoy still honours it.
#[allow(deprecated)]
fn upstream_tls_context(
    tls: &ClientTlsSettings,
    http: &mut Option<HttpProtocolOptions>,
) -> Option<UpstreamTlsContext> {
    let mutual = match tls.mode {
        ClientTlsMode::Disable | ClientTlsMode::IstioMutual => return None,
        ClientTlsMode::Simple => false,
        ClientTlsMode::Mutual => true,
    };
    if !tls.credential_name.is_empty() {
        return None;
    }
    if mutual && (tls.client_certificate.is_empty() || tls.private_key.is_empty()) {
        // istiod logs and leaves the cluster without TLS (validation rejects this anyway).
        return None;
    }
    let skip_verify = tls.insecure_skip_verify == Some(true);
    // Auto SNI from the request's host when none is configured; auto SAN validation too
    // unless SANs are given or verification is skipped.
    if tls.sni.is_empty() {
        let options = http.get_or_insert_with(HttpProtocolOptions::default);
        let upstream = options
            .upstream_http_protocol_options
            .get_or_insert_with(UpstreamHttpProtocolOptions::default);
        upstream.auto_sni = true;
        if tls.subject_alt_names.is_empty() && !skip_verify {
            upstream.auto_san_validation = true;
        }
    }
    let mut common = CommonTlsContext {
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
            tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    if mutual {
        common.tls_certificates.push(TlsCertificate {
            certificate_chain: file(&tls.client_certificate),
            private_key: file(&tls.private_key),
            ..Default::default()
        });
    }
    // istiod substitutes "system" for an empty CA, so verification is always on unless skipped.
    let ca = if tls.ca_certificates.is_empty() {
        SYSTEM_CA_BUNDLE
    } else {
        tls.ca_certificates.as_str()
    };
    let validation = if skip_verify {
        CertificateValidationContext::default()
    } else {
        CertificateValidationContext {
            trusted_ca: file(ca),
            match_subject_alt_names: tls
                .subject_alt_names
                .iter()
                .map(|san| StringMatcher {
                    match_pattern: Some(MatchPattern::Exact(san.clone())),
                    ..Default::default()
                })
                .collect(),
            crl: if tls.ca_crl.is_empty() {
                None
            } else {
                file(&tls.ca_crl)
            },
            ..Default::default()
        }
    };
    common.validation_context_type = Some(ValidationContextType::ValidationContext(validation));
    if is_h2(http.as_ref()) {
        common.alpn_protocols = vec!["h2".into()];
    }
    Some(UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: tls.sni.clone(),
        ..Default::default()
    })
}

fn is_h2(http: Option<&HttpProtocolOptions>) -> bool {
    matches!(
        http.and_then(|h| h.upstream_protocol_options.as_ref()),
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(_)),
            }
        ))
    )
}

// ---------------------------------------------------------------------------
// Route side: hash policies
// ---------------------------------------------------------------------------

/// The `RouteAction.hash_policy` entries for a route to `cluster_name`
/// (`outbound|<port>|<subset>|<host>`): empty unless the DestinationRule this proxy sees for
/// the host asks for consistent hashing. Same as [`hash_policies_for_destination`] with the
/// cluster's port taken as explicitly given.
pub fn hash_policies(push: &PushContext, proxy: &Proxy, cluster_name: &str) -> Vec<HashPolicy> {
    match parse_outbound_cluster_name(cluster_name) {
        Some((port, subset, host)) => {
            hash_policies_for_destination(push, proxy, host, subset, Some(port))
        }
        None => Vec::new(),
    }
}

/// istiod's `hashForHTTPDestination` + `consistentHashToHashPolicy` for a destination `host`
/// (FQDN), `subset` ("" for none) and `port` — the destination's explicit port; istiod only
/// consults `portLevelSettings` when the VirtualService destination names a port (for the
/// default route of a service, pass the service port). Precedence: the subset's port-level
/// hash, the subset's hash, the rule's port-level hash, the rule's hash.
pub fn hash_policies_for_destination(
    push: &PushContext,
    proxy: &Proxy,
    host: &str,
    subset: &str,
    port: Option<u16>,
) -> Vec<HashPolicy> {
    let Some(dr) = push.destination_rule_for(&proxy.namespace, host) else {
        return Vec::new();
    };
    let hash = consistent_hash_for(&dr.spec, subset, port);
    hash.and_then(hash_policy).into_iter().collect()
}

/// Whether routes to `cluster_name` are consistent-hash routes: the rule has a
/// `consistentHash` for it, even one without a hash key (istiod then drops the `previous_hosts`
/// retry predicate from single-destination VirtualService routes).
pub fn is_consistent_hash(push: &PushContext, proxy: &Proxy, cluster_name: &str) -> bool {
    parse_outbound_cluster_name(cluster_name).is_some_and(|(port, subset, host)| {
        is_consistent_hash_destination(push, proxy, host, subset, Some(port))
    })
}

/// [`is_consistent_hash`] for a destination, with the same arguments as
/// [`hash_policies_for_destination`].
pub fn is_consistent_hash_destination(
    push: &PushContext,
    proxy: &Proxy,
    host: &str,
    subset: &str,
    port: Option<u16>,
) -> bool {
    push.destination_rule_for(&proxy.namespace, host)
        .and_then(|dr| consistent_hash_for(&dr.spec, subset, port))
        .is_some()
}

fn consistent_hash_for<'a>(
    dr: &'a DestinationRule,
    subset: &str,
    port: Option<u16>,
) -> Option<&'a ConsistentHashLb> {
    let hash_of =
        |lb: Option<&'a LoadBalancerSettings>| lb.and_then(|l| l.consistent_hash.as_ref());
    // The first port-level entry for the port decides, even when it has no hash.
    let port_level_hash = |pls: &'a [PortTrafficPolicy]| {
        let port = u32::from(port?);
        pls.iter()
            .find(|p| p.port.as_ref().is_some_and(|s| s.number == port))
            .and_then(|p| hash_of(p.load_balancer.as_ref()))
    };
    let top = dr.traffic_policy.as_ref();
    let mut hash = hash_of(top.and_then(|p| p.load_balancer.as_ref()));
    let pls_hash = top.and_then(|p| port_level_hash(&p.port_level_settings));
    let (mut subset_hash, mut subset_pls_hash) = (None, None);
    if let Some(s) = dr.subsets.iter().find(|s| s.name == subset) {
        let policy = s.traffic_policy.as_ref();
        subset_hash = hash_of(policy.and_then(|p| p.load_balancer.as_ref()));
        subset_pls_hash = policy.and_then(|p| port_level_hash(&p.port_level_settings));
    }
    if let Some(h) = subset_pls_hash.or(subset_hash).or(pls_hash) {
        hash = Some(h);
    }
    hash
}

/// `consistentHashToHashPolicy`: the hash key as an Envoy hash policy (None without a key).
fn hash_policy(hash: &ConsistentHashLb) -> Option<HashPolicy> {
    let specifier = if let Some(name) = &hash.http_header_name {
        PolicySpecifier::Header(Header {
            header_name: name.clone(),
            ..Default::default()
        })
    } else if let Some(cookie) = &hash.http_cookie {
        PolicySpecifier::Cookie(Cookie {
            name: cookie.name.clone(),
            ttl: cookie.ttl.map(|t| pb_duration(t.as_std())),
            path: cookie.path.clone(),
            ..Default::default()
        })
    } else if let Some(source_ip) = hash.use_source_ip {
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip })
    } else if let Some(name) = &hash.http_query_parameter_name {
        PolicySpecifier::QueryParameter(QueryParameter { name: name.clone() })
    } else {
        return None;
    };
    Some(HashPolicy {
        policy_specifier: Some(specifier),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Config;
    use crate::model::config::{ConfigKind, ConfigMeta};
    use crate::model::push_context::ConfigStore;
    use crate::model::registry::Protocol;

    fn parse(yaml: &str) -> DestinationRule {
        let dr: DestinationRule = serde_saphyr::from_str(yaml).unwrap();
        assert!(dr.validate().is_empty(), "{:?}", dr.validate());
        dr
    }

    /// A cluster as cluster.rs starts it, with `policy` applied.
    fn cluster(
        policy: Option<&TrafficPolicy>,
        protocol: Protocol,
    ) -> (Cluster, Option<HttpProtocolOptions>) {
        let mut c = Cluster {
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            common_lb_config: Some(CommonLbConfig::default()),
            ..Default::default()
        };
        let mut http = crate::translate::common::upstream_protocol_options(protocol);
        apply(&mut c, &mut http, policy, &MeshConfig::default());
        (c, http)
    }

    fn thresholds(c: &Cluster) -> [u32; 4] {
        let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
        let v = |x: &Option<UInt32Value>| x.unwrap().value;
        [
            v(&t.max_connections),
            v(&t.max_pending_requests),
            v(&t.max_requests),
            v(&t.max_retries),
        ]
    }

    use envoy_types::pb::google::protobuf::Duration as PbDuration;
    use std::time::Duration as StdDuration;
    fn secs(s: f64) -> Option<PbDuration> {
        Some(pb_duration(StdDuration::from_secs_f64(s)))
    }

    #[test]
    fn no_rule_gets_istiods_defaults() {
        let (c, http) = cluster(None, Protocol::Http);
        assert_eq!(thresholds(&c), [u32::MAX; 4]);
        // istiod 1.31 no longer asks Envoy to track remaining capacity.
        assert!(!c.circuit_breakers.as_ref().unwrap().thresholds[0].track_remaining);
        assert_eq!(c.connect_timeout, secs(10.0));
        assert_eq!(c.lb_policy, LbPolicy::LeastRequest as i32);
        assert!(c.lb_config.is_none() && c.outlier_detection.is_none());
        assert!(c.transport_socket.is_none());
        assert!(http.is_none());
    }

    #[test]
    fn connection_pool_limits_and_zero_as_unset() {
        let dr = parse(
            "host: a\ntrafficPolicy:\n  connectionPool:\n    tcp: {maxConnections: 0, connectTimeout: 250ms}\n    http: {http1MaxPendingRequests: 3, http2MaxRequests: 0, maxRetries: 9}\n",
        );
        let (c, http) = cluster(dr.traffic_policy.as_ref(), Protocol::Http);
        assert_eq!(thresholds(&c), [u32::MAX, 3, u32::MAX, 9]);
        assert_eq!(c.connect_timeout, secs(0.25));
        assert!(http.is_none(), "no common HTTP options were set");
    }

    #[test]
    fn http_options_streams_and_protocol_selection() {
        // maxConcurrentStreams only on a cluster that already speaks HTTP/2.
        let dr = parse(
            "host: a\ntrafficPolicy:\n  connectionPool:\n    http: {maxConcurrentStreams: 7}\n",
        );
        let p = dr.traffic_policy.as_ref();
        let (_, h1) = cluster(p, Protocol::Http);
        let h1 = h1.unwrap();
        assert_eq!(h1.common_http_protocol_options, Some(Default::default()));
        assert!(!is_h2(Some(&h1)));
        let (_, h2) = cluster(p, Protocol::Grpc);
        match h2.unwrap().upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(o)),
            })) => assert_eq!(o.max_concurrent_streams, Some(UInt32Value { value: 7 })),
            other => panic!("{other:?}"),
        }
        // http.idleTimeout wins over tcp.idleTimeout; useClientProtocol beats the port's h2.
        let dr = parse(
            "host: a\ntrafficPolicy:\n  connectionPool:\n    tcp: {idleTimeout: 5s, maxConnectionDuration: 1m}\n    http: {idleTimeout: 2s, useClientProtocol: true, maxRequestsPerConnection: 1}\n",
        );
        let (_, http) = cluster(dr.traffic_policy.as_ref(), Protocol::Http2);
        let http = http.unwrap();
        let common = http.common_http_protocol_options.unwrap();
        assert_eq!(common.idle_timeout, secs(2.0));
        assert_eq!(common.max_connection_duration, secs(60.0));
        assert_eq!(
            common.max_requests_per_connection,
            Some(UInt32Value { value: 1 })
        );
        assert!(matches!(
            http.upstream_protocol_options,
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_))
        ));
        // UPGRADE makes any port HTTP/2 (a sniffed one too); DO_NOT_UPGRADE leaves it alone.
        let dr = parse(
            "host: a\ntrafficPolicy:\n  connectionPool:\n    http: {h2UpgradePolicy: UPGRADE}\n",
        );
        let (_, http) = cluster(dr.traffic_policy.as_ref(), Protocol::Unsupported);
        assert!(is_h2(http.as_ref()));
        let dr = parse(
            "host: a\ntrafficPolicy:\n  connectionPool:\n    http: {h2UpgradePolicy: DO_NOT_UPGRADE}\n",
        );
        let (_, http) = cluster(dr.traffic_policy.as_ref(), Protocol::Unsupported);
        assert!(matches!(
            http.unwrap().upstream_protocol_options,
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_))
        ));
    }

    #[test]
    fn tcp_keepalive_whole_seconds() {
        let dr = parse(
            "host: a\ntrafficPolicy:\n  connectionPool:\n    tcp: {tcpKeepalive: {time: 90500ms}}\n",
        );
        let (c, _) = cluster(dr.traffic_policy.as_ref(), Protocol::Tcp);
        let ka = c
            .upstream_connection_options
            .unwrap()
            .tcp_keepalive
            .unwrap();
        assert_eq!(ka.keepalive_time, Some(UInt32Value { value: 90 }));
        assert_eq!(ka.keepalive_probes, None);
        assert_eq!(ka.keepalive_interval, None);
    }

    #[test]
    fn outlier_detection_as_istiod() {
        let dr = parse(
            "host: a\ntrafficPolicy:\n  outlierDetection: {consecutiveErrors: 4, consecutiveGatewayErrors: 2, maxEjectionPercent: 0}\n",
        );
        let policy = dr.traffic_policy.clone().unwrap();
        let (c, _) = cluster(Some(&policy), Protocol::Http);
        let od = c.outlier_detection.unwrap();
        // The deprecated consecutiveErrors is ignored; Envoy's defaults stand.
        assert_eq!(od.consecutive_5xx, None);
        assert_eq!(
            od.consecutive_gateway_failure,
            Some(UInt32Value { value: 2 })
        );
        assert_eq!(
            od.enforcing_consecutive_gateway_failure,
            Some(UInt32Value { value: 100 })
        );
        assert_eq!(od.enforcing_success_rate, Some(UInt32Value { value: 0 }));
        assert_eq!(od.max_ejection_percent, None);
        assert!(!od.split_external_local_origin_errors);
        // minHealthPercent 0: panic mode off.
        let panic = c.common_lb_config.unwrap().healthy_panic_threshold.unwrap();
        assert_eq!(panic.value, 0.0);

        let dr = parse(
            "host: a\ntrafficPolicy:\n  outlierDetection: {splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3, minHealthPercent: 40}\n",
        );
        let (c, _) = cluster(dr.traffic_policy.as_ref(), Protocol::Http);
        let od = c.outlier_detection.unwrap();
        assert!(od.split_external_local_origin_errors);
        assert_eq!(
            od.consecutive_local_origin_failure,
            Some(UInt32Value { value: 3 })
        );
        let hundred = Some(UInt32Value { value: 100 });
        assert_eq!(od.enforcing_consecutive_local_origin_failure, hundred);
        assert_eq!(
            od.enforcing_local_origin_success_rate,
            Some(UInt32Value { value: 0 })
        );
        let panic = c.common_lb_config.unwrap().healthy_panic_threshold.unwrap();
        assert_eq!(panic.value, 40.0);
    }

    #[test]
    fn load_balancers_and_hash_tables() {
        let lb = |yaml: &str| {
            let dr = parse(&format!(
                "host: a\ntrafficPolicy:\n  loadBalancer: {yaml}\n"
            ));
            cluster(dr.traffic_policy.as_ref(), Protocol::Http).0
        };
        assert_eq!(
            lb("{simple: LEAST_CONN}").lb_policy,
            LbPolicy::LeastRequest as i32
        );
        assert_eq!(lb("{simple: RANDOM}").lb_policy, LbPolicy::Random as i32);
        assert_eq!(
            lb("{simple: ROUND_ROBIN}").lb_policy,
            LbPolicy::RoundRobin as i32
        );
        let c = lb("{simple: PASSTHROUGH}");
        assert_eq!(c.lb_policy, LbPolicy::ClusterProvided as i32);
        assert!(is_original_dst(&c));
        let c = lb("{warmupDurationSecs: 20s}");
        match c.lb_config {
            Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
                slow_start_config: Some(s),
                ..
            })) => {
                assert_eq!(s.slow_start_window, secs(20.0));
                assert!(s.aggression.is_none());
            }
            other => panic!("{other:?}"),
        }
        let c = lb("{consistentHash: {httpHeaderName: x}}");
        assert_eq!(c.lb_policy, LbPolicy::RingHash as i32);
        assert!(matches!(
            c.lb_config,
            Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                minimum_ring_size: Some(UInt64Value { value: 1024 }),
                ..
            }))
        ));
        let c = lb("{consistentHash: {httpHeaderName: x, minimumRingSize: 64}}");
        assert!(matches!(
            c.lb_config,
            Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                minimum_ring_size: Some(UInt64Value { value: 64 }),
                ..
            }))
        ));
        let c = lb("{consistentHash: {httpHeaderName: x, ringHash: {}}}");
        assert_eq!(c.lb_policy, LbPolicy::RingHash as i32);
        assert!(c.lb_config.is_none());
        let c = lb("{consistentHash: {useSourceIp: true, maglev: {tableSize: 5}}}");
        assert_eq!(c.lb_policy, LbPolicy::Maglev as i32);
    }

    #[test]
    fn port_level_settings_replace_and_subsets_override() {
        let dr = parse(
            r#"
host: a
trafficPolicy:
  loadBalancer: {simple: RANDOM}
  connectionPool: {tcp: {maxConnections: 5}}
  tunnel: {targetHost: a.example.com, targetPort: 443}
  portLevelSettings:
  - port: {number: 9000}
    outlierDetection: {consecutive5xxErrors: 1}
subsets:
- name: lb
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
- name: pls
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 9}}
    portLevelSettings:
    - port: {number: 8000}
      tls: {mode: DISABLE}
"#,
        );
        let top = cluster_policy(&dr, 8000).unwrap();
        assert_eq!(
            top.load_balancer.as_ref().unwrap().simple,
            Some(SimpleLb::Random)
        );
        assert!(top.tunnel.is_some());
        // The port's entry replaces everything (and tunnel is not carried over).
        let p9000 = cluster_policy(&dr, 9000).unwrap();
        assert!(p9000.load_balancer.is_none() && p9000.connection_pool.is_none());
        assert!(p9000.outlier_detection.is_some() && p9000.tunnel.is_none());
        // A subset overrides only what it sets.
        let lb = subset_policy(Some(&top), dr.subsets[0].traffic_policy.as_ref(), 8000).unwrap();
        assert_eq!(lb.load_balancer.unwrap().simple, Some(SimpleLb::RoundRobin));
        assert_eq!(lb.connection_pool.unwrap().tcp.unwrap().max_connections, 5);
        assert!(lb.tunnel.is_some());
        // A subset's port-level entry replaces all four parts, even the ones it leaves unset.
        let pls = subset_policy(Some(&top), dr.subsets[1].traffic_policy.as_ref(), 8000).unwrap();
        assert!(pls.load_balancer.is_none() && pls.connection_pool.is_none());
        assert_eq!(pls.tls.unwrap().mode, ClientTlsMode::Disable);
        // ... but on another port the subset's own top level applies.
        let other =
            subset_policy(Some(&p9000), dr.subsets[1].traffic_policy.as_ref(), 9000).unwrap();
        assert_eq!(
            other.connection_pool.unwrap().tcp.unwrap().max_connections,
            9
        );
        assert!(other.outlier_detection.is_some());
        // No rule-level policy: the subset's alone.
        assert_eq!(subset_policy(None, None, 8000), None);
    }

    #[test]
    fn tls_contexts() {
        let tls = |yaml: &str, protocol| {
            let dr = parse(&format!("host: a\ntrafficPolicy:\n  tls: {yaml}\n"));
            let (c, http) = cluster(dr.traffic_policy.as_ref(), protocol);
            let ctx = c.transport_socket.map(|ts| match ts.config_type {
                Some(ConfigType::TypedConfig(any)) => {
                    <UpstreamTlsContext as prost::Message>::decode(any.value.as_slice()).unwrap()
                }
                None => panic!("no config"),
            });
            (ctx, http)
        };
        assert_eq!(tls("{mode: DISABLE}", Protocol::Http).0, None);
        assert_eq!(tls("{mode: ISTIO_MUTUAL}", Protocol::Http).0, None);
        let (ctx, http) = tls("{mode: SIMPLE}", Protocol::Http2);
        let ctx = ctx.unwrap();
        let common = ctx.common_tls_context.unwrap();
        assert_eq!(common.alpn_protocols, ["h2"]);
        match common.validation_context_type {
            Some(ValidationContextType::ValidationContext(v)) => {
                assert_eq!(v.trusted_ca, file(SYSTEM_CA_BUNDLE));
            }
            other => panic!("{other:?}"),
        }
        let upstream = http.unwrap().upstream_http_protocol_options.unwrap();
        assert!(upstream.auto_sni && upstream.auto_san_validation);
        let (ctx, http) = tls(
            "{mode: SIMPLE, sni: a.example.com, insecureSkipVerify: true}",
            Protocol::Http,
        );
        let ctx = ctx.unwrap();
        assert_eq!(ctx.sni, "a.example.com");
        assert!(http.is_none());
        assert_eq!(
            ctx.common_tls_context.unwrap().validation_context_type,
            Some(ValidationContextType::ValidationContext(Default::default()))
        );
    }

    fn push_with(dr_yaml: &str) -> (PushContext, Proxy) {
        let spec: DestinationRule = serde_saphyr::from_str(dr_yaml).unwrap();
        let meta = ConfigMeta {
            kind: ConfigKind::DestinationRule,
            api_version: "networking.istio.io/v1".into(),
            name: "a".into(),
            namespace: "ns".into(),
            labels: Default::default(),
            annotations: Default::default(),
            creation_timestamp: None,
            resource_version: None,
            source: "test".into(),
        };
        let store = ConfigStore {
            destination_rules: vec![Config { meta, spec }.into()],
            ..Default::default()
        };
        let meta = serde_json::json!({});
        let proxy = Proxy::from_node(
            "sidecar~10.0.0.1~c.ns~ns.svc.cluster.local",
            meta.as_object().unwrap(),
        )
        .unwrap();
        (PushContext::new(store), proxy)
    }

    #[test]
    fn hash_policies_follow_istiods_precedence() {
        let (push, proxy) = push_with(
            r#"
host: a.ns.svc.cluster.local
trafficPolicy:
  loadBalancer: {consistentHash: {httpHeaderName: x-top}}
  portLevelSettings:
  - port: {number: 9000}
    loadBalancer: {consistentHash: {httpQueryParameterName: q}}
  - port: {number: 9001}
    connectionPool: {tcp: {maxConnections: 1}}
subsets:
- name: cookie
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: c, path: /p, ttl: 10s}}}
    portLevelSettings:
    - port: {number: 9000}
      loadBalancer: {consistentHash: {useSourceIp: true}}
- name: plain
  labels: {v: "1"}
"#,
        );
        let specifier = |cluster: &str| {
            let mut p = hash_policies(&push, &proxy, cluster);
            assert!(p.len() <= 1);
            p.pop().and_then(|p| p.policy_specifier)
        };
        let header = |name: &str| {
            Some(PolicySpecifier::Header(Header {
                header_name: name.into(),
                ..Default::default()
            }))
        };
        let host = "a.ns.svc.cluster.local";
        assert_eq!(
            specifier(&format!("outbound|8000||{host}")),
            header("x-top")
        );
        assert_eq!(
            specifier(&format!("outbound|9000||{host}")),
            Some(PolicySpecifier::QueryParameter(QueryParameter {
                name: "q".into()
            }))
        );
        // A port-level entry without a hash keeps the rule's.
        assert_eq!(
            specifier(&format!("outbound|9001||{host}")),
            header("x-top")
        );
        assert_eq!(
            specifier(&format!("outbound|8000|cookie|{host}")),
            Some(PolicySpecifier::Cookie(Cookie {
                name: "c".into(),
                path: "/p".into(),
                ttl: secs(10.0),
                ..Default::default()
            }))
        );
        assert_eq!(
            specifier(&format!("outbound|9000|cookie|{host}")),
            Some(PolicySpecifier::ConnectionProperties(
                ConnectionProperties { source_ip: true }
            ))
        );
        assert_eq!(
            specifier(&format!("outbound|9000|plain|{host}")),
            Some(PolicySpecifier::QueryParameter(QueryParameter {
                name: "q".into()
            }))
        );
        // A VirtualService destination without a port: port-level settings are not consulted.
        let p = hash_policies_for_destination(&push, &proxy, host, "", None);
        assert_eq!(p[0].policy_specifier, header("x-top"));
        assert!(is_consistent_hash(
            &push,
            &proxy,
            &format!("outbound|8000||{host}")
        ));
        assert!(is_consistent_hash_destination(
            &push, &proxy, host, "plain", None
        ));
        assert!(
            hash_policies(&push, &proxy, "outbound|8000||other.ns.svc.cluster.local").is_empty()
        );
        assert!(!is_consistent_hash(&push, &proxy, "PassthroughCluster"));
    }

    #[test]
    fn a_keyless_consistent_hash_has_no_hash_policy_but_counts_as_consistent_hash() {
        let (push, proxy) = push_with(
            "host: a.ns.svc.cluster.local\ntrafficPolicy:\n  loadBalancer: {consistentHash: {ringHash: {minimumRingSize: 8}}}\n",
        );
        let cluster = "outbound|80||a.ns.svc.cluster.local";
        assert!(hash_policies(&push, &proxy, cluster).is_empty());
        assert!(is_consistent_hash(&push, &proxy, cluster));
    }
}
