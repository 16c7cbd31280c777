//! CDS: outbound clusters per service port (`outbound|port||host`), subset clusters from
//! DestinationRule subsets, and Istio's PassthroughCluster / BlackHoleCluster /
//! InboundPassthroughCluster. The `inbound|<port>||` clusters are `inbound`'s.
//!
//! Each outbound cluster gets the DestinationRule traffic policy that applies to its port and
//! subset (load balancing, connection pool, outlier detection, TLS): see `traffic_policy`.

use crate::model::config::Config;
use crate::model::istio::DestinationRule;
use crate::model::istio::destination_rule::TrafficPolicy;
use crate::model::proxy::{InterceptionMode, NodeType, Proxy};
use crate::model::push_context::PushContext;
use crate::model::registry::{Resolution, Service, ServicePort};
use crate::translate::common::{
    downstream_protocol, http_protocol_options_map, istio_metadata, istio_services_struct,
    pb_value, source_bind, upstream_protocol_options,
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::value::Kind;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{
        ClusterDiscoveryType, CommonLbConfig, DiscoveryType, DnsLookupFamily, EdsClusterConfig,
        LbPolicy,
    },
};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, HttpProtocolOptions as CommonHttpProtocolOptions, Metadata,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    },
};

use crate::translate::{
    BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_BIND_IP, INBOUND_PASSTHROUGH_CLUSTER,
    PASSTHROUGH_CLUSTER, ads_config_source, endpoint, outbound_cluster_name, pb_duration,
    traffic_policy,
};

/// istiod's default `dnsRefreshRate` (MeshConfig).
const DNS_REFRESH_RATE: std::time::Duration = std::time::Duration::from_secs(60);

/// Every cluster `proxy` gets, in a stable order.
pub fn build_clusters(proxy: &Proxy, push: &PushContext) -> Vec<Cluster> {
    let mut out = Vec::new();
    for service in push.services_visible_to(proxy) {
        let dr = push.destination_rule_for(&proxy.namespace, &service.hostname);
        for port in &service.ports {
            let policy = dr.and_then(|dr| traffic_policy::cluster_policy(&dr.spec, port.port));
            let Some(main) = outbound_cluster(
                proxy,
                push,
                service,
                port,
                "",
                discovery_type(service.resolution),
                policy.as_ref(),
                dr,
            ) else {
                continue;
            };
            // Subsets inherit the service cluster's type (ORIGINAL_DST after PASSTHROUGH), or
            // become ORIGINAL_DST by their own PASSTHROUGH.
            let main_type = match main.cluster_discovery_type {
                Some(ClusterDiscoveryType::Type(t)) => {
                    DiscoveryType::try_from(t).unwrap_or(DiscoveryType::Eds)
                }
                _ => DiscoveryType::Eds,
            };
            out.push(main);
            let Some(dr) = dr else { continue };
            for subset in &dr.spec.subsets {
                let own = subset.traffic_policy.as_ref();
                let discovery = if traffic_policy::is_passthrough(own) {
                    DiscoveryType::OriginalDst
                } else {
                    main_type
                };
                let merged = traffic_policy::subset_policy(policy.as_ref(), own, port.port);
                out.extend(outbound_cluster(
                    proxy,
                    push,
                    service,
                    port,
                    &subset.name,
                    discovery,
                    merged.as_ref(),
                    Some(dr),
                ));
            }
        }
    }
    if proxy.node_type == NodeType::Router {
        // Gateways: outbound clusters and the black hole only (istiod's router branch).
        out.push(blackhole_cluster(push));
        return out;
    }
    out.push(passthrough_cluster(push, PASSTHROUGH_CLUSTER, None));
    out.push(blackhole_cluster(push));
    if proxy.interception_mode != InterceptionMode::None {
        out.push(passthrough_cluster(
            push,
            INBOUND_PASSTHROUGH_CLUSTER,
            Some(INBOUND_PASSTHROUGH_BIND_IP),
        ));
    }
    out
}

/// Names of the EDS clusters `proxy` gets (what it will ask EDS for).
pub fn eds_cluster_names(proxy: &Proxy, push: &PushContext) -> Vec<String> {
    build_clusters(proxy, push)
        .into_iter()
        .filter(|c| {
            c.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        })
        .map(|c| c.name)
        .collect()
}

/// istiod's `convertResolution`: mesh-known endpoints over EDS (Kubernetes services and
/// STATIC ServiceEntries alike), DNS as STRICT_DNS, DNS_ROUND_ROBIN as LOGICAL_DNS, NONE as
/// the original destination.
fn discovery_type(resolution: Resolution) -> DiscoveryType {
    match resolution {
        Resolution::ClientSideLb => DiscoveryType::Eds,
        Resolution::Passthrough => DiscoveryType::OriginalDst,
        Resolution::DnsLb => DiscoveryType::StrictDns,
        Resolution::DnsRoundRobinLb => DiscoveryType::LogicalDns,
    }
}

/// One outbound cluster (`subset` "" for the service's own), built as istiod's
/// `buildCluster` + `applyTrafficPolicy` + `maybeApplyEdsConfig`: `policy` is the traffic
/// policy that applies to it (already merged for the port and subset), `dr` the rule it came
/// from. None, as in istiod, for a DNS cluster without endpoints to resolve.
#[allow(clippy::too_many_arguments)]
fn outbound_cluster(
    proxy: &Proxy,
    push: &PushContext,
    service: &Service,
    port: &ServicePort,
    subset: &str,
    discovery: DiscoveryType,
    policy: Option<&TrafficPolicy>,
    dr: Option<&Config<DestinationRule>>,
) -> Option<Cluster> {
    let name = outbound_cluster_name(port.port, subset, &service.hostname);
    let mut cluster = Cluster {
        name,
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(discovery as i32)),
        // istiod 1.31 turns Envoy's panic mode off (0%) unless an outlier policy says otherwise.
        common_lb_config: Some(CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: 0.0 }),
            ..Default::default()
        }),
        metadata: Some(service_metadata(service, subset)),
        ..Default::default()
    };
    if matches!(
        discovery,
        DiscoveryType::StrictDns | DiscoveryType::LogicalDns
    ) {
        // istiod: the proxy's address family decides the lookup family (dual stack: V4_ONLY
        // while ISTIO_DUAL_STACK is off), the mesh's dnsRefreshRate (default 60 s), TTLs
        // respected, and the endpoints (names or IPs) as a load assignment.
        let all_v6 = proxy.ip_addresses.iter().all(IpAddr::is_ipv6);
        cluster.dns_lookup_family = if all_v6 && !proxy.ip_addresses.is_empty() {
            DnsLookupFamily::V6Only
        } else {
            DnsLookupFamily::V4Only
        } as i32;
        // The fields istiod 1.24 still sets (Envoy 1.40 accepts them, deprecated in favour of
        // the `envoy.cluster.dns` extension).
        #[allow(deprecated)]
        {
            cluster.dns_refresh_rate = Some(pb_duration(DNS_REFRESH_RATE));
            cluster.respect_dns_ttl = true;
        }
        let subset_labels = match subset {
            "" => None,
            name => Some(&dr?.spec.subsets.iter().find(|s| s.name == name)?.labels),
        };
        let endpoints =
            endpoint::locality_lb_endpoints(push, &service.hostname, &port.name, subset_labels);
        if endpoints.is_empty() {
            return None;
        }
        cluster.load_assignment = Some(ClusterLoadAssignment {
            cluster_name: cluster.name.clone(),
            endpoints,
            ..Default::default()
        });
    }
    let mut http = upstream_protocol_options(port.protocol);
    traffic_policy::apply(&mut cluster, &mut http, policy, push.mesh());
    if cluster.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
    {
        cluster.eds_cluster_config = Some(EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: cluster.name.clone(),
        });
    }
    if let Some(dr) = dr
        && let Some(metadata) = cluster.metadata.as_mut()
        && let Some(istio) = metadata.filter_metadata.get_mut("istio")
    {
        let s = |v: String| pb_value(Kind::StringValue(v));
        istio.fields.insert(
            "config".into(),
            s(format!(
                "/apis/networking.istio.io/v1/namespaces/{}/destination-rule/{}",
                dr.meta.namespace, dr.meta.name
            )),
        );
        if traffic_policy::overrides_alpn(policy) {
            istio
                .fields
                .insert("alpn_override".into(), s("false".into()));
        }
    }
    if let Some(mut options) = http {
        // Envoy requires an upstream protocol; HTTP/1.1 unless something chose otherwise.
        options.upstream_protocol_options.get_or_insert_with(|| {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                    Http1ProtocolOptions::default(),
                )),
            })
        });
        cluster.typed_extension_protocol_options = http_protocol_options_map(&options);
    }
    Some(cluster)
}

/// `filter_metadata.istio`: the service the cluster belongs to, as istiod records it.
fn service_metadata(service: &Service, subset: &str) -> Metadata {
    let s = |v: &str| pb_value(Kind::StringValue(v.to_string()));
    let mut istio = istio_services_struct([(
        service.hostname.as_str(),
        service.name.as_str(),
        service.namespace.as_str(),
    )]);
    if !subset.is_empty() {
        istio.fields.insert("subset".into(), s(subset));
    }
    if service.mesh_external {
        istio
            .fields
            .insert("external".into(), pb_value(Kind::BoolValue(true)));
    }
    istio_metadata(istio)
}

/// istiod's passthrough clusters: original destination, the downstream's protocol, and idle
/// upstream connections closed after 5 minutes.
fn passthrough_cluster(push: &PushContext, name: &str, bind_ip: Option<&str>) -> Cluster {
    let options = HttpProtocolOptions {
        common_http_protocol_options: Some(CommonHttpProtocolOptions {
            idle_timeout: Some(pb_duration(std::time::Duration::from_secs(300))),
            ..Default::default()
        }),
        upstream_protocol_options: Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
            downstream_protocol(),
        )),
        ..Default::default()
    };
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        connect_timeout: Some(pb_duration(push.mesh().connect_timeout.as_std())),
        lb_policy: LbPolicy::ClusterProvided as i32,
        circuit_breakers: Some(traffic_policy::default_circuit_breakers()),
        typed_extension_protocol_options: http_protocol_options_map(&options),
        upstream_bind_config: bind_ip.map(source_bind),
        ..Default::default()
    }
}

fn blackhole_cluster(push: &PushContext) -> Cluster {
    Cluster {
        name: BLACKHOLE_CLUSTER.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(pb_duration(push.mesh().connect_timeout.as_std())),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;

    use crate::translate::testing::{shop_config, shop_sidecar};
    use crate::translate::{BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER};

    #[test]
    fn subsets_become_clusters_carrying_the_rules_policy() {
        let g = shop_config(&shop_sidecar());
        for subset in ["", "v1", "v2"] {
            let name = format!("outbound|80|{subset}|web.shop.svc.cluster.local");
            let c = g.cluster(&name).unwrap_or_else(|| panic!("{name} served"));
            assert_eq!(c.lb_policy, LbPolicy::Random as i32, "{name}");
            let limits = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
            assert_eq!(limits.max_connections.as_ref().unwrap().value, 7, "{name}");
        }
        assert!(
            g.cluster("outbound|80|v3|web.shop.svc.cluster.local")
                .is_none()
        );
    }

    #[test]
    fn a_service_without_rule_gets_istios_defaults() {
        let g = shop_config(&shop_sidecar());
        let db = g
            .cluster("outbound|5432||db.shop.svc.cluster.local")
            .unwrap();
        assert_eq!(db.lb_policy, LbPolicy::LeastRequest as i32);
        assert_eq!(db.connect_timeout.as_ref().unwrap().seconds, 10);
        for name in [PASSTHROUGH_CLUSTER, BLACKHOLE_CLUSTER] {
            assert!(g.cluster(name).is_some(), "{name}");
        }
    }
}
