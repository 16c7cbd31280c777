//! Pieces shared by several Istio networking resources.
//!
//! Owns the small API types used across resources ([`StringMatch`],
//! [`PortSelector`], [`Percent`], the two workload selector shapes and
//! [`Protocol`]) and the validation helpers that istiod applies to them and
//! to common string forms: DNS names, ports, labels, durations, `exportTo`
//! entries, gateway references, percentages and regexes.
//!
//! Pure data and checks: no I/O, no tonic/kube/Envoy types.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::{Errors, FieldPath};
use crate::model::duration::Duration;

/// Whether `value` equals its type's default; used to omit proto3 zero
/// values (and empty lists, maps and absent messages) when serializing.
pub(super) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Reads an explicit `null` as the default value, as protobuf JSON does
/// (`hosts: ~`, `"subsets": null`); a missing field is handled by the
/// container's `#[serde(default)]`.
pub(super) fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Reads a protobuf `uint64`, which protobuf JSON writes as a string
/// (`"65537"`) but people write as a number; `null` reads as 0.
pub(super) fn proto_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct U64Visitor;

    impl Visitor<'_> for U64Visitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an unsigned integer, or a string holding one")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            v.parse()
                .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
        }

        fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
            Ok(0)
        }

        fn visit_none<E: de::Error>(self) -> Result<u64, E> {
            Ok(0)
        }
    }

    deserializer.deserialize_any(U64Visitor)
}

/// How to match a string (`istio.networking.v1alpha3.StringMatch`).
///
/// Serialized as an object with exactly one of `exact`, `prefix` or `regex`;
/// an empty object `{}` is [`StringMatch::Any`]. Setting more than one key is
/// a parse error, as it is for istiod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "StringMatchRepr", into = "StringMatchRepr")]
pub enum StringMatch {
    /// No match type set (`{}`). Istio treats this as "anything": for a
    /// header or query parameter it means the key is present.
    #[default]
    Any,
    /// The whole string equals this value.
    Exact(String),
    /// The string starts with this value.
    Prefix(String),
    /// The whole string matches this RE2-style regular expression.
    Regex(String),
}

impl StringMatch {
    /// The regex, if this is a regex match.
    pub fn regex(&self) -> Option<&str> {
        match self {
            StringMatch::Regex(re) => Some(re),
            _ => None,
        }
    }
}

/// The wire shape of [`StringMatch`].
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct StringMatchRepr {
    #[serde(skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
}

impl TryFrom<StringMatchRepr> for StringMatch {
    type Error = &'static str;

    fn try_from(repr: StringMatchRepr) -> Result<Self, Self::Error> {
        match (repr.exact, repr.prefix, repr.regex) {
            (None, None, None) => Ok(StringMatch::Any),
            (Some(s), None, None) => Ok(StringMatch::Exact(s)),
            (None, Some(s), None) => Ok(StringMatch::Prefix(s)),
            (None, None, Some(s)) => Ok(StringMatch::Regex(s)),
            _ => Err("only one of `exact`, `prefix` or `regex` may be set in a string match"),
        }
    }
}

impl From<StringMatch> for StringMatchRepr {
    fn from(m: StringMatch) -> Self {
        let mut repr = StringMatchRepr::default();
        match m {
            StringMatch::Any => {}
            StringMatch::Exact(s) => repr.exact = Some(s),
            StringMatch::Prefix(s) => repr.prefix = Some(s),
            StringMatch::Regex(s) => repr.regex = Some(s),
        }
        repr
    }
}

/// Selects a service port by number (`PortSelector`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PortSelector {
    /// Valid port number.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub number: u32,
}

/// A percentage in the range 0.0 to 100.0 (`Percent`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Percent {
    /// The percentage.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub value: f64,
}

/// Selects workloads by their labels, as `networking.v1alpha3.WorkloadSelector`
/// (used by `Sidecar` and `ServiceEntry`): `{labels: {...}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadSelector {
    /// Labels the workload must carry (no wildcards).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub labels: BTreeMap<String, String>,
}

/// Selects workloads by their labels, as `istio.type.v1beta1.WorkloadSelector`
/// (used by `DestinationRule`): `{matchLabels: {...}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MatchLabelsSelector {
    /// Labels the workload must carry (no wildcards).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub match_labels: BTreeMap<String, String>,
}

/// A port protocol, parsed case-insensitively from a port's `protocol`
/// string the way Istio does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `GRPC`
    Grpc,
    /// `GRPC-Web`
    GrpcWeb,
    /// `HTTP`
    Http,
    /// `HTTP_PROXY`
    HttpProxy,
    /// `HTTP2`
    Http2,
    /// `HTTPS`
    Https,
    /// `TCP`
    Tcp,
    /// `TLS`
    Tls,
    /// `UDP`
    Udp,
    /// `Mongo`
    Mongo,
    /// `Redis`
    Redis,
    /// `MySQL`
    MySql,
    /// Anything else, including the empty string (protocol sniffing).
    Unsupported,
}

impl Protocol {
    /// Parses a protocol name, ignoring case.
    pub fn parse(name: &str) -> Protocol {
        match name.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http" => Protocol::Http,
            "http_proxy" => Protocol::HttpProxy,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::MySql,
            _ => Protocol::Unsupported,
        }
    }

    /// HTTP-family protocols (HTTP, HTTP2, HTTP_PROXY, GRPC, GRPC-Web).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    /// Protocols that carry TLS (HTTPS, TLS).
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
}

// ---------------------------------------------------------------------------
// Validation helpers shared by the resources.
// ---------------------------------------------------------------------------

/// Prefix marking a Unix domain socket address in `bind`/`address` fields.
pub(super) const UNIX_ADDRESS_PREFIX: &str = "unix://";

const DNS1123_LABEL_MAX_LENGTH: usize = 63;

/// `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`, at most 63 characters.
pub(super) fn is_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= DNS1123_LABEL_MAX_LENGTH
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

/// A DNS-1123 label, optionally preceded by `*` or `*-`, or just `*`.
fn is_wildcard_dns1123_label(value: &str) -> bool {
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        return false;
    }
    if value == "*" {
        return true;
    }
    let rest = value
        .strip_prefix("*-")
        .or_else(|| value.strip_prefix('*'))
        .unwrap_or(value);
    is_dns1123_label(rest)
}

fn check_dns1123_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".to_owned());
    }
    Ok(())
}

fn validate_dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts.last().copied().unwrap_or_default();
    if !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully qualified (or short) DNS name, no wildcards.
pub(super) fn validate_fqdn(fqdn: &str) -> Result<(), String> {
    check_dns1123_preconditions(fqdn)?;
    validate_dns1123_labels(fqdn)
}

/// A DNS name whose first label may be a wildcard (`*.example.com`, `*`).
pub(super) fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    check_dns1123_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(rest) => validate_dns1123_labels(rest),
        None => Ok(()),
    }
}

/// The DNS part of a Sidecar egress or Gateway server host: `*`, or an
/// FQDN (not a short name) whose first label may be a wildcard (not a
/// partial one like `foo*.com`). Gateways also accept IP addresses.
fn validate_listener_dns_name(
    dns_name: &str,
    is_gateway: bool,
    path: &FieldPath,
    errs: &mut Errors,
) {
    if dns_name != "*" && !dns_name.contains('.') {
        errs.add(path, "short names (non FQDN) are not allowed");
    }
    if let Err(message) = validate_wildcard_domain(dns_name)
        && !(is_gateway && is_ip_address(dns_name))
    {
        errs.add(path, message);
    }
    if dns_name.contains('*') && dns_name.len() != 1 && !dns_name.starts_with("*.") {
        errs.add(path, format!("partial wildcard {dns_name:?} not allowed"));
    }
}

/// The `hosts` (at `path`) of a Gateway server or of a Sidecar egress
/// listener: at least one, each as
/// [`validate_namespace_slash_wildcard_hostname`] wants.
pub(super) fn validate_namespace_slash_wildcard_hostnames(
    hosts: &[String],
    is_gateway: bool,
    path: &FieldPath,
    errs: &mut Errors,
) {
    if hosts.is_empty() {
        let message = if is_gateway {
            "server config must contain at least one host"
        } else {
            "sidecar: egress listener must contain at least one host"
        };
        errs.add(path, message);
    }
    for (i, host) in hosts.iter().enumerate() {
        validate_namespace_slash_wildcard_hostname(host, is_gateway, &path.index(i), errs);
    }
}

/// A Sidecar egress or Gateway server host, `<namespace>/<dnsName>` where
/// the namespace may be `*` or `.` (or, in a Sidecar, `~`). Gateways also
/// accept a bare DNS name.
fn validate_namespace_slash_wildcard_hostname(
    hostname: &str,
    is_gateway: bool,
    path: &FieldPath,
    errs: &mut Errors,
) {
    let Some((ns, dns_name)) = hostname.split_once('/') else {
        if is_gateway {
            validate_listener_dns_name(hostname, true, path, errs);
        } else {
            errs.add(path, "host must be of form namespace/dnsName");
        }
        return;
    };
    if ns.is_empty() || dns_name.is_empty() {
        errs.add(
            path,
            "config namespace and dnsName in host entry cannot be empty",
        );
    }
    let special = ns == "*" || ns == "." || (ns == "~" && !is_gateway);
    if !special && !is_dns1123_label(ns) {
        let kind = if is_gateway { "gateway" } else { "sidecar" };
        errs.add(path, format!("invalid namespace value {ns:?} in {kind}"));
    }
    validate_listener_dns_name(dns_name, is_gateway, path, errs);
}

/// A port number in 1..=65535.
pub(super) fn validate_port(port: u32) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

/// Whether `value` is an IPv4 or IPv6 address.
pub(super) fn is_ip_address(value: &str) -> bool {
    value.parse::<IpAddr>().is_ok()
}

/// An IPv4 or IPv6 address.
pub(super) fn validate_ip_address(value: &str) -> Result<(), String> {
    if is_ip_address(value) {
        Ok(())
    } else {
        Err(format!("{value} is not a valid IP"))
    }
}

/// An IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub(super) fn validate_ip_subnet(value: &str) -> Result<(), String> {
    if value.matches('/').count() != 1 {
        return validate_ip_address(value);
    }
    let invalid = || format!("{value} is not a valid CIDR block");
    let (addr, bits) = value.split_once('/').ok_or_else(invalid)?;
    let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match bits.parse::<u8>() {
        Ok(b) if b <= max && !bits.starts_with('+') => Ok(()),
        _ => Err(invalid()),
    }
}

/// An absolute path naming a Unix domain socket, or an abstract socket
/// name starting with `@`.
pub(super) fn validate_unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".to_owned());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

/// A port name: a DNS-1123 label.
pub(super) fn validate_port_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!("invalid port name: {name}"))
    }
}

/// A subset name: a non-empty DNS-1123 label.
pub(super) fn validate_subset_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("subset name cannot be empty".to_owned())
    } else if !is_dns1123_label(name) {
        Err(format!("subset name is invalid: {name}"))
    } else {
        Ok(())
    }
}

/// A port protocol: empty (sniffed) or one Istio knows.
pub(super) fn validate_protocol(name: &str) -> Result<(), String> {
    if !name.is_empty() && Protocol::parse(name) == Protocol::Unsupported {
        Err(format!("unsupported protocol: {name}"))
    } else {
        Ok(())
    }
}

/// A duration istiod accepts for timeouts and intervals: at least 1ms and
/// a whole number of milliseconds.
pub(super) fn validate_duration(d: &Duration) -> Result<(), String> {
    let d = d.as_std();
    if d < std::time::Duration::from_millis(1) {
        return Err("duration must be greater than 1ms".to_owned());
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err("only durations to ms precision are supported".to_owned());
    }
    Ok(())
}

/// An integer percentage in 0..=100.
pub(super) fn validate_percent(value: i32) -> Result<(), String> {
    if (0..=100).contains(&value) {
        Ok(())
    } else {
        Err(format!("percentage {value} is not in range 0..100"))
    }
}

/// A fractional percentage: 0.0, or in [0.0001, 100.0].
pub(super) fn validate_percentage(p: &Percent) -> Result<(), String> {
    let v = p.value;
    if v.is_nan() || !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        Err(format!(
            "percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"
        ))
    } else {
        Ok(())
    }
}

/// An RE2-style regular expression of at most 1024 characters.
pub(super) fn validate_regex(re: &str) -> Result<(), String> {
    if re.len() > 1024 {
        return Err("regex is too large, max length allowed is 1024".to_owned());
    }
    regex::Regex::new(re).map(|_| ()).map_err(|e| {
        format!(
            "{e}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
        )
    })
}

/// A string match whose regex, if any, is non-empty and compiles.
pub(super) fn validate_string_match_regex(m: &StringMatch) -> Result<(), String> {
    match m {
        StringMatch::Regex(re) if re.is_empty() => {
            Err("regex string match should not be empty".to_owned())
        }
        StringMatch::Regex(re) => validate_regex(re),
        _ => Ok(()),
    }
}

/// A string match with a non-empty prefix and a valid regex.
pub(super) fn validate_string_match(m: &StringMatch) -> Result<(), String> {
    match m {
        StringMatch::Prefix(p) if p.is_empty() => {
            Err("prefix string match should not be empty".to_owned())
        }
        _ => validate_string_match_regex(m),
    }
}

/// `(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A Kubernetes label key: an optional DNS subdomain prefix and `/`, then a
/// qualified name of at most 63 characters.
fn validate_label_key(key: &str) -> Result<(), String> {
    let invalid = || format!("invalid tag key: {key:?}");
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if !prefix.split('.').all(is_dns1123_label) {
            return Err(invalid());
        }
        if prefix.len() > 253 {
            return Err(format!("invalid tag key: {key:?} (DNS prefix is too long)"));
        }
    }
    if !is_qualified_name(name) {
        return Err(invalid());
    }
    if name.len() > DNS1123_LABEL_MAX_LENGTH {
        return Err(format!("invalid tag key: {key:?} (name is too long)"));
    }
    Ok(())
}

/// Label keys and values as Kubernetes allows them; errors are reported
/// against each entry (`path["key"]`).
pub(super) fn validate_labels(
    labels: &BTreeMap<String, String>,
    path: &FieldPath,
    errs: &mut Errors,
) {
    for (key, value) in labels {
        let at = path.key(key);
        errs.check(&at, validate_label_key(key));
        if !value.is_empty() && !is_qualified_name(value) {
            errs.add(&at, format!("invalid tag value: {value:?}"));
        }
    }
}

/// Selector labels: non-empty keys, no wildcards.
fn validate_selector_labels(
    labels: &BTreeMap<String, String>,
    path: &FieldPath,
    errs: &mut Errors,
) {
    for (key, value) in labels {
        let at = path.key(key);
        if key.is_empty() {
            errs.add(
                &at,
                format!("empty key is not supported in selector: \"{key}={value}\""),
            );
        }
        if key.contains('*') || value.contains('*') {
            errs.add(
                &at,
                format!("wildcard is not supported in selector: \"{key}={value}\""),
            );
        }
    }
}

impl WorkloadSelector {
    pub(super) fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        validate_selector_labels(&self.labels, &path.field("labels"), errs);
    }
}

impl MatchLabelsSelector {
    pub(super) fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        validate_selector_labels(&self.match_labels, &path.field("matchLabels"), errs);
    }
}

impl PortSelector {
    pub(super) fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        errs.check(&path.field("number"), validate_port(self.number));
    }
}

/// Which kind of resource an `exportTo` list belongs to; the rules differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ExportToOwner {
    /// A ServiceEntry, which may use `~` (visible to no one).
    ServiceEntry,
    /// A DestinationRule with a workload selector, which may only be
    /// exported to its own namespace.
    SelectorDestinationRule,
    /// Anything else.
    Other,
}

/// `exportTo` entries: `.`, `*`, a namespace name, or `~` for service
/// entries; no duplicates, and `*`/`~` only on their own.
///
/// The resource's own namespace is not known here, so `.` and that
/// namespace's name are not recognised as duplicates of each other.
pub(super) fn validate_export_to(
    export_to: &[String],
    owner: ExportToOwner,
    path: &FieldPath,
    errs: &mut Errors,
) {
    let mut seen = BTreeSet::new();
    for (i, entry) in export_to.iter().enumerate() {
        let at = path.index(i);
        if !seen.insert(entry.as_str()) {
            errs.add(
                &at,
                format!("duplicate entries in exportTo for entry {entry}"),
            );
            continue;
        }
        match entry.as_str() {
            "." | "*" => {}
            "~" if owner == ExportToOwner::ServiceEntry => {}
            "~" => errs.add(
                &at,
                "exportTo ~ (none) is not allowed for Istio configuration objects",
            ),
            ns if !is_dns1123_label(ns) => errs.add(
                &at,
                "only .,*, or a valid DNS 1123 label is allowed as exportTo entry",
            ),
            _ => {}
        }
    }
    if export_to.len() > 1 && seen.contains("*") {
        errs.add(
            path,
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
    if export_to.len() > 1 && seen.contains("~") {
        errs.add(
            path,
            "cannot export service entry to no one (~) and someone",
        );
    }
    if owner == ExportToOwner::SelectorDestinationRule && !export_to.is_empty() {
        if seen.contains("*") || seen.contains("~") {
            errs.add(
                path,
                "destination rule with workload selector cannot have exportTo beyond current namespace",
            );
        } else if seen.len() > 1 {
            errs.add(
                path,
                "destination rule with workload selector cannot have multiple entries in exportTo",
            );
        }
    }
}

/// Gateway references: `mesh`, `<namespace>/<name>`, or a legacy name/FQDN.
pub(super) fn validate_gateway_names(names: &[String], path: &FieldPath, errs: &mut Errors) {
    for (i, name) in names.iter().enumerate() {
        let at = path.index(i);
        let Some((ns, gw)) = name.split_once('/') else {
            errs.check(&at, validate_fqdn(name));
            continue;
        };
        if ns.is_empty() || gw.is_empty() {
            errs.add(&at, "config namespace and gateway name cannot be empty");
        }
        if !is_dns1123_label(ns) {
            errs.add(&at, format!("invalid value for namespace: {ns:?}"));
        }
        if !is_dns1123_label(gw) {
            errs.add(&at, format!("invalid value for gateway name: {gw:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::istio::validate_spec;

    #[test]
    fn string_match_serde() {
        let m: StringMatch = serde_json::from_str(r#"{"exact":"a"}"#).unwrap();
        assert_eq!(m, StringMatch::Exact("a".into()));
        let m: StringMatch = serde_json::from_str(r#"{"prefix":"/"}"#).unwrap();
        assert_eq!(m, StringMatch::Prefix("/".into()));
        let m: StringMatch = serde_saphyr::from_str("regex: '^/v[0-9]+'").unwrap();
        assert_eq!(m, StringMatch::Regex("^/v[0-9]+".into()));
        assert_eq!(m.regex(), Some("^/v[0-9]+"));
        let m: StringMatch = serde_json::from_str("{}").unwrap();
        assert_eq!(m, StringMatch::Any);
        // An explicitly empty exact match is not the same as no match type.
        let m: StringMatch = serde_json::from_str(r#"{"exact":""}"#).unwrap();
        assert_eq!(m, StringMatch::Exact(String::new()));
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"exact":""}"#);
        assert_eq!(serde_json::to_string(&StringMatch::Any).unwrap(), "{}");
        // Unknown keys are ignored.
        let m: StringMatch = serde_json::from_str(r#"{"prefix":"/a","other":1}"#).unwrap();
        assert_eq!(m, StringMatch::Prefix("/a".into()));
        let err = serde_json::from_str::<StringMatch>(r#"{"exact":"a","prefix":"b"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("only one of"), "{err}");
    }

    #[test]
    fn percent_and_port_selector_serde() {
        let p: Percent = serde_json::from_str(r#"{"value":0.5}"#).unwrap();
        assert_eq!(p.value, 0.5);
        let p: Percent = serde_json::from_str(r#"{"value":50}"#).unwrap();
        assert_eq!(p.value, 50.0);
        let s: PortSelector = serde_json::from_str(r#"{"number":9080}"#).unwrap();
        assert_eq!(s.number, 9080);
        assert_eq!(
            serde_json::to_string(&PortSelector::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn dns_names() {
        assert!(is_dns1123_label("reviews"));
        assert!(is_dns1123_label("a-1"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("a_b"));
        assert!(!is_dns1123_label(""));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(validate_wildcard_domain("*.bookinfo.com").is_ok());
        assert!(validate_wildcard_domain("*").is_ok());
        assert!(validate_wildcard_domain("*-foo.example.com").is_ok());
        assert!(validate_wildcard_domain("reviews").is_ok());
        assert!(validate_wildcard_domain("productpage-v1.nsA.svc.cluster.local").is_ok());
        assert!(validate_wildcard_domain("istio.io.").is_ok());
        assert!(validate_wildcard_domain("foo.*.com").is_err());
        assert_eq!(
            validate_wildcard_domain(""),
            Err("empty domain name not allowed".to_owned())
        );
        assert_eq!(
            validate_fqdn("1.2.3.4"),
            Err(
                r#"domain name "1.2.3.4" invalid (top level domain "4" cannot be all-numeric)"#
                    .to_owned()
            )
        );
        assert!(validate_fqdn("*.foo.com").is_err());
    }

    #[test]
    fn addresses_and_ports() {
        assert!(validate_ip_subnet("10.0.0.0/8").is_ok());
        assert!(validate_ip_subnet("2001:db8::/32").is_ok());
        assert!(validate_ip_subnet("1.2.3.4").is_ok());
        assert!(validate_ip_subnet("10.0.0.0/33").is_err());
        assert!(validate_ip_subnet("10.0.0.0/8/8").is_err());
        assert!(validate_ip_subnet("foo").is_err());
        assert!(validate_port(0).is_err());
        assert!(validate_port(65536).is_err());
        assert!(validate_port(443).is_ok());
        assert!(validate_unix_address("/var/run/x.sock").is_ok());
        assert!(validate_unix_address("@abstract").is_ok());
        assert!(validate_unix_address("relative").is_err());
        assert_eq!(Protocol::parse("grpc-WEB"), Protocol::GrpcWeb);
        assert!(Protocol::parse("HTTPS").is_tls());
        assert!(validate_protocol("").is_ok());
        assert!(validate_protocol("foo").is_err());
    }

    #[test]
    fn durations_and_percentages() {
        assert!(validate_duration(&Duration::from_millis(1)).is_ok());
        assert!(validate_duration(&Duration::ZERO).is_err());
        assert_eq!(
            validate_duration(&Duration::from_nanos(1_500_000)),
            Err("only durations to ms precision are supported".to_owned())
        );
        assert!(validate_percentage(&Percent { value: 0.0 }).is_ok());
        assert!(validate_percentage(&Percent { value: 100.0 }).is_ok());
        assert!(validate_percentage(&Percent { value: 0.00001 }).is_err());
        assert!(validate_percentage(&Percent { value: 100.5 }).is_err());
        assert!(validate_percentage(&Percent { value: -1.0 }).is_err());
        assert!(validate_percent(101).is_err());
    }

    #[test]
    fn string_matches_and_regexes() {
        assert!(validate_string_match(&StringMatch::Prefix(String::new())).is_err());
        assert!(validate_string_match_regex(&StringMatch::Prefix(String::new())).is_ok());
        assert!(validate_string_match(&StringMatch::Regex("(".into())).is_err());
        assert!(validate_string_match(&StringMatch::Regex(String::new())).is_err());
        assert!(validate_string_match(&StringMatch::Regex("^a.*$".into())).is_ok());
        assert!(validate_regex(&"a".repeat(1025)).is_err());
    }

    #[test]
    fn labels() {
        let labels: BTreeMap<String, String> = [
            ("app.kubernetes.io/name", "reviews"),
            ("version", "v1"),
            ("bad key", "x"),
            ("ok", "bad value!"),
            ("empty-value", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let errs = validate_spec(|p, errs| validate_labels(&labels, &p.field("labels"), errs));
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [r#"spec.labels["bad key"]"#, r#"spec.labels["ok"]"#]
        );
    }

    #[test]
    fn export_to() {
        let list = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let run = |v: &[&str], owner| {
            validate_spec(|p, errs| validate_export_to(&list(v), owner, &p.field("exportTo"), errs))
        };
        assert!(run(&[".", "ns1"], ExportToOwner::Other).is_empty());
        assert!(run(&["~"], ExportToOwner::ServiceEntry).is_empty());
        assert_eq!(
            run(&["~"], ExportToOwner::Other)[0].field,
            "spec.exportTo[0]"
        );
        assert_eq!(
            run(&["a", "a"], ExportToOwner::Other)[0].field,
            "spec.exportTo[1]"
        );
        assert_eq!(
            run(&["*", "a"], ExportToOwner::Other)[0].field,
            "spec.exportTo"
        );
        assert_eq!(run(&["Bad_ns"], ExportToOwner::Other).len(), 1);
        assert_eq!(
            run(&[".", "a"], ExportToOwner::SelectorDestinationRule).len(),
            1
        );
        assert!(run(&["."], ExportToOwner::SelectorDestinationRule).is_empty());
    }

    #[test]
    fn gateway_names() {
        let names: Vec<String> = [
            "mesh",
            "istio-system/gw",
            "/gw",
            "ns/Bad_Name",
            "my-gateway",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let errs =
            validate_spec(|p, errs| validate_gateway_names(&names, &p.field("gateways"), errs));
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.gateways[2]", "spec.gateways[2]", "spec.gateways[3]"]
        );
    }
}
