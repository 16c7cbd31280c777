//! Reading generated config back (istiod's `xdstest.Extract*`): which EDS clusters a CDS
//! response names, which route configurations an LDS response's connection managers ask for.
//! What a proxy subscribes to next, for tests and the load test's simulated proxies.
//!
//! Pure functions over Envoy messages; nothing here generates config.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

/// Names of the EDS clusters among encoded `Cluster`s (what a proxy asks EDS for).
pub fn eds_cluster_names(clusters: &[Any]) -> BTreeSet<String> {
    clusters
        .iter()
        .filter_map(|a| Cluster::decode(a.value.as_slice()).ok())
        .filter(|c| {
            c.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        })
        .map(|c| c.name)
        .collect()
}

/// Route configuration names the HTTP connection managers of encoded `Listener`s use (what a
/// proxy asks RDS for).
pub fn rds_route_names(listeners: &[Any]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in listeners
        .iter()
        .filter_map(|a| Listener::decode(a.value.as_slice()).ok())
    {
        for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            for f in &chain.filters {
                if let Some(ConfigType::TypedConfig(any)) = &f.config_type
                    && any.type_url.ends_with("HttpConnectionManager")
                    && let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice())
                    && let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier
                {
                    out.insert(rds.route_config_name);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::proxy::Proxy;
    use crate::model::push_context::PushContext;
    use crate::translate::{ResourceType, generate};

    /// What a sidecar asks EDS and RDS for is exactly what EDS and RDS generation offer.
    #[test]
    fn extracted_names_are_what_generation_offers() {
        let store = crate::sources::bundled::load_store("istio-system", None);
        let push = PushContext::new(store);
        let meta = serde_json::json!({"INTERCEPTION_MODE": "REDIRECT"});
        let proxy = Proxy::from_node(
            "sidecar~10.0.0.9~sleep.testns1~testns1.svc.cluster.local",
            meta.as_object().unwrap(),
        )
        .unwrap();
        let any = |kind| -> Vec<Any> {
            generate(kind, &proxy, &push, None)
                .into_iter()
                .map(|r| r.resource)
                .collect()
        };
        let names = |kind| -> BTreeSet<String> {
            generate(kind, &proxy, &push, None)
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        let eds = eds_cluster_names(&any(ResourceType::Cluster));
        assert!(eds.contains("outbound|8000|v1|httpbin.testns1.svc.cluster.local"));
        assert_eq!(eds, names(ResourceType::Endpoint));
        let rds = rds_route_names(&any(ResourceType::Listener));
        assert!(rds.contains("8000"));
        assert_eq!(rds, names(ResourceType::Route));
    }
}
