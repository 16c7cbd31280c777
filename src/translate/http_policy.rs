//! The per-route HTTP policies of a VirtualService `http` rule, as istiod 1.24 translates them:
//! fault injection (`envoy.filters.http.fault` per-route `HTTPFault`), CORS
//! (`envoy.filters.http.cors` per-route `CorsPolicy`), retries (`RetryPolicy`, including Istio's
//! default policy), mirroring fractions, and header operations.
//!
//! Pure functions from the Istio model to Envoy messages; `route` assembles them into routes.
//! Percentages follow istiod's conversions: a `Percent` double becomes a `MILLION` fraction
//! (`value × 10000`, truncated), a deprecated integer percentage a `HUNDRED` fraction.

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{RetryPolicy, retry_policy};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    FaultDelay, fault_delay::FaultDelaySecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort::ErrorType,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use crate::model::istio::common::Percent;
use crate::model::istio::headers::{is_authority_header, is_internal_header, known_status_code};
use crate::model::istio::virtual_service::SUPPORTED_GRPC_STATUS;
use crate::model::istio::virtual_service::{
    CorsPolicy, HeaderOperations, Headers, HttpFaultInjection, HttpMirrorPolicy, HttpRetry,
    HttpRoute, UnmatchedPreflights,
};
use crate::translate::common::string_matcher;
use crate::translate::{any, pb_duration};

/// Per-route config key of the fault filter.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// Per-route config key of the CORS filter.
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// Istio's default `retry_on` (1.24: 503 is not retried by default,
/// `EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY=true`, so no `retriable_status_codes` either).
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
const HOST_SELECTION_RETRY_MAX_ATTEMPTS: i64 = 5;
const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
const PREVIOUS_PRIORITIES: &str = "envoy.retry_priorities.previous_priorities";

/// A `Percent` (double) as istiod writes it: `value × 10000` per `MILLION`.
pub fn percent_fraction(p: &Percent) -> FractionalPercent {
    FractionalPercent {
        // Go's float64 → uint32 conversion truncates, as `as` does for in-range values.
        numerator: (p.value * 10_000.0) as u32,
        denominator: DenominatorType::Million as i32,
    }
}

/// A deprecated integer percentage: `n` per `HUNDRED`.
pub fn integer_fraction(n: u32) -> FractionalPercent {
    FractionalPercent {
        numerator: n,
        denominator: DenominatorType::Hundred as i32,
    }
}

/// `HTTPFaultInjection` → per-route `HTTPFault`. A delay without `fixedDelay` (exponential) and
/// an abort without `httpStatus`/`grpcStatus` (http2Error) are dropped, as istiod does; what is
/// left may be empty, which disables nothing and injects nothing.
pub fn fault(f: &HttpFaultInjection) -> HttpFault {
    let delay = f.delay.as_ref().and_then(|d| {
        let fixed = d.fixed_delay?;
        Some(FaultDelay {
            percentage: Some(match &d.percentage {
                Some(p) => percent_fraction(p),
                // Unset `percent` is 0: no request is delayed.
                None => integer_fraction(u32::try_from(d.percent).unwrap_or(0)),
            }),
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(pb_duration(fixed.as_std()))),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error_type = if let Some(status) = a.http_status {
            ErrorType::HttpStatus(u32::try_from(status).ok()?)
        } else if let Some(name) = &a.grpc_status {
            let code = SUPPORTED_GRPC_STATUS.iter().position(|s| s == name)?;
            ErrorType::GrpcStatus(code as u32)
        } else {
            return None;
        };
        Some(FaultAbort {
            // Unset: Envoy's default, which aborts no request.
            percentage: a.percentage.as_ref().map(percent_fraction),
            error_type: Some(error_type),
            ..Default::default()
        })
    });
    HttpFault {
        delay,
        abort,
        ..Default::default()
    }
}

/// `CorsPolicy` → per-route Envoy `CorsPolicy`. `allowOrigins` wins over the deprecated exact
/// `allowOrigin`; the filter is enabled for 100% of requests; preflights whose origin does not
/// match are forwarded upstream unless `unmatchedPreflights: IGNORE` (istiod sets
/// `forward_not_matching_preflights` for 1.23+ proxies, and every Envoy we serve is newer).
pub fn cors_policy(c: &CorsPolicy) -> EnvoyCorsPolicy {
    let allow_origin_string_match: Vec<StringMatcher> = if !c.allow_origins.is_empty() {
        c.allow_origins
            .iter()
            .filter_map(|m| string_matcher(m, false))
            .collect()
    } else {
        c.allow_origin
            .iter()
            .map(|o| StringMatcher {
                match_pattern: Some(MatchPattern::Exact(o.clone())),
                ignore_case: false,
            })
            .collect()
    };
    EnvoyCorsPolicy {
        allow_origin_string_match,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .map(|d| d.as_std().as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(integer_fraction(100)),
            runtime_key: String::new(),
        }),
        forward_not_matching_preflights: Some(BoolValue {
            value: c.unmatched_preflights != UnmatchedPreflights::Ignore,
        }),
        ..Default::default()
    }
}

/// Istio's mesh-wide default retry policy: 2 retries on connection-level failures, trying
/// other hosts first (`previous_hosts`, 5 host selection attempts).
pub fn default_retry_policy() -> RetryPolicy {
    let mut policy = default_consistent_hash_retry_policy();
    policy.retry_host_predicate = vec![retry_policy::RetryHostPredicate {
        name: PREVIOUS_HOSTS.into(),
        config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
            any(&PreviousHostsPredicate {}),
        )),
    }];
    policy
}

/// The default policy for destinations with consistent-hash load balancing: no
/// `previous_hosts` predicate, so a retry may go back to the hashed host.
pub fn default_consistent_hash_retry_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.into(),
        num_retries: Some(UInt32Value {
            value: DEFAULT_RETRY_ATTEMPTS,
        }),
        host_selection_retry_max_attempts: HOST_SELECTION_RETRY_MAX_ATTEMPTS,
        ..Default::default()
    }
}

/// `HTTPRetry` → `RetryPolicy`, as istiod's `retry.ConvertPolicy`: unset → the default policy;
/// `attempts <= 0` → no policy (retries disabled); otherwise the default with `num_retries`,
/// `retry_on` (numeric entries become `retriable_status_codes`, adding the
/// `retriable-status-codes` condition if missing), `per_try_timeout`, and for
/// `retryRemoteLocalities: true` the `previous_priorities` retry priority.
pub fn retry_policy(retries: Option<&HttpRetry>, consistent_hash: bool) -> Option<RetryPolicy> {
    let mut out = if consistent_hash {
        default_consistent_hash_retry_policy()
    } else {
        default_retry_policy()
    };
    let Some(r) = retries else {
        return Some(out);
    };
    if r.attempts <= 0 {
        return None;
    }
    out.num_retries = Some(UInt32Value {
        value: r.attempts.unsigned_abs(),
    });
    if !r.retry_on.is_empty() {
        let (conditions, codes) = parse_retry_on(&r.retry_on);
        out.retry_on = conditions;
        if !codes.is_empty() && !out.retry_on.contains("retriable-status-codes") {
            // Appended as istiod does, even to an empty list (",retriable-status-codes"):
            // Envoy skips empty entries.
            out.retry_on.push_str(",retriable-status-codes");
        }
        out.retriable_status_codes = codes;
    }
    if let Some(t) = r.per_try_timeout {
        out.per_try_timeout = Some(pb_duration(t.as_std()));
    }
    if r.retry_remote_localities == Some(true) {
        out.retry_priority = Some(retry_policy::RetryPriority {
            name: PREVIOUS_PRIORITIES.into(),
            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(any(
                &PreviousPrioritiesConfig {
                    update_frequency: 2,
                },
            ))),
        });
    }
    Some(out)
}

/// Splits `retryOn` into Envoy conditions (re-joined with `,`, trimmed, empties dropped) and
/// HTTP status codes.
fn parse_retry_on(retry_on: &str) -> (String, Vec<u32>) {
    let mut conditions = Vec::new();
    let mut codes = Vec::new();
    for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match known_status_code(part) {
            Some(code) => codes.push(u32::from(code)),
            None => conditions.push(part),
        }
    }
    (conditions.join(","), codes)
}

/// The fraction of requests `http.mirror` receives: `mirrorPercentage`, else the deprecated
/// `mirrorPercent`, else 100%. An explicit 0 means no mirroring (`None`).
pub fn mirror_fraction(http: &HttpRoute) -> Option<RuntimeFractionalPercent> {
    let fraction = match (&http.mirror_percentage, http.mirror_percent) {
        (Some(p), _) if p.value > 0.0 => percent_fraction(p),
        (Some(_), _) => return None,
        (None, Some(n)) if n > 0 => integer_fraction(n),
        (None, Some(_)) => return None,
        (None, None) => integer_fraction(100),
    };
    Some(runtime_fraction(fraction))
}

/// The fraction of requests one `mirrors` entry receives: its `percentage`, else 100%; an
/// explicit 0 means none (`None`).
pub fn mirror_policy_fraction(m: &HttpMirrorPolicy) -> Option<RuntimeFractionalPercent> {
    let fraction = match &m.percentage {
        Some(p) if p.value > 0.0 => percent_fraction(p),
        Some(_) => return None,
        None => integer_fraction(100),
    };
    Some(runtime_fraction(fraction))
}

fn runtime_fraction(default_value: FractionalPercent) -> RuntimeFractionalPercent {
    RuntimeFractionalPercent {
        default_value: Some(default_value),
        runtime_key: String::new(),
    }
}

/// The Envoy form of a `Headers` block.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HeaderOps {
    pub request_add: Vec<HeaderValueOption>,
    pub request_remove: Vec<String>,
    pub response_add: Vec<HeaderValueOption>,
    pub response_remove: Vec<String>,
    /// A request `set`/`add` of `:authority` or `host` (set wins): becomes a host rewrite.
    pub authority: String,
}

/// `Headers` → header operations, as istiod's `TranslateHeadersOperations`: `set` entries
/// (`OVERWRITE_IF_EXISTS_OR_ADD`) then `add` entries (`APPEND_IF_EXISTS_OR_ADD`), each sorted
/// by name; pseudo-headers and `host` are never emitted as header operations (an authority
/// becomes a host rewrite instead), nor removed.
pub fn header_operations(h: &Headers) -> HeaderOps {
    let empty = HeaderOperations::default();
    let req = h.request.as_ref().unwrap_or(&empty);
    let resp = h.response.as_ref().unwrap_or(&empty);
    let (mut request_add, set_authority) =
        header_values(req.set.iter(), HeaderAppendAction::OverwriteIfExistsOrAdd);
    let (add, add_authority) =
        header_values(req.add.iter(), HeaderAppendAction::AppendIfExistsOrAdd);
    request_add.extend(add);
    let (mut response_add, _) =
        header_values(resp.set.iter(), HeaderAppendAction::OverwriteIfExistsOrAdd);
    response_add.extend(header_values(resp.add.iter(), HeaderAppendAction::AppendIfExistsOrAdd).0);
    HeaderOps {
        request_add,
        request_remove: drop_internal(&req.remove),
        response_add,
        response_remove: drop_internal(&resp.remove),
        authority: if set_authority.is_empty() {
            add_authority
        } else {
            set_authority
        },
    }
}

fn drop_internal(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| !is_internal_header(n))
        .cloned()
        .collect()
}

/// Header values sorted by name (the model's map is ordered), and the authority among them.
fn header_values<'a>(
    headers: impl Iterator<Item = (&'a String, &'a String)>,
    action: HeaderAppendAction,
) -> (Vec<HeaderValueOption>, String) {
    let mut authority = String::new();
    let mut out = Vec::new();
    for (key, value) in headers {
        if is_authority_header(key) {
            authority = value.clone();
        }
        if is_internal_header(key) {
            continue;
        }
        out.push(HeaderValueOption {
            header: Some(HeaderValue {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        });
    }
    (out, authority)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::istio::virtual_service::{HttpFaultInjectionAbort, HttpFaultInjectionDelay};

    fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_saphyr::from_str(s).unwrap()
    }

    #[test]
    fn percentages_convert_as_istiod_does() {
        let p = percent_fraction(&Percent { value: 0.1 });
        assert_eq!(
            (p.numerator, p.denominator),
            (1000, DenominatorType::Million as i32)
        );
        assert_eq!(
            percent_fraction(&Percent { value: 50.0 }).numerator,
            500_000
        );
        assert_eq!(
            percent_fraction(&Percent { value: 100.0 }).numerator,
            1_000_000
        );
        let i = integer_fraction(50);
        assert_eq!(
            (i.numerator, i.denominator),
            (50, DenominatorType::Hundred as i32)
        );
    }

    #[test]
    fn fault_delay_and_abort() {
        let f: HttpFaultInjection = yaml(
            "delay: {percent: 50, fixedDelay: 3s}\nabort: {httpStatus: 500, percentage: {value: 100}}",
        );
        let out = fault(&f);
        let delay = out.delay.unwrap();
        assert_eq!(delay.percentage, Some(integer_fraction(50)));
        assert_eq!(
            delay.fault_delay_secifier,
            Some(FaultDelaySecifier::FixedDelay(pb_duration(
                std::time::Duration::from_secs(3)
            )))
        );
        let abort = out.abort.unwrap();
        assert_eq!(abort.percentage.unwrap().numerator, 1_000_000);
        assert_eq!(abort.error_type, Some(ErrorType::HttpStatus(500)));

        // `percentage` wins over `percent`; no percentage at all is 0%.
        let f = HttpFaultInjection {
            delay: Some(HttpFaultInjectionDelay {
                percent: 10,
                percentage: Some(Percent { value: 12.5 }),
                fixed_delay: Some(crate::model::duration::Duration::from_millis(5)),
                ..Default::default()
            }),
            abort: Some(HttpFaultInjectionAbort {
                grpc_status: Some("UNAVAILABLE".into()),
                ..Default::default()
            }),
        };
        let out = fault(&f);
        assert_eq!(out.delay.unwrap().percentage.unwrap().numerator, 125_000);
        let abort = out.abort.unwrap();
        assert_eq!(abort.error_type, Some(ErrorType::GrpcStatus(14)));
        assert_eq!(abort.percentage, None);
        let none: HttpFaultInjection = yaml("delay: {fixedDelay: 1s}");
        assert_eq!(fault(&none).delay.unwrap().percentage.unwrap().numerator, 0);
        // Exponential delays and HTTP/2 errors are not translated.
        let unsupported: HttpFaultInjection =
            yaml("delay: {exponentialDelay: 1s}\nabort: {http2Error: CANCEL}");
        assert_eq!(fault(&unsupported), HttpFault::default());
    }

    #[test]
    fn retries() {
        assert_eq!(retry_policy(None, false), Some(default_retry_policy()));
        assert!(
            retry_policy(None, true)
                .unwrap()
                .retry_host_predicate
                .is_empty()
        );
        let off: HttpRetry = yaml("attempts: 0");
        assert_eq!(retry_policy(Some(&off), false), None);

        let r: HttpRetry =
            yaml("attempts: 3\nperTryTimeout: 2s\nretryOn: 5xx, connect-failure,503 ,429");
        let p = retry_policy(Some(&r), false).unwrap();
        assert_eq!(p.num_retries, Some(UInt32Value { value: 3 }));
        assert_eq!(p.retry_on, "5xx,connect-failure,retriable-status-codes");
        assert_eq!(p.retriable_status_codes, vec![503, 429]);
        assert_eq!(
            p.per_try_timeout,
            Some(pb_duration(std::time::Duration::from_secs(2)))
        );
        assert_eq!(p.retry_host_predicate.len(), 1);
        assert_eq!(p.host_selection_retry_max_attempts, 5);
        assert!(p.retry_priority.is_none());

        let only_codes: HttpRetry =
            yaml("attempts: 1\nretryOn: \"503\"\nretryRemoteLocalities: true");
        let p = retry_policy(Some(&only_codes), false).unwrap();
        assert_eq!(p.retry_on, ",retriable-status-codes");
        assert_eq!(p.retriable_status_codes, vec![503]);
        assert_eq!(p.retry_priority.unwrap().name, PREVIOUS_PRIORITIES);

        // Attempts alone keep the default conditions.
        let attempts: HttpRetry = yaml("attempts: 5");
        let p = retry_policy(Some(&attempts), false).unwrap();
        assert_eq!(p.retry_on, DEFAULT_RETRY_ON);
        assert!(p.retriable_status_codes.is_empty());
        // A number that is not a status code stays a condition (Envoy will reject it).
        assert_eq!(parse_retry_on("999,reset"), ("999,reset".into(), vec![]));
    }

    #[test]
    fn mirror_fractions() {
        let mut http = HttpRoute::default();
        assert_eq!(
            mirror_fraction(&http).unwrap().default_value,
            Some(integer_fraction(100))
        );
        http.mirror_percent = Some(30);
        assert_eq!(
            mirror_fraction(&http).unwrap().default_value,
            Some(integer_fraction(30))
        );
        http.mirror_percentage = Some(Percent { value: 50.0 });
        assert_eq!(
            mirror_fraction(&http)
                .unwrap()
                .default_value
                .unwrap()
                .numerator,
            500_000
        );
        http.mirror_percentage = Some(Percent { value: 0.0 });
        assert_eq!(mirror_fraction(&http), None);
        http.mirror_percentage = None;
        http.mirror_percent = Some(0);
        assert_eq!(mirror_fraction(&http), None);

        let m: HttpMirrorPolicy = yaml("destination: {host: a}\npercentage: {value: 0}");
        assert_eq!(mirror_policy_fraction(&m), None);
        let m: HttpMirrorPolicy = yaml("destination: {host: a}");
        assert_eq!(
            mirror_policy_fraction(&m).unwrap().default_value,
            Some(integer_fraction(100))
        );
    }

    #[test]
    fn header_operations_order_and_authority() {
        let h: Headers = yaml(
            r#"
request:
  set: {x-b: "2", x-a: "1", ":authority": set.example}
  add: {x-c: "3", host: add.example}
  remove: [x-gone, ":path", Host]
response:
  set: {x-r: r}
  add: {x-s: s}
  remove: [x-t]
"#,
        );
        let ops = header_operations(&h);
        let names: Vec<(&str, i32)> = ops
            .request_add
            .iter()
            .map(|o| (o.header.as_ref().unwrap().key.as_str(), o.append_action))
            .collect();
        let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
        let append = HeaderAppendAction::AppendIfExistsOrAdd as i32;
        assert_eq!(
            names,
            vec![("x-a", overwrite), ("x-b", overwrite), ("x-c", append)]
        );
        assert_eq!(ops.request_remove, vec!["x-gone"]);
        assert_eq!(ops.authority, "set.example");
        assert_eq!(ops.response_add.len(), 2);
        assert_eq!(ops.response_add[1].append_action, append);
        assert_eq!(ops.response_remove, vec!["x-t"]);
    }

    #[test]
    fn cors() {
        let c: CorsPolicy = yaml(
            r#"
allowOrigins: [{exact: "https://a.example"}, {regex: "https://.*\\.b\\.example"}, {}]
allowOrigin: [ignored.example]
allowMethods: [GET, POST]
allowHeaders: [x-a, x-b]
exposeHeaders: [x-c]
maxAge: 24h
allowCredentials: true
unmatchedPreflights: IGNORE
"#,
        );
        let out = cors_policy(&c);
        assert_eq!(out.allow_origin_string_match.len(), 2);
        assert_eq!(out.allow_methods, "GET,POST");
        assert_eq!(out.allow_headers, "x-a,x-b");
        assert_eq!(out.expose_headers, "x-c");
        assert_eq!(out.max_age, "86400");
        assert_eq!(out.allow_credentials, Some(BoolValue { value: true }));
        assert_eq!(
            out.forward_not_matching_preflights,
            Some(BoolValue { value: false })
        );
        assert_eq!(
            out.filter_enabled.unwrap().default_value,
            Some(integer_fraction(100))
        );

        let legacy: CorsPolicy = yaml("allowOrigin: [a.example]");
        let out = cors_policy(&legacy);
        assert_eq!(
            out.allow_origin_string_match[0].match_pattern,
            Some(MatchPattern::Exact("a.example".into()))
        );
        assert_eq!(
            out.forward_not_matching_preflights,
            Some(BoolValue { value: true })
        );
        assert_eq!(out.max_age, "");
        assert_eq!(out.allow_credentials, None);
    }
}
