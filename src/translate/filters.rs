//! The filters sidecar and gateway listeners share: network filters (tcp_proxy, tcp routes of
//! VirtualServices), the HTTP connection manager as istiod writes it, the TLS inspector, and
//! file access logs in Istio's formats. Built from the model and `common`; it must not import
//! a builder.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::accesslog::v3::access_log::ConfigType as AccessLogConfigType;
use envoy_types::pb::envoy::config::accesslog::v3::access_log_filter::FilterSpecifier;
use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, AccessLogFilter, ResponseFlagFilter};
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier as DataSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format;
use envoy_types::pb::envoy::config::core::v3::{
    CidrRange, DataSource, JsonFormatOptions, SubstitutionFormatString,
};
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType as FilterConfigType;
use envoy_types::pb::envoy::config::listener::v3::listener_filter::ConfigType as ListenerFilterConfigType;
use envoy_types::pb::envoy::config::listener::v3::{Filter, ListenerFilter};
use envoy_types::pb::envoy::config::listener::v3::listener_filter_chain_match_predicate::{
    MatchSet, Rule,
};
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, ListenerFilterChainMatchPredicate,
};
use envoy_types::pb::envoy::extensions::filters::http::grpc_stats::v3::FilterConfig as GrpcStatsConfig;
use envoy_types::pb::envoy::extensions::filters::http::grpc_stats::v3::filter_config::PerMethodStatSpecifier;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::RequestIdExtension;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use envoy_types::pb::envoy::extensions::request_id::uuid::v3::UuidRequestIdConfig;
use envoy_types::pb::envoy::r#type::metadata::v3::{MetadataKey, MetadataKind, metadata_key, metadata_kind};
use envoy_types::pb::envoy::r#type::tracing::v3::{CustomTag, custom_tag};
use envoy_types::pb::envoy::r#type::v3::{Int32Range, Percent};
use crate::model::proxy::Proxy;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::file_access_log::AccessLogFormat;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
    CodecType, PathWithEscapedSlashesAction, RouteSpecifier, UpgradeConfig,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType as HttpFilterConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::weighted_cluster::ClusterWeight;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::{
    ClusterSpecifier, WeightedCluster,
};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{BoolValue, ListValue, Struct, UInt32Value, Value};

use crate::model::config::Config;
use crate::model::istio::VirtualService;
use crate::model::istio::virtual_service::{Destination, RouteDestination};
use crate::model::mesh::{AccessLogEncoding, MeshConfig};
use crate::model::push_context::PushContext;
use crate::translate::common::destination_cluster;
use crate::translate::{BLACKHOLE_CLUSTER, any, pb_duration};

/// A listener filter `name` with its typed configuration.
pub(crate) fn listener_filter(
    name: &str,
    typed: envoy_types::pb::google::protobuf::Any,
) -> ListenerFilter {
    ListenerFilter {
        name: name.into(),
        config_type: Some(ListenerFilterConfigType::TypedConfig(typed)),
        ..Default::default()
    }
}

pub(crate) fn tls_inspector() -> ListenerFilter {
    listener_filter(TLS_INSPECTOR, any(&TlsInspector::default()))
}

/// A chain match for plaintext (`raw_buffer`) traffic, to `destination_port` when given, with
/// one of `alpns` when any (what the HTTP inspector detects).
pub(crate) fn plaintext_match(destination_port: Option<u32>, alpns: &[&str]) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: destination_port.map(|value| UInt32Value { value }),
        transport_protocol: "raw_buffer".into(),
        application_protocols: alpns.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

pub(crate) fn network_filter(name: &str, typed: envoy_types::pb::google::protobuf::Any) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(FilterConfigType::TypedConfig(typed)),
    }
}

pub(crate) fn tcp_proxy_filter(push: &PushContext, stat_prefix: &str, cluster: &str) -> Filter {
    tcp_proxy_with(push, stat_prefix, ClusterSpecifier::Cluster(cluster.into()))
}

pub(crate) fn tcp_proxy_with(
    push: &PushContext,
    stat_prefix: &str,
    specifier: ClusterSpecifier,
) -> Filter {
    network_filter(
        "envoy.filters.network.tcp_proxy",
        any(&TcpProxy {
            stat_prefix: stat_prefix.into(),
            cluster_specifier: Some(specifier),
            access_log: file_access_logs(push.mesh(), None),
            ..Default::default()
        }),
    )
}

/// A TCP proxy to the black hole, as istiod writes the loop-protection chains (no access log).
pub(crate) fn blackhole_tcp_proxy() -> Filter {
    network_filter(
        "envoy.filters.network.tcp_proxy",
        any(&TcpProxy {
            stat_prefix: BLACKHOLE_CLUSTER.into(),
            cluster_specifier: Some(ClusterSpecifier::Cluster(BLACKHOLE_CLUSTER.into())),
            ..Default::default()
        }),
    )
}

/// The loop guard of a virtual listener (istiod's `virtualOutbound-blackhole` and
/// `virtualInbound-blackhole`): traffic addressed to the listener's own `port` would come back
/// to it for ever, so it goes to the black hole.
pub(crate) fn blackhole_chain(name: &str, port: u32) -> FilterChain {
    FilterChain {
        name: name.into(),
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(UInt32Value { value: port }),
            ..Default::default()
        }),
        filters: vec![blackhole_tcp_proxy()],
        ..Default::default()
    }
}

/// `10.0.0.0/8` or a bare address → an Envoy CIDR range; `None` when it does not parse.
pub(crate) fn cidr_range(s: &str) -> Option<CidrRange> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u32>().ok()?)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then(|| CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(UInt32Value { value: len }),
    })
}

/// A tcp route's destinations → a tcp_proxy, as istiod's `buildOutboundNetworkFilters`: one
/// destination → its cluster; several → weighted clusters (zero weights left out) under the
/// stat prefix `<vs name>.<vs namespace>`. `None` without any destination.
pub(crate) fn tcp_route_filter(
    push: &PushContext,
    vs: &Config<VirtualService>,
    routes: &[RouteDestination],
    port: u16,
) -> Option<Filter> {
    let dests: Vec<(&Destination, i32)> = routes
        .iter()
        .filter_map(|r| r.destination.as_ref().map(|d| (d, r.weight)))
        .collect();
    match dests.as_slice() {
        [] => None,
        [(d, _)] => {
            let cluster = destination_cluster(push, vs, d, port);
            Some(tcp_proxy_filter(push, &cluster, &cluster))
        }
        _ => {
            let clusters: Vec<ClusterWeight> = dests
                .iter()
                .filter(|(_, w)| *w > 0)
                .map(|(d, w)| ClusterWeight {
                    name: destination_cluster(push, vs, d, port),
                    weight: u32::try_from(*w).unwrap_or_default(),
                    ..Default::default()
                })
                .collect();
            if clusters.is_empty() {
                return None;
            }
            Some(tcp_proxy_with(
                push,
                &format!("{}.{}", vs.meta.name, vs.meta.namespace),
                ClusterSpecifier::WeightedClusters(WeightedCluster { clusters }),
            ))
        }
    }
}

pub(crate) fn http_filter(name: &str, typed: envoy_types::pb::google::protobuf::Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(HttpFilterConfigType::TypedConfig(typed)),
        ..Default::default()
    }
}

/// The HCM as istiod 1.31 writes it for sidecars and gateways, minus Istio-proxy-only filters:
/// gRPC stats, fault, CORS and the router; UUID request ids that drive trace sampling; the
/// tracing block with Istio's custom tags.
pub(crate) fn http_connection_manager(
    proxy: &Proxy,
    push: &PushContext,
    stat_prefix: String,
    routes: RouteSpecifier,
) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix,
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(routes),
        access_log: file_access_logs(push.mesh(), None),
        http_filters: vec![
            http_filter(
                "envoy.filters.http.grpc_stats",
                any(&GrpcStatsConfig {
                    emit_filter_state: true,
                    per_method_stat_specifier: Some(PerMethodStatSpecifier::StatsForAllMethods(
                        BoolValue { value: false },
                    )),
                    ..Default::default()
                }),
            ),
            http_filter("envoy.filters.http.fault", any(&HttpFault::default())),
            http_filter("envoy.filters.http.cors", any(&Cors::default())),
            http_filter("envoy.filters.http.router", any(&Router::default())),
        ],
        request_id_extension: Some(RequestIdExtension {
            typed_config: Some(any(&UuidRequestIdConfig {
                use_request_id_for_trace_sampling: Some(BoolValue { value: true }),
                ..Default::default()
            })),
        }),
        tracing: Some(tracing(proxy, push.mesh())),
        use_remote_address: Some(BoolValue { value: false }),
        normalize_path: Some(BoolValue { value: true }),
        path_with_escaped_slashes_action: PathWithEscapedSlashesAction::KeepUnchanged as i32,
        upgrade_configs: vec![UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        stream_idle_timeout: Some(pb_duration(std::time::Duration::ZERO)),
        proxy_100_continue: true,
        ..Default::default()
    }
}

/// istiod's default sampling (`meshConfig.defaultConfig.tracing.sampling`): 1%.
const TRACE_SAMPLING_PERCENT: f64 = 1.0;

/// The values of the literal tags istiod puts on every span of `proxy` (canonical service and
/// revision from the workload's labels, cluster, mesh and namespace): what the tracing block
/// depends on.
pub fn trace_literals(proxy: &Proxy, mesh: &MeshConfig) -> [(&'static str, String); 5] {
    let label = |k: &str, default: &str| {
        proxy
            .labels
            .get(k)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let mesh_id = if proxy.mesh_id.is_empty() {
        mesh.trust_domain.clone()
    } else {
        proxy.mesh_id.clone()
    };
    [
        (
            "istio.canonical_revision",
            label("service.istio.io/canonical-revision", "latest"),
        ),
        (
            "istio.canonical_service",
            label("service.istio.io/canonical-name", "unknown"),
        ),
        ("istio.cluster_id", proxy.cluster_id.clone()),
        ("istio.mesh_id", mesh_id),
        ("istio.namespace", proxy.namespace.clone()),
    ]
}

/// istiod's HCM `tracing`: 100% client and overall sampling, the mesh's random sampling, the
/// authorization dry-run tags from the RBAC filter's metadata and the literal tags. No
/// provider: spans go to the bootstrap's tracer, if any.
fn tracing(proxy: &Proxy, mesh: &MeshConfig) -> Tracing {
    let percent = |value: f64| Some(Percent { value });
    let mut custom_tags: Vec<CustomTag> = [
        ("allow", "effective_policy_id", "name"),
        ("allow", "engine_result", "result"),
        ("deny", "effective_policy_id", "name"),
        ("deny", "engine_result", "result"),
    ]
    .into_iter()
    .map(|(decision, key, tag)| CustomTag {
        tag: format!("istio.authorization.dry_run.{decision}_policy.{tag}"),
        r#type: Some(custom_tag::Type::Metadata(custom_tag::Metadata {
            kind: Some(MetadataKind {
                kind: Some(metadata_kind::Kind::Request(metadata_kind::Request {})),
            }),
            metadata_key: Some(MetadataKey {
                key: "envoy.filters.http.rbac".into(),
                path: vec![metadata_key::PathSegment {
                    segment: Some(metadata_key::path_segment::Segment::Key(format!(
                        "istio_dry_run_{decision}_shadow_{key}"
                    ))),
                }],
            }),
            ..Default::default()
        })),
    })
    .collect();
    custom_tags.extend(
        trace_literals(proxy, mesh)
            .into_iter()
            .map(|(tag, value)| CustomTag {
                tag: tag.into(),
                r#type: Some(custom_tag::Type::Literal(custom_tag::Literal { value })),
            }),
    );
    Tracing {
        client_sampling: percent(100.0),
        random_sampling: percent(TRACE_SAMPLING_PERCENT),
        overall_sampling: percent(100.0),
        custom_tags,
        ..Default::default()
    }
}

/// istiod 1.31 gives every outbound service chain 15 s to finish its transport handshake.
pub(crate) const TRANSPORT_SOCKET_CONNECT_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(15);

/// istiod's `populateListenerFilters` inspectors: the TLS inspector where a chain matches on
/// the transport protocol `tls`, the HTTP inspector where one matches on a plaintext HTTP ALPN,
/// each switched off on the destination ports whose chains do not need it.
pub(crate) fn inspector_filters<'a>(
    chains: impl IntoIterator<Item = &'a FilterChain>,
) -> Vec<ListenerFilter> {
    // Per destination port (0: chains without one), whether any chain needs each inspector.
    let mut ports: std::collections::BTreeMap<u32, (bool, bool)> = Default::default();
    for chain in chains {
        let m = chain.filter_chain_match.as_ref();
        let port = m
            .and_then(|m| m.destination_port.as_ref())
            .map_or(0, |p| p.value);
        let tls = m.is_some_and(|m| m.transport_protocol == "tls");
        let http = m.is_some_and(|m| {
            m.application_protocols
                .iter()
                .any(|a| PLAINTEXT_HTTP_ALPNS.contains(&a.as_str()))
        });
        let entry = ports.entry(port).or_default();
        entry.0 |= tls;
        entry.1 |= http;
    }
    let mut out = Vec::new();
    if ports.values().any(|i| i.0) {
        // On by default (a chain without a port needs it): off where no chain needs it;
        // otherwise on only where one does.
        let ports_where = |needed: bool| -> Vec<u32> {
            ports
                .iter()
                .filter(|(p, i)| **p != 0 && i.0 == needed)
                .map(|(p, _)| *p)
                .collect()
        };
        let filter_disabled = if ports.get(&0).is_some_and(|i| i.0) {
            exclude_ports(&ports_where(false))
        } else {
            exclude_ports(&ports_where(true)).map(|rule| ListenerFilterChainMatchPredicate {
                rule: Some(Rule::NotMatch(Box::new(rule))),
            })
        };
        out.push(ListenerFilter {
            filter_disabled,
            ..tls_inspector()
        });
    }
    // After the TLS inspector: a connection it marks `tls` is not inspected for HTTP.
    if ports.values().any(|i| i.1) {
        let off: Vec<u32> = ports
            .iter()
            .filter(|(_, i)| !i.1)
            .map(|(p, _)| *p)
            .collect();
        out.push(ListenerFilter {
            filter_disabled: exclude_ports(&off),
            ..listener_filter(HTTP_INSPECTOR, any(&HttpInspector::default()))
        });
    }
    out
}

/// istiod's `listenerPredicateExcludePorts`: a predicate matching connections to any of
/// `ports`; `None` for no port.
fn exclude_ports(ports: &[u32]) -> Option<ListenerFilterChainMatchPredicate> {
    let mut rules: Vec<ListenerFilterChainMatchPredicate> = ports
        .iter()
        .map(|p| ListenerFilterChainMatchPredicate {
            rule: Some(Rule::DestinationPortRange(Int32Range {
                start: i32::try_from(*p).unwrap_or(i32::MAX),
                end: i32::try_from(*p + 1).unwrap_or(i32::MAX),
            })),
        })
        .collect();
    match rules.len() {
        0 => None,
        1 => rules.pop(),
        _ => Some(ListenerFilterChainMatchPredicate {
            rule: Some(Rule::OrMatch(MatchSet { rules })),
        }),
    }
}

pub(crate) const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
pub(crate) const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";
/// The ALPNs the HTTP inspector sets for plaintext HTTP/1.1 and h2c.
pub(crate) const PLAINTEXT_HTTP_ALPNS: [&str; 2] = ["http/1.1", "h2c"];

/// istiod 1.24's default TEXT access log format (`model.EnvoyTextLogFormat`).
pub const ISTIO_TEXT_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// istiod 1.24's default JSON access log fields (`model.EnvoyJSONLogFormatIstio`).
pub const ISTIO_JSON_LOG_FIELDS: [(&str, &str); 24] = [
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
];

/// The MeshConfig access log (`accessLogFile`, `accessLogEncoding`, `accessLogFormat`) as an
/// `envoy.access_loggers.file` entry, as istiod's `FileAccessLogFromMeshConfig` builds it;
/// empty when `accessLogFile` is unset. `filter` restricts it (listener-level logs only log
/// `NR`).
pub fn file_access_logs(mesh: &MeshConfig, filter: Option<AccessLogFilter>) -> Vec<AccessLog> {
    if mesh.access_log_file.is_empty() {
        return Vec::new();
    }
    let format = match mesh.access_log_encoding {
        AccessLogEncoding::Text => {
            let text = if mesh.access_log_format.is_empty() {
                ISTIO_TEXT_LOG_FORMAT.to_string()
            } else if mesh.access_log_format.ends_with('\n') {
                mesh.access_log_format.clone()
            } else {
                // "Istio will insert a newline ('\n') on all formats (if missing)."
                format!("{}\n", mesh.access_log_format)
            };
            SubstitutionFormatString {
                format: Some(Format::TextFormatSource(DataSource {
                    specifier: Some(DataSourceSpecifier::InlineString(text)),
                    ..Default::default()
                })),
                ..Default::default()
            }
        }
        AccessLogEncoding::Json => SubstitutionFormatString {
            format: Some(Format::JsonFormat(json_log_struct(&mesh.access_log_format))),
            // istiod's `SortProperties: false`, the default.
            json_format_options: Some(JsonFormatOptions::default()),
            ..Default::default()
        },
    };
    vec![AccessLog {
        name: "envoy.access_loggers.file".into(),
        filter,
        config_type: Some(AccessLogConfigType::TypedConfig(any(&FileAccessLog {
            path: mesh.access_log_file.clone(),
            access_log_format: Some(AccessLogFormat::LogFormat(format)),
        }))),
    }]
}

/// Listener-level access logs: only connections no filter chain took (`NR`), as istiod's
/// `setListenerAccessLog`.
pub(crate) fn listener_access_logs(mesh: &MeshConfig) -> Vec<AccessLog> {
    file_access_logs(
        mesh,
        Some(AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::ResponseFlagFilter(ResponseFlagFilter {
                flags: vec!["NR".into()],
            })),
        }),
    )
}

/// A custom JSON `accessLogFormat` (an object of string fields), else Istio's default fields.
/// As istiod, an unparsable custom format falls back to the default.
pub(crate) fn json_log_struct(custom: &str) -> Struct {
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_string())),
    };
    let parsed: Option<serde_json::Map<String, serde_json::Value>> = (!custom.trim().is_empty())
        .then(|| serde_json::from_str(custom).ok())
        .flatten();
    let fields = match parsed {
        Some(map) if !map.is_empty() => map
            .into_iter()
            .map(|(k, v)| (k, json_to_pb_value(v)))
            .collect(),
        _ => ISTIO_JSON_LOG_FIELDS
            .iter()
            .map(|(k, v)| (k.to_string(), string(v)))
            .collect(),
    };
    Struct { fields }
}

pub(crate) fn json_to_pb_value(v: serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.into_iter().map(json_to_pb_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(Struct {
            fields: o
                .into_iter()
                .map(|(k, v)| (k, json_to_pb_value(v)))
                .collect(),
        }),
    };
    Value { kind: Some(kind) }
}
