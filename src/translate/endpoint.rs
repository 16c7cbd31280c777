//! EDS: one `ClusterLoadAssignment` per outbound cluster, the service's ready endpoints on the
//! target port, filtered by the subset's labels.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
    lb_endpoint::HostIdentifier,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use crate::model::proxy::Proxy;
use crate::model::push_context::PushContext;
use crate::model::registry::labels_match;
use crate::translate::common::socket_address;
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
    cla.endpoints = locality_lb_endpoints(push, host, &service_port.name, subset_labels);
    Some(cla)
}

/// The ready endpoints of `host` serving the service port `port_name` (filtered by a subset's
/// labels), as one locality: shared by EDS and by the load assignments of STRICT_DNS /
/// LOGICAL_DNS clusters, whose endpoints may be names Envoy resolves. Weights are the
/// endpoints' own (ServiceEntry / WorkloadEntry `weight`), the locality's their sum.
pub(crate) fn locality_lb_endpoints(
    push: &PushContext,
    host: &str,
    port_name: &str,
    subset_labels: Option<&BTreeMap<String, String>>,
) -> Vec<LocalityLbEndpoints> {
    let lb_endpoints: Vec<LbEndpoint> = push
        .registry()
        .endpoints_for(host, port_name)
        .filter(|e| e.ready)
        .filter(|e| subset_labels.is_none_or(|sel| labels_match(sel, &e.labels)))
        .map(|e| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
                address: Some(socket_address(&e.target(), u32::from(e.port))),
                ..Default::default()
            })),
            health_status: HealthStatus::Healthy as i32,
            load_balancing_weight: Some(UInt32Value {
                value: e.weight.max(1),
            }),
            ..Default::default()
        })
        .collect();
    if lb_endpoints.is_empty() {
        return Vec::new();
    }
    let weight = lb_endpoints
        .iter()
        .map(|e| e.load_balancing_weight.as_ref().map_or(1, |w| w.value))
        .sum();
    vec![LocalityLbEndpoints {
        lb_endpoints,
        load_balancing_weight: Some(UInt32Value { value: weight }),
        ..Default::default()
    }]
}

#[cfg(test)]
mod tests {
    use crate::translate::testing::{shop_config, shop_sidecar};

    #[test]
    fn each_cluster_holds_the_pods_of_its_subset_on_the_target_port() {
        let g = shop_config(&shop_sidecar());
        let web = |subset: &str| {
            g.endpoint_addresses(&format!("outbound|80|{subset}|web.shop.svc.cluster.local"))
        };
        assert_eq!(web(""), ["10.0.0.1:8080", "10.0.0.2:8080"]);
        assert_eq!(web("v1"), ["10.0.0.1:8080"]);
        assert_eq!(web("v2"), ["10.0.0.2:8080"]);
        assert_eq!(
            g.endpoint_addresses("outbound|5432||db.shop.svc.cluster.local"),
            ["10.0.0.3:5432"]
        );
    }
}
