//! MeshConfig: the mesh-wide settings (the `mesh` key of the `istio` ConfigMap, or
//! `--mesh-config FILE`), with istiod 1.24's defaults.
//!
//! Only parsing and defaults live here; what the settings mean for Envoy is translate's job.

use std::collections::BTreeMap;

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
    /// Namespaces whose objects the control plane reads (istiod's `discoverySelectors`):
    /// a namespace is selected when any selector matches its labels; none selects all.
    pub discovery_selectors: Vec<LabelSelector>,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Kubernetes semantics: every `matchLabels` pair and every expression must hold; an empty
    /// selector matches everything. An unknown operator matches nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                match req.operator.as_str() {
                    "In" => value.is_some_and(|v| req.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !req.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
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
            discovery_selectors: Vec::new(),
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
    /// Whether objects in a namespace with these labels are read (`discoverySelectors`).
    pub fn namespace_discovered(&self, labels: &BTreeMap<String, String>) -> bool {
        self.discovery_selectors.is_empty()
            || self.discovery_selectors.iter().any(|s| s.matches(labels))
    }

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
        assert!(m.namespace_discovered(&BTreeMap::new()));
    }

    #[test]
    fn discovery_selectors_select_namespaces_by_labels() {
        let m = MeshConfig::from_yaml(
            "discoverySelectors:\n- matchLabels:\n    istio-discovery: enabled\n- matchExpressions:\n  - key: env\n    operator: In\n    values: [prod, staging]\n",
        )
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(m.namespace_discovered(&labels(&[("istio-discovery", "enabled")])));
        assert!(m.namespace_discovered(&labels(&[("env", "staging")])));
        assert!(!m.namespace_discovered(&labels(&[("env", "dev")])));
        assert!(!m.namespace_discovered(&labels(&[])));
        let not_in = LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "NotIn".into(),
                values: vec!["dev".into()],
            }],
            ..Default::default()
        };
        assert!(not_in.matches(&labels(&[])));
        assert!(!not_in.matches(&labels(&[("env", "dev")])));
    }
}
