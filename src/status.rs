//! Per-proxy sync status: what each connected proxy was sent, acknowledged or rejected, per
//! type. Written by the xds layer, read by the debug API (`/debug/syncz`) and the CLI.
//!
//! Ground floor like the model: plain data and formatting, no gRPC, no HTTP.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;

use crate::proto::{ResourceSyncStatus, SyncStatus};

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const EXTENSION_CONFIG_TYPE: &str =
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// Sync state of one type on one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeSyncState {
    pub nonce_sent: String,
    pub nonce_acked: String,
    pub version_sent: String,
    pub version_acked: String,
    pub last_error: String,
    pub last_sent: Option<SystemTime>,
    pub last_acked: Option<SystemTime>,
}

/// One connected proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySyncState {
    /// `pod.namespace`
    pub proxy: String,
    pub node_id: String,
    pub proxy_type: String,
    pub cluster_id: String,
    pub namespace: String,
    pub istio_version: String,
    /// By type URL.
    pub types: BTreeMap<String, TypeSyncState>,
}

impl ProxySyncState {
    /// istiod's SyncStatus JSON entry.
    pub fn to_sync_status(&self) -> SyncStatus {
        let nonces = |url: &str| {
            self.types
                .get(url)
                .map(|t| (t.nonce_sent.clone(), t.nonce_acked.clone()))
                .unwrap_or_default()
        };
        let (cluster_sent, cluster_acked) = nonces(CLUSTER_TYPE);
        let (listener_sent, listener_acked) = nonces(LISTENER_TYPE);
        let (route_sent, route_acked) = nonces(ROUTE_TYPE);
        let (endpoint_sent, endpoint_acked) = nonces(ENDPOINT_TYPE);
        let (extensionconfig_sent, extensionconfig_acked) = nonces(EXTENSION_CONFIG_TYPE);
        SyncStatus {
            cluster_id: self.cluster_id.clone(),
            proxy: self.proxy.clone(),
            proxy_type: self.proxy_type.clone(),
            proxy_version: String::new(),
            istio_version: self.istio_version.clone(),
            cluster_sent,
            cluster_acked,
            listener_sent,
            listener_acked,
            route_sent,
            route_acked,
            endpoint_sent,
            endpoint_acked,
            extensionconfig_sent,
            extensionconfig_acked,
            resources: self
                .types
                .iter()
                .map(|(url, t)| {
                    (
                        url.clone(),
                        ResourceSyncStatus {
                            sent: t.nonce_sent.clone(),
                            acked: t.nonce_acked.clone(),
                            sent_time: rfc3339(t.last_sent),
                            sent_version: t.version_sent.clone(),
                            acked_version: t.version_acked.clone(),
                            last_error: t.last_error.clone(),
                            acked_time: t.last_acked.map(|t| rfc3339(Some(t))).unwrap_or_default(),
                        },
                    )
                })
                .collect(),
            node_id: self.node_id.clone(),
        }
    }
}

/// Go's zero time when never sent, as istiod prints it.
fn rfc3339(t: Option<SystemTime>) -> String {
    match t {
        Some(t) => humantime::format_rfc3339_millis(t).to_string(),
        None => "0001-01-01T00:00:00Z".to_string(),
    }
}

/// All connected proxies, by connection id.
#[derive(Debug, Default)]
pub struct SyncStatusStore {
    connections: DashMap<String, ProxySyncState>,
}

impl SyncStatusStore {
    pub fn upsert(&self, connection_id: &str, state: ProxySyncState) {
        self.connections.insert(connection_id.to_string(), state);
    }

    pub fn remove(&self, connection_id: &str) {
        self.connections.remove(connection_id);
    }

    /// SyncStatus entries sorted by proxy name (istiod's `/debug/syncz`).
    pub fn syncz(&self, namespace: Option<&str>) -> Vec<SyncStatus> {
        let mut out: Vec<SyncStatus> = self
            .connections
            .iter()
            .filter(|c| namespace.is_none_or(|ns| c.namespace == ns))
            .map(|c| c.to_sync_status())
            .collect();
        out.sort_by(|a, b| a.proxy.cmp(&b.proxy).then(a.node_id.cmp(&b.node_id)));
        out
    }

    pub fn len(&self) -> usize {
        self.connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }
}

/// One proxy-status cell for a type: `SYNCED (5s)`, `STALE (2m3s)`, `ERROR (1s)`,
/// `NOT SENT` or `IGNORED`, as istioctl 1.24 prints it.
pub fn status_cell(entry: Option<&ResourceSyncStatus>, now: SystemTime) -> String {
    let Some(e) = entry else {
        return "IGNORED".into();
    };
    let word = if !e.last_error.is_empty() {
        "ERROR"
    } else if e.sent.is_empty() {
        return "NOT SENT".into();
    } else if e.sent == e.acked {
        "SYNCED"
    } else {
        "STALE"
    };
    match humantime::parse_rfc3339_weak(&e.sent_time) {
        Ok(sent) if !e.sent.is_empty() => {
            let age = now.duration_since(sent).unwrap_or_default();
            format!("{word} ({})", human_duration(age))
        }
        _ => word.to_string(),
    }
}

/// Kubernetes' `duration.HumanDuration`, which istioctl uses for ages.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (m, h, day) = (60, 3600, 86400);
    if secs < 2 * m {
        format!("{secs}s")
    } else if secs < 10 * m {
        let s = secs % m;
        if s == 0 {
            format!("{}m", secs / m)
        } else {
            format!("{}m{}s", secs / m, s)
        }
    } else if secs < 3 * h {
        format!("{}m", secs / m)
    } else if secs < 8 * h {
        let mm = (secs % h) / m;
        if mm == 0 {
            format!("{}h", secs / h)
        } else {
            format!("{}h{}m", secs / h, mm)
        }
    } else if secs < 48 * h {
        format!("{}h", secs / h)
    } else if secs < 8 * day {
        let hh = (secs % day) / h;
        if hh == 0 {
            format!("{}d", secs / day)
        } else {
            format!("{}d{}h", secs / day, hh)
        }
    } else if secs < 365 * 2 * day {
        format!("{}d", secs / day)
    } else {
        format!("{}y", secs / (365 * day))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(119)), "119s");
        assert_eq!(human_duration(Duration::from_secs(150)), "2m30s");
        assert_eq!(human_duration(Duration::from_secs(180)), "3m");
        assert_eq!(human_duration(Duration::from_secs(3600)), "60m");
        assert_eq!(human_duration(Duration::from_secs(4 * 3600 + 60)), "4h1m");
        assert_eq!(human_duration(Duration::from_secs(20 * 3600)), "20h");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3d");
    }

    #[test]
    fn cells() {
        let now = SystemTime::now();
        let sent = humantime::format_rfc3339_millis(now - Duration::from_secs(5)).to_string();
        let mut e = ResourceSyncStatus {
            sent: "n1".into(),
            acked: "n1".into(),
            sent_time: sent,
            ..Default::default()
        };
        assert_eq!(status_cell(Some(&e), now), "SYNCED (5s)");
        e.acked = "n0".into();
        assert_eq!(status_cell(Some(&e), now), "STALE (5s)");
        e.last_error = "bad".into();
        assert_eq!(status_cell(Some(&e), now), "ERROR (5s)");
        assert_eq!(status_cell(None, now), "IGNORED");
        let never = ResourceSyncStatus::default();
        assert_eq!(status_cell(Some(&never), now), "NOT SENT");
    }

    #[test]
    fn syncz_shape() {
        let store = SyncStatusStore::default();
        let mut state = ProxySyncState {
            proxy: "sleep.testns1".into(),
            proxy_type: "sidecar".into(),
            cluster_id: "Kubernetes".into(),
            namespace: "testns1".into(),
            ..Default::default()
        };
        state.types.insert(
            CLUSTER_TYPE.into(),
            TypeSyncState {
                nonce_sent: "n2".into(),
                nonce_acked: "n1".into(),
                ..Default::default()
            },
        );
        store.upsert("c1", state);
        let json = serde_json::to_value(store.syncz(None)).unwrap();
        assert_eq!(json[0]["proxy"], "sleep.testns1");
        assert_eq!(json[0]["cluster_sent"], "n2");
        assert_eq!(json[0]["cluster_acked"], "n1");
        assert!(
            json[0].get("listener_sent").is_none(),
            "empty fields are omitted as in istiod"
        );
        assert_eq!(json[0]["resources"][CLUSTER_TYPE]["sent"], "n2");
        assert_eq!(
            json[0]["resources"][CLUSTER_TYPE]["sentTime"],
            "0001-01-01T00:00:00Z"
        );
        assert!(store.syncz(Some("other")).is_empty());
    }
}
