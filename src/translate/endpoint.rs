//! EDS: one `ClusterLoadAssignment` per outbound cluster, the service's ready endpoints on the
//! target port, filtered by the subset's labels.

use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
    lb_endpoint::HostIdentifier,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use crate::model::proxy::Proxy;
use crate::model::push_context::PushContext;
use crate::model::registry::labels_match;
use crate::translate::cluster::socket_address;
use crate::translate::parse_outbound_cluster_name;

/// The load assignment for the EDS cluster `cluster_name`, or None when the name is not one of
/// ours. A known service with no endpoints yields an empty assignment, which tells Envoy the
/// cluster has no hosts (503 "no healthy upstream"), as istiod does.
pub fn build_load_assignment(
    proxy: &Proxy,
    push: &PushContext,
    cluster_name: &str,
) -> Option<ClusterLoadAssignment> {
    let (port, subset, host) = parse_outbound_cluster_name(cluster_name)?;
    let mut cla = ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        ..Default::default()
    };
    let Some(service) = push.registry().service(host) else {
        return Some(cla);
    };
    let Some(service_port) = service.port(port) else {
        return Some(cla);
    };
    let subset_labels = if subset.is_empty() {
        None
    } else {
        let dr = push.destination_rule_for(&proxy.namespace, host);
        match dr.and_then(|dr| dr.spec.subsets.iter().find(|s| s.name == subset)) {
            Some(s) => Some(&s.labels),
            // An unknown subset selects nothing.
            None => return Some(cla),
        }
    };
    let lb_endpoints: Vec<LbEndpoint> = push
        .registry()
        .endpoints_for(host, &service_port.name)
        .filter(|e| e.ready)
        .filter(|e| subset_labels.is_none_or(|sel| labels_match(sel, &e.labels)))
        .map(|e| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
                address: Some(socket_address(&e.address.to_string(), u32::from(e.port))),
                ..Default::default()
            })),
            health_status: HealthStatus::Healthy as i32,
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            ..Default::default()
        })
        .collect();
    if !lb_endpoints.is_empty() {
        let weight = lb_endpoints.len() as u32;
        cla.endpoints.push(LocalityLbEndpoints {
            lb_endpoints,
            load_balancing_weight: Some(UInt32Value { value: weight }),
            ..Default::default()
        });
    }
    Some(cla)
}
