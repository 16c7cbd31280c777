//! A connected proxy as the model sees it: parsed node id and node metadata.
//!
//! Owns the node id grammar (`<type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`) and
//! Istio's metadata keys. Receives metadata as JSON (the xds layer converts the protobuf
//! `Struct`), so it never depends on Envoy or gRPC types.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Serialize;

/// Node type, the first field of the node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    Sidecar,
    Router,
}

impl NodeType {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Sidecar => "sidecar",
            NodeType::Router => "router",
        }
    }
}

impl FromStr for NodeType {
    type Err = ProxyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sidecar" => Ok(NodeType::Sidecar),
            "router" => Ok(NodeType::Router),
            other => Err(ProxyError::NodeType(other.to_string())),
        }
    }
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How traffic reaches the sidecar (`INTERCEPTION_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
pub enum InterceptionMode {
    /// iptables REDIRECT: Istio's 15001/15006 layout, per-port listeners not bound.
    #[default]
    Redirect,
    /// TPROXY: same layout as REDIRECT, with transparent sockets.
    Tproxy,
    /// No interception: listeners bind for real on the proxy's first instance IP.
    None,
}

impl FromStr for InterceptionMode {
    type Err = ProxyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "REDIRECT" => Ok(InterceptionMode::Redirect),
            "TPROXY" => Ok(InterceptionMode::Tproxy),
            "NONE" => Ok(InterceptionMode::None),
            other => Err(ProxyError::InterceptionMode(other.to_string())),
        }
    }
}

impl InterceptionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            InterceptionMode::Redirect => "REDIRECT",
            InterceptionMode::Tproxy => "TPROXY",
            InterceptionMode::None => "NONE",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error(
        "node id {0:?} is not <type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local: set node.id in the Envoy bootstrap (navarch bootstrap writes one)"
    )]
    NodeId(String),
    #[error("node type {0:?} is neither sidecar nor router")]
    NodeType(String),
    #[error("INTERCEPTION_MODE {0:?} is not REDIRECT, TPROXY or NONE")]
    InterceptionMode(String),
    #[error("node metadata {key}: {value:?} is not an IP address")]
    BadIp { key: &'static str, value: String },
}

/// A proxy connected to (or being configured by) the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proxy {
    /// The full node id.
    pub id: String,
    pub node_type: NodeType,
    /// `INSTANCE_IPS` (else the node id's IP); the first is the proxy's own address.
    pub ip_addresses: Vec<IpAddr>,
    pub pod_name: String,
    pub namespace: String,
    pub dns_domain: String,
    pub labels: BTreeMap<String, String>,
    pub interception_mode: InterceptionMode,
    pub istio_version: String,
    pub cluster_id: String,
    pub workload_name: String,
    pub service_account: String,
    pub mesh_id: String,
    /// The workload's named container ports (`POD_PORTS`, as istio-agent sends them, else the
    /// Pod's), which resolve a Service's named `targetPort` for the inbound side.
    pub container_ports: BTreeMap<String, u16>,
}

impl Proxy {
    /// Parses a node id and its metadata (the JSON form of `node.metadata`).
    pub fn from_node(
        id: &str,
        metadata: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, ProxyError> {
        let parts: Vec<&str> = id.split('~').collect();
        let [node_type, ip, pod_ns, dns_domain] = parts.as_slice() else {
            return Err(ProxyError::NodeId(id.to_string()));
        };
        let node_type: NodeType = node_type.parse()?;
        let (pod_name, id_namespace) = pod_ns
            .split_once('.')
            .ok_or_else(|| ProxyError::NodeId(id.to_string()))?;
        let str_meta = |key: &str| metadata.get(key).and_then(|v| v.as_str()).unwrap_or("");

        let namespace = match str_meta("NAMESPACE") {
            "" => id_namespace.to_string(),
            ns => ns.to_string(),
        };
        let mut ip_addresses = Vec::new();
        for raw in str_meta("INSTANCE_IPS")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            ip_addresses.push(raw.parse().map_err(|_| ProxyError::BadIp {
                key: "INSTANCE_IPS",
                value: raw.to_string(),
            })?);
        }
        if ip_addresses.is_empty() {
            ip_addresses.push(ip.parse().map_err(|_| ProxyError::BadIp {
                key: "node id",
                value: ip.to_string(),
            })?);
        }
        let labels = metadata
            .get("LABELS")
            .and_then(|v| v.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let interception_mode = match str_meta("INTERCEPTION_MODE") {
            "" => InterceptionMode::Redirect,
            mode => mode.parse()?,
        };
        let or_default = |v: &str, d: &str| {
            if v.is_empty() {
                d.to_string()
            } else {
                v.to_string()
            }
        };
        Ok(Proxy {
            id: id.to_string(),
            node_type,
            ip_addresses,
            pod_name: pod_name.to_string(),
            namespace,
            dns_domain: dns_domain.to_string(),
            labels,
            interception_mode,
            istio_version: str_meta("ISTIO_VERSION").to_string(),
            cluster_id: or_default(str_meta("CLUSTER_ID"), "Kubernetes"),
            workload_name: str_meta("WORKLOAD_NAME").to_string(),
            service_account: str_meta("SERVICE_ACCOUNT").to_string(),
            mesh_id: str_meta("MESH_ID").to_string(),
            container_ports: pod_ports(metadata.get("POD_PORTS")),
        })
    }

    /// `pod.namespace`, the name proxy-status shows.
    pub fn name(&self) -> String {
        format!("{}.{}", self.pod_name, self.namespace)
    }

    /// The address listeners bind to when interception is off.
    pub fn primary_ip(&self) -> IpAddr {
        self.ip_addresses[0]
    }
}

/// istio-agent's `POD_PORTS`: the containers' ports as a JSON array (in a string), e.g.
/// `[{"name":"http","containerPort":8080,"protocol":"TCP"}]`; the named ones, by name.
/// Anything else gives none (the Pod's ports are used then).
fn pod_ports(value: Option<&serde_json::Value>) -> BTreeMap<String, u16> {
    let parsed;
    let list = match value {
        Some(serde_json::Value::String(s)) => {
            parsed = serde_json::from_str::<serde_json::Value>(s).unwrap_or_default();
            &parsed
        }
        Some(v) => v,
        None => return BTreeMap::new(),
    };
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p.get("name")?.as_str().filter(|n| !n.is_empty())?;
            let port = u16::try_from(p.get("containerPort")?.as_u64()?).ok()?;
            Some((name.to_string(), port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn pod_ports_as_istio_agent_sends_them_name_the_container_ports() {
        let ports = r#"[{"name":"http-web","containerPort":9080,"protocol":"TCP"},{"containerPort":15090},{"name":"grpc","containerPort":70000}]"#;
        let p = Proxy::from_node(
            "sidecar~10.0.0.1~reviews-v1.bookinfo~bookinfo.svc.cluster.local",
            &meta(json!({"POD_PORTS": ports})),
        )
        .unwrap();
        // Unnamed ports and ports out of range are left out.
        assert_eq!(
            p.container_ports,
            BTreeMap::from([("http-web".to_string(), 9080)])
        );
        let none = Proxy::from_node(
            "sidecar~10.0.0.1~reviews-v1.bookinfo~bookinfo.svc.cluster.local",
            &meta(json!({"POD_PORTS": "not json"})),
        )
        .unwrap();
        assert!(none.container_ports.is_empty());
    }

    #[test]
    fn parses_node_id_and_metadata() {
        let p = Proxy::from_node(
            "sidecar~127.0.0.21~sleep-1.testns1~testns1.svc.cluster.local",
            &meta(json!({
                "INSTANCE_IPS": "127.0.0.21,::1",
                "INTERCEPTION_MODE": "NONE",
                "LABELS": {"app": "sleep"},
                "ISTIO_VERSION": "1.24.0"
            })),
        )
        .unwrap();
        assert_eq!(p.node_type, NodeType::Sidecar);
        assert_eq!(p.namespace, "testns1");
        assert_eq!(p.pod_name, "sleep-1");
        assert_eq!(p.name(), "sleep-1.testns1");
        assert_eq!(p.primary_ip().to_string(), "127.0.0.21");
        assert_eq!(p.ip_addresses.len(), 2);
        assert_eq!(p.interception_mode, InterceptionMode::None);
        assert_eq!(p.labels["app"], "sleep");
        assert_eq!(p.cluster_id, "Kubernetes");
    }

    #[test]
    fn defaults_and_errors() {
        let p = Proxy::from_node(
            "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local",
            &meta(json!({})),
        )
        .unwrap();
        assert_eq!(p.interception_mode, InterceptionMode::Redirect);
        assert_eq!(p.primary_ip().to_string(), "10.0.0.1");
        assert!(matches!(
            Proxy::from_node("sidecar~1.2.3.4~nopodns~x", &meta(json!({}))),
            Err(ProxyError::NodeId(_))
        ));
        assert!(matches!(
            Proxy::from_node("gateway~1.2.3.4~a.b~x", &meta(json!({}))),
            Err(ProxyError::NodeType(_))
        ));
        assert!(matches!(
            Proxy::from_node(
                "sidecar~1.2.3.4~a.b~x",
                &meta(json!({"INSTANCE_IPS": "nope"}))
            ),
            Err(ProxyError::BadIp { .. })
        ));
    }
}
