//! RDS: one route configuration per outbound HTTP port (named by the port, e.g. `8000`), a
//! virtual host per service with Istio's domain forms, VirtualService HTTP routes or the
//! default route, and the `allow_any` / `block_all` catch-all.
//!
//! A VirtualService `http` rule becomes one Envoy route per applicable match, as istiod 1.24
//! builds it: the match (uri, headers, withoutHeaders, method, authority, scheme, queryParams,
//! statPrefix), then one action — a redirect (authority, uri, scheme, port/derivePort, code),
//! a direct response (string or bytes body), or a route to one cluster or weighted clusters
//! with timeout, retries, mirrors, rewrites (uri prefix, uriRegexRewrite, authority) and
//! header operations (route level, and per destination on the route or the `ClusterWeight`).
//! Fault injection and CORS go in `typed_per_filter_config`. The policy pieces themselves
//! (fault, CORS, retries, mirror fractions, header operations) live in `http_policy`.

use crate::model::config::Config;
use crate::model::gateway::{
    GatewayServer, merged_servers, names_gateway, virtual_services_for_gateway,
};
use crate::model::istio::VirtualService;
use crate::model::istio::common::StringMatch;
use crate::model::mesh::OutboundTrafficMode;
use crate::model::proxy::Proxy;
use crate::model::push_context::{PushContext, is_exported_to, resolve_short_name};
use crate::model::registry::{DEFAULT_DOMAIN_SUFFIX, Protocol, Service};
use crate::translate::common::{
    destination_cluster, istio_metadata, outbound_ports, pb_value, regex_matcher, string_matcher,
};
use crate::translate::{
    PASSTHROUGH_CLUSTER, any, outbound_cluster_name, pb_duration, traffic_policy,
};
use envoy_types::pb::envoy::config::core::v3::{DataSource, Metadata};
use envoy_types::pb::envoy::config::route::v3::virtual_host::TlsRequirementType;
use envoy_types::pb::google::protobuf::{BoolValue, Struct, UInt32Value, value::Kind};
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier as DataSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    Decorator, DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action, route::Action, route_action::ClusterSpecifier,
    route_action::HostRewriteSpecifier, route_action::RequestMirrorPolicy,
    route_match::PathSpecifier, weighted_cluster::ClusterWeight,
    weighted_cluster::cluster_weight::HostRewriteSpecifier as WeightHostRewrite,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;

use crate::model::istio::virtual_service::{
    Destination, HttpDirectResponse, HttpMatchRequest, HttpRedirect, HttpRoute,
    RedirectPortSelection,
};
use crate::translate::http_policy::{
    self, CORS_FILTER, FAULT_FILTER, HeaderOps, default_retry_policy, header_operations,
};

/// Appends a [`HeaderOps`]' header additions and removals to an Envoy `Route` or
/// `ClusterWeight` (the two name these fields alike but share no type for them); evaluates to
/// the ops' authority, which each applies as its own kind of host rewrite.
macro_rules! add_header_ops {
    ($target:ident, $ops:expr) => {{
        let ops: HeaderOps = $ops;
        $target.request_headers_to_add.extend(ops.request_add);
        $target.request_headers_to_remove.extend(ops.request_remove);
        $target.response_headers_to_add.extend(ops.response_add);
        $target
            .response_headers_to_remove
            .extend(ops.response_remove);
        ops.authority
    }};
}

const MAX_DIRECT_RESPONSE_BODY: u32 = 1024 * 1024;
/// The gateway name sidecars answer to in `match.gateways`.
const MESH_GATEWAY: &str = "mesh";

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
    for service in push.services_visible_to(proxy) {
        let Some(sp) = service.port(port) else {
            continue;
        };
        // HTTP services, and sniffed ones whose HTTP traffic routes like HTTP.
        if !(sp.protocol.is_http() || sp.protocol == Protocol::Unsupported) {
            continue;
        }
        let routes = match push.virtual_service_for_host(proxy, &service.hostname) {
            Some(vs) => virtual_service_routes(proxy, push, vs, port, MESH_GATEWAY),
            None => {
                let mut route = default_route(service, port);
                if let Some(Action::Route(action)) = &mut route.action {
                    let cluster = outbound_cluster_name(port, "", &service.hostname);
                    action.hash_policy = traffic_policy::hash_policies(push, proxy, &cluster);
                }
                vec![route]
            }
        };
        let domains: Vec<String> = domains_for(proxy, service)
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
    virtual_hosts.push(catch_all_virtual_host(push.outbound_traffic_mode(proxy)));
    route_configuration(port.to_string(), virtual_hosts)
}

/// A route configuration as istiod writes every one: clusters not validated (they may arrive
/// after the routes), direct responses up to 1 MiB, ports ignored in host matching.
fn route_configuration(name: String, virtual_hosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name,
        virtual_hosts,
        validate_clusters: Some(BoolValue { value: false }),
        max_direct_response_body_size_bytes: Some(UInt32Value {
            value: MAX_DIRECT_RESPONSE_BODY,
        }),
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

/// The names a client may use for `service`: the FQDN (also absolute, with a trailing dot),
/// the short forms the proxy's namespace allows (`httpbin` only from the same namespace), the
/// ClusterIP. As istiod 1.31 for sidecars, none with `:port`: the route configuration ignores
/// the port in host matching.
pub fn domains_for(proxy: &Proxy, service: &Service) -> Vec<String> {
    // istiod 1.31 (ENABLE_ABSOLUTE_FQDN_VHOST_DOMAIN) also matches the absolute FQDN.
    let mut hosts = vec![service.hostname.clone()];
    if service.hostname.parse::<std::net::IpAddr>().is_err() {
        hosts.push(format!("{}.", service.hostname));
    }
    let suffix = format!(".svc.{DEFAULT_DOMAIN_SUFFIX}");
    // istiod's GenerateAltVirtualHosts works on the hostname alone, so a ServiceEntry host
    // shaped like a Kubernetes one gets the short forms too; other names get only their own.
    if let Some(name_ns) = service.hostname.strip_suffix(&suffix)
        && let Some((name, ns)) = name_ns.split_once('.')
    {
        if ns == proxy.namespace {
            hosts.push(name.to_string());
        }
        hosts.push(format!("{name_ns}.svc"));
        hosts.push(name_ns.to_string());
    }
    if let Some(ip) = service.cluster_ip {
        hosts.push(ip.to_string());
    }
    hosts
}

fn catch_all_virtual_host(mode: OutboundTrafficMode) -> VirtualHost {
    let (name, action) = match mode {
        OutboundTrafficMode::AllowAny => (
            "allow_any",
            Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(PASSTHROUGH_CLUSTER.into())),
                ..timeout_action(None)
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

/// A route action with istiod's `setTimeout`: `timeout` (0s, i.e. none, when unset) and the
/// deprecated `max_grpc_timeout` equal to it, so that gRPC requests honour their
/// `grpc-timeout` header, capped by the timeout (0s: uncapped).
#[allow(deprecated)]
fn timeout_action(timeout: Option<std::time::Duration>) -> RouteAction {
    let timeout = pb_duration(timeout.unwrap_or_default());
    RouteAction {
        timeout: Some(timeout),
        max_grpc_timeout: Some(timeout),
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
            retry_policy: Some(default_retry_policy()),
            ..timeout_action(None)
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
    istio
        .fields
        .insert("config".into(), pb_value(Kind::StringValue(path)));
    istio_metadata(istio)
}

/// The Envoy routes of a VirtualService's `http` section for one port, in order; stops after a
/// catch-all, as istiod does (a rule without matches is one). Routes whose match cannot apply
/// to this proxy (another port, other source labels or namespace, gateways that do not name
/// `gateway`) are left out. `gateway` is `mesh` for a sidecar, else the gateway
/// (`namespace/name`) whose server on `port` the routes are for.
pub fn virtual_service_routes(
    proxy: &Proxy,
    push: &PushContext,
    vs: &Config<VirtualService>,
    port: u16,
    gateway: &str,
) -> Vec<Route> {
    let mut routes = Vec::new();
    for http in &with_delegates(push, vs) {
        if http.r#match.is_empty() {
            routes.extend(translate_route(proxy, push, vs, http, None, port));
            break;
        }
        let mut catch_all = false;
        for m in &http.r#match {
            if !match_applies(proxy, vs, m, port, gateway) {
                continue;
            }
            if let Some(route) = translate_route(proxy, push, vs, http, Some(m), port) {
                catch_all = route.r#match.as_ref().is_some_and(is_catch_all);
                routes.push(route);
                if catch_all {
                    break;
                }
            }
        }
        if catch_all {
            break;
        }
    }
    routes
}

/// The root's `http` rules with each `delegate` rule replaced by the delegate
/// VirtualService's rules merged into it, as istiod's `mergeVirtualServicesIfNeeded`: a
/// delegate (no hosts, exported to the root's namespace) contributes each rule whose matches
/// all fit under one of the root rule's (`mergeHTTPMatchRequests`), with the root rule's
/// settings where the delegate has none. A missing delegate contributes nothing. The
/// delegate's short destination names are resolved in its own namespace.
fn with_delegates(push: &PushContext, vs: &Config<VirtualService>) -> Vec<HttpRoute> {
    let mut out = Vec::new();
    for root in &vs.spec.http {
        let Some(d) = &root.delegate else {
            out.push(root.clone());
            continue;
        };
        let namespace = if d.namespace.is_empty() {
            vs.meta.namespace.as_str()
        } else {
            d.namespace.as_str()
        };
        let Some(delegate) = push.store.virtual_services.iter().find(|c| {
            c.meta.name == d.name
                && c.meta.namespace == namespace
                && c.spec.is_delegate()
                && is_exported_to(&c.spec.export_to, &c.meta.namespace, &vs.meta.namespace)
        }) else {
            continue;
        };
        for leaf in &delegate.spec.http {
            if leaf.delegate.is_some() {
                continue; // istiod supports one level of delegation only
            }
            let mut leaf = leaf.clone();
            resolve_destinations(&mut leaf, &delegate.meta.namespace);
            if let Some(merged) = merge_http_route(root, leaf) {
                out.push(merged);
            }
        }
    }
    out
}

/// Rewrites a rule's destination hosts to their full names in `namespace`.
fn resolve_destinations(http: &mut HttpRoute, namespace: &str) {
    let resolve = |d: &mut Destination| d.host = resolve_short_name(&d.host, namespace);
    http.route
        .iter_mut()
        .filter_map(|r| r.destination.as_mut())
        .for_each(resolve);
    http.mirror.iter_mut().for_each(resolve);
    http.mirrors
        .iter_mut()
        .filter_map(|m| m.destination.as_mut())
        .for_each(resolve);
}

/// istiod's `mergeHTTPRoute`; `None` on a match conflict.
fn merge_http_route(root: &HttpRoute, mut leaf: HttpRoute) -> Option<HttpRoute> {
    leaf.r#match = merge_match_requests(&root.r#match, &leaf.r#match)?;
    leaf.name = join_names(&root.name, &leaf.name);
    leaf.rewrite = leaf.rewrite.or_else(|| root.rewrite.clone());
    leaf.direct_response = leaf
        .direct_response
        .or_else(|| root.direct_response.clone());
    leaf.timeout = leaf.timeout.or(root.timeout);
    leaf.retries = leaf.retries.or_else(|| root.retries.clone());
    leaf.fault = leaf.fault.or_else(|| root.fault.clone());
    leaf.mirror = leaf.mirror.or_else(|| root.mirror.clone());
    leaf.mirror_percent = leaf.mirror_percent.or(root.mirror_percent);
    leaf.mirror_percentage = leaf.mirror_percentage.or(root.mirror_percentage);
    leaf.cors_policy = leaf.cors_policy.or_else(|| root.cors_policy.clone());
    if leaf.mirrors.is_empty() {
        leaf.mirrors = root.mirrors.clone();
    }
    leaf.headers = leaf.headers.or_else(|| root.headers.clone());
    Some(leaf)
}

/// istiod joins a root and a delegate name with `-` when both are set.
fn join_names(root: &str, leaf: &str) -> String {
    match (root.is_empty(), leaf.is_empty()) {
        (_, true) => root.to_string(),
        (true, false) => leaf.to_string(),
        (false, false) => format!("{root}-{leaf}"),
    }
}

/// istiod's `mergeHTTPMatchRequests`: every delegate match must fit under at least one root
/// match (each fitting pair is merged); `None` on a conflict.
fn merge_match_requests(
    root: &[HttpMatchRequest],
    leaf: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(leaf.to_vec());
    }
    if leaf.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for l in leaf {
        let before = out.len();
        for r in root {
            if !match_conflict(r, l) {
                out.push(merge_match(r, l));
            }
        }
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

/// istiod's `mergeHTTPMatchRequest`: the delegate's match, completed by the root's.
fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = join_names(&root.name, &leaf.name);
    out.uri = out.uri.or_else(|| root.uri.clone());
    out.scheme = out.scheme.or_else(|| root.scheme.clone());
    out.method = out.method.or_else(|| root.method.clone());
    out.authority = out.authority.or_else(|| root.authority.clone());
    let merge = |r: &BTreeMap<String, StringMatch>, l: &BTreeMap<String, StringMatch>| {
        let mut m = r.clone();
        m.extend(l.iter().map(|(k, v)| (k.clone(), v.clone())));
        m
    };
    out.headers = merge(&root.headers, &leaf.headers);
    out.without_headers = merge(&root.without_headers, &leaf.without_headers);
    out.query_params = merge(&root.query_params, &leaf.query_params);
    if out.port == 0 {
        out.port = root.port;
    }
    let mut labels = root.source_labels.clone();
    labels.extend(leaf.source_labels.clone());
    out.source_labels = labels;
    if out.source_namespace.is_empty() {
        out.source_namespace = root.source_namespace.clone();
    }
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    if out.stat_prefix.is_empty() {
        out.stat_prefix = root.stat_prefix.clone();
    }
    out
}

/// istiod's `hasConflict`: whether the delegate match `leaf` cannot narrow `root`.
fn match_conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_match_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let maps = [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ];
    if maps.iter().any(|(r, l)| {
        l.iter()
            .any(|(k, lv)| string_match_conflict(r.get(k), Some(lv)))
    }) {
        return true;
    }
    if root.ignore_uri_case != leaf.ignore_uri_case
        || (root.port > 0 && leaf.port > 0 && root.port != leaf.port)
        || (!root.source_namespace.is_empty() && leaf.source_namespace != root.source_namespace)
    {
        return true;
    }
    if leaf
        .source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v))
    {
        return true;
    }
    !root.gateways.is_empty()
        && !leaf.gateways.is_empty()
        && (root.gateways.len() < leaf.gateways.len()
            || leaf.gateways.iter().any(|g| !root.gateways.contains(g)))
}

/// istiod's `stringMatchConflict`: a delegate string match must narrow the root's.
fn string_match_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    // Only an equal exact, or an exact or prefix under the root's prefix, narrows it.
    match (root, leaf) {
        (StringMatch::Exact(r), StringMatch::Exact(l)) => r != l,
        (StringMatch::Prefix(p), StringMatch::Prefix(l) | StringMatch::Exact(l)) => {
            !l.starts_with(p.as_str())
        }
        _ => true,
    }
}

/// Whether a match can apply to this proxy on this port (the parts Istio resolves when it
/// builds config rather than at request time). As in istiod, a match naming gateways is
/// decided by them alone (`mesh` for sidecars); otherwise source labels and namespace decide.
fn match_applies(
    proxy: &Proxy,
    vs: &Config<VirtualService>,
    m: &HttpMatchRequest,
    port: u16,
    gateway: &str,
) -> bool {
    if m.port != 0 && m.port != u32::from(port) {
        return false;
    }
    if !m.gateways.is_empty() {
        return names_gateway(&m.gateways, &vs.meta.namespace, gateway);
    }
    m.source_labels
        .iter()
        .all(|(k, v)| proxy.labels.get(k) == Some(v))
        && (m.source_namespace.is_empty() || m.source_namespace == proxy.namespace)
}

/// istiod's `IsCatchAllRoute`: prefix `/` or regex `.*`, with no header or query matches.
fn is_catch_all(m: &RouteMatch) -> bool {
    let path_all = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => p == "/",
        Some(PathSpecifier::SafeRegex(r)) => r.regex == ".*",
        _ => false,
    };
    path_all && m.headers.is_empty() && m.query_parameters.is_empty()
}

/// One `http` rule under one of its matches (or none) → an Envoy route; `None` when the rule
/// has nothing Envoy can act on (no destination, an unsupported redirect code).
fn translate_route(
    proxy: &Proxy,
    push: &PushContext,
    vs: &Config<VirtualService>,
    http: &HttpRoute,
    m: Option<&HttpMatchRequest>,
    port: u16,
) -> Option<Route> {
    let name = match m.map(|m| m.name.as_str()).filter(|n| !n.is_empty()) {
        Some(match_name) => format!("{}.{match_name}", http.name),
        None => http.name.clone(),
    };
    let mut out = Route {
        name,
        r#match: Some(translate_match(m)),
        metadata: Some(config_metadata(vs)),
        stat_prefix: m.map(|m| m.stat_prefix.clone()).unwrap_or_default(),
        ..Default::default()
    };
    let mut authority = String::new();
    if let Some(headers) = &http.headers {
        authority = add_header_ops!(out, header_operations(headers));
    }
    let action = if let Some(redirect) = &http.redirect {
        Action::Redirect(redirect_action(redirect, port)?)
    } else if let Some(direct) = &http.direct_response {
        Action::DirectResponse(direct_response_action(direct))
    } else {
        Action::Route(forward_action(
            &mut out, proxy, push, vs, http, port, authority,
        )?)
    };
    out.action = Some(action);
    out.decorator = Some(Decorator {
        operation: operation(&out, vs, port),
        ..Default::default()
    });
    if let Some(fault) = &http.fault {
        out.typed_per_filter_config
            .insert(FAULT_FILTER.into(), any(&http_policy::fault(fault)));
    }
    if let Some(cors) = &http.cors_policy {
        out.typed_per_filter_config
            .insert(CORS_FILTER.into(), any(&http_policy::cors_policy(cors)));
    }
    Some(out)
}

/// istiod's `ApplyRedirect` for a sidecar (plaintext) listener on `port`. A port (explicit or
/// `derivePort`) implies a scheme (`http` unless given) and is dropped when it is that
/// scheme's default. Redirect codes other than 301/302/303/307/308 have no Envoy form: istiod
/// emits a route without an action, which Envoy rejects; here the route is left out.
fn redirect_action(r: &HttpRedirect, port: u16) -> Option<RedirectAction> {
    let mut out = RedirectAction {
        host_redirect: r.authority.clone(),
        path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PathRedirect(
            r.uri.clone(),
        )),
        ..Default::default()
    };
    if !r.scheme.is_empty() {
        out.scheme_rewrite_specifier = Some(
            redirect_action::SchemeRewriteSpecifier::SchemeRedirect(r.scheme.clone()),
        );
    }
    if r.port.is_some() || r.derive_port.is_some() {
        out.port_redirect = match (r.port, r.derive_port) {
            (Some(p), _) => p,
            (None, Some(RedirectPortSelection::FromRequestPort)) => u32::from(port),
            // FROM_PROTOCOL_DEFAULT is what Envoy does without a port.
            (None, _) => 0,
        };
        let scheme = if r.scheme.is_empty() {
            "http"
        } else {
            &r.scheme
        };
        if (out.port_redirect == 80 && scheme == "http")
            || (out.port_redirect == 443 && scheme == "https")
        {
            out.port_redirect = 0;
        }
    }
    out.response_code = match r.redirect_code {
        0 | 301 => redirect_action::RedirectResponseCode::MovedPermanently,
        302 => redirect_action::RedirectResponseCode::Found,
        303 => redirect_action::RedirectResponseCode::SeeOther,
        307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
        308 => redirect_action::RedirectResponseCode::PermanentRedirect,
        _ => return None,
    } as i32;
    Some(out)
}

/// A direct response: `string` bodies inline as a string, `bytes` (base64 in the API) inline as
/// the decoded bytes.
fn direct_response_action(d: &HttpDirectResponse) -> DirectResponseAction {
    let body = d.body.as_ref().and_then(|b| {
        let specifier = match (&b.string, &b.bytes) {
            (Some(s), _) => DataSpecifier::InlineString(s.clone()),
            (None, Some(_)) => DataSpecifier::InlineBytes(b.to_bytes()?),
            (None, None) => return None,
        };
        Some(DataSource {
            specifier: Some(specifier),
            ..Default::default()
        })
    });
    DirectResponseAction {
        status: d.status,
        body,
        ..Default::default()
    }
}

/// istiod's `applyHTTPRouteDestination`: timeout, rewrites, mirrors, destinations (one →
/// `cluster`, with its header operations on the route; several → `weighted_clusters`, zero
/// weights skipped, header operations on each `ClusterWeight`), and the retry policy.
/// `authority` is the host rewrite the rule's own headers asked for.
fn forward_action(
    out: &mut Route,
    proxy: &Proxy,
    push: &PushContext,
    vs: &Config<VirtualService>,
    http: &HttpRoute,
    port: u16,
    mut authority: String,
) -> Option<RouteAction> {
    let mut action = timeout_action(http.timeout.map(|d| d.as_std()));
    if let Some(rewrite) = &http.rewrite {
        if let Some(re) = &rewrite.uri_regex_rewrite {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex_matcher(&re.r#match)),
                substitution: re.rewrite.clone(),
            });
        } else if !rewrite.uri.is_empty() {
            // Envoy replaces what the route matched: the prefix for a prefix match, the whole
            // path for an exact or regex match.
            action.prefix_rewrite = rewrite.uri.clone();
        }
        if !rewrite.authority.is_empty() {
            authority = rewrite.authority.clone();
        }
    }
    if !authority.is_empty() {
        action.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(authority));
    }
    let mirrors = http
        .mirror
        .as_ref()
        .and_then(|dest| Some((dest, http_policy::mirror_fraction(http)?)))
        .into_iter()
        .chain(http.mirrors.iter().filter_map(|m| {
            Some((
                m.destination.as_ref()?,
                http_policy::mirror_policy_fraction(m)?,
            ))
        }));
    for (dest, fraction) in mirrors {
        action.request_mirror_policies.push(RequestMirrorPolicy {
            cluster: destination_cluster(push, vs, dest, port),
            runtime_fraction: Some(fraction),
            trace_sampled: Some(BoolValue { value: false }),
            // Envoy appends `-shadow` to the mirrored request's host, as with istiod.
            ..Default::default()
        });
    }
    let mut consistent_hash = false;
    match http.route.as_slice() {
        [] => return None,
        [only] => {
            let dest = only.destination.as_ref()?;
            action.cluster_specifier = Some(ClusterSpecifier::Cluster(destination_cluster(
                push, vs, dest, port,
            )));
            let (host, explicit_port) = destination_host_port(vs, dest);
            action.hash_policy = traffic_policy::hash_policies_for_destination(
                push,
                proxy,
                &host,
                &dest.subset,
                explicit_port,
            );
            // istiod drops the previous_hosts retry predicate for a consistent-hash
            // destination (retrying on another host would defeat the stickiness).
            consistent_hash = traffic_policy::is_consistent_hash_destination(
                push,
                proxy,
                &host,
                &dest.subset,
                explicit_port,
            );
            if let Some(headers) = &only.headers {
                let authority = add_header_ops!(out, header_operations(headers));
                // The rule's own authority rewrite wins, so that one and several destinations
                // behave alike.
                if !authority.is_empty() && action.host_rewrite_specifier.is_none() {
                    action.host_rewrite_specifier =
                        Some(HostRewriteSpecifier::HostRewriteLiteral(authority));
                }
            }
        }
        many => {
            let mut hash_policy = Vec::new();
            let clusters: Vec<ClusterWeight> = many
                .iter()
                .filter(|rd| rd.weight != 0)
                .filter_map(|rd| {
                    let dest = rd.destination.as_ref()?;
                    let (host, explicit_port) = destination_host_port(vs, dest);
                    hash_policy.extend(traffic_policy::hash_policies_for_destination(
                        push,
                        proxy,
                        &host,
                        &dest.subset,
                        explicit_port,
                    ));
                    let mut cw = ClusterWeight {
                        name: destination_cluster(push, vs, dest, port),
                        weight: Some(UInt32Value {
                            value: rd.weight.unsigned_abs(),
                        }),
                        ..Default::default()
                    };
                    if let Some(headers) = &rd.headers {
                        let authority = add_header_ops!(cw, header_operations(headers));
                        if !authority.is_empty() {
                            cw.host_rewrite_specifier =
                                Some(WeightHostRewrite::HostRewriteLiteral(authority));
                        }
                    }
                    Some(cw)
                })
                .collect();
            // Envoy rejects an empty weighted_clusters (validation forbids all-zero weights).
            if clusters.is_empty() {
                return None;
            }
            action.hash_policy = hash_policy;
            // Weights are passed as given (no total_weight: Envoy sums them).
            action.cluster_specifier = Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters,
                ..Default::default()
            }));
        }
    }
    action.retry_policy = http_policy::retry_policy(http.retries.as_ref(), consistent_hash);
    Some(action)
}

/// istiod's `GetRouteOperation`: `<host>:<port><path>` for a single-cluster route to an
/// outbound cluster, else `<vs name>:<listener port><path>`, where the path comes from the
/// route's match (`<prefix>*`, the exact path, the regex).
fn operation(route: &Route, vs: &Config<VirtualService>, port: u16) -> String {
    let path = match route
        .r#match
        .as_ref()
        .and_then(|m| m.path_specifier.as_ref())
    {
        Some(PathSpecifier::Prefix(p)) => format!("{p}*"),
        Some(PathSpecifier::Path(p)) => p.clone(),
        Some(PathSpecifier::SafeRegex(r)) => r.regex.clone(),
        _ => "/*".into(),
    };
    match &route.action {
        Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(c)),
            ..
        })) => match crate::translate::parse_outbound_cluster_name(c) {
            Some((p, _, host)) => format!("{host}:{p}{path}"),
            None => format!("{}:{port}{path}", vs.meta.name),
        },
        _ => format!("{}:{port}{path}", vs.meta.name),
    }
}

/// istiod's `canBeConvertedToPresentMatch`: `{}` and the regex `*` mean "present".
fn is_present_match(m: &StringMatch) -> bool {
    matches!(m, StringMatch::Any) || m.regex() == Some("*")
}

fn header_matcher(name: &str, m: &StringMatch) -> HeaderMatcher {
    let specifier = match string_matcher(m, false) {
        Some(sm) if !is_present_match(m) => HeaderMatchSpecifier::StringMatch(sm),
        _ => HeaderMatchSpecifier::PresentMatch(true),
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(specifier),
        ..Default::default()
    }
}

/// HTTPMatchRequest → Envoy RouteMatch, as istiod's `TranslateRouteMatch`: `headers` and
/// `withoutHeaders` (inverted; a value match also treats a missing header as empty) sorted by
/// name, then `:method`, `:authority`, `:scheme`; the uri; `case_sensitive` always set; query
/// parameters.
pub fn translate_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    let Some(m) = m else { return prefix_match("/") };
    let mut out = RouteMatch {
        path_specifier: Some(match &m.uri {
            Some(StringMatch::Exact(p)) => PathSpecifier::Path(p.clone()),
            Some(StringMatch::Prefix(p)) => PathSpecifier::Prefix(p.clone()),
            Some(StringMatch::Regex(r)) => PathSpecifier::SafeRegex(regex_matcher(r)),
            Some(StringMatch::Any) | None => PathSpecifier::Prefix("/".into()),
        }),
        case_sensitive: Some(BoolValue {
            value: !m.ignore_uri_case,
        }),
        ..Default::default()
    };
    for (name, sm) in &m.headers {
        out.headers
            .push(header_matcher(&name.to_ascii_lowercase(), sm));
    }
    for (name, sm) in &m.without_headers {
        let mut hm = header_matcher(&name.to_ascii_lowercase(), sm);
        hm.invert_match = true;
        // A missing header is "not matching the value" rather than "not matching at all".
        hm.treat_missing_header_as_empty = !is_present_match(sm);
        out.headers.push(hm);
    }
    out.headers.sort_by(|a, b| a.name.cmp(&b.name));
    for (pseudo, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            out.headers.push(header_matcher(pseudo, sm));
        }
    }
    for (name, sm) in &m.query_params {
        let specifier = match string_matcher(sm, false) {
            Some(sm2) if !is_present_match(sm) => QueryParameterMatchSpecifier::StringMatch(sm2),
            _ => QueryParameterMatchSpecifier::PresentMatch(true),
        };
        out.query_parameters.push(QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(specifier),
        });
    }
    out
}

/// A destination's resolved host, and its port when it names one (istiod applies port-level
/// hashing only then).
fn destination_host_port(vs: &Config<VirtualService>, dest: &Destination) -> (String, Option<u16>) {
    let host = resolve_short_name(&dest.host, &vs.meta.namespace);
    let port = dest
        .port
        .as_ref()
        .map(|p| p.number)
        .filter(|n| *n != 0)
        .and_then(|n| u16::try_from(n).ok());
    (host, port)
}

/// Every route configuration of a router proxy (one per route name its servers use).
pub fn build_gateway_route_configs(proxy: &Proxy, push: &PushContext) -> Vec<RouteConfiguration> {
    let servers = merged_servers(proxy, push);
    let mut by_route: BTreeMap<String, Vec<&GatewayServer>> = BTreeMap::new();
    for s in &servers {
        if !s.route_name.is_empty() && s.is_http() {
            by_route.entry(s.route_name.clone()).or_default().push(s);
        }
    }
    by_route
        .into_iter()
        .map(|(name, servers)| gateway_route_config(proxy, push, name, &servers))
        .collect()
}

/// istiod's `buildGatewayHTTPRouteConfig`: a virtual host per host that a server and a bound
/// VirtualService share (`host:port`, the host as its one domain), routes of several
/// VirtualServices for one host appended in order, `httpsRedirect` as `require_tls: ALL`, and a
/// `blackhole:<port>` host answering 404 when nothing is bound.
fn gateway_route_config(
    proxy: &Proxy,
    push: &PushContext,
    name: String,
    servers: &[&GatewayServer],
) -> RouteConfiguration {
    let mut vhosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
    for s in servers {
        let port = s.server_port;
        let redirect = s.server.tls.as_ref().is_some_and(|t| t.https_redirect);
        for vs in virtual_services_for_gateway(proxy, push, &s.gateway) {
            let hosts = s.matching_hosts(vs);
            if hosts.is_empty() {
                continue;
            }
            let routes = virtual_service_routes(proxy, push, vs, port, &s.gateway);
            for host in hosts {
                let vh = vhosts.entry(host.clone()).or_insert_with(|| VirtualHost {
                    name: format!("{host}:{port}"),
                    domains: vec![host.clone()],
                    include_request_attempt_count: true,
                    ..Default::default()
                });
                vh.routes.extend(routes.iter().cloned());
                if redirect {
                    vh.require_tls = TlsRequirementType::All as i32;
                }
            }
        }
        if redirect {
            for h in &s.server.hosts {
                let host = h
                    .split_once('/')
                    .map_or(h.as_str(), |(_, h)| h)
                    .to_ascii_lowercase();
                vhosts
                    .entry(host.clone())
                    .or_insert_with(|| VirtualHost {
                        name: format!("{host}:{port}"),
                        domains: vec![host.clone()],
                        include_request_attempt_count: true,
                        ..Default::default()
                    })
                    .require_tls = TlsRequirementType::All as i32;
            }
        }
    }
    let mut virtual_hosts: Vec<VirtualHost> = vhosts.into_values().collect();
    if virtual_hosts.is_empty() {
        let port = servers.first().map_or(0, |s| s.server_port);
        virtual_hosts.push(VirtualHost {
            name: format!("blackhole:{port}"),
            domains: vec!["*".into()],
            ..Default::default()
        });
    }
    // Exact hosts before wildcards, so that `*` never shadows a named host.
    virtual_hosts.sort_by(|a, b| {
        let wild = |v: &VirtualHost| v.domains.iter().any(|d| d.starts_with('*'));
        wild(a).cmp(&wild(b)).then_with(|| a.name.cmp(&b.name))
    });
    route_configuration(name, virtual_hosts)
}

#[cfg(test)]
mod tests {
    use crate::translate::PASSTHROUGH_CLUSTER;
    use crate::translate::testing::{Request, Target, get, proxy, shop_config, shop_sidecar};

    const WEB_V1: &str = "outbound|80|v1|web.shop.svc.cluster.local";
    const WEB_V2: &str = "outbound|80|v2|web.shop.svc.cluster.local";

    #[test]
    fn a_header_match_comes_before_the_weighted_split() {
        let g = shop_config(&shop_sidecar());
        let as_user = |user: &str, path: &str| {
            let headers = [("end-user", user)];
            g.simulate(&Request {
                headers: &headers,
                ..get(80, "web", path)
            })
            .unwrap()
        };
        let jason = as_user("jason", "/");
        assert_eq!(jason.route, "jason");
        assert_eq!(jason.target, Target::Cluster(WEB_V2.into()));
        let other = as_user("mary", "/anything");
        assert_eq!(other.route, "split");
        assert_eq!(
            other.target,
            Target::Weighted(vec![(WEB_V1.into(), 90), (WEB_V2.into(), 10)])
        );
    }

    #[test]
    fn every_name_of_a_service_reaches_one_virtual_host() {
        let g = shop_config(&shop_sidecar());
        let vhost = |host: &str| g.simulate(&get(80, host, "/")).map(|a| a.virtual_host);
        let expected = vhost("web").unwrap();
        for host in [
            "web:80",
            "web.shop",
            "web.shop.svc",
            "web.shop.svc.cluster.local",
            "web.shop.svc.cluster.local:80",
        ] {
            assert_eq!(vhost(host).as_deref(), Ok(expected.as_str()), "{host}");
        }
        // As istiod 1.31 configures it, the port takes no part in host matching.
        assert_eq!(vhost("web:81").as_deref(), Ok(expected.as_str()));
        let rc = g.route_config("80").unwrap();
        assert!(rc.ignore_port_in_host_matching);
        assert!(
            rc.virtual_hosts
                .iter()
                .flat_map(|v| &v.domains)
                .all(|d| !d.ends_with(":80")),
            "no domain with a port"
        );
    }

    #[test]
    fn short_names_resolve_only_in_the_proxys_namespace() {
        let elsewhere = proxy(
            "sidecar~10.0.0.8~client.other~other.svc.cluster.local",
            "REDIRECT",
            &[],
        );
        let g = shop_config(&elsewhere);
        let short = g.simulate(&get(80, "web", "/")).unwrap();
        assert_eq!(short.target, Target::Cluster(PASSTHROUGH_CLUSTER.into()));
        let answer = g.simulate(&get(80, "web.shop", "/")).unwrap();
        assert_eq!(answer.route, "split");
    }
}
