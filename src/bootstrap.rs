//! The Envoy bootstrap for one proxy (`navarch bootstrap`, `navarch agent`): node id and
//! Istio's node metadata, ADS pointed at the control plane, and an admin listener.
//!
//! Builds typed Envoy messages and renders them as YAML; it does not start processes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::bootstrap::v3::{
    Admin, Bootstrap,
    bootstrap::{DynamicResources, StaticResources},
};
use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType},
};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, GrpcService,
    Http2ProtocolOptions, Node,
    api_config_source::ApiType,
    config_source::ConfigSourceSpecifier,
    grpc_service::{EnvoyGrpc, TargetSpecifier},
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    },
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

use crate::model::proxy::{InterceptionMode, NodeType};
use crate::protojson;
use crate::translate::common::socket_address;

/// The cluster name the bootstrap uses for the control plane, as in Istio.
pub const XDS_CLUSTER: &str = "xds-grpc";
/// The Istio version proxies report (`ISTIO_VERSION`); navarch follows Istio 1.24.
pub const ISTIO_VERSION: &str = "1.24.0";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("--xds-address {0:?} is not HOST:PORT")]
    XdsAddress(String),
    #[error("--labels {0:?}: expected k=v[,k=v...]")]
    Labels(String),
    #[error("rendering the bootstrap: {0}")]
    Render(String),
}

/// What one proxy's bootstrap says about it.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    pub node_type: NodeType,
    pub ip: IpAddr,
    pub pod: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub interception_mode: InterceptionMode,
    pub xds_address: String,
    pub admin_port: u16,
    pub delta: bool,
    pub cluster_id: String,
}

impl BootstrapOptions {
    /// `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`
    pub fn node_id(&self) -> String {
        format!(
            "{}~{}~{}.{}~{}.svc.cluster.local",
            self.node_type.as_str(),
            self.ip,
            self.pod,
            self.namespace,
            self.namespace
        )
    }
}

/// Parses `k=v,k=v`.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, BootstrapError> {
    s.split(',')
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| BootstrapError::Labels(s.to_string()))
        })
        .collect()
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// Builds the bootstrap message.
pub fn build(opts: &BootstrapOptions) -> Result<Bootstrap, BootstrapError> {
    let (host, port) = opts
        .xds_address
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u32>().ok()?,
            ))
        })
        .ok_or_else(|| BootstrapError::XdsAddress(opts.xds_address.clone()))?;

    let mut metadata = Struct::default();
    let mut put = |k: &str, v: Value| {
        metadata.fields.insert(k.to_string(), v);
    };
    put("NAMESPACE", string_value(&opts.namespace));
    put("INSTANCE_IPS", string_value(&opts.ip.to_string()));
    put(
        "INTERCEPTION_MODE",
        string_value(opts.interception_mode.as_str()),
    );
    put("ISTIO_VERSION", string_value(ISTIO_VERSION));
    put("CLUSTER_ID", string_value(&opts.cluster_id));
    put(
        "WORKLOAD_NAME",
        string_value(opts.labels.get("app").unwrap_or(&opts.pod)),
    );
    put("SERVICE_ACCOUNT", string_value("default"));
    put("MESH_ID", string_value("cluster.local"));
    put("NAME", string_value(&opts.pod));
    put(
        "LABELS",
        Value {
            kind: Some(Kind::StructValue(Struct {
                fields: opts
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), string_value(v)))
                    .collect(),
            })),
        },
    );

    let ads = ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    };
    let http2 = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    };
    let discovery = if host.parse::<IpAddr>().is_ok() {
        DiscoveryType::Static
    } else {
        DiscoveryType::StrictDns
    };
    let xds_cluster = Cluster {
        name: XDS_CLUSTER.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(discovery as i32)),
        connect_timeout: Some(crate::translate::pb_duration(
            std::time::Duration::from_secs(1),
        )),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            crate::translate::any(&http2),
        )]
        .into(),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: XDS_CLUSTER.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket_address(host, port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(Bootstrap {
        node: Some(Node {
            id: opts.node_id(),
            cluster: format!(
                "{}.{}",
                opts.labels.get("app").unwrap_or(&opts.pod),
                opts.namespace
            ),
            metadata: Some(metadata),
            ..Default::default()
        }),
        dynamic_resources: Some(DynamicResources {
            ads_config: Some(ApiConfigSource {
                api_type: if opts.delta {
                    ApiType::DeltaGrpc
                } else {
                    ApiType::Grpc
                } as i32,
                transport_api_version: ApiVersion::V3 as i32,
                grpc_services: vec![GrpcService {
                    target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                        cluster_name: XDS_CLUSTER.into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                set_node_on_first_message_only: true,
                ..Default::default()
            }),
            cds_config: Some(ads.clone()),
            lds_config: Some(ads),
            ..Default::default()
        }),
        static_resources: Some(StaticResources {
            clusters: vec![xds_cluster],
            ..Default::default()
        }),
        admin: Some(Admin {
            address: Some(socket_address("127.0.0.1", u32::from(opts.admin_port))),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The bootstrap as YAML.
pub fn render_yaml(opts: &BootstrapOptions) -> Result<String, BootstrapError> {
    let json =
        protojson::to_json(&build(opts)?).map_err(|e| BootstrapError::Render(e.to_string()))?;
    serde_saphyr::to_string(&json).map_err(|e| BootstrapError::Render(e.to_string()))
}
