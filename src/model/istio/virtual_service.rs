//! `VirtualService` (`networking.istio.io`): how requests to a host are routed.
//!
//! Owns the complete typed schema of the VirtualService spec as of Istio
//! 1.24 — HTTP, TLS and TCP routes, matches, destinations, redirects, direct
//! responses, delegation, rewrites, retries, fault injection, mirroring, CORS
//! and header manipulation — and istiod's validation of it.
//!
//! Pure data and checks: no I/O, no tonic/kube/Envoy types. Turning routes
//! into Envoy configuration happens elsewhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{
    ExportToOwner, Percent, PortSelector, StringMatch, is_default, is_dns1123_label, is_ip_address,
    nullable, validate_duration, validate_export_to, validate_gateway_names, validate_ip_subnet,
    validate_labels, validate_percent, validate_percentage, validate_port, validate_regex,
    validate_string_match, validate_string_match_regex, validate_subset_name,
    validate_wildcard_domain,
};
use super::headers::{is_authority_header, is_internal_header, known_status_code};
use super::{Errors, FieldPath, ValidationError, validate_spec};
use crate::model::duration::Duration;
use crate::model::host::Hostname;

/// The spec of a `VirtualService`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualService {
    /// Destination hosts this applies to (DNS names, wildcards, or short
    /// names). Empty for a delegate VirtualService.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub hosts: Vec<String>,
    /// Gateways (`<namespace>/<name>`, or `mesh`) this applies to; empty
    /// means the mesh (all sidecars).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub gateways: Vec<String>,
    /// Ordered HTTP route rules; the first match wins.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub http: Vec<HttpRoute>,
    /// Ordered rules for non-terminated TLS/HTTPS traffic, matched on SNI.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub tls: Vec<TlsRoute>,
    /// Ordered rules for opaque TCP traffic.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub tcp: Vec<TcpRoute>,
    /// Namespaces this is visible in (`.`, `*` or names); empty means all.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub export_to: Vec<String>,
}

impl VirtualService {
    /// The label keys its `sourceLabels` matches (http, tcp and tls) look at.
    pub fn source_label_keys(&self) -> impl Iterator<Item = &String> {
        let http = self
            .http
            .iter()
            .flat_map(|r| &r.r#match)
            .flat_map(|m| m.source_labels.keys());
        let tcp = self
            .tcp
            .iter()
            .flat_map(|r| &r.r#match)
            .flat_map(|m| m.source_labels.keys());
        let tls = self
            .tls
            .iter()
            .flat_map(|r| &r.r#match)
            .flat_map(|m| m.source_labels.keys());
        http.chain(tcp).chain(tls)
    }
}

/// Where traffic is sent: a service host, optionally a subset and port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Destination {
    /// Service host from the registry (required).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub host: String,
    /// Subset name defined by a DestinationRule.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub subset: String,
    /// Port on the host; may be omitted when the service has one port.
    #[serde(skip_serializing_if = "is_default")]
    pub port: Option<PortSelector>,
}

/// One HTTP route rule: match conditions and what to do with matching
/// requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRoute {
    /// Name for debugging; joined with match names in access logs.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub name: String,
    /// Conditions (ORed); empty matches everything.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub r#match: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub route: Vec<HttpRouteDestination>,
    /// Redirect instead of forwarding.
    #[serde(skip_serializing_if = "is_default")]
    pub redirect: Option<HttpRedirect>,
    /// Answer directly instead of forwarding.
    #[serde(skip_serializing_if = "is_default")]
    pub direct_response: Option<HttpDirectResponse>,
    /// Hand routing over to another (delegate) VirtualService.
    #[serde(skip_serializing_if = "is_default")]
    pub delegate: Option<Delegate>,
    /// Rewrite the URI/authority before forwarding.
    #[serde(skip_serializing_if = "is_default")]
    pub rewrite: Option<HttpRewrite>,
    /// Request timeout; disabled by default.
    #[serde(skip_serializing_if = "is_default")]
    pub timeout: Option<Duration>,
    /// Retry policy.
    #[serde(skip_serializing_if = "is_default")]
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    #[serde(skip_serializing_if = "is_default")]
    pub fault: Option<HttpFaultInjection>,
    /// Mirror traffic to this destination as well (exclusive with `mirrors`).
    #[serde(skip_serializing_if = "is_default")]
    pub mirror: Option<Destination>,
    /// Mirror traffic to several destinations.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated: integer percentage of traffic to mirror (use
    /// `mirrorPercentage`). Also read from `mirror_percent`.
    #[serde(alias = "mirror_percent", skip_serializing_if = "is_default")]
    pub mirror_percent: Option<u32>,
    /// Percentage of traffic to mirror to `mirror`; 100% if unset.
    #[serde(skip_serializing_if = "is_default")]
    pub mirror_percentage: Option<Percent>,
    /// Cross-origin resource sharing policy.
    #[serde(skip_serializing_if = "is_default")]
    pub cors_policy: Option<CorsPolicy>,
    /// Header manipulation.
    #[serde(skip_serializing_if = "is_default")]
    pub headers: Option<Headers>,
}

/// Reference to a delegate VirtualService.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Delegate {
    /// Name of the delegate VirtualService.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub name: String,
    /// Its namespace; defaults to the referring VirtualService's.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub namespace: String,
}

/// Request and response header manipulation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Headers {
    /// Applied before forwarding the request.
    #[serde(skip_serializing_if = "is_default")]
    pub request: Option<HeaderOperations>,
    /// Applied before returning the response.
    #[serde(skip_serializing_if = "is_default")]
    pub response: Option<HeaderOperations>,
}

/// Header operations: overwrite, append, remove.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeaderOperations {
    /// Overwrite these headers.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub set: BTreeMap<String, String>,
    /// Append these headers.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub remove: Vec<String>,
}

/// A rule for unterminated TLS traffic, matched on SNI.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsRoute {
    /// Conditions (ORed); required.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub r#match: Vec<TlsMatchAttributes>,
    /// Weighted destinations.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub route: Vec<RouteDestination>,
}

/// A rule for opaque TCP traffic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpRoute {
    /// Conditions (ORed); empty matches everything.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub r#match: Vec<L4MatchAttributes>,
    /// Weighted destinations.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub route: Vec<RouteDestination>,
}

/// Conditions on an HTTP request; all set fields must match (ANDed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpMatchRequest {
    /// Name for debugging; joined with the route's name.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub name: String,
    /// Request path.
    #[serde(skip_serializing_if = "is_default")]
    pub uri: Option<StringMatch>,
    /// URI scheme.
    #[serde(skip_serializing_if = "is_default")]
    pub scheme: Option<StringMatch>,
    /// HTTP method.
    #[serde(skip_serializing_if = "is_default")]
    pub method: Option<StringMatch>,
    /// Authority (host) header.
    #[serde(skip_serializing_if = "is_default")]
    pub authority: Option<StringMatch>,
    /// Request headers (lower-case names); `{}` checks presence. Keys may
    /// be `@request.auth.claims.<claim>` on gateways.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub headers: BTreeMap<String, StringMatch>,
    /// Port the request was addressed to.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub port: u32,
    /// Labels the calling workload must carry.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to; overrides the VirtualService's.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub gateways: Vec<String>,
    /// Query parameters.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Match `uri` case-insensitively (exact and prefix only).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub ignore_uri_case: bool,
    /// Headers that must *not* match (same syntax as `headers`).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Namespace of the calling workload.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub source_namespace: String,
    /// Prefix for this match's route statistics.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub stat_prefix: String,
}

/// A weighted HTTP destination, with its own header manipulation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteDestination {
    /// Where to send the request (required).
    #[serde(skip_serializing_if = "is_default")]
    pub destination: Option<Destination>,
    /// Relative share of traffic; istiod normalizes the weights.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub weight: i32,
    /// Header manipulation for this destination.
    #[serde(skip_serializing_if = "is_default")]
    pub headers: Option<Headers>,
}

/// A weighted TCP/TLS destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteDestination {
    /// Where to send the connection (required).
    #[serde(skip_serializing_if = "is_default")]
    pub destination: Option<Destination>,
    /// Relative share of traffic.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub weight: i32,
}

/// Conditions on a TCP connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct L4MatchAttributes {
    /// Destination IPs or CIDRs.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub destination_subnets: Vec<String>,
    /// Destination port.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub port: u32,
    /// Source IP or CIDR.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub source_subnet: String,
    /// Labels the calling workload must carry.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub gateways: Vec<String>,
    /// Namespace of the calling workload.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub source_namespace: String,
}

/// Conditions on a TLS connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsMatchAttributes {
    /// SNI values to match (required); must be covered by the hosts.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub sni_hosts: Vec<String>,
    /// Destination IPs or CIDRs.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub destination_subnets: Vec<String>,
    /// Destination port.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub port: u32,
    /// Labels the calling workload must carry.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub gateways: Vec<String>,
    /// Namespace of the calling workload.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub source_namespace: String,
}

/// An HTTP redirect (301 by default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRedirect {
    /// Replace the path.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub uri: String,
    /// Replace the authority.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub authority: String,
    /// Redirect to this port (exclusive with `derivePort`).
    #[serde(skip_serializing_if = "is_default")]
    pub port: Option<u32>,
    /// Derive the port from the protocol or the request.
    #[serde(skip_serializing_if = "is_default")]
    pub derive_port: Option<RedirectPortSelection>,
    /// Replace the scheme (`http` or `https`).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub scheme: String,
    /// Status code; 301 if zero.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub redirect_code: u32,
}

/// How a redirect's port is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    /// 80 for http, 443 for https.
    #[default]
    FromProtocolDefault,
    /// The port the request came in on.
    FromRequestPort,
}

/// A fixed response returned without forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpDirectResponse {
    /// Status code (required).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub status: u32,
    /// Response body.
    #[serde(skip_serializing_if = "is_default")]
    pub body: Option<HttpBody>,
}

/// A direct response body: exactly one of `string` or `bytes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpBody {
    /// Body as text.
    #[serde(skip_serializing_if = "is_default")]
    pub string: Option<String>,
    /// Body as base64-encoded bytes (kept encoded, as on the wire).
    #[serde(skip_serializing_if = "is_default")]
    pub bytes: Option<String>,
}

impl HttpBody {
    /// The body's content: `string` as UTF-8, or `bytes` base64-decoded.
    /// `None` if neither is set, or `bytes` is not valid base64.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        match (&self.string, &self.bytes) {
            (Some(s), _) => Some(s.as_bytes().to_vec()),
            (None, Some(b)) => decode_base64(b),
            (None, None) => None,
        }
    }
}

/// Rewrites applied before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRewrite {
    /// Replace the matched path or prefix.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub uri: String,
    /// Replace the authority (host) header.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub authority: String,
    /// Rewrite the path with a regex (exclusive with `uri`).
    #[serde(skip_serializing_if = "is_default")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// A regex-based rewrite.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegexRewrite {
    /// RE2-style pattern.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub r#match: String,
    /// Replacement; may use `\1`-style capture groups.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub rewrite: String,
}

/// Retry policy for HTTP requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRetry {
    /// Number of retries; 0 disables retries.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub attempts: i32,
    /// Timeout per attempt.
    #[serde(skip_serializing_if = "is_default")]
    pub per_try_timeout: Option<Duration>,
    /// Comma-separated retry conditions (Envoy `x-envoy-retry-on` /
    /// `x-envoy-retry-grpc-on` values or status codes).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub retry_on: String,
    /// Whether retries should go to other localities.
    #[serde(skip_serializing_if = "is_default")]
    pub retry_remote_localities: Option<bool>,
}

/// Cross-origin resource sharing policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CorsPolicy {
    /// Deprecated: exact origins allowed (use `allowOrigins`).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub allow_origin: Vec<String>,
    /// Origins allowed.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub allow_origins: Vec<StringMatch>,
    /// `Access-Control-Allow-Methods`.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers`.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers`.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age` (whole seconds).
    #[serde(skip_serializing_if = "is_default")]
    pub max_age: Option<Duration>,
    /// `Access-Control-Allow-Credentials`.
    #[serde(skip_serializing_if = "is_default")]
    pub allow_credentials: Option<bool>,
    /// What to do with preflight requests whose origin does not match.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub unmatched_preflights: UnmatchedPreflights,
}

/// Handling of preflight requests that match no allowed origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    /// Default: forward.
    #[default]
    Unspecified,
    /// Forward the preflight to the upstream.
    Forward,
    /// Answer it without CORS headers.
    Ignore,
}

/// Faults to inject: delays and/or aborts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpFaultInjection {
    /// Delay requests before forwarding.
    #[serde(skip_serializing_if = "is_default")]
    pub delay: Option<HttpFaultInjectionDelay>,
    /// Abort requests with an error.
    #[serde(skip_serializing_if = "is_default")]
    pub abort: Option<HttpFaultInjectionAbort>,
}

/// An injected delay: exactly one of `fixedDelay` or `exponentialDelay`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpFaultInjectionDelay {
    /// Deprecated: integer percentage of requests to delay (use `percentage`).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub percent: i32,
    /// Fixed delay.
    #[serde(skip_serializing_if = "is_default")]
    pub fixed_delay: Option<Duration>,
    /// Exponential delay (not supported by istiod).
    #[serde(skip_serializing_if = "is_default")]
    pub exponential_delay: Option<Duration>,
    /// Percentage of requests to delay; all if unset.
    #[serde(skip_serializing_if = "is_default")]
    pub percentage: Option<Percent>,
}

/// An injected abort: exactly one of `httpStatus`, `grpcStatus` or
/// `http2Error`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpFaultInjectionAbort {
    /// HTTP status to return.
    #[serde(skip_serializing_if = "is_default")]
    pub http_status: Option<i32>,
    /// gRPC status name to return (e.g. `UNAVAILABLE`).
    #[serde(skip_serializing_if = "is_default")]
    pub grpc_status: Option<String>,
    /// HTTP/2 error (not supported by istiod).
    #[serde(skip_serializing_if = "is_default")]
    pub http2_error: Option<String>,
    /// Percentage of requests to abort; all if unset.
    #[serde(skip_serializing_if = "is_default")]
    pub percentage: Option<Percent>,
}

/// One mirroring target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpMirrorPolicy {
    /// Where to mirror (required).
    #[serde(skip_serializing_if = "is_default")]
    pub destination: Option<Destination>,
    /// Percentage of traffic to mirror; 100% if unset.
    #[serde(skip_serializing_if = "is_default")]
    pub percentage: Option<Percent>,
}

mod validate;
pub use validate::SUPPORTED_GRPC_STATUS;
use validate::decode_base64;

#[cfg(test)]
mod tests {
    use super::validate::validate_header_value;
    use super::*;
    use crate::model::istio::test_support::{
        assert_round_trip, assert_valid, fields, parse_object, parse_spec,
    };

    fn parse(yaml: &str) -> VirtualService {
        parse_object(yaml)
    }

    /// A redirect or a direct response answers alone; a route needs one of route, redirect or
    /// direct response (istiod's messages, on the conflicting field).
    #[test]
    fn redirect_and_direct_response_exclude_the_rest() {
        let messages = |yaml: &str| -> Vec<String> {
            parse_spec::<VirtualService>(yaml)
                .validate()
                .iter()
                .map(|e| e.to_string())
                .collect()
        };
        assert_eq!(
            messages(
                "hosts: [a.example.com]\nhttp:\n- redirect: {uri: /x}\n  route: [{destination: {host: a.example.com}}]\n  fault: {abort: {httpStatus: 503, percentage: {value: 1}}}\n  directResponse: {status: 200}\n"
            ),
            [
                "spec.http[0].redirect: HTTP route cannot contain both route and redirect",
                "spec.http[0].fault: HTTP route cannot contain both fault and redirect",
                "spec.http[0].directResponse: HTTP route rule cannot contain both direct_response and redirect",
            ]
        );
        assert_eq!(
            messages(
                "hosts: [a.example.com]\nhttp:\n- directResponse: {status: 200}\n  route: [{destination: {host: a.example.com}}]\n  rewrite: {uri: /y}\n"
            ),
            [
                "spec.http[0].directResponse: HTTP route cannot contain both route and direct_response",
                "spec.http[0].rewrite: HTTP route rule cannot contain both rewrite and direct_response",
            ]
        );
        assert_eq!(
            messages("hosts: [a.example.com]\nhttp:\n- name: nothing\n"),
            ["spec.http[0].route: HTTP route, redirect or direct_response is required"]
        );
    }

    const REVIEWS_ROUTE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-route
spec:
  hosts:
  - reviews.prod.svc.cluster.local
  http:
  - name: "reviews-v2-routes"
    match:
    - uri:
        prefix: "/wpcatalog"
    - uri:
        prefix: "/consumercatalog"
    rewrite:
      uri: "/newcatalog"
    route:
    - destination:
        host: reviews.prod.svc.cluster.local
        subset: v2
  - name: "reviews-v1-route"
    route:
    - destination:
        host: reviews.prod.svc.cluster.local
        subset: v1
"#;

    #[test]
    fn reference_example_reviews_route() {
        let vs = parse(REVIEWS_ROUTE);
        assert_eq!(vs.hosts, ["reviews.prod.svc.cluster.local"]);
        assert_eq!(vs.http.len(), 2);
        let first = &vs.http[0];
        assert_eq!(first.name, "reviews-v2-routes");
        assert_eq!(
            first.r#match[1].uri,
            Some(StringMatch::Prefix("/consumercatalog".into()))
        );
        assert_eq!(first.rewrite.as_ref().unwrap().uri, "/newcatalog");
        let dest = first.route[0].destination.as_ref().unwrap();
        assert_eq!(dest.host, "reviews.prod.svc.cluster.local");
        assert_eq!(dest.subset, "v2");
        assert_valid(&vs);
        assert_round_trip(&vs);
    }

    #[test]
    fn reference_example_timeout_and_weights() {
        let vs = parse(
            r#"
spec:
  hosts:
  - productpage.prod.svc.cluster.local # ignores rule namespace
  http:
  - timeout: 5s
    route:
    - destination:
        host: productpage.prod.svc.cluster.local
"#,
        );
        assert_eq!(vs.http[0].timeout, Some(Duration::from_secs(5)));
        assert_valid(&vs);

        let vs = parse(
            r#"
spec:
  hosts:
  - reviews.prod.svc.cluster.local
  http:
  - headers:
      request:
        set:
          test: "true"
    route:
    - destination:
        host: reviews.prod.svc.cluster.local
        subset: v2
      weight: 25
    - destination:
        host: reviews.prod.svc.cluster.local
        subset: v1
      headers:
        response:
          remove:
          - foo
      weight: 75
"#,
        );
        let route = &vs.http[0];
        assert_eq!(
            route
                .headers
                .as_ref()
                .unwrap()
                .request
                .as_ref()
                .unwrap()
                .set["test"],
            "true"
        );
        assert_eq!(route.route[0].weight, 25);
        assert_eq!(
            route.route[1]
                .headers
                .as_ref()
                .unwrap()
                .response
                .as_ref()
                .unwrap()
                .remove,
            ["foo"]
        );
        assert_valid(&vs);
        assert_round_trip(&vs);
    }

    #[test]
    fn reference_example_delegation() {
        let root = parse(
            r#"
spec:
  hosts:
  - "bookinfo.com"
  gateways:
  - mygateway
  http:
  - match:
    - uri:
        prefix: "/productpage"
    delegate:
       name: productpage
       namespace: nsA
  - match:
    - uri:
        prefix: "/reviews"
    delegate:
        name: reviews
        namespace: nsB
"#,
        );
        assert_eq!(
            root.http[0].delegate,
            Some(Delegate {
                name: "productpage".into(),
                namespace: "nsA".into()
            })
        );
        assert_valid(&root);
        assert_round_trip(&root);

        let delegate = parse(
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: productpage
  namespace: nsA
spec:
  http:
  - match:
     - uri:
        prefix: "/productpage/v1/"
    route:
    - destination:
        host: productpage-v1.nsA.svc.cluster.local
  - route:
    - destination:
        host: productpage.nsA.svc.cluster.local
"#,
        );
        assert!(delegate.is_delegate());
        assert_valid(&delegate);
    }

    #[test]
    fn reference_example_tls_and_tcp() {
        let vs = parse(
            r#"
spec:
  hosts:
  - "*.bookinfo.com"
  gateways:
  - mygateway
  tls:
  - match:
    - port: 443
      sniHosts:
      - login.bookinfo.com
    route:
    - destination:
        host: login.prod.svc.cluster.local
  - match:
    - port: 443
      sniHosts:
      - reviews.bookinfo.com
    route:
    - destination:
        host: reviews.prod.svc.cluster.local
"#,
        );
        assert_eq!(vs.tls[0].r#match[0].port, 443);
        assert_eq!(vs.tls[1].r#match[0].sni_hosts, ["reviews.bookinfo.com"]);
        assert_valid(&vs);
        assert_round_trip(&vs);

        let vs = parse(
            r#"
spec:
  hosts:
  - mongo.prod.svc.cluster.local
  tcp:
  - match:
    - port: 27017
    route:
    - destination:
        host: mongo.backup.svc.cluster.local
        port:
          number: 5555
"#,
        );
        let dest = vs.tcp[0].route[0].destination.as_ref().unwrap();
        assert_eq!(dest.port, Some(PortSelector { number: 5555 }));
        assert_valid(&vs);
        assert_round_trip(&vs);
    }

    #[test]
    fn reference_example_match_redirect_direct_response() {
        let vs = parse(
            r#"
spec:
  hosts:
  - ratings.prod.svc.cluster.local
  http:
  - match:
    - headers:
        end-user:
          exact: jason
      uri:
        prefix: "/ratings/v2/"
      ignoreUriCase: true
    route:
    - destination:
        host: ratings.prod.svc.cluster.local
  - match:
    - uri:
        exact: /v1/getProductRatings
    redirect:
      uri: /v1/bookRatings
      authority: newratings.default.svc.cluster.local
  - match:
    - uri:
        exact: /v1/getProductRatings
    directResponse:
      status: 503
      body:
        string: "{\"error\": \"unknown error\"}"
    headers:
      response:
        set:
          content-type: "text/plain"
  - match:
    - uri:
        exact: /v1/getProductRatings
    directResponse:
      status: 503
      body:
        bytes: "dW5rbm93biBlcnJvcg==" # "unknown error" in base64
"#,
        );
        let m = &vs.http[0].r#match[0];
        assert_eq!(m.headers["end-user"], StringMatch::Exact("jason".into()));
        assert!(m.ignore_uri_case);
        let redirect = vs.http[1].redirect.as_ref().unwrap();
        assert_eq!(redirect.authority, "newratings.default.svc.cluster.local");
        let direct = vs.http[2].direct_response.as_ref().unwrap();
        assert_eq!(direct.status, 503);
        assert_eq!(
            direct.body.as_ref().unwrap().string.as_deref(),
            Some(r#"{"error": "unknown error"}"#)
        );
        let body = vs.http[3]
            .direct_response
            .as_ref()
            .unwrap()
            .body
            .as_ref()
            .unwrap();
        assert_eq!(body.to_bytes().unwrap(), b"unknown error");
        assert_valid(&vs);
        assert_round_trip(&vs);
    }

    #[test]
    fn reference_example_retries_cors_fault() {
        let vs = parse(
            r#"
spec:
  hosts:
  - ratings.prod.svc.cluster.local
  http:
  - route:
    - destination:
        host: ratings.prod.svc.cluster.local
        subset: v1
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: gateway-error,connect-failure,refused-stream
    corsPolicy:
      allowOrigins:
      - exact: https://example.com
      allowMethods:
      - POST
      - GET
      allowCredentials: false
      allowHeaders:
      - X-Foo-Bar
      maxAge: "24h"
  - match:
    - sourceLabels:
        env: prod
    route:
    - destination:
        host: reviews.prod.svc.cluster.local
        subset: v1
    fault:
      delay:
        percentage:
          value: 0.1
        fixedDelay: 5s
  - route:
    - destination:
        host: ratings.prod.svc.cluster.local
        subset: v1
    fault:
      abort:
        percentage:
          value: 0.1
        httpStatus: 400
"#,
        );
        let retries = vs.http[0].retries.as_ref().unwrap();
        assert_eq!(retries.attempts, 3);
        assert_eq!(retries.per_try_timeout, Some(Duration::from_secs(2)));
        let cors = vs.http[0].cors_policy.as_ref().unwrap();
        assert_eq!(
            cors.allow_origins,
            [StringMatch::Exact("https://example.com".into())]
        );
        assert_eq!(cors.allow_credentials, Some(false));
        assert_eq!(cors.max_age, Some(Duration::from_secs(86_400)));
        let delay = vs.http[1].fault.as_ref().unwrap().delay.as_ref().unwrap();
        assert_eq!(delay.fixed_delay, Some(Duration::from_secs(5)));
        assert_eq!(delay.percentage, Some(Percent { value: 0.1 }));
        let abort = vs.http[2].fault.as_ref().unwrap().abort.as_ref().unwrap();
        assert_eq!(abort.http_status, Some(400));
        assert_valid(&vs);
        assert_round_trip(&vs);
        // allowCredentials: false is kept, since it is a BoolValue.
        let json = serde_json::to_value(&vs).unwrap();
        assert_eq!(json["http"][0]["corsPolicy"]["allowCredentials"], false);
        assert_eq!(json["http"][0]["corsPolicy"]["maxAge"], "86400s");
    }

    #[test]
    fn every_field_parses_and_round_trips() {
        let vs: VirtualService = parse_spec(
            r#"
hosts: [a.example.com]
gateways: [istio-system/gw, mesh]
exportTo: ["."]
http:
- name: all
  match:
  - name: m
    uri: {regex: "^/api/.*"}
    scheme: {exact: https}
    method: {exact: GET}
    authority: {prefix: a.example}
    headers:
      x-present: {}
      x-user: {prefix: bob}
    withoutHeaders:
      x-debug: {regex: "*"}
    port: 8080
    sourceLabels: {app: web}
    gateways: [mesh]
    queryParams:
      q: {exact: "1"}
    ignoreUriCase: true
    sourceNamespace: default
    statPrefix: api
  route:
  - destination: {host: a.example.com, subset: v1, port: {number: 80}}
    weight: 90
    headers:
      request: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [x-c]}
  - destination: {host: b.example.com}
    weight: 10
  rewrite: {authority: b.example.com}
  timeout: 1.5s
  retries: {attempts: 2, perTryTimeout: 500ms, retryOn: "5xx,503", retryRemoteLocalities: true}
  fault:
    delay: {percent: 5, fixedDelay: 1s}
    abort: {grpcStatus: UNAVAILABLE, percentage: {value: 1}}
  mirror: {host: mirror.example.com}
  mirror_percent: 50
  mirrorPercentage: {value: 25.5}
  corsPolicy:
    allowOrigin: [https://legacy.example.com]
    allowOrigins: [{prefix: "https://"}]
    allowMethods: [GET]
    allowHeaders: ["*"]
    exposeHeaders: [x-exposed]
    maxAge: 1m
    allowCredentials: true
    unmatchedPreflights: IGNORE
  headers:
    response: {set: {x-r: "%HOSTNAME%"}}
- route:
  - destination: {host: a.example.com}
  mirrors:
  - destination: {host: m1.example.com}
    percentage: {value: 10}
- redirect: {port: 8443, scheme: https, redirectCode: 308}
- redirect: {derivePort: FROM_REQUEST_PORT, uri: /x}
- directResponse: {status: 200}
tls:
- match:
  - sniHosts: [a.example.com]
    destinationSubnets: [10.0.0.0/8]
    port: 443
    sourceLabels: {app: web}
    gateways: [mesh]
    sourceNamespace: default
  route:
  - destination: {host: a.example.com}
    weight: 100
tcp:
- match:
  - destinationSubnets: [10.0.0.1]
    port: 3306
    sourceSubnet: 10.1.0.0/16
    sourceLabels: {app: web}
    gateways: [mesh]
    sourceNamespace: default
  route:
  - destination: {host: db.example.com}
"#,
        );
        let http = &vs.http[0];
        let m = &http.r#match[0];
        assert_eq!(m.headers["x-present"], StringMatch::Any);
        assert_eq!(m.without_headers["x-debug"], StringMatch::Regex("*".into()));
        assert_eq!(m.query_params["q"], StringMatch::Exact("1".into()));
        assert_eq!(m.stat_prefix, "api");
        assert_eq!(http.mirror_percent, Some(50));
        assert_eq!(http.mirror_percentage, Some(Percent { value: 25.5 }));
        let cors = http.cors_policy.as_ref().unwrap();
        assert_eq!(cors.unmatched_preflights, UnmatchedPreflights::Ignore);
        assert_eq!(cors.allow_origin, ["https://legacy.example.com"]);
        let retries = http.retries.as_ref().unwrap();
        assert_eq!(retries.retry_remote_localities, Some(true));
        assert_eq!(
            http.fault.as_ref().unwrap().delay.as_ref().unwrap().percent,
            5
        );
        assert_eq!(
            vs.http[3].redirect.as_ref().unwrap().derive_port,
            Some(RedirectPortSelection::FromRequestPort)
        );
        assert_eq!(vs.http[2].redirect.as_ref().unwrap().port, Some(8443));
        assert_eq!(vs.tcp[0].r#match[0].source_subnet, "10.1.0.0/16");
        assert_valid(&vs);
        assert_round_trip(&vs);

        // The deprecated snake_case spelling is read, and written back in camelCase.
        let json = serde_json::to_value(&vs).unwrap();
        assert_eq!(json["http"][0]["mirrorPercent"], 50);
        assert_eq!(json["http"][0]["timeout"], "1.5s");
        assert_eq!(
            json["http"][0]["match"][0]["headers"]["x-present"],
            serde_json::json!({})
        );
    }

    #[test]
    fn round_trip_does_not_invent_fields() {
        let input = serde_json::json!({
            "hosts": ["a"],
            "http": [{"route": [{"destination": {"host": "a"}}]}]
        });
        let vs: VirtualService = serde_json::from_value(input.clone()).unwrap();
        assert_eq!(serde_json::to_value(&vs).unwrap(), input);
        // Unknown fields are ignored.
        let vs: VirtualService = serde_json::from_value(serde_json::json!({
            "hosts": ["a"], "futureField": {"x": 1},
            "http": [{"route": [{"destination": {"host": "a", "extra": true}}]}]
        }))
        .unwrap();
        assert_eq!(vs.http[0].route[0].destination.as_ref().unwrap().host, "a");
    }

    #[test]
    fn explicit_nulls_read_as_defaults() {
        let vs: VirtualService = serde_json::from_value(serde_json::json!({
            "hosts": ["a"], "gateways": null, "exportTo": null, "tls": null,
            "http": [{
                "name": null, "route": [{"destination": {"host": "a", "subset": null}, "weight": null}],
                "match": [{"port": null, "headers": null, "ignoreUriCase": null, "uri": null}],
                "mirrorPercentage": {"value": null}, "timeout": null
            }]
        }))
        .unwrap();
        assert!(vs.gateways.is_empty());
        assert_eq!(vs.http[0].r#match[0].port, 0);
        assert_eq!(vs.http[0].mirror_percentage, Some(Percent { value: 0.0 }));
        let vs: VirtualService = serde_saphyr::from_str("hosts:\nhttp:\n").unwrap();
        assert_eq!(vs, VirtualService::default());
    }

    #[test]
    fn reference_example_mesh_and_gateway_bindings() {
        let vs = parse(
            r#"
spec:
  hosts:
  - example.com
  exportTo:
  - "*"
  gateways:
  - mesh
  - istio-egressgateway
  http:
  - match:
    - port: 80
      gateways:
      - mesh
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
  - match:
    - port: 80
      gateways:
      - istio-egressgateway
    route:
    - destination:
        host: example.com
"#,
        );
        assert!(!vs.is_gateway_only());
        assert_eq!(vs.http[1].r#match[0].gateways, ["istio-egressgateway"]);
        assert_valid(&vs);
        assert_round_trip(&vs);

        let vs = parse(
            r#"
spec:
  hosts:
  - wikipedia.org
  - "*.wikipedia.org"
  tls:
  - match:
    - sniHosts:
      - wikipedia.org
      - "*.wikipedia.org"
    route:
    - destination:
        host: internal-egress-firewall.ns1.svc.cluster.local
"#,
        );
        assert_valid(&vs);
        assert_round_trip(&vs);
    }

    #[test]
    fn rejects_invalid_base64_body() {
        let vs: VirtualService = parse_spec(
            r#"
hosts: [a]
http:
- directResponse: {status: 404, body: {bytes: "not base64!"}}
"#,
        );
        let errs = vs.validate();
        assert_eq!(fields(&errs), ["spec.http[0].directResponse.body.bytes"]);
        assert_eq!(
            errs[0].to_string(),
            "spec.http[0].directResponse.body.bytes: bytes must be valid base64"
        );
    }

    #[test]
    fn rejects_bad_enum_and_oneof_values() {
        assert!(
            serde_json::from_value::<HttpRedirect>(serde_json::json!({"derivePort": "NOPE"}))
                .is_err()
        );
        assert!(
            serde_json::from_value::<HttpMatchRequest>(
                serde_json::json!({"uri": {"exact": "/a", "prefix": "/b"}})
            )
            .is_err()
        );
    }

    #[test]
    fn validates_hosts() {
        let vs: VirtualService = parse_spec(
            r#"
hosts: ["*", "bad_host", "a.example.com", "*.example.com"]
http:
- route:
  - destination: {host: a.example.com}
"#,
        );
        let errs = vs.validate();
        assert_eq!(fields(&errs), ["spec.hosts[0]", "spec.hosts[1]"]);
        assert!(errs[0].message.contains("wildcard host *"));

        let vs: VirtualService = parse_spec(
            r#"
hosts: ["a.example.com", "*.example.com"]
http:
- route:
  - destination: {host: a.example.com}
"#,
        );
        let errs = vs.validate();
        assert_eq!(fields(&errs), ["spec.hosts[1]"]);
        assert_eq!(
            errs[0].to_string(),
            "spec.hosts[1]: duplicate hosts in virtual service: a.example.com & *.example.com"
        );

        let empty: VirtualService = parse_spec("hosts: [a]");
        assert_eq!(fields(&empty.validate()), ["spec.http"]);
    }

    #[test]
    fn validates_route_conflicts() {
        let vs: VirtualService = parse_spec(
            r#"
hosts: [a]
http:
- route:
  - destination: {host: a}
  redirect: {uri: /x}
- directResponse: {status: 200}
  redirect: {uri: /x}
- {}
- directResponse: {status: 200}
  fault: {abort: {httpStatus: 500}}
- route:
  - destination: {host: a}
  mirror: {host: b}
  mirrors: [{destination: {host: c}}]
"#,
        );
        let errs = vs.validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.http[0].redirect",
                "spec.http[1].directResponse",
                "spec.http[2].route",
                "spec.http[3].fault",
                "spec.http[4].mirrors",
            ]
        );
    }

    #[test]
    fn validates_delegation_rules() {
        let root: VirtualService = parse_spec(
            r#"
hosts: [a]
http:
- delegate: {name: d}
  route:
  - destination: {host: a}
"#,
        );
        assert_eq!(fields(&root.validate()), ["spec.http[0].route"]);

        let delegate: VirtualService = parse_spec(
            r#"
gateways: [gw]
http:
- delegate: {name: d}
tcp:
- route:
  - destination: {host: a}
"#,
        );
        assert_eq!(
            fields(&delegate.validate()),
            [
                "spec.gateways",
                "spec.tcp",
                "spec.http[0].delegate",
                "spec.http[0].route"
            ]
        );
    }

    #[test]
    fn validates_destinations_and_weights() {
        let vs: VirtualService = parse_spec(
            r#"
hosts: [a]
http:
- route:
  - destination: {host: "*"}
    weight: -1
  - destination: {host: a, subset: "Bad_Subset", port: {number: 70000}}
    weight: 1
  - weight: 0
- route:
  - destination: {host: a}
    weight: 0
  - destination: {host: b}
    weight: 0
- route:
  - destination: {host: a}
    weight: 150
- route:
  - destination: {host: a}
    weight: 60
  - destination: {host: b}
    weight: 60
"#,
        );
        let errs = vs.validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.http[0].route[0].destination.host",
                "spec.http[0].route[1].destination.subset",
                "spec.http[0].route[1].destination.port.number",
                "spec.http[0].route[2].destination",
                "spec.http[0].route[0].weight",
                "spec.http[0].route",
                "spec.http[1].route",
                "spec.http[3].route",
            ]
        );
        assert_eq!(
            errs[7].message,
            "total destination weight 120 != 100; make the weights of the destinations sum to 100"
        );
        assert_eq!(errs[4].message, "weight -1 < 0");
        // -1 + 1 + 0 sums to zero too, as istiod counts it.
        assert_eq!(errs[5].message, "total destination weight = 0");
        assert_eq!(errs[6].message, "total destination weight = 0");
    }

    #[test]
    fn validates_matches() {
        let vs: VirtualService = parse_spec(
            r#"
hosts: [a]
http:
- match:
  - uri: {regex: "("}
    method: {prefix: ""}
    headers:
      "bad header": {exact: x}
      "@request.auth.claims.group": {exact: admin}
    withoutHeaders:
      x-any: {regex: "*"}
    queryParams:
      q: {regex: "[a-"}
    port: 0
    sourceLabels: {"bad key!": x}
    gateways: [bad/gw_name]
    sourceNamespace: Bad_NS
  - uri: {prefix: ""}
    port: 99999
  route:
  - destination: {host: a}
"#,
        );
        let errs = vs.validate();
        assert_eq!(
            fields(&errs),
            [
                r#"spec.http[0].match[0].headers["@request.auth.claims.group"]"#,
                r#"spec.http[0].match[0].headers["bad header"]"#,
                "spec.http[0].match[0].uri",
                "spec.http[0].match[0].method",
                r#"spec.http[0].match[0].queryParams["q"]"#,
                r#"spec.http[0].match[0].sourceLabels["bad key!"]"#,
                "spec.http[0].match[0].gateways[0]",
                "spec.http[0].match[0].sourceNamespace",
                "spec.http[0].match[1].port",
            ]
        );
        assert!(errs[0].message.contains("JWT claim based routing"));
        assert!(errs[2].message.contains("RE2"));

        // JWT claim routing is fine on a gateway.
        let vs: VirtualService = parse_spec(
            r#"
hosts: [a.example.com]
gateways: [istio-system/gw]
http:
- match:
  - headers:
      "@request.auth.claims[group]": {exact: admin}
  route:
  - destination: {host: a}
"#,
        );
        assert_valid(&vs);
    }

    #[test]
    fn validates_fault_retry_mirror_timeout() {
        let vs: VirtualService = parse_spec(
            r#"
hosts: [a]
http:
- route:
  - destination: {host: a}
  timeout: 0s
  retries: {attempts: -1, perTryTimeout: 1500us, retryOn: "5xx,bogus"}
  fault:
    delay: {percentage: {value: 101}, fixedDelay: 0s}
    abort: {httpStatus: 700, percentage: {value: -1}}
  mirror: {host: b}
  mirror_percent: 101
  mirrorPercentage: {value: 100.5}
- route:
  - destination: {host: a}
  fault: {}
  retries: {attempts: 0, retryOn: 5xx}
- route:
  - destination: {host: a}
  fault:
    abort: {grpcStatus: NOPE}
  mirrors:
  - percentage: {value: 50}
"#,
        );
        let errs = vs.validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.http[0].fault.abort.percentage",
                "spec.http[0].fault.abort.httpStatus",
                "spec.http[0].fault.delay.percentage",
                "spec.http[0].fault.delay.fixedDelay",
                "spec.http[0].mirrorPercent",
                "spec.http[0].mirrorPercentage",
                "spec.http[0].retries.attempts",
                "spec.http[0].retries.perTryTimeout",
                "spec.http[0].retries.retryOn",
                "spec.http[0].timeout",
                "spec.http[1].fault",
                "spec.http[1].retries.attempts",
                "spec.http[2].fault.abort.grpcStatus",
                "spec.http[2].mirrors[0].destination",
            ]
        );
        assert_eq!(errs[1].message, "HTTP status 700 is not in range 200-599");
        assert_eq!(errs[8].message, r#""bogus" is not a valid retryOn policy"#);
        assert_eq!(errs[9].message, "duration must be greater than 1ms");
    }

    #[test]
    fn validates_redirect_rewrite_direct_response_cors() {
        let vs: VirtualService = parse_spec(
            r#"
hosts: [a]
http:
- redirect: {redirectCode: 200, scheme: ftp, port: 8080, derivePort: FROM_REQUEST_PORT}
- redirect: {}
- route:
  - destination: {host: a}
  rewrite: {uri: /a, uriRegexRewrite: {match: "(", rewrite: x}}
  headers:
    request:
      set: {":path": /x, host: b.example.com}
      remove: [host]
    response:
      add: {x-bad: "50%"}
- route:
  - destination: {host: a}
  rewrite: {}
  corsPolicy:
    allowOrigins: [{exact: ""}, {regex: "["}]
    allowMethods: [FETCH]
    allowHeaders: ["bad header"]
    maxAge: 1.5s
- directResponse: {status: 100, body: {string: x, bytes: "!!"}}
- route:
  - destination: {host: a}
  rewrite: {authority: b.example.com}
  headers:
    request:
      set: {":authority": c.example.com}
"#,
        );
        let errs = vs.validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.http[0].redirect.derivePort",
                "spec.http[0].redirect.redirectCode",
                "spec.http[0].redirect.scheme",
                "spec.http[1].redirect",
                r#"spec.http[2].headers.request.set[":path"]"#,
                "spec.http[2].headers.request.remove[0]",
                r#"spec.http[2].headers.response.add["x-bad"]"#,
                "spec.http[2].rewrite",
                "spec.http[2].rewrite.uriRegexRewrite.match",
                "spec.http[3].corsPolicy.allowOrigins[0]",
                "spec.http[3].corsPolicy.allowOrigins[1]",
                "spec.http[3].corsPolicy.allowMethods[0]",
                "spec.http[3].corsPolicy.allowHeaders[0]",
                "spec.http[3].corsPolicy.maxAge",
                "spec.http[3].rewrite",
                "spec.http[4].directResponse.body",
                "spec.http[4].directResponse.status",
                r#"spec.http[5].headers.request.set[":authority"]"#,
            ]
        );
    }

    #[test]
    fn validates_tls_and_tcp_routes() {
        let vs: VirtualService = parse_spec(
            r#"
hosts: ["*.bookinfo.com"]
tls:
- match:
  - sniHosts: [other.example.com]
    destinationSubnets: [10.0.0.0/99]
  route: []
- match: []
  route:
  - destination: {host: a}
tcp:
- match:
  - port: 70000
    destinationSubnets: [nope]
"#,
        );
        let errs = vs.validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.tls[0].match[0].sniHosts[0]",
                "spec.tls[0].match[0].destinationSubnets[0]",
                "spec.tls[0].route",
                "spec.tls[1].match",
                "spec.tcp[0].match[0].destinationSubnets[0]",
                "spec.tcp[0].match[0].port",
                "spec.tcp[0].route",
            ]
        );
        assert!(errs[0].message.contains("not a compatible subset"));
    }

    #[test]
    fn header_values_follow_envoy_rules() {
        assert!(validate_header_value("plain").is_ok());
        assert!(validate_header_value("100%%").is_ok());
        assert!(validate_header_value("%HOSTNAME%").is_ok());
        assert!(validate_header_value("prefix %HOSTNAME% suffix").is_ok());
        assert!(validate_header_value(r#"%REQ(["x-foo"])%"#).is_ok());
        assert!(validate_header_value("%REQ(x-foo)%").is_ok());
        assert!(validate_header_value("abc%").is_err());
        assert!(validate_header_value("%START_TIME%%").is_err());
        assert!(validate_header_value("%VAR").is_err());
        assert!(validate_header_value("a\nb").is_err());
    }

    #[test]
    fn base64_bodies() {
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("aGk").unwrap(), b"hi");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("_-8").unwrap(), [0xff, 0xef]);
        assert!(decode_base64("a").is_none());
        assert!(decode_base64("a===").is_none());
        assert!(decode_base64("!!").is_none());
    }
}
