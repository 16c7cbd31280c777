//! MeshConfig: the mesh-wide settings (the `mesh` key of the `istio` ConfigMap, or
//! `--mesh-config FILE`), with istiod 1.24's defaults.
//!
//! Only parsing and defaults live here; what the settings mean for Envoy is translate's job.

use serde::{Deserialize, Serialize};

use crate::model::duration::Duration;

/// The subset of MeshConfig navarch understands; unknown fields are accepted and ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfig {
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Upstream connect timeout for clusters without a DestinationRule (istiod: 10s).
    pub connect_timeout: Duration,
    /// Where proxies write access logs; empty disables them.
    pub access_log_file: String,
    pub access_log_encoding: AccessLogEncoding,
    pub access_log_format: String,
    pub root_namespace: String,
    pub trust_domain: String,
    pub protocol_detection_timeout: Duration,
    pub default_config: ProxyConfig,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
            connect_timeout: Duration::from(std::time::Duration::from_secs(10)),
            access_log_file: String::new(),
            access_log_encoding: AccessLogEncoding::Text,
            access_log_format: String::new(),
            root_namespace: "istio-system".into(),
            trust_domain: "cluster.local".into(),
            protocol_detection_timeout: Duration::from(std::time::Duration::ZERO),
            default_config: ProxyConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct OutboundTrafficPolicy {
    pub mode: OutboundTrafficMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficMode {
    #[default]
    AllowAny,
    RegistryOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum AccessLogEncoding {
    #[default]
    Text,
    Json,
}

/// `defaultConfig`: per-proxy defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    pub discovery_address: String,
    pub drain_duration: Duration,
    pub proxy_admin_port: u16,
    pub stat_name_length: u32,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            discovery_address: "istiod.istio-system.svc:15010".into(),
            drain_duration: Duration::from(std::time::Duration::from_secs(45)),
            proxy_admin_port: 15000,
            stat_name_length: 189,
        }
    }
}

impl MeshConfig {
    /// Parses MeshConfig YAML; missing fields keep istiod's defaults.
    pub fn from_yaml(text: &str) -> Result<Self, serde_saphyr::Error> {
        if text.trim().is_empty() {
            return Ok(MeshConfig::default());
        }
        serde_saphyr::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let m = MeshConfig::from_yaml("").unwrap();
        assert_eq!(
            m.connect_timeout.as_std(),
            std::time::Duration::from_secs(10)
        );
        assert_eq!(
            m.outbound_traffic_policy.mode,
            OutboundTrafficMode::AllowAny
        );
        let m = MeshConfig::from_yaml(
            "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\naccessLogFile: /dev/stdout\naccessLogEncoding: JSON\nconnectTimeout: 1.5s\nunknownField: 3\n",
        )
        .unwrap();
        assert_eq!(
            m.outbound_traffic_policy.mode,
            OutboundTrafficMode::RegistryOnly
        );
        assert_eq!(m.access_log_file, "/dev/stdout");
        assert_eq!(m.access_log_encoding, AccessLogEncoding::Json);
        assert_eq!(
            m.connect_timeout.as_std(),
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(m.root_namespace, "istio-system");
    }
}
