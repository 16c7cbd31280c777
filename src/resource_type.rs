//! The xDS resource types navarch serves: their type URLs, istioctl's short names and Istio's
//! push order. One home for these names, shared by translate (what each type holds), xds
//! (streams), status (syncz) and the CLI.
//!
//! Plain names only: no Envoy messages, no Istio semantics.

use std::fmt;

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// ECDS: not served yet, but istiod's syncz and istioctl's table have a column for it.
pub const EXTENSION_CONFIG_TYPE: &str =
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// The xDS resource types navarch generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Cluster,
    Endpoint,
    Listener,
    Route,
    /// SDS: TLS certificates gateways terminate with.
    Secret,
}

impl ResourceType {
    /// How many types there are (the length of per-type arrays).
    pub const COUNT: usize = 5;

    /// Istio's push order: CDS, EDS, LDS, RDS (clusters before the listeners that use them),
    /// then the secrets listeners wait for. `index()` is the position here.
    pub const PUSH_ORDER: [ResourceType; Self::COUNT] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    /// Position in [`Self::PUSH_ORDER`], for per-type arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => CLUSTER_TYPE,
            ResourceType::Endpoint => ENDPOINT_TYPE,
            ResourceType::Listener => LISTENER_TYPE,
            ResourceType::Route => ROUTE_TYPE,
            ResourceType::Secret => SECRET_TYPE,
        }
    }

    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::PUSH_ORDER.into_iter().find(|t| t.type_url() == url)
    }

    /// CDS and LDS are wildcard types (the proxy gets everything); EDS, RDS and SDS are
    /// requested by name.
    pub fn is_wildcard(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    /// istiod's `type` label on its xDS metrics (`cds`, `eds`, ...).
    pub fn metric_type(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::Endpoint => "eds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
            ResourceType::Secret => "sds",
        }
    }

    /// Short name as istioctl shows it.
    pub fn short(self) -> &'static str {
        match self {
            ResourceType::Cluster => "CDS",
            ResourceType::Endpoint => "EDS",
            ResourceType::Listener => "LDS",
            ResourceType::Route => "RDS",
            ResourceType::Secret => "SDS",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_push_order_position_and_urls_round_trip() {
        for (i, kind) in ResourceType::PUSH_ORDER.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert_eq!(ResourceType::from_type_url(kind.type_url()), Some(kind));
        }
        assert_eq!(ResourceType::from_type_url(EXTENSION_CONFIG_TYPE), None);
    }
}
