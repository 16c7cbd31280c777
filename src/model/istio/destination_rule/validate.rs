//! DestinationRule validation, as istiod's `ValidateDestinationRule`: host, subsets, traffic
//! policies (load balancer, connection pool, outlier detection, TLS, port-level settings).
//! Reads the types of `destination_rule` and reports into `Errors`; it builds nothing.

use super::*;

/// The [`Settings`] of a [`TrafficPolicy`] or a [`PortTrafficPolicy`]: the
/// two types name these fields alike but share no type for them.
macro_rules! settings_of {
    ($policy:expr) => {
        Settings {
            outlier_detection: $policy.outlier_detection.as_ref(),
            connection_pool: $policy.connection_pool.as_ref(),
            load_balancer: $policy.load_balancer.as_ref(),
            tls: $policy.tls.as_ref(),
        }
    };
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

impl DestinationRule {
    /// Validates the spec as istiod does; empty means valid.
    pub fn validate(&self) -> Vec<ValidationError> {
        validate_spec(|path, errs| self.validate_at(path, errs))
    }

    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        errs.check(&path.field("host"), validate_wildcard_domain(&self.host));
        if let Some(policy) = &self.traffic_policy {
            policy.validate_at(&path.field("trafficPolicy"), errs);
        }
        let mut names = BTreeSet::new();
        for (i, subset) in self.subsets.iter().enumerate() {
            let at = path.field("subsets").index(i);
            if !names.insert(subset.name.as_str()) {
                errs.add(
                    &at.field("name"),
                    format!("duplicate subset names: {}", subset.name),
                );
            }
            subset.validate_at(&at, errs);
        }
        let owner = if self.workload_selector.is_some() {
            ExportToOwner::SelectorDestinationRule
        } else {
            ExportToOwner::Other
        };
        validate_export_to(&self.export_to, owner, &path.field("exportTo"), errs);
        if let Some(selector) = &self.workload_selector {
            selector.validate_at(&path.field("workloadSelector"), errs);
        }
    }
}

impl Subset {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        errs.check(&path.field("name"), validate_subset_name(&self.name));
        validate_labels(&self.labels, &path.field("labels"), errs);
        if let Some(policy) = &self.traffic_policy {
            policy.validate_at(&path.field("trafficPolicy"), errs);
        }
    }
}

impl TrafficPolicy {
    pub(super) fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if *self == TrafficPolicy::default() {
            errs.add(path, "traffic policy must have at least one field");
            return;
        }
        if self.tunnel.is_some() && self.proxy_protocol.is_some() {
            errs.add(path, "tunnel and proxyProtocol must not be set together");
            return;
        }
        validate_settings(settings_of!(self), path, errs);
        for (i, port_policy) in self.port_level_settings.iter().enumerate() {
            port_policy.validate_at(&path.field("portLevelSettings").index(i), errs);
        }
        if let Some(tunnel) = &self.tunnel {
            tunnel.validate_at(&path.field("tunnel"), errs);
        }
    }
}

impl PortTrafficPolicy {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if self.port.is_none() {
            errs.add(
                &path.field("port"),
                "portTrafficPolicy must have valid port",
            );
        }
        if self.outlier_detection.is_none()
            && self.connection_pool.is_none()
            && self.load_balancer.is_none()
            && self.tls.is_none()
        {
            errs.add(path, "port traffic policy must have at least one field");
            return;
        }
        validate_settings(settings_of!(self), path, errs);
    }
}

/// The four settings a [`TrafficPolicy`] and a [`PortTrafficPolicy`] both
/// carry, borrowed.
struct Settings<'a> {
    outlier_detection: Option<&'a OutlierDetection>,
    connection_pool: Option<&'a ConnectionPoolSettings>,
    load_balancer: Option<&'a LoadBalancerSettings>,
    tls: Option<&'a ClientTlsSettings>,
}

/// Validates the settings a policy and a port's override share, in istiod's
/// order: outlier detection, connection pool, load balancer, TLS.
fn validate_settings(settings: Settings<'_>, path: &FieldPath, errs: &mut Errors) {
    if let Some(outlier) = settings.outlier_detection {
        outlier.validate_at(&path.field("outlierDetection"), errs);
    }
    if let Some(pool) = settings.connection_pool {
        pool.validate_at(&path.field("connectionPool"), errs);
    }
    if let Some(lb) = settings.load_balancer {
        lb.validate_at(&path.field("loadBalancer"), errs);
    }
    if let Some(tls) = settings.tls {
        tls.validate_at(&path.field("tls"), errs);
    }
}

impl TunnelSettings {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if !self.protocol.is_empty() && self.protocol != "CONNECT" && self.protocol != "POST" {
            errs.add(
                &path.field("protocol"),
                r#"tunnel protocol must be "CONNECT" or "POST""#,
            );
        }
        if let (Err(fqdn), Err(ip)) = (
            validate_fqdn(&self.target_host),
            validate_ip_address(&self.target_host),
        ) {
            errs.add(
                &path.field("targetHost"),
                format!("tunnel target host must be valid FQDN or IP address: {fqdn}; {ip}"),
            );
        }
        if let Err(e) = validate_port(self.target_port) {
            errs.add(
                &path.field("targetPort"),
                format!("tunnel target port is invalid: {e}"),
            );
        }
    }
}

impl OutlierDetection {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if let Some(d) = &self.base_ejection_time {
            errs.check(&path.field("baseEjectionTime"), validate_duration(d));
        }
        if !self.split_external_local_origin_errors
            && self.consecutive_local_origin_failures.unwrap_or(0) > 0
        {
            errs.add(
                &path.field("consecutiveLocalOriginFailures"),
                "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
            );
        }
        if let Some(d) = &self.interval {
            errs.check(&path.field("interval"), validate_duration(d));
        }
        errs.check(
            &path.field("maxEjectionPercent"),
            validate_percent(self.max_ejection_percent),
        );
        errs.check(
            &path.field("minHealthPercent"),
            validate_percent(self.min_health_percent),
        );
    }
}

impl ConnectionPoolSettings {
    pub(in crate::model::istio) fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if self.http.is_none() && self.tcp.is_none() {
            errs.add(path, "connection pool must have at least one field");
            return;
        }
        if let Some(http) = &self.http {
            http.validate_at(&path.field("http"), errs);
        }
        if let Some(tcp) = &self.tcp {
            tcp.validate_at(&path.field("tcp"), errs);
        }
    }
}

fn check_non_negative(value: i32, what: &str, path: &FieldPath, errs: &mut Errors) {
    if value < 0 {
        errs.add(path, format!("{what} must be non-negative"));
    }
}

impl HttpSettings {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        check_non_negative(
            self.http1_max_pending_requests,
            "http1 max pending requests",
            &path.field("http1MaxPendingRequests"),
            errs,
        );
        check_non_negative(
            self.http2_max_requests,
            "http2 max requests",
            &path.field("http2MaxRequests"),
            errs,
        );
        check_non_negative(
            self.max_requests_per_connection,
            "max requests per connection",
            &path.field("maxRequestsPerConnection"),
            errs,
        );
        check_non_negative(
            self.max_retries,
            "max retries",
            &path.field("maxRetries"),
            errs,
        );
        if let Some(d) = &self.idle_timeout {
            errs.check(&path.field("idleTimeout"), validate_duration(d));
        }
        if self.h2_upgrade_policy == H2UpgradePolicy::Upgrade && self.use_client_protocol {
            errs.add(
                &path.field("useClientProtocol"),
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
        check_non_negative(
            self.max_concurrent_streams,
            "max concurrent streams",
            &path.field("maxConcurrentStreams"),
            errs,
        );
    }
}

impl TcpSettings {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        check_non_negative(
            self.max_connections,
            "max connections",
            &path.field("maxConnections"),
            errs,
        );
        if let Some(d) = &self.connect_timeout {
            errs.check(&path.field("connectTimeout"), validate_duration(d));
        }
        if let Some(d) = &self.max_connection_duration {
            errs.check(&path.field("maxConnectionDuration"), validate_duration(d));
        }
        // Zero (to the millisecond) disables the idle timeout.
        if let Some(d) = &self.idle_timeout
            && d.as_std().as_millis() != 0
        {
            errs.check(&path.field("idleTimeout"), validate_duration(d));
        }
        if let Some(ka) = &self.tcp_keepalive {
            let at = path.field("tcpKeepalive");
            if let Some(d) = &ka.time {
                errs.check(&at.field("time"), validate_duration(d));
            }
            if let Some(d) = &ka.interval {
                errs.check(&at.field("interval"), validate_duration(d));
            }
        }
    }
}

/// Maglev table sizes must be below this (and prime).
const MAGLEV_MAX_TABLE_SIZE: u64 = 5_000_011;

impl LoadBalancerSettings {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if self.simple.is_some() && self.consistent_hash.is_some() {
            errs.add(path, "only one of simple or consistentHash may be set");
        }
        if let Some(hash) = &self.consistent_hash {
            hash.validate_at(&path.field("consistentHash"), errs);
        }
        if let Some(locality) = &self.locality_lb_setting {
            locality.validate_at(&path.field("localityLbSetting"), errs);
        }
        if let Some(warmup) = &self.warmup {
            warmup.validate_at(&path.field("warmup"), errs);
        }
    }
}

impl ConsistentHashLb {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        let keys = [
            self.http_header_name.is_some(),
            self.http_cookie.is_some(),
            self.use_source_ip.is_some(),
            self.http_query_parameter_name.is_some(),
        ];
        if keys.iter().filter(|k| **k).count() > 1 {
            errs.add(
                path,
                "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set",
            );
        }
        if self.ring_hash.is_some() && self.maglev.is_some() {
            errs.add(path, "only one of ringHash or maglev may be set");
        }
        if let Some(cookie) = &self.http_cookie
            && cookie.name.is_empty()
        {
            errs.add(
                &path.field("httpCookie").field("name"),
                "name required for HttpCookie",
            );
        }
        if self.minimum_ring_size != 0 && (self.ring_hash.is_some() || self.maglev.is_some()) {
            errs.add(
                &path.field("minimumRingSize"),
                "only one of MinimumRingSize or Maglev/Ringhash can be specified",
            );
        }
        if let Some(maglev) = &self.maglev {
            let at = path.field("maglev").field("tableSize");
            if maglev.table_size == 0 {
                errs.add(&at, "tableSize must be set for maglev");
            }
            if maglev.table_size >= MAGLEV_MAX_TABLE_SIZE {
                errs.add(&at, "tableSize must be less than 5000011 for maglev");
            }
            if !is_prime(maglev.table_size) {
                errs.add(&at, "tableSize must be a prime number for maglev");
            }
        }
    }
}

/// Primality as Envoy tests it (so 1 counts as prime).
pub(super) fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x.is_multiple_of(2) {
        return false;
    }
    let mut factor = 3u64;
    while factor.saturating_mul(factor) <= x {
        if x.is_multiple_of(factor) {
            return false;
        }
        factor += 2;
    }
    true
}

impl WarmupConfiguration {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        match &self.duration {
            None => errs.add(&path.field("duration"), "duration is required"),
            Some(d) => errs.check(&path.field("duration"), validate_duration(d)),
        }
        if self.minimum_percent.unwrap_or(0.0) > 100.0 {
            errs.add(
                &path.field("minimumPercent"),
                "minimumPercent value should be less than or equal to 100",
            );
        }
        if let Some(aggression) = self.aggression
            && aggression < 1.0
        {
            errs.add(
                &path.field("aggression"),
                "aggression should be greater than or equal to 1",
            );
        }
    }
}

/// Topology labels that cannot be combined with explicit `failover`.
const TOPOLOGY_LABELS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

impl LocalityLoadBalancerSetting {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if !self.distribute.is_empty() && !self.failover.is_empty() {
            errs.add(
                path,
                "can not simultaneously specify 'distribute' and 'failover'",
            );
            return;
        }
        if !self.failover.is_empty() {
            for (i, label) in self.failover_priority.iter().enumerate() {
                if TOPOLOGY_LABELS.contains(&label.as_str()) {
                    errs.add(
                        &path.field("failoverPriority").index(i),
                        format!(
                            "can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'"
                        ),
                    );
                    return;
                }
            }
        }
        for (i, dist) in self.distribute.iter().enumerate() {
            if !dist.validate_at(&path.field("distribute").index(i), errs) {
                return;
            }
        }
        let sources: Vec<&str> = self.distribute.iter().map(|d| d.from.as_str()).collect();
        errs.check(&path.field("distribute"), validate_localities(&sources));
        for (i, failover) in self.failover.iter().enumerate() {
            failover.validate_at(&path.field("failover").index(i), errs);
        }
    }
}

impl LocalityDistribute {
    /// Returns false when validation of further entries should stop, as
    /// istiod does after a bad weight.
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) -> bool {
        let to = path.field("to");
        for (locality, weight) in &self.to {
            if *weight == 0 || *weight > 100 {
                errs.add(
                    &to.key(locality),
                    "locality weight must be in range [1, 100]",
                );
                return false;
            }
        }
        let total: u32 = self.to.values().sum();
        if total != 100 {
            errs.add(&to, format!("total locality weight {total} != 100"));
            return false;
        }
        let destinations: Vec<&str> = self.to.keys().map(String::as_str).collect();
        errs.check(&to, validate_localities(&destinations));
        true
    }
}

impl LocalityFailover {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if self.from == self.to {
            errs.add(
                path,
                "locality lb failover settings must specify different regions",
            );
        }
        if self.from.contains('/') || self.to.contains('/') {
            errs.add(path, "locality lb failover only specify region");
        }
        if self.from.contains('*') || self.to.contains('*') {
            errs.add(
                path,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

/// Localities (`region[/zone[/subzone]]`, optionally ending in `*`) must be
/// well formed and must not overlap one another.
pub(super) fn validate_localities(localities: &[&str]) -> Result<(), String> {
    // region -> zone -> subzones; "*" stands for "all of them".
    let mut seen: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for locality in localities {
        let stars = locality.matches('*').count();
        if stars > 1 || (stars == 1 && !locality.ends_with('*')) {
            return Err(format!(
                "locality {locality} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        let overlap = || {
            Err(format!(
                "locality {locality} overlap with previous specified ones"
            ))
        };
        if seen.contains_key("*") {
            return overlap();
        }
        let parts: Vec<&str> = locality.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "locality {locality} must not contain empty region/zone/subzone info"
            ));
        }
        match parts[..] {
            [region] => {
                if seen.contains_key(region) {
                    return overlap();
                }
                seen.insert(region, BTreeMap::from([("*", BTreeSet::from(["*"]))]));
            }
            [region, zone] => {
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") || zones.contains_key(zone) {
                    return overlap();
                }
                zones.insert(zone, BTreeSet::from(["*"]));
            }
            [region, zone, subzone] => {
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") {
                    return overlap();
                }
                let subzones = zones.entry(zone).or_default();
                if subzones.contains("*") || !subzones.insert(subzone) {
                    return overlap();
                }
            }
            _ => {}
        }
    }
    Ok(())
}

impl ClientTlsSettings {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        let mode = self.mode;
        if self.insecure_skip_verify == Some(true) {
            if mode == ClientTlsMode::Simple
                && (!self.ca_certificates.is_empty()
                    || !self.credential_name.is_empty()
                    || !self.subject_alt_names.is_empty())
            {
                errs.add(
                    &path.field("insecureSkipVerify"),
                    "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
                );
            }
            if mode == ClientTlsMode::Mutual
                && (!self.ca_certificates.is_empty() || !self.subject_alt_names.is_empty())
            {
                errs.add(
                    &path.field("insecureSkipVerify"),
                    "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
                );
            }
        }
        let simple_or_mutual = matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual);
        if simple_or_mutual && !self.credential_name.is_empty() {
            // Credentials come from the secret; files must not be given too.
            if !self.client_certificate.is_empty()
                || !self.ca_certificates.is_empty()
                || !self.private_key.is_empty()
                || !self.ca_crl.is_empty()
            {
                errs.add(
                    &path.field("credentialName"),
                    "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
                );
            }
            return;
        }
        if mode == ClientTlsMode::Mutual {
            if self.client_certificate.is_empty() {
                errs.add(
                    &path.field("clientCertificate"),
                    "client certificate required for mutual tls",
                );
            }
            if self.private_key.is_empty() {
                errs.add(
                    &path.field("privateKey"),
                    "private key required for mutual tls",
                );
            }
        }
    }
}
