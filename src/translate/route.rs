//! RDS: one route configuration per outbound HTTP port (named by the port, e.g. `8000`), a
//! virtual host per service with Istio's domain forms, VirtualService HTTP routes or the
//! default route, and the `allow_any` / `block_all` catch-all.

use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier as DataSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    Decorator, DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction,
    RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action, retry_policy, route::Action, route_action::ClusterSpecifier,
    route_match::PathSpecifier, weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::{BoolValue, Struct, UInt32Value, Value, value::Kind};

use crate::model::config::Config;
use crate::model::istio::VirtualService;
use crate::model::istio::common::StringMatch;
use crate::model::istio::virtual_service::{Destination, HttpMatchRequest, HttpRoute};
use crate::model::mesh::OutboundTrafficMode;
use crate::model::proxy::Proxy;
use crate::model::push_context::{PushContext, resolve_short_name};
use crate::model::registry::{DEFAULT_DOMAIN_SUFFIX, Protocol, Service};
use crate::translate::listener::outbound_ports;
use crate::translate::{PASSTHROUGH_CLUSTER, any, outbound_cluster_name, pb_duration};

/// Istio's default retry policy (1.24: 503 is not retried by default).
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
const MAX_DIRECT_RESPONSE_BODY: u32 = 1024 * 1024;

/// Every route configuration `proxy` gets: one per outbound HTTP port.
pub fn build_route_configs(proxy: &Proxy, push: &PushContext) -> Vec<RouteConfiguration> {
    outbound_ports(proxy, push)
        .into_iter()
        .filter(|(_, kind)| kind.has_routes())
        .map(|(port, _)| build_route_config(proxy, push, port))
        .collect()
}

/// The route configuration for outbound port `port`.
pub fn build_route_config(proxy: &Proxy, push: &PushContext, port: u16) -> RouteConfiguration {
    let mut virtual_hosts = Vec::new();
    let mut seen_domains: BTreeSet<String> = BTreeSet::new();
    for service in push.services_visible_to(&proxy.namespace) {
        let Some(sp) = service.port(port) else {
            continue;
        };
        // HTTP services, and sniffed ones whose HTTP traffic routes like HTTP.
        if !(sp.protocol.is_http() || sp.protocol == Protocol::Unsupported) {
            continue;
        }
        let routes = match push.virtual_service_for_host(&proxy.namespace, &service.hostname) {
            Some(vs) => virtual_service_routes(proxy, push, vs, service, port),
            None => vec![default_route(service, port)],
        };
        let domains: Vec<String> = domains_for(proxy, service, port)
            .into_iter()
            // A domain may appear in one virtual host only; the first service keeps it.
            .filter(|d| seen_domains.insert(d.to_ascii_lowercase()))
            .collect();
        if domains.is_empty() {
            continue;
        }
        virtual_hosts.push(VirtualHost {
            name: format!("{}:{port}", service.hostname),
            domains,
            routes,
            include_request_attempt_count: true,
            ..Default::default()
        });
    }
    virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
    virtual_hosts.push(catch_all_virtual_host(push));
    RouteConfiguration {
        name: port.to_string(),
        virtual_hosts,
        validate_clusters: Some(BoolValue { value: false }),
        max_direct_response_body_size_bytes: Some(UInt32Value {
            value: MAX_DIRECT_RESPONSE_BODY,
        }),
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

/// The names a client may use for `service`: the FQDN, the short forms the proxy's namespace
/// allows (`httpbin` only from the same namespace), the ClusterIP; each also with `:port`.
pub fn domains_for(proxy: &Proxy, service: &Service, port: u16) -> Vec<String> {
    let mut hosts = vec![service.hostname.clone()];
    let suffix = format!(".svc.{DEFAULT_DOMAIN_SUFFIX}");
    if let Some(name_ns) = service.hostname.strip_suffix(&suffix) {
        if service.namespace == proxy.namespace {
            hosts.push(service.name.clone());
        }
        hosts.push(format!("{name_ns}.svc"));
        hosts.push(name_ns.to_string());
    }
    if let Some(ip) = service.cluster_ip {
        hosts.push(ip.to_string());
    }
    let mut out = Vec::with_capacity(hosts.len() * 2);
    for h in hosts {
        out.push(format!("{h}:{port}"));
        out.push(h);
    }
    out
}

fn catch_all_virtual_host(push: &PushContext) -> VirtualHost {
    let (name, action) = match push.mesh().outbound_traffic_policy.mode {
        OutboundTrafficMode::AllowAny => (
            "allow_any",
            Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(PASSTHROUGH_CLUSTER.into())),
                timeout: Some(pb_duration(std::time::Duration::ZERO)),
                ..Default::default()
            }),
        ),
        OutboundTrafficMode::RegistryOnly => (
            "block_all",
            Action::DirectResponse(DirectResponseAction {
                status: 502,
                ..Default::default()
            }),
        ),
    };
    VirtualHost {
        name: name.into(),
        domains: vec!["*".into()],
        routes: vec![Route {
            name: name.into(),
            r#match: Some(prefix_match("/")),
            action: Some(action),
            ..Default::default()
        }],
        include_request_attempt_count: true,
        ..Default::default()
    }
}

fn prefix_match(prefix: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix(prefix.into())),
        ..Default::default()
    }
}

/// Istio's mesh-wide default retry policy.
pub fn default_retry_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.into(),
        num_retries: Some(UInt32Value {
            value: DEFAULT_RETRY_ATTEMPTS,
        }),
        retry_host_predicate: vec![retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                any(&PreviousHostsPredicate {}),
            )),
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    }
}

/// The route a service gets when no VirtualService applies.
pub fn default_route(service: &Service, port: u16) -> Route {
    Route {
        name: "default".into(),
        r#match: Some(prefix_match("/")),
        decorator: Some(Decorator {
            operation: format!("{}:{port}/*", service.hostname),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(outbound_cluster_name(
                port,
                "",
                &service.hostname,
            ))),
            timeout: Some(pb_duration(std::time::Duration::ZERO)),
            retry_policy: Some(default_retry_policy()),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// `/apis/networking.istio.io/v1/namespaces/<ns>/virtual-service/<name>`, as istiod tags routes.
fn config_metadata(vs: &Config<VirtualService>) -> Metadata {
    let path = format!(
        "/apis/networking.istio.io/v1/namespaces/{}/virtual-service/{}",
        vs.meta.namespace, vs.meta.name
    );
    let mut istio = Struct::default();
    istio.fields.insert(
        "config".into(),
        Value {
            kind: Some(Kind::StringValue(path)),
        },
    );
    Metadata {
        filter_metadata: HashMap::from([("istio".to_string(), istio)]),
        ..Default::default()
    }
}

/// The Envoy routes of a VirtualService's `http` section for one service port, in order; stops
/// after a catch-all match, as istiod does. Routes whose match cannot apply to this proxy
/// (another port, other source labels or namespace, a gateway other than `mesh`) are left out.
pub fn virtual_service_routes(
    proxy: &Proxy,
    push: &PushContext,
    vs: &Config<VirtualService>,
    service: &Service,
    port: u16,
) -> Vec<Route> {
    let mut routes = Vec::new();
    for http in &vs.spec.http {
        let matches: Vec<Option<&HttpMatchRequest>> = if http.r#match.is_empty() {
            vec![None]
        } else {
            http.r#match.iter().map(Some).collect()
        };
        let mut catch_all = false;
        for m in matches {
            if let Some(m) = m
                && !match_applies(proxy, m, port)
            {
                continue;
            }
            let Some(action) = route_action(push, vs, http, service, port) else {
                continue;
            };
            let route_match = translate_match(m);
            let is_catch_all = is_catch_all(&route_match);
            let name = match m.map(|m| m.name.as_str()).filter(|n| !n.is_empty()) {
                Some(match_name) => format!("{}.{match_name}", http.name),
                None => http.name.clone(),
            };
            routes.push(Route {
                name,
                r#match: Some(route_match),
                decorator: Some(Decorator {
                    operation: operation(vs, http, &action, port, m),
                    ..Default::default()
                }),
                metadata: Some(config_metadata(vs)),
                action: Some(action),
                ..Default::default()
            });
            if is_catch_all {
                catch_all = true;
                break;
            }
        }
        if catch_all {
            break;
        }
    }
    routes
}

/// Whether a match can apply to this proxy on this port (the parts Istio resolves when it
/// builds config rather than at request time).
fn match_applies(proxy: &Proxy, m: &HttpMatchRequest, port: u16) -> bool {
    (m.port == 0 || m.port == u32::from(port))
        && m.source_labels
            .iter()
            .all(|(k, v)| proxy.labels.get(k) == Some(v))
        && (m.source_namespace.is_empty() || m.source_namespace == proxy.namespace)
        && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
}

fn is_catch_all(m: &RouteMatch) -> bool {
    let path_all = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => p == "/",
        Some(PathSpecifier::SafeRegex(r)) => r.regex == "*" || r.regex == ".*",
        _ => false,
    };
    path_all && m.headers.is_empty() && m.query_parameters.is_empty()
}

fn string_matcher(m: &StringMatch, ignore_case: bool) -> Option<StringMatcher> {
    let pattern = match m {
        StringMatch::Any => return None,
        StringMatch::Exact(s) => MatchPattern::Exact(s.clone()),
        StringMatch::Prefix(s) => MatchPattern::Prefix(s.clone()),
        StringMatch::Regex(r) => MatchPattern::SafeRegex(regex_matcher(r)),
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    })
}

fn regex_matcher(regex: &str) -> RegexMatcher {
    RegexMatcher {
        regex: regex.to_string(),
        ..Default::default()
    }
}

fn header_matcher(name: &str, m: &StringMatch, invert: bool) -> HeaderMatcher {
    let specifier = match string_matcher(m, false) {
        // An empty match means "present" (and, inverted, "absent").
        None => HeaderMatchSpecifier::PresentMatch(true),
        Some(sm) => HeaderMatchSpecifier::StringMatch(sm),
    };
    HeaderMatcher {
        name: name.to_string(),
        invert_match: invert,
        header_match_specifier: Some(specifier),
        ..Default::default()
    }
}

/// HTTPMatchRequest → Envoy RouteMatch (uri, headers, method, authority, scheme, queryParams).
pub fn translate_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    let Some(m) = m else { return prefix_match("/") };
    let mut out = RouteMatch {
        path_specifier: Some(match &m.uri {
            Some(StringMatch::Exact(p)) => PathSpecifier::Path(p.clone()),
            Some(StringMatch::Prefix(p)) => PathSpecifier::Prefix(p.clone()),
            Some(StringMatch::Regex(r)) => PathSpecifier::SafeRegex(regex_matcher(r)),
            Some(StringMatch::Any) | None => PathSpecifier::Prefix("/".into()),
        }),
        ..Default::default()
    };
    if m.ignore_uri_case {
        out.case_sensitive = Some(BoolValue { value: false });
    }
    for (name, sm) in &m.headers {
        out.headers
            .push(header_matcher(&name.to_ascii_lowercase(), sm, false));
    }
    for (name, sm) in &m.without_headers {
        out.headers
            .push(header_matcher(&name.to_ascii_lowercase(), sm, true));
    }
    for (pseudo, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            out.headers.push(header_matcher(pseudo, sm, false));
        }
    }
    for (name, sm) in &m.query_params {
        let specifier = match string_matcher(sm, false) {
            None => QueryParameterMatchSpecifier::PresentMatch(true),
            Some(sm) => QueryParameterMatchSpecifier::StringMatch(sm),
        };
        out.query_parameters.push(QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(specifier),
        });
    }
    out
}

/// The cluster a VirtualService destination names, from the listener port `port`'s point of view.
fn destination_cluster(
    push: &PushContext,
    vs: &Config<VirtualService>,
    dest: &Destination,
    port: u16,
) -> String {
    let host = resolve_short_name(&dest.host, &vs.meta.namespace);
    let dest_port = match dest.port.as_ref().map(|p| p.number).filter(|n| *n != 0) {
        Some(n) => u16::try_from(n).unwrap_or(port),
        // No port: the service's only port, else the port the request came in on.
        None => match push.registry().service(&host) {
            Some(s) if s.ports.len() == 1 => s.ports[0].port,
            _ => port,
        },
    };
    outbound_cluster_name(dest_port, &dest.subset, &host)
}

fn route_action(
    push: &PushContext,
    vs: &Config<VirtualService>,
    http: &HttpRoute,
    _service: &Service,
    port: u16,
) -> Option<Action> {
    if let Some(redirect) = &http.redirect {
        let mut action = RedirectAction {
            host_redirect: redirect.authority.clone(),
            port_redirect: redirect.port.unwrap_or_default(),
            ..Default::default()
        };
        if !redirect.uri.is_empty() {
            action.path_rewrite_specifier = Some(
                redirect_action::PathRewriteSpecifier::PathRedirect(redirect.uri.clone()),
            );
        }
        if !redirect.scheme.is_empty() {
            action.scheme_rewrite_specifier = Some(
                redirect_action::SchemeRewriteSpecifier::SchemeRedirect(redirect.scheme.clone()),
            );
        }
        action.response_code = match redirect.redirect_code {
            302 => redirect_action::RedirectResponseCode::Found,
            303 => redirect_action::RedirectResponseCode::SeeOther,
            307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
            308 => redirect_action::RedirectResponseCode::PermanentRedirect,
            _ => redirect_action::RedirectResponseCode::MovedPermanently,
        } as i32;
        return Some(Action::Redirect(action));
    }
    if let Some(direct) = &http.direct_response {
        let body = direct
            .body
            .as_ref()
            .and_then(|b| b.string.clone())
            .map(|s| DataSource {
                specifier: Some(DataSpecifier::InlineString(s)),
                ..Default::default()
            });
        return Some(Action::DirectResponse(DirectResponseAction {
            status: direct.status,
            body,
            ..Default::default()
        }));
    }
    let destinations: Vec<(String, u32)> = http
        .route
        .iter()
        .filter_map(|rd| {
            let dest = rd.destination.as_ref()?;
            Some((
                destination_cluster(push, vs, dest, port),
                u32::try_from(rd.weight).unwrap_or(0),
            ))
        })
        .collect();
    let cluster_specifier = match destinations.as_slice() {
        [] => return None,
        [(cluster, _)] => ClusterSpecifier::Cluster(cluster.clone()),
        many => {
            // Zero-weight destinations are dropped; weights are passed as given (Envoy sums
            // them), and a single remaining destination is routed to directly.
            let clusters: Vec<ClusterWeight> = many
                .iter()
                .filter(|(_, w)| *w > 0)
                .map(|(name, w)| ClusterWeight {
                    name: name.clone(),
                    weight: Some(UInt32Value { value: *w }),
                    ..Default::default()
                })
                .collect();
            match clusters.as_slice() {
                [] => return None,
                [one] => ClusterSpecifier::Cluster(one.name.clone()),
                _ => ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters,
                    ..Default::default()
                }),
            }
        }
    };
    let timeout = http.timeout.map(|d| d.as_std()).unwrap_or_default();
    Some(Action::Route(RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(pb_duration(timeout)),
        retry_policy: Some(default_retry_policy()),
        ..Default::default()
    }))
}

/// istiod's decorator operation: `<host>:<port><path>` for a single destination, else
/// `<vs name>:<port><path>`.
fn operation(
    vs: &Config<VirtualService>,
    _http: &HttpRoute,
    action: &Action,
    port: u16,
    m: Option<&HttpMatchRequest>,
) -> String {
    let path = match m.and_then(|m| m.uri.as_ref()) {
        Some(StringMatch::Exact(p)) => p.clone(),
        Some(StringMatch::Prefix(p)) => format!("{p}*"),
        Some(StringMatch::Regex(r)) => r.clone(),
        _ => "/*".into(),
    };
    match action {
        Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(c)),
            ..
        }) => match crate::translate::parse_outbound_cluster_name(c) {
            Some((p, _, host)) => format!("{host}:{p}{path}"),
            None => format!("{}:{port}{path}", vs.meta.name),
        },
        _ => format!("{}:{port}{path}", vs.meta.name),
    }
}
